"""The `augmented_classification` trainer: `classification` with
`config.augment` (a tuple of `flip`, `crop`, `hue`; see
`crl.trainers.ood_suite.augment`) applied to every training batch inside the
jitted step, as the OOD suite's and the transfer study's members train.
Used by configs/folder.py.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from crl.trainers import classification
from crl.trainers import ood_suite


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at: int | None = None) -> dict[str, Any]:
  """`crl.trainers.classification.train_and_evaluate` with augmentation."""
  return classification.train_and_evaluate(
      config, workdir, stop_at,
      task_cls=ood_suite.AugmentedClassificationTask)
