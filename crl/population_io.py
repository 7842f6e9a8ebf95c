"""A population's files: its run directories, metrics and failures.

Each member of a population (`crl.population`) gets a normal run directory
when it reaches its last step: `config.json`, `checkpoints/` with a
single-member `TrainState`, `metrics.jsonl` and `results.json`, so
`train.restore_trained`, analysis and `--config.checkpoint` read it like any
run; a member that diverged gets `failed.json` instead.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from crl import checkpointing
from crl import config_lib
from crl import train_step
from crl import workdir as workdir_lib


def population_identity(plain: dict[str, Any]) -> dict[str, Any]:
  """`{member name: workdir.model_identity of its config}`: what a
  population directory must match (the keys a finished member ignores)."""
  return {name: workdir_lib.model_identity(member)
          for name, member in plain.items()}


def check_population_dir(workdir: str, plain: dict[str, Any]) -> None:
  """Refuses a population directory written for other members (changes that
  do not change a trained model, `workdir.VOLATILE_KEYS`, are accepted)."""
  workdir_lib.check_run_identity(
      workdir, plain, population_identity, holds="a population of other members or configs",
      advice="Use a new workdir for this population.")


def log_metrics(members, writers, window, failed_at, failed, step, examples_per_s):
  host = jax.device_get(window)
  bad = np.asarray(jax.device_get(failed_at))
  for i, m in enumerate(members):
    if bad[i] and m.name not in failed:
      failed[m.name] = int(bad[i])
      logging.warning("Member %s diverged at step %d (non-finite loss or "
                      "gradients): frozen there; the others go on.", m.name,
                      int(bad[i]))
    rows = [h for h in host if bool(h["active"][i])]
    if not rows:
      continue
    scalars = {k: float(np.mean([float(r[k][i]) for r in rows]))
               for k in rows[-1] if k != "active"}
    scalars["examples_per_s"] = examples_per_s
    writers[m.name].write(min(step, int(m.config.num_steps)), scalars,
                          "train")


def finished(m: Any) -> bool:
  """Whether `m`'s run directory holds its final checkpoint."""
  d = os.path.join(m.workdir, "checkpoints")
  return os.path.isdir(d) and str(int(m.config.num_steps)) in os.listdir(d)


def write_member(m: Any, i: int, state: Any,
                  final_eval: bool) -> dict[str, Any]:
  """`m`'s run directory: config.json, its checkpoint, results.json."""
  single = jax.device_get(jax.tree.map(lambda x: x[i], state))
  step = int(single.step)
  workdir_lib.write_json_atomic(os.path.join(m.workdir, "config.json"),
                                config_lib.to_plain(m.config), sort_keys=True)
  ckpt = checkpointing.Checkpointer(os.path.join(m.workdir, "checkpoints"),
                                    0, keep=m.config.checkpoint.keep,
                                    async_save=False)
  try:
    ckpt.save(step, train_step.checkpoint_tree(single))
    ckpt.wait()
  finally:
    ckpt.close()
  params = jax.device_put(single.params, NamedSharding(
      m.task.batch_sharding.mesh, P()))
  out = {"step": step}
  if final_eval:
    out.update(m.task.final_evaluation(params, step))
    workdir_lib.write_json_atomic(os.path.join(m.workdir, "results.json"),
                                  out)
  return {**out, "params": params}
