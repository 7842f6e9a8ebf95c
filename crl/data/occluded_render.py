"""The geometry and textures of `crl.data.occluded_video`'s videos.

Pure functions of one video's factors (the dict of `OccludedVideo._factors`,
per-object entries `[K]`): the affine motion of every object (`affine`), the
pixel grid (`grid`), the signed distance of the objects' shapes (`sdf`), their
textures in object coordinates (`texture`) and the static background
(`background`). `OccludedVideo._video` composes them into frames, masks and
exact flow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crl.data import shapes as shape_lib

Array = jax.Array


def affine(f: dict[str, Array], t: Array, num_frames: int
           ) -> tuple[Array, Array, Array]:
  """Centres `[K, N, 2]`, maps `A` and `A^-1` `[K, N, 2, 2]` at times `t`
  `[N]`."""
  tau = t - (num_frames - 1) / 2.
  centre = (f["centre"][:, None] + f["velocity"][:, None] * tau[:, None] +
            0.5 * f["acceleration"][:, None] * (tau ** 2)[:, None])
  theta = f["theta"][:, None] + f["omega"][:, None] * tau
  stretch = f["deform"][:, None] * jnp.sin(
      f["deform_phase"][:, None] + f["deform_freq"][:, None] * t)
  sx = f["scale"][:, None] * (1. + stretch)
  sy = f["scale"][:, None] * (1. - stretch)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  # A = R(theta) diag(sx, sy): object units -> frame widths.
  a = jnp.stack([jnp.stack([cos * sx, -sin * sy], -1),
                 jnp.stack([sin * sx, cos * sy], -1)], -2)
  # A^-1 = diag(1 / sx, 1 / sy) R(-theta).
  a_inv = jnp.stack([jnp.stack([cos / sx, sin / sx], -1),
                     jnp.stack([-sin / sy, cos / sy], -1)], -2)
  return centre, a, a_inv


def grid(resolution: int) -> Array:
  """Pixel centres `[R, R, 2]` as (x, y) in frame widths."""
  c = (jnp.arange(resolution, dtype=jnp.float32) + 0.5) / resolution
  x, y = jnp.meshgrid(c, c)
  return jnp.stack([x, y], -1)


def sdf(shape: Array, u: Array, names: tuple[str, ...]) -> Array:
  """Signed distance `[K, T, R, R]` of objects with shapes `names[shape]`
  (`shape` `[K]`)."""
  sdf = None
  for i, name in enumerate(names):
    d = shape_lib.SDFS[name](u[..., 0], u[..., 1])
    sdf = d if sdf is None else jnp.where(
        shape[:, None, None, None] == i, d, sdf)
  return sdf


def texture(f: dict[str, Array], u: Array,
             names: tuple[str, ...]) -> Array:
  """Object texture in [0, 1], `[K, T, R, R]`, in object coordinates;
  object k has texture `names[f['texture'][k]]`."""
  e = lambda a: a[:, None, None, None]
  freq = e(f["tex_freq"])
  px = freq * u[..., 0] + e(f["tex_phase"][:, 0])
  py = freq * u[..., 1] + e(f["tex_phase"][:, 1])
  two_pi = 2. * jnp.pi
  options = {
      "flat": lambda: jnp.full_like(px, 0.5),
      "stripes": lambda: 0.5 + 0.5 * jnp.sin(two_pi * px),
      "checker": lambda: 0.5 + 0.5 * jnp.tanh(
          4. * jnp.sin(two_pi * px) * jnp.sin(two_pi * py)),
      "dots": lambda: jnp.clip(0.5 - 6. * (jnp.hypot(
          jnp.mod(px, 1.) - 0.5, jnp.mod(py, 1.) - 0.5) - 0.25), 0., 1.),
  }
  out = None
  for i, name in enumerate(names):
    option = options[name]()
    out = option if out is None else jnp.where(e(f["texture"]) == i, option,
                                               out)
  return out


def background(f: dict[str, Array], grid: Array,
                shifted: bool) -> Array:
  """Static background `[R, R, 3]`: grey stripes, or (shifted) a coloured
  gradient."""
  x, y = grid[..., 0], grid[..., 1]
  b = f["bg"]
  stripes = 0.5 + 0.5 * jnp.sin(2. * jnp.pi * (3. + 3. * b[0]) *
                                (x * jnp.cos(3. * b[1]) + y * jnp.sin(3. * b[1])))
  if not shifted:
    return shape_lib.hsv_to_rgb(b[2], 0.1 * b[3], 0.22 + 0.1 * stripes)
  angle = 2. * jnp.pi * b[1]
  ramp = jnp.clip(0.5 + 0.8 * (jnp.cos(angle) * (x - 0.5) +
                               jnp.sin(angle) * (y - 0.5)), 0., 1.)
  return shape_lib.hsv_to_rgb(jnp.mod(b[2] + 0.3 * ramp, 1.),
                              0.5 + 0.3 * b[3], 0.2 + 0.2 * ramp)
