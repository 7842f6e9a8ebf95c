"""Finished (or stopped) runs: loading one for analysis, and the runs of a
study.

A run is its workdir: `config.json` gives the experiment, `checkpoints/` the
parameters. `load_run` rebuilds the model, the dataset and its input
pipeline exactly as the trainer did and restores the newest readable
checkpoint, refusing a checkpoint that does not match the model.

A study (the two-heads study, the OOD suite) trains many runs: each goes
through `train_or_reuse`, which restores a finished run after the one
identity check (`crl.workdir.check_run_identity`) and trains or resumes
anything else; what its runs share (an input pipeline, jitted predict
functions) is a `Shared` the study makes and passes to each task.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import ml_collections

from crl import checkpointing
from crl import config_lib
from crl import train
from crl import workdir as workdir_lib
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
  """The config of the run in `workdir` (its `config.json`); one-line
  `CheckpointError` if that is missing or unreadable."""
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


class Shared:
  """What the runs of one study share, made by the study and passed to each
  of its tasks (never process-wide): items by key, each made once."""

  def __init__(self):
    self._items: dict[Any, Any] = {}

  def get(self, key: Any, make: Callable[[], Any]) -> Any:
    """The item of `key` (hashable), made by `make()` the first time."""
    if key not in self._items:
      self._items[key] = make()
    return self._items[key]


def finished_step(config: ml_collections.ConfigDict, workdir: str,
                  identity: Callable[[dict[str, Any]], Any] = (
                      train.run_identity),
                  evaluated: bool = False) -> int | None:
  """The newest checkpoint step of `workdir` if it reached
  `config.num_steps` (and, if `evaluated`, its final evaluation was written
  to `results.json`), else None (nothing there, or stopped before).

  Raises:
    CheckpointError: the workdir holds a run of another `identity`
      (`crl.workdir.check_run_identity`).
  """
  steps = checkpointing.step_dirs(os.path.join(workdir, "checkpoints"))
  if not steps or (evaluated and not os.path.exists(
      os.path.join(workdir, "results.json"))):
    return None
  workdir_lib.check_run_identity(
      workdir, config_lib.to_plain(config), identity,
      holds="a run of this study trained with another config",
      advice="Delete that folder to retrain it, or use another --workdir.")
  return steps[-1] if steps[-1] >= config.num_steps else None


def train_or_reuse(config: ml_collections.ConfigDict, workdir: str,
                   task: Any, stop_at: int | None = None,
                   identity: Callable[[dict[str, Any]], Any] = (
                       train.run_identity),
                   evaluated: bool = False) -> dict[str, Any]:
  """One run of a study: a finished run in `workdir` is restored, not
  trained or evaluated again; anything else goes through `train.run`
  (which resumes a stopped run).

  Args:
    config: the run's config.
    workdir: the run's directory.
    task: its task (see `crl.train_step.Task`).
    stop_at: passed to `train.run`.
    identity: what must match the `config.json` there to reuse it
      (`crl.train.run_identity` unless the study needs more).
    evaluated: reuse only a run whose final evaluation was written (a run
      stopped at its last step has not been evaluated yet).

  Returns:
    `train.run`'s dict, or `{"step", "params", "reused": True}`.
  """
  if finished_step(config, workdir, identity, evaluated) is not None:
    params, step = train.restore_trained(config, workdir, task)
    if step >= config.num_steps:
      return {"step": step, "params": params, "reused": True}
  return train.run(config, workdir, task, stop_at)
