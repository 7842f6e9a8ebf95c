"""configs/folder.py on a folder of images: layouts, errors, a whole run."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from crl import registry
from crl.data import image_folder
from tests import helpers


def _write(root, layout, n=6, size=12):
  """`n` images per class of a 2-class folder; class k is bright at row k."""
  rng = np.random.default_rng(0)
  for split in (layout if isinstance(layout, tuple) else ("",)):
    for k, name in enumerate(("cat", "dog")):
      folder = os.path.join(root, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(n):
        image = rng.integers(0, 60, (size, size), np.uint8)
        image[k * size // 2:(k + 1) * size // 2] += 180
        Image.fromarray(image).save(os.path.join(folder, f"{i}.png"))
  return str(root)


def test_class_folders_get_a_seeded_split(tmp_path):
  root = _write(tmp_path, "flat", n=10)
  ds = image_folder.ImageFolder(root=root, resolution=8, test_fraction=0.25)
  assert registry.DATASETS.get("image_folder") is image_folder.ImageFolder
  assert ds.classes == ("cat", "dog") and ds.num_classes == 2
  assert (ds.num_examples("train"), ds.num_examples("test")) == (15, 5)
  assert set(ds.eval_splits()) == {"test"}
  again = image_folder.ImageFolder(root=root, resolution=8, test_fraction=0.25)
  other = image_folder.ImageFolder(root=root, resolution=8, test_fraction=0.25,
                                   seed=1)
  assert ds._items("test") == again._items("test")
  assert ds._items("test") != other._items("test")
  train = {p for p, _ in ds._items("train")}
  assert not train & {p for p, _ in ds._items("test")}
  batch = next(ds.train_numpy(0, 4, 0, 1))
  assert batch["image"].shape == (4, 8, 8, 3) and batch["image"].max() <= 1
  # Grey PNGs become RGB; labels are the sorted class names' indices.
  for path, label in ds._items("test"):
    assert os.path.basename(os.path.dirname(path)) == ds.classes[label]


def test_split_folders_are_used_as_given(tmp_path):
  root = _write(tmp_path, ("train", "val"), n=3)
  ds = image_folder.ImageFolder(root=root, resolution=8)
  assert (ds.num_examples("train"), ds.num_examples("test")) == (6, 6)
  assert all("/val/" in p for p, _ in ds._items("test"))


@pytest.mark.parametrize("make,expected", [
    (lambda r: None, "does not exist"),
    (lambda r: os.makedirs(r), "has no images"),
    (lambda r: _write(r, ("train",), n=1) and os.makedirs(
        os.path.join(r, "train", "cat2")) or open(
            os.path.join(r, "x.png"), "w").close(), "next to the split"),
    (lambda r: os.makedirs(r) or open(os.path.join(r, "a.png"), "w").close(),
     "is a file directly in"),
])
def test_bad_folders_say_what_is_expected(tmp_path, make, expected):
  root = str(tmp_path / "images")
  make(root)
  with pytest.raises(image_folder.ImageFolderError, match=expected) as e:
    image_folder.ImageFolder(root=root)
  assert "\n" not in str(e.value)


def test_too_few_images_to_split(tmp_path):
  root = _write(tmp_path, "flat", n=1)
  with pytest.raises(image_folder.ImageFolderError, match="too few for a"):
    image_folder.ImageFolder(root=root, test_fraction=0.75)


def test_one_class_is_refused(tmp_path):
  root = _write(tmp_path, "flat")
  os.rename(os.path.join(root, "dog"), os.path.join(root, ".dog"))
  with pytest.raises(image_folder.ImageFolderError, match="one class"):
    image_folder.ImageFolder(root=root)


def test_folder_config_trains_end_to_end(tmp_path):
  root = _write(tmp_path / "images", "flat", n=12)
  workdir = str(tmp_path / "run")
  proc = helpers.run_main("--config=configs/folder.py:cnn,tiny",
                          f"--config.data.root={root}", f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["step"] == 6 and results["dataset"] == "image_folder"
  assert results["results"]["test"]["num_examples"] == 5
  assert "eval test @ step 3" in proc.stderr
  # An empty folder: one line, exit 2 (tests/test_bad_inputs_table.py).


@pytest.mark.parametrize("model", ["cnn", "nac", "vit", "perceiver", "resnet",
                                   "interpreters"])
def test_every_folder_variant_builds_its_model(model):
  from crl import config_lib, train  # pylint: disable=g-import-not-at-top
  from crl.trainers import classification  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(
      os.path.join(helpers.ROOT, f"configs/folder.py:{model}"))
  train.check_config(config)
  assert config.trainer == "augmented_classification"
  assert classification.build_model(config, 3).num_classes == 3
  with pytest.raises(ValueError, match="Unknown variant 'mlp'"):
    config_lib.load_config(os.path.join(helpers.ROOT, "configs/folder.py:mlp"))
