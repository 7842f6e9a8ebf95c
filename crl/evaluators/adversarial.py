"""Adversarial accuracy: L-infinity PGD, APGD (CE or DLR loss) and FGSM.

For any classifier given as `apply_fn(params, images) -> logits` (images
f32[batch, height, width, channels] in [0, 1], logits f32[batch, classes]):

* `fgsm`: x + eps * sign(grad_x loss), clipped to [0, 1] (Goodfellow et al.).
* `pgd`: `steps` steps x <- proj(x + step_size * sign(grad_x loss)), where
  proj is the intersection of the L-inf ball of radius `eps` around the clean
  image with the valid box [0, 1]; optionally from a uniform random start
  in the ball (Madry et al.). With `random_start=False` and `steps=1`,
  `step_size=eps` it is FGSM.
* `apgd`: AutoAttack's APGD (step size 2 eps halved at checkpoints,
  momentum 0.75; `crl.evaluators.apgd`), the attack of the paper's code
  with `loss='dlr', steps=100`.
* Losses: `ce` (cross-entropy) and `dlr`, the difference of logits ratio of
  AutoAttack (Croce & Hein 2020): DLR(z, y) = -(z_y - max_{i != y} z_i) /
  (z_pi1 - z_pi3 + 1e-12), with z_pi1 >= z_pi2 >= z_pi3 the sorted logits;
  it needs >= 3 classes, and with 2 classes `ce` is used instead, as in the
  assaying-ood code (specs/transfer.md).

Robust accuracy counts an example as robust when every iterate the attack
visits (the clean image included) is classified correctly, so it never
exceeds clean accuracy. Everything runs jitted and batched (`make_attack`);
`adversarial_accuracy` walks padded eval batches (`'mask'`) with key
`fold_in(key, batch_index)` for the random start.

Metric names (`metric_name`): `pgd_accuracy/eps=1/255`, `fgsm_accuracy/
eps=0.5/255` (epsilon on [0, 1] pixels, written as a multiple of 1/255).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crl.evaluators import apgd

Array = jax.Array
ApplyFn = Callable[[Any, Array], Array]

LOSSES = ("ce", "dlr")
ATTACKS = ("pgd", "fgsm", "apgd")


def dlr_loss(logits: Array, labels: Array) -> Array:
  """f32[batch] DLR of AutoAttack (larger = more adversarial)."""
  num_classes = logits.shape[-1]
  if num_classes < 3:
    raise ValueError(f"The DLR loss needs >= 3 classes, got {num_classes}.")
  sorted_z = jnp.sort(logits, axis=-1)[..., ::-1]
  z_y = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(labels, num_classes) > 0, -jnp.inf,
                     logits)
  return -(z_y - others.max(axis=-1)) / (
      sorted_z[:, 0] - sorted_z[:, 2] + 1e-12)


def ce_loss(logits: Array, labels: Array) -> Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@dataclasses.dataclass(frozen=True)
class Attack:
  """An L-inf attack's protocol (hashable: a static argument of `jit`).

  Attributes:
    name: 'pgd', 'fgsm' or 'apgd' (adaptive step size; `step_size` unused).
    eps: radius of the L-inf ball, on [0, 1] pixels.
    steps: PGD iterations (1 for FGSM).
    step_size: PGD step (FGSM: eps); None gives 2.5 * eps / steps (Madry).
    random_start: start uniformly in the ball (PGD only).
    loss: 'ce' or 'dlr'.
  """
  name: str = "pgd"
  eps: float = 1. / 255.
  steps: int = 10
  step_size: float | None = None
  random_start: bool = True
  loss: str = "ce"

  def __post_init__(self):
    if self.name not in ATTACKS:
      raise ValueError(f"Unknown attack {self.name!r}; known: "
                       f"{', '.join(ATTACKS)}.")
    if self.loss not in LOSSES:
      raise ValueError(f"Unknown attack loss {self.loss!r}; known: "
                       f"{', '.join(LOSSES)}.")
    if not self.eps >= 0. or int(self.steps) != self.steps or self.steps < 1:
      raise ValueError(f"An attack needs eps >= 0 and an integer steps >= 1, "
                       f"got eps={self.eps}, steps={self.steps}.")
    if self.name == "fgsm" and (self.steps != 1 or self.random_start):
      object.__setattr__(self, "steps", 1)
      object.__setattr__(self, "random_start", False)

  @property
  def alpha(self) -> float:
    if self.name == "fgsm":
      return self.eps
    if self.step_size is not None:
      return float(self.step_size)
    return 2.5 * self.eps / self.steps

  def protocol(self) -> dict[str, Any]:
    step = ("2 eps, halved at checkpoints" if self.name == "apgd" else
            self.alpha)
    return {"attack": self.name, "norm": "linf", "eps": self.eps,
            "steps": self.steps, "step_size": step,
            "random_start": self.random_start, "loss": self.loss,
            "valid_range": [0., 1.]}


def metric_name(attack: Attack) -> str:
  """`pgd_accuracy/eps=1/255`-style name (eps as a multiple of 1/255)."""
  k = attack.eps * 255.
  text = f"{k:.6g}/255"
  suffix = "" if attack.loss == "ce" or attack.name == "fgsm" else "_dlr"
  return f"{attack.name}{suffix}_accuracy/eps={text}"


def _loss_fn(attack: Attack, num_classes: int):
  if attack.loss == "dlr" and num_classes >= 3:
    return dlr_loss
  return ce_loss


def perturb(apply_fn: ApplyFn, attack: Attack, params: Any, images: Array,
            labels: Array, key: Array) -> tuple[Array, Array]:
  """Runs `attack` on one batch.

  Args:
    apply_fn: `(params, images) -> logits`.
    attack: the protocol.
    params: the model's parameters.
    images: f32[batch, ...] in [0, 1].
    labels: i32[batch].
    key: the random start's key.

  Returns:
    (adversarial images f32[batch, ...] (the first misclassified iterate, or
    the last), robust bool[batch]: correct at every iterate).
  """
  num_classes = jax.eval_shape(apply_fn, params, images[:1]).shape[-1]
  loss_fn = _loss_fn(attack, num_classes)
  if attack.name == "apgd":
    return apgd.attack(loss_fn, apply_fn, params, images, labels, key,
                       attack.eps, attack.steps, attack.random_start)
  lo = jnp.clip(images - attack.eps, 0., 1.)
  hi = jnp.clip(images + attack.eps, 0., 1.)

  def total_loss(x):
    logits = apply_fn(params, x)
    return loss_fn(logits, labels).sum(), logits

  grad_fn = jax.grad(total_loss, has_aux=True)
  x = images
  if attack.random_start:
    x = jnp.clip(images + jax.random.uniform(
        key, images.shape, minval=-attack.eps, maxval=attack.eps), lo, hi)
  robust = apply_fn(params, images).argmax(-1) == labels
  found = images

  def step(carry, _):
    x, robust, found = carry
    grad, logits = grad_fn(x)
    correct = logits.argmax(-1) == labels
    newly = robust & ~correct
    found = jnp.where(_bcast(newly, x), x, found)
    robust = robust & correct
    x = jnp.clip(x + attack.alpha * jnp.sign(grad), lo, hi)
    return (x, robust, found), None

  (x, robust, found), _ = jax.lax.scan(step, (x, robust, found), None,
                                       length=attack.steps)
  correct = apply_fn(params, x).argmax(-1) == labels
  newly = robust & ~correct
  found = jnp.where(_bcast(newly | robust, x), x, found)
  return found, robust & correct


def _bcast(flags: Array, like: Array) -> Array:
  return flags.reshape(flags.shape + (1,) * (like.ndim - 1))


def make_attack(apply_fn: ApplyFn, attack: Attack
                ) -> Callable[[Any, Array, Array, Array], tuple[Array, Array]]:
  """Jitted `(params, images, labels, key) -> (adversarial, robust)`."""
  return jax.jit(lambda p, x, y, k: perturb(apply_fn, attack, p, x, y, k))


def fgsm(apply_fn: ApplyFn, params: Any, images: Array, labels: Array,
         eps: float, loss: str = "ce") -> Array:
  """FGSM images (one signed-gradient step of size eps, clipped)."""
  attack = Attack(name="fgsm", eps=eps, loss=loss)
  return perturb(apply_fn, attack, params, images, labels,
                 jax.random.key(0))[0]


def adversarial_accuracy(apply_fn: ApplyFn, params: Any,
                         batches: Iterable[Mapping[str, Array]],
                         attacks: Iterable[Attack], key: Array,
                         max_examples: int | None = None,
                         attack_fns: Mapping[Attack, Callable] | None = None
                         ) -> dict[str, float]:
  """`{metric_name: robust accuracy}` over padded eval `batches`.

  Each batch is `{'image', 'label'[, 'mask']}`; at most `max_examples` real
  examples are used (the paper's code attacks the first ~1000).
  `attack_fns`: `make_attack(apply_fn, attack)` of each attack, made once
  and reused across models of one architecture (params are an argument, so
  nothing recompiles); by default made here from `apply_fn`.
  """
  attacks = tuple(attacks)
  fns = dict(attack_fns) if attack_fns is not None else {
      a: make_attack(apply_fn, a) for a in attacks}
  hits = {a: 0. for a in attacks}
  total = 0.
  for b, batch in enumerate(batches):
    mask = np.asarray(batch.get("mask", np.ones(len(batch["label"]))),
                      np.float64)
    if max_examples is not None:
      room = max_examples - total
      if room <= 0:
        break
      keep = np.cumsum(mask) <= room
      mask = mask * keep
    for a in attacks:
      _, robust = fns[a](params, batch["image"], batch["label"],
                         jax.random.fold_in(key, b))
      hits[a] += float(np.sum(np.asarray(robust, np.float64) * mask))
    total += float(mask.sum())
  if total == 0:
    raise ValueError("adversarial_accuracy got no examples.")
  return {metric_name(a): hits[a] / total for a in attacks}


class AdversarialEvaluator:
  """Robust accuracy on an eval split, as an evaluator (`config.evals`).

  `{type: 'adversarial', attacks: ('pgd', 'fgsm'), eps: (1/255,), steps: 10,
  loss: 'ce', split: 'test', max_examples: 1000}` gives
  `{split: {'pgd_accuracy/eps=1/255': ..., 'fgsm_accuracy/eps=1/255': ...,
  'num_examples': n}}`; the random start's key is `fold_in(key(seed),
  batch)`.

  Args:
    pipeline: a `crl.data.pipeline.InputPipeline`.
    predict_fn: `(params, batch) -> logits`, differentiable in the images.
    num_classes: unused (the evaluator protocol passes it).
    attacks: names of `ATTACKS`.
    eps: L-inf radii on [0, 1] pixels.
    steps, step_size, random_start, loss: PGD's (see `Attack`).
    split: the eval split attacked (default: the dataset's 'test').
    max_examples: attack at most this many examples of the split.
    seed: seed of the random starts.
    input_key: the batch key of the model input.
  """

  def __init__(self, *, pipeline: Any, predict_fn: Callable[..., Array],
               num_classes: int, attacks: Iterable[str] = ("pgd",),
               eps: Iterable[float] = (1. / 255.,), steps: int = 10,
               step_size: float | None = None, random_start: bool = True,
               loss: str = "ce", split: str = "test",
               max_examples: int | None = 1000, seed: int = 0,
               input_key: str = "image"):
    del num_classes
    self.pipeline = pipeline
    if isinstance(attacks, str):
      attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    if isinstance(eps, (int, float)):
      eps = (eps,)
    self.attacks = tuple(
        Attack(name=a, eps=float(e), steps=1 if a == "fgsm" else int(steps),
               step_size=step_size, random_start=random_start, loss=loss)
        for a in attacks for e in eps)
    if not self.attacks:
      raise ValueError("The adversarial evaluator needs attacks and eps.")
    known = pipeline.dataset.eval_splits()
    if split not in known:
      raise ValueError(f"Unknown eval split {split!r}; the dataset has: "
                       f"{', '.join(known)}.")
    self.split = split
    self.descriptions = {split: known[split]}
    self.max_examples = max_examples
    self.seed = int(seed)
    self.apply_fn = lambda p, x: predict_fn(p, {input_key: x})
    self.input_key = input_key

  def protocols(self) -> dict[str, dict[str, Any]]:
    """`{metric name: the attack's protocol}` for results files."""
    return {metric_name(a): {**a.protocol(), "split": self.split,
                             "max_examples": self.max_examples}
            for a in self.attacks}

  def run(self, params: Any) -> dict[str, dict[str, float]]:
    batches = ({"image": b[self.input_key], "label": b["label"],
                "mask": np.asarray(jax.device_get(b["mask"]))}
               for b in self.pipeline.eval_batches(self.split))
    out = adversarial_accuracy(self.apply_fn, params, batches, self.attacks,
                               jax.random.key(self.seed), self.max_examples)
    n = self.pipeline.dataset.num_examples(self.split)
    out["num_examples"] = (n if self.max_examples is None
                           else min(n, self.max_examples))
    return {self.split: out}
