"""The training step and what it works on, shared by every loop.

`TrainState` (what changes during training) and its checkpointed form,
the `Task` a trainer gives the loop, the parameters evaluators receive
(`eval_params`, `model_variables`), the pure step `make_train_step` and
the check of its finiteness (`NonFiniteError`). The loop that runs it is
`crl.train.run`; a population vectorises the same step (`crl.population`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
import optax

from crl import checkpointing
from crl import runtime


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


def make_train_step(task: Task, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, seed: int,
                    grad_accum_steps: int = 1) -> Callable[..., Any]:
  """`(state, batch) -> (state, metrics)`, to be jitted by the caller;
  gradients over `grad_accum_steps` micro-batches (`crl.runtime`)."""

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rngs = runtime.step_rngs(seed, state.step)
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


def check_finite_step(step: int, metrics: dict[str, Any],
                      ckpt: checkpointing.Checkpointer | None = None) -> None:
  """Raises `NonFiniteError` if step `step`'s loss or gradients are not
  finite, naming them and the newest checkpoint before it in `ckpt`."""
  finite = jax.device_get((metrics["finite_loss"], metrics["finite_grads"]))
  if not all(bool(x) for x in finite):
    steps = [s for s in ckpt.steps() if s < step] if ckpt is not None else []
    raise NonFiniteError(_nonfinite_message(step, metrics,
                                            steps[-1] if steps else None))
