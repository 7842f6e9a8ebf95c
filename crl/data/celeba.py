"""CelebA (TFDS `celeb_a`) as a fairness dataset: a target attribute and a
protected attribute, with training batches stratified on the latter.

Built on `crl.data.tfds_input.TFDSImageClassification` (builder, checks,
split sizes, the resize-and-centre-crop transform): `label_key` names the
target attribute (default 'Smiling') and `group_key` the protected one
(default 'Male'); several comma-separated attributes ('Male,Young') make a
multi-group attribute `s = sum_i 2^i attr_i` with `2^k` values. Nothing is
ever downloaded: the dataset must be prepared locally (`tfds build celeb_a
--data_dir=DIR`; its images need a manual download, see the TFDS catalog).

Batches: `{'image': f32[N, r, r, 3] in [0, 1], 'label': i32[N], 'group':
i32[N]}` (and 'mask' in eval batches), under the conventions of
`crl.data.pipeline` host datasets.

Train stream, stratified. Global position `t` (counted from the start of
training over all processes, as in `tfds_input`) holds an example of group
`stratified_groups(t)` (`crl.data.fair_tabular`: a low-discrepancy sequence
with `group_proportions`, by default the training split's own proportions),
so every global batch holds each group in its proportion, +-3 examples.
Each group has its own stream: its examples, reshuffled every pass with the
seed `(seed * 1_000_003 + pass) * 64 + g`, passes concatenated; position `t`
takes the next example of its group's stream. Resuming at `start_step`
counts the positions of each group before it and skips whole passes without
reading them. Process `p` keeps rows `[p * local, (p + 1) * local)` of every
global batch. Augmentation (`augment=True`): a random horizontal flip drawn
statelessly from `(seed, t)`; the image is otherwise the eval transform
(`resolution` set: resize the shorter side to `r / 0.875`, centre crop r x r;
aligned CelebA faces sit in the centre).

Eval stream: one pass in file order, padded, as `tfds_input.eval_numpy`;
`fair_tabular.TRAIN_SAMPLE` names the training split as an eval split (for
probes fitted on training-split features).

Subsampling: with `split_examples = n` every split is its first n records
in file order (the public two-heads code subsamples each split to 5,000).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from crl.data import fair_tabular
from crl.data import pipeline
from crl.data import tfds_input

# Positions are int64 in TensorFlow; t * PHI stays below 2^63 for t < 2^31.
_MAX_POSITION = 2**31
_COUNT_CHUNK = 1 << 22


def stratified_groups_tf(t: tf.Tensor, proportions: tuple[float, ...]
                         ) -> tf.Tensor:
  """`fair_tabular.stratified_groups` of int64 positions `t`, in TF."""
  x = tf.bitwise.bitwise_and(t * fair_tabular._PHI_32,  # pylint: disable=protected-access
                             tf.constant(0xFFFFFFFF, tf.int64))
  u = tf.cast(tf.bitwise.right_shift(x, 8), tf.float32) / float(1 << 24)
  edges = tf.constant(np.cumsum(proportions)[:-1], tf.float32)
  return tf.reduce_sum(tf.cast(u[..., None] >= edges, tf.int64), axis=-1)


def group_counts_before(position: int,
                        proportions: tuple[float, ...]) -> np.ndarray:
  """`[G]` number of positions `t < position` of each group."""
  counts = np.zeros(len(proportions), np.int64)
  for start in range(0, position, _COUNT_CHUNK):
    idx = np.arange(start, min(position, start + _COUNT_CHUNK), dtype=np.int64)
    counts += np.bincount(fair_tabular.stratified_groups_np(idx, proportions),
                          minlength=len(proportions))
  return counts


@dataclasses.dataclass(frozen=True, init=False)
class CelebAFairness(tfds_input.TFDSImageClassification):
  """CelebA with a binary target attribute and a protected attribute.

  Attributes (besides those of `TFDSImageClassification`; `label_key` is the
  target attribute):
    group_key: protected attribute name(s), comma-separated for several.
    attributes_key: the TFDS feature holding the attributes.
    group_proportions: the groups' shares of every training batch; None:
      their shares in the training split.
    split_examples: if set, every split (train and eval) is its first
      `split_examples` records in file order (TFDS shuffles records when it
      prepares the dataset), read in order: the public two-heads code
      subsamples each split to 5,000 images.
  """

  tfds_name: str = "celeb_a"
  eval_split_names: tuple = ("validation", "test")
  label_key: str = "Smiling"
  resolution: int | None = 64
  group_key: str = "Male"
  attributes_key: str = "attributes"
  group_proportions: tuple | None = None
  split_examples: int | None = None

  batch_keys = ("image", "label", "group")

  def _validate(self) -> None:
    super()._validate()
    if self.resolution is None:
      raise ValueError("CelebAFairness: set resolution (CelebA images are "
                       "218 x 178).")
    if not self.group_attributes or not all(self.group_attributes):
      raise ValueError(f"CelebAFairness: group_key must name one or more "
                       f"attributes, got {self.group_key!r}.")
    if self.label_key in self.group_attributes:
      raise ValueError(f"CelebAFairness: the target {self.label_key!r} is "
                       "also a protected attribute.")
    if self.split_examples is not None and (
        int(self.split_examples) != self.split_examples or
        self.split_examples < 1):
      raise ValueError(f"CelebAFairness: split_examples must be None or an "
                       f"integer >= 1, got {self.split_examples!r}.")
    if self.group_proportions is not None:
      fair_tabular.check_proportions(self.group_proportions, self.num_groups,
                                     "CelebAFairness")

  @property
  def group_attributes(self) -> tuple[str, ...]:
    return tuple(a.strip() for a in str(self.group_key).split(","))

  @property
  def num_groups(self) -> int:
    return 2 ** len(self.group_attributes)

  @property
  def num_classes(self) -> int:
    return 2

  def _check_features(self, builder: tfds.core.DatasetBuilder) -> None:
    features = builder.info.features
    for key in (self.image_key, self.attributes_key):
      if key not in features:
        raise pipeline.DataError(
            f"TFDS {self.tfds_name!r} has no feature {key!r}; features: "
            f"{', '.join(features)}.")
    attributes = features[self.attributes_key]
    known = list(attributes.keys()) if hasattr(attributes, "keys") else []
    missing = [a for a in (self.label_key,) + self.group_attributes
               if a not in known]
    if missing:
      raise pipeline.DataError(
          f"TFDS {self.tfds_name!r} has no attribute(s) {missing} in "
          f"{self.attributes_key!r}; known: {', '.join(known)}.")
    shape = tuple(features[self.image_key].shape)
    if len(shape) != 3 or shape[-1] not in (1, 3, 4):
      raise pipeline.DataError(
          f"TFDS {self.tfds_name!r} feature {self.image_key!r} has shape "
          f"{shape}, expected (height, width, channels).")

  # tf.data -------------------------------------------------------------------

  def _check_split(self, split_name: str, allowed: tuple[str, ...]) -> None:
    if split_name == fair_tabular.TRAIN_SAMPLE:
      split_name, allowed = self.train_split, (self.train_split,)
    super()._check_split(split_name, allowed)

  def _raw(self, split: str, ordered: bool) -> tf.data.Dataset:
    """Records `{image: encoded bytes, attributes: {name: bool}}` of
    `split` (TRAIN_SAMPLE: the training split), the first `split_examples`
    in file order if that is set."""
    if split == fair_tabular.TRAIN_SAMPLE:
      split = self.train_split
    if self.split_examples is None:
      return self._read(split, ordered)
    return self._read(split, ordered=True).take(int(self.split_examples))

  def _read(self, split: str, ordered: bool) -> tf.data.Dataset:
    builder = self.builder
    wanted = {a: True for a in (self.label_key,) + self.group_attributes}
    decoders = ({self.image_key: tfds.decode.SkipDecoding()}
                if isinstance(builder.info.features[self.image_key],
                              tfds.features.Image) else None)
    read_config = tfds.ReadConfig(
        interleave_cycle_length=1 if ordered else 16,
        options=tfds_input._options())  # pylint: disable=protected-access
    return builder.as_dataset(
        split=split, shuffle_files=False, read_config=read_config,
        decoders=tfds.decode.PartialDecoding(
            {self.image_key: True, self.attributes_key: wanted},
            decoders=decoders))

  def _label_group(self, ex: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor]:
    attributes = ex[self.attributes_key]
    label = tf.cast(attributes[self.label_key], tf.int32)
    group = tf.add_n([tf.cast(attributes[a], tf.int32) * (2 ** i)
                      for i, a in enumerate(self.group_attributes)])
    return label, group

  def _image(self, ex: dict[str, Any]) -> tf.Tensor:
    feature = self.builder.info.features[self.image_key]
    image = ex[self.image_key]
    if image.dtype == tf.string:
      image = feature.decode_example(image)
    channels = feature.shape[-1]
    if channels == 1:
      image = tf.tile(image, [1, 1, 3])
    elif channels == 4:
      image = image[..., :3]
    return self._eval_image(image)

  def _example(self, t: tf.Tensor, ex: dict[str, Any], augment: bool):
    image = self._image(ex)
    if augment:
      seed = tf.random.experimental.stateless_fold_in(
          tf.constant([self.seed, tfds_input.AUG_SALT], tf.int64), t)
      image = tf.image.stateless_random_flip_left_right(image, seed=seed)
    label, group = self._label_group(ex)
    return image, label, group

  def group_counts(self, split: str) -> np.ndarray:
    """`[G]` examples of each group in `split` (one pass, cached)."""
    with self._lock:
      cached = self._cache.get(("groups", split))
    if cached is not None:
      return cached
    g = self.num_groups
    ds = self._raw(split, ordered=True).map(
        lambda ex: tf.one_hot(self._label_group(ex)[1], g, dtype=tf.int64))
    counts = np.asarray(ds.reduce(tf.zeros([g], tf.int64),
                                  lambda acc, x: acc + x))
    with self._lock:
      self._cache[("groups", split)] = counts
    return counts

  def train_proportions(self) -> tuple[float, ...]:
    """The groups' shares of every training batch (see the module doc)."""
    if self.group_proportions is not None:
      return tuple(float(p) for p in self.group_proportions)
    counts = self.group_counts(self.train_split)
    if (counts == 0).any():
      raise pipeline.DataError(
          f"CelebA split {self.train_split!r} has no example of group(s) "
          f"{np.flatnonzero(counts == 0).tolist()} of {self.group_key!r}; "
          "set group_proportions or choose other attributes.")
    return tuple(float(c) for c in counts / counts.sum())

  def train_numpy(self, start_step: int, local_batch: int, process_index: int,
                  process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of the stratified global batches (module doc).

    Yields:
      `{'image': f32[local_batch, r, r, 3], 'label': i32[local_batch],
      'group': i32[local_batch]}`.
    """
    tfds_input._check_sharding(local_batch, process_index, process_count)  # pylint: disable=protected-access
    if start_step < 0:
      raise ValueError(f"start_step must be >= 0, got {start_step}.")
    proportions = self.train_proportions()
    counts = self.group_counts(self.train_split)
    global_batch = local_batch * process_count
    first = int(start_step) * global_batch
    if first >= _MAX_POSITION:
      raise ValueError(f"CelebAFairness supports {_MAX_POSITION} training "
                       f"positions, asked to start at {first}.")
    before = group_counts_before(first, proportions)
    raw = self._raw(self.train_split, ordered=False)
    streams = []
    for g in range(self.num_groups):
      n = int(counts[g])
      if n == 0:
        raise pipeline.DataError(
            f"CelebA split {self.train_split!r} has no example of group {g} "
            f"of {self.group_key!r}, but group_proportions asks for it.")
      epoch0, offset = divmod(int(before[g]), n)
      only = raw.filter(lambda ex, g=g: tf.equal(self._label_group(ex)[1], g))
      buffer = min(int(self.shuffle_buffer), n)

      def epoch(e, only=only, buffer=buffer, g=g):
        seed = (int(self.seed) * tfds_input.EPOCH_SEED_STRIDE + e) * 64 + g
        return only.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)

      streams.append(tf.data.Dataset.range(epoch0, np.iinfo(np.int64).max)
                     .flat_map(epoch).skip(offset))
    choice = tf.data.Dataset.range(first, _MAX_POSITION).map(
        lambda t: stratified_groups_tf(t, proportions))
    ds = tf.data.Dataset.choose_from_datasets(streams, choice)
    ds = ds.enumerate(start=first)
    ds = ds.filter(lambda t, ex: (t % global_batch) // local_batch ==
                   process_index)
    ds = ds.map(lambda t, ex: self._example(t, ex, self.augment),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(tfds_input._options())  # pylint: disable=protected-access
    for image, label, group in ds.as_numpy_iterator():
      yield {"image": image, "label": label, "group": group}

  def eval_numpy(self, split_name: str, local_batch: int, process_index: int,
                 process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """One padded pass over `split_name` in file order (as `tfds_input`).

    Yields:
      `{'image', 'label', 'group', 'mask'}`, `local_batch` rows each; mask
      0 marks padding (zeros, label and group 0).
    """
    self._check_split(split_name, self.eval_split_names)
    tfds_input._check_sharding(local_batch, process_index, process_count)  # pylint: disable=protected-access
    n = self.num_examples(split_name)
    global_batch = local_batch * process_count
    num_batches = math.ceil(n / global_batch)
    ds = self._raw(split_name, ordered=True).enumerate()
    ds = ds.filter(lambda i, ex: (i % global_batch) // local_batch ==
                   process_index)
    ds = ds.map(lambda i, ex: self._example(i, ex, False) + (1.,),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pad = (tf.zeros(self.image_shape, tf.float32), tf.constant(0, tf.int32),
           tf.constant(0, tf.int32), tf.constant(0., tf.float32))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
    ds = ds.take(num_batches * local_batch).batch(local_batch)
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(tfds_input._options())  # pylint: disable=protected-access
    for image, label, group, mask in ds.as_numpy_iterator():
      yield {"image": image, "label": label, "group": group, "mask": mask}
