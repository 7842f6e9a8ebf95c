"""The generic training loop, shared by every trainer.

One process or many, one device or many: a `Mesh` over every device with a
single `data` axis; the global batch is sharded over it and the `TrainState`
(params, optimizer state, step) is replicated. One `jax.jit`-compiled train
step with buffer donation. The step's randomness is `fold_in(key(seed),
step)` and the data of step `t` is a pure function of `t`, so a restarted run
continues exactly where the checkpoint left it. The step itself, the
state and the `Task` protocol are in `crl.train_step`; the optimizer in
`crl.optim`; mesh and RNG streams in `crl.runtime`.

What is trained, on what, and how it is evaluated comes from a `Task`
(`crl.trainers.classification.ClassificationTask` for image classifiers; the
amodal-segmentation and fairness trainers bring their own); `run` does the
rest: optimizer, checkpoints and resume, preemption, non-finite checks,
metrics, periodic and final evaluation.

Workdir: `config.json`, `checkpoints/`, `metrics.jsonl`, TensorBoard events,
`results.json` (final evaluation) and `run.lock` while running.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from crl import checkpointing
from crl import config_lib
from crl import metric_writers
from crl import optim
from crl import preemption as preemption_lib
from crl import registry
from crl import runtime
from crl import train_step as step_lib
from crl import workdir as workdir_lib
from crl.models import precision

# Setup -----------------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks that need no dataset or model; raises `ConfigError`."""
  for key in ("num_steps", "batch_size", "eval_batch_size", "log_every_steps"):
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
      raise config_lib.ConfigError(
          f"config.{key} must be a positive integer, got {value!r}.")
  try:
    precision.check_compute_dtype(config.get("compute_dtype", "float32"))
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  n = jax.device_count()
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % n:
      raise config_lib.ConfigError(
          f"config.{key}={config[key]} is not divisible by the {n} devices; "
          f"use a multiple of {n}.")
  runtime.check_grad_accum(config)
  runtime.check_fsdp(config)


def run_identity(plain: Mapping[str, Any]) -> dict[str, Any]:
  """What makes a run another run (`config.json` of a workdir, plain):
  `model` (with today's defaults of fields it lacks), `seed`, `batch_size`
  and `data.name`; a checkpoint of another identity is not resumed."""
  return {"model": config_lib.with_component_defaults(
              registry.MODELS, plain.get("model", {})),
          "seed": plain.get("seed"), "batch_size": plain.get("batch_size"),
          "data.name": plain.get("data", {}).get("name")}


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if k not in ("finite_loss", "finite_grads", "finite_grad_leaves")}


def run(config: ml_collections.ConfigDict, workdir: str,
        task: step_lib.Task, stop_at: int | None = None) -> dict[str, Any]:
  """Trains `task` in `workdir` (resuming a checkpoint there); returns results.

  Args:
    config: the experiment config (keys used here: seed, batch_size,
      num_steps, log_every_steps, tensorboard, optimizer, checkpoint,
      init_from (see `crl.pretrained`, fresh runs only); `model`,
      `seed`, `batch_size` and `data.name` identify the run for resuming).
    workdir: the run directory.
    task: what to train and evaluate (see `Task`).
    stop_at: if given, stop after this step with a checkpoint, as if
      preempted (the schedule still runs to `config.num_steps`); running again
      continues.

  Returns:
    `{"step": final step, ...}` with the task's final evaluation, also
    written to `workdir/results.json`; `{"step", "preempted": True}` when
    stopped early (by `stop_at`, or by SIGTERM at any point: see
    `crl.preemption`).

  Raises:
    CheckpointError: the workdir holds a previous run's records but no
      checkpoint (never restarted silently), or checkpoints that cannot be
      used.
  """
  init = None
  if config.get("init_from"):
    # Read and checked before anything is written; a resumed run keeps its
    # own checkpoint.
    from crl import pretrained  # pylint: disable=g-import-not-at-top
    if not pretrained.has_checkpoint(workdir):
      init = pretrained.load(config, task)
  runtime.setup_compile_cache(config)
  tx, schedule = optim.make_optimizer(config.optimizer, config.batch_size,
                                      config.num_steps)
  # Evaluators and the model's shapes first: their config errors must stop
  # the run before anything is compiled or written.
  evaluators = task.evaluators()
  replicated = NamedSharding(task.batch_sharding.mesh, P())
  layout = _state_layout(config, task, tx, replicated)
  workdir_lib.check_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lib.WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  try:
    with preemption_lib.handler():
      return _run(config, workdir, task, stop_at, (tx, schedule),
                  evaluators, layout, init)
  except preemption_lib.Preempted as e:
    logging.warning("%s (%s)", e, workdir)
    return {"step": e.step, "preempted": True}
  finally:
    lock.release()


def _run(config, workdir, task, stop_at, optimizer, evaluators, layout,
         init=None):
  tx, schedule = optimizer
  init_state, init_key, abstract, state_sharding = layout
  replicated = NamedSharding(task.batch_sharding.mesh, P())

  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not checkpointing.step_dirs(ckpt_dir):
    workdir_lib.check_no_previous_run(workdir)  # before anything is written
  ckpt = checkpointing.Checkpointer(
      ckpt_dir, config.checkpoint.every_steps, config.checkpoint.keep,
      async_save=config.checkpoint.async_save)
  if ckpt.steps():
    workdir_lib.check_run_identity(workdir, config_lib.to_plain(config),
                                   run_identity)
  if jax.process_count() > 1:
    # Every process has read the old config.json before process 0 replaces it.
    multihost_utils.sync_global_devices("crl:config_checked")
  if jax.process_index() == 0:
    workdir_lib.write_json_atomic(os.path.join(workdir, "config.json"),
                                  config_lib.to_plain(config), sort_keys=True)

  restored = ckpt.restore_latest(step_lib.checkpoint_tree(abstract))
  if restored is None:
    t0 = time.time()
    state = jax.jit(init_state, out_shardings=state_sharding)(init_key)
    if init is not None:
      params, model_state = init.apply(state.params, state.model_state)
      state = jax.device_put(
          state.replace(params=params, model_state=model_state,
                        opt_state=tx.init(params)), state_sharding)
      logging.info("Initialised all but the head (%s) from %s.",
                   ", ".join(init.head), init.source)
    logging.info("Initialised %s with %s parameters in %.1fs.", task.name,
                 f"{sum(x.size for x in jax.tree.leaves(state.params)):,}",
                 time.time() - t0)
  else:
    tree, step = restored
    state = step_lib.TrainState(**tree)
    logging.info("Resumed from the checkpoint at step %d.", step)
  start_step = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    metric_writers.drop_rows_after(workdir, start_step)

  train_step = jax.jit(
      step_lib.make_train_step(task, tx, schedule, config.seed,
                               config.get("grad_accum_steps", 1)),
      in_shardings=(state_sharding, task.batch_sharding),
      out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  writer = metric_writers.MetricWriter(workdir, config.get("tensorboard",
                                                           True))
  progress = metric_writers.Progress(config.num_steps, start_step,
                                     config.batch_size)
  step = start_step
  stopped_early = False
  try:
    # Periodic evaluations finish; the step is saved, then the loop stops.
    with preemption_lib.handler() as preemption, preemption.deferred():
      batches = task.train_batches(start_step)
      # Metrics since the last log line; a run stopped between two log
      # lines left them in a file, so the next line averages the same steps.
      window: list[dict[str, Any]] = metric_writers.load_window(workdir,
                                                                start_step)
      previous = None  # (step, metrics) of the step before this one
      for step in range(start_step + 1, config.num_steps + 1):
        batch = next(batches)
        if step == start_step + 1:
          task.check_batch(batch, f"training batch of step {step}")
        state, metrics = train_step(state, batch)
        window.append(metrics)
        # Check the previous step while this one runs (one step in flight).
        if previous is not None:
          step_lib.check_finite_step(*previous, ckpt)
        previous = (step, metrics)
        if step == start_step + 1:
          jax.block_until_ready(metrics["loss"])
          progress.reset_clock(step)
        if step % config.log_every_steps == 0 or step == config.num_steps:
          step_lib.check_finite_step(step, metrics, ckpt)
          # Only the scalars cross to the host; the per-leaf finiteness flags
          # are read just when a non-finite step is being reported.
          history = [_scalars(h) for h in jax.device_get(
              [{k: v for k, v in m.items() if k != "finite_grad_leaves"}
               for m in window])]
          scalars = {k: float(np.mean([h[k] for h in history]))
                     for k in history[-1]}
          scalars["examples_per_s"], _ = progress.rates(step)
          writer.write(step, scalars, "train")
          progress.update(step, {k: scalars[k] for k in task.progress_keys
                                 if k in scalars})
          window = []
        for name, (evaluator, every) in evaluators.items():
          if every and (step % every == 0 or step == config.num_steps):
            step_lib.check_finite_step(step, metrics, ckpt)
            for split, row in evaluator.run(
                step_lib.eval_params(state)).items():
              writer.write(step, row, f"{name}/{split}")
              progress.note(metric_writers.eval_line(step, name, split, row))
        if ckpt.should_save(step, config.num_steps):
          step_lib.check_finite_step(step, metrics, ckpt)
          ckpt.save(step, step_lib.checkpoint_tree(state))
        if preemption.should_stop(step) or step == stop_at:
          step_lib.check_finite_step(step, metrics, ckpt)
          if jax.process_index() == 0:
            metric_writers.save_window(workdir, step, jax.device_get(
                [{k: v for k, v in m.items() if k != "finite_grad_leaves"}
                 for m in window]))
          ckpt.save(step, step_lib.checkpoint_tree(state))
          ckpt.wait()
          logging.warning("Stopped early: saved the checkpoint of step %d "
                          "in %s; run the same command to resume.", step,
                          ckpt.directory)
          stopped_early = True
          break
      ckpt.wait()
  finally:
    progress.close()
    ckpt.close()

  if stopped_early:
    writer.close()
    return {"step": step, "preempted": True}

  final_step = int(jax.device_get(state.step))
  where = (f"after saving the checkpoint of step {final_step}, before the "
           "final evaluation")
  try:
    preemption_lib.check(where)
    where = (f"during the final evaluation (the checkpoint of step "
             f"{final_step} is saved)")
    out = task.final_evaluation(step_lib.eval_params(state), final_step)
    for split, row in out.get("results", {}).items():
      writer.write(final_step, _flat_scalars(row), f"final/{split}")
  except preemption_lib.Preempted:
    raise preemption_lib.Preempted(
        f"Stopped by SIGTERM {where}; run the same command to continue.",
        final_step) from None
  finally:
    writer.close()
  out = {"step": final_step, **out}
  if jax.process_index() == 0:
    workdir_lib.write_json_atomic(os.path.join(workdir, "results.json"), out)
  out["params"] = step_lib.eval_params(state)
  return out


def _state_layout(config, task, tx, replicated):
  """`(init_state fn, init key, abstract state, state sharding)`."""

  def init_state(key):
    params = task.init_params(key)
    model_state = (task.init_model_state(key)
                   if hasattr(task, "init_model_state") else {})
    return step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=tx.init(params),
                               model_state=model_state)

  init_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x1417)
  try:
    abstract = jax.eval_shape(init_state, init_key)
  except (ValueError, TypeError) as e:
    reason = " ".join(str(e).split("\n---")[0].split())
    raise config_lib.ConfigError(
        f"config.model ({config.model.get('name')!r}) cannot be built for "
        f"{task.name}: {reason}") from None
  mesh = replicated.mesh
  if runtime.fsdp_size(config) != dict(zip(mesh.axis_names, mesh.devices.shape)
                                       ).get(runtime.FSDP_AXIS, 1):
    raise config_lib.ConfigError(
        f"config.mesh.fsdp={runtime.fsdp_size(config)} is not supported by "
        f"trainer {config.get('trainer')!r}; only 'classification' shards "
        "parameters (use mesh.fsdp=1).")
  state_sharding = runtime.state_shardings(abstract, mesh)
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, state_sharding)
  return init_state, init_key, abstract, state_sharding


def restore_trained(config: ml_collections.ConfigDict, workdir: str,
                    task: step_lib.Task) -> tuple[Any, int]:
  """`(params, step)` of the newest readable checkpoint of a finished or
  stopped run in `workdir` (for analysis, fine-tuning, evaluation); `params`
  as `step_lib.eval_params` gives
  them (`StatefulParams` for models with state).

  Raises:
    CheckpointError: there is no checkpoint, or none matches the model.
  """
  tx, _ = optim.make_optimizer(config.optimizer, config.batch_size,
                               config.num_steps)
  replicated = NamedSharding(task.batch_sharding.mesh, P())
  _, _, abstract, _ = _state_layout(config, task, tx, replicated)
  # keep: never delete anything from a run we only read.
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 0,
                                    keep=2**31 - 1, async_save=False)
  try:
    restored = ckpt.restore_latest(step_lib.checkpoint_tree(abstract))
  finally:
    ckpt.close()
  if restored is None:
    raise checkpointing.CheckpointError(
        f"{workdir} holds no checkpoint; train it first with python -m "
        f"crl.main --config=... --workdir={workdir}.")
  tree, step = restored
  return step_lib.eval_params(step_lib.TrainState(**tree)), step


def _flat_scalars(row: Mapping[str, Any]) -> dict[str, float]:
  """The numeric entries of a result row (nested dicts become 'a/b')."""
  flat = {}
  for k, v in row.items():
    if isinstance(v, Mapping):
      flat.update({f"{k}/{kk}": vv for kk, vv in _flat_scalars(v).items()})
    elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
      flat[k] = float(v)
  return flat
