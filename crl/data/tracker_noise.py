"""Observation noise like a tracker's masks and an optical-flow network's flow.

The public SaVos code scores FISHBOWL with *estimated* visible masks and
flow; the procedural video's are exact. `perturb` degrades the observed
inputs of a batch of videos the way a tracker and a flow network would:

* boundary noise: each pixel within one pixel of a visible mask's edge
  (the 3x3 dilation minus the 3x3 erosion) flips with probability
  `boundary_flip`;
* missed frames: each object-frame's visible mask is lost (empty) with
  probability `missed_frames`;
* flow noise: a smooth Gaussian error of `flow_noise` pixels (drawn on a
  grid of `flow_noise_cell`-pixel cells, bilinearly upsampled) is added to
  both flows.

The occluder masks are then recomputed from the perturbed visible masks
(what stays of the original occluder outside the other objects' visible
masks, the chewing gum, is kept). Pure JAX: `perturb(noise, video, key)`
with `key = video_keys(seed, code, indices)` is a function of the seed,
the distribution and the video index (like the videos themselves).

Shapes: 'visible', 'occluder' `[B, K, T, H, W]`, 'flow_fwd', 'flow_bwd'
`[B, T, H, W, 2]`; other keys pass through.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TrackerNoise:
  """Noise levels (all 0: no perturbation; see the module docstring)."""
  boundary_flip: float = 0.0
  missed_frames: float = 0.0
  flow_noise: float = 0.0
  flow_noise_cell: int = 4
  seed: int = 0

  def __post_init__(self):
    for name in ("boundary_flip", "missed_frames"):
      if not 0. <= getattr(self, name) <= 1.:
        raise ValueError(f"TrackerNoise: {name} must be in [0, 1], got "
                         f"{getattr(self, name)}.")
    if self.flow_noise < 0. or self.flow_noise_cell < 1:
      raise ValueError(f"TrackerNoise: flow_noise must be >= 0 and "
                       f"flow_noise_cell >= 1, got {self.flow_noise}, "
                       f"{self.flow_noise_cell}.")

  @property
  def enabled(self) -> bool:
    return bool(self.boundary_flip or self.missed_frames or self.flow_noise)


def _max3(x: Array) -> Array:
  """3x3 maximum filter over the last two axes (zero padding)."""
  pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
  return jax.lax.reduce_window(jnp.pad(x, pad), -jnp.inf, jax.lax.max,
                               (1,) * (x.ndim - 2) + (3, 3),
                               (1,) * x.ndim, "valid")


def boundary(mask: Array) -> Array:
  """Pixels within one pixel of the edge of a 0/1 mask `[..., H, W]`:
  dilation minus erosion (3x3)."""
  dilated = _max3(mask)
  eroded = 1. - _max3(1. - mask)
  return dilated - eroded


def video_keys(seed: int, code: Array, indices: Array) -> Array:
  """One key per video `[B]` from the noise seed, the distribution code and
  the video indices."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), code[0]),
                           code[1])
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def perturb(noise: TrackerNoise, video: dict[str, Array],
            keys: Array) -> dict[str, Array]:
  """The batch with perturbed 'visible', 'occluder' and flows.

  Args:
    noise: the noise levels.
    video: a batch (see the module docstring).
    keys: `[B]` keys (`video_keys`).

  Returns:
    A new dict; the other keys are unchanged.
  """
  if not noise.enabled:
    return dict(video)
  visible = jnp.asarray(video["visible"], jnp.float32)
  occluder = jnp.asarray(video["occluder"], jnp.float32)
  b, k, t, h, w = visible.shape
  draws = jax.vmap(lambda key: jax.random.split(key, 3))(keys)   # [B, 3]
  u_flip = jax.vmap(lambda key: jax.random.uniform(key, (k, t, h, w)))(
      draws[:, 0])
  u_miss = jax.vmap(lambda key: jax.random.uniform(key, (k, t)))(draws[:, 1])
  flip = (u_flip < noise.boundary_flip) & (boundary(visible) > 0.5)
  noisy = jnp.where(flip, 1. - visible, visible)
  noisy = noisy * (u_miss >= noise.missed_frames)[..., None, None]
  # Occluder: the other objects' (perturbed) visible masks, plus what the
  # original occluder held beyond them (the gum).
  others = lambda v: jnp.clip(jnp.sum(v, 1, keepdims=True) - v, 0., 1.)
  extra = jnp.clip(occluder - others(visible), 0., 1.)
  out = dict(video)
  out["visible"] = noisy
  out["occluder"] = jnp.maximum(others(noisy), extra)
  if noise.flow_noise:
    cell = noise.flow_noise_cell
    gh, gw = -(-h // cell) + 1, -(-w // cell) + 1

    def smooth(key):
      coarse = jax.random.normal(key, (2, t, gh, gw, 2))
      return jax.image.resize(coarse, (2, t, (gh - 1) * cell,
                                       (gw - 1) * cell, 2),
                              "linear")[:, :, :h, :w]

    err = noise.flow_noise * jax.vmap(smooth)(draws[:, 2])  # [B, 2, T,H,W,2]
    out["flow_fwd"] = jnp.asarray(video["flow_fwd"]) + err[:, 0]
    out["flow_bwd"] = jnp.asarray(video["flow_bwd"]) + err[:, 1]
  return out


def from_config(section: Any) -> TrackerNoise:
  """`config.inputs` (a dict-like; None: no noise) as a `TrackerNoise`."""
  if section is None:
    return TrackerNoise()
  fields = dict(section)
  known = {f.name for f in dataclasses.fields(TrackerNoise)}
  unknown = set(fields) - known
  if unknown:
    raise ValueError(f"config.inputs has unknown key(s) {sorted(unknown)}; "
                     f"known: {', '.join(sorted(known))}.")
  return TrackerNoise(**fields)
