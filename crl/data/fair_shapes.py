"""FairShapes: images from a causal model with a visible protected attribute.

The image counterpart of `crl.data.fair_tabular`: the same kind of causal
model, rendered with the shape renderer of `crl.data.causal_shapes` (whose
`CausalShapes` is used as is, by composition: this module draws its own
factors and calls the renderer).

Causal model (every example draws its own independent noise)::

    s   ~ Categorical(group_proportions)        stratified, as fair_tabular
    a   := s / (G - 1)                          level in [0, 1]
    y   ~ Bernoulli(sigmoid(logit(base_rate)    s -> y (label_shift)
                            + label_shift * (a - abar)))
    shape   ~ U(positive_shapes) if y else U(negative_shapes)     y -> shape
    bg hue  ~ U(band of group s) w.p. proxy_strength, else U(0, 1)
                                                s -> background (the proxy)
    scale   := U(scale_range) + scale_shift * (a - abar) * width   s -> scale
    label   := y, flipped w.p. label_noise       (observed target)
    rotation, position, texture, colours ~ independent nuisances
    image   := render(shape, hue, scale, position, rotation, background)

The target is the shape set (e.g. stars and crosses vs circles and squares),
the protected attribute shows through the background hue (one band of
`1 / G` of the hue circle per group) and, if `scale_shift != 0`, through the
object size. The groups' positive rates differ (label_shift), so a classifier
held to demographic parity gains by reading the background.

Interface: as `crl.data.fair_tabular.FairTabular` with `input_key='image'`,
`image_shape = (resolution, resolution, 3)`, `batch_keys = ('image',
'label', 'group')`; eval splits 'validation' and 'test'.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl import config_lib
from crl.data import causal_shapes
from crl.data import fair_tabular
from crl.data import procedural

Array = jax.Array


@dataclasses.dataclass(frozen=True, init=False)
class FairShapes(procedural.ProceduralDataset):
  """Procedural shape images with a protected attribute (module docstring).

  Frozen and hashable; built with `FairShapes(**kwargs)`.

  Attributes:
    resolution: image height and width in pixels.
    num_groups: values G of the protected attribute.
    group_proportions: P(s = g); None for uniform.
    base_rate: P(y = 1) at the mean attribute level.
    label_shift: s -> y, on the logit scale between the extreme groups.
    proxy_strength: probability that the background hue comes from the
      group's band (0: no proxy, 1: always).
    scale_shift: s -> object scale, as a fraction of the scale range between
      the extreme groups.
    label_noise: probability that the observed label is flipped.
    positive_shapes, negative_shapes: shape names (`causal_shapes.SHAPES`)
      of the two classes.
    scale_range: object radius as a fraction of the image width.
    rotation_range: rotations in degrees.
    seed: the dataset's own seed.
    eval_examples: examples in 'validation' and in 'test'.
  """

  resolution: int = 32
  num_groups: int = 2
  group_proportions: tuple | None = (0.6, 0.4)
  base_rate: float = 0.5
  label_shift: float = 2.0
  proxy_strength: float = 0.9
  scale_shift: float = 0.0
  label_noise: float = 0.1
  positive_shapes: tuple = ("star", "cross")
  negative_shapes: tuple = ("circle", "square")
  scale_range: tuple = (0.2, 0.32)
  rotation_range: tuple = (-30.0, 30.0)
  seed: int = 0
  eval_examples: int = 2000

  input_key = "image"
  batch_keys = ("image", "label", "group")

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    if int(self.num_groups) != self.num_groups or self.num_groups < 2:
      raise ValueError(f"FairShapes: num_groups must be an integer >= 2, got "
                       f"{self.num_groups!r}.")
    object.__setattr__(self, "group_proportions",
                       fair_tabular.check_proportions(
                           self.group_proportions, self.num_groups,
                           "FairShapes"))
    for name in ("positive_shapes", "negative_shapes"):
      shapes = getattr(self, name)
      if isinstance(shapes, str):
        shapes = (shapes,)
        object.__setattr__(self, name, shapes)
      bad = [x for x in shapes if x not in causal_shapes.SHAPES]
      if not shapes or bad:
        raise ValueError(f"FairShapes: {name} must name shapes of "
                         f"{causal_shapes.SHAPES}, got {shapes!r}.")
    if set(self.positive_shapes) & set(self.negative_shapes):
      raise ValueError("FairShapes: positive_shapes and negative_shapes "
                       "overlap.")
    for name in ("base_rate",):
      if not 0. < getattr(self, name) < 1.:
        raise ValueError(f"FairShapes: {name} must be in (0, 1).")
    for name in ("proxy_strength", "label_noise"):
      if not 0. <= getattr(self, name) <= 1.:
        raise ValueError(f"FairShapes: {name} must be in [0, 1].")
    lo, hi = self.scale_range
    span = abs(self.scale_shift) * (hi - lo)
    if not 0. < lo - span / 2 and hi + span / 2 <= 0.5:
      raise ValueError(f"FairShapes: scale_range {self.scale_range} widened "
                       f"by scale_shift must stay within (0, 0.5].")
    if int(self.eval_examples) != self.eval_examples or self.eval_examples < 1:
      raise ValueError("FairShapes: eval_examples must be an integer >= 1.")
    # The renderer: CausalShapes draws the shapes SHAPES[:num_classes] (and
    # one novel shape, never used here).
    used = [causal_shapes.SHAPES.index(x)
            for x in self.positive_shapes + self.negative_shapes]
    object.__setattr__(self, "_renderer", causal_shapes.CausalShapes(
        resolution=self.resolution, num_classes=max(max(used) + 1, 2),
        num_novel_classes=1))

  # Interface -----------------------------------------------------------------

  @property
  def num_classes(self) -> int:
    return 2

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.resolution, self.resolution, 3)

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return self.image_shape

  @property
  def mean_level(self) -> float:
    levels = np.arange(self.num_groups) / (self.num_groups - 1)
    return float(np.dot(levels, self.group_proportions))

  def eval_splits(self) -> dict[str, str]:
    return dict(fair_tabular.EVAL_SPLITS)

  def num_examples(self, split_name: str) -> int | None:
    if split_name == "train":
      return None
    self.eval_code(split_name)
    return int(self.eval_examples)

  def encode(self, split: str, intervention: str | None = None) -> np.ndarray:
    if split not in fair_tabular.SPLIT_IDS:
      raise ValueError(f"Unknown split {split!r}; known splits: "
                       f"{', '.join(fair_tabular.SPLIT_IDS)}.")
    if intervention is not None:
      raise ValueError(f"FairShapes defines no interventions, got "
                       f"{intervention!r}.")
    return np.array([fair_tabular.SPLIT_IDS[split], 0], np.int32)

  def eval_code(self, name: str) -> np.ndarray:
    if name == fair_tabular.TRAIN_SAMPLE:
      return self.encode("train")
    if name not in fair_tabular.EVAL_SPLITS:
      raise ValueError(f"Unknown eval split {name!r}; known eval splits: "
                       f"{', '.join(fair_tabular.EVAL_SPLITS)}.")
    return self.encode(name)

  def sample_encoded(self, code: Array, indices: Array) -> dict[str, Any]:
    """Examples `indices` of the split `code`; pure JAX.

    Returns:
      `{'image': f32[n, H, W, 3] in [0, 1], 'label': i32[n], 'group':
      i32[n], 'factors': {name: [n]}}` ('factors' include the clean class
      'y' before label noise and the background hue).
    """
    indices = jnp.asarray(indices, jnp.int32)
    group = fair_tabular.stratified_groups(indices, self.group_proportions)
    key = fair_tabular.split_key(self.seed, jnp.asarray(code, jnp.int32)[0])
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    f, aux = jax.vmap(self._factors)(group, keys)
    image = self._renderer._render(f, aux)  # pylint: disable=protected-access
    return {"image": image.astype(jnp.float32), "label": f["label"],
            "group": group, "factors": f}

  def _factors(self, group: Array, key: Array
               ) -> tuple[dict[str, Array], dict[str, Array]]:
    """One example's factors (vmapped), in the renderer's vocabulary."""
    k = jax.random.split(key, 20)
    u = lambda i, lo=0., hi=1.: jax.random.uniform(k[i], (), jnp.float32, lo,
                                                   hi)
    level = group.astype(jnp.float32) / (self.num_groups - 1)
    centred = level - self.mean_level
    logit = (math.log(self.base_rate / (1. - self.base_rate)) +
             self.label_shift * centred)
    y = (u(0) < jax.nn.sigmoid(logit)).astype(jnp.int32)
    pos = jnp.asarray([causal_shapes.SHAPES.index(x)
                       for x in self.positive_shapes], jnp.int32)
    neg = jnp.asarray([causal_shapes.SHAPES.index(x)
                       for x in self.negative_shapes], jnp.int32)
    shape = jnp.where(
        y == 1, pos[jax.random.randint(k[1], (), 0, len(pos))],
        neg[jax.random.randint(k[1], (), 0, len(neg))])
    flip = u(2) < self.label_noise
    f = {"y": y, "label": jnp.where(flip, 1 - y, y).astype(jnp.int32),
         "shape": shape.astype(jnp.int32)}
    band = (group.astype(jnp.float32) + u(3)) / self.num_groups
    f["bg_hue"] = jnp.where(u(4) < self.proxy_strength, band, u(5))
    f["bg_saturation"], f["bg_value"] = u(6, 0.5, 0.8), u(7, 0.2, 0.35)
    f["background"] = jax.random.randint(
        k[8], (), 0, len(causal_shapes.TRAIN_TEXTURES)).astype(jnp.int32)
    # Foreground: bright, desaturated enough to read on any background hue.
    f["hue"], f["saturation"], f["value"] = u(9), u(10, 0., 0.3), u(11, .9, 1.)
    lo, hi = self.scale_range
    f["scale"] = u(12, lo, hi) + self.scale_shift * centred * (hi - lo)
    f["rotation"] = u(13, *self.rotation_range)
    margin = jnp.maximum(0.5 - f["scale"] - 0.5 / self.resolution, 0.)
    f["pos_x"] = u(14, 0.5 - margin, 0.5 + margin)
    f["pos_y"] = u(15, 0.5 - margin, 0.5 + margin)
    aux = {"freq": u(16, 3., 6.), "phase": jax.random.uniform(k[17], (3,)),
           "noise": jax.random.bits(k[18], (), jnp.uint32)}
    return f, aux

