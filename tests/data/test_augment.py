"""Augmentation ops against hand-built images and PIL; policies' contracts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageEnhance, ImageOps
import pytest

from crl.data import augment
from crl.data import augment_ops as ops


def _image(seed=0, size=8):
  rng = np.random.default_rng(seed)
  img = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
  return img, jnp.asarray(img / 255., jnp.float32)


def test_rotate_90_is_rot90_and_pil():
  img, x = _image()
  out = np.asarray(ops.rotate(x, 90.))
  np.testing.assert_allclose(out, np.rot90(img / 255.), atol=1e-5)
  np.testing.assert_allclose(out, np.asarray(Image.fromarray(img).rotate(90))
                             / 255., atol=1e-5)


def test_translate_known_shift_fills_black():
  img, x = _image()
  out = np.asarray(ops.translate(x, 2., 1.))
  expected = np.zeros((8, 8, 3))
  expected[1:, 2:] = (img / 255.)[:-1, :-2]
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_shear_x_row_offsets():
  # input x = x + s * y: with s = 1 each row is shifted by its centred y.
  x = jnp.tile(jnp.arange(8., dtype=jnp.float32)[None, :, None] / 8.,
               (8, 1, 3))
  out = np.asarray(ops.shear(x, 1., 0.))
  # Row 4 has centred y = 0.5: samples half a pixel to the right.
  np.testing.assert_allclose(out[4, 2, 0], (2.5) / 8., atol=1e-5)
  np.testing.assert_allclose(out[3, 2, 0], (1.5) / 8., atol=1e-5)


def test_hflip():
  _, x = _image()
  np.testing.assert_array_equal(np.asarray(ops.hflip(x)),
                                np.asarray(x)[:, ::-1])


@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_posterize_matches_pil(bits):
  img, x = _image()
  ref = np.asarray(ImageOps.posterize(Image.fromarray(img), bits))
  np.testing.assert_allclose(np.asarray(ops.posterize(x, bits)) * 255., ref,
                             atol=1e-3)
  # By hand: 2 bits keep multiples of 64.
  levels = np.round(np.asarray(ops.posterize(x, 2)) * 255.)
  assert set(np.unique(levels)) <= {0., 64., 128., 192.}


def test_solarize_threshold():
  x = jnp.array([0.2, 0.5, 0.7], jnp.float32).reshape(1, 3, 1) * jnp.ones(
      (1, 1, 3))
  out = np.asarray(ops.solarize(x, 0.5))[0, :, 0]
  np.testing.assert_allclose(out, [0.2, 0.5, 0.3], atol=1e-6)
  img, x = _image()
  ref = np.asarray(ImageOps.solarize(Image.fromarray(img), 128))
  np.testing.assert_allclose(np.asarray(ops.solarize(x, 128 / 255.)) * 255.,
                             ref, atol=1e-3)


def test_equalize_two_levels_and_pil():
  # Half the pixels at 50, half at 200: PIL maps them to 0 and 255.
  x = jnp.concatenate([jnp.full((16, 32, 3), 50 / 255.),
                       jnp.full((16, 32, 3), 200 / 255.)]).astype(jnp.float32)
  out = np.round(np.asarray(ops.equalize(x)) * 255.)
  assert set(np.unique(out[:16])) == {0.} and set(np.unique(out[16:])) == {
      255.}
  img, x = _image(1, 16)
  ref = np.asarray(ImageOps.equalize(Image.fromarray(img)))
  np.testing.assert_allclose(np.asarray(ops.equalize(x)) * 255., ref,
                             atol=1e-3)


def test_autocontrast_stretches_and_keeps_flat():
  x = jnp.stack([jnp.full((4, 4), 0.3), jnp.linspace(0.2, 0.6, 16).reshape(
      4, 4), jnp.full((4, 4), 0.3)], -1)
  out = np.asarray(ops.autocontrast(x))
  np.testing.assert_allclose(out[..., 0], 0.3, atol=1e-6)
  assert out[..., 1].min() == pytest.approx(0.) and out[..., 1].max() == (
      pytest.approx(1.))
  img, x = _image(2)
  ref = np.asarray(ImageOps.autocontrast(Image.fromarray(img)))
  np.testing.assert_allclose(np.asarray(ops.autocontrast(x)) * 255., ref,
                             atol=1.01)  # PIL rounds its LUT to integers


@pytest.mark.parametrize("name,fn", [("Color", ops.color),
                                     ("Contrast", ops.contrast),
                                     ("Brightness", ops.brightness),
                                     ("Sharpness", ops.sharpness)])
def test_enhance_ops_match_pil(name, fn):
  img, x = _image(3)
  for factor in (0.4, 1.6):
    ref = np.asarray(getattr(ImageEnhance, name)(Image.fromarray(img))
                     .enhance(factor)).astype(np.float64)
    # PIL works in 8-bit integers (truncating its blends): within 1.1 levels.
    np.testing.assert_allclose(np.asarray(fn(x, factor)) * 255., ref,
                               atol=1.1)
  np.testing.assert_allclose(np.asarray(fn(x, 1.)), np.asarray(x), atol=1e-6)


def test_crop_resize_full_box_is_identity():
  _, x = _image()
  m = ops.crop_resize_matrix(0., 0., 8., 8., 8, 8)
  np.testing.assert_allclose(np.asarray(ops.affine(x, m)), np.asarray(x),
                             atol=1e-6)
  # The top-left 4x4 quadrant, upsampled x2: output pixel (1, 1) samples the
  # input at (0.25, 0.25).
  m = ops.crop_resize_matrix(0., 0., 4., 4., 8, 8)
  out = np.asarray(ops.affine(x, m))
  np.testing.assert_allclose(out[1, 1], 0.5625 * x[0, 0] + 0.1875 * (
      x[0, 1] + x[1, 0]) + 0.0625 * x[1, 1], atol=1e-5)


def test_augmix_excludes_test_corruptions():
  from crl.shifts import corruptions  # pylint: disable=g-import-not-at-top
  assert not set(augment.AUGMIX_OPS) & set(augment.AUGMIX_EXCLUDED)
  # No op is (or is named after) one of the 19 test corruptions.
  words = {w for name in corruptions.names() for w in name.split("_")}
  assert not {w for op in augment.AUGMIX_OPS for w in op.split("_")} & words
  assert {"contrast", "brightness", "noise", "blur"} <= words
  assert len(augment.RANDAUGMENT_OPS) == 14


@pytest.mark.parametrize("name", augment.POLICIES)
def test_policies_deterministic_per_example(name):
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((4, 16, 16, 3)), jnp.float32)
  fn = jax.jit(augment.make(name))
  key = jax.random.fold_in(jax.random.key(0), 7)
  out = fn(images, key)
  chex.assert_shape(out, images.shape)
  assert float(out.min()) >= 0. and float(out.max()) <= 1.
  np.testing.assert_array_equal(np.asarray(out), np.asarray(fn(images, key)))
  # Example i depends only on (key, i, image i): changing image 3 leaves
  # the others unchanged.
  changed = fn(images.at[3].set(1. - images[3]), key)
  np.testing.assert_array_equal(np.asarray(changed[:3]), np.asarray(out[:3]))
  if name != "none":
    other = fn(images, jax.random.fold_in(jax.random.key(0), 8))
    assert not np.allclose(np.asarray(other), np.asarray(out))


def test_randaugment_single_op_is_one_table_op_of_standard():
  images = jnp.asarray(np.random.default_rng(1).random((3, 8, 8, 3)),
                       jnp.float32)
  key = jax.random.key(3)
  out = augment.make("randaugment", num_ops=1, magnitude=9)(images, key)
  level = 9. / 30.
  table = augment.RANDAUGMENT_OPS

  index = jnp.array([j for j in range(len(table)) for _ in (-1., 1.)])
  args = jnp.array([augment._randaugment_arg(n, level, sign)  # pylint: disable=protected-access
                    for n in table for sign in (-1., 1.)], jnp.float32)

  @jax.jit
  def candidates(image, k_std):
    base = augment.standard(image, k_std)
    return jax.vmap(lambda j, a: augment.apply_op(table, base, j, a))(index,
                                                                      args)

  for i in range(3):
    _, k_std = jax.random.split(jax.random.fold_in(key, i))
    errors = jnp.abs(candidates(images[i], k_std) - out[i]).max(axis=(1, 2, 3))
    assert float(errors.min()) < 1e-5, errors


def test_bad_names_and_options():
  with pytest.raises(augment.UnknownAugmentationError, match="known aug"):
    augment.make("autoaugment")
  with pytest.raises(augment.UnknownAugmentationError, match="width"):
    augment.make("randaugment", width=3)
  with pytest.raises(ValueError, match="magnitude"):
    augment.make("randaugment", magnitude=40)


def test_bilinear_equals_map_coordinates_with_constant_fill():
  _, x = _image(4)
  rows = jax.random.uniform(jax.random.key(3), (8, 8), minval=-2., maxval=10.)
  cols = jax.random.uniform(jax.random.key(4), (8, 8), minval=-2., maxval=10.)
  ref = jnp.stack([jax.scipy.ndimage.map_coordinates(
      x[..., k], [rows, cols], order=1, mode="constant", cval=0.3)
                   for k in range(3)], -1)
  np.testing.assert_allclose(np.asarray(ops.bilinear(x, rows, cols, 0.3)),
                             np.asarray(ref), atol=1e-6)
