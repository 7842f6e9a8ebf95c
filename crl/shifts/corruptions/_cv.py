"""The OpenCV operations of imagecorruptions' `spatter`, in JAX.

Each function works on one single-channel 8-bit image held as `int32`
`[height, width]` and reproduces the OpenCV 4/5 integer semantics (borders,
rounding, saturation) so that `spatter` matches the reference pixel for pixel
given the same random field.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Canny's fixed-point tangent of 22.5 degrees (CANNY_SHIFT = 15).
_CANNY_SHIFT = 15
_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)
_FAR = 1e9


def _neighbours(x: jax.Array, pad_value) -> dict[tuple[int, int], jax.Array]:
  """`{(dy, dx): x[i + dy, j + dx]}` for the 3x3 neighbourhood."""
  p = jnp.pad(x, 1, constant_values=pad_value)
  h, w = x.shape
  return {(dy, dx): p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
          for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


def canny(image: jax.Array, low: int, high: int) -> jax.Array:
  """cv2.Canny(image, low, high) with aperture 3 and the L1 gradient.

  Args:
    image: int32 `[height, width]` with values in 0..255.
    low: hysteresis low threshold.
    high: hysteresis high threshold.

  Returns:
    bool `[height, width]`, True on edges.
  """
  p = jnp.pad(image, 1, mode="edge")  # Sobel uses BORDER_REPLICATE.
  h, w = image.shape
  s = lambda dy, dx: p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  dx = (s(-1, 1) + 2 * s(0, 1) + s(1, 1)) - (s(-1, -1) + 2 * s(0, -1)
                                             + s(1, -1))
  dy = (s(1, -1) + 2 * s(1, 0) + s(1, 1)) - (s(-1, -1) + 2 * s(-1, 0)
                                             + s(-1, 1))
  mag = jnp.abs(dx) + jnp.abs(dy)
  nb = _neighbours(mag, 0)
  ax = jnp.abs(dx)
  ay = jnp.abs(dy) << _CANNY_SHIFT
  tg22x = ax * _TG22
  tg67x = tg22x + (ax << (_CANNY_SHIFT + 1))
  horizontal = ay < tg22x
  vertical = ~horizontal & (ay > tg67x)
  opposite = (dx ^ dy) < 0
  nms_h = (mag > nb[0, -1]) & (mag >= nb[0, 1])
  nms_v = (mag > nb[-1, 0]) & (mag >= nb[1, 0])
  nms_d = jnp.where(opposite, (mag > nb[-1, 1]) & (mag > nb[1, -1]),
                    (mag > nb[-1, -1]) & (mag > nb[1, 1]))
  candidate = (mag > low) & jnp.where(
      horizontal, nms_h, jnp.where(vertical, nms_v, nms_d))
  strong = candidate & (mag > high)

  def grow(state):
    edges, _ = state
    nbe = _neighbours(edges, False)
    reached = edges
    for v in nbe.values():
      reached = reached | v
    grown = reached & candidate
    return grown, jnp.any(grown != edges)

  edges, _ = jax.lax.while_loop(lambda st: st[1], grow,
                                (strong, jnp.asarray(True)))
  return edges


def distance_to_edges(edges: jax.Array, cap: float) -> jax.Array:
  """cv2.distanceTransform(DIST_L2, 5) to the True pixels, capped at `cap`.

  The 5x5 chamfer distance is the shortest path with float32 steps 1 (edge
  neighbours), 1.4 (diagonal) and 2.1969 (knight's move), as OpenCV adds
  them; paths of at most `ceil(cap)` steps decide every distance below
  `cap`, so that many min-plus relaxations are exact.

  Returns:
    float32 `[height, width]` distances, at most `cap`.
  """
  h, w = edges.shape
  steps = [((dy, dx), 1.0) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
  steps += [((dy, dx), 1.4) for dy in (-1, 1) for dx in (-1, 1)]
  steps += [((dy, dx), 2.1969) for dy, dx in
            ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2),
             (-2, -1))]

  def relax(_, d):
    p = jnp.pad(d, 2, constant_values=_FAR)
    out = d
    for (dy, dx), weight in steps:
      out = jnp.minimum(out, p[2 + dy:2 + dy + h, 2 + dx:2 + dx + w]
                        + jnp.float32(weight))
    return out

  d0 = jnp.where(edges, 0.0, _FAR).astype(jnp.float32)
  d = jax.lax.fori_loop(0, int(cap) + 1, relax, d0)
  return jnp.minimum(d, jnp.float32(cap))


def box3_sum(x: jax.Array) -> jax.Array:
  """3x3 sums with BORDER_REFLECT_101 (cv2.blur's border)."""
  p = jnp.pad(x, 1, mode="reflect")
  h, w = x.shape
  return sum(p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
             for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def equalize_hist(image: jax.Array) -> jax.Array:
  """cv2.equalizeHist on int32 `[height, width]` values 0..255."""
  total = image.size
  hist = jnp.zeros(256, jnp.int32).at[image.reshape(-1)].add(1)
  first = jnp.argmax(hist > 0)
  h0 = hist[first]
  scale = jnp.float32(255.0) / (total - h0).astype(jnp.float32)
  cum = jnp.cumsum(hist) - h0
  lut = jnp.clip(jnp.round(cum.astype(jnp.float32) * scale), 0, 255)
  lut = lut.astype(jnp.int32)
  return jnp.where(h0 == total, first, lut[image])


def emboss(image: jax.Array) -> jax.Array:
  """cv2.filter2D(image, CV_8U, [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])."""
  p = jnp.pad(image, 1, mode="reflect")
  h, w = image.shape
  s = lambda dy, dx: p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  out = (-2 * s(-1, -1) - s(-1, 0) - s(0, -1) + s(0, 0) + s(0, 1)
         + s(1, 0) + 2 * s(1, 1))
  return jnp.clip(out, 0, 255)


def spatter_shading(liquid: jax.Array) -> jax.Array:
  """The `dist` map of imagecorruptions' water spatter (severities 1-3).

  Args:
    liquid: int32 `[height, width]`, the thresholded liquid layer * 255.

  Returns:
    int32 `[height, width]`, the shading in 0..255.
  """
  edges = canny(liquid, 50, 150)
  dist = distance_to_edges(edges, 20.0)
  # cv2.blur on floats then astype(uint8): floor of the 3x3 mean.
  dist = jnp.floor(box3_sum(dist) / jnp.float32(9.0))
  dist = equalize_hist(dist.astype(jnp.int32))
  dist = emboss(dist)
  # cv2.blur on uint8 rounds the 3x3 mean.
  return (box3_sum(dist) * 2 + 9) // 18
