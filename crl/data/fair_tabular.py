"""FairTabular: tabular data from an explicit causal model with a protected
attribute, for studying disparate treatment in fair classifiers.

Causal model (an arrow is "is a direct cause of"; every example draws its
own independent noise from its key)::

    s  ~ Categorical(group_proportions)          protected attribute, G values
    a  := s / (G - 1)                            its level in [0, 1]
    u  ~ N(latent_shift * a, 1)                  s -> u: the merit that the
                                                 label is about differs by group
    y  ~ Bernoulli(sigmoid(label_scale * u       u -> y
                           + label_shift * (a - abar)))   s -> y (direct)
    x_j := u + feature_shift * (a - abar)        u -> x, s -> x (direct bias
           + informative_noise * e_j             of the measurements),
                                                 j < num_informative
    p_k := proxy_strength * sign_k * (a - abar)  s -> p: proxies that tell the
           + e_k                                 group and nothing else,
                                                 k < num_proxies
    n_m := e_m                                   pure noise, m < num_noise
    features = [x, p, n (, a if include_attribute)]

with `abar` the mean level under `group_proportions` and `sign_k` = +1, -1,
+1, ... . With the defaults the label depends on `s` only through `u`, and
the informative features measure `u` well, so the Bayes classifier barely
needs `s`; but the groups' positive rates differ, so a classifier that is
forced to demographic parity gains most by treating the groups differently,
and can only find the group through the proxies. `latent_shift`,
`label_shift`, `feature_shift` and `proxy_strength` set the strength of each
path (0 removes it).

Stratification: the attribute of example `i` is not drawn from its key but
from a low-discrepancy sequence, `s_i = F^-1(frac(i * phi))` with `phi` the
golden ratio conjugate and `F` the cumulative `group_proportions` (computed
exactly in uint32 arithmetic, "Fibonacci hashing"). Every run of `n`
consecutive indices, hence every training batch, holds `n * p_g` examples of
group g up to less than 3 (checked for windows up to 4096 over 200000
indices): batches are stratified on the attribute, and the parity penalty
always sees every group. The marginal of `s` is
`group_proportions`; everything else is drawn from the example's key
`fold_in(fold_in(key(seed), SPLIT_ID[split]), index)`.

Interface (`crl.data.pipeline` procedural datasets): `encode`, `eval_code`,
`sample_encoded` (pure JAX), `eval_splits()` = validation and test
(`eval_code(TRAIN_SAMPLE)` also serves the first `eval_examples` training
examples, for probes fitted on the training split),
`num_examples`, `num_classes` = 2, `num_groups`, `batch_keys` =
('features', 'label', 'group'), `input_key` = 'features', `input_shape` =
`(num_features,)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl import config_lib
from crl.data import procedural

Array = jax.Array

SPLIT_IDS = {"train": 1, "validation": 2, "test": 3}
EVAL_SPLITS = {
    "validation": "held-out sample of the training distribution (model "
                  "selection: merge search, thresholds, probe fitting)",
    "test": "held-out sample of the training distribution (reported)",
}
# An eval pass over the first `eval_examples` examples of the training
# stream (not listed in `eval_splits()`): what a probe fitted on
# training-split features is fitted on.
TRAIN_SAMPLE = "train_sample"
# floor(2^32 * (sqrt(5) - 1) / 2): multiplying by it modulo 2^32 is
# frac(i * phi) in 32-bit fixed point.
_PHI_32 = 2654435769


def check_proportions(proportions: Any, num_groups: int,
                      owner: str) -> tuple[float, ...]:
  """`proportions` (None: uniform) as a tuple that sums to 1; or ValueError."""
  if proportions is None:
    return tuple([1. / num_groups] * num_groups)
  p = tuple(float(x) for x in proportions)
  if len(p) != num_groups or min(p) <= 0. or abs(sum(p) - 1.) > 1e-6:
    raise ValueError(f"{owner}: group_proportions must be {num_groups} "
                     f"positive numbers that sum to 1, got {proportions!r}.")
  return p


def stratified_groups(indices: Array, proportions: tuple[float, ...]) -> Array:
  """The attribute of examples `indices`: int32 `[n]`, stratified.

  `s_i = F^-1(frac(i * phi))` (see the module docstring): any `n`
  consecutive indices hold `n * p_g` examples of group g, +-3.

  Args:
    indices: integer `[n]` example indices (any, traced or not).
    proportions: group proportions (static), summing to 1.

  Returns:
    int32 `[n]` values in `[0, len(proportions))`.
  """
  x = jnp.asarray(indices).astype(jnp.uint32) * jnp.uint32(_PHI_32)
  u = (x >> 8).astype(jnp.float32) / float(1 << 24)      # in [0, 1)
  edges = jnp.asarray(np.cumsum(proportions)[:-1], jnp.float32)
  return jnp.sum(u[:, None] >= edges[None, :], axis=-1).astype(jnp.int32)


def stratified_groups_np(indices: np.ndarray,
                         proportions: tuple[float, ...]) -> np.ndarray:
  """`stratified_groups` in NumPy (host input pipelines), same values."""
  x = (np.asarray(indices).astype(np.uint64) * _PHI_32) % (1 << 32)
  u = (x >> 8).astype(np.float32) / np.float32(1 << 24)
  edges = np.cumsum(proportions)[:-1].astype(np.float32)
  return np.sum(u[:, None] >= edges[None, :], axis=-1).astype(np.int32)


def split_key(seed: int, split_id: Array) -> Array:
  return jax.random.fold_in(jax.random.key(seed), split_id)


@dataclasses.dataclass(frozen=True, init=False)
class FairTabular(procedural.ProceduralDataset):
  """Procedural tabular data with a protected attribute (module docstring).

  Frozen and hashable; built with `FairTabular(**kwargs)` (an unknown key
  raises a `TypeError` naming it and listing the valid keys).

  Attributes:
    num_groups: values G of the protected attribute (2 or more).
    group_proportions: P(s = g); None for uniform.
    latent_shift: s -> u, the shift of the merit between the extreme groups.
    label_scale: u -> y, the slope of the label's logit in u.
    label_shift: s -> y directly, added to the label's logit.
    feature_shift: s -> x directly, a bias of the informative features.
    proxy_strength: s -> proxies, their shift between the extreme groups in
      units of their noise.
    num_informative: features that measure u.
    informative_noise: their noise scale.
    num_proxies: features that measure only s.
    num_noise: pure noise features.
    include_attribute: append the attribute level `a` as the last feature
      (explicit, rather than only through proxies).
    seed: the dataset's own seed.
    eval_examples: examples in 'validation' and in 'test'.
  """

  num_groups: int = 2
  group_proportions: tuple | None = (0.6, 0.4)
  latent_shift: float = 1.0
  label_scale: float = 3.0
  label_shift: float = 0.0
  feature_shift: float = 0.0
  proxy_strength: float = 1.0
  num_informative: int = 6
  informative_noise: float = 0.7
  num_proxies: int = 8
  num_noise: int = 24
  include_attribute: bool = False
  seed: int = 0
  eval_examples: int = 4000

  input_key = "features"
  batch_keys = ("features", "label", "group")

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    if int(self.num_groups) != self.num_groups or self.num_groups < 2:
      raise ValueError(f"FairTabular: num_groups must be an integer >= 2, "
                       f"got {self.num_groups!r}.")
    object.__setattr__(self, "group_proportions", check_proportions(
        self.group_proportions, self.num_groups, "FairTabular"))
    for name in ("num_informative", "num_proxies", "num_noise"):
      value = getattr(self, name)
      if int(value) != value or value < 0:
        raise ValueError(f"FairTabular: {name} must be an integer >= 0, got "
                         f"{value!r}.")
    if self.num_informative < 1:
      raise ValueError("FairTabular: num_informative must be >= 1 (the label "
                       "must be predictable).")
    if self.informative_noise < 0 or self.label_scale < 0:
      raise ValueError("FairTabular: informative_noise and label_scale must "
                       "be >= 0.")
    if int(self.eval_examples) != self.eval_examples or self.eval_examples < 1:
      raise ValueError(f"FairTabular: eval_examples must be an integer >= 1, "
                       f"got {self.eval_examples!r}.")

  # Interface -----------------------------------------------------------------

  @property
  def num_classes(self) -> int:
    return 2

  @property
  def num_features(self) -> int:
    return (self.num_informative + self.num_proxies + self.num_noise +
            int(bool(self.include_attribute)))

  @property
  def input_shape(self) -> tuple[int]:
    return (self.num_features,)

  @property
  def mean_level(self) -> float:
    """`abar`, the mean attribute level under `group_proportions`."""
    levels = np.arange(self.num_groups) / (self.num_groups - 1)
    return float(np.dot(levels, self.group_proportions))

  def eval_splits(self) -> dict[str, str]:
    return dict(EVAL_SPLITS)

  def num_examples(self, split_name: str) -> int | None:
    """`eval_examples` for 'validation', 'test' and TRAIN_SAMPLE; None for
    'train'."""
    if split_name == "train":
      return None
    self.eval_code(split_name)
    return int(self.eval_examples)

  def encode(self, split: str, intervention: str | None = None) -> np.ndarray:
    """`[split id, 0]` as int32 `[2]` (no interventions are defined)."""
    if split not in SPLIT_IDS:
      raise ValueError(f"Unknown split {split!r}; known splits: "
                       f"{', '.join(SPLIT_IDS)}.")
    if intervention is not None:
      raise ValueError(f"FairTabular defines no interventions, got "
                       f"{intervention!r}.")
    return np.array([SPLIT_IDS[split], 0], np.int32)

  def eval_code(self, name: str) -> np.ndarray:
    if name == TRAIN_SAMPLE:
      return self.encode("train")
    if name not in EVAL_SPLITS:
      raise ValueError(f"Unknown eval split {name!r}; known eval splits: "
                       f"{', '.join(EVAL_SPLITS)}.")
    return self.encode(name)

  def sample_encoded(self, code: Array, indices: Array) -> dict[str, Array]:
    """Examples `indices` of the split `code = encode(split)`; pure JAX.

    Returns:
      `{'features': f32[n, num_features], 'label': i32[n], 'group': i32[n],
      'latent': f32[n]}` (`latent` is u, for analysis).
    """
    indices = jnp.asarray(indices, jnp.int32)
    group = stratified_groups(indices, self.group_proportions)
    key = split_key(self.seed, jnp.asarray(code, jnp.int32)[0])
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    f = self.num_features
    noise = jax.vmap(lambda k: jax.random.normal(k, (f + 1,)))(keys)
    uniform = jax.vmap(lambda k: jax.random.uniform(
        jax.random.fold_in(k, 1)))(keys)
    level = group.astype(jnp.float32) / (self.num_groups - 1)
    centred = level - self.mean_level
    u = self.latent_shift * level + noise[:, 0]
    label = uniform < jax.nn.sigmoid(self.label_scale * u +
                                     self.label_shift * centred)
    e = noise[:, 1:]
    ni, npx = self.num_informative, self.num_proxies
    parts = [u[:, None] + self.feature_shift * centred[:, None] +
             self.informative_noise * e[:, :ni]]
    signs = jnp.asarray([1. if k % 2 == 0 else -1. for k in range(npx)])
    parts.append(self.proxy_strength * signs[None, :] * centred[:, None] +
                 e[:, ni:ni + npx])
    parts.append(e[:, ni + npx:ni + npx + self.num_noise])
    if self.include_attribute:
      parts.append(level[:, None])
    features = jnp.concatenate(parts, axis=-1).astype(jnp.float32)
    return {"features": features, "label": label.astype(jnp.int32),
            "group": group, "latent": u}

  def describe(self) -> str:
    """The causal model with this dataset's strengths, one line."""
    return (f"s ~ Cat{self.group_proportions}; u ~ N({self.latent_shift:g} a,"
            f" 1); y ~ Bern(sigmoid({self.label_scale:g} u + "
            f"{self.label_shift:g} (a - abar))); {self.num_informative} x = u "
            f"+ {self.feature_shift:g} (a - abar) + {self.informative_noise:g}"
            f" e; {self.num_proxies} proxies = +-{self.proxy_strength:g} "
            f"(a - abar) + e; {self.num_noise} noise")

