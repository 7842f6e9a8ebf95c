"""SaVos training signals (specs/amodal.md, "Losses").

Self-supervised (what SaVos trains on): functions of the model's outputs and
of *observed* quantities only (visible masks, occluder masks, frames); none
of them takes an amodal ground truth, and `self_supervised_loss` receives
only the model output (whose 'patches' hold the cropped observations).

* `reconstruction_loss`: BCE between the predicted mask of frame t (carried
  over from frames t - 1 and t + 1 and warped) and the visible mask V_t,
  weighted by `1 - O_t`: pixels under other objects get no loss, so nothing
  there is pulled towards "not the object".
* `consistency_loss`: `1 - softIoU(warp(A_t), A_{t+1})` along the corrected
  flow, with the flow detached (both directions).
* `photometric_loss`: L1 between the frame warped by the corrected flow and
  the next frame on pixels visible in both; it trains the flow residual.

Supervised (the upper bound): `supervised_loss`, BCE against the amodal
ground truth everywhere.

Normalisation (`normalization`): 'mean' (crl's: means over weighted pixels,
frame pairs and both directions) or 'official' (the public code's):

* reconstruction: the weighted BCE *summed* over a frame's pixels, averaged
  over object-frames, the first and last frame dropped (they have one
  direction only);
* consistency: per track and direction, `1 - softIoU` of each frame pair,
  *cumulatively summed* over time (pair i counts `T - 1 - i` times) and
  summed, averaged over tracks; the two directions add;
* photometric: the masked L1 summed over pixels and channels, averaged over
  frame pairs; the two directions add.

The public code warps the fused prediction stored for frame i + 1 with
frame i's flow in its consistency term (its predictions are stored one
frame early); crl warps frame t's prediction with frame t's flow.

Shapes: `[..., T, P, P]` masks (any leading axes), `[..., T, P, P, 2]` flows,
`[..., T, P, P, 3]` frames.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from crl.models import savos_layers as sl

Array = jax.Array
PROB_EPS = 1e-6
NORMALIZATIONS = ("mean", "official")


def _check_normalization(normalization: str) -> None:
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"SaVos loss normalization {normalization!r} is not one "
                     f"of {NORMALIZATIONS}.")


def bce(prob: Array, target: Array, eps: float = PROB_EPS) -> Array:
  """Elementwise binary cross-entropy of probabilities (clipped to eps)."""
  p = jnp.clip(prob, eps, 1. - eps)
  return -(target * jnp.log(p) + (1. - target) * jnp.log1p(-p))


def soft_iou(a: Array, b: Array, eps: float = 1e-8) -> Array:
  """`sum(ab) / sum(a + b - ab)` over the last two axes."""
  inter = jnp.sum(a * b, (-2, -1))
  return inter / (jnp.sum(a + b - a * b, (-2, -1)) + eps)


def reconstruction_loss(pred: Array, visible: Array, occluder: Array,
                        normalization: str = "mean") -> Array:
  """Visible-mask BCE weighted by `1 - occluder`.

  Args:
    pred: `[..., T, P, P]` predicted (amodal) mask of each frame, made from
      the other frames.
    visible: `[..., T, P, P]` the frames' visible masks.
    occluder: `[..., T, P, P]` the frames' occluder masks (other objects).

    normalization: 'mean' or 'official' (see the module docstring).

  Returns:
    Scalar: 'mean' `sum((1 - O) BCE(A, V)) / sum(1 - O)`; 'official' the
    mean over object-frames 1..T-2 of the per-frame pixel sum.
  """
  _check_normalization(normalization)
  loss = (1. - occluder) * bce(pred, visible)
  if normalization == "official":
    return jnp.mean(jnp.sum(loss[..., 1:-1, :, :], (-2, -1)))
  return jnp.sum(loss) / jnp.maximum(jnp.sum(1. - occluder), 1.)


def consistency_loss(pred: Array, flow_fwd: Array, flow_bwd: Array,
                     normalization: str = "mean") -> Array:
  """Temporal soft-IoU consistency along the detached corrected flows.

  Args:
    pred: `[..., T, P, P]` predicted (amodal) masks.
    flow_fwd: `[..., T, P, P, 2]` flow of frame t -> t + 1.
    flow_bwd: `[..., T, P, P, 2]` flow of frame t -> t - 1.
    normalization: 'mean' or 'official' (see the module docstring).

  Returns:
    Scalar: 'mean' the mean over tracks, frame pairs and both directions of
    `d = 1 - softIoU(warp(A_t, F_t), A_t')`; 'official' the sum over both
    directions of the mean over tracks of `sum_t cumsum_t(d)` (pairs in each
    direction's time order).
  """
  _check_normalization(normalization)
  f, b = jax.lax.stop_gradient(flow_fwd), jax.lax.stop_gradient(flow_bwd)
  # One warp for both directions: A_t -> t + 1 and A_t -> t - 1.
  moved = sl.warp(jnp.stack([pred[..., :-1, :, :], pred[..., 1:, :, :]]
                            )[..., None],
                  jnp.stack([f[..., :-1, :, :, :], b[..., 1:, :, :, :]]))
  to_next, to_prev = moved[0, ..., 0], moved[1, ..., 0]
  fwd = 1. - soft_iou(to_next, pred[..., 1:, :, :])
  bwd = 1. - soft_iou(to_prev, pred[..., :-1, :, :])
  if normalization == "official":
    cumulative = lambda d: jnp.mean(jnp.sum(jnp.cumsum(d, -1), -1))
    return cumulative(fwd) + cumulative(jnp.flip(bwd, -1))
  return 0.5 * (jnp.mean(fwd) + jnp.mean(bwd))


def photometric_loss(frames: Array, visible: Array, flow_fwd: Array,
                     flow_bwd: Array, normalization: str = "mean") -> Array:
  """L1 between warped and next frames where the object is visible in both.

  Args:
    frames: `[..., T, P, P, 3]`.
    visible: `[..., T, P, P]`.
    flow_fwd, flow_bwd: `[..., T, P, P, 2]` corrected flows.
    normalization: 'mean' or 'official' (see the module docstring).

  Returns:
    Scalar: 'mean' the mean absolute difference over the (detached) masked
    pixels and channels of both directions; 'official' the sum over both
    directions of the mean over frame pairs of the per-pair sum.
  """
  _check_normalization(normalization)
  src = jnp.concatenate([frames, visible[..., None]], -1)
  # Frame t -> t + 1 and frame t -> t - 1 in one warp.
  moved = sl.warp(jnp.stack([src[..., :-1, :, :, :], src[..., 1:, :, :, :]]),
                  jnp.stack([flow_fwd[..., :-1, :, :, :],
                             flow_bwd[..., 1:, :, :, :]]))
  dst = jnp.stack([src[..., 1:, :, :, :], src[..., :-1, :, :, :]])
  mask = jax.lax.stop_gradient(moved[..., 3] * dst[..., 3])
  diff = jnp.sum(jnp.abs(moved[..., :3] - dst[..., :3]), -1)
  if normalization == "official":
    return 2. * jnp.mean(jnp.sum(mask * diff, (-2, -1)))
  return jnp.sum(mask * diff) / jnp.maximum(3. * jnp.sum(mask), 1.)


def self_supervised_loss(outputs: dict[str, Any], *,
                         consistency_weight: float = 1.0,
                         photometric_weight: float = 0.1,
                         normalization: str = "mean"
                         ) -> tuple[Array, dict[str, Array]]:
  """The SaVos objective from a model output alone (no amodal masks).

  Args:
    outputs: `SaVos` output: 'amodal', 'flow_fwd', 'flow_bwd' and 'patches'
      (the cropped observations 'visible', 'occluder', 'frames').
    consistency_weight: weight of `consistency_loss`.
    photometric_weight: weight of `photometric_loss` (0: off).
    normalization: 'mean' or 'official' (see the module docstring).

  Returns:
    `(loss, {'recon', 'consistency', 'photometric'})`.
  """
  obs = outputs["patches"]
  recon = reconstruction_loss(outputs["amodal"], obs["visible"],
                              obs["occluder"], normalization)
  consist = consistency_loss(outputs["amodal"], outputs["flow_fwd"],
                             outputs["flow_bwd"], normalization)
  loss = recon + consistency_weight * consist
  metrics = {"recon": recon, "consistency": consist}
  if photometric_weight:
    photo = photometric_loss(obs["frames"], obs["visible"],
                             outputs["flow_fwd"], outputs["flow_bwd"],
                             normalization)
    loss = loss + photometric_weight * photo
    metrics["photometric"] = photo
  return loss, metrics


def supervised_loss(outputs: dict[str, Any], amodal_patches: Array
                    ) -> tuple[Array, dict[str, Array]]:
  """The upper bound's objective: BCE against the amodal ground truth.

  Args:
    outputs: `SaVos` output ('amodal' `[..., T, P, P]`).
    amodal_patches: the ground-truth amodal masks cropped like the model's
      patches, `[..., T, P, P]`.

  Returns:
    `(loss, {'supervised_bce'})`.
  """
  loss = jnp.mean(bce(outputs["amodal"], amodal_patches))
  return loss, {"supervised_bce": loss}
