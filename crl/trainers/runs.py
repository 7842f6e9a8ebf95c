"""Loading a finished (or stopped) classification run for analysis.

A run is its workdir: `config.json` gives the experiment, `checkpoints/` the
parameters. `load_run` rebuilds the model, the dataset and its input
pipeline exactly as the trainer did and restores the newest readable
checkpoint, refusing a checkpoint that does not match the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from crl import checkpointing
from crl import config_lib
from crl import train
from crl.trainers import classification


@dataclasses.dataclass
class Run:
  """A trained classifier and everything needed to evaluate it."""
  workdir: str
  config: ml_collections.ConfigDict
  task: classification.ClassificationTask
  params: Any
  step: int

  @property
  def model(self) -> Any:
    return self.task.model

  @property
  def dataset(self) -> Any:
    return self.task.dataset


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise checkpointing.CheckpointError(
        f"{workdir} is not a run directory (no config.json); pass the "
        "--workdir of a training run.")
  try:
    with open(path) as f:
      plain = json.load(f)
    if not isinstance(plain, dict):
      raise ValueError(f"a JSON {type(plain).__name__}, expected an object")
    return ml_collections.ConfigDict(config_lib.from_plain(plain))
  except (OSError, ValueError, TypeError) as e:
    reason = " ".join(str(e).split())
    raise checkpointing.CheckpointError(
        f"{path} (the run's config) cannot be read: {reason}; it must be the "
        "config.json that crl.main wrote for that run.") from None


def load_run(workdir: str, **config_overrides: Any) -> Run:
  """Rebuilds the run in `workdir` and restores its newest checkpoint.

  Args:
    workdir: a training run's directory.
    **config_overrides: top-level config entries to change for analysis
      (e.g. `eval_batch_size=250`); the model and data stay as trained.
  """
  config = load_config(workdir)
  for key, value in config_overrides.items():
    config[key] = value
  task = classification.ClassificationTask(config)
  params, step = train.restore_trained(config, workdir, task)
  return Run(workdir=workdir, config=config, task=task, params=params,
             step=step)
