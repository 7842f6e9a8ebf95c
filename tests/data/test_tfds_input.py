"""TFDS input: batch format, determinism, resume, sharding, eval, errors.

Data comes from `tfds.testing.mock_data` (`MockPolicy.USE_CODE`): examples are
generated from the builder's feature spec, no files, no download. Under this
mock `builder.info.splits` is empty (split names and sizes are unknown), and
every split yields the same `N` examples, so split sizes come from the
datasets' cardinality. The mock's examples depend on which features are
decoded, so reference images are read with the same `PartialDecoding`.
"""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from crl import config_lib
from crl import registry
from crl.data import pipeline
from crl.data import tfds_input
from crl.data.tfds_input import TFDSImageClassification

N = 20  # examples per mocked split


@pytest.fixture
def mocked():
  with tfds.testing.mock_data(num_examples=N,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _take(it, n):
  return list(itertools.islice(it, n))


def _file_order_images(ds, split):
  """The split's uint8 images in file order, straight from TFDS.

  Decodes the same features as `TFDSImageClassification` does: the mock's
  random examples depend on which features are decoded.
  """
  raw = ds.builder.as_dataset(
      split=split, shuffle_files=False,
      decoders=tfds.decode.PartialDecoding({"image": True, "label": True}))
  return np.stack([ex["image"] for ex in tfds.as_numpy(raw)])


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_interface_and_batch_format(mocked):
  del mocked
  ds = TFDSImageClassification(shuffle_buffer=64)
  assert ds.num_classes == 10
  assert ds.image_shape == (32, 32, 3)
  assert ds.num_examples("train") == N
  assert ds.eval_splits() == {"test": f"TFDS cifar10 split 'test' ({N} "
                                      "examples)"}
  batch = next(ds.train_numpy(0, 4, 0, 1))
  assert sorted(batch) == ["image", "label"]
  assert batch["image"].shape == (4, 32, 32, 3)
  assert batch["image"].dtype == np.float32
  assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
  assert 0. <= batch["image"].min() and batch["image"].max() <= 1.
  assert batch["image"].max() > 0.5  # scaled from uint8, not left at 0..255
  assert 0 <= batch["label"].min() and batch["label"].max() < 10
  pipeline.check_batch(batch, ds.image_shape, ds.num_classes, "test")


def test_train_is_deterministic_and_resumable(mocked):
  del mocked
  ds = TFDSImageClassification(shuffle_buffer=64)
  fresh = _take(ds.train_numpy(0, 4, 0, 1), 12)  # 2.4 epochs of N = 20
  _assert_batches_equal(fresh, _take(ds.train_numpy(0, 4, 0, 1), 12))
  # Resume inside epoch 0 and inside epoch 1 (epoch skip + in-epoch skip).
  _assert_batches_equal(fresh[3:5], _take(ds.train_numpy(3, 4, 0, 1), 2))
  _assert_batches_equal(fresh[7:10], _take(ds.train_numpy(7, 4, 0, 1), 3))
  # A batch size that does not divide the epoch: resume mid-batch position.
  fresh3 = _take(ds.train_numpy(0, 3, 0, 1), 9)
  _assert_batches_equal(fresh3[7:9], _take(ds.train_numpy(7, 3, 0, 1), 2))
  # Another seed gives another stream.
  other = next(TFDSImageClassification(seed=1).train_numpy(0, 4, 0, 1))
  assert not np.array_equal(other["image"], fresh[0]["image"])


def test_each_epoch_is_a_new_permutation(mocked):
  del mocked
  ds = TFDSImageClassification(augment=False, shuffle_buffer=64)
  images = np.concatenate([b["image"] for b in
                           _take(ds.train_numpy(0, 4, 0, 1), 10)])
  source = _file_order_images(ds, "train").astype(np.float32) / 255.
  key = lambda x: [np.round(im * 255).astype(np.uint8).tobytes() for im in x]
  epoch0, epoch1 = images[:N], images[N:2 * N]
  assert sorted(key(epoch0)) == sorted(key(source))
  assert sorted(key(epoch1)) == sorted(key(source))
  assert key(epoch0) != key(epoch1)          # reshuffled per epoch
  assert key(epoch0) != key(source)          # actually shuffled


def test_augmentation_is_stateless_and_active(mocked):
  del mocked
  plain = TFDSImageClassification(augment=False)
  aug = TFDSImageClassification(augment=True)
  a = _take(aug.train_numpy(0, 4, 0, 1), 3)
  p = _take(plain.train_numpy(0, 4, 0, 1), 3)
  # Same shuffle (same seed), different pixels (pad-crop and flip).
  for x, y in zip(a, p):
    np.testing.assert_array_equal(x["label"], y["label"])
  assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, p))


def test_processes_get_disjoint_shares_of_the_global_batch(mocked):
  del mocked
  ds = TFDSImageClassification(shuffle_buffer=64)
  whole = _take(ds.train_numpy(2, 6, 0, 1), 5)
  shares = [_take(ds.train_numpy(2, 2, p, 3), 5) for p in range(3)]
  for step, batch in enumerate(whole):
    for key in ("image", "label"):
      joined = np.concatenate([s[step][key] for s in shares])
      np.testing.assert_array_equal(joined, batch[key])


@pytest.mark.parametrize("local_batch,process_count", [(3, 2), (4, 1),
                                                       (7, 3)])
def test_eval_covers_every_example_once(mocked, local_batch, process_count):
  del mocked
  ds = TFDSImageClassification()
  per_process = [list(ds.eval_numpy("test", local_batch, p, process_count))
                 for p in range(process_count)]
  num_batches = -(-N // (local_batch * process_count))
  assert all(len(b) == num_batches for b in per_process)
  images, labels = [], []
  for step in range(num_batches):
    for batches in per_process:
      b = batches[step]
      assert b["image"].shape == (local_batch, 32, 32, 3)
      assert b["mask"].dtype == np.float32 and b["label"].dtype == np.int32
      real = b["mask"] > 0
      # Padding only at the end of a process's last batch.
      assert np.all(np.diff(b["mask"]) <= 0)
      assert step == num_batches - 1 or real.all()
      assert np.all(b["image"][~real] == 0) and np.all(b["label"][~real] == 0)
      images.append(b["image"][real])
      labels.append(b["label"][real])
  images = np.concatenate(images)
  assert len(images) == N
  source = _file_order_images(ds, "test").astype(np.float32) / 255.
  np.testing.assert_allclose(images, source, atol=1e-6)


def test_resolution_path(mocked):
  del mocked
  ds = TFDSImageClassification(resolution=28)
  assert ds.image_shape == (28, 28, 3)
  train = next(ds.train_numpy(0, 4, 0, 1))
  assert train["image"].shape == (4, 28, 28, 3)
  assert 0. <= train["image"].min() and train["image"].max() <= 1.
  # Eval: shorter side 32 -> round(28 / 0.875) = 32 (no resize), centre crop.
  ev = next(ds.eval_numpy("test", 4, 0, 1))
  source = _file_order_images(ds, "test")[:4].astype(np.float32) / 255.
  np.testing.assert_allclose(ev["image"], source[:, 2:30, 2:30], atol=1e-5)
  up = TFDSImageClassification(resolution=48)
  assert next(up.eval_numpy("test", 2, 0, 1))["image"].shape == (2, 48, 48, 3)
  assert next(up.train_numpy(0, 2, 0, 1))["image"].shape == (2, 48, 48, 3)


def test_grayscale_is_tiled_to_rgb(mocked):
  del mocked
  ds = TFDSImageClassification(tfds_name="mnist")
  assert ds.image_shape == (28, 28, 3)
  b = next(ds.eval_numpy("test", 2, 0, 1))
  assert b["image"].shape == (2, 28, 28, 3)
  np.testing.assert_array_equal(b["image"][..., 0], b["image"][..., 2])


def test_unknown_split_lists_the_known_ones(mocked):
  del mocked
  ds = TFDSImageClassification()
  for call in (lambda: ds.num_examples("validation"),
               lambda: list(ds.eval_numpy("validation", 2, 0, 1)),
               lambda: list(ds.eval_numpy("train", 2, 0, 1))):
    with pytest.raises(tfds_input.UnknownSplitError, match="known: .*test"):
      call()


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  ds = TFDSImageClassification(tfds_name="cifar10", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError) as info:
    _ = ds.num_classes
  message = str(info.value)
  assert "'cifar10'" in message and str(tmp_path) in message
  assert "tfds build cifar10" in message
  assert "download_and_prepare()" in message
  assert isinstance(info.value, pipeline.DataError)
  assert not any(tmp_path.iterdir())  # nothing downloaded or written


def test_unknown_name_suggests_close_names(tmp_path):
  ds = TFDSImageClassification(tfds_name="cifar11", data_dir=str(tmp_path))
  with pytest.raises(tfds_input.UnknownDatasetError,
                     match="cifar11.*close names:.*cifar10"):
    _ = ds.num_classes


def test_constructor_rejects_unknown_keys_and_bad_values():
  with pytest.raises(TypeError, match=r"\['name'\].*tfds_name"):
    TFDSImageClassification(name="cifar10")
  with pytest.raises(ValueError, match="resolution"):
    TFDSImageClassification(resolution=3)
  ds = TFDSImageClassification(eval_split_names=["test", "train[:10]"])
  assert ds.eval_split_names == ("test", "train[:10]")
  assert ds == TFDSImageClassification(eval_split_names=("test", "train[:10]"))
  assert hash(ds) == hash(TFDSImageClassification(
      eval_split_names=("test", "train[:10]")))


def test_config_section_from_fields():
  section = config_lib.component_config(registry.DATASETS, "tfds",
                                        tfds_name="mnist", resolution=32)
  assert section.name == "tfds"
  assert section.tfds_name == "mnist" and section.resolution == 32
  assert section.eval_split_names == ("test",)
  ds = config_lib.build(registry.DATASETS, section)
  assert isinstance(ds, TFDSImageClassification)
  assert ds.tfds_name == "mnist" and ds.resolution == 32


def test_end_to_end_through_the_input_pipeline(mocked):
  del mocked
  from crl import runtime  # pylint: disable=g-import-not-at-top
  ds = TFDSImageClassification(tfds_name="cifar10")
  p = pipeline.InputPipeline(ds, runtime.make_mesh(), global_batch=8,
                             eval_batch=8)
  b = next(p.train_batches(0))
  assert b["image"].shape == (8, 32, 32, 3)
  assert b["label"].shape == (8,)
  pipeline.check_batch(b, ds.image_shape, ds.num_classes, "train")
  evals = list(p.eval_batches("test"))
  assert len(evals) == -(-N // 8)
  assert sum(float(np.asarray(e["mask"]).sum()) for e in evals) == N
