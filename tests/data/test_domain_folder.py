"""The DomainBed-style folder reader on a folder the test writes."""

import os

import numpy as np
from PIL import Image
import pytest

from crl import registry
from crl.data import domain_folder
from crl.data import pipeline
from crl.shifts import registry as shift_registry


def _write(root, layout, size=(12, 10)):
  """layout: {domain: {class: count}}; the pixel value encodes the class."""
  for d, classes in layout.items():
    for c, count in classes.items():
      os.makedirs(os.path.join(root, d, c))
      for i in range(count):
        value = 40 * (sorted({k for v in layout.values() for k in v}).index(c)
                      + 1)
        img = Image.fromarray(np.full(size[::-1] + (3,), value, np.uint8))
        ext = "png" if i % 2 else "jpg"
        img.save(os.path.join(root, d, c, f"{i}.{ext}"))


LAYOUT = {"art": {"dog": 5, "cat": 5, "horse": 5},
          "photo": {"dog": 6, "cat": 4, "horse": 5},
          "sketch": {"cat": 5, "dog": 5}}   # no horse: labels stay aligned


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("domains"))
  _write(path, LAYOUT)
  return path


def test_classes_splits_and_labels(root):
  ds = domain_folder.DomainFolder(root=root, domain="photo", resolution=8)
  assert registry.DATASETS.get("domain_folder") is domain_folder.DomainFolder
  assert ds.classes == ("cat", "dog", "horse") and ds.num_classes == 3
  assert ds.domains == ("art", "photo", "sketch")
  assert list(ds.eval_splits()) == ["test", "art", "sketch"]
  assert ds.num_examples("test") == 3 and ds.num_examples("train") == 12
  assert ds.num_examples("sketch") == 2
  train = {p for p, _ in ds._items("train")}  # pylint: disable=protected-access
  test = {p for p, _ in ds._items("test")}  # pylint: disable=protected-access
  assert not train & test and len(train | test) == 15
  again = domain_folder.DomainFolder(root=root, domain="photo", resolution=8)
  assert again._items("test") == ds._items("test")  # pylint: disable=protected-access
  other = domain_folder.DomainFolder(root=root, domain="photo", seed=1)
  assert other._items("test") != ds._items("test")  # pylint: disable=protected-access
  # The image's pixel value encodes its class folder: label k <-> class k.
  for split in ("train", "test", "art", "sketch"):
    for p, y in ds._items(split):  # pylint: disable=protected-access
      img = ds.load(p)
      assert img.shape == (8, 8, 3)
      assert abs(img.mean() * 255 - 40 * (y + 1)) < 3, (p, y)


def test_eval_batches_padded_and_train_resumable(root):
  ds = domain_folder.DomainFolder(root=root, domain="photo", resolution=8)
  batches = list(ds.eval_numpy("art", 4, 0, 1))
  assert [b["image"].shape for b in batches] == [(4, 8, 8, 3)]
  np.testing.assert_array_equal(batches[0]["mask"], [1, 1, 1, 0])
  # Two processes share the rows of each global batch.
  p0 = list(ds.eval_numpy("test", 2, 0, 2))
  p1 = list(ds.eval_numpy("test", 2, 1, 2))
  assert sum(b["mask"].sum() for b in p0 + p1) == 3
  fresh = ds.train_numpy(0, 5, 0, 1)
  first = [next(fresh) for _ in range(4)]                  # crosses epochs
  resumed = next(ds.train_numpy(3, 5, 0, 1))
  np.testing.assert_array_equal(resumed["label"], first[3]["label"])
  np.testing.assert_array_equal(resumed["image"], first[3]["image"])
  epoch0 = np.concatenate([b["label"] for b in first])[:12]
  assert sorted(epoch0) == sorted(y for _, y in ds._items("train"))  # pylint: disable=protected-access


def test_domain_shifts_apply(root):
  ds = domain_folder.DomainFolder(root=root, domain="photo", resolution=8)
  assert shift_registry.applies_to(shift_registry.get("domain/art"),
                                   ds) is None
  assert "own" in shift_registry.applies_to(
      shift_registry.get("domain/photo"), ds)
  assert "not one of" in shift_registry.applies_to(
      shift_registry.get("domain/clipart"), ds)


def test_bad_folders(tmp_path):
  with pytest.raises(domain_folder.DomainFolderError, match="does not exist"):
    domain_folder.DomainFolder(root=str(tmp_path / "nope"), domain="a")
  root = str(tmp_path / "r")
  _write(root, {"a": {"x": 3, "y": 3}})
  with pytest.raises(domain_folder.DomainFolderError,
                     match="Unknown domain 'b'.*domains found: a"):
    domain_folder.DomainFolder(root=root, domain="b")
  os.makedirs(os.path.join(root, "empty", "x"))
  with pytest.raises(domain_folder.DomainFolderError,
                     match="Domain 'empty' .* has no images"):
    domain_folder.DomainFolder(root=root, domain="a")
  os.rmdir(os.path.join(root, "empty", "x"))
  os.rmdir(os.path.join(root, "empty"))
  open(os.path.join(root, "a", "stray.png"), "w").close()
  with pytest.raises(domain_folder.DomainFolderError,
                     match="file directly in domain 'a'"):
    domain_folder.DomainFolder(root=root, domain="a")
  os.remove(os.path.join(root, "a", "stray.png"))
  with open(os.path.join(root, "a", "x", "9.png"), "w") as f:
    f.write("not a png")
  ds = domain_folder.DomainFolder(root=root, domain="a")
  with pytest.raises(pipeline.DataError, match="Cannot read image .*9.png"):
    ds.load(os.path.join(root, "a", "x", "9.png"))


def test_through_the_input_pipeline(root):
  from crl import runtime  # pylint: disable=g-import-not-at-top
  ds = domain_folder.DomainFolder(root=root, domain="art", resolution=8)
  pipe = pipeline.InputPipeline(ds, runtime.make_mesh(), 4, 4)
  batch = next(iter(pipe.train_batches(0)))
  assert batch["image"].shape == (4, 8, 8, 3)
  pipeline.check_batch(batch, ds.image_shape, ds.num_classes, "train")
  evals = list(pipe.eval_batches("sketch"))
  assert sum(float(b["mask"].sum()) for b in evals) == ds.num_examples(
      "sketch")
