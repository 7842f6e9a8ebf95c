"""The generic training loop, shared by every trainer.

One process or many, one device or many: a `Mesh` over every device with a
single `data` axis; the global batch is sharded over it and the `TrainState`
(params, optimizer state, step) is replicated. One `jax.jit`-compiled train
step with buffer donation. The step's randomness is `fold_in(key(seed),
step)` and the data of step `t` is a pure function of `t`, so a restarted run
continues exactly where the checkpoint left it.

What is trained, on what, and how it is evaluated comes from a `Task`
(`crl.trainers.classification.ClassificationTask` for image classifiers; the
amodal-segmentation and fairness trainers bring their own); `run` does the
rest: optimizer, checkpoints and resume, preemption, non-finite checks,
metrics, periodic and final evaluation.

Workdir: `config.json`, `checkpoints/`, `metrics.jsonl`, TensorBoard events,
`results.json` (final evaluation) and `run.lock` while running.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Iterator, Mapping, Protocol

from absl import logging
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from crl import checkpointing
from crl import config_lib
from crl import metric_writers
from crl import preemption as preemption_lib
from crl import registry
from crl import runtime
from crl import workdir as workdir_lib
from crl.models import precision

DATA_AXIS = "data"
# Keys whose change makes a checkpoint belong to another run.
_RUN_IDENTITY_KEYS = ("model", "seed", "batch_size")


class NonFiniteError(FloatingPointError):
  """The loss or the gradients became NaN or Inf."""


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (the data position is `step`).

  `model_state` holds the model's non-trained variable collections (e.g.
  `{'batch_stats': ...}` of BatchNorm), updated by the train step; it is `{}`
  for models without any (and in checkpoints written before it existed,
  which restore unchanged).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any = flax.struct.field(default_factory=dict)


@flax.struct.dataclass
class StatefulParams:
  """What evaluators receive for a model with `model_state`: the parameters
  and the state they are applied with (`model_variables` unpacks both)."""
  params: Any
  model_state: Any


def checkpoint_tree(state: TrainState) -> dict[str, Any]:
  """What is checkpointed of `state` (also of its abstract form): its fields,
  without an empty `model_state`, so that the checkpoints of models without
  state keep the layout of those written before the field existed (and
  both restore). `TrainState(**tree)` is the inverse."""
  tree = {"step": state.step, "params": state.params,
          "opt_state": state.opt_state}
  if state.model_state:
    tree["model_state"] = state.model_state
  return tree


def eval_params(state: TrainState) -> Any:
  """The `params` given to evaluators and `final_evaluation`: `state.params`,
  or `StatefulParams` when the model has state (BatchNorm statistics)."""
  if not state.model_state:
    return state.params
  return StatefulParams(state.params, state.model_state)


def model_variables(params: Any) -> dict[str, Any]:
  """`{'params': ..., **model_state}` for `model.apply` from what
  `eval_params` returned."""
  if isinstance(params, StatefulParams):
    return {"params": params.params, **params.model_state}
  return {"params": params}


class Evaluator(Protocol):
  """Anything with `run(params) -> {split: {metric: value}}`."""

  def run(self, params: Any) -> dict[str, dict[str, float]]:
    ...


class Task(Protocol):
  """What a trainer gives the loop.

  Attributes:
    name: what is trained on what, for log lines ("nac on causal_shapes").
    batch_sharding: the `NamedSharding` of training batches.
    progress_keys: training metrics shown on the console.
  """
  name: str
  batch_sharding: NamedSharding
  progress_keys: tuple[str, ...]

  def init_params(self, key: jax.Array) -> Any:
    """Fresh parameters (pure; traced under `eval_shape` and `jit`)."""

  # Optional, for models with state (BatchNorm): `init_model_state(key)`
  # returns the initial `model_state` (same key as `init_params`); `loss`
  # then also gets `model_state=` and returns the updated state as
  # `metrics['model_state']`.

  def loss(self, params: Any, batch: dict[str, jax.Array],
           rngs: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, Any]]:
    """`(scalar loss, {name: scalar metric})` of one training batch."""

  def train_batches(self, start_step: int) -> Iterator[dict[str, jax.Array]]:
    """The batches of steps `start_step + 1, ...`; see `InputPipeline`."""

  def check_batch(self, batch: dict[str, jax.Array], where: str) -> None:
    """Raises a `DataError` for a malformed batch (called once)."""

  def evaluators(self) -> dict[str, tuple[Evaluator, int]]:
    """Periodic evaluators, `{name: (evaluator, every_steps)}`."""

  def final_evaluation(self, params: Any, step: int) -> dict[str, Any]:
    """The final results (written to `results.json`; printed by the task)."""


# Optimizer -------------------------------------------------------------------


def decay_mask(params: Any) -> Any:
  """True for parameters that get weight decay.

  No decay on signatures (they place modules in the graph), nor on norms,
  biases and gains (every parameter with ndim <= 1).
  """
  def keep(path, x):
    return x.ndim > 1 and "signature" not in jax.tree_util.keystr(path).lower()
  return jax.tree_util.tree_map_with_path(keep, params)


def warmup_cosine(step: jax.Array, peak: jax.Array, warmup: jax.Array,
                  total: jax.Array, end_factor: jax.Array) -> jax.Array:
  """Linear warmup from 0 to `peak` over `warmup` steps, then cosine decay to
  `end_factor * peak` at step `total`; constant after.

  Every argument may be a traced array (a population trains members with
  their own peak and length in one program; see `crl.population`).
  """
  step = jnp.asarray(step, jnp.float32)
  peak, warmup, total, end_factor = (jnp.asarray(x, jnp.float32) for x in
                                     (peak, warmup, total, end_factor))
  warm = peak * step / jnp.maximum(warmup, 1.0)
  decay = jnp.maximum(total - warmup, 1.0)
  t = jnp.minimum(step - warmup, decay)
  cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * t / decay))
  return jnp.where(step < warmup, warm,
                   peak * ((1.0 - end_factor) * cosine + end_factor))


def optimizer_hparams(opt: ml_collections.ConfigDict, batch_size: int,
                      num_steps: int) -> dict[str, float]:
  """The values of `opt` that a population may vary per member (as data)."""
  warmup = min(opt.warmup_steps, max(num_steps - 1, 0))
  return {"peak": opt.base_learning_rate * batch_size / opt.base_batch_size,
          "warmup": float(warmup), "total": float(max(num_steps, warmup + 1)),
          "end_factor": float(opt.end_learning_rate_factor),
          "weight_decay": float(opt.weight_decay)}


def learning_rate_schedule(opt: ml_collections.ConfigDict, batch_size: int,
                           num_steps: int) -> optax.Schedule:
  """Linear warmup to `base_learning_rate * batch_size / base_batch_size`,
  then cosine decay to `end_learning_rate_factor` of it at `num_steps`."""
  return build_optimizer(opt, optimizer_hparams(opt, batch_size,
                                                num_steps))[1]


def build_optimizer(opt: ml_collections.ConfigDict, hparams: Mapping[str, Any]
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (after optional clipping) with the `warmup_cosine` schedule.

  `hparams` (see `optimizer_hparams`) may hold traced arrays; the structure
  of the optimizer state depends only on `opt`.
  """
  h = dict(hparams)

  def schedule(count):
    return warmup_cosine(count, h["peak"], h["warmup"], h["total"],
                         h["end_factor"])

  parts = []
  if opt.clip_norm:
    parts.append(optax.clip_by_global_norm(opt.clip_norm))
  parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=h["weight_decay"], mask=decay_mask))
  return optax.chain(*parts), schedule


def make_optimizer(opt: ml_collections.ConfigDict, batch_size: int,
                   num_steps: int) -> tuple[optax.GradientTransformation,
                                            optax.Schedule]:
  return build_optimizer(opt, optimizer_hparams(opt, batch_size, num_steps))


# Steps -----------------------------------------------------------------------


def step_rngs(seed: int, step: jax.Array) -> dict[str, jax.Array]:
  """The per-step RNG streams: `fold_in(key(seed), step)`, split by name."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
  dropout, sample = jax.random.split(key)
  return {"dropout": dropout, "sample": sample}


def eval_rngs(seed: int) -> dict[str, jax.Array]:
  """Fixed streams for evaluation (used only by stochastic eval modes)."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 1)
  dropout, sample = jax.random.split(key)
  return {"dropout": dropout, "sample": sample}


def make_train_step(task: Task, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, seed: int,
                    grad_accum_steps: int = 1) -> Callable[..., Any]:
  """`(state, batch) -> (state, metrics)`, to be jitted by the caller;
  gradients over `grad_accum_steps` micro-batches (`crl.runtime`)."""

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rngs = step_rngs(seed, state.step)
    (loss, task_metrics), grads = runtime.loss_and_grads(
        task.loss, state.params, batch, rngs, state.model_state,
        grad_accum_steps)
    task_metrics = dict(task_metrics)
    model_state = task_metrics.pop("model_state", state.model_state)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite_grads = jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads)
    metrics = {
        **task_metrics,
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
        "finite_loss": jnp.isfinite(loss),
        "finite_grads": jnp.all(jnp.stack(jax.tree.leaves(finite_grads))),
        "finite_grad_leaves": finite_grads,
    }
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state, model_state=model_state)
    return new_state, metrics

  return train_step


# Setup -----------------------------------------------------------------------


def make_mesh(fsdp: int = 1) -> Mesh:
  """The (`data`, `fsdp`) mesh over every device (`crl.runtime`)."""
  return runtime.make_mesh(fsdp)


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


def check_resume_compatible(config: ml_collections.ConfigDict,
                            workdir: str) -> None:
  """Refuses to resume a workdir written by a run with another identity."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  new = config_lib.to_plain(config)
  diffs = []
  for key in _RUN_IDENTITY_KEYS:
    if key == "model":
      a = config_lib.with_component_defaults(registry.MODELS,
                                             old.get("model", {}))
      b = new.get("model", {})
      diffs += [f"model.{k}: {a.get(k)!r} -> {b.get(k)!r}"
                for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    elif old.get(key) != new.get(key):
      diffs.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
  if old.get("data", {}).get("name") != new.get("data", {}).get("name"):
    diffs.append(f"data.name: {old.get('data', {}).get('name')!r} -> "
                 f"{new['data']['name']!r}")
  if diffs:
    raise checkpointing.CheckpointError(
        f"{workdir} holds checkpoints of a run with another config; "
        "differences:\n  " + "\n  ".join(diffs) +
        "\nUse a new --workdir to train this config.")


_PREVIOUS_RUN_FILES = ("config.json", "metrics.jsonl", "results.json")


def check_no_previous_run(workdir: str) -> None:
  """Refuses a workdir with a previous run's records but no checkpoint.

  Such a run stopped before its first checkpoint was committed, or its
  checkpoints were deleted or found broken; starting again would append a
  second run to its files.
  """
  found = [f for f in _PREVIOUS_RUN_FILES
           if os.path.exists(os.path.join(workdir, f))]
  ckpt_dir = os.path.join(workdir, "checkpoints")
  broken = sorted(d for d in os.listdir(ckpt_dir)
                  if d.startswith(checkpointing.BROKEN_PREFIX)
                  ) if os.path.isdir(ckpt_dir) else []
  if broken:
    found.append(f"{len(broken)} broken checkpoint(s) in checkpoints/")
  if found:
    raise checkpointing.CheckpointError(
        f"{workdir} holds a previous run ({', '.join(found)}) but no usable "
        "checkpoint, so it cannot be resumed; nothing was changed. To start "
        "over, move that workdir away (or delete it), or use another "
        "--workdir.")


def _nonfinite_message(step: int, metrics: dict[str, Any],
                       saved: int | None) -> str:
  host = jax.device_get(metrics)
  what = []
  if not bool(host["finite_loss"]):
    what.append(f"loss = {float(host['loss'])}")
  bad = [jax.tree_util.keystr(p) for p, ok in
         jax.tree_util.tree_leaves_with_path(host["finite_grad_leaves"])
         if not bool(ok)]
  if bad:
    what.append(f"gradients of {len(bad)} parameter(s), first "
                f"{', '.join(bad[:3])}")
  if saved:
    keep = (f"The newest checkpoint (step {saved}) is kept; lower the "
            "learning rate or check the data, then rerun (it resumes there).")
  else:
    keep = ("No checkpoint was saved before it; lower the learning rate or "
            "check the data, then start over in a new --workdir.")
  return f"Non-finite values at step {step}: {'; '.join(what)}. {keep}"


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if k not in ("finite_loss", "finite_grads", "finite_grad_leaves")}


def run(config: ml_collections.ConfigDict, workdir: str, task: Task,
        stop_at: int | None = None) -> dict[str, Any]:
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
  tx, schedule = make_optimizer(config.optimizer, config.batch_size,
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
    check_no_previous_run(workdir)  # before anything is written
  ckpt = checkpointing.Checkpointer(
      ckpt_dir, config.checkpoint.every_steps, config.checkpoint.keep,
      async_save=config.checkpoint.async_save)
  if ckpt.steps():
    check_resume_compatible(config, workdir)
  if jax.process_count() > 1:
    # Every process has read the old config.json before process 0 replaces it.
    multihost_utils.sync_global_devices("crl:config_checked")
  if jax.process_index() == 0:
    workdir_lib.write_json_atomic(os.path.join(workdir, "config.json"),
                                  config_lib.to_plain(config), sort_keys=True)

  restored = ckpt.restore_latest(checkpoint_tree(abstract))
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
    state = TrainState(**tree)
    logging.info("Resumed from the checkpoint at step %d.", step)
  start_step = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    metric_writers.drop_rows_after(workdir, start_step)

  train_step = jax.jit(
      make_train_step(task, tx, schedule, config.seed,
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
          _check_finite_step(*previous, ckpt)
        previous = (step, metrics)
        if step == start_step + 1:
          jax.block_until_ready(metrics["loss"])
          progress.reset_clock(step)
        if step % config.log_every_steps == 0 or step == config.num_steps:
          _check_finite_step(step, metrics, ckpt)
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
            _check_finite_step(step, metrics, ckpt)
            for split, row in evaluator.run(eval_params(state)).items():
              writer.write(step, row, f"{name}/{split}")
              progress.note(metric_writers.eval_line(step, name, split, row))
        if ckpt.should_save(step, config.num_steps):
          _check_finite_step(step, metrics, ckpt)
          ckpt.save(step, checkpoint_tree(state))
        if preemption.should_stop(step) or step == stop_at:
          _check_finite_step(step, metrics, ckpt)
          if jax.process_index() == 0:
            metric_writers.save_window(workdir, step, jax.device_get(
                [{k: v for k, v in m.items() if k != "finite_grad_leaves"}
                 for m in window]))
          ckpt.save(step, checkpoint_tree(state))
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
    out = task.final_evaluation(eval_params(state), final_step)
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
  out["params"] = eval_params(state)
  return out


def _state_layout(config, task, tx, replicated):
  """`(init_state fn, init key, abstract state, state sharding)`."""

  def init_state(key):
    params = task.init_params(key)
    model_state = (task.init_model_state(key)
                   if hasattr(task, "init_model_state") else {})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), model_state=model_state)

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
                    task: Task) -> tuple[Any, int]:
  """`(params, step)` of the newest readable checkpoint of a finished or
  stopped run in `workdir` (for analysis, fine-tuning, evaluation); `params`
  as `eval_params` gives them (`StatefulParams` for models with state).

  Raises:
    CheckpointError: there is no checkpoint, or none matches the model.
  """
  tx, _ = make_optimizer(config.optimizer, config.batch_size,
                         config.num_steps)
  replicated = NamedSharding(task.batch_sharding.mesh, P())
  _, _, abstract, _ = _state_layout(config, task, tx, replicated)
  # keep: never delete anything from a run we only read.
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 0,
                                    keep=2**31 - 1, async_save=False)
  try:
    restored = ckpt.restore_latest(checkpoint_tree(abstract))
  finally:
    ckpt.close()
  if restored is None:
    raise checkpointing.CheckpointError(
        f"{workdir} holds no checkpoint; train it first with python -m "
        f"crl.main --config=... --workdir={workdir}.")
  tree, step = restored
  return eval_params(TrainState(**tree)), step


def _flat_scalars(row: Mapping[str, Any]) -> dict[str, float]:
  """The numeric entries of a result row (nested dicts become 'a/b')."""
  flat = {}
  for k, v in row.items():
    if isinstance(v, Mapping):
      flat.update({f"{k}/{kk}": vv for kk, vv in _flat_scalars(v).items()})
    elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
      flat[k] = float(v)
  return flat


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at: int | None = None) -> dict[str, Any]:
  """The classification trainer (`config.trainer = "classification"`).

  Trains `config.model` on `config.data`; see
  `crl.trainers.classification.ClassificationTask` and `run`.
  """
  from crl.trainers import classification  # pylint: disable=g-import-not-at-top
  return classification.train_and_evaluate(config, workdir, stop_at)


def _check_finite_step(step: int, metrics: dict[str, Any],
                       ckpt: checkpointing.Checkpointer | None = None) -> None:
  finite = jax.device_get((metrics["finite_loss"], metrics["finite_grads"]))
  if not all(bool(x) for x in finite):
    steps = [s for s in ckpt.steps() if s < step] if ckpt is not None else []
    raise NonFiniteError(_nonfinite_message(step, metrics,
                                            steps[-1] if steps else None))
