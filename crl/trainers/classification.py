"""Image (or feature-vector) classification: the task behind most configs.

`config.model` on `config.data` with label-smoothed cross-entropy plus the
model's own regulariser (`aux['reg_loss']`); evaluators named in
`config.evals` run periodically and `config.final_eval` at the end, whose
table is printed and written to `results.json`.

The model call convention is `logits, aux = model.apply({'params': p},
batch[input_key], train=bool, rngs={'dropout', 'sample'})`; a model with
`has_state` (BatchNorm's `batch_stats`) is applied with its state, mutable
in training (`crl.train_step.TrainState.model_state`); datasets name
their input (`input_key`, default 'image', and `input_shape`, default
`image_shape`).
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import optax

from crl import config_lib
from crl import registry
from crl import runtime
from crl import train
from crl import train_step
from crl.data import pipeline as pipeline_lib
from crl.evaluators import classification
from crl.models import precision


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float) -> jax.Array:
  """Per-example cross-entropy with label smoothing, `[batch]`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes),
                                label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def build_dataset(config: ml_collections.ConfigDict) -> Any:
  """The registered dataset `config.data` names."""
  return config_lib.build(registry.DATASETS, config.data)


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> Any:
  """The registered model `config.model` names, for `num_classes`, in the
  compute dtype of `config.compute_dtype`."""
  return precision.with_compute_dtype(
      config_lib.build(registry.MODELS, config.model, num_classes=num_classes),
      config.get("compute_dtype", "float32"))


def input_spec(dataset: Any) -> tuple[str, tuple[int, ...]]:
  """`(batch key of the model input, its per-example shape)`."""
  key = getattr(dataset, "input_key", "image")
  shape = getattr(dataset, "input_shape", None) or dataset.image_shape
  return key, tuple(shape)


def check_evals(config: ml_collections.ConfigDict) -> None:
  """One-line `ConfigError` for a `config.evals` section naming no known
  evaluator."""
  for name, section in config.get("evals", {}).items():
    if "type" not in section or section.type not in registry.EVALUATORS:
      raise config_lib.ConfigError(
          f"config.evals.{name}.type={section.get('type')!r} is not a known "
          f"evaluator; known: {', '.join(registry.EVALUATORS.names())}.")


class ClassificationTask:
  """Cross-entropy training of a registered model on a registered dataset.

  Subclasses change the objective by overriding `objective` (e.g. a fairness
  penalty that reads other batch keys).
  """

  progress_keys = ("loss", "accuracy", "learning_rate")

  def __init__(self, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None):
    self.config = config
    self.dataset = build_dataset(config)
    self.num_classes = self.dataset.num_classes
    self.model = build_model(config, self.num_classes)
    self.input_key, self.input_shape = input_spec(self.dataset)
    self.mesh = (mesh if mesh is not None
                 else runtime.make_mesh(runtime.fsdp_size(config)))
    self.pipeline = pipeline_lib.InputPipeline(
        self.dataset, self.mesh, config.batch_size, config.eval_batch_size,
        runtime.batch_axes(self.mesh))
    self.batch_sharding = self.pipeline.sharding
    self.name = f"{config.model.name} on {config.data.name}"
    # An attribute, not a config read in `objective`: a population sets it
    # per member to a traced value (crl.population).
    self.label_smoothing = config.loss.label_smoothing
    rngs = runtime.eval_rngs(config.seed)
    self.predict_fn = jax.jit(
        lambda params, batch: self.model.apply(
            train_step.model_variables(params), batch[self.input_key],
            train=False, rngs=rngs)[0],
        out_shardings=self.pipeline.sharding)

  # Training ------------------------------------------------------------------

  def _init_variables(self, key: jax.Array) -> dict[str, Any]:
    dummy = jnp.zeros((2, *self.input_shape), jnp.float32)
    k_params, k_sample, k_dropout = jax.random.split(key, 3)
    return self.model.init({"params": k_params, "sample": k_sample,
                            "dropout": k_dropout}, dummy, train=False)

  def init_params(self, key: jax.Array) -> Any:
    return self._init_variables(key)["params"]

  def init_model_state(self, key: jax.Array) -> dict[str, Any]:
    """The model's other variable collections (BatchNorm's `batch_stats`);
    `{}` unless the model says it has some (`model.has_state`)."""
    if not getattr(self.model, "has_state", False):
      return {}
    return {k: v for k, v in self._init_variables(key).items()
            if k != "params"}

  def loss(self, params: Any, batch: dict[str, jax.Array],
           rngs: dict[str, jax.Array], model_state: Any = None
           ) -> tuple[jax.Array, dict[str, Any]]:
    if not model_state:
      logits, aux = self.model.apply({"params": params},
                                     batch[self.input_key], train=True,
                                     rngs=rngs)
      return self.objective(logits, aux, batch)
    (logits, aux), new_state = self.model.apply(
        {"params": params, **model_state}, batch[self.input_key], train=True,
        rngs=rngs, mutable=list(model_state))
    loss, metrics = self.objective(logits, aux, batch)
    return loss, {**metrics, "model_state": new_state}

  def objective(self, logits: jax.Array, aux: dict[str, Any],
                batch: dict[str, jax.Array]) -> tuple[jax.Array,
                                                      dict[str, Any]]:
    """Loss and metrics from the model's outputs on a training batch."""
    ce = cross_entropy(logits, batch["label"], self.num_classes,
                       self.label_smoothing).mean()
    reg = jnp.asarray(aux.get("reg_loss", 0.0), jnp.float32)
    return ce + reg, {
        "ce": ce, "reg_loss": reg,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

  def train_batches(self, start_step: int) -> Iterator[dict[str, jax.Array]]:
    return self.pipeline.train_batches(start_step)

  def check_batch(self, batch: dict[str, jax.Array], where: str) -> None:
    pipeline_lib.check_batch(batch, self.input_shape, self.num_classes, where,
                             input_key=self.input_key)

  # Evaluation ----------------------------------------------------------------

  def make_evaluator(self, section: ml_collections.ConfigDict) -> Any:
    kwargs = {k: v for k, v in section.items()
              if k not in ("type", "every_steps")}
    try:
      return registry.EVALUATORS.get(section.type)(
          pipeline=self.pipeline, predict_fn=self.predict_fn,
          num_classes=self.num_classes, **kwargs)
    except (TypeError, ValueError) as e:
      raise config_lib.ConfigError(f"evaluator {section.type!r}: {e}") from e

  def evaluators(self) -> dict[str, tuple[Any, int]]:
    check_evals(self.config)
    self._final = self.make_evaluator(self.config.final_eval)
    return {name: (self.make_evaluator(s), s.every_steps)
            for name, s in self.config.get("evals", {}).items()}

  def final_evaluation(self, params: Any, step: int) -> dict[str, Any]:
    evaluator = getattr(self, "_final", None) or self.make_evaluator(
        self.config.final_eval)
    results = evaluator.run(params)
    if jax.process_index() == 0:
      table = classification.format_table(results)
      print(f"\nFinal evaluation at step {step} ({self.name}):\n{table}\n",
            flush=True)
    return {"model": self.config.model.name,
            "dataset": self.config.data.name,
            "descriptions": getattr(evaluator, "descriptions", {}),
            "conventions": getattr(evaluator, "conventions", dict)(),
            "results": results}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at: int | None = None,
                       task_cls: Any = None) -> dict[str, Any]:
  """Trains `config.model` on `config.data` in `workdir`; returns results.

  Args:
    config: the experiment config.
    workdir: the run directory; an existing checkpoint there is resumed.
    stop_at: stop after this step with a checkpoint, as if preempted.
    task_cls: the task class (default `ClassificationTask`; the
      `augmented_classification` trainer passes one that augments).

  Returns:
    `{"step", "model", "dataset", "descriptions", "conventions": {metric:
    how it is computed}, "results": {split: {metric: value}}, "params"}`;
    all but `params` also in `results.json`.
  """
  train.check_config(config)
  check_evals(config)
  runtime.setup_fast_compile(config)
  return train.run(config, workdir, (task_cls or ClassificationTask)(config),
                   stop_at)
