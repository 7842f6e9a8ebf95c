"""Augmentation policies on the device: standard, RandAugment, AugMix.

`apply(policy, images, key)` augments a batch f32[batch, height, width, 3]
in [0, 1] inside jitted code: example `i` uses `fold_in(key, i)`, so with
`key = fold_in(fold_in(root, salt), step)` an augmented batch is a pure
function of (seed, step, example). Every policy is vmapped over the batch.

Policies (`POLICIES`; `make(name, **options)` checks the options):

* `none`: the images unchanged.
* `standard`: random resized crop (area in [8%, 100%] of the image, aspect
  ratio in [3/4, 4/3], log-uniform; a box larger than the image is clipped
  to it) resized back bilinearly, then a horizontal flip with p = 1/2: the
  base transform of the transfer study's training (specs/transfer.md).
* `randaugment`: `standard`, then `num_ops` ops drawn uniformly with
  replacement from the 14 of the RandAugment paper (Cubuk et al. 2020;
  torchvision's list and magnitude mapping): identity, shear x/y (0.3 * m),
  translate x/y (150/331 of the size * m), rotate (30 degrees * m),
  brightness, color, contrast, sharpness (factor 1 +- 0.9 * m), posterize
  (8 - round(4 m) bits), solarize (threshold 1 - m), autocontrast,
  equalize; m = magnitude / 30 (torchvision's 31 bins), a random sign for
  the signed ops.
* `augmix`: `standard`, then AugMix (Hendrycks et al. 2020): `width` chains
  of depth U{1..3} (or `depth`), each op drawn from the paper's list
  (`AUGMIX_OPS`: autocontrast, equalize, posterize, rotate, solarize, shear
  x/y, translate x/y; no contrast, color, brightness, sharpness, noise or
  blur, which overlap the test corruptions), levels U(0.1, severity) / 10
  mapped as the paper's code (rotate 30 deg, shear 0.3, translate size/3,
  posterize 4 - floor(4 l) bits, solarize 1 - floor(256 l)/256); the chains
  are mixed with Dirichlet(alpha) weights and the result with the image by
  m ~ Beta(alpha, alpha). (The JSD consistency loss of the paper is not part
  of the augmentation.)

Every example computes every branch of the op table (`vmap` of a switch is
a select), which is cheap at the study's resolutions.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from crl import registry as registry_lib
from crl.data import augment_ops as ops

Array = jax.Array

CROP_AREA = (0.08, 1.0)
CROP_LOG_ASPECT = (math.log(3. / 4.), math.log(4. / 3.))
RANDAUGMENT_OPS = ("identity", "shear_x", "shear_y", "translate_x",
                   "translate_y", "rotate", "brightness", "color", "contrast",
                   "sharpness", "posterize", "solarize", "autocontrast",
                   "equalize")
AUGMIX_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize",
              "shear_x", "shear_y", "translate_x", "translate_y")
# The test corruptions' neighbours that AugMix must not use.
AUGMIX_EXCLUDED = ("contrast", "color", "brightness", "sharpness")
_GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
RANDAUGMENT_BINS = 31


class UnknownAugmentationError(registry_lib.UnknownNameError):
  """An augmentation policy or option that does not exist."""


# One op with an explicit argument ---------------------------------------------


def _geometric_matrix(name: str, arg: Array, size: tuple[int, int]) -> Array:
  h, w = size
  if name == "rotate":
    return ops.rotate_matrix(arg)
  if name == "shear_x":
    return ops.shear_matrix(arg, 0.)
  if name == "shear_y":
    return ops.shear_matrix(0., arg)
  if name == "translate_x":
    return ops.translate_matrix(arg * w, 0.)
  return ops.translate_matrix(0., arg * h)


_COLOUR: dict[str, Callable[[Array, Array], Array]] = {
    "identity": lambda x, a: x,
    "brightness": ops.brightness, "color": ops.color,
    "contrast": ops.contrast, "sharpness": ops.sharpness,
    "posterize": ops.posterize, "solarize": ops.solarize,
    "autocontrast": lambda x, a: ops.autocontrast(x),
    "equalize": lambda x, a: ops.equalize(x),
}


def apply_op(table: tuple[str, ...], image: Array, index: Array,
             arg: Array) -> Array:
  """`table[index](image, arg)`: geometric ops share one resampling.

  `arg` is the op's own parameter: degrees (rotate), shear, a fraction of
  the size (translate), a factor (enhance ops), bits (posterize), a
  threshold in [0, 1] (solarize); unused by the others.
  """
  geometric = [n for n in table if n in _GEOMETRIC]
  colour = [n for n in table if n not in _GEOMETRIC]
  size = image.shape[:2]
  out = image
  if geometric:
    mats = jnp.stack([_geometric_matrix(n, arg, size) for n in geometric])
    g = jnp.array([geometric.index(n) if n in geometric else 0
                   for n in table])[index]
    out = ops.affine(image, mats[g])
  if colour:
    c = jnp.array([colour.index(n) if n in colour else 0
                   for n in table])[index]
    coloured = jax.lax.switch(c, [_COLOUR[n] for n in colour], image, arg)
    is_geo = jnp.array([n in _GEOMETRIC for n in table])[index]
    out = jnp.where(is_geo, out, coloured) if geometric else coloured
  return out


# Policies on one example --------------------------------------------------------


def standard(image: Array, key: Array) -> Array:
  """Random resized crop back to the image size, then a random flip."""
  h, w, _ = image.shape
  k_area, k_aspect, k_top, k_left, k_flip = jax.random.split(key, 5)
  area = jax.random.uniform(k_area, (), minval=CROP_AREA[0],
                            maxval=CROP_AREA[1]) * h * w
  aspect = jnp.exp(jax.random.uniform(k_aspect, (), minval=CROP_LOG_ASPECT[0],
                                      maxval=CROP_LOG_ASPECT[1]))
  crop_w = jnp.minimum(jnp.sqrt(area * aspect), w)
  crop_h = jnp.minimum(jnp.sqrt(area / aspect), h)
  top = jax.random.uniform(k_top) * (h - crop_h)
  left = jax.random.uniform(k_left) * (w - crop_w)
  image = ops.affine(image, ops.crop_resize_matrix(top, left, crop_h, crop_w,
                                                   h, w))
  return jnp.where(jax.random.bernoulli(k_flip), ops.hflip(image), image)


def _randaugment_arg(name: str, level: Array, sign: Array) -> Array:
  """torchvision's magnitude mapping; level = magnitude / 30 in [0, 1]."""
  return {
      "identity": 0.,
      "shear_x": 0.3 * level * sign, "shear_y": 0.3 * level * sign,
      "translate_x": 150. / 331. * level * sign,
      "translate_y": 150. / 331. * level * sign,
      "rotate": 30. * level * sign,
      "brightness": 1. + 0.9 * level * sign, "color": 1. + 0.9 * level * sign,
      "contrast": 1. + 0.9 * level * sign,
      "sharpness": 1. + 0.9 * level * sign,
      "posterize": 8. - jnp.round(4. * level),
      "solarize": 1. - level,
      "autocontrast": 0., "equalize": 0.,
  }[name]


def randaugment(image: Array, key: Array, num_ops: int = 2,
                magnitude: float = 9.) -> Array:
  """`standard`, then `num_ops` uniformly drawn ops at `magnitude` (0..30)."""
  key, k_std = jax.random.split(key)
  image = standard(image, k_std)
  level = jnp.float32(magnitude) / (RANDAUGMENT_BINS - 1)

  def one_op(image, k):
    k_op, k_sign = jax.random.split(k)
    index = jax.random.randint(k_op, (), 0, len(RANDAUGMENT_OPS))
    sign = jnp.where(jax.random.bernoulli(k_sign), -1., 1.)
    args = jnp.stack([jnp.asarray(_randaugment_arg(n, level, sign),
                                  jnp.float32) for n in RANDAUGMENT_OPS])
    return apply_op(RANDAUGMENT_OPS, image, index, args[index]), None

  # A scan traces (and compiles) the op table once, whatever num_ops.
  image, _ = jax.lax.scan(one_op, image, jax.random.split(key, num_ops))
  return image


def _augmix_arg(name: str, level: Array, sign: Array) -> Array:
  """The AugMix code's mapping; level in [0.1, severity], out of 10."""
  return {
      "autocontrast": 0., "equalize": 0.,
      "posterize": 4. - jnp.floor(level * 4. / 10.),
      "rotate": jnp.floor(level * 30. / 10.) * sign,
      "solarize": 1. - jnp.floor(level * 256. / 10.) / 256.,
      "shear_x": level * 0.3 / 10. * sign, "shear_y": level * 0.3 / 10. * sign,
      "translate_x": level / 3. / 10. * sign,
      "translate_y": level / 3. / 10. * sign,
  }[name]


def augmix(image: Array, key: Array, width: int = 3, depth: int = -1,
           severity: float = 3., alpha: float = 1.) -> Array:
  """`standard`, then AugMix's mixture of `width` op chains."""
  key, k_std, k_w, k_m = jax.random.split(key, 4)
  image = standard(image, k_std)
  weights = jax.random.dirichlet(k_w, jnp.full((width,), alpha))
  mix = jax.random.beta(k_m, alpha, alpha)
  chains = jax.vmap(lambda k: _chain(image, k, depth, severity))(
      jax.random.split(key, width))
  mixed = jnp.einsum("c,chwk->hwk", weights, chains)
  return (1. - mix) * image + mix * mixed


def _chain(image: Array, key: Array, depth: int, severity: float) -> Array:
  """One AugMix chain: `depth` ops (U{1..3} when depth <= 0)."""
  max_depth = 3 if depth <= 0 else depth
  k_depth, key = jax.random.split(key)
  d = (jax.random.randint(k_depth, (), 1, 4) if depth <= 0
       else jnp.int32(depth))

  def one_op(x, jk):
    j, k = jk
    k_op, k_level, k_sign = jax.random.split(k, 3)
    index = jax.random.randint(k_op, (), 0, len(AUGMIX_OPS))
    level = jax.random.uniform(k_level, (), minval=0.1, maxval=severity)
    sign = jnp.where(jax.random.bernoulli(k_sign), -1., 1.)
    args = jnp.stack([jnp.asarray(_augmix_arg(n, level, sign), jnp.float32)
                      for n in AUGMIX_OPS])
    return jnp.where(j < d, apply_op(AUGMIX_OPS, x, index, args[index]),
                     x), None

  x, _ = jax.lax.scan(one_op, image, (jnp.arange(max_depth),
                                      jax.random.split(key, max_depth)))
  return x


# Batches -----------------------------------------------------------------------


def _none(image: Array, key: Array) -> Array:
  del key
  return image


# name -> (function on one example, its options and defaults)
_POLICIES: dict[str, tuple[Callable[..., Array], dict[str, Any]]] = {
    "none": (_none, {}),
    "standard": (standard, {}),
    "randaugment": (randaugment, {"num_ops": 2, "magnitude": 9.}),
    "augmix": (augmix, {"width": 3, "depth": -1, "severity": 3.,
                        "alpha": 1.}),
}
POLICIES = tuple(_POLICIES)


def make(name: str, **options: Any) -> Callable[[Array, Array], Array]:
  """`fn(images, key) -> images` of policy `name` with `options` checked."""
  if name not in _POLICIES:
    raise UnknownAugmentationError(
        f"Unknown augmentation {name!r}; known augmentations: "
        f"{', '.join(POLICIES)}.")
  fn, defaults = _POLICIES[name]
  unknown = sorted(set(options) - set(defaults))
  if unknown:
    raise UnknownAugmentationError(
        f"Unknown option(s) {unknown} of augmentation {name!r}; its options: "
        f"{', '.join(defaults) or 'none'}.")
  opts = {**defaults, **options}
  if name == "randaugment" and not (
      int(opts["num_ops"]) == opts["num_ops"] >= 0 and
      0 <= opts["magnitude"] <= RANDAUGMENT_BINS - 1):
    raise ValueError(f"randaugment needs an integer num_ops >= 0 and a "
                     f"magnitude in [0, {RANDAUGMENT_BINS - 1}], got {opts}.")
  if name == "augmix" and not (
      int(opts["width"]) == opts["width"] >= 1 and opts["depth"] <= 3 and
      0.1 < opts["severity"] <= 10 and opts["alpha"] > 0):
    raise ValueError("augmix needs width >= 1, depth <= 3 (<= 0: random "
                     "1..3), severity in (0.1, 10] and alpha > 0, got "
                     f"{opts}.")
  one = functools.partial(fn, **opts)

  def batch_fn(images: Array, key: Array) -> Array:
    return apply_one(one, images, key)

  return batch_fn


def apply_one(one: Callable[[Array, Array], Array], images: Array,
              key: Array) -> Array:
  """vmaps `one(image, key)` with example `i`'s key `fold_in(key, i)`."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
      jnp.arange(images.shape[0], dtype=jnp.int32))
  return jax.vmap(one)(images, keys)


def apply(name: str, images: Array, key: Array, **options: Any) -> Array:
  """Policy `name` on f32[batch, height, width, 3] images in [0, 1]."""
  return make(name, **options)(images, key)
