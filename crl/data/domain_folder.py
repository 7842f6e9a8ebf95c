"""A DomainBed-style image folder as a multi-domain dataset (host batches).

Layout, as PACS, VLCS, OfficeHome and TerraIncognita are distributed (read in
place, no conversion)::

    ROOT/<domain>/<class>/<image>.{png,jpg,jpeg}

Classes are the sorted union of the class folder names over all domains, so
label `k` is the same class in every domain (a domain may lack a class).
Inside each domain the images are split into train and test, seeded (not
stratified by class): the sorted file list is permuted by
`np.random.default_rng([seed, crc32(domain)])` and the first
`round(test_fraction * n)` files are the test split (DomainBed-style
in-domain hold-out; specs/transfer.md: 80/10/10 in the paper's code, here
train/test only).

`DomainFolder(root=..., domain='photo')` trains on its domain's train split;
its eval splits are `test` (its domain's test split) and every other domain
by name (that domain's test split, as the paper's OOD evaluation); these are
the `domain/<name>` shifts of `crl.shifts.registry`. Images are decoded with
PIL, converted to RGB, resized so the shorter side is `resolution` (bilinear)
and centre-cropped to `resolution x resolution`; augmentation happens on the
device (`crl.data.augment`).

Batches follow `crl.data.pipeline`'s host protocol (`train_numpy`,
`eval_numpy`): the train stream visits a fresh seeded permutation per epoch
(`default_rng([seed, epoch])`); the example at global position `t` is row
`t % G` of global batch `t // G`, and process `p` takes rows
`[p * local, (p + 1) * local)`, so batch `t` is the same after a restart.

The reading and batching (`FolderImages`), the class-folder scan and the
seeded split are shared with `crl.data.image_folder` (one class folder tree,
no domains).

Errors (`pipeline.DataError`, one line each): a missing root, an unknown
domain (listing the domains found), a domain without images, files outside
class folders, an unreadable image (naming the file).
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from typing import Any, Iterator

import numpy as np
from PIL import Image

from crl import config_lib
from crl.data import pipeline

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class DomainFolderError(pipeline.DataError):
  """A domain folder that does not have the expected layout."""


def visible_entries(path: str) -> list[str]:
  """The sorted names in `path`, hidden ones (`.DS_Store`, ...) left out."""
  return sorted(n for n in os.listdir(path) if not n.startswith("."))


def scan_classes(folder: str, error: type[pipeline.DataError], where: str,
                 expected: str) -> dict[str, list[str]]:
  """`{class: [image paths, sorted]}` of `folder/<class>/<image>` (classes
  without images left out); a file directly in `folder` raises `error`
  (`where` names the folder, `expected` the layout, in the message)."""
  classes: dict[str, list[str]] = {}
  for entry in visible_entries(folder):
    path = os.path.join(folder, entry)
    if not os.path.isdir(path):
      raise error(f"{path!r} is a file directly in {where}; expected "
                  f"{expected}.")
    files = [os.path.join(path, f) for f in visible_entries(path)
             if f.lower().endswith(IMAGE_EXTENSIONS)]
    if files:
      classes[entry] = files
  return classes


def scan(root: str) -> dict[str, dict[str, list[str]]]:
  """`{domain: {class: [image paths, sorted]}}`; raises on a bad layout."""
  if not os.path.isdir(root):
    raise DomainFolderError(f"Domain folder root {root!r} does not exist or "
                            "is not a directory; expected ROOT/<domain>/"
                            "<class>/<image>.")
  domains = [d for d in visible_entries(root)
             if os.path.isdir(os.path.join(root, d))]
  if not domains:
    raise DomainFolderError(f"Domain folder {root!r} has no domain "
                            "sub-folders; expected ROOT/<domain>/<class>/"
                            "<image>.")
  out: dict[str, dict[str, list[str]]] = {}
  for d in domains:
    classes = scan_classes(os.path.join(root, d), DomainFolderError,
                           f"domain {d!r}", f"ROOT/{d}/<class>/<image>")
    if not classes:
      raise DomainFolderError(
          f"Domain {d!r} of {root!r} has no images ("
          f"{', '.join(IMAGE_EXTENSIONS)}) in class folders; expected "
          f"ROOT/{d}/<class>/<image>.")
    out[d] = classes
  return out


def seeded_split(items: list[Any], test_fraction: float, seed: int,
                 name: str, error: type[pipeline.DataError], where: str
                 ) -> dict[str, list[Any]]:
  """`{"test": ..., "train": ...}`: `items` permuted by
  `default_rng([seed, crc32(name)])`, the first `round(test_fraction * n)`
  (at least 1) to test; raises `error` when no train item would be left."""
  rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
  order = rng.permutation(len(items))
  n_test = max(1, round(test_fraction * len(items)))
  if n_test >= len(items):
    raise error(f"{where} has {len(items)} image(s): too few for a train and "
                "a test split.")
  items = [items[i] for i in order]
  return {"test": items[:n_test], "train": items[n_test:]}


class FolderImages:
  """Reading and batching of labelled image files (the host protocol of
  `crl.data.pipeline`) for a dataset class that has `resolution`, `seed`
  and `_items(split) -> [(path, label)]`: `DomainFolder` and
  `crl.data.image_folder.ImageFolder`."""

  resolution: int
  seed: int
  ERROR = pipeline.DataError  # what a bad file raises

  def _items(self, split_name: str) -> list[tuple[str, int]]:
    raise NotImplementedError

  @property
  def classes(self) -> tuple[str, ...]:
    """The class names, sorted (label i is `classes[i]`)."""
    return self._classes

  @property
  def num_classes(self) -> int:
    """How many classes."""
    return len(self._classes)

  def _check_fields(self) -> None:
    """ValueError naming the class unless `test_fraction` is in (0, 1) and
    `resolution` an integer >= 8."""
    name = type(self).__name__
    if not 0. < self.test_fraction < 1.:
      raise ValueError(f"{name}: test_fraction must be in (0, 1), got "
                       f"{self.test_fraction}.")
    if int(self.resolution) != self.resolution or self.resolution < 8:
      raise ValueError(f"{name}: resolution must be an integer >= 8, "
                       f"got {self.resolution}.")

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (int(self.resolution), int(self.resolution), 3)

  def num_examples(self, split_name: str) -> int:
    return len(self._items(split_name))

  def load(self, path: str) -> np.ndarray:
    """f32[resolution, resolution, 3] in [0, 1] from an image file."""
    try:
      with Image.open(path) as img:
        img = img.convert("RGB")
        r = int(self.resolution)
        w, h = img.size
        s = r / min(w, h)
        nw, nh = max(r, round(w * s)), max(r, round(h * s))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - r) // 2, (nh - r) // 2
        img = img.crop((left, top, left + r, top + r))
        return np.asarray(img, np.float32) / 255.
    except (OSError, ValueError) as e:
      raise self.ERROR(f"Cannot read image {path!r}: {e}.") from None

  def _batch(self, items: list[tuple[str, int]]) -> dict[str, np.ndarray]:
    return {"image": np.stack([self.load(p) for p, _ in items]),
            "label": np.array([y for _, y in items], np.int32)}

  def train_numpy(self, start_step: int, local_batch: int, process_index: int,
                  process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of global batches `start_step, ...` (infinite)."""
    if start_step < 0 or local_batch < 1 or not (
        0 <= process_index < process_count):
      raise ValueError(f"Bad sharding: start_step {start_step}, local_batch "
                       f"{local_batch}, process {process_index} of "
                       f"{process_count}.")
    items = self._items("train")
    n = len(items)
    global_batch = local_batch * process_count
    orders: dict[int, np.ndarray] = {}
    step = int(start_step)
    while True:
      t = step * global_batch + process_index * local_batch + np.arange(
          local_batch)
      rows = []
      for e, pos in zip(t // n, t % n):
        if e not in orders:
          if len(orders) > 2:
            orders.clear()
          orders[e] = np.random.default_rng([int(self.seed), int(e)]
                                            ).permutation(n)
        rows.append(items[orders[e][pos]])
      yield self._batch(rows)
      step += 1

  def eval_numpy(self, split_name: str, local_batch: int, process_index: int,
                 process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """One padded pass over `split_name` (mask 1 real, 0 padding)."""
    items = self._items(split_name)
    global_batch = local_batch * process_count
    for b in range(math.ceil(len(items) / global_batch)):
      start = b * global_batch + process_index * local_batch
      rows = items[start:start + local_batch]
      real = len(rows)
      batch = (self._batch(rows) if rows else
               {"image": np.zeros((0,) + self.image_shape, np.float32),
                "label": np.zeros((0,), np.int32)})
      pad = local_batch - real
      yield {"image": np.concatenate([batch["image"], np.zeros(
          (pad,) + self.image_shape, np.float32)]),
             "label": np.concatenate([batch["label"],
                                      np.zeros((pad,), np.int32)]),
             "mask": np.concatenate([np.ones(real, np.float32),
                                     np.zeros(pad, np.float32)])}


@dataclasses.dataclass(frozen=True, init=False)
class DomainFolder(FolderImages):
  """One domain of a DomainBed-style folder, the others as OOD splits.

  Attributes:
    root: the folder holding one sub-folder per domain.
    domain: the in-distribution (training) domain.
    resolution: output height and width (shorter side resize + centre
      crop).
    test_fraction: share of each domain held out as its test split.
    seed: seed of the train/test split and of the epoch order.
  """

  root: str = ""
  domain: str = ""
  resolution: int = 32
  test_fraction: float = 0.2
  seed: int = 0
  ERROR = DomainFolderError

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    self._check_fields()
    tree = scan(self.root)
    if self.domain not in tree:
      raise DomainFolderError(
          f"Unknown domain {self.domain!r} in {self.root!r}; domains found: "
          f"{', '.join(tree)}.")
    classes = sorted({c for d in tree.values() for c in d})
    splits = {}
    for d, by_class in tree.items():
      items = [(p, classes.index(c)) for c, paths in by_class.items()
               for p in paths]
      splits[d] = seeded_split(items, self.test_fraction, self.seed, d,
                               DomainFolderError,
                               f"Domain {d!r} of {self.root!r}")
    object.__setattr__(self, "_classes", tuple(classes))
    object.__setattr__(self, "_splits", splits)

  # Interface ---------------------------------------------------------------

  @property
  def domains(self) -> tuple[str, ...]:
    return tuple(self._splits)

  def eval_splits(self) -> dict[str, str]:
    out = {"test": f"held-out {self.domain!r} images ("
                   f"{self.num_examples('test')})"}
    out.update({d: f"domain {d!r} test split ({self.num_examples(d)} images)"
                for d in self.domains if d != self.domain})
    return out

  def _items(self, split_name: str) -> list[tuple[str, int]]:
    if split_name == "train":
      return self._splits[self.domain]["train"]
    if split_name == "test":
      return self._splits[self.domain]["test"]
    if split_name in self._splits and split_name != self.domain:
      return self._splits[split_name]["test"]
    raise pipeline.DataError(
        f"Unknown split {split_name!r} of domain folder {self.root!r}; known:"
        f" train, test, {', '.join(d for d in self.domains if d != self.domain)}.")

