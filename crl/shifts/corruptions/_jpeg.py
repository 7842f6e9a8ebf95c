"""A JPEG encode-decode round trip in JAX (baseline, 4:2:0, libjpeg maths).

What PIL's `save(..., 'JPEG', quality=q)` followed by decoding does with
libjpeg-turbo: 8-bit quantisation of the input; fixed-point RGB -> YCbCr
(JFIF); 2x2 chroma averaging with libjpeg's alternating rounding bias; level
shift and 8x8 DCT; quantisation with the standard (Annex K) tables scaled by
libjpeg's `jpeg_quality_scaling` and clamped to 1..255 (baseline); the
inverse; libjpeg's "fancy" (triangle) chroma upsampling; fixed-point YCbCr ->
RGB. The DCT and its inverse are libjpeg's integer "islow" algorithms
(jfdctint.c, jidctint.c) and the quantiser is libjpeg-turbo's reciprocal
multiplication, so 8-bit inputs give PIL's output bit for bit. Edge blocks
are padded by edge replication as libjpeg does.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


_LUMA = np.asarray([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]).reshape(8, 8)
_CHROMA = np.asarray([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
]).reshape(8, 8)


def quant_tables(quality: int) -> np.ndarray:
  """`[2, 8, 8]` (luma, chroma) tables of libjpeg's jpeg_set_quality."""
  quality = min(max(int(quality), 1), 100)
  scale = 5000 // quality if quality < 50 else 200 - quality * 2
  tables = (np.stack([_LUMA, _CHROMA]) * scale + 50) // 100
  return np.clip(tables, 1, 255).astype(np.float32)


# libjpeg's jfdctint.c / jidctint.c ("islow") constants, CONST_BITS = 13.
_CONST_BITS = 13
_PASS1_BITS = 2
_F0298, _F0390, _F0541, _F0765 = 2446, 3196, 4433, 6270
_F0899, _F1175, _F1501, _F1847 = 7373, 9633, 12299, 15137
_F1961, _F2053, _F2562, _F3072 = 16069, 16819, 20995, 25172


def _descale(x, n):
  return (x + (1 << (n - 1))) >> n


def _fdct_1d(d, shift_even, shift_odd):
  """One pass of jpeg_fdct_islow on 8 int32 arrays (LL&M butterflies)."""
  tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
  tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
  tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
  tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
  tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
  tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
  out = [None] * 8
  out[0], out[4] = shift_even(tmp10 + tmp11), shift_even(tmp10 - tmp11)
  z1 = (tmp12 + tmp13) * _F0541
  out[2] = shift_odd(z1 + tmp13 * _F0765)
  out[6] = shift_odd(z1 - tmp12 * _F1847)
  z1, z2 = tmp4 + tmp7, tmp5 + tmp6
  z3, z4 = tmp4 + tmp6, tmp5 + tmp7
  z5 = (z3 + z4) * _F1175
  tmp4, tmp5 = tmp4 * _F0298, tmp5 * _F2053
  tmp6, tmp7 = tmp6 * _F3072, tmp7 * _F1501
  z1, z2 = z1 * -_F0899, z2 * -_F2562
  z3, z4 = z3 * -_F1961 + z5, z4 * -_F0390 + z5
  out[7] = shift_odd(tmp4 + z1 + z3)
  out[5] = shift_odd(tmp5 + z2 + z4)
  out[3] = shift_odd(tmp6 + z2 + z3)
  out[1] = shift_odd(tmp7 + z1 + z4)
  return out


def _idct_1d(c, shift):
  """One pass of jpeg_idct_islow on 8 int32 arrays."""
  z2, z3 = c[2], c[6]
  z1 = (z2 + z3) * _F0541
  tmp2 = z1 - z3 * _F1847
  tmp3 = z1 + z2 * _F0765
  tmp0 = (c[0] + c[4]) << _CONST_BITS
  tmp1 = (c[0] - c[4]) << _CONST_BITS
  tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
  tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
  tmp0, tmp1, tmp2, tmp3 = c[7], c[5], c[3], c[1]
  z1, z2 = tmp0 + tmp3, tmp1 + tmp2
  z3, z4 = tmp0 + tmp2, tmp1 + tmp3
  z5 = (z3 + z4) * _F1175
  tmp0, tmp1 = tmp0 * _F0298, tmp1 * _F2053
  tmp2, tmp3 = tmp2 * _F3072, tmp3 * _F1501
  z1, z2 = z1 * -_F0899, z2 * -_F2562
  z3, z4 = z3 * -_F1961 + z5, z4 * -_F0390 + z5
  tmp0 = tmp0 + z1 + z3
  tmp1 = tmp1 + z2 + z4
  tmp2 = tmp2 + z2 + z3
  tmp3 = tmp3 + z1 + z4
  return [shift(tmp10 + tmp3), shift(tmp11 + tmp2), shift(tmp12 + tmp1),
          shift(tmp13 + tmp0), shift(tmp13 - tmp0), shift(tmp12 - tmp1),
          shift(tmp11 - tmp2), shift(tmp10 - tmp3)]


def _along(fn, x, axis):
  parts = fn([jnp.take(x, i, axis=axis) for i in range(8)])
  return jnp.stack(parts, axis=axis)


def reciprocals(tables: np.ndarray) -> np.ndarray:
  """libjpeg-turbo's compute_reciprocal for divisors 8 * table.

  Returns:
    int64 `[..., 3, 8, 8]`: reciprocal, rounding correction, total shift;
    `q = ((|coef| + corr) * recip) >> shift` with the sign of coef.
  """
  divisors = (np.asarray(tables) * 8).astype(np.int64)
  out = np.zeros(divisors.shape[:-2] + (3, 8, 8), np.int64)
  for idx in np.ndindex(*divisors.shape):
    d = int(divisors[idx])
    b = d.bit_length() - 1
    r = 16 + b
    fq, fr = divmod(1 << r, d)
    c = d // 2
    if fr == 0:
      fq >>= 1
      r -= 1
    elif fr <= d // 2:
      c += 1
    else:
      fq += 1
    lead, (i, j) = idx[:-2], idx[-2:]
    out[lead + (0, i, j)] = fq
    out[lead + (1, i, j)] = c
    out[lead + (2, i, j)] = r
  return out


def _code_blocks(blocks: jnp.ndarray, table: jnp.ndarray,
                 recip: jnp.ndarray) -> jnp.ndarray:
  """8-bit blocks `[n, 8, 8]` -> decoded 8-bit blocks (int32).

  libjpeg's integer forward DCT, libjpeg-turbo's reciprocal quantiser,
  dequantisation, integer inverse DCT, +128 and clamping.

  Args:
    blocks: int32 `[n, 8, 8]` samples 0..255.
    table: int32 `[n, 8, 8]` quantisation table of each block.
    recip: int32 `[n, 3, 8, 8]` its `reciprocals`.
  """
  x = blocks - 128
  pass1 = lambda v: v << _PASS1_BITS
  odd1 = lambda v: _descale(v, _CONST_BITS - _PASS1_BITS)
  coef = _along(lambda d: _fdct_1d(d, pass1, odd1), x, 2)
  even2 = lambda v: _descale(v, _PASS1_BITS)
  odd2 = lambda v: _descale(v, _CONST_BITS + _PASS1_BITS)
  coef = _along(lambda d: _fdct_1d(d, even2, odd2), coef, 1)
  mult, corr, shift = recip[:, 0], recip[:, 1], recip[:, 2]
  mag = ((jnp.abs(coef) + corr).astype(jnp.uint32)
         * mult.astype(jnp.uint32)) >> shift.astype(jnp.uint32)
  coef = jnp.sign(coef) * mag.astype(jnp.int32) * table
  ws = _along(lambda c: _idct_1d(
      c, lambda v: _descale(v, _CONST_BITS - _PASS1_BITS)), coef, 1)
  out = _along(lambda c: _idct_1d(
      c, lambda v: _descale(v, _CONST_BITS + _PASS1_BITS + 3)), ws, 2)
  return jnp.clip(out + 128, 0, 255)


def _to_blocks(plane):
  h, w = plane.shape
  return plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(
      -1, 8, 8)


def _from_blocks(blocks, h, w):
  return blocks.reshape(h // 8, w // 8, 8, 8).transpose(0, 2, 1, 3).reshape(
      h, w)


def _fix(x: float) -> int:
  return int(x * (1 << 16) + 0.5)


def _fancy_upsample(plane: jnp.ndarray) -> jnp.ndarray:
  """libjpeg's h2v2_fancy_upsample: `[h, w]` -> `[2h, 2w]` (int32)."""
  up = jnp.concatenate([plane[:1], plane[:-1]], axis=0)
  down = jnp.concatenate([plane[1:], plane[-1:]], axis=0)
  # Output rows 2i (nearer the row above) and 2i + 1 (nearer the row below).
  colsum = jnp.stack([3 * plane + up, 3 * plane + down], axis=1)
  left = jnp.concatenate([colsum[..., :1], colsum[..., :-1]], axis=-1)
  right = jnp.concatenate([colsum[..., 1:], colsum[..., -1:]], axis=-1)
  even = (3 * colsum + left + 8) >> 4
  odd = (3 * colsum + right + 7) >> 4
  out = jnp.stack([even, odd], axis=-1)  # [h, 2, w, 2]
  h, w = plane.shape
  return out.reshape(2 * h, 2 * w)


def jpeg_round_trip(x: jnp.ndarray, tables: jnp.ndarray,
                    recip: jnp.ndarray) -> jnp.ndarray:
  """Encodes and decodes one image.

  Args:
    x: `[height, width, 3]` in [0, 1].
    tables: `[2, 8, 8]` luma and chroma quantisation tables.
    recip: `[2, 3, 8, 8]` their `reciprocals`.

  Returns:
    `[height, width, 3]` in [0, 1] (multiples of 1/255).
  """
  h, w = x.shape[:2]
  rgb = jnp.round(jnp.clip(x, 0, 1) * 255.0).astype(jnp.int32)
  hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
  rgb = jnp.pad(rgb, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  half = 1 << 15
  y = (_fix(0.299) * r + _fix(0.587) * g + _fix(0.114) * b + half) >> 16
  chroma_offset = (128 << 16) + half - 1
  cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b
        + chroma_offset) >> 16
  cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b
        + chroma_offset) >> 16
  bias = jnp.asarray([1, 2] * (wp // 4), jnp.int32)

  def downsample(c):
    c = c.reshape(hp // 2, 2, wp // 2, 2).sum(axis=(1, 3))
    return (c + bias) >> 2

  # One pass over all blocks: luma blocks, then Cb, then Cr.
  n_y = (hp // 8) * (wp // 8)
  n_c = (hp // 16) * (wp // 16)
  blocks = jnp.concatenate([_to_blocks(y), _to_blocks(downsample(cb)),
                            _to_blocks(downsample(cr))])
  which = np.repeat([0, 1, 1], [n_y, n_c, n_c])
  blocks = _code_blocks(blocks, tables.astype(jnp.int32)[which],
                        recip[which])
  y = _from_blocks(blocks[:n_y], hp, wp)
  hc, wc = -(-h // 2), -(-w // 2)
  cb = _from_blocks(blocks[n_y:n_y + n_c], hp // 2, wp // 2)[:hc, :wc]
  cr = _from_blocks(blocks[n_y + n_c:], hp // 2, wp // 2)[:hc, :wc]
  cb, cr = _fancy_upsample(cb), _fancy_upsample(cr)
  y, cb, cr = y[:h, :w], cb[:h, :w] - 128, cr[:h, :w] - 128
  r = y + ((_fix(1.402) * cr + half) >> 16)
  g = y + ((-_fix(0.34414) * cb + half - _fix(0.71414) * cr) >> 16)
  b = y + ((_fix(1.772) * cb + half) >> 16)
  out = jnp.clip(jnp.stack([r, g, b], axis=-1), 0, 255)
  return out.astype(jnp.float32) / 255.0
