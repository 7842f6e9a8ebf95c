"""Array operations shared by the corruptions: filters, resampling, colour.

Operators whose shape depends only on the (static) image size are built with
NumPy at trace time and cached; operators that depend on the severity are
built for all five severities and indexed with the (possibly traced) severity.
Linear filters along one axis are applied as a dense `[n, n]` matrix that
already contains the boundary rule, so every separable filter is two matmuls.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------
# Boundary rules (NumPy, for static index tables).
# ----------------------------------------------------------------------------


def boundary_index(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
  """Maps integer indices outside `[0, n)` back inside.

  Args:
    idx: integer array of indices (any shape).
    n: size of the axis.
    mode: 'nearest' (edge replication, scipy 'nearest', cv2 REPLICATE),
      'reflect' (half-sample symmetric `dcba|abcd|dcba`, scipy 'reflect',
      cv2 REFLECT) or 'mirror' (whole-sample symmetric `dcb|abcd|cba`,
      scipy 'mirror', cv2 REFLECT_101, NumPy pad 'reflect').

  Returns:
    Array of indices in `[0, n)`, same shape as `idx`.
  """
  idx = np.asarray(idx)
  if mode == "nearest":
    return np.clip(idx, 0, n - 1)
  if mode == "reflect":
    k = np.mod(idx, 2 * n)
    return np.where(k >= n, 2 * n - 1 - k, k)
  if mode == "mirror":
    if n == 1:
      return np.zeros_like(idx)
    k = np.mod(idx, 2 * n - 2)
    return np.where(k >= n, 2 * n - 2 - k, k)
  raise ValueError(f"Unknown boundary mode {mode!r}.")


def reflect_index(idx: jax.Array, n: int) -> jax.Array:
  """`boundary_index(idx, n, 'reflect')` for traced integer indices."""
  k = jnp.mod(idx, 2 * n)
  return jnp.where(k >= n, 2 * n - 1 - k, k)


# ----------------------------------------------------------------------------
# Separable linear filters as matrices.
# ----------------------------------------------------------------------------


def gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
  """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5)."""
  radius = int(truncate * float(sigma) + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  phi = np.exp(-0.5 / float(sigma) ** 2 * x ** 2)
  return phi / phi.sum()


@functools.lru_cache(maxsize=256)
def _filter_matrix_cached(taps: tuple[float, ...], n: int,
                          mode: str) -> np.ndarray:
  taps_arr = np.asarray(taps, np.float64)
  radius = (len(taps_arr) - 1) // 2
  offsets = np.arange(-radius, radius + 1)
  cols = boundary_index(np.arange(n)[:, None] + offsets[None, :], n, mode)
  rows = np.repeat(np.arange(n)[:, None], len(taps_arr), axis=1)
  matrix = np.zeros((n, n), np.float64)
  np.add.at(matrix, (rows, cols), np.broadcast_to(taps_arr, cols.shape))
  return matrix.astype(np.float32)


def filter_matrix(taps: Sequence[float], n: int, mode: str) -> np.ndarray:
  """The `[n, n]` matrix of a centred 1-D correlation with a boundary rule.

  `out[i] = sum_t taps[t] * in[boundary(i + t - radius)]`, i.e. what
  scipy.ndimage.correlate1d (and cv2.filter2D along one axis) compute.
  """
  return _filter_matrix_cached(tuple(float(t) for t in taps), n, mode)


def gaussian_matrices(sigmas: Sequence[float], n: int, mode: str,
                      truncate: float = 4.0) -> np.ndarray:
  """`[len(sigmas), n, n]` Gaussian filter matrices (scipy semantics)."""
  return np.stack([filter_matrix(gaussian_taps(s, truncate), n, mode)
                   for s in sigmas])


def separable(x: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """Applies `rows` along axis 0 and `cols` along axis 1.

  Args:
    x: `[height, width, ...]`.
    rows: `[out_height, height]`.
    cols: `[out_width, width]`.

  Returns:
    `[out_height, out_width, ...]`.
  """
  if x.ndim == 2:
    x = jnp.einsum("ih,hw->iw", rows, x, precision=HIGHEST)
    return jnp.einsum("iw,jw->ij", x, cols, precision=HIGHEST)
  # Trailing axes first, `[c, height, width]`: both products then contract
  # an axis next to the matrix's (under vmap a third faster than
  # contracting the middle axes of `[height, width, c]`; same sums).
  c = jnp.moveaxis(x.reshape(x.shape[:2] + (-1,)), -1, 0)
  c = jnp.matmul(rows, c, precision=HIGHEST)
  c = jnp.einsum("ciw,jw->cij", c, cols, precision=HIGHEST)
  return jnp.moveaxis(c, 0, -1).reshape(c.shape[1:] + x.shape[2:])


def sparse_rows(matrices: np.ndarray, dtype=np.float32
                ) -> tuple[np.ndarray, np.ndarray]:
  """Stacked `[s, n_out, n_in]` matrices as `[s, n_out, taps]` (index, weight)
  pairs, taps being the most nonzeros of any row (zero-weight padding);
  weights of `dtype`."""
  taps = max(1, int((matrices != 0).sum(-1).max()))
  idx = np.zeros(matrices.shape[:2] + (taps,), np.int32)
  wts = np.zeros(matrices.shape[:2] + (taps,), dtype)
  for i in np.ndindex(*matrices.shape[:2]):
    nz = np.flatnonzero(matrices[i])
    idx[i][:len(nz)] = nz
    wts[i][:len(nz)] = matrices[i][nz]
  return idx, wts


def apply_sparse_rows(x: jax.Array, idx: jax.Array, wts: jax.Array,
                      axis: int) -> jax.Array:
  """`matrix @ x` along `axis` from `sparse_rows` (`[n_out, taps]` each)."""
  shape = [1] * x.ndim
  shape[axis] = -1
  out = 0  # Keeps integer inputs and weights integer.
  for t in range(idx.shape[1]):
    out = out + wts[:, t].reshape(shape) * jnp.take(x, idx[:, t], axis=axis)
  return out


def conv2d_mirror(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """cv2.filter2D (correlation, centred anchor, BORDER_REFLECT_101).

  Computed with FFTs (several times faster than XLA's CPU convolution for
  the 21 x 21 disks). The reflect-101 padding by the kernel radius makes
  every output depend only on samples inside the padded array, so a
  circular convolution of the padded size is exact on the output region.

  Args:
    x: `[height, width, channels]`, every channel filtered alike.
    kernel: `[k, k]` with k odd and `k // 2 < min(height, width)`.

  Returns:
    `[height, width, channels]`.
  """
  h, w = x.shape[:2]
  k = kernel.shape[0]
  r = k // 2
  padded = jnp.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")
  hp, wp = padded.shape[:2]
  # Correlation = convolution with the flipped kernel, centred at (0, 0).
  flipped = kernel[::-1, ::-1].astype(jnp.float32)
  kpad = jnp.zeros((hp, wp), jnp.float32).at[:k, :k].set(flipped)
  kpad = jnp.roll(kpad, (-r, -r), axis=(0, 1))
  spectrum = (jnp.fft.rfft2(padded, axes=(0, 1))
              * jnp.fft.rfft2(kpad)[..., None])
  out = jnp.fft.irfft2(spectrum, s=(hp, wp), axes=(0, 1))
  return out[r:r + h, r:r + w].astype(x.dtype)


# ----------------------------------------------------------------------------
# Motion blur (imagecorruptions' `_motion_blur`, a Wand/ImageMagick emulation).
# ----------------------------------------------------------------------------


def motion_kernels(radii: Sequence[int], sigmas: Sequence[float]) -> np.ndarray:
  """`[severities, taps]` one-sided Gaussian weights, zero past each width."""
  widths = [2 * r + 1 for r in radii]
  table = np.zeros((len(widths), max(widths)), np.float32)
  for i, (width, sigma) in enumerate(zip(widths, sigmas)):
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    table[i, :width] = k / k.sum()
  return table


def motion_blur(x: jax.Array, angle_deg: jax.Array, width: jax.Array,
                weights: jax.Array, limit_h: jax.Array | int,
                limit_w: jax.Array | int) -> jax.Array:
  """Sum of edge-clamped shifts of `x` along a line, like `_motion_blur`.

  Tap `i` shifts by `(dy, dx) = -ceil(i * (sin, cos)(angle) - 0.5)`; the taps
  stop (without renormalising, as in the reference) at the first one whose
  shift reaches `limit_h` rows or `limit_w` columns.

  Args:
    x: `[height, width, channels]`.
    angle_deg: scalar angle in degrees.
    width: scalar, the kernel width `2 * radius + 1` (enters the angle maths).
    weights: `[taps]` tap weights (zero past `width`).
    limit_h: shift limit in rows (the reference's image height).
    limit_w: shift limit in columns.

  Returns:
    `[height, width, channels]`.
  """
  taps = weights.shape[0]
  h, w = x.shape[:2]
  theta = jnp.deg2rad(angle_deg)
  width = jnp.asarray(width, jnp.float32)
  p0 = width * jnp.sin(theta)
  p1 = width * jnp.cos(theta)
  hyp = jnp.hypot(p0, p1)
  i = jnp.arange(taps, dtype=jnp.float32)
  dy = -jnp.ceil(i * p0 / hyp - 0.5).astype(jnp.int32)
  dx = -jnp.ceil(i * p1 / hyp - 0.5).astype(jnp.int32)
  inside = (jnp.abs(dy) < limit_h) & (jnp.abs(dx) < limit_w)
  inside = jnp.cumprod(inside.astype(jnp.int32)) > 0
  weights = jnp.where(inside, weights, 0.0).astype(x.dtype)

  def body(t, acc):
    # shifted[y, x] = x[clamp(y - dy), clamp(x - dx)]: a row gather, then a
    # column gather (much faster than batched 2-D dynamic slices on CPU).
    rows = jnp.clip(jnp.arange(h) - dy[t], 0, h - 1)
    cols = jnp.clip(jnp.arange(w) - dx[t], 0, w - 1)
    return acc + weights[t] * jnp.take(jnp.take(x, rows, axis=0), cols, axis=1)

  return jax.lax.fori_loop(0, taps, body, jnp.zeros_like(x))


# ----------------------------------------------------------------------------
# Resampling.
# ----------------------------------------------------------------------------


def clipped_zoom_params(n: int, factor: float) -> tuple[int, int, int, float]:
  """imagecorruptions' `clipped_zoom` along one axis, as numbers.

  Returns:
    `(top, crop, out, scale)`: the crop `[top, top + crop)` is resized by
    scipy.ndimage.zoom (order 1, corner-aligned) to `out` samples, output
    sample `y` reading crop coordinate `y * scale`.
  """
  crop = int(np.ceil(n / float(factor)))
  top = (n - crop) // 2
  out = int(round(crop * float(factor)))
  scale = (crop - 1) / (out - 1) if out > 1 else 0.0
  return top, crop, out, scale


def zoom_taps(n_out: int, top: jax.Array, crop: jax.Array, scale: jax.Array,
              rows_used: jax.Array | int
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Linear interpolation taps of a crop-and-zoom along one axis.

  Output sample `y` (clamped to `rows_used - 1`, which edge-extends a zoomed
  array of `rows_used` samples to `n_out`) reads input coordinate
  `top + y * scale`, interpolated inside the crop `[top, top + crop)`.

  Returns:
    `(i0, i1, frac)`, each `[n_out]`: out[y] = (1 - frac) in[i0] + frac in[i1].
  """
  y = jnp.minimum(jnp.arange(n_out), rows_used - 1).astype(jnp.float32)
  coord = y * scale
  i0 = jnp.floor(coord)
  frac = coord - i0
  i0 = i0.astype(jnp.int32)
  i1 = jnp.minimum(i0 + 1, crop - 1) + top
  i0 = jnp.minimum(i0, crop - 1) + top
  return i0, i1, frac


def zoom_matrix(n_out: int, n_in: int, top: jax.Array, crop: jax.Array,
                scale: jax.Array, rows_used: jax.Array | int) -> jax.Array:
  """`[n_out, n_in]` matrix of `zoom_taps`."""
  i0, i1, frac = zoom_taps(n_out, top, crop, scale, rows_used)
  cols = jnp.arange(n_in)
  return ((1.0 - frac)[:, None] * (cols[None, :] == i0[:, None])
          + frac[:, None] * (cols[None, :] == i1[:, None]))


def interpolate_axis(x: jax.Array, taps: tuple[jax.Array, jax.Array,
                                                jax.Array],
                     axis: int) -> jax.Array:
  """Applies `zoom_taps` along `axis` of `x` with two gathers."""
  i0, i1, frac = taps
  shape = [1] * x.ndim
  shape[axis] = -1
  frac = frac.reshape(shape)
  return ((1.0 - frac) * jnp.take(x, i0, axis=axis)
          + frac * jnp.take(x, i1, axis=axis))


def bilinear_reflect(image: jax.Array, cy: jax.Array,
                     cx: jax.Array) -> jax.Array:
  """scipy.ndimage.map_coordinates(order=1, mode='reflect') per channel.

  Args:
    image: `[height, width, channels]`.
    cy: `[...]` row coordinates.
    cx: `[...]` column coordinates (same shape as `cy`).

  Returns:
    `[..., channels]`.
  """
  h, w = image.shape[:2]
  y0 = jnp.floor(cy)
  x0 = jnp.floor(cx)
  fy = (cy - y0)[..., None]
  fx = (cx - x0)[..., None]
  y0 = y0.astype(jnp.int32)
  x0 = x0.astype(jnp.int32)
  ya, yb = reflect_index(y0, h), reflect_index(y0 + 1, h)
  xa, xb = reflect_index(x0, w), reflect_index(x0 + 1, w)
  return ((1 - fy) * ((1 - fx) * image[ya, xa] + fx * image[ya, xb])
          + fy * ((1 - fx) * image[yb, xa] + fx * image[yb, xb]))


# ----------------------------------------------------------------------------
# Colour (scikit-image's rgb2hsv / hsv2rgb).
# ----------------------------------------------------------------------------


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """`[..., 3]` RGB in [0, 1] -> HSV in [0, 1], as skimage.color.rgb2hsv."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = jnp.max(rgb, axis=-1)
  delta = v - jnp.min(rgb, axis=-1)
  flat = delta == 0
  s = jnp.where(flat, 0.0, delta / jnp.where(v == 0, 1.0, v))
  safe = jnp.where(flat, 1.0, delta)
  h = jnp.where(r == v, (g - b) / safe, 0.0)
  h = jnp.where(g == v, 2.0 + (b - r) / safe, h)
  h = jnp.where(b == v, 4.0 + (r - g) / safe, h)
  h = jnp.where(flat, 0.0, jnp.mod(h / 6.0, 1.0))
  return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """`[..., 3]` HSV -> RGB, as skimage.color.hsv2rgb."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  hi = jnp.floor(h * 6.0)
  f = h * 6.0 - hi
  p = v * (1.0 - s)
  q = v * (1.0 - f * s)
  t = v * (1.0 - (1.0 - f) * s)
  hi = jnp.mod(hi.astype(jnp.int32), 6)
  table = jnp.stack([
      jnp.stack([v, t, p], -1), jnp.stack([q, v, p], -1),
      jnp.stack([p, v, t], -1), jnp.stack([p, q, v], -1),
      jnp.stack([t, p, v], -1), jnp.stack([v, p, q], -1)])
  return jnp.take_along_axis(table, hi[None, ..., None], axis=0)[0]


def rgb_to_gray(rgb: jax.Array) -> jax.Array:
  """cv2.COLOR_RGB2GRAY on floats: `[..., 3]` -> `[...]`."""
  return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
