"""Populations: members that share an architecture trained in one program.

Members whose model, data and optimizer structure agree (`group_key`) are
stacked on a leading `member` axis (params, optimizer state, step) and
updated by one `jax.jit`-compiled step (`crl.population_step`: batched with
`jax.vmap` on accelerators, each member's own step unrolled in the program
on the CPU). Everything else that differs between them is data, one value
per member (`member_hparams`): the seed and so every RNG stream, the peak
learning rate and the schedule's length (`optim.warmup_cosine`, the single
run's own schedule), weight decay, label smoothing, the task's own
per-member values (`Member.task_data`, e.g. the suite's augmentation flags,
given by the trainer that made the task), the number of steps, the initial
parameters, the training subset (`Member.train_indices`, few-shot) and
which parameters are trainable (a 0/1 factor per leaf multiplied into the
updates). Gradient accumulation (`config.grad_accum_steps`) is the single
run's (`crl.runtime.loss_and_grads`). Each member sees its own batches (its
task's pipeline), stacked on the member axis.

A member trained here ends with bitwise the same parameters as the same
config trained alone by `crl.main` on CPU (the default `per_member` layout;
tests/test_population.py, ViT and NAC). A member whose loss or gradients
become non-finite is frozen at its last finite state and listed in `failed`
with the step; the others go on.

Devices: a mesh with axes (`member`, `data`); the stacked state is sharded
over `member`, each member's batch over `data` as well. A population is one
process's program: under jax.distributed with several processes it is
refused (`check_single_process`); several hosts each train a share of the
suite's units instead (launch/slurm_population.sh).

Workdir of a population: `config.json` (the members' configs; another
population is refused), `checkpoints/` (the stacked state, Orbax, resumed
exactly) and, when a member reaches its last step, its own run directory
(`config.json`, `checkpoints/` with a single-member `TrainState`,
`metrics.jsonl`, `results.json`) so `train.restore_trained`, analysis and
`--config.checkpoint` read it like any run.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from crl import checkpointing
from crl import config_lib
from crl import metric_writers
from crl import optim
from crl import population_io
from crl import population_step
from crl import preemption as preemption_lib
from crl import train
from crl import train_step
from crl import workdir as workdir_lib

INIT_SALT = 0x1417  # fresh members' params: fold_in(PRNGKey(seed), INIT_SALT)
# The step and its per-member data (crl.population_step), also here.
MEMBER_AXIS = population_step.MEMBER_AXIS
HEAD_PARAMS = population_step.HEAD_PARAMS
group_key = population_step.group_key
trainable_mask = population_step.trainable_mask
member_hparams = population_step.member_hparams
make_population_step = population_step.make_population_step


@dataclasses.dataclass
class Member:
  """One member: its config, task and run directory.

  Attributes:
    name: unique name (its run directory's).
    config: a complete classification config (`config.trainable`: 'all' or
      'head', default 'all').
    task: its task (pipeline, loss, evaluation); the step runs the first
      member's task with each member's `task_data`.
    workdir: its run directory.
    init_params: parameters to start from (e.g. a pretrained run's), else
      fresh ones from `config.seed`.
    train_indices: a training subset (few-shot): indices into the dataset's
      training stream, cycled (`subset_batches`); None: the full stream.
    task_data: attributes of the task that differ between members, as
      arrays (e.g. `{"augment": member_augment.augment_flags(config.augment)}`,
      which a member with `config.augment` needs); the same keys for every
      member of a population.
  """
  name: str
  config: ml_collections.ConfigDict
  task: Any
  workdir: str
  init_params: Any = None
  train_indices: Any = None
  task_data: Any = None


def make_mesh(member_devices: int | None = None) -> Mesh:
  """A (`member`, `data`) mesh over every device; by default all on
  `member`."""
  devices = np.asarray(jax.devices())
  m = member_devices or devices.size
  if devices.size % m:
    raise config_lib.ConfigError(
        f"{m} member devices do not divide the {devices.size} devices.")
  return Mesh(devices.reshape(m, devices.size // m), (MEMBER_AXIS, "data"))


def check_single_process() -> None:
  """A population is one process's program; several hosts each train a share
  of the units (launch/slurm_population.sh, README 'Populations')."""
  if jax.process_count() > 1:
    raise config_lib.ConfigError(
        f"A population trains in one process, but jax.distributed joined "
        f"{jax.process_count()} processes; run one process per host with "
        "--distributed=off --config.population.num_tasks=N "
        "--config.population.task_index=i (launch/slurm_population.sh), or "
        "--config.population.group=off to train members one at a time over "
        "every host.")


def _stack(trees: list[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                      *trees)


def _slice(tree: Any, i: int) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


def _check_members(members: list[Member]) -> str:
  names = [m.name for m in members]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise config_lib.ConfigError(
        f"Member name(s) {', '.join(dup)} appear more than once; every "
        "member needs its own name (its run directory).")
  keys = {group_key(m.config) for m in members}
  if len(keys) != 1:
    raise config_lib.ConfigError(
        f"Members {', '.join(names)} differ in more than per-member data "
        "(model, data, batch size or optimizer structure); train them in "
        "separate groups (see group_key).")
  for m in members:
    train.check_config(m.config)
    if m.config.get("augment") and "augment" not in (m.task_data or {}):
      raise config_lib.ConfigError(
          f"Member {m.name} sets config.augment but its Member.task_data has "
          "no 'augment' flags; pass task_data={'augment': "
          "member_augment.augment_flags(config.augment)}.")
  data_keys = {m.name: sorted(m.task_data or {}) for m in members}
  if len({tuple(v) for v in data_keys.values()}) > 1:
    raise config_lib.ConfigError(
        f"Members give different task_data keys ({data_keys}); every member "
        "of a population needs the same ones.")
  return keys.pop()


def train_population(members: list[Member], workdir: str,
                     mesh: Mesh | None = None, stop_at: int | None = None,
                     checkpoint_every: int = 0, final_eval: bool = True,
                     member_chunk: int | None = None,
                     layout: str | None = None,
                     trace_shared: bool = False) -> dict[str, Any]:
  """Trains `members` (one group, see `group_key`) together in `workdir`.

  Args:
    members: the members; their run directories are written when each
      reaches its `num_steps`.
    workdir: the population's directory (stacked checkpoints); resumed.
    mesh: a (`member`, `data`) mesh (`make_mesh`); default all devices on
      `member`. Members are padded to a multiple of its `member` size.
    stop_at: stop after this step with a checkpoint, as if preempted.
    checkpoint_every: population checkpoint interval (0: only at the end and
      when stopped).
    final_eval: run each member's `final_evaluation` (its `results.json`)
      when it finishes.
    member_chunk: members vmapped at once (`crl.population_step`); None:
      all of them; 1: one member after the other inside the one program.
    layout: the step's layout (`crl.population_step.LAYOUTS`); None:
      `population_step.default_layout()`.
    trace_shared: hyperparameters that every member shares are traced data
      like the others, not constants (`population_step.shared_constants`):
      the step's program is then the same for any members of the same
      architecture, batch and optimizer structure (one compile, or one
      persistent-cache entry, for many populations), at the price of
      bitwise equality with a single run (e.g. label smoothing divides in
      float32, one rounding apart).

  Returns:
    `{"step", "members": {name: {"step", "params", "results"}}, "failed":
    {name: step}}`, or `{"step", "preempted": True}` when stopped early.
  """
  _check_members(members)
  check_single_process()
  os.makedirs(workdir, exist_ok=True)
  plain = {m.name: config_lib.to_plain(m.config) for m in members}
  for m in members:  # a changed subset makes another population
    if m.train_indices is not None:
      plain[m.name]["train_indices"] = np.asarray(
          m.train_indices).astype(int).tolist()
  population_io.check_population_dir(workdir, plain)
  lock = workdir_lib.WorkdirLock(workdir)
  lock.acquire()
  try:
    return _train(members, workdir, plain, mesh or make_mesh(), stop_at,
                  checkpoint_every, final_eval, member_chunk, layout,
                  trace_shared)
  finally:
    lock.release()


def _train(members, workdir, plain, mesh, stop_at, checkpoint_every,
           final_eval, member_chunk, layout, trace_shared):
  task, opt = members[0].task, members[0].config.optimizer
  n_real = len(members)
  n_dev = mesh.shape[MEMBER_AXIS]
  slots = members + [None] * (-n_real % n_dev)  # padding: inactive copies
  hps, inits = [], []
  abstract_params = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
  for m in slots:
    config = (m or members[0]).config
    hp = member_hparams(config, (m or members[0]).task_data)
    hp["trainable"] = trainable_mask(abstract_params,
                                     config.get("trainable", "all"))
    if m is None:
      hp["num_steps"] = np.int32(0)
    hps.append(hp)
    inits.append(m.init_params if m is not None else None)
  hp = _stack(hps)
  total = max(int(m.config.num_steps) for m in members)
  tx, _ = optim.build_optimizer(opt, hps[0])

  def init_one(key):
    params = task.init_params(key)
    return train_step.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params))

  def init_all(keys):
    return jax.vmap(init_one)(keys)

  stacked = NamedSharding(mesh, P(MEMBER_AXIS))
  keys = jnp.stack([jax.random.fold_in(
      jax.random.PRNGKey((m or members[0]).config.seed), INIT_SALT)
                    for m in slots])
  abstract = jax.eval_shape(init_all, keys)
  state_sharding = jax.tree.map(lambda _: stacked, abstract)
  hp = jax.device_put(hp, jax.tree.map(lambda _: stacked, hp))
  pop_abstract = {
      "state": train_step.checkpoint_tree(jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=stacked),
          abstract)),
      "failed_at": jax.ShapeDtypeStruct((len(slots),), jnp.int32,
                                        sharding=stacked)}
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    checkpoint_every, keep=2,
                                    async_save=False)
  restored = ckpt.restore_latest(pop_abstract)
  if restored is None:
    state = jax.jit(init_all, out_shardings=state_sharding)(keys)
    given = [i for i, p in enumerate(inits) if p is not None]
    if given:  # initial parameters from elsewhere (e.g. a pretrained run)
      params = jax.tree.map(lambda s, *ps: s.at[jnp.asarray(given)].set(
          jnp.stack(ps)), state.params, *[inits[i] for i in given])
      opt_state = jax.vmap(tx.init)(params)
      state = jax.device_put(state.replace(params=params,
                                           opt_state=opt_state),
                             state_sharding)
    failed_at = jax.device_put(jnp.zeros((len(slots),), jnp.int32), stacked)
    start = 0
  else:
    state = train_step.TrainState(**restored[0]["state"])
    failed_at = restored[0]["failed_at"]
    start = restored[1]
    logging.info("Population resumed from its checkpoint at step %d.", start)
  workdir_lib.write_json_atomic(os.path.join(workdir, "config.json"), plain,
                                sort_keys=True)

  batch_sharding = NamedSharding(mesh, P(MEMBER_AXIS, "data"))
  step_fn = jax.jit(make_population_step(
      task, opt, member_chunk, members[0].config.get("grad_accum_steps", 1),
      None if trace_shared else population_step.shared_constants(hps),
      layout),
                    in_shardings=(state_sharding, stacked, stacked,
                                  batch_sharding),
                    out_shardings=(state_sharding, stacked, stacked),
                    donate_argnums=(0, 2))
  return _loop(members, slots, state, failed_at, hp, step_fn, batch_sharding,
               ckpt, start, total, stop_at, final_eval)


def subset_batches(task: Any, indices: Any, start: int):
  """Batches of steps start + 1, ... drawn from `indices` only: the batch of
  step t + 1 holds examples `indices[(t * B + i) % len(indices)]` of the
  training stream, i < B (a procedural dataset's `sample_encoded`)."""
  ds, pipeline = task.dataset, task.pipeline
  if not getattr(pipeline, "procedural", False):
    raise config_lib.ConfigError(
        f"A training subset (train_indices) needs a procedural dataset; "
        f"{task.name} reads its data from files.")
  code = jnp.asarray(ds.encode("train", None))
  idx = jnp.asarray(np.asarray(indices), jnp.int32)
  b = pipeline.global_batch

  def batch(step, idx):  # idx an argument: one program for every subset
    picked = idx[(step * b + jnp.arange(b, dtype=jnp.int32)) % idx.size]
    return pipeline._select(  # pylint: disable=protected-access
        ds.sample_encoded(code, picked))

  fn = jax.jit(batch, out_shardings=pipeline.sharding)
  step = start
  while True:
    yield fn(jnp.int32(step), idx)
    step += 1


def _batches(members, slots, start):
  """Stacked batches of steps start + 1, ...: one generator per distinct
  pipeline, so members that share one share its batches; a member with a
  training subset has its own."""
  gens, order = {}, []
  for m in slots:
    task = (m or members[0]).task
    subset = m is not None and m.train_indices is not None
    key = ("subset", m.name) if subset else id(task.pipeline)
    if key not in gens:
      gens[key] = (subset_batches(task, m.train_indices, start) if subset
                   else task.train_batches(start))
    order.append(key)
  while True:
    current = {k: next(g) for k, g in gens.items()}
    yield _stack([current[k] for k in order])


def _loop(members, slots, state, failed_at, hp, step_fn, batch_sharding,
          ckpt, start, total, stop_at, final_eval):
  writers = {}
  for m in members:
    os.makedirs(m.workdir, exist_ok=True)
    writers[m.name] = metric_writers.MetricWriter(
        m.workdir, m.config.get("tensorboard", True))
  failed: dict[str, int] = {}
  window, step, t0 = [], start, time.time()
  log_every = min(int(m.config.log_every_steps) for m in members)
  finish_at = {m.name: int(m.config.num_steps) for m in members}
  done = {m.name for m in members if population_io.finished(m)}
  out_members = {}
  index = {m.name: i for i, m in enumerate(members)}
  stopped = False
  try:
    with preemption_lib.handler() as preemption, preemption.deferred():
      batches = _batches(members, slots, start)
      for step in range(start + 1, total + 1):
        batch = jax.device_put(next(batches), batch_sharding)
        if step == start + 1:
          members[0].task.check_batch(_slice(batch, 0),
                                      f"training batch of step {step}")
        state, failed_at, metrics = step_fn(state, hp, failed_at, batch)
        window.append(metrics)
        ending = [m for m in members if finish_at[m.name] == step]
        if step % log_every == 0 or ending or step == total:
          population_io.log_metrics(members, writers, window, failed_at, failed, step,
               (step - start) * members[0].config.batch_size / max(
                   time.time() - t0, 1e-9))
          window = []
        for m in ending:
          if m.name not in failed and m.name not in done:
            out_members[m.name] = population_io.write_member(m, index[m.name], state,
                                              final_eval)
        if ckpt.should_save(step, total):
          ckpt.save(step, {"state": train_step.checkpoint_tree(state),
                           "failed_at": failed_at})
        if preemption.should_stop(step) or step == stop_at:
          ckpt.save(step, {"state": train_step.checkpoint_tree(state),
                           "failed_at": failed_at})
          ckpt.wait()
          logging.warning("Population stopped early at step %d; run the "
                          "same command to resume.", step)
          stopped = True
          break
  finally:
    ckpt.close()
    for w in writers.values():
      w.close()
  if stopped:
    return {"step": step, "preempted": True}
  for m in members:
    path = os.path.join(m.workdir, "failed.json")
    if m.name in failed:
      workdir_lib.write_json_atomic(path, {"failed_at_step": failed[m.name]})
  return {"step": step, "members": out_members, "failed": failed}


