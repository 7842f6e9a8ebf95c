"""Fine-tuning strategies and data regimes of a suite member trained alone.

A member config may carry, besides a classification config's keys:

* `trainable`: 'all' (default) or 'head' (linear probe: only the head,
  `population.HEAD_PARAMS`, is updated);
* `few_shot`: N > 0 trains on N examples per class of the training stream
  (`few_shot_indices`, a seeded subset; 0: the whole stream);
* `lp_steps`: L > 0 makes the member linear-probe-then-fine-tune (LP-FT,
  Kumar et al. 2022): a head-only phase of L steps (its run directory is
  `MEMBER_DIR/lp_phase`), then every parameter for `num_steps` more steps,
  starting from the phase's parameters, head included; the phase's learning
  rate is `lp_learning_rate` if set, else the member's.

Such a member is trained by the population engine (`crl.population`, a
population of one), which applies the trainable mask and the subset; a
member with none of them is trained by `crl.train.run` as before
(`needs_engine`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crl import config_lib
from crl.data import member_augment
from crl import population
from crl import train

LP_DIR = "lp_phase"
POOL_FACTOR = 4  # candidates drawn per requested example (labels ~ uniform)
_FEW_SHOT_SALT = 0xF5


def needs_engine(member: ml_collections.ConfigDict) -> bool:
  """Whether `member` needs the population engine (see the module doc)."""
  return (member.get("trainable", "all") != "all" or
          bool(member.get("few_shot", 0)) or bool(member.get("lp_steps", 0)))


def few_shot_indices(task: Any, per_class: int, seed: int) -> np.ndarray:
  """Indices into the training stream: `per_class` examples of every class.

  Candidates are the first `POOL_FACTOR * per_class * classes` examples of
  the (procedural) training stream, visited in a permutation seeded by
  `seed`; each class keeps the first `per_class` it meets (the paper's code
  keeps the first N of each class met in its shuffled shards).

  Returns:
    int32 `[per_class * classes]`, in the visiting order.

  Raises:
    ConfigError: the data is not procedural, or the pool holds fewer than
      `per_class` examples of some class.
  """
  ds, pipeline = task.dataset, task.pipeline
  if not getattr(pipeline, "procedural", False):
    raise config_lib.ConfigError(
        f"config.few_shot needs a procedural dataset; {task.name} reads its "
        "data from files.")
  k = int(task.num_classes)
  pool = POOL_FACTOR * per_class * k
  code = jnp.asarray(ds.encode("train", None))
  labels_of = jax.jit(lambda idx: ds.sample_encoded(code, idx)["label"])
  chunk = 512
  labels = np.concatenate([
      np.asarray(labels_of(jnp.arange(s, s + chunk, dtype=jnp.int32)))
      for s in range(0, pool, chunk)])[:pool]
  rng = np.random.default_rng([int(seed), _FEW_SHOT_SALT, per_class])
  order = rng.permutation(pool)
  picked, counts = [], np.zeros(k, np.int64)
  for i in order:
    c = int(labels[i])
    if counts[c] < per_class:
      counts[c] += 1
      picked.append(i)
  if counts.min() < per_class:
    raise config_lib.ConfigError(
        f"config.few_shot={per_class}: class {int(counts.argmin())} has only "
        f"{int(counts.min())} examples among the {pool} candidates; expected "
        f"at least {per_class} per class.")
  return np.asarray(picked, np.int32)


def train_indices(member: ml_collections.ConfigDict, task: Any
                  ) -> np.ndarray | None:
  """The member's few-shot subset, or None (the whole stream)."""
  n = int(member.get("few_shot", 0) or 0)
  return few_shot_indices(task, n, int(member.seed)) if n else None


def _phase(member: ml_collections.ConfigDict, **changes: Any
           ) -> ml_collections.ConfigDict:
  plain = config_lib.to_plain(member)
  plain.update(changes)
  return ml_collections.ConfigDict(config_lib.from_plain(plain))


def _train_one(member, member_dir, task, init_params, indices,
               workdir, trace_shared) -> dict[str, Any]:
  result = population.train_population(
      [population.Member(os.path.basename(member_dir), member, task,
                         member_dir, init_params, indices,
                         task_data={"augment": member_augment.augment_flags(
                             tuple(member.get("augment", ()) or ()))})],
      workdir, checkpoint_every=int(member.checkpoint.every_steps),
      final_eval=False, trace_shared=trace_shared)
  if result.get("preempted"):
    return {"preempted": result["step"]}
  if result["failed"]:
    return {"failed_at_step": next(iter(result["failed"].values()))}
  r = next(iter(result["members"].values()), None)
  if r is None:  # finished before: its run directory holds it
    params, step = train.restore_trained(member, member_dir, task)
    return {"params": params, "step": step}
  return {"params": r["params"], "step": r["step"]}


def train_member(member: ml_collections.ConfigDict, member_dir: str,
                 task: Any, init_params: Any, trace_shared: bool = False
                 ) -> dict[str, Any]:
  """Trains a member that `needs_engine`; `{"params", "step"}`, or
  `{"failed_at_step"}` / `{"preempted": step}`.

  `init_params`: the starting parameters (e.g. `crl.pretrained`'s backbone
  over a fresh head), or None for fresh ones. The engine's own stacked
  checkpoints go to `MEMBER_DIR/engine` (phase: `lp_phase/engine`).
  `trace_shared`: `crl.population.train_population`'s.
  """
  indices = train_indices(member, task)
  lp = int(member.get("lp_steps", 0) or 0)
  if lp:
    probe = _phase(member, trainable="head", num_steps=lp, lp_steps=0)
    probe.optimizer.warmup_steps = max(lp // 10, 1)
    if member.get("lp_learning_rate"):
      probe.optimizer.base_learning_rate = float(member.lp_learning_rate)
    probe.checkpoint.every_steps = lp
    probe.log_every_steps = min(probe.log_every_steps, lp)
    lp_dir = os.path.join(member_dir, LP_DIR)
    first = _train_one(probe, lp_dir, task, init_params, indices,
                       os.path.join(lp_dir, "engine"), trace_shared)
    if "params" not in first:
      return first
    init_params = first["params"]
  return _train_one(member, member_dir, task, init_params, indices,
                    os.path.join(member_dir, "engine"), trace_shared)
