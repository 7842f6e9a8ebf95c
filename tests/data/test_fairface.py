"""FairFace from files in its own format (CSV + image folder) that the test
writes: labels, partition, stratified resumable batches, errors."""

import csv
import itertools
import os

import numpy as np
import pytest
from PIL import Image

from crl import config_lib
from crl import registry
from crl.data import fair_tabular
from crl.data import pipeline

RACES = ("White", "Black", "East Asian")


def _write(root, name, folder, n, offset):
  rows = []
  os.makedirs(os.path.join(root, folder), exist_ok=True)
  for i in range(n):
    k = offset + i  # the image's colour encodes its row
    file = f"{folder}/{i + 1}.jpg"
    Image.fromarray(np.full((12, 12, 3), [4 * k, 255 - 4 * k, 128],
                            np.uint8)).save(os.path.join(root, file),
                                            quality=100)
    rows.append({"file": file, "age": "20-29",
                 "gender": "Female" if k % 3 == 0 else "Male",
                 "race": RACES[k % len(RACES)],
                 "service_test": "True" if k % 2 else "False"})
  with open(os.path.join(root, name), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["file", "age", "gender", "race",
                                      "service_test"])
    w.writeheader()
    w.writerows(rows)
  return {r["file"]: r for r in rows}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("fairface"))
  rows = _write(path, "fairface_label_train.csv", "train", 40, 0)
  rows.update(_write(path, "fairface_label_val.csv", "val", 10, 45))
  return path, rows


def _k(image):  # the row offset from an image's red channel (JPEG: +-1)
  return int(round(float(image[..., 0].mean()) * 255 / 4))


def test_fairface_labels_partition_and_eval(root):
  path, rows = root
  ds = config_lib.build(registry.DATASETS, config_lib.component_config(
      registry.DATASETS, "fairface", root=path, resolution=8,
      validation_fraction=0.25))
  assert ds.num_groups == 2 and ds.num_classes == 2
  assert ds.num_examples("train") == 30 and ds.num_examples("validation") == 10
  assert ds.num_examples("test") == 10
  train = set(ds._table("train")["file"])  # pylint: disable=protected-access
  val = set(ds._table("validation")["file"])  # pylint: disable=protected-access
  assert not train & val and len(train | val) == 40
  batches = list(ds.eval_numpy("test", 4, 0, 1))
  assert [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
  for b in batches:
    assert b["image"].shape == (4, 8, 8, 3) and b["image"].dtype == np.float32
    for im, y, s, m in zip(b["image"], b["label"], b["group"], b["mask"]):
      if m:
        k = _k(im)
        assert y == (k % 3 == 0) and s == (RACES[k % 3] == "White")
  same = list(ds.eval_numpy(fair_tabular.TRAIN_SAMPLE, 8, 0, 1))
  assert sum(int(b["mask"].sum()) for b in same) == 30
  # Multi-group race, the balanced subset, a subsample.
  multi = config_lib.build(registry.DATASETS, config_lib.component_config(
      registry.DATASETS, "fairface", root=path, group_positive=None,
      service_test_only=True, split_examples=6))
  assert multi.num_groups == 3 and multi.num_examples("test") == 5
  assert multi.num_examples("train") == 6


def test_fairface_train_stream_is_stratified_and_resumable(root):
  path, _ = root
  ds = config_lib.build(registry.DATASETS, config_lib.component_config(
      registry.DATASETS, "fairface", root=path, resolution=8))
  counts = ds.group_counts("train")
  p = tuple(counts / counts.sum())
  batches = list(itertools.islice(ds.train_numpy(0, 6, 0, 1), 12))
  for step, b in enumerate(batches):
    np.testing.assert_array_equal(b["group"], fair_tabular.stratified_groups_np(
        np.arange(step * 6, step * 6 + 6), p))
    for im, y, s in zip(b["image"], b["label"], b["group"]):
      k = _k(im)
      assert y == (k % 3 == 0) and s == (RACES[k % 3] == "White")
  seen = {_k(im) for b in batches for im in b["image"]}
  assert len(seen) == ds.num_examples("train")  # 72 draws cover all 36 rows
  for a, b in zip(itertools.islice(ds.train_numpy(5, 6, 0, 1), 2),
                  batches[5:7]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  half = next(ds.train_numpy(3, 3, 1, 2))
  for key in half:
    np.testing.assert_array_equal(half[key], batches[3][key][3:])


def test_fairface_errors_are_one_clear_line(root, tmp_path):
  path, _ = root
  with open(tmp_path / "fairface_label_train.csv", "w") as f:
    f.write("file,gender,race\ntrain/1.jpg,Male,White\n")
  bad = config_lib.build(registry.DATASETS, config_lib.component_config(
      registry.DATASETS, "fairface", root=str(tmp_path)))
  with pytest.raises(pipeline.DataError, match=r"lacks column\(s\)"):
    bad.num_examples("train")
  missing = config_lib.build(registry.DATASETS, config_lib.component_config(
      registry.DATASETS, "fairface", root=str(tmp_path / "none")))
  with pytest.raises(pipeline.DataError, match="no label file"):
    missing.num_examples("test")
  os.makedirs(tmp_path / "img")
  ds = config_lib.build(registry.DATASETS, config_lib.component_config(
      registry.DATASETS, "fairface", root=path, test_csv="../x.csv"))
  with pytest.raises(pipeline.DataError, match="no label file"):
    ds.num_examples("test")
  with pytest.raises(ValueError, match="also the protected"):
    config_lib.build(registry.DATASETS, config_lib.component_config(
        registry.DATASETS, "fairface", root=path, group_column="gender"))
