"""The population's train step and its per-member data.

Holds what one compiled step of a population (`crl.population`) needs:
which configs can share a step (`group_key`), the values that differ between
members as data (`member_hparams`, `trainable_mask`, a member's task data)
and the step itself (`make_population_step`), which runs the single run's
step (`crl.train`: same loss, gradient accumulation, AdamW, schedule) on
every member. The loop, checkpoints and run directories are in
`crl.population` and `crl.population_io`.

Layouts of the step over the member axis (`layout`, `member_chunk`):
  * `vmap`: gradients and AdamW update batched with `jax.vmap` (parameters
    `[members, ...]`, batched matmuls, grouped convolutions): one kernel per
    op for all members, what accelerators want (the default there).
  * `vmap_grads`: batched gradients, then the single run's update on each
    member's slice (XLA fuses a vmapped AdamW differently: ~1e-9 apart after
    one step); bitwise equal to single runs where the batched gradient is
    (ViT; not NAC).
  * `per_member` (the default on the CPU): each member's own gradient and
    update, unrolled in the one program: the single run's operations, so
    the same bits, for every model.
  * `member_chunk = k` with batched gradients: `jax.lax.map(...,
    batch_size=k)`, a loop over chunks of k vmapped members (bounds memory;
    inside a loop XLA compiles the gradient differently, not bitwise).
Values every member shares are Python constants in the step as in the
single run (`shared_constants`), not traced data.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from crl import checkpointing
from crl import config_lib
from crl import optim
from crl import runtime
from crl import train_step

MEMBER_AXIS = "member"
# Config keys that a population varies per member as data (see
# `member_hparams`) or that do not change what is trained.
_DATA_KEYS = ("seed", "num_steps", "augment", "trainable", "checkpoint",
              "log_every_steps", "tensorboard", "evals", "final_eval",
              "eval_batch_size", "xla_fast_compile")
_DATA_OPT_KEYS = ("base_learning_rate", "warmup_steps",
                  "end_learning_rate_factor", "weight_decay")
# Top-level parameter names of the classification heads (`trainable="head"`).
HEAD_PARAMS = ("classifier", "head_norm", "encoder_norm", "confidence")


def group_key(config: ml_collections.ConfigDict) -> str:
  """Members with equal keys can be trained in one program."""
  plain = {k: v for k, v in config_lib.to_plain(config).items()
           if k not in _DATA_KEYS}
  plain["optimizer"] = {k: v for k, v in plain.get("optimizer", {}).items()
                        if k not in _DATA_OPT_KEYS}
  return json.dumps(plain, sort_keys=True, default=str)


def trainable_mask(params: Any, which: str) -> Any:
  """1.0 for trainable leaves, 0.0 for frozen ones (`which`: all | head)."""
  if which not in ("all", "head"):
    raise config_lib.ConfigError(
        f"config.trainable={which!r}; expected 'all' or 'head'.")

  def one(path, _):
    top = checkpointing.path_name(path).split("/")[0]
    return 1.0 if which == "all" or top in HEAD_PARAMS else 0.0
  return jax.tree_util.tree_map_with_path(one, params)


def member_hparams(config: ml_collections.ConfigDict,
                   task_data: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
  """The per-member data of the population step (host values).

  Args:
    config: the member's config.
    task_data: attributes of the task that the step sets per member to these
      (traced) values, e.g. `{"augment": member_augment.augment_flags(...)}`; the
      trainer that made the task knows them (`crl.population.Member`).
  """
  return {**optim.optimizer_hparams(config.optimizer, config.batch_size,
                                    config.num_steps),
          "seed": np.int32(config.seed),
          "num_steps": np.int32(config.num_steps),
          "label_smoothing": float(config.loss.label_smoothing),
          "task": dict(task_data or {})}


def shared_constants(hparams: list[dict[str, Any]]) -> dict[str, Any]:
  """The scalar hyperparameters that every member has the same value of.

  The step uses them as Python constants, as the single run's step does,
  rather than as traced per-member data: e.g. `optax.smooth_labels` divides
  a Python float in float64 but a traced one in float32, one rounding apart.
  """
  first, out = hparams[0], {}
  for key, value in first.items():
    if isinstance(value, (int, float, np.integer, np.floating)) and all(
        np.asarray(h[key]).item() == np.asarray(value).item()
        for h in hparams):
      out[key] = np.asarray(value).item()
  return out


LAYOUTS = ("vmap", "vmap_grads", "per_member")


def default_layout() -> str:
  """`per_member` on the CPU (bitwise equal to single runs, and batching
  does not pay on CPU cores: crl.bench --population), `vmap` on
  accelerators."""
  return "per_member" if jax.default_backend() == "cpu" else "vmap"


def make_population_step(task: Any, opt: ml_collections.ConfigDict,
                         member_chunk: int | None = None,
                         grad_accum_steps: int = 1,
                         constants: dict[str, Any] | None = None,
                         layout: str | None = None):
  """`(state, hp, failed_at, batch) -> (state, failed_at, metrics)`, all
  stacked on the member axis `[members, ...]`; to be jitted by the caller.

  `failed_at[i]` is 0 while member i is healthy, else the step whose update
  was non-finite; such a member and one past `hp['num_steps']` keep their
  state unchanged.

  Args:
    task: the task whose `loss` every member runs (with its `hp['task']`).
    opt: the optimizer config the members share (structure).
    member_chunk: with vmapped gradients, members vmapped at once (module
      docstring); None: all.
    grad_accum_steps: micro-batches per step, as `train_step.make_train_step`'s.
    constants: values of `hp` that every member shares
      (`shared_constants`), used in place of the traced ones.
    layout: `vmap` (gradients and optimizer update batched over members),
      `vmap_grads` (batched gradients, the single run's update on each
      member's slice: XLA fuses a vmapped AdamW differently, ~1e-9 apart
      after a step) or `per_member` (the single run's gradient and update
      on each member's slice, unrolled in the one program: bitwise equal to
      single runs for every model; batched NAC gradients are not); default
      `default_layout()`.
  """
  layout = layout or default_layout()
  if layout not in LAYOUTS:
    raise config_lib.ConfigError(
        f"layout={layout!r}; expected one of {', '.join(LAYOUTS)}.")
  if member_chunk is not None and (not isinstance(member_chunk, int) or
                                   member_chunk < 1):
    raise config_lib.ConfigError(
        f"member_chunk={member_chunk!r}; expected a positive integer (members "
        "vmapped at once) or None (all of them).")

  def with_constants(hp):
    return {**hp, **(constants or {})}

  def member_grads(state, hp, batch):
    hp = with_constants(hp)
    view = copy.copy(task)  # this member's objective, traced values
    view.label_smoothing = hp["label_smoothing"]
    for name, value in hp.get("task", {}).items():
      setattr(view, name, value)
    rngs = runtime.step_rngs(hp["seed"], state.step)
    return runtime.loss_and_grads(view.loss, state.params, batch, rngs, None,
                                  grad_accum_steps)

  def member_update(state, hp, grads):
    hp = with_constants(hp)
    tx, _ = optim.build_optimizer(opt, hp)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u, k: u * k.astype(u.dtype), updates,
                           hp["trainable"])
    return optax.apply_updates(state.params, updates), opt_state

  def member_finish(state, hp, failed_at, loss, task_metrics, grads, params,
                    opt_state):
    hp = with_constants(hp)
    _, schedule = optim.build_optimizer(opt, hp)
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    active = (state.step < hp["num_steps"]) & (failed_at == 0)
    new = state.replace(step=state.step + 1, params=params,
                        opt_state=opt_state)
    keep = active & finite
    state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
    failed_at = jnp.where(active & ~finite, new.step, failed_at)
    metrics = {**task_metrics, "loss": loss,
               "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(new.step - 1), "active": active}
    return state, failed_at, metrics

  def each(fn, trees, n):
    """`fn` on each member's slice, unrolled; results stacked."""
    outs = [fn(*(jax.tree.map(lambda x, i=i: x[i], t) for t in trees))
            for i in range(n)]
    return jax.tree.map(lambda *x: jnp.stack(x), *outs)

  def grads_all(state, hp, batch):
    if layout == "per_member":
      return each(member_grads, (state, hp, batch), state.step.shape[0])
    if member_chunk is None:
      return jax.vmap(member_grads)(state, hp, batch)
    return jax.lax.map(lambda a: member_grads(*a), (state, hp, batch),
                       batch_size=None if member_chunk == 1 else member_chunk)

  def step(state, hp, failed_at, batch):
    (loss, task_metrics), grads = grads_all(state, hp, batch)
    if layout == "vmap":
      params, opt_state = jax.vmap(member_update)(state, hp, grads)
    else:
      params, opt_state = each(member_update, (state, hp, grads),
                               failed_at.shape[0])
    return jax.vmap(member_finish)(state, hp, failed_at, loss, task_metrics,
                                   grads, params, opt_state)

  return step
