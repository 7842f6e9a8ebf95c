"""FairFace from its label CSVs and image folder, as a fairness dataset.

Files (as distributed; nothing is downloaded): a folder `root` holding
`fairface_label_train.csv` and `fairface_label_val.csv` with the columns
`file,age,gender,race,service_test` (`file` relative to `root`, e.g.
`train/1.jpg`; `gender` Male/Female; `race` one of seven values;
`service_test` True/False), and the images (224 x 224 aligned faces).

Splits: 'train' and 'validation' are a fixed partition of the training CSV
(`validation_fraction` of its rows, chosen by a permutation from `seed`);
'test' is the validation CSV (FairFace has no labelled test set). With
`split_examples = n` every split keeps its first n rows (of the permuted
order for train/validation, of the file for test). `service_test_only`
keeps the rows flagged `service_test` (the subset balanced on race and
gender) before anything else. `fair_tabular.TRAIN_SAMPLE` names the
training split as an eval split (probes on training-split features).

Target and attribute: `label = 1[label_column == label_positive]`;
`group = 1[group_column == group_positive]` (binary), or with
`group_positive=None` the index of the value among the column's sorted
values (multi-group).

Batches (host dataset, `crl.data.pipeline` conventions): `{'image':
f32[N, r, r, 3] in [0, 1] (resized), 'label': i32[N], 'group': i32[N]}`,
eval batches with 'mask'. Training positions are stratified on the
attribute exactly as `crl.data.celeba` (position t holds group
`stratified_groups(t)`, each group's rows reshuffled every pass with the
seed `(seed * 1_000_003 + pass) * 64 + g`); resuming at a step recomputes
the positions before it. Augmentation (`augment`): a horizontal flip drawn
from `(seed, t)`. Eval: one pass in row order, padded; example i goes to
global batch `i // G`, process `(i % G) // local_batch`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Any, Iterator

import numpy as np

from crl import config_lib
from crl.data import fair_tabular
from crl.data import pipeline

COLUMNS = ("file", "age", "gender", "race", "service_test")
EPOCH_SEED_STRIDE = 1_000_003


def _group_counts_before(position: int, proportions: tuple[float, ...]
                         ) -> np.ndarray:
  from crl.data import celeba  # pylint: disable=g-import-not-at-top
  return celeba.group_counts_before(position, proportions)


@dataclasses.dataclass(frozen=True, init=False)
class FairFace:
  """FairFace read from its CSVs and images (module docstring).

  Attributes:
    root: the folder with the CSVs and the images.
    train_csv, test_csv: CSV file names inside `root`.
    label_column, label_positive: the target, `1[column == value]`.
    group_column, group_positive: the protected attribute (see above).
    validation_fraction: share of the training CSV held out as validation.
    split_examples: keep the first n rows of every split (None: all).
    service_test_only: keep only rows with service_test True.
    resolution: images are resized to this square size.
    augment: random horizontal flips in training.
    seed: the partition, the shuffles and the flips.
  """
  root: str = ""
  train_csv: str = "fairface_label_train.csv"
  test_csv: str = "fairface_label_val.csv"
  label_column: str = "gender"
  label_positive: str = "Female"
  group_column: str = "race"
  group_positive: str | None = "White"
  validation_fraction: float = 0.1
  split_examples: int | None = None
  service_test_only: bool = False
  resolution: int = 64
  augment: bool = True
  seed: int = 0

  batch_keys = ("image", "label", "group")
  input_key = "image"

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    for column in (self.label_column, self.group_column):
      if column not in COLUMNS[1:]:
        raise ValueError(f"FairFace: columns must be among {COLUMNS[1:]}, "
                         f"got {column!r}.")
    if self.label_column == self.group_column:
      raise ValueError("FairFace: the target column is also the protected "
                       f"one ({self.label_column!r}).")
    if not 0 < self.validation_fraction < 1:
      raise ValueError(f"FairFace: validation_fraction must be in (0, 1), "
                       f"got {self.validation_fraction!r}.")
    if self.split_examples is not None and self.split_examples < 1:
      raise ValueError(f"FairFace: split_examples must be None or >= 1, got "
                       f"{self.split_examples!r}.")
    if int(self.resolution) != self.resolution or self.resolution < 1:
      raise ValueError(f"FairFace: resolution must be an integer >= 1, got "
                       f"{self.resolution!r}.")
    object.__setattr__(self, "_tables", {})

  # Tables ------------------------------------------------------------------

  def _read_csv(self, name: str) -> list[dict[str, str]]:
    path = os.path.join(self.root, name)
    if not os.path.isfile(path):
      raise pipeline.DataError(f"FairFace: no label file {path}; expected "
                               f"{self.train_csv} and {self.test_csv} in "
                               "config.data.root.")
    with open(path, newline="") as f:
      reader = csv.DictReader(f)
      missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
      if missing:
        raise pipeline.DataError(
            f"FairFace: {path} lacks column(s) {missing}; expected the "
            f"columns {','.join(COLUMNS)}, got {reader.fieldnames}.")
      rows = list(reader)
    if self.service_test_only:
      rows = [r for r in rows if r["service_test"].strip().lower() == "true"]
    if not rows:
      raise pipeline.DataError(f"FairFace: {path} has no rows to use.")
    return rows

  def _group_values(self) -> tuple[str, ...]:
    if self.group_positive is not None:
      return ("not " + self.group_positive, self.group_positive)
    rows = self._read_csv(self.train_csv)
    return tuple(sorted({r[self.group_column] for r in rows}))

  def _table(self, split: str) -> dict[str, np.ndarray]:
    """`{'file': [n] str, 'label': i32[n], 'group': i32[n]}` of a split."""
    if split == fair_tabular.TRAIN_SAMPLE:
      split = "train"
    if split not in ("train", "validation", "test"):
      raise ValueError(f"Unknown FairFace split {split!r}; known: train, "
                       f"validation, test ({fair_tabular.TRAIN_SAMPLE} "
                       "reads train).")
    if split in self._tables:
      return self._tables[split]
    if split == "test":
      rows = self._read_csv(self.test_csv)
    else:
      rows = self._read_csv(self.train_csv)
      order = np.random.default_rng(self.seed).permutation(len(rows))
      cut = max(1, int(round(len(rows) * self.validation_fraction)))
      pick = order[:cut] if split == "validation" else order[cut:]
      rows = [rows[i] for i in pick]
    if self.split_examples is not None:
      rows = rows[:int(self.split_examples)]
    values = self._group_values()
    for column, wanted in ((self.label_column, (self.label_positive,)),
                           (self.group_column, values if
                            self.group_positive is None else
                            (self.group_positive,))):
      seen = {r[column] for r in rows}
      if not seen & set(wanted) and split == "train":
        raise pipeline.DataError(
            f"FairFace: no training row has {column} in {list(wanted)}; "
            f"values found: {sorted(seen)}.")
    label = np.array([r[self.label_column] == self.label_positive
                      for r in rows], np.int32)
    if self.group_positive is None:
      index = {v: i for i, v in enumerate(values)}
      unknown = sorted({r[self.group_column] for r in rows} - set(index))
      if unknown:
        raise pipeline.DataError(
            f"FairFace: {split} has {self.group_column} value(s) {unknown} "
            f"absent from the training CSV ({list(values)}).")
      group = np.array([index[r[self.group_column]] for r in rows], np.int32)
    else:
      group = np.array([r[self.group_column] == self.group_positive
                        for r in rows], np.int32)
    table = {"file": np.array([r["file"] for r in rows]), "label": label,
             "group": group}
    self._tables[split] = table
    return table

  # Interface ---------------------------------------------------------------

  @property
  def num_classes(self) -> int:
    return 2

  @property
  def num_groups(self) -> int:
    return len(self._group_values())

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (int(self.resolution), int(self.resolution), 3)

  def eval_splits(self) -> dict[str, str]:
    return {"validation": f"{self.validation_fraction:g} of the training "
                          "CSV, held out (model selection, probes)",
            "test": f"{self.test_csv} (reported)"}

  def num_examples(self, split_name: str) -> int:
    return len(self._table(split_name)["label"])

  def group_counts(self, split: str) -> np.ndarray:
    return np.bincount(self._table(split)["group"],
                       minlength=self.num_groups)

  def _image(self, file: str, flip: bool) -> np.ndarray:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    path = os.path.join(self.root, file)
    try:
      with Image.open(path) as im:
        im = im.convert("RGB").resize((self.resolution, self.resolution),
                                      Image.BILINEAR)
        x = np.asarray(im, np.float32) / 255.
    except (OSError, ValueError) as e:
      raise pipeline.DataError(f"FairFace: cannot read image {path} ({e}); "
                               "expected an image file under "
                               "config.data.root.") from e
    return x[:, ::-1] if flip else x

  def train_numpy(self, start_step: int, local_batch: int, process_index: int,
                  process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the stratified global batches (module doc)."""
    table = self._table("train")
    counts = self.group_counts("train")
    if (counts == 0).any():
      raise pipeline.DataError(
          f"FairFace: the training split has no example of group(s) "
          f"{np.flatnonzero(counts == 0).tolist()}.")
    proportions = tuple(float(c) for c in counts / counts.sum())
    members = [np.flatnonzero(table["group"] == g) for g in range(len(counts))]
    global_batch = local_batch * process_count
    t = int(start_step) * global_batch
    seen = _group_counts_before(t, proportions)
    perms: dict[tuple[int, int], np.ndarray] = {}
    while True:
      pos = np.arange(t, t + global_batch, dtype=np.int64)
      groups = fair_tabular.stratified_groups_np(pos, proportions)
      rows = np.empty(global_batch, np.int64)
      for g, idx in enumerate(members):
        here = np.flatnonzero(groups == g)
        occurrence = seen[g] + np.arange(len(here))
        for slot, j in zip(here, occurrence):
          epoch, offset = divmod(int(j), len(idx))
          if (g, epoch) not in perms:
            perms = {k: v for k, v in perms.items() if k[1] >= epoch - 1}
            perms[g, epoch] = np.random.default_rng(
                (self.seed * EPOCH_SEED_STRIDE + epoch) * 64 + g
            ).permutation(len(idx))
          rows[slot] = idx[perms[g, epoch][offset]]
        seen[g] += len(here)
      mine = slice(process_index * local_batch,
                   (process_index + 1) * local_batch)
      flips = [self.augment and
               np.random.default_rng([self.seed, int(p)]).random() < 0.5
               for p in pos[mine]]
      yield {"image": np.stack([self._image(table["file"][r], f)
                                for r, f in zip(rows[mine], flips)]),
             "label": table["label"][rows[mine]],
             "group": table["group"][rows[mine]]}
      t += global_batch

  def eval_numpy(self, split_name: str, local_batch: int, process_index: int,
                 process_count: int) -> Iterator[dict[str, np.ndarray]]:
    """One padded pass over `split_name` in row order (module doc)."""
    table = self._table(split_name)
    n = len(table["label"])
    global_batch = local_batch * process_count
    for b in range(math.ceil(n / global_batch)):
      start = b * global_batch + process_index * local_batch
      idx = np.arange(start, start + local_batch)
      real = idx < n
      take = np.where(real, idx, 0)
      images = np.stack([self._image(table["file"][i], False) if ok else
                         np.zeros(self.image_shape, np.float32)
                         for i, ok in zip(take, real)])
      yield {"image": images,
             "label": np.where(real, table["label"][take], 0).astype(np.int32),
             "group": np.where(real, table["group"][take], 0).astype(np.int32),
             "mask": real.astype(np.float32)}
