"""Model selection by best validation average precision (the public
two-heads code's protocol: keep the epoch whose validation AP is best).

`train_and_select` trains a fairness task in chunks of `every_steps`
(e.g. one epoch) through `crl.train.run` with `stop_at`, so the training
itself (schedule, checkpoints, resumption) is exactly that of an unbroken
run. After each chunk it restores the parameters of the checkpoint just
written, scores the target's average precision on the 'validation' split,
and keeps the best parameters so far:

  WORKDIR/selection.json        {'every_steps', 'checks': [{'step',
                                 'validation_average_precision'}],
                                 'selected_step'}
  WORKDIR/selected_params.msgpack  the parameters of 'selected_step'

Both are rewritten atomically after each check, so a killed run resumes at
the next unchecked chunk; a finished run is re-read without training.
Ties keep the earlier step. A chunk that a killed run trained past before
its check is skipped (the check at the later step still happens). Process
0 writes the selected parameters and every process reads them back: with
several processes the workdir must be on a shared file system.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flax import serialization
import jax
import ml_collections

from crl import train
from crl import workdir as workdir_lib
from crl.evaluators import common
from crl.evaluators import fairness as fm
from crl.evaluators import metrics as metrics_lib

RECORD = "selection.json"
PARAMS = "selected_params.msgpack"


def _check_points(num_steps: int, every_steps: int) -> list[int]:
  return list(range(every_steps, num_steps, every_steps)) + [num_steps]


def validation_average_precision(task: Any, params: Any) -> float:
  """The target's average precision on 'validation' (margin as score)."""
  val = common.collect(task.pipeline, task.heads_fn, params, "validation",
                       fm.KEYS)
  return metrics_lib.average_precision(fm.binary_margin(val["logits"]),
                                       val["label"])


def _latest_step(workdir: str) -> int:
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return 0
  steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()]
  return max(steps, default=0)


def _save_params(path: str, params: Any) -> None:
  with workdir_lib.atomic_write(path, "wb") as f:
    f.write(serialization.msgpack_serialize(
        serialization.to_state_dict(jax.device_get(params))))


def _load_params(path: str) -> Any:
  with open(path, "rb") as f:
    return serialization.msgpack_restore(f.read())


def train_and_select(config: ml_collections.ConfigDict, workdir: str,
                     task: Any, every_steps: int,
                     stop_at: int | None = None) -> dict[str, Any]:
  """Trains `task` to `config.num_steps`, selecting by validation AP.

  Args:
    config: the training's config.
    workdir: its run directory.
    task: a `crl.trainers.fairness.FairClassificationTask` (or subclass).
    every_steps: steps between checks (> 0); the final step is checked.
    stop_at: stop after the chunk that reaches this step (as preempted).

  Returns:
    `{'params': selected parameters, 'selected_step', 'checks',
    'final_step'}`, or `{'preempted': True, 'step'}`.
  """
  if every_steps <= 0:
    raise ValueError(f"every_steps must be > 0, got {every_steps}.")
  os.makedirs(workdir, exist_ok=True)
  record_path = os.path.join(workdir, RECORD)
  params_path = os.path.join(workdir, PARAMS)
  record = {"every_steps": int(every_steps), "checks": [],
            "selected_step": None}
  if os.path.exists(record_path):
    with open(record_path) as f:
      record = json.load(f)
  checked = {c["step"] for c in record["checks"]}
  best = max((c["validation_average_precision"] for c in record["checks"]),
             default=None)
  num_steps = int(config.num_steps)
  for end in _check_points(num_steps, int(every_steps)):
    if end in checked or _latest_step(workdir) > end:
      continue  # done, or passed by a run that was killed before checking
    if stop_at is not None and stop_at < end:
      out = train.run(config, workdir, task, stop_at)
      return {"preempted": True, "step": out.get("step")}
    if end < num_steps:
      if _latest_step(workdir) < end:
        out = train.run(config, workdir, task, end)
        if out.get("step") != end:  # preempted (SIGTERM) before `end`
          return {"preempted": True, "step": out.get("step")}
      params, step = train.restore_trained(config, workdir, task)
    else:
      out = train.run(config, workdir, task)
      if out.get("preempted"):
        return {"preempted": True, "step": out.get("step")}
      params, step = out["params"], out["step"]
    ap = validation_average_precision(task, params)
    record["checks"].append({"step": int(step),
                             "validation_average_precision": ap})
    if best is None or ap > best:
      best = ap
      record["selected_step"] = int(step)
      if jax.process_index() == 0:
        _save_params(params_path, params)
    if jax.process_index() == 0:
      workdir_lib.write_json_atomic(record_path, record)
    if stop_at is not None and end >= stop_at and end < num_steps:
      return {"preempted": True, "step": int(step)}
  if record["selected_step"] is None:
    raise RuntimeError(f"{workdir}: no selection check was recorded.")
  return {"params": _load_params(params_path),
          "selected_step": record["selected_step"],
          "checks": record["checks"], "final_step": num_steps}
