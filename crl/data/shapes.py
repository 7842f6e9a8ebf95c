"""The shape library of the procedural datasets, and their colour helpers.

`SDFS`: shape name -> signed distance function `sdf(x, y)` in object units
(bounding radius about 1, y up; negative inside), pure JAX and elementwise, so
any `[...]` grid of coordinates works. `hsv_to_rgb` and `hash_uniform` (an
integer hash to uniform floats, for per-pixel noise) are the colour and noise
helpers the generators share (`crl.data.causal_shapes`,
`crl.data.occluded_video`, `crl.data.multi_domain`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


# Signed distance functions, object units (bounding radius about 1, y up).
def length(x: Array, y: Array) -> Array:
  """Euclidean norm of (x, y), elementwise."""
  return jnp.sqrt(x * x + y * y)


def _box(x, y, bx, by):
  dx, dy = jnp.abs(x) - bx, jnp.abs(y) - by
  return (length(jnp.maximum(dx, 0.), jnp.maximum(dy, 0.)) +
          jnp.minimum(jnp.maximum(dx, dy), 0.))


def _tri(x, y, p0, p1, p2):
  """Exact distance to the triangle p0 p1 p2 (any orientation)."""
  pts = (p0, p1, p2)
  s = jnp.sign((p1[0] - p0[0]) * (p0[1] - p2[1]) -
               (p1[1] - p0[1]) * (p0[0] - p2[0]))
  d2, side = None, None
  for i in range(3):
    (ax, ay), (bx, by) = pts[i], pts[(i + 1) % 3]
    ex, ey = bx - ax, by - ay
    vx, vy = x - ax, y - ay
    h = jnp.clip((vx * ex + vy * ey) / (ex * ex + ey * ey), 0., 1.)
    qx, qy = vx - ex * h, vy - ey * h
    dd, ss = qx * qx + qy * qy, s * (vx * ey - vy * ex)
    d2 = dd if d2 is None else jnp.minimum(d2, dd)
    side = ss if side is None else jnp.minimum(side, ss)
  return -jnp.sqrt(d2) * jnp.sign(side)


def _circle(x, y):
  return length(x, y) - 0.88


def _square(x, y):
  return _box(x, y, 0.68, 0.68)


def _triangle(x, y, r=0.84):
  k = 3. ** 0.5
  px, py = jnp.abs(x) - r, y + r / k
  flip = px + k * py > 0.
  px, py = (jnp.where(flip, (px - k * py) / 2., px),
            jnp.where(flip, (-k * px - py) / 2., py))
  px = px - jnp.clip(px, -2. * r, 0.)
  return -length(px, py) * jnp.sign(py)


def _star(x, y, r=0.95, rf=0.45):
  k1x, k1y = 0.809016994375, -0.587785252292
  px, py = jnp.abs(x), y
  for kx, ky in ((k1x, k1y), (-k1x, k1y)):
    d = 2. * jnp.maximum(kx * px + ky * py, 0.)
    px, py = px - d * kx, py - d * ky
  px, py = jnp.abs(px), py - r
  bax, bay = -rf * k1y, rf * k1x - 1.
  h = jnp.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0., r)
  return length(px - bax * h, py - bay * h) * jnp.sign(py * bax - px * bay)


def _cross(x, y, bx=0.88, by=0.28):
  px, py = jnp.abs(x), jnp.abs(y)
  px, py = jnp.maximum(px, py), jnp.minimum(px, py)
  qx, qy = px - bx, py - by
  k = jnp.maximum(qx, qy)
  wx, wy = jnp.where(k > 0., qx, by - px), jnp.where(k > 0., qy, -k)
  return jnp.sign(k) * length(jnp.maximum(wx, 0.), jnp.maximum(wy, 0.))


def _ring(x, y):
  return jnp.abs(length(x, y) - 0.64) - 0.25


def _heart(x, y, k=1.5):
  px, py = jnp.abs(x / k), y / k + 0.55
  lobe = length(px - 0.25, py - 0.75) - 2. ** 0.5 / 4.
  m = 0.5 * jnp.maximum(px + py, 0.)
  body = jnp.sqrt(jnp.minimum(px * px + (py - 1.) ** 2,
                              (px - m) ** 2 + (py - m) ** 2)) * jnp.sign(px - py)
  return jnp.where(px + py > 1., lobe, body) * k


def _crescent(x, y):
  return jnp.maximum(length(x, y) - 0.9, -(length(x - 0.45, y) - 0.72))


def _arrow(x, y):
  return jnp.minimum(_box(x + 0.3, y, 0.55, 0.17),
                     _tri(x, y, (0.95, 0.), (0.1, 0.62), (0.1, -0.62)))


def _capsule(x, y):
  return length(x - jnp.clip(x, -0.55, 0.55), y) - 0.38


def _hexagon(x, y, r=0.8):
  kx, ky, kz = -0.866025404, 0.5, 0.577350269
  px, py = jnp.abs(x), jnp.abs(y)
  d = 2. * jnp.minimum(kx * px + ky * py, 0.)
  px, py = px - d * kx, py - d * ky
  px, py = px - jnp.clip(px, -kz * r, kz * r), py - r
  return length(px, py) * jnp.sign(py)


def _semicircle(x, y):
  return jnp.maximum(length(x, y + 0.35) - 0.9, -(y + 0.35))


def _hourglass(x, y):
  return jnp.minimum(_tri(x, y, (-0.68, 0.72), (0.68, 0.72), (0., 0.)),
                     _tri(x, y, (-0.68, -0.72), (0., 0.), (0.68, -0.72)))


def _l_shape(x, y):
  return jnp.minimum(_box(x + 0.35, y, 0.22, 0.75),
                     _box(x, y + 0.53, 0.57, 0.22))


SDFS: dict[str, Callable[[Array, Array], Array]] = {
    "circle": _circle, "square": _square, "triangle": _triangle,
    "star": _star, "cross": _cross, "ring": _ring, "heart": _heart,
    "crescent": _crescent, "arrow": _arrow, "capsule": _capsule,
    "hexagon": _hexagon, "semicircle": _semicircle, "hourglass": _hourglass,
    "l_shape": _l_shape,
}



def hsv_to_rgb(h: Array, s: Array, v: Array) -> Array:
  """HSV in [0, 1] -> RGB; `[...]` inputs broadcast, output `[..., 3]`."""
  out = []
  for n in (5., 3., 1.):
    k = jnp.mod(n + h * 6., 6.)
    out.append(v - v * s * jnp.clip(jnp.minimum(k, 4. - k), 0., 1.))
  return jnp.stack(out, axis=-1)


def hash_uniform(a: Array, b: Array) -> Array:
  """Integer hash (lowbias32) of two uint32 arrays -> uniform floats [0, 1)."""
  x = a * jnp.uint32(0x9E3779B1) ^ b
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  x = x ^ (x >> 16)
  return (x >> 8).astype(jnp.float32) / float(1 << 24)

