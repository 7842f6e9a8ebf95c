"""APGD (Croce & Hein 2020, AutoAttack's `APGDAttack`), L-infinity, in JAX.

The attack of the assaying-ood code (specs/transfer.md: APGD with the DLR
loss, 1 restart, 100 iterations). Per example, following AutoAttack's
`autopgd_base.py`:

* start: the clean image plus a uniform draw in the ball (random start) or
  the clean image; step size eta = 2 eps;
* step k: z = P(x_k + eta * sign(grad)), x_{k+1} = P(x_k + a (z - x_k) +
  (1 - a)(x_k - x_{k-1})) with a = 1 at the first step and 0.75 after
  (momentum); P projects onto the eps-ball intersected with [0, 1];
* the best loss and its point are kept; at checkpoints spaced
  p = 0.22 N first, then shrinking by 0.03 N down to 0.06 N iterations, an
  example whose loss rose in at most 75% of the steps since the last
  checkpoint, or whose step was not halved at the last checkpoint and whose
  best loss did not improve since, halves eta and restarts from its best
  point.

The checkpoint schedule depends on N only, so it is static; everything else
is per-example state in one `lax.scan`. Robust accuracy counts an example
as robust when every iterate is classified correctly (as `pgd`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps: int) -> np.ndarray:
  """bool[steps]: after which iterations the step size is checked, and the
  window length (iterations since the previous check) of each."""
  k = max(int(0.22 * steps), 1)
  decrement = max(int(0.03 * steps), 1)
  minimum = max(int(0.06 * steps), 1)
  window = np.zeros(steps, np.int32)
  i = k - 1
  while i < steps:
    window[i] = k
    k = max(k - decrement, minimum)
    i += k
  return window


def attack(loss_fn: Callable[[Array, Array], Array],
           apply_fn: Callable[[Any, Array], Array], params: Any,
           images: Array, labels: Array, key: Array, eps: float, steps: int,
           random_start: bool) -> tuple[Array, Array]:
  """(adversarial images, robust bool[batch]); see the module docstring."""
  lo = jnp.clip(images - eps, 0., 1.)
  hi = jnp.clip(images + eps, 0., 1.)
  batch = images.shape[0]
  bshape = (batch,) + (1,) * (images.ndim - 1)

  def evaluate(x):
    def total(x):
      logits = apply_fn(params, x)
      per_example = loss_fn(logits, labels)
      return per_example.sum(), (per_example, logits)
    grad, (loss, logits) = jax.grad(total, has_aux=True)(x)
    return loss, grad, logits.argmax(-1) == labels

  x0 = images
  if random_start:
    x0 = jnp.clip(images + jax.random.uniform(
        key, images.shape, minval=-eps, maxval=eps), lo, hi)
  loss0, grad0, correct0 = evaluate(x0)
  clean_correct = apply_fn(params, images).argmax(-1) == labels
  robust = clean_correct & correct0
  found = jnp.where((clean_correct & ~correct0).reshape(bshape), x0, images)
  eta = jnp.full((batch,), 2. * eps, jnp.float32)
  state = dict(x=x0, x_prev=x0, grad=grad0, loss=loss0, best_x=x0,
               best_grad=grad0, best_loss=loss0, eta=eta,
               increases=jnp.zeros((batch,), jnp.int32),
               best_at_check=loss0, reduced=jnp.ones((batch,), bool),
               robust=robust, found=found)
  window = jnp.asarray(checkpoints(steps))

  def step(s, inputs):
    i, win = inputs
    a = jnp.where(i == 0, 1., MOMENTUM)
    e = s["eta"].reshape(bshape)
    z = jnp.clip(s["x"] + e * jnp.sign(s["grad"]), lo, hi)
    x = jnp.clip(s["x"] + a * (z - s["x"]) + (1. - a) * (s["x"] - s["x_prev"]),
                 lo, hi)
    loss, grad, correct = evaluate(x)
    newly = s["robust"] & ~correct
    found = jnp.where(newly.reshape(bshape), x, s["found"])
    robust = s["robust"] & correct
    # AutoAttack compares the first step's loss with an unfilled history
    # entry (0), not with the start's loss.
    previous = jnp.where(i == 0, 0., s["loss"])
    increases = s["increases"] + (loss > previous).astype(jnp.int32)
    better = loss > s["best_loss"]
    best_x = jnp.where(better.reshape(bshape), x, s["best_x"])
    best_grad = jnp.where(better.reshape(bshape), grad, s["best_grad"])
    best_loss = jnp.where(better, loss, s["best_loss"])
    # Step-size check (only where win > 0).
    oscillating = increases <= win * RHO
    stalled = ~s["reduced"] & (s["best_at_check"] >= best_loss)
    halve = (win > 0) & (oscillating | stalled)
    at_check = win > 0
    eta = jnp.where(halve, s["eta"] / 2., s["eta"])
    hb = halve.reshape(bshape)
    # x_prev is the iterate before this update, as AutoAttack's x_adv_old:
    # after a restart the momentum term is best_x - x_k.
    new = dict(
        x_prev=s["x"], x=jnp.where(hb, best_x, x),
        grad=jnp.where(hb, best_grad, grad), loss=loss, best_x=best_x,
        best_grad=best_grad, best_loss=best_loss, eta=eta,
        increases=jnp.where(at_check, 0, increases),
        best_at_check=jnp.where(at_check, best_loss, s["best_at_check"]),
        reduced=jnp.where(at_check, halve, s["reduced"]),
        robust=robust, found=found)
    return new, None

  state, _ = jax.lax.scan(step, state, (jnp.arange(steps), window))
  found = jnp.where(state["robust"].reshape(bshape), state["x"],
                    state["found"])
  return found, state["robust"]
