"""The generic training loop for image classifiers.

One process or many, one device or many: a `Mesh` over every device with a
single `data` axis; the global batch is sharded over it and the `TrainState`
(params, optimizer state, step) is replicated. One `jax.jit`-compiled train
step with buffer donation. The step's randomness is `fold_in(key(seed),
step)` and the data of step `t` is a pure function of `t`, so a restarted run
continues exactly where the checkpoint left it.

Workdir: `config.json`, `checkpoints/`, `metrics.jsonl`, TensorBoard events,
`results.json` (final evaluation) and `run.lock` while running.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Callable

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
from crl import registry
from crl import workdir as workdir_lib
from crl.data import pipeline as pipeline_lib
from crl.evaluators import classification

DATA_AXIS = "data"
# Keys whose change makes a checkpoint belong to another run.
_RUN_IDENTITY_KEYS = ("model", "seed", "batch_size")


class NonFiniteError(FloatingPointError):
  """The loss or the gradients became NaN or Inf."""


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (the data position is `step`)."""
  step: jax.Array
  params: Any
  opt_state: Any


# Optimizer -------------------------------------------------------------------


def decay_mask(params: Any) -> Any:
  """True for parameters that get weight decay.

  No decay on signatures (they place modules in the graph), nor on norms,
  biases and gains (every parameter with ndim <= 1).
  """
  def keep(path, x):
    return x.ndim > 1 and "signature" not in jax.tree_util.keystr(path).lower()
  return jax.tree_util.tree_map_with_path(keep, params)


def learning_rate_schedule(opt: ml_collections.ConfigDict, batch_size: int,
                           num_steps: int) -> optax.Schedule:
  """Linear warmup to `base_learning_rate * batch_size / base_batch_size`,
  then cosine decay to `end_learning_rate_factor` of it at `num_steps`."""
  peak = opt.base_learning_rate * batch_size / opt.base_batch_size
  warmup = min(opt.warmup_steps, max(num_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(num_steps, warmup + 1),
      end_value=peak * opt.end_learning_rate_factor)


def make_optimizer(opt: ml_collections.ConfigDict, batch_size: int,
                   num_steps: int) -> tuple[optax.GradientTransformation,
                                            optax.Schedule]:
  schedule = learning_rate_schedule(opt, batch_size, num_steps)
  parts = []
  if opt.clip_norm:
    parts.append(optax.clip_by_global_norm(opt.clip_norm))
  parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay, mask=decay_mask))
  return optax.chain(*parts), schedule


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


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float) -> jax.Array:
  """Per-example cross-entropy with label smoothing, `[batch]`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes),
                                label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def make_train_step(model: Any, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, config: ml_collections.ConfigDict,
                    num_classes: int) -> Callable[..., Any]:
  """`(state, batch) -> (state, metrics)`, to be jitted by the caller."""

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rngs = step_rngs(config.seed, state.step)

    def loss_fn(params):
      logits, aux = model.apply({"params": params}, batch["image"], train=True,
                                rngs=rngs)
      ce = cross_entropy(logits, batch["label"], num_classes,
                         config.loss.label_smoothing).mean()
      reg = jnp.asarray(aux.get("reg_loss", 0.0), jnp.float32)
      return ce + reg, (ce, reg, logits)

    (loss, (ce, reg, logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite_grads = jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads)
    metrics = {
        "loss": loss, "ce": ce, "reg_loss": reg,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
        "finite_loss": jnp.isfinite(loss),
        "finite_grads": jnp.all(jnp.stack(jax.tree.leaves(finite_grads))),
        "finite_grad_leaves": finite_grads,
    }
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state)
    return new_state, metrics

  return train_step


# Setup -----------------------------------------------------------------------


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis `data`."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def build_dataset(config: ml_collections.ConfigDict) -> Any:
  return config_lib.build(registry.DATASETS, config.data)


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> Any:
  return config_lib.build(registry.MODELS, config.model,
                          num_classes=num_classes)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks that need no dataset or model; raises `ConfigError`."""
  for key in ("num_steps", "batch_size", "eval_batch_size", "log_every_steps"):
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
      raise config_lib.ConfigError(
          f"config.{key} must be a positive integer, got {value!r}.")
  n = jax.device_count()
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % n:
      raise config_lib.ConfigError(
          f"config.{key}={config[key]} is not divisible by the {n} devices; "
          f"use a multiple of {n}.")
  for name, section in config.get("evals", {}).items():
    if "type" not in section or section.type not in registry.EVALUATORS:
      raise config_lib.ConfigError(
          f"config.evals.{name}.type={section.get('type')!r} is not a known "
          f"evaluator; known: {', '.join(registry.EVALUATORS.names())}.")


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
      a, b = old.get("model", {}), new.get("model", {})
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


class _Preemption:
  """Turns SIGTERM into a flag checked once per step (single process).

  With several processes, JAX's coordination service decides at which step
  every process saves (`multihost_utils.reached_preemption_sync_point`).
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: finishing the step, then saving.")
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _nonfinite_message(step: int, metrics: dict[str, Any]) -> str:
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
  return (f"Non-finite values at step {step}: {'; '.join(what)}. The last "
          "good checkpoint is kept; lower the learning rate, check the data, "
          "or resume from it.")


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if k not in ("finite_loss", "finite_grads", "finite_grad_leaves")}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at: int | None = None) -> dict[str, Any]:
  """Trains `config.model` on `config.data` in `workdir`; returns results.

  Args:
    config: the experiment config.
    workdir: the run directory; an existing checkpoint there is resumed.
    stop_at: if given, stop after this step with a checkpoint, as if
      preempted (the schedule still runs to `config.num_steps`); running again
      continues.

  Returns:
    `{"step": final step, "results": {split: {metric: value}}}` from the final
    evaluation, also written to `workdir/results.json`.
  """
  check_config(config)
  if config.get("xla_fast_compile", False):
    # Process-wide: small runs whose time is all compilation (tests, :tiny).
    jax.config.update("jax_disable_most_optimizations", True)
  dataset = build_dataset(config)
  model = build_model(config, dataset.num_classes)
  mesh = make_mesh()
  pipeline = pipeline_lib.InputPipeline(dataset, mesh, config.batch_size,
                                        config.eval_batch_size, DATA_AXIS)
  replicated = NamedSharding(mesh, P())
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lib.WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()
  try:
    return _run(config, workdir, dataset, model, pipeline, replicated,
                stop_at)
  finally:
    lock.release()


def _run(config, workdir, dataset, model, pipeline, replicated,
         stop_at):
  tx, schedule = make_optimizer(config.optimizer, config.batch_size,
                                config.num_steps)
  # Evaluators first: their config errors must stop the run before anything
  # is compiled or written.
  rngs = eval_rngs(config.seed)
  predict_fn = jax.jit(
      lambda params, batch: model.apply({"params": params}, batch["image"],
                                        train=False, rngs=rngs)[0],
      out_shardings=pipeline.sharding)

  def make_evaluator(section):
    kwargs = {k: v for k, v in section.items() if k not in ("type",
                                                           "every_steps")}
    try:
      return registry.EVALUATORS.get(section.type)(
          pipeline=pipeline, predict_fn=predict_fn,
          num_classes=dataset.num_classes, **kwargs)
    except (TypeError, ValueError) as e:
      raise config_lib.ConfigError(f"evaluator {section.type!r}: {e}") from e

  evaluators = {name: (make_evaluator(s), s.every_steps)
                for name, s in config.get("evals", {}).items()}
  final_evaluator = make_evaluator(config.final_eval)

  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), config.checkpoint.every_steps,
      config.checkpoint.keep, async_save=config.checkpoint.async_save)
  if ckpt.steps():
    check_resume_compatible(config, workdir)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_lib.to_plain(config), f, indent=2, sort_keys=True)

  def init_state(key):
    dummy = jnp.zeros((2, *dataset.image_shape), jnp.float32)
    k_params, k_sample, k_dropout = jax.random.split(key, 3)
    variables = model.init({"params": k_params, "sample": k_sample,
                            "dropout": k_dropout}, dummy, train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params))

  init_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x1417)
  abstract = jax.eval_shape(init_state, init_key)
  state_sharding = jax.tree.map(lambda _: replicated, abstract)
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, state_sharding)
  restored = ckpt.restore_latest(abstract)
  if restored is None:
    t0 = time.time()
    state = jax.jit(init_state, out_shardings=state_sharding)(init_key)
    logging.info("Initialised %s with %s parameters in %.1fs.",
                 config.model.name,
                 f"{sum(x.size for x in jax.tree.leaves(state.params)):,}",
                 time.time() - t0)
  else:
    state, step = restored
    logging.info("Resumed from the checkpoint at step %d.", step)
  start_step = int(jax.device_get(state.step))

  train_step = jax.jit(
      make_train_step(model, tx, schedule, config, dataset.num_classes),
      in_shardings=(state_sharding, pipeline.sharding),
      out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  writer = metric_writers.MetricWriter(workdir, config.get("tensorboard",
                                                           True))
  progress = metric_writers.Progress(config.num_steps, start_step,
                                     config.batch_size)
  step = start_step
  stopped_early = False
  try:
    with _Preemption() as preemption:
      batches = pipeline.train_batches(start_step)
      window: list[dict[str, Any]] = []  # metrics since the last log line
      previous = None  # (step, metrics) of the step before this one
      for step in range(start_step + 1, config.num_steps + 1):
        batch = next(batches)
        if step == start_step + 1:
          pipeline_lib.check_batch(batch, dataset.image_shape,
                                   dataset.num_classes,
                                   f"training batch of step {step}")
        state, metrics = train_step(state, batch)
        window.append(metrics)
        # Check the previous step while this one runs (one step in flight).
        if previous is not None:
          _check_finite_step(*previous)
        previous = (step, metrics)
        if step == start_step + 1:
          jax.block_until_ready(metrics["loss"])
          progress.reset_clock(step)
        if step % config.log_every_steps == 0 or step == config.num_steps:
          _check_finite_step(step, metrics)
          # Only the scalars cross to the host; the per-leaf finiteness flags
          # are read just when a non-finite step is being reported.
          history = [_scalars(h) for h in jax.device_get(
              [{k: v for k, v in m.items() if k != "finite_grad_leaves"}
               for m in window])]
          scalars = {k: float(np.mean([h[k] for h in history]))
                     for k in history[-1]}
          scalars["examples_per_s"], _ = progress.rates(step)
          writer.write(step, scalars, "train")
          progress.update(step, {k: scalars[k] for k in
                                 ("loss", "accuracy", "learning_rate")})
          window = []
        for name, (evaluator, every) in evaluators.items():
          if every and (step % every == 0 or step == config.num_steps):
            _check_finite_step(step, metrics)
            for split, row in evaluator.run(state.params).items():
              writer.write(step, row, f"{name}/{split}")
        if ckpt.should_save(step, config.num_steps):
          _check_finite_step(step, metrics)
          ckpt.save(step, state)
        if preemption.should_stop(step) or step == stop_at:
          _check_finite_step(step, metrics)
          ckpt.save(step, state)
          ckpt.wait()
          logging.warning("Stopped early: saved the checkpoint of step %d; "
                          "run the same command to resume.", step)
          stopped_early = True
          break
      ckpt.wait()
  finally:
    progress.close()
    ckpt.close()

  if stopped_early:
    writer.close()
    return {"step": step, "preempted": True}

  results = final_evaluator.run(state.params)
  for split, row in results.items():
    writer.write(int(jax.device_get(state.step)), row, f"final/{split}")
  writer.close()
  final_step = int(jax.device_get(state.step))
  out = {"step": final_step, "model": config.model.name,
         "dataset": config.data.name,
         "descriptions": final_evaluator.descriptions, "results": results}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(out, f, indent=2)
    table = classification.format_table(results)
    print(f"\nFinal evaluation at step {final_step} "
          f"({config.model.name} on {config.data.name}):\n{table}\n",
          flush=True)
  return out


def _check_finite_step(step: int, metrics: dict[str, Any]) -> None:
  finite = jax.device_get((metrics["finite_loss"], metrics["finite_grads"]))
  if not all(bool(x) for x in finite):
    raise NonFiniteError(_nonfinite_message(step, metrics))
