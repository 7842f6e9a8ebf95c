"""Noise (gaussian, shot, impulse, speckle) and blur corruptions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crl.shifts.corruptions import _ops, _random
from crl.shifts.corruptions._spec import Corruption, no_draw, pick

# ----------------------------------------------------------------------------
# Noise.
# ----------------------------------------------------------------------------


def _normal_draw(key, height, width):
  return {"normal": _random.normal(key, (height, width, 3))}


_GAUSSIAN = (.08, .12, .18, .26, .38)
_GAUSSIAN_SIGMA = np.asarray(_GAUSSIAN, np.float32)


def _gaussian_noise(x, noise, s):
  return jnp.clip(x + pick(_GAUSSIAN_SIGMA, s) * noise["normal"], 0, 1)


_SHOT = (60, 25, 12, 5, 3)
_SHOT_PHOTONS = np.asarray(_SHOT, np.float32)


def poisson_inverse_cdf(u: jax.Array, lam: jax.Array,
                        max_count: int) -> jax.Array:
  """min(Poisson(lam), max_count) from U[0, 1) draws by inverse-CDF search.

  Accumulates the pmf for k = 0 .. max_count - 1 (float32; exp(-lam) stays
  normal for lam < 87) and counts the CDF values at or below u: one
  uniform per value and a fixed number of unrolled steps, which XLA fuses
  (a CPU while loop over the image is several times slower; rejection
  samplers' vectorised loops draw until every value is accepted).

  Args:
    u: `[...]` U[0, 1) draws.
    lam: `[...]` rates.
    max_count: static cap.

  Returns:
    float32 `[...]` counts in 0..max_count.
  """
  p = jnp.exp(-lam)
  cdf = p
  count = jnp.zeros(u.shape, jnp.float32)
  for k in range(max_count):
    count = count + (cdf <= u)
    p = p * lam / (k + 1)
    cdf = cdf + p
  return count


def _shot_draw(key, height, width):
  return {"uniform": _random.uniform(key, (height, width, 3))}


def _shot_noise(x, noise, s):
  # clip(Poisson(x c) / c, 0, 1) only needs the count up to c; one branch
  # per severity so that each runs exactly c steps.
  branches = [
      lambda u, x, c=c: jnp.clip(poisson_inverse_cdf(u, x * c, c) / c, 0, 1)
      for c in _SHOT]
  return jax.lax.switch(s, branches, noise["uniform"], x)


_IMPULSE = (.03, .06, .09, .17, .27)
_IMPULSE_AMOUNT = np.asarray(_IMPULSE, np.float32)


def _impulse_draw(key, height, width):
  return {"bits": _random.bits(key, (height, width, 3))}


def _impulse_noise(x, noise, s):
  # One 32-bit draw per value: 24 bits decide the flip (U[0, 1) <= amount,
  # as skimage), the lowest bit salt or pepper.
  u = (noise["bits"] >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
  flipped = u <= pick(_IMPULSE_AMOUNT, s)
  salted = (noise["bits"] & 1) == 1
  return jnp.where(flipped, jnp.where(salted, 1.0, 0.0), x)


_SPECKLE = (.15, .2, .35, .45, .6)
_SPECKLE_SIGMA = np.asarray(_SPECKLE, np.float32)


def _speckle_noise(x, noise, s):
  return jnp.clip(x + x * pick(_SPECKLE_SIGMA, s) * noise["normal"], 0, 1)


# ----------------------------------------------------------------------------
# Blur.
# ----------------------------------------------------------------------------

_GAUSSIAN_BLUR_SIGMA = (1, 2, 3, 4, 6)


def _gaussian_blur(x, noise, s):
  del noise
  h, w = x.shape[:2]
  rows = _ops.gaussian_matrices(_GAUSSIAN_BLUR_SIGMA, h, "nearest")
  cols = _ops.gaussian_matrices(_GAUSSIAN_BLUR_SIGMA, w, "nearest")
  return jnp.clip(_ops.separable(x, pick(rows, s), pick(cols, s)), 0, 1)


_DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))


def _disk(radius: int, alias_blur: float) -> np.ndarray:
  """imagecorruptions' `disk`: an aliased disk blurred by cv2.GaussianBlur."""
  if radius <= 8:
    grid, ksize = np.arange(-8, 8 + 1), 3
  else:
    grid, ksize = np.arange(-radius, radius + 1), 5
  xx, yy = np.meshgrid(grid, grid)
  disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
  disk /= disk.sum()
  t = np.arange(ksize) - (ksize - 1) / 2
  g = np.exp(-t ** 2 / (2 * alias_blur ** 2))
  m = _ops.filter_matrix(g / g.sum(), len(grid), "mirror").astype(np.float64)
  return m @ disk @ m.T


def _defocus_kernels() -> np.ndarray:
  kernels = [_disk(r, a) for r, a in _DEFOCUS]
  size = max(k.shape[0] for k in kernels)
  out = np.zeros((len(kernels), size, size), np.float32)
  for i, k in enumerate(kernels):
    o = (size - k.shape[0]) // 2
    out[i, o:o + k.shape[0], o:o + k.shape[0]] = k
  return out


_DEFOCUS_KERNELS = _defocus_kernels()


def _defocus_blur(x, noise, s):
  del noise
  return jnp.clip(_ops.conv2d_mirror(x, pick(_DEFOCUS_KERNELS, s)), 0, 1)


_GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
_GLASS_DELTA = np.asarray([g[1] for g in _GLASS], np.int32)
_GLASS_ITERS = np.asarray([g[2] for g in _GLASS], np.int32)


def glass_read_index(uniform: jax.Array, h: jax.Array, max_delta: jax.Array,
                     width: int, max_delta_bound: int) -> jax.Array:
  """Where the pixels of visited rows read from, for any number of rows.

  One visit of row `h` runs the steps i = 0, 1, ... at columns
  c = width - d - i (right to left, c in [d + 1, width - d]); step i copies
  the pixel at (h + dy, c + dx) into (h, c). Each step writes only its own
  pixel of the row, so it reads the row-start state unless it reads a pixel
  of the same row visited earlier (dy = 0, 0 < dx, c + dx <= width - d),
  whose value it inherits. Inheritance hops right by dx < d columns; a
  right-to-left scan over the columns resolves the chains.

  Args:
    uniform: `[..., width, 2]` U[0, 1) draws (dx, dy) of the rows' steps,
      indexed by step (the first `width - 2d` are used).
    h: `[...]` int32, the row each row of draws visits.
    max_delta: d (traced allowed).
    width: image width.
    max_delta_bound: static upper bound of d (bounds the hops).

  Returns:
    int32 `[..., width]`: the flat index (`row * width + column`), into the
    image as it was when the visit started, that column c holds after the
    visit (itself for unvisited columns).
  """
  c = jnp.arange(width)
  valid = (c >= max_delta + 1) & (c <= width - max_delta)
  # Column c's step is width - d - c: reverse the steps, shift by d - 1
  # (what wraps around lands on unvisited columns).
  u = jnp.roll(uniform[..., ::-1, :], 1 - max_delta, axis=-2)
  dx = jnp.floor(u[..., 0] * (2 * max_delta)).astype(jnp.int32) - max_delta
  dy = jnp.floor(u[..., 1] * (2 * max_delta)).astype(jnp.int32) - max_delta
  h = jnp.asarray(h)[..., None]
  read = jnp.where(valid, (h + dy) * width + c + dx, h * width + c)
  inherit = valid & (dy == 0) & (dx > 0) & (c + dx <= width - max_delta)
  hop = jnp.where(inherit, dx, 0)

  def column(right, read_hop):
    # right[k]: the result of column c + 1 + k.
    read, hop = read_hop
    out = read
    for k, value in enumerate(right):
      out = jnp.where(hop == k + 1, value, out)
    return (out,) + right[:-1], out

  hops = max(1, max_delta_bound - 1)
  right = tuple(jnp.zeros(read.shape[:-1], jnp.int32) for _ in range(hops))
  _, out = jax.lax.scan(column, right, (jnp.moveaxis(read, -1, 0),
                                        jnp.moveaxis(hop, -1, 0)),
                        reverse=True)
  return jnp.moveaxis(out, 0, -1)


def glass_source_index(height: int, width: int, max_delta: jax.Array,
                       iterations: jax.Array, uniform,
                       max_delta_bound: int | None = None) -> jax.Array:
  """The reference's sequential local pixel "swaps", as a source index.

  Pass `i` visits rows `height - d .. d + 1` and, in each, columns
  `width - d .. d + 1` (both downwards) and "swaps" the pixel with the one
  at a uniform offset (dx, dy) in `[-d, d)^2`. The reference writes the
  swap as a NumPy tuple assignment of two views, `x[a], x[b] = x[b], x[a]`,
  which copies pixel b into a and leaves b unchanged (the second assignment
  reads the already overwritten view); that is what is reproduced. The
  copies never depend on pixel values, so they are played on an index array.

  Rows are processed in order, each as one gather of the row's read indices
  (`glass_read_index`, which resolves the order within the row exactly) and
  one row update.

  Args:
    height: image height.
    width: image width.
    max_delta: d (traced allowed).
    iterations: number of passes (traced allowed).
    uniform: the U[0, 1) draws (dx, dy) of row step `r` (pass * rows + row),
      either all rows at once, `[steps, width, 2]` with steps >=
      iterations * (height - 2d) (their read indices are then computed
      together, fastest), or a callable `r -> [width, 2]` (row by row, for
      large images).
    max_delta_bound: static upper bound of d (default: glass_blur's 4).

  Returns:
    int32 `[height * width]`: output pixel `i` is input pixel `src[i]`.
  """
  bound = max_delta_bound or int(_GLASS_DELTA.max())
  nh = height - 2 * max_delta
  row_of = lambda r: height - max_delta - r % nh
  if callable(uniform):
    read_at = lambda r: glass_read_index(uniform(r), row_of(r), max_delta,
                                         width, bound)
  else:
    table = glass_read_index(uniform, row_of(jnp.arange(uniform.shape[0])),
                             max_delta, width, bound)
    read_at = lambda r: table[r]

  def row(r, src):
    new = src.reshape(-1)[read_at(r)]
    return jax.lax.dynamic_update_index_in_dim(src, new, row_of(r), 0)

  src = jnp.arange(height * width, dtype=jnp.int32).reshape(height, width)
  return jax.lax.fori_loop(0, iterations * nh, row, src).reshape(-1)


_GLASS_MAX_PASSES = max(g[2] for g in _GLASS)
# Up to this many draws per image they are drawn up front (cheaper than
# drawing row by row inside the loop), beyond it row by row (memory).
_GLASS_UPFRONT = 1 << 16


def _glass_draw(key, height, width):
  shape = (_GLASS_MAX_PASSES * height, width, 2)
  if np.prod(shape) <= _GLASS_UPFRONT:
    return {"uniform": _random.uniform(key, shape)}
  return {"key": key}


def _glass_blur(x, noise, s):
  h, w = x.shape[:2]
  sigmas = [g[0] for g in _GLASS]
  rows = pick(_ops.gaussian_matrices(sigmas, h, "nearest"), s)
  cols = pick(_ops.gaussian_matrices(sigmas, w, "nearest"), s)
  # np.uint8(gaussian(x) * 255): truncated to 8 bits between the blurs. On
  # flat regions the float64 reference lands within 1e-13 of an integer and
  # truncates either way (rounding noise); float32 cannot follow it there.
  x = jnp.floor(_ops.separable(x, rows, cols) * 255.0) / 255.0
  if "uniform" in noise:  # `[passes * rows, width, 2]`, e.g. replayed.
    uniform = noise["uniform"]
  else:
    uniform = lambda r: _random.uniform(
        jax.random.fold_in(noise["key"], r), (w, 2))
  src = glass_source_index(h, w, pick(_GLASS_DELTA, s),
                           pick(_GLASS_ITERS, s), uniform)
  x = x.reshape(h * w, 3)[src].reshape(h, w, 3)
  return jnp.clip(_ops.separable(x, rows, cols), 0, 1)


_MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
_MOTION_WEIGHTS = _ops.motion_kernels([m[0] for m in _MOTION],
                                      [m[1] for m in _MOTION])
_MOTION_WIDTH = np.asarray([2 * m[0] + 1 for m in _MOTION], np.float32)


def _angle_draw(key, height, width):
  del height, width
  return {"uniform": _random.uniform(key, ())}


def _motion_blur(x, noise, s):
  h, w = x.shape[:2]
  angle = -45.0 + 90.0 * noise["uniform"]
  out = _ops.motion_blur(x, angle, pick(_MOTION_WIDTH, s),
                         pick(_MOTION_WEIGHTS, s), h, w)
  return jnp.clip(out, 0, 1)


_ZOOM = ((1, 1.11, .01), (1, 1.16, .01), (1, 1.21, .02), (1, 1.26, .02),
         (1, 1.31, .03))


def _zoom_tables(n: int) -> tuple[np.ndarray, ...]:
  """Per severity and zoom factor: crop top, crop size, scale, used."""
  factors = [np.arange(*z) for z in _ZOOM]
  size = max(len(f) for f in factors)
  top = np.zeros((5, size), np.int32)
  crop = np.ones((5, size), np.int32)
  scale = np.zeros((5, size), np.float32)
  used = np.zeros((5, size), np.float32)
  for i, fs in enumerate(factors):
    for j, f in enumerate(fs):
      top[i, j], crop[i, j], _, scale[i, j] = _ops.clipped_zoom_params(n, f)
      used[i, j] = 1.0
  return top, crop, scale, used


def _zoom_blur(x, noise, s):
  del noise
  h, w = x.shape[:2]
  ty, cy, sy, used = (pick(t, s) for t in _zoom_tables(h))
  tx, cx, sx, _ = (pick(t, s) for t in _zoom_tables(w))

  def body(f, acc):
    rows = _ops.zoom_taps(h, ty[f], cy[f], sy[f], h)
    cols = _ops.zoom_taps(w, tx[f], cx[f], sx[f], w)
    zoomed = _ops.interpolate_axis(_ops.interpolate_axis(x, rows, 0), cols, 1)
    return acc + used[f] * zoomed

  acc = jax.lax.fori_loop(0, used.shape[0], body, x)
  return jnp.clip(acc / (jnp.sum(used) + 1), 0, 1)


def _one(values):
  return tuple((v,) for v in values)


CORRUPTIONS = (
    Corruption(
        "gaussian_noise", "noise",
        "Additive Gaussian noise of standard deviation sigma on every pixel "
        "and channel.",
        ("sigma",), _one(_GAUSSIAN), _normal_draw,
        _gaussian_noise),
    Corruption(
        "shot_noise", "noise",
        "Poisson photon noise: each channel value x becomes "
        "Poisson(x * photons) / photons.",
        ("photons",), _one(_SHOT), _shot_draw, _shot_noise),
    Corruption(
        "impulse_noise", "noise",
        "Salt-and-pepper noise: each channel value is set to 0 or 1 (half "
        "each) with probability amount.",
        ("amount",), _one(_IMPULSE), _impulse_draw,
        _impulse_noise),
    Corruption(
        "defocus_blur", "blur",
        "Out-of-focus blur: convolution with an anti-aliased disk of the "
        "given radius in pixels.",
        ("radius", "alias_blur"), _DEFOCUS, no_draw, _defocus_blur),
    Corruption(
        "glass_blur", "blur",
        "Frosted-glass blur: Gaussian blur, sequential local pixel copies "
        "within max_delta pixels (iterations passes), Gaussian blur again.",
        ("sigma", "max_delta", "iterations"), _GLASS, _glass_draw,
        _glass_blur),
    Corruption(
        "motion_blur", "blur",
        "Linear motion blur at a random angle in [-45, 45] degrees with a "
        "one-sided Gaussian kernel (radius, sigma) in pixels.",
        ("radius", "sigma"), _MOTION, _angle_draw, _motion_blur),
    Corruption(
        "zoom_blur", "blur",
        "Zoom blur: the average of the image and its centre zooms by the "
        "factors arange(start, stop, step).",
        ("start", "stop", "step"), _ZOOM, no_draw, _zoom_blur),
    Corruption(
        "speckle_noise", "extra",
        "Multiplicative Gaussian noise: x + x * N(0, sigma^2) per pixel and "
        "channel.",
        ("sigma",), _one(_SPECKLE), _normal_draw,
        _speckle_noise),
    Corruption(
        "gaussian_blur", "extra",
        "Gaussian blur of standard deviation sigma pixels (edges "
        "replicated).",
        ("sigma",), _one(_GAUSSIAN_BLUR_SIGMA), no_draw, _gaussian_blur),
)
