"""Your own images: a folder of class folders as a classification dataset.

Layouts (images `.png`, `.jpg`, `.jpeg`; any size, colour or grey)::

    ROOT/<class>/<image>             split here: seeded train/test
    ROOT/<split>/<class>/<image>     split by you: train/ and test/ (or val/)

A root whose sub-folders are all split names (`train`, `test`, `val`,
`validation`) uses the second layout; `train/` alone is split as the first
layout is. Classes are the sorted class folder names (over all splits), so
label `k` is the `k`-th name. The seeded split permutes the sorted file list
by `np.random.default_rng([seed, crc32("")])` and holds out the first
`round(test_fraction * n)` images (not stratified by class), as
`crl.data.domain_folder` does per domain; decoding (RGB, shorter side
resized to `resolution`, centre crop) and batching are that module's
`FolderImages`.

Used by configs/folder.py (`--config.data.root=DIR`). Errors
(`pipeline.DataError`, one line each): a missing root, files where class
folders are expected, no images, a single class, too few images to split, an
unreadable image (naming the file).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from crl import config_lib
from crl.data import domain_folder
from crl.data import pipeline

SPLIT_NAMES = ("train", "test", "val", "validation")
LAYOUTS = "ROOT/<class>/<image> or ROOT/<split>/<class>/<image>"


class ImageFolderError(pipeline.DataError):
  """An image folder that does not have the expected layout."""


def _class_tree(folder: str, where: str) -> dict[str, list[str]]:
  return domain_folder.scan_classes(folder, ImageFolderError, where, LAYOUTS)


def scan(root: str) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
  """`(train {class: paths}, test {class: paths} or None when the folder has
  no test split)`; raises `ImageFolderError` on a bad layout."""
  if not root:
    raise ImageFolderError(f"No image folder given; set --config.data.root="
                           f"DIR with {LAYOUTS}.")
  if not os.path.isdir(root):
    raise ImageFolderError(f"Image folder {root!r} does not exist or is not "
                           f"a directory; expected {LAYOUTS}.")
  entries = domain_folder.visible_entries(root)
  subdirs = [e for e in entries if os.path.isdir(os.path.join(root, e))]
  if subdirs and set(subdirs) <= set(SPLIT_NAMES) and "train" in subdirs:
    files = [e for e in entries if e not in subdirs]
    if files:
      raise ImageFolderError(
          f"{os.path.join(root, files[0])!r} is a file next to the split "
          f"folders of {root!r}; expected ROOT/<split>/<class>/<image>.")
    train = _class_tree(os.path.join(root, "train"), f"{root}/train")
    held = [s for s in ("test", "val", "validation") if s in subdirs]
    test = (_class_tree(os.path.join(root, held[0]), f"{root}/{held[0]}")
            if held else None)
  else:
    train, test = _class_tree(root, repr(root)), None
  if not train:
    raise ImageFolderError(
        f"Image folder {root!r} has no images "
        f"({', '.join(domain_folder.IMAGE_EXTENSIONS)}) in class folders; "
        f"expected {LAYOUTS}.")
  return train, test


@dataclasses.dataclass(frozen=True, init=False)
class ImageFolder(domain_folder.FolderImages):
  """Images in class folders, trained on `train` and evaluated on `test`.

  Attributes:
    root: the folder (see the module docstring for its layouts).
    resolution: output height and width (shorter side resize + centre
      crop).
    test_fraction: share held out as the test split when the folder has
      none.
    seed: seed of that split and of the epoch order.
  """

  root: str = ""
  resolution: int = 32
  test_fraction: float = 0.2
  seed: int = 0
  ERROR = ImageFolderError

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    self._check_fields()
    train, test = scan(self.root)
    classes = sorted(set(train) | set(test or {}))
    if len(classes) < 2:
      raise ImageFolderError(
          f"Image folder {self.root!r} has one class ({classes[0]!r}); a "
          f"classifier needs at least two class folders ({LAYOUTS}).")

    def items(tree):
      return [(p, classes.index(c)) for c, paths in tree.items()
              for p in paths]

    if test is None:
      splits = domain_folder.seeded_split(
          items(train), self.test_fraction, self.seed, "", ImageFolderError,
          f"Image folder {self.root!r}")
    else:
      splits = {"train": items(train), "test": items(test)}
      if not splits["test"]:
        raise ImageFolderError(
            f"The test split of image folder {self.root!r} has no images; "
            "add some or remove its folder (a seeded split is then made).")
    object.__setattr__(self, "_classes", tuple(classes))
    object.__setattr__(self, "_splits", splits)

  def eval_splits(self) -> dict[str, str]:
    return {"test": f"held-out images of {self.root!r} "
                    f"({self.num_examples('test')})"}

  def _items(self, split_name: str) -> list[tuple[str, int]]:
    if split_name in self._splits:
      return self._splits[split_name]
    raise pipeline.DataError(
        f"Unknown split {split_name!r} of image folder {self.root!r}; known: "
        "train, test.")
