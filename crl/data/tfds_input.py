"""Any TFDS image-classification dataset as host batches for `pipeline`.

`TFDSImageClassification` reads a *prepared* TFDS dataset (never downloads)
and yields each process's share of the global batch as NumPy, under the batch
conventions of `crl.data.pipeline`: `'image'` f32[N, H, W, 3] in [0, 1],
`'label'` i32[N], and for eval batches `'mask'` f32[N] (1 real, 0 padding).

Train stream. The examples of `train_split` are read in a fixed file order
(16 files interleaved deterministically; TFDS already shuffles examples
across files when it prepares a dataset), and epoch `e` is shuffled with a
`tf.data` shuffle buffer whose seed is `seed * 1_000_003 + e`: a different
order every epoch, the same order in every run and on every process.
(`tf.data` combines an op seed with TensorFlow's global seed; crl never sets
one, and a `tf.random.set_seed` elsewhere would change, not randomise, the
order.) Epochs are concatenated into one infinite stream; the example at
global position `t` (counted from the start of training over all processes)
belongs to global batch `t // G` (`G = local_batch * process_count`) and to
process `(t % G) // local_batch`, so process `p` takes rows
`[p * local_batch, (p + 1) * local_batch)` of every global batch. Resuming at
`start_step` starts at epoch `start_step * G // n` (cheap: whole epochs are
never read) and skips the remainder of that epoch without decoding images.
Every process reads every record (only encoded bytes) but decodes and
augments only its own rows.

Augmentation (train only, `augment=True`) is stateless: the random numbers of
the example at global position `t` come from
`stateless_fold_in((seed, AUG_SALT), t)`, so batches are reproducible.

* `resolution=None` (native size; images must have a fixed size in the
  feature spec, e.g. CIFAR): zero-pad 4 pixels on every side, random crop
  back to H x W, random horizontal flip (the CIFAR recipe). Eval: unchanged.
* `resolution=r`: train takes an Inception-style random resized crop (area
  in [8%, 100%] of the image, aspect ratio in [3/4, 4/3]) resized to r x r,
  and a random horizontal flip. Eval (and train with `augment=False`)
  resizes the shorter side to `round(r / 0.875)` and takes the central
  r x r crop.

Grayscale images are tiled to 3 channels; an alpha channel is dropped.

Eval stream. One pass over the split in file order (`interleave_cycle_length
= 1`); example `i` goes to the same (batch, process, row) slot as in the train
stream, and the last global batch is padded, so every process yields the same
number of batches of exactly `local_batch` examples.

Data preparation: `tfds build NAME --data_dir=DIR` (or
`tfds.builder(NAME, data_dir=DIR).download_and_prepare()`) on a machine with
internet, then point `data_dir` at DIR. A dataset that is not prepared raises
`DatasetNotPreparedError` (a `FileNotFoundError` and a `pipeline.DataError`).

Construction: `TFDSImageClassification(**config)`. Unknown keys raise a
`TypeError` that names them and lists the valid keys; bad values raise a
`ValueError`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from crl import config_lib
from crl.data import pipeline
from crl.data import tfds_builder
from crl.data import tfds_images
from crl.data.tfds_builder import DatasetNotPreparedError  # pylint: disable=unused-import
from crl.data.tfds_builder import UnknownDatasetError  # pylint: disable=unused-import

# TensorFlow serves only as a host-side input library: it must never take
# GPU/TPU memory that JAX needs. Fails (RuntimeError) once TF has initialised
# its devices, in which case whoever did that is responsible.
for _kind in ("GPU", "TPU"):
  try:
    tf.config.set_visible_devices([], _kind)
  except (RuntimeError, ValueError):
    pass

EPOCH_SEED_STRIDE = 1_000_003
AUG_SALT = 0x5EED


class UnknownSplitError(pipeline.DataError):
  """A split name that the dataset (or this config) does not have."""


@dataclasses.dataclass(frozen=True, init=False)
class TFDSImageClassification:
  """A TFDS image-classification dataset, batched for `pipeline.InputPipeline`.

  Frozen and hashable. Built with `TFDSImageClassification(**kwargs)`; an
  unknown key raises a `TypeError` naming it and listing the valid keys. The
  TFDS builder is created on first use and cached on the instance.

  Attributes:
    tfds_name: the TFDS name, optionally with config and version
      (`'cifar10'`, `'imagenet2012'`, `'cifar10:3.0.2'`).
    train_split: the TFDS split (or slice, e.g. `'train[:90%]'`) to train on.
    eval_split_names: TFDS splits (or slices) served by `eval_numpy`.
    image_key: feature holding the image (uint8 [H, W, C], C in {1, 3, 4}).
    label_key: feature holding the class (a `ClassLabel`).
    resolution: None keeps the native size (which must be fixed); an int r
      gives r x r images (see the module docstring for the transforms).
    augment: random augmentation of training images.
    data_dir: TFDS data directory (None: TFDS's default, `$TFDS_DATA_DIR` or
      `~/tensorflow_datasets`).
    shuffle_buffer: examples in the per-epoch shuffle buffer.
    seed: seed of the shuffling and of the augmentation.
  """

  tfds_name: str = "cifar10"
  train_split: str = "train"
  eval_split_names: tuple = ("test",)
  image_key: str = "image"
  label_key: str = "label"
  resolution: int | None = None
  augment: bool = True
  data_dir: str | None = None
  shuffle_buffer: int = 10_000
  seed: int = 0

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    if isinstance(self.eval_split_names, str):
      object.__setattr__(self, "eval_split_names", (self.eval_split_names,))
    # Lazily built TFDS builder and split sizes; not dataclass fields, so they
    # take no part in equality, hashing or the config.
    object.__setattr__(self, "_cache", {})
    object.__setattr__(self, "_lock", threading.Lock())
    self._validate()

  def __getstate__(self) -> dict[str, Any]:
    # Fields only: the builder and the lock are rebuilt after unpickling.
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(**state)

  def _validate(self) -> None:
    def bad(what: str) -> ValueError:
      return ValueError(f"TFDSImageClassification: {what}.")
    if not isinstance(self.tfds_name, str) or not self.tfds_name:
      raise bad(f"tfds_name must be a non-empty string, got "
                f"{self.tfds_name!r}")
    # `name`, `name:version`, `name/config[:version]`; not a folder.
    if (self.tfds_name.startswith(("/", ".", "~")) or
        self.tfds_name.split(":")[0].count("/") > 1):
      raise bad(f"tfds_name must be a TFDS dataset name such as 'cifar10' or "
                f"'cifar10:3.0.2', got the path {self.tfds_name!r}; put the "
                "folder that holds prepared TFDS data in data_dir")
    if not isinstance(self.train_split, str) or not self.train_split:
      raise bad(f"train_split must be a non-empty string, got "
                f"{self.train_split!r}")
    if not (isinstance(self.eval_split_names, tuple) and all(
        isinstance(s, str) and s for s in self.eval_split_names)):
      raise bad("eval_split_names must be a tuple of split names, got "
                f"{self.eval_split_names!r}")
    if self.resolution is not None and (
        int(self.resolution) != self.resolution or self.resolution < 8):
      raise bad(f"resolution must be None or an integer >= 8, got "
                f"{self.resolution!r}")
    if int(self.shuffle_buffer) != self.shuffle_buffer or (
        self.shuffle_buffer < 1):
      raise bad(f"shuffle_buffer must be an integer >= 1, got "
                f"{self.shuffle_buffer!r}")
    if int(self.seed) != self.seed or self.seed < 0:
      raise bad(f"seed must be a non-negative integer, got {self.seed!r}")

  # Builder -------------------------------------------------------------------

  @property
  def builder(self) -> tfds.core.DatasetBuilder:
    """The TFDS builder (created once; checks that the data is prepared)."""
    with self._lock:
      if "builder" not in self._cache:
        builder = tfds_builder.open_builder(self.tfds_name, self.data_dir)
        tfds_builder.check_prepared(builder, self.tfds_name, self.data_dir,
                                    self.train_split)
        self._check_features(builder)
        self._cache["builder"] = builder
      return self._cache["builder"]

  def _check_features(self, builder: tfds.core.DatasetBuilder) -> None:
    features = builder.info.features
    for what, key in (("image_key", self.image_key),
                      ("label_key", self.label_key)):
      if key not in features:
        raise pipeline.DataError(
            f"TFDS {self.tfds_name!r} has no feature {key!r} ({what}); "
            f"features: {', '.join(features)}.")
    label = features[self.label_key]
    if not isinstance(label, tfds.features.ClassLabel):
      raise pipeline.DataError(
          f"TFDS {self.tfds_name!r} feature {self.label_key!r} is a "
          f"{type(label).__name__}, expected a ClassLabel.")
    shape = tuple(features[self.image_key].shape)
    if len(shape) != 3 or shape[-1] not in (1, 3, 4):
      raise pipeline.DataError(
          f"TFDS {self.tfds_name!r} feature {self.image_key!r} has shape "
          f"{shape}, expected (height, width, 1, 3 or 4 channels).")
    if self.resolution is None and None in shape[:2]:
      raise pipeline.DataError(
          f"TFDS {self.tfds_name!r} images have varying sizes {shape}; set "
          "`resolution` (e.g. config.data.resolution=224).")

  # Interface -----------------------------------------------------------------

  @property
  def num_classes(self) -> int:
    return int(self.builder.info.features[self.label_key].num_classes)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    if self.resolution is not None:
      return (int(self.resolution), int(self.resolution), 3)
    height, width, _ = self.builder.info.features[self.image_key].shape
    return (int(height), int(width), 3)

  def known_splits(self) -> tuple[str, ...]:
    """The dataset's split names; empty when unknown (a mocked dataset)."""
    return tuple(self.builder.info.splits)

  def eval_splits(self) -> dict[str, str]:
    """Eval split name -> description, for each of `eval_split_names`."""
    return {name: (f"TFDS {self.tfds_name} split {name!r} "
                   f"({self.num_examples(name)} examples)")
            for name in self.eval_split_names}

  def num_examples(self, split_name: str) -> int:
    """Examples in `split_name` (`train_split` or one of the eval splits)."""
    self._check_split(split_name, (self.train_split,) + self.eval_split_names)
    with self._lock:
      cached = self._cache.get(("count", split_name))
    if cached is not None:
      return cached
    ds = self._raw(split_name, ordered=True)
    count = int(ds.cardinality())
    if count < 0:  # Unknown cardinality: count the (undecoded) records.
      count = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
    with self._lock:
      self._cache[("count", split_name)] = count
    return count

  def _check_split(self, split_name: str, allowed: tuple[str, ...]) -> None:
    if split_name not in allowed:
      raise UnknownSplitError(
          f"Unknown split {split_name!r} of TFDS {self.tfds_name!r} here; "
          f"known: {', '.join(allowed)} (set by train_split and "
          "eval_split_names).")
    known = self.known_splits()
    base = split_name.split("[")[0]
    if known and base not in known:
      raise UnknownSplitError(
          f"TFDS {self.tfds_name!r} has no split {base!r} (from "
          f"{split_name!r}); its splits: {', '.join(known)}.")

  def train_numpy(self, start_step: int, local_batch: int, process_index: int,
                  process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of the global batches from step `start_step` on.

    Infinite and deterministic given `seed`: the batches from `start_step`
    on equal those of a fresh iterator (`start_step=0`) from its
    `start_step`-th batch on.

    Args:
      start_step: the first global batch to yield.
      local_batch: examples per batch of this process.
      process_index: this process, in [0, process_count).
      process_count: processes sharing each global batch of
        `local_batch * process_count` examples.

    Yields:
      `{'image': f32[local_batch, H, W, 3] in [0, 1],
      'label': i32[local_batch]}`: rows `[process_index * local_batch,
      (process_index + 1) * local_batch)` of the global batch.
    """
    _check_sharding(local_batch, process_index, process_count)
    if start_step < 0:
      raise ValueError(f"start_step must be >= 0, got {start_step}.")
    n = self.num_examples(self.train_split)
    if n == 0:
      raise pipeline.DataError(f"TFDS {self.tfds_name!r} split "
                               f"{self.train_split!r} is empty.")
    global_batch = local_batch * process_count
    first_epoch, offset = divmod(int(start_step) * global_batch, n)
    raw = self._raw(self.train_split, ordered=False)
    buffer = min(int(self.shuffle_buffer), n)
    base_seed = int(self.seed) * EPOCH_SEED_STRIDE

    def epoch(e):
      ds = raw.shuffle(buffer, seed=base_seed + e,
                       reshuffle_each_iteration=False)
      return ds.enumerate().map(lambda i, ex: (i + e * n, ex))

    ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
    ds = ds.flat_map(epoch).skip(offset)
    ds = ds.filter(lambda t, ex: (t % global_batch) // local_batch ==
                   process_index)
    ds = ds.map(self._train_example, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
    for image, label in ds.as_numpy_iterator():
      yield {"image": image, "label": label}

  def eval_numpy(self, split_name: str, local_batch: int, process_index: int,
                 process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """One pass over eval split `split_name` in file order, padded.

    Example `i` of the split is row `i % G` of global batch `i // G`
    (`G = local_batch * process_count`); this process yields rows
    `[process_index * local_batch, (process_index + 1) * local_batch)`.

    Args:
      split_name: one of `eval_split_names`.
      local_batch: examples per batch of this process.
      process_index: this process, in [0, process_count).
      process_count: processes sharing each global batch.

    Yields:
      `ceil(num_examples / G)` batches `{'image': f32[local_batch, H, W, 3]
      in [0, 1], 'label': i32[local_batch], 'mask': f32[local_batch]}` with
      mask 1 for real examples and 0 for padding (zeros, label 0).
    """
    self._check_split(split_name, self.eval_split_names)
    _check_sharding(local_batch, process_index, process_count)
    n = self.num_examples(split_name)
    global_batch = local_batch * process_count
    num_batches = math.ceil(n / global_batch)
    ds = self._raw(split_name, ordered=True).enumerate()
    ds = ds.filter(lambda i, ex: (i % global_batch) // local_batch ==
                   process_index)
    ds = ds.map(lambda i, ex: self._eval_example(ex) + (1.,),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pad = (tf.zeros(self.image_shape, tf.float32), tf.constant(0, tf.int32),
           tf.constant(0., tf.float32))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
    ds = ds.take(num_batches * local_batch).batch(local_batch)
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
    for image, label, mask in ds.as_numpy_iterator():
      yield {"image": image, "label": label, "mask": mask}

  # tf.data -------------------------------------------------------------------

  def _raw(self, split: str, ordered: bool) -> tf.data.Dataset:
    """Split `split` as `{image: encoded bytes (or uint8), label}` records.

    Images are not decoded here, so that skipping and the per-process filter
    cost no decoding. `ordered` reads the files one after the other (exact
    file order); otherwise 16 files are interleaved, deterministically.
    """
    builder = self.builder
    image_feature = builder.info.features[self.image_key]
    decoders = ({self.image_key: tfds.decode.SkipDecoding()}
                if isinstance(image_feature, tfds.features.Image) else None)
    read_config = tfds.ReadConfig(
        interleave_cycle_length=1 if ordered else 16,
        options=_options())
    ds = builder.as_dataset(
        split=split, shuffle_files=False, read_config=read_config,
        decoders=tfds.decode.PartialDecoding(
            {self.image_key: True, self.label_key: True}, decoders=decoders))
    return ds

  def _decode(self, ex: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 [H, W, 3] image and int32 label of a raw record."""
    feature = self.builder.info.features[self.image_key]
    image = ex[self.image_key]
    if image.dtype == tf.string:
      image = feature.decode_example(image)
    channels = feature.shape[-1]
    if channels == 1:
      image = tf.tile(image, [1, 1, 3])
    elif channels == 4:
      image = image[..., :3]
    image.set_shape(tuple(feature.shape[:2]) + (3,))
    return image, tf.cast(ex[self.label_key], tf.int32)

  def _train_example(self, t: tf.Tensor, ex: dict[str, tf.Tensor]
                     ) -> tuple[tf.Tensor, tf.Tensor]:
    """Decoded, augmented example at global train position `t`."""
    image, label = self._decode(ex)
    if not self.augment:
      return self._eval_image(image), label
    seed = tf.random.experimental.stateless_fold_in(
        tf.constant([self.seed, AUG_SALT], tf.int64), t)
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    return tfds_images.train_image(image, seeds, self.resolution,
                                   self.image_shape), label

  def _eval_example(self, ex: dict[str, tf.Tensor]
                    ) -> tuple[tf.Tensor, tf.Tensor]:
    image, label = self._decode(ex)
    return self._eval_image(image), label

  def _eval_image(self, image: tf.Tensor) -> tf.Tensor:
    """uint8 [h, w, 3] -> f32 `image_shape` (`tfds_images.eval_image`)."""
    return tfds_images.eval_image(image, self.resolution, self.image_shape)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def _check_sharding(local_batch: int, process_index: int,
                    process_count: int) -> None:
  if local_batch < 1 or process_count < 1:
    raise ValueError(f"local_batch and process_count must be >= 1, got "
                     f"{local_batch} and {process_count}.")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, "
                     f"{process_count}).")
