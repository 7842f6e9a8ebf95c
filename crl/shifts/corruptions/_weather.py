"""Weather corruptions (snow, frost, fog) and the extra `spatter`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from crl.shifts.corruptions import _cv, _ops, _random
from crl.shifts.corruptions._spec import Corruption, pick

# ----------------------------------------------------------------------------
# Snow.
# ----------------------------------------------------------------------------

_SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8),
         (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
         (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
         (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
         (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
_SNOW_NAMES = ("loc", "scale", "zoom", "threshold", "blur_radius",
               "blur_sigma", "blend")
_SNOW_COLS = {name: np.asarray([p[i] for p in _SNOW], np.float32)
              for i, name in enumerate(_SNOW_NAMES)}
_SNOW_WEIGHTS = _ops.motion_kernels([p[4] for p in _SNOW],
                                    [p[5] for p in _SNOW])


def _snow_zoom_table(n: int) -> tuple[np.ndarray, ...]:
  """Per severity: crop top, crop size, zoomed size, scale along one axis."""
  rows = [_ops.clipped_zoom_params(n, p[2]) for p in _SNOW]
  return tuple(np.asarray(col, dt) for col, dt in
               zip(zip(*rows), (np.int32, np.int32, np.int32, np.float32)))


def _snow_draw(key, height, width):
  k1, k2 = jax.random.split(key)
  return {"normal": _random.normal(k1, (height, width)),
          "uniform": _random.uniform(k2, ())}


def _snow(x, noise, s):
  h, w = x.shape[:2]
  c = {k: pick(v, s) for k, v in _SNOW_COLS.items()}
  ty, cy, oy, sy = _snow_zoom_table(h)
  tx, cx, ox, sx = _snow_zoom_table(w)
  out_h, out_w = pick(oy, s), pick(ox, s)
  layer = c["loc"] + c["scale"] * noise["normal"]
  # Zoomed to out_h x out_w, then edge-extended to the largest such size so
  # that the motion blur's clamped shifts see the reference's borders.
  rows = _ops.zoom_matrix(int(oy.max()), h, pick(ty, s), pick(cy, s),
                          pick(sy, s), out_h)
  cols = _ops.zoom_matrix(int(ox.max()), w, pick(tx, s), pick(cx, s),
                          pick(sx, s), out_w)
  layer = _ops.separable(layer, rows, cols)
  layer = jnp.clip(jnp.where(layer < c["threshold"], 0.0, layer), 0, 1)
  angle = -135.0 + 90.0 * noise["uniform"]
  layer = _ops.motion_blur(layer[..., None], angle, 2 * c["blur_radius"] + 1,
                           pick(_SNOW_WEIGHTS, s), out_h, out_w)
  layer = jnp.round(layer[:h, :w] * 255.0) / 255.0
  gray = _ops.rgb_to_gray(x)[..., None]
  x = c["blend"] * x + (1 - c["blend"]) * jnp.maximum(x, gray * 1.5 + 0.5)
  return jnp.clip(x + layer + layer[::-1, ::-1], 0, 1)


# ----------------------------------------------------------------------------
# Frost (procedural texture instead of the reference's photographs).
# ----------------------------------------------------------------------------

_FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
_FROST_IMAGE = np.asarray([f[0] for f in _FROST], np.float32)
_FROST_TEXTURE = np.asarray([f[1] for f in _FROST], np.float32)
# Per reference photograph (frost1..frost5: the reference draws randint(5),
# so frost6 is never used; frost2 and frost3 are the same photo): its size
# and its RGB values at the ranks _FROST_RANKS after the reference's 1.1x
# bicubic rescale. Only these summary statistics are kept.
_FROST_RANKS = np.asarray([0.005, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
                           0.7, 0.8, 0.9, 0.95, 0.98, 0.995], np.float32)
_FROST_STYLES = (
    ((600, 900), ((29, 114, 132), (35, 119, 137), (40, 123, 141),
                  (46, 128, 146), (54, 135, 152), (61, 140, 157),
                  (67, 144, 162), (74, 148, 166), (82, 152, 169),
                  (90, 157, 174), (100, 163, 179), (114, 171, 186),
                  (127, 177, 191), (141, 184, 197), (156, 194, 206))),
    ((315, 560), ((128, 130, 135), (148, 151, 157), (162, 165, 172),
                  (173, 176, 184), (185, 189, 198), (193, 197, 206),
                  (199, 203, 213), (204, 209, 218), (208, 213, 224),
                  (213, 218, 228), (218, 224, 234), (225, 230, 239),
                  (230, 235, 244), (237, 241, 248), (244, 248, 251))),
    ((315, 560), ((128, 130, 135), (148, 151, 157), (162, 165, 172),
                  (173, 176, 184), (185, 189, 198), (193, 197, 206),
                  (199, 203, 213), (204, 209, 218), (208, 213, 224),
                  (213, 218, 228), (218, 224, 234), (225, 230, 239),
                  (230, 235, 244), (237, 241, 248), (244, 248, 251))),
    ((350, 527), ((60, 74, 82), (80, 94, 103), (91, 106, 115),
                  (103, 118, 129), (116, 131, 142), (124, 140, 151),
                  (131, 147, 158), (138, 153, 165), (144, 159, 172),
                  (151, 166, 179), (159, 174, 188), (170, 186, 200),
                  (183, 198, 213), (201, 216, 233), (229, 244, 254))),
    ((495, 660), ((30, 41, 52), (39, 50, 62), (48, 60, 73), (59, 71, 84),
                  (74, 86, 99), (86, 98, 110), (97, 109, 121),
                  (108, 119, 131), (119, 131, 142), (132, 143, 154),
                  (148, 158, 169), (172, 182, 191), (194, 202, 210),
                  (219, 224, 230), (243, 246, 249))),
)
_FROST_COLOURS = np.asarray([s[1] for s in _FROST_STYLES], np.float32)
# Octaves of value noise with wavelengths 2, 4, ..., 512 photo pixels and
# equal variance: the photographs' spectra carry about equal power per
# octave (1/f^2), from the finest needles to the size of the photo. The six
# finest octaves are "ridged", (1 - |n|)^4, which turns the zero crossings
# of the noise into thin bright lines; stretched 4x along a random direction
# per octave they look like the photographs' ice needles. The three coarsest
# octaves stay smooth and carry the large-scale tone variation.
_FROST_OCTAVES = 9
_FROST_RIDGED = 6
_FROST_STRETCH = 4.0
_FROST_RIDGE_POWER = 4
# Moments (Monte Carlo, 4e6 samples) of smoothstep-interpolated value noise
# n with U[-1, 1) lattice values at a uniform position, and of (1 - |n|)^4.
_NOISE_STD = 0.4290
_RIDGE_MEAN, _RIDGE_STD = 0.3022, 0.2888


def _frost_scales(h: int, w: int) -> np.ndarray:
  """Per style, the reference's photo rescale factor (>= 1.1)."""
  scales = []
  for (ph, pw), _ in _FROST_STYLES:
    scales.append(1.1 * max(1.0, h / ph, w / pw))
  return np.asarray(scales, np.float32)


def _frost_draw(key, height, width):
  del height, width
  keys = jax.random.split(key, 4)
  return {
      "seed": _random.bits(keys[0], ()),
      "style": _random.uniform(keys[1], ()),
      "angle": _random.uniform(keys[2], (_FROST_OCTAVES,)),
      "offset": _random.uniform(keys[3], (_FROST_OCTAVES, 2)),
  }


def _lattice_value(iv, iu, octave, seed):
  """Hashed U[-1, 1) value of lattice point (iv, iu) of one octave."""
  h = (seed ^ (iv.astype(jnp.uint32) * jnp.uint32(0x8DA6B343))
       ^ (iu.astype(jnp.uint32) * jnp.uint32(0xD8163841))
       ^ (jnp.asarray(octave, jnp.uint32) * jnp.uint32(0xCB1AB31F)))
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  h = h ^ (h >> 16)
  return (h >> 8).astype(jnp.float32) * (2.0 / (1 << 24)) - 1.0


def frost_texture(noise, height: int, width: int) -> jax.Array:
  """Procedural frost, `[height, width, 3]` in 0..255.

  A sum of 9 standardised octaves of value noise (smoothstep interpolation
  of hashed lattice values; the 6 finest ridged), each stretched 4x along
  its own random direction, is mapped through the normal CDF to ranks and
  then through the rank -> RGB table of one of the five reference
  photographs (chosen uniformly, as the reference's randint(5)), at the
  photograph's pixel scale.
  """
  style = jnp.minimum((noise["style"] * 5).astype(jnp.int32), 4)
  scale = pick(_frost_scales(height, width), style)
  ii, jj = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  extent = float(height + width)

  def octave(k, field):
    wavelength = scale * jnp.exp2((k + 1).astype(jnp.float32))
    theta = jnp.pi * noise["angle"][k]
    along = jj * jnp.cos(theta) + ii * jnp.sin(theta)
    across = ii * jnp.cos(theta) - jj * jnp.sin(theta)
    u = (along + extent) / (wavelength * _FROST_STRETCH) + noise["offset"][k, 0]
    v = (across + extent) / wavelength + noise["offset"][k, 1]
    iu, iv = jnp.floor(u), jnp.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    iu, iv = iu.astype(jnp.int32), iv.astype(jnp.int32)
    value = lambda dv, du: _lattice_value(iv + dv, iu + du, k, noise["seed"])
    top = (1 - fu) * value(0, 0) + fu * value(0, 1)
    bottom = (1 - fu) * value(1, 0) + fu * value(1, 1)
    n = (1 - fv) * top + fv * bottom
    ridge = ((1 - jnp.abs(n)) ** _FROST_RIDGE_POWER - _RIDGE_MEAN) / _RIDGE_STD
    return field + jnp.where(k < _FROST_RIDGED, ridge, n / _NOISE_STD)

  field = jax.lax.fori_loop(0, _FROST_OCTAVES, octave,
                            jnp.zeros((height, width), jnp.float32))
  ranks = ndtr(field / np.sqrt(_FROST_OCTAVES))
  colours = pick(_FROST_COLOURS, style)
  return jnp.stack([jnp.interp(ranks, _FROST_RANKS, colours[:, c])
                    for c in range(3)], axis=-1)


def _frost(x, noise, s):
  h, w = x.shape[:2]
  texture = frost_texture(noise, h, w) / 255.0
  return jnp.clip(pick(_FROST_IMAGE, s) * x + pick(_FROST_TEXTURE, s) * texture,
                  0, 1)


# ----------------------------------------------------------------------------
# Fog.
# ----------------------------------------------------------------------------

def plasma_draw_size(mapsize: int) -> int:
  """Number of U[0, 1) draws of one plasma fractal (3 m^2 per level)."""
  return mapsize * mapsize - 1


def plasma_fractal(uniforms: jax.Array, mapsize: int,
                   wibbledecay: jax.Array) -> jax.Array:
  """Diamond-square heightmap in [0, 1], `[mapsize, mapsize]`.

  The reference fills a full-size array with strided writes; here each
  level turns the `[m, m]` grid of corners into the `[2m, 2m]` grid of the
  next level by interleaving corners, square centres and the two diamond
  sets, which computes the same values with the same wrap-around neighbours.

  Args:
    uniforms: `[mapsize**2 - 1]` U[0, 1) draws, in the reference's call
      order: per level (m = 1, 2, ..., mapsize / 2) three `[m, m]` blocks
      (squares, diamonds on the corner rows, diamonds on the corner columns).
    mapsize: power of two.
    wibbledecay: the roughness decay (traced scalar allowed).
  """
  grid = jnp.zeros((1, 1), jnp.float32)
  wibble = jnp.asarray(100.0, jnp.float32)
  start = 0
  m = 1
  while m < mapsize:
    draws = uniforms[start:start + 3 * m * m].reshape(3, m, m)
    start += 3 * m * m
    noise = wibble * (-wibble + 2 * wibble * draws)
    square = grid + jnp.roll(grid, -1, axis=0)
    square = square + jnp.roll(square, -1, axis=1)
    sq = square / 4 + noise[0]
    lt = ((sq + jnp.roll(sq, 1, axis=0)) + (grid + jnp.roll(grid, -1, axis=1)))
    tt = ((sq + jnp.roll(sq, 1, axis=1)) + (grid + jnp.roll(grid, -1, axis=0)))
    lt = lt / 4 + noise[1]
    tt = tt / 4 + noise[2]
    # [[corner, lt], [tt, square]] per coarse cell.
    top = jnp.stack([grid, lt], axis=-1).reshape(m, 2 * m)
    bottom = jnp.stack([tt, sq], axis=-1).reshape(m, 2 * m)
    grid = jnp.stack([top, bottom], axis=1).reshape(2 * m, 2 * m)
    wibble = wibble / wibbledecay
    m *= 2
  grid = grid - grid.min()
  return grid / grid.max()


def next_power_of_2(x: int) -> int:
  return 1 if x == 0 else 2 ** (x - 1).bit_length()


_FOG = ((1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4))
_FOG_STRENGTH = np.asarray([f[0] for f in _FOG], np.float32)
_FOG_DECAY = np.asarray([f[1] for f in _FOG], np.float32)


def _fog_mapsize(height: int, width: int) -> int:
  return next_power_of_2(max(height, width))


def _fog_draw(key, height, width):
  size = plasma_draw_size(_fog_mapsize(height, width))
  return {"uniform": _random.uniform(key, (size,))}


def _fog(x, noise, s):
  h, w = x.shape[:2]
  c = pick(_FOG_STRENGTH, s)
  plasma = plasma_fractal(noise["uniform"], _fog_mapsize(h, w),
                               pick(_FOG_DECAY, s))[:h, :w, None]
  max_val = jnp.max(x)
  return jnp.clip((x + c * plasma) * max_val / (max_val + c), 0, 1)


# ----------------------------------------------------------------------------
# Spatter.
# ----------------------------------------------------------------------------

_SPATTER = ((0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1))
_SPATTER_NAMES = ("loc", "scale", "sigma", "threshold", "intensity", "mud")
_SPATTER_COLS = {name: np.asarray([p[i] for p in _SPATTER], np.float32)
                 for i, name in enumerate(_SPATTER_NAMES)}
_WATER = np.asarray([175, 238, 238], np.float32) / 255.0  # pale turquoise
_MUD = np.asarray([63, 42, 20], np.float32) / 255.0  # mud brown


def _spatter_draw(key, height, width):
  return {"normal": _random.normal(key, (height, width))}


def _spatter(x, noise, s):
  h, w = x.shape[:2]
  c = {k: pick(v, s) for k, v in _SPATTER_COLS.items()}
  sigmas = [p[2] for p in _SPATTER]
  liquid = c["loc"] + c["scale"] * noise["normal"]
  liquid = _ops.separable(
      liquid, pick(_ops.gaussian_matrices(sigmas, h, "nearest"), s),
      pick(_ops.gaussian_matrices(sigmas, w, "nearest"), s))
  liquid = jnp.where(liquid < c["threshold"], 0.0, liquid)

  def water(_):
    liquid_u8 = jnp.clip(jnp.floor(liquid * 255.0), 0, 255).astype(jnp.int32)
    shading = _cv.spatter_shading(liquid_u8)
    m = liquid_u8.astype(jnp.float32) * shading.astype(jnp.float32)
    m = m / jnp.maximum(jnp.max(m), 1e-12) * c["intensity"]
    return jnp.clip(x + m[..., None] * _WATER, 0, 1)

  def mud(_):
    m = (liquid > c["threshold"]).astype(jnp.float32)
    m = _ops.separable(m, _ops.gaussian_matrices([1.5], h, "nearest")[0],
                       _ops.gaussian_matrices([1.5], w, "nearest")[0])
    m = jnp.where(m < 0.8, 0.0, m)[..., None]
    return jnp.clip(x * (1 - m) + _MUD * m, 0, 1)

  return jax.lax.cond(c["mud"] > 0, mud, water, None)


CORRUPTIONS = (
    Corruption(
        "snow", "weather",
        "Snow: a thresholded, zoomed Gaussian field motion-blurred at a "
        "random angle in [-135, -45] degrees, added twice (rotated 180 "
        "degrees) to a brightened image.",
        _SNOW_NAMES, _SNOW, _snow_draw, _snow),
    Corruption(
        "frost", "weather",
        "Frost: image_weight * image + frost_weight * a procedural frost "
        "texture coloured like one of the five reference frost photographs.",
        ("image_weight", "frost_weight"), _FROST, _frost_draw, _frost),
    Corruption(
        "fog", "weather",
        "Fog: a diamond-square plasma fractal (roughness decay wibbledecay) "
        "added with weight strength, then renormalised to the image "
        "maximum.",
        ("strength", "wibbledecay"), _FOG, _fog_draw, _fog),
    Corruption(
        "spatter", "extra",
        "Spatter: blobs of a thresholded smoothed Gaussian field, shaded "
        "turquoise water (severities 1-3) or opaque brown mud (4-5).",
        _SPATTER_NAMES, _SPATTER, _spatter_draw, _spatter),
)
