"""Image operations of the augmentation policies, in JAX, on one image.

Every op takes one image f32[height, width, 3] in [0, 1] and explicit
parameters (possibly traced), returns an image of the same shape in [0, 1],
and is jit- and vmap-able. The colour ops follow PIL's `ImageOps` /
`ImageEnhance` (what torchvision's RandAugment and the AugMix code call) on
the image quantised to 8 bits where PIL works on 8-bit values (posterize,
solarize thresholds, equalize's histogram); tests compare them with PIL.

Geometry: `affine` resamples bilinearly with a constant fill (0, black, as
torchvision's RandAugment and the AugMix code); the transforms act about the
image centre, in pixels, with y pointing down. `rotate(angle)` turns the
content counter-clockwise as seen on screen (PIL's `Image.rotate`), so
`rotate(image, 90)` of a square image is `jnp.rot90(image)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# PIL's ITU-R 601-2 luma transform (`Image.convert('L')`).
LUMA = (0.299, 0.587, 0.114)


def _to_uint8_levels(image: Array) -> Array:
  """[0, 1] floats -> integer levels 0..255 (int32), rounded."""
  return jnp.round(jnp.clip(image, 0., 1.) * 255.).astype(jnp.int32)


# Geometry --------------------------------------------------------------------


def affine(image: Array, matrix: Array, fill: float = 0.) -> Array:
  """Resamples `image` at `matrix @ (x, y, 1)` for every output pixel.

  Args:
    image: f32[height, width, channels].
    matrix: f32[2, 3], maps centred output pixel coordinates (x right, y
      down, origin at the image centre, in pixels) to centred input ones.
    fill: value of pixels that map outside the input.

  Returns:
    f32[height, width, channels], bilinear.
  """
  h, w, c = image.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5 - h / 2.,
                        jnp.arange(w, dtype=jnp.float32) + 0.5 - w / 2.,
                        indexing="ij")
  x_in = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
  y_in = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
  rows = y_in + h / 2. - 0.5
  cols = x_in + w / 2. - 0.5
  return bilinear(image, rows, cols, fill)


def bilinear(image: Array, rows: Array, cols: Array, fill: float) -> Array:
  """`image` f32[h, w, c] at fractional pixel indices `rows`, `cols`
  (`[h', w']`); neighbours outside the image count as `fill` (as
  `jax.scipy.ndimage.map_coordinates(order=1, mode='constant')`, but one
  gather for all channels)."""
  h, w, _ = image.shape
  r0, c0 = jnp.floor(rows), jnp.floor(cols)
  fr, fc = rows - r0, cols - c0
  r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
  out = 0.
  for dr, wr in ((0, 1. - fr), (1, fr)):
    for dc, wc in ((0, 1. - fc), (1, fc)):
      r, c = r0 + dr, c0 + dc
      inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
      value = image[jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1)]
      value = jnp.where(inside[..., None], value, fill)
      out = out + (wr * wc)[..., None] * value
  return out


def rotate_matrix(degrees: Array) -> Array:
  """f32[2, 3] of a counter-clockwise (on screen) rotation by `degrees`."""
  t = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  cos, sin = jnp.cos(t), jnp.sin(t)
  # Output -> input is the inverse rotation; y down flips the sense.
  return jnp.array([[cos, -sin, 0.], [sin, cos, 0.]], jnp.float32)


def shear_matrix(shear_x: Array, shear_y: Array) -> Array:
  """f32[2, 3]: input x = x + shear_x * y, input y = y + shear_y * x (PIL)."""
  one = jnp.ones((), jnp.float32)
  zero = jnp.zeros((), jnp.float32)
  return jnp.stack([jnp.stack([one, jnp.asarray(shear_x, jnp.float32), zero]),
                    jnp.stack([jnp.asarray(shear_y, jnp.float32), one, zero])])


def translate_matrix(dx: Array, dy: Array) -> Array:
  """f32[2, 3] moving the content by (dx, dy) pixels (right, down)."""
  return jnp.array([[1., 0., 0.], [0., 1., 0.]], jnp.float32).at[:, 2].set(
      -jnp.stack([jnp.asarray(dx, jnp.float32), jnp.asarray(dy, jnp.float32)]))


def rotate(image: Array, degrees: Array, fill: float = 0.) -> Array:
  return affine(image, rotate_matrix(degrees), fill)


def shear(image: Array, shear_x: Array, shear_y: Array,
          fill: float = 0.) -> Array:
  return affine(image, shear_matrix(shear_x, shear_y), fill)


def translate(image: Array, dx: Array, dy: Array, fill: float = 0.) -> Array:
  return affine(image, translate_matrix(dx, dy), fill)


def hflip(image: Array) -> Array:
  return image[:, ::-1]


def crop_resize_matrix(top: Array, left: Array, crop_h: Array, crop_w: Array,
                       height: int, width: int) -> Array:
  """f32[2, 3] mapping the full output onto the input box (top, left, h, w).

  All in pixels; the box is resized to `height x width` (bilinear in
  `affine`): the resize of a random resized crop.
  """
  sx, sy = crop_w / width, crop_h / height
  cx = left + crop_w / 2. - width / 2.
  cy = top + crop_h / 2. - height / 2.
  zero = jnp.zeros((), jnp.float32)
  return jnp.stack([jnp.stack([sx, zero, cx]),
                    jnp.stack([zero, sy, cy])]).astype(jnp.float32)


# Colour (PIL ImageOps) -------------------------------------------------------


def posterize(image: Array, bits: Array) -> Array:
  """Keeps the `bits` high bits (0..8) of each 8-bit level (PIL)."""
  bits = jnp.clip(jnp.asarray(bits, jnp.int32), 0, 8)
  mask = 256 - jnp.left_shift(1, 8 - bits)
  return (_to_uint8_levels(image) & mask).astype(jnp.float32) / 255.


def solarize(image: Array, threshold: Array) -> Array:
  """Inverts the values >= `threshold` (in [0, 1]; PIL's `i >= threshold`)."""
  return jnp.where(image >= threshold, 1. - image, image)


def autocontrast(image: Array) -> Array:
  """Maps each channel's [min, max] to [0, 1]; a flat channel is kept."""
  lo = image.min(axis=(0, 1), keepdims=True)
  hi = image.max(axis=(0, 1), keepdims=True)
  span = hi - lo
  return jnp.where(span > 0., (image - lo) / jnp.where(span > 0., span, 1.),
                   image)


def _equalize_channel(levels: Array) -> Array:
  """PIL's equalize of one channel of int levels [h, w] -> int levels."""
  hist = jnp.bincount(levels.ravel(), length=256)
  last = hist[levels.max()]                   # count of the last non-empty bin
  step = (levels.size - last) // 255
  before = jnp.cumsum(hist) - hist            # pixels strictly below level i
  lut = jnp.minimum((step // 2 + before) // jnp.maximum(step, 1), 255)
  return jnp.where(step > 0, lut[levels], levels)


def equalize(image: Array) -> Array:
  """Histogram equalisation of each channel on 256 levels (PIL's LUT)."""
  levels = _to_uint8_levels(image)
  out = jnp.stack([_equalize_channel(levels[..., k]) for k in range(3)], -1)
  return out.astype(jnp.float32) / 255.


def invert(image: Array) -> Array:
  return 1. - image


# Colour (PIL ImageEnhance): blends with a degenerate image -------------------


def _blend(degenerate: Array, image: Array, factor: Array) -> Array:
  return jnp.clip(degenerate + factor * (image - degenerate), 0., 1.)


def grayscale(image: Array) -> Array:
  """f32[h, w, 1] luma (PIL's 'L' conversion weights)."""
  return jnp.einsum("hwc,c->hw", image, jnp.array(LUMA))[..., None]


def brightness(image: Array, factor: Array) -> Array:
  """Blend with black: factor 0 gives black, 1 the image."""
  return _blend(jnp.zeros_like(image), image, factor)


def color(image: Array, factor: Array) -> Array:
  """Saturation: blend with the grayscale image."""
  return _blend(jnp.broadcast_to(grayscale(image), image.shape), image, factor)


def contrast(image: Array, factor: Array) -> Array:
  """Blend with the mean luma (a flat grey image)."""
  return _blend(jnp.full_like(image, grayscale(image).mean()), image, factor)


def sharpness(image: Array, factor: Array) -> Array:
  """Blend with PIL's SMOOTH-filtered image (3x3 kernel, centre 5 of 13);

  the one-pixel border keeps its values, as in PIL.
  """
  kernel = jnp.array([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.
  inner = jax.vmap(lambda ch: jax.scipy.signal.convolve2d(ch, kernel,
                                                          mode="valid"),
                   in_axes=-1, out_axes=-1)(image)
  smooth = image.at[1:-1, 1:-1].set(inner)
  return _blend(smooth, image, factor)
