"""Digital corruptions (brightness, contrast, elastic, pixelate, jpeg) and
the extra `saturate`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from crl.shifts.corruptions import _jpeg, _ops, _random
from crl.shifts.corruptions._spec import Corruption, no_draw, pick

_BRIGHTNESS = (.1, .2, .3, .4, .5)


def _brightness(x, noise, s):
  del noise
  hsv = _ops.rgb_to_hsv(x)
  v = jnp.clip(hsv[..., 2] + pick(np.asarray(_BRIGHTNESS, np.float32), s),
               0, 1)
  return jnp.clip(_ops.hsv_to_rgb(hsv.at[..., 2].set(v)), 0, 1)


_CONTRAST = (.4, .3, .2, .1, .05)


def _contrast(x, noise, s):
  del noise
  means = jnp.mean(x, axis=(0, 1), keepdims=True)
  c = pick(np.asarray(_CONTRAST, np.float32), s)
  return jnp.clip((x - means) * c + means, 0, 1)


_SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))


def _saturate(x, noise, s):
  del noise
  table = np.asarray(_SATURATE, np.float32)
  hsv = _ops.rgb_to_hsv(x)
  sat = jnp.clip(hsv[..., 1] * pick(table[:, 0], s) + pick(table[:, 1], s),
                 0, 1)
  return jnp.clip(_ops.hsv_to_rgb(hsv.at[..., 1].set(sat)), 0, 1)


_ELASTIC = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)


def _elastic_draw(key, height, width):
  return {"uniform": _random.uniform(key, (2, height, width))}


def _elastic_transform(x, noise, s):
  h, w = x.shape[:2]
  max_d = h * 0.005  # The reference uses the height for both axes.
  rows = _ops.filter_matrix(_ops.gaussian_taps(h * 0.01, 3.0), h, "reflect")
  cols = _ops.filter_matrix(_ops.gaussian_taps(w * 0.01, 3.0), w, "reflect")
  alpha = pick(np.asarray(_ELASTIC, np.float32), s)
  field = -max_d + 2 * max_d * noise["uniform"]  # U(-max_d, max_d)
  dx = _ops.separable(field[0], rows, cols) * alpha
  dy = _ops.separable(field[1], rows, cols) * alpha
  ii, jj = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                        jnp.arange(w, dtype=jnp.float32), indexing="ij")
  return jnp.clip(_ops.bilinear_reflect(x, ii + dy, jj + dx), 0, 1)


_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)


def _pil_box(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` weights of PIL's BOX resampling (Resample.c)."""
  scale = n_in / n_out
  support = 0.5 * scale
  m = np.zeros((n_out, n_in), np.float64)
  for o in range(n_out):
    centre = (o + 0.5) * scale
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), n_in)
    for i in range(lo, hi):
      t = (i - centre + 0.5) / scale
      m[o, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
    m[o] /= m[o].sum()
  return m


def _pil_nearest(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` one-hot of PIL's NEAREST resize (ImagingScaleAffine).

  PIL accumulates the source coordinate (`xo += scale`) in float64 and
  truncates it, which is reproduced to pick the same source pixels.
  """
  m = np.zeros((n_out, n_in), np.float64)
  scale = n_in / n_out
  coord = scale * 0.5
  for o in range(n_out):
    m[o, min(int(coord), n_in - 1)] = 1.0
    coord += scale
  return m


_PIL_PRECISION_BITS = 22  # Resample.c: 32 - 8 - 2 for 8-bit images.


def _pil_fixed_point(m: np.ndarray) -> np.ndarray:
  """PIL's 8-bit coefficients (normalize_coeffs_8bpc): the normalised double
  weights `k` as `int(0.5 + k * 2**22)` (all BOX weights are >= 0)."""
  return np.floor(0.5 + m * (1 << _PIL_PRECISION_BITS)).astype(np.int64)


@functools.lru_cache(maxsize=64)
def pixelate_matrices(n: int) -> np.ndarray:
  """int32 `[5, n, n]`: PIL's fixed-point BOX rows from n to `int(n * c)`,
  picked by NEAREST back to n (one BOX row per output sample)."""
  out = []
  for c in _PIXELATE:
    small = int(n * c)
    box = _pil_fixed_point(_pil_box(n, small))
    out.append(_pil_nearest(small, n).astype(np.int64) @ box)
  return np.stack(out).astype(np.int32)


@functools.lru_cache(maxsize=64)
def _pixelate_taps(n: int) -> tuple[np.ndarray, np.ndarray]:
  return _ops.sparse_rows(pixelate_matrices(n), dtype=np.int32)


_DENSE_UP_TO = 96  # Dense matmuls win on small images, gathers on large.


def _pil_round(acc: jax.Array) -> jax.Array:
  """PIL's clip8: `(acc + 2**21) >> 22` clipped to 0..255 (round half up)."""
  half = 1 << (_PIL_PRECISION_BITS - 1)
  return jnp.clip((acc + half) >> _PIL_PRECISION_BITS, 0, 255)


def _pixelate(x, noise, s):
  """PIL's 8-bit path, bit-exact: the image rounded to 8 bits, the BOX
  downsampling in fixed point, horizontal pass first, each pass rounded to
  8 bits (Resample.c), then NEAREST back up (a choice of source samples,
  folded into the BOX rows)."""
  del noise
  h, w = x.shape[:2]
  q = jnp.round(jnp.clip(x, 0, 1) * 255.0).astype(jnp.int32)
  if max(h, w) <= _DENSE_UP_TO:
    cols, rows = pick(pixelate_matrices(w), s), pick(pixelate_matrices(h), s)
    q = _pil_round(jnp.einsum("hwc,vw->hvc", q, cols,
                              preferred_element_type=jnp.int32))
    q = _pil_round(jnp.einsum("uh,hvc->uvc", rows, q,
                              preferred_element_type=jnp.int32))
  else:
    # Each output sample averages at most ceil(1 / factor) + 1 inputs.
    rows, cols = _pixelate_taps(h), _pixelate_taps(w)
    q = _pil_round(_ops.apply_sparse_rows(q, pick(cols[0], s),
                                          pick(cols[1], s), axis=1))
    q = _pil_round(_ops.apply_sparse_rows(q, pick(rows[0], s),
                                          pick(rows[1], s), axis=0))
  return q.astype(jnp.float32) / 255.0


_JPEG = (25, 18, 15, 10, 7)
_JPEG_TABLES = np.stack([_jpeg.quant_tables(q) for q in _JPEG])
_JPEG_RECIP = _jpeg.reciprocals(_JPEG_TABLES).astype(np.int32)


def _jpeg_compression(x, noise, s):
  del noise
  return _jpeg.jpeg_round_trip(x, pick(_JPEG_TABLES, s),
                               pick(_JPEG_RECIP, s))


def _one(values):
  return tuple((v,) for v in values)


CORRUPTIONS = (
    Corruption(
        "brightness", "weather",
        "Brightness: + delta on the HSV value channel (clipped), hue and "
        "saturation kept.",
        ("delta",), _one(_BRIGHTNESS), no_draw, _brightness),
    Corruption(
        "contrast", "digital",
        "Contrast: each channel's deviations from its image mean are "
        "multiplied by c.",
        ("c",), _one(_CONTRAST), no_draw, _contrast),
    Corruption(
        "elastic_transform", "digital",
        "Elastic warp (imagecorruptions 1.1.2 version): per-pixel uniform "
        "displacements of up to 0.5% of the height, Gaussian-smoothed with "
        "sigma 1% of the size and scaled by alpha.",
        ("alpha",), _one(_ELASTIC), _elastic_draw, _elastic_transform),
    Corruption(
        "pixelate", "digital",
        "Pixelation: PIL BOX downsampling by factor c, then NEAREST "
        "upsampling to the original size (PIL's 8-bit path: 8-bit input, "
        "fixed-point weights, each pass rounded to 8 bits).",
        ("factor",), _one(_PIXELATE), no_draw, _pixelate),
    Corruption(
        "jpeg_compression", "digital",
        "JPEG compression at the given libjpeg quality (4:2:0 chroma, "
        "standard tables).",
        ("quality",), _one(_JPEG), no_draw, _jpeg_compression),
    Corruption(
        "saturate", "extra",
        "Saturation: HSV saturation s becomes clip(s * scale + shift).",
        ("scale", "shift"), _SATURATE, no_draw, _saturate),
)
