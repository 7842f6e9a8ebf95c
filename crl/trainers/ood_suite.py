"""The OOD-suite trainer: a population of models, every member on every shift.

`config.trainer = "ood_suite"` (configs/ood_suite.py). Two modes:

* Population (default): every member of `config.members` (a complete
  classification config without `data`: NAC, Perceiver IO, ViT, Neural
  Interpreters, several seeds, augmentations and training lengths) is trained
  on the shared `config.data` in `WORKDIR/models/<member>/` through the
  common loop (`crl.train.run`). A member whose workdir already holds a
  finished checkpoint (step >= its `num_steps`) written by the same config is
  loaded, not retrained, so a rerun only evaluates; one stopped early resumes;
  one written by another config is refused (`CheckpointError`). Then every
  member is evaluated on the ID split and every selected shift
  (`crl.evaluators.ood_suite.OODSuiteEvaluator`), one pass over each shift's
  data serving all members, and the population statistics are computed.
* One checkpoint (`--config.checkpoint=DIR`, the workdir of a classification
  run): that run on every selected shift that applies to its data;
  population statistics are omitted (noted in results.json).

Outputs (`crl.reports.ood_report`): `WORKDIR/results.csv` (model, shift,
kind, metric, value), `WORKDIR/results.json` (the same rows with each
number's protocol, population statistics, skipped shifts, members) and
`WORKDIR/plots/`; a short table is printed at the end.

Member augmentations (`member.augment`, `crl.data.member_augment`) are
applied inside the jitted train step from the step's key, so training stays
a pure function of the step.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from crl import checkpointing
from crl import config_lib
from crl import runtime
from crl import train
from crl import workdir as workdir_lib
from crl.data import member_augment
from crl.evaluators import ood_suite
from crl.evaluators import suite_loop
from crl.reports import ood_report
from crl.trainers import classification
from crl.trainers import fine_tune
from crl.trainers import runs
from crl.trainers import suite_groups

AUGMENTATIONS = member_augment.AUGMENTATIONS
AUG_SALT = 0xA06
augment_flags = member_augment.augment_flags
augment = member_augment.augment
# Member keys filled in from the suite config (every member sees one dataset
# and one evaluation protocol).
SHARED_KEYS = ("data", "eval_batch_size", "xla_fast_compile")


class _Preempted(Exception):
  """A member's training stopped early (SIGTERM) with a checkpoint."""


class AugmentedClassificationTask(classification.ClassificationTask):
  """Classification with `config.augment` applied to training images."""

  def __init__(self, config: ml_collections.ConfigDict, mesh=None,
               pipeline: Any = None):
    super().__init__(config, mesh)
    if pipeline is not None:  # share compiled data generation with others
      if (pipeline.dataset != self.dataset or
          (pipeline.global_batch, pipeline.eval_batch) != (
              config.batch_size, config.eval_batch_size)):
        raise ValueError("A shared pipeline must serve the same dataset and "
                         "batch sizes.")
      self.pipeline = pipeline
      self.batch_sharding = pipeline.sharding
    self.augment = tuple(config.get("augment", ()) or ())
    unknown = [a for a in self.augment if a not in AUGMENTATIONS]
    if unknown:
      raise config_lib.ConfigError(
          f"Unknown augmentation(s) {unknown}; known: "
          f"{', '.join(AUGMENTATIONS)}.")

  def loss(self, params, batch, rngs, model_state=None):
    # A tuple of names; in a population a traced flag array (augment_flags).
    if not isinstance(self.augment, tuple) or self.augment:
      key = jax.random.fold_in(rngs["dropout"], AUG_SALT)
      batch = {**batch, self.input_key: augment(batch[self.input_key], key,
                                                self.augment)}
    return super().loss(params, batch, rngs, model_state)


# Members ---------------------------------------------------------------------


def member_config(config: ml_collections.ConfigDict,
                  name: str) -> ml_collections.ConfigDict:
  """`config.members[name]` with the suite's shared keys, as trained."""
  member = ml_collections.ConfigDict(config_lib.to_plain(config.members[name]))
  for key in SHARED_KEYS:
    member[key] = config_lib.to_plain(config[key])
  member.data = ml_collections.ConfigDict(member.data)
  member.evals = ml_collections.ConfigDict()
  member.final_eval = ml_collections.ConfigDict(dict(
      type="classification", splits="test"))
  member.trainer = "classification"
  member.augment = tuple(member.get("augment", ()) or ())
  return ml_collections.ConfigDict(config_lib.from_plain(member.to_dict()))


# What makes a member another model (not how it is evaluated); a population's
# directory uses the same (crl.population_io.check_population_dir).
_identity = workdir_lib.model_identity


def finished_step(member: ml_collections.ConfigDict, member_dir: str
                  ) -> int | None:
  """The newest checkpoint step if `member_dir` holds a finished run of
  `member`, else None (nothing there, or stopped before `num_steps`).

  Raises:
    CheckpointError: `member_dir` holds checkpoints of another config.
  """
  return runs.finished_step(member, member_dir, _identity)


def train_or_load(member: ml_collections.ConfigDict, member_dir: str,
                  task: classification.ClassificationTask,
                  trace_shared: bool = False) -> tuple[Any, int, bool]:
  """`(params, step, reused)`: the finished checkpoint, or train to it (a
  strategy or regime of `crl.trainers.fine_tune` through its engine, with
  `crl.population.train_population`'s `trace_shared`)."""
  if fine_tune.needs_engine(member):
    if finished_step(member, member_dir) is not None:
      params, step = train.restore_trained(member, member_dir, task)
      if step >= member.num_steps:
        return params, step, True
    out = _train_engine(member, member_dir, task, trace_shared)
    if "failed_at_step" in out:
      raise _Preempted(f"The member in {member_dir} diverged at step "
                       f"{out['failed_at_step']}; it is left untrained.")
    return out["params"], out["step"], False
  out = runs.train_or_reuse(member, member_dir, task, identity=_identity)
  if out.get("preempted"):
    raise _Preempted(f"Stopped while training the member in {member_dir} at "
                     f"step {out['step']}; run the same command to continue.")
  return out["params"], out["step"], bool(out.get("reused"))


def _train_engine(member, member_dir, task, trace_shared) -> dict[str, Any]:
  """`fine_tune.train_member` in the form of `suite_groups.train_unit`'s
  entries: `{"params", "step", "seconds", "group"}` or `{"failed_at_step",
  "group"}`."""
  t0 = time.time()
  out = fine_tune.train_member(member, member_dir, task,
                               suite_groups.init_params(member, task),
                               trace_shared)
  if "preempted" in out:
    raise _Preempted(f"Stopped while training the member in {member_dir} at "
                     f"step {out['preempted']}; run the same command to "
                     "continue.")
  return {**out, "seconds": time.time() - t0, "group": None}


# The trainer -----------------------------------------------------------------


def _evaluator(config: ml_collections.ConfigDict, task: Any
               ) -> ood_suite.OODSuiteEvaluator:
  try:
    return ood_suite.OODSuiteEvaluator(
        pipeline=task.pipeline, predict_fn=task.predict_fn,
        num_classes=task.num_classes, shifts=tuple(config.shifts),
        ece_bins=config.ece_bins, severities=tuple(config.severities),
        scores=tuple(config.scores), corruption_seed=config.corruption_seed)
  except (TypeError, ValueError) as e:
    raise config_lib.ConfigError(f"config.shifts: {e}") from e


def _check(config: ml_collections.ConfigDict) -> list[str]:
  names = list(config.get("members", {}) or {})
  if config.get("checkpoint"):
    return names
  if not names:
    raise config_lib.ConfigError("config.members is empty; name at least one "
                                 "member (or pass --config.checkpoint=DIR).")
  baseline = config.get("baseline")
  if baseline and baseline not in names:
    raise config_lib.ConfigError(
        f"config.baseline={baseline!r} is not a member; members: "
        f"{', '.join(names)}.")
  for name in names:
    if "data" in config.members[name]:
      raise config_lib.ConfigError(
          f"config.members.{name} has its own `data`; every member trains on "
          "config.data (set it there).")
  return names


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains (or reuses) the population, evaluates it, writes the report.

  Returns:
    The content of `results.json`.
  """
  names = _check(config)
  runtime.setup_fast_compile(config)
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lib.WorkdirLock(workdir)
  # The tasks of a job array share the workdir; each unit has its own lock.
  array = bool((config.get("population") or {}).get("num_tasks"))
  if jax.process_index() == 0 and not array:
    lock.acquire()
  try:
    if config.get("checkpoint"):
      return _one_checkpoint(config, workdir)
    return _population(config, workdir, names)
  except _Preempted as e:
    logging.warning("%s", e)
    return {"preempted": True}
  finally:
    lock.release()


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """WORKDIR/config.json, once every check has passed."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_lib.to_plain(config), f, indent=2, sort_keys=True)


def _one_checkpoint(config, workdir):
  from crl.trainers import runs  # pylint: disable=g-import-not-at-top
  path = config.checkpoint
  if not os.path.isdir(path):
    raise checkpointing.CheckpointError(
        f"config.checkpoint={path!r} is not a directory; pass the --workdir "
        "of a training run.")
  if os.path.exists(os.path.join(path, "config.json")):
    # A broken config.json is named as the source (runs.load_config).
    if runs.load_config(path).get("trainer",
                                  "classification") != "classification":
      raise config_lib.ConfigError(
          f"config.checkpoint={path!r} is not a classification run; the "
          "suite evaluates image classifiers.")
  run = runs.load_run(path)  # CheckpointError: no config.json / checkpoint
  evaluator = _evaluator(config, run.task)
  _write_config(config, workdir)
  model = os.path.basename(os.path.normpath(path))
  info = {model: {"checkpoint": os.path.abspath(path), "step": run.step,
                  "model": run.config.model.name, "reused": True}}
  evaluation = suite_loop.evaluate_models(
      evaluator, {model: (run.params, run.task.predict_fn)})
  return ood_report.write(workdir, config, evaluator, evaluation, info)


def _population(config, workdir, names):
  members = {n: member_config(config, n) for n in names}
  tasks, pipelines = {}, {}
  for name, member in members.items():  # every config error before compiling
    train.check_config(member)
    shared = pipelines.get(member.batch_size)
    tasks[name] = AugmentedClassificationTask(member, pipeline=shared)
    pipelines.setdefault(member.batch_size, tasks[name].pipeline)
  evaluator = _evaluator(config, tasks[names[0]])
  for name, member in members.items():
    finished_step(member, os.path.join(workdir, "models", name))
  suite_groups.check_names(names)
  all_units = []
  for unit in suite_groups.units(config, members):
    # An LP-FT member (two phases) trains alone: lift it out of its group.
    lp = [n for n in unit[1] if members[n].get("lp_steps", 0)]
    rest = [n for n in unit[1] if n not in lp]
    all_units += [(n, [n]) for n in lp] + (
        [unit if not lp else (rest[0] if len(rest) == 1 else unit[0], rest)]
        if rest else [])
  share = suite_groups.array_share(config, all_units)
  if share is not None:
    suite_groups.check_workdir_config(config, workdir)
  _write_config(config, workdir)

  def finished(name):
    step = finished_step(members[name],
                         os.path.join(workdir, "models", name))
    return step is not None and step >= members[name].num_steps

  def train_alone(name):
    return train_or_load(members[name], os.path.join(workdir, "models", name),
                         tasks[name], suite_groups.trace_shared(config))

  if share is not None:  # one task of a job array: train its share only
    return suite_groups.train_share(config, workdir, share, members, tasks,
                                    finished, train_alone)
  info, models, trained = {}, {}, {}
  for unit in all_units:
    if len(unit[1]) > 1:
      trained.update(suite_groups.train_unit(
          config, workdir, unit, members, tasks, finished, train_alone))
      if "preempted" in trained:
        raise _Preempted(f"Stopped while training the group {unit[0]} at "
                         f"step {trained['preempted']}; run the same command "
                         "to continue.")
    elif fine_tune.needs_engine(members[unit[0]]) and not finished(unit[0]):
      trained[unit[0]] = _train_engine(members[unit[0]], os.path.join(
          workdir, "models", unit[0]), tasks[unit[0]],
                                       suite_groups.trace_shared(config))
  for i, (name, member) in enumerate(members.items()):
    member_dir = os.path.join(workdir, "models", name)
    t0 = time.time()
    if name in trained and trained[name].get("failed_at_step"):
      info[name] = {"model": member.model.name, "seed": member.seed,
                    "num_steps": member.num_steps, "failed": True,
                    **trained[name], "workdir": os.path.abspath(member_dir)}
      logging.warning("Member %s diverged at step %d; left out of the "
                      "evaluation.", name, trained[name]["failed_at_step"])
      continue
    logging.info("Member %d/%d %s (%s, %d steps, augment %s).", i + 1,
                 len(names), name, member.model.name, member.num_steps,
                 ",".join(member.augment) or "none")
    if name in trained:
      params, step = trained[name]["params"], trained[name]["step"]
      reused, seconds = False, trained[name]["seconds"]
    else:
      params, step, reused = train_or_load(member, member_dir, tasks[name],
                                           suite_groups.trace_shared(config))
      seconds = time.time() - t0
    info[name] = {"model": member.model.name, "seed": member.seed,
                  "num_steps": member.num_steps, "step": step,
                  "augment": list(member.augment),
                  "workdir": os.path.abspath(member_dir), "reused": reused,
                  "seconds": round(seconds, 1),
                  "parameters": int(sum(np.size(x) for x in
                                        jax.tree.leaves(params)))}
    if name in trained:
      info[name]["group"] = trained[name]["group"]
    logging.info("Member %s: %s the checkpoint of step %d (%.0fs).", name,
                 "reused" if reused else "trained", step, seconds)
    models[name] = (params, tasks[name].predict_fn)
  if config.get("baseline") and config.baseline not in models and models:
    logging.warning("The baseline %s diverged; CE/mCE are relative to %s.",
                    config.baseline, next(iter(models)))
    config = config.copy_and_resolve_references()
    config.baseline = next(iter(models))
  evaluation = suite_loop.evaluate_models(evaluator, models)
  return ood_report.write(workdir, config, evaluator, evaluation, info)
