"""The image transforms of `crl.data.tfds_input`, one example at a time.

`train_image` (the CIFAR pad-and-crop at native size, or an Inception random
resized crop; then a random horizontal flip), `random_resized_crop` and
`eval_image` (resize the shorter side to `resolution / EVAL_CROP_FRACTION`
and crop the centre, or keep the native size). All are stateless: the
random numbers come from the `seeds` the caller derives from the example's
stream position, so batches are reproducible.
"""

from __future__ import annotations

import tensorflow as tf

EVAL_CROP_FRACTION = 0.875  # eval: shorter side -> resolution / 0.875.
CIFAR_PAD = 4               # native-size train: pad, then random crop.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RANGE = (3. / 4., 4. / 3.)


def train_image(image: tf.Tensor, seeds: tf.Tensor, resolution: int | None,
                image_shape: tuple[int, int, int]) -> tf.Tensor:
  """Augmented f32 `image_shape` from uint8 [h, w, 3]; `seeds` `[2, 2]`."""
  if resolution is None:
    height, width = image_shape[:2]
    image = tf.pad(image, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD],
                           [0, 0]])
    image = tf.image.stateless_random_crop(image, (height, width, 3),
                                           seed=seeds[0])
    image = tf.image.convert_image_dtype(image, tf.float32)
  else:
    image = random_resized_crop(image, seeds[0], resolution)
  image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
  image = tf.clip_by_value(image, 0., 1.)
  image.set_shape(image_shape)
  return image


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor,
                        resolution: int) -> tf.Tensor:
  """Inception crop of uint8 [h, w, 3], resized to f32 [r, r, 3]."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.constant([[[0., 0., 1., 1.]]]),
      seed=seed, min_object_covered=CROP_AREA_RANGE[0],
      aspect_ratio_range=CROP_ASPECT_RANGE, area_range=CROP_AREA_RANGE,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, size)
  crop = tf.image.convert_image_dtype(crop, tf.float32)
  r = int(resolution)
  return tf.image.resize(crop, (r, r), method="bilinear", antialias=True)


def eval_image(image: tf.Tensor, resolution: int | None,
               image_shape: tuple[int, int, int]) -> tf.Tensor:
  """uint8 [h, w, 3] -> f32 `image_shape` (resize + centre crop or as is)."""
  image = tf.image.convert_image_dtype(image, tf.float32)
  if resolution is not None:
    r = int(resolution)
    short = int(round(r / EVAL_CROP_FRACTION))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = short / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), r)
    image = tf.image.resize(image, new, method="bilinear", antialias=True)
    top, left = (new[0] - r) // 2, (new[1] - r) // 2
    image = tf.slice(image, [top, left, 0], [r, r, 3])
    image = tf.clip_by_value(image, 0., 1.)
  image.set_shape(image_shape)
  return image
