"""Classification under a demographic-parity penalty, and the two-headed task.

`FairClassificationTask` trains `config.model` on a dataset whose batches
carry the protected attribute ('group', int32 `[B]`) with

    loss = CE(logits, y) + lambda * penalty(gap)

where the gap is that of the mean scores `sigma(z)` (`z = logit_1 - logit_0`,
the binary margin) between the groups present in the batch:
`max_g mean_{s=g} sigma(z) - min_g mean_{s=g} sigma(z)`, which for a binary
attribute is `|mean_{s=1} - mean_{s=0}|`; `penalty` is its square
('squared') or itself ('absolute'), and 0 for a batch that holds one group
(the datasets stratify batches on the attribute, so that never happens).

`TwoHeadsTask` trains `crl.models.two_heads.TwoHeads` with
`(1 - w) CE(logits, y) + w * loss(group_logits, s)`, `loss` the
cross-entropy ('bce') or the squared error of the attribute probability
('mse', `group_mse`: the paper's code's `MSELoss` of `sigma(z2)`), plus the same parity penalty if lambda > 0.

Config (`config.fairness`): penalty ('squared' | 'absolute'),
penalty_weight (lambda), group_loss_weight (w), group_loss ('bce' | 'mse').
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from crl import config_lib
from crl import registry
from crl import train
from crl import runtime
from crl.data import pipeline as pipeline_lib
from crl.evaluators import classification as classification_eval
from crl.evaluators import fairness as fairness_eval
from crl.models import precision
from crl.trainers import classification
from crl.trainers import runs

PENALTIES = ("squared", "absolute")
GROUP_LOSSES = ("bce", "mse")


def fairness_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The default `config.fairness` section."""
  c = ml_collections.ConfigDict(dict(
      penalty="squared", penalty_weight=0.0, group_loss_weight=0.5,
      group_loss="bce"))
  c.update(overrides)
  return c


def group_means(scores: jax.Array, groups: jax.Array,
                num_groups: int) -> tuple[jax.Array, jax.Array]:
  """Mean score per group and whether the group is present.

  Args:
    scores: `[B]` scores.
    groups: int `[B]` attribute values in `[0, num_groups)`.
    num_groups: G (static).

  Returns:
    `(means [G], present [G] bool)`; an absent group's mean is 0.
  """
  onehot = jax.nn.one_hot(groups, num_groups, dtype=scores.dtype)  # [B, G]
  counts = jnp.einsum("bg->g", onehot)
  sums = jnp.einsum("b,bg->g", scores, onehot)
  return sums / jnp.maximum(counts, 1.), counts > 0


def parity_gap(scores: jax.Array, groups: jax.Array,
               num_groups: int) -> jax.Array:
  """`max_g - min_g` of the present groups' mean scores (0 if fewer than 2)."""
  means, present = group_means(scores, groups, num_groups)
  hi = jnp.max(jnp.where(present, means, -jnp.inf))
  lo = jnp.min(jnp.where(present, means, jnp.inf))
  return jnp.where(jnp.sum(present) >= 2, hi - lo, 0.)


def parity_penalty(scores: jax.Array, groups: jax.Array, num_groups: int,
                   kind: str = "squared") -> jax.Array:
  """The squared or absolute parity gap of `scores` (see `parity_gap`)."""
  if kind not in PENALTIES:
    raise ValueError(f"penalty must be one of {PENALTIES}, got {kind!r}.")
  gap = parity_gap(scores, groups, num_groups)
  return gap * gap if kind == "squared" else gap


def group_mse(group_logits: jax.Array, groups: jax.Array) -> jax.Array:
  """The attribute head's squared error, as the paper's code computes it.

  For a binary attribute this is `mean_i (sigma(z2_i) - s_i)^2` with
  `z2 = g_logits[:, 1] - g_logits[:, 0]`: the official `MSELoss` of the
  sigmoid of one logit. In general it is half the Brier score,
  `mean_i 0.5 * sum_g (softmax(g_logits_i)_g - 1[s_i = g])^2`; the full Brier
  score would count the binary error twice (once per class).

  Args:
    group_logits: `[B, G]` attribute logits.
    groups: int `[B]` attribute values.

  Returns:
    The scalar loss.
  """
  probs = jax.nn.softmax(group_logits)
  onehot = jax.nn.one_hot(groups, group_logits.shape[-1], dtype=probs.dtype)
  return 0.5 * jnp.mean(jnp.einsum("bg->b", (probs - onehot) ** 2))


def binary_scores(logits: jax.Array) -> jax.Array:
  """`sigma(logit_1 - logit_0)`, `[B]` (= softmax probability of class 1)."""
  if logits.shape[-1] != 2:
    raise ValueError(f"The parity penalty needs a binary classifier, got "
                     f"logits with {logits.shape[-1]} classes.")
  return jax.nn.sigmoid(logits[:, 1] - logits[:, 0])


def check_fairness_config(config: ml_collections.ConfigDict,
                          dataset: Any) -> None:
  """Raises a `ConfigError` for a fairness config that cannot run."""
  f = config.get("fairness")
  if f is None:
    raise config_lib.ConfigError("A fairness trainer needs config.fairness "
                                 "(see crl.trainers.fairness.fairness_config).")
  if f.penalty not in PENALTIES:
    raise config_lib.ConfigError(f"config.fairness.penalty must be one of "
                                 f"{PENALTIES}, got {f.penalty!r}.")
  if f.group_loss not in GROUP_LOSSES:
    raise config_lib.ConfigError(f"config.fairness.group_loss must be one of "
                                 f"{GROUP_LOSSES}, got {f.group_loss!r}.")
  if not f.penalty_weight >= 0:
    raise config_lib.ConfigError(f"config.fairness.penalty_weight must be >= "
                                 f"0, got {f.penalty_weight!r}.")
  if not 0 <= f.group_loss_weight < 1:
    raise config_lib.ConfigError(f"config.fairness.group_loss_weight must be "
                                 f"in [0, 1), got {f.group_loss_weight!r}.")
  if "group" not in getattr(dataset, "batch_keys", ()):
    raise config_lib.ConfigError(
        f"config.data ({config.data.name!r}) has no protected attribute: a "
        "fairness trainer needs a dataset whose batches carry 'group' "
        "(fair_tabular, fair_shapes, celeba, fairface).")
  if dataset.num_classes != 2:
    raise config_lib.ConfigError(
        f"config.data ({config.data.name!r}) has {dataset.num_classes} "
        "classes; the parity penalty and the fairness metrics need a binary "
        "target.")


def _made(shared: runs.Shared | None, key: Any, make: Any) -> Any:
  """`make()`, or the study's item of `key` when `shared` is given."""
  return make() if shared is None else shared.get(key, make)


def input_pipeline(dataset: Any, mesh: jax.sharding.Mesh, batch_size: int,
                   eval_batch_size: int, shared: runs.Shared | None = None
                   ) -> pipeline_lib.InputPipeline:
  """The `InputPipeline` of (dataset, mesh, batch sizes); one per study
  when the study passes its `shared` items."""
  return _made(
      shared, ("pipeline", dataset, mesh, batch_size, eval_batch_size),
      lambda: pipeline_lib.InputPipeline(dataset, mesh, batch_size,
                                         eval_batch_size, runtime.DATA_AXIS))


def model_functions(model: Any, input_key: str, sharding: Any,
                    seed: int, shared: runs.Shared | None = None
                    ) -> dict[str, Any]:
  """Jitted `(params, batch) ->` logits / features / all heads of `model`.

  Keys: 'predict' (logits), 'features' (aux['features']), 'heads'
  ({'logits', 'features'} and 'group_logits' if the model has them). Built
  once per (model, input key, sharding, seed) of a study that passes its
  `shared` items, so that its trainings compile them once.
  """
  def make():
    rngs = runtime.eval_rngs(seed)

    def apply(params, batch):
      return model.apply({"params": params}, batch[input_key], train=False,
                         rngs=rngs)

    def heads(params, batch):
      logits, aux = apply(params, batch)
      out = {"logits": logits, "features": aux["features"]}
      if "group_logits" in aux:
        out["group_logits"] = aux["group_logits"]
      return out

    return {
        "predict": jax.jit(lambda p, b: apply(p, b)[0],
                           out_shardings=sharding),
        "features": jax.jit(lambda p, b: apply(p, b)[1]["features"],
                            out_shardings=sharding),
        "heads": jax.jit(heads, out_shardings=sharding)}
  return _made(shared, ("model", model, input_key, sharding, seed), make)


class FairClassificationTask(classification.ClassificationTask):
  """Cross-entropy plus lambda times the parity penalty (module docstring).

  `shared`: the items a study's trainings share (`crl.trainers.runs.Shared`;
  input pipeline, jitted predict functions), or None for a run of its own.
  """

  progress_keys = ("loss", "accuracy", "parity_gap", "learning_rate")

  def __init__(self, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None,
               shared: runs.Shared | None = None):
    super().__init__(config, mesh)
    check_fairness_config(config, self.dataset)
    self.num_groups = int(self.dataset.num_groups)
    self.shared = shared
    self.pipeline = input_pipeline(self.dataset, self.mesh, config.batch_size,
                                   config.eval_batch_size, shared)
    self.batch_sharding = self.pipeline.sharding
    self.bind_model(self.model)

  def bind_model(self, model: Any) -> None:
    """Sets the model and its (shared) jitted predict functions."""
    self.model = model
    fns = model_functions(model, self.input_key, self.pipeline.sharding,
                          self.config.seed, self.shared)
    self.predict_fn = fns["predict"]
    self.features_fn = fns["features"]
    self.heads_fn = fns["heads"]

  def penalty_terms(self, logits: jax.Array,
                    batch: dict[str, jax.Array]) -> tuple[jax.Array,
                                                          dict[str, Any]]:
    """`(lambda * penalty, metrics)` of one batch."""
    f = self.config.fairness
    scores = binary_scores(logits)
    gap = parity_gap(scores, batch["group"], self.num_groups)
    penalty = gap * gap if f.penalty == "squared" else gap
    return f.penalty_weight * penalty, {"parity_gap": gap,
                                        "parity_penalty": penalty}

  def objective(self, logits: jax.Array, aux: dict[str, Any],
                batch: dict[str, jax.Array]) -> tuple[jax.Array,
                                                      dict[str, Any]]:
    loss, metrics = super().objective(logits, aux, batch)
    weighted, more = self.penalty_terms(logits, batch)
    return loss + weighted, {**metrics, **more}

  def check_batch(self, batch: dict[str, jax.Array], where: str) -> None:
    super().check_batch(batch, where)
    group = batch.get("group")
    if group is None or group.shape != batch["label"].shape or (
        not jnp.issubdtype(group.dtype, jnp.integer)):
      raise pipeline_lib.DataError(
          f"{where}: a fairness batch needs 'group' int [B] (the protected "
          f"attribute), got "
          f"{None if group is None else (group.dtype, group.shape)}.")

  def make_evaluator(self, section: ml_collections.ConfigDict) -> Any:
    if section.type != "fairness":
      return super().make_evaluator(section)
    kwargs = {k: v for k, v in section.items()
              if k not in ("type", "every_steps")}
    try:
      return registry.EVALUATORS.get("fairness")(
          pipeline=self.pipeline, predict_fn=self.predict_fn,
          num_classes=self.num_classes, features_fn=self.features_fn,
          **kwargs)
    except (TypeError, ValueError) as e:
      raise config_lib.ConfigError(f"evaluator 'fairness': {e}") from e

  def final_evaluation(self, params: Any, step: int) -> dict[str, Any]:
    evaluator = getattr(self, "_final", None) or self.make_evaluator(
        self.config.final_eval)
    results = evaluator.run(params)
    if jax.process_index() == 0:
      table = (fairness_eval.format_table(results)
               if isinstance(evaluator, fairness_eval.FairnessEvaluator) else
               classification_eval.format_table(results))
      print(f"\nFinal evaluation at step {step} ({self.name}, lambda "
            f"{self.config.fairness.penalty_weight:g}):\n{table}\n",
            flush=True)
    return {"model": self.config.model.name,
            "dataset": self.config.data.name,
            "fairness": config_lib.to_plain(self.config.fairness),
            "descriptions": getattr(evaluator, "descriptions", {}),
            "conventions": getattr(evaluator, "conventions", dict)(),
            "results": results}


class TwoHeadsTask(FairClassificationTask):
  """`(1 - w) CE(y) + w * loss(s)` for `TwoHeads` (module docstring)."""

  progress_keys = ("loss", "accuracy", "group_accuracy", "learning_rate")

  def __init__(self, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None,
               shared: runs.Shared | None = None):
    if config.model.name != "two_heads":
      raise config_lib.ConfigError(
          f"The two-heads task needs config.model.name='two_heads', got "
          f"{config.model.name!r}.")
    super().__init__(config, mesh, shared)
    self.bind_model(precision.with_compute_dtype(
        config_lib.build(registry.MODELS, config.model,
                         num_classes=self.num_classes,
                         num_groups=self.num_groups),
        config.get("compute_dtype", "float32")))

  def objective(self, logits: jax.Array, aux: dict[str, Any],
                batch: dict[str, jax.Array]) -> tuple[jax.Array,
                                                      dict[str, Any]]:
    f = self.config.fairness
    w = f.group_loss_weight
    ce = classification.cross_entropy(
        logits, batch["label"], self.num_classes,
        self.config.loss.label_smoothing).mean()
    group_logits = aux["group_logits"]
    if f.group_loss == "bce":
      group_loss = optax.softmax_cross_entropy_with_integer_labels(
          group_logits, batch["group"]).mean()
    else:
      group_loss = group_mse(group_logits, batch["group"])
    reg = jnp.asarray(aux.get("reg_loss", 0.0), jnp.float32)
    weighted, more = self.penalty_terms(logits, batch)
    loss = (1. - w) * ce + w * group_loss + reg + weighted
    return loss, {
        "ce": ce, "group_loss": group_loss, "reg_loss": reg, **more,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "group_accuracy": jnp.mean(
            jnp.argmax(group_logits, -1) == batch["group"])}


def make_task(config: ml_collections.ConfigDict,
              shared: runs.Shared | None = None) -> FairClassificationTask:
  """`TwoHeadsTask` for model 'two_heads', else `FairClassificationTask`;
  `shared`: the items of the study the training belongs to, if any."""
  if config.model.name == "two_heads":
    return TwoHeadsTask(config, shared=shared)
  return FairClassificationTask(config, shared=shared)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at: int | None = None) -> dict[str, Any]:
  """One training with the parity penalty (`trainer='fair_classification'`).

  Returns:
    As `crl.train.run`: `{"step", "model", "dataset", "fairness",
    "descriptions", "results": {split: {metric: value}}, "params"}`.
  """
  train.check_config(config)
  classification.check_evals(config)
  runtime.setup_fast_compile(config)
  return train.run(config, workdir, make_task(config), stop_at)


def base_config(data: str = "fair_tabular",
                **data_overrides: Any) -> ml_collections.ConfigDict:
  """The shared part of the fairness configs (configs/fair.py, two_heads.py).

  `crl.config_base.base_config()` with a fairness dataset, an MLP, no label
  smoothing, the `fairness` section, and the fairness evaluator (with the
  attribute probe fitted on 'validation') periodically on 'test' and at the
  end on every split.
  """
  from crl import config_base  # pylint: disable=g-import-not-at-top
  c = config_base.base_config()
  c.trainer = "fair_classification"
  c.data = config_lib.component_config(registry.DATASETS, data,
                                       **data_overrides)
  c.model = config_lib.component_config(registry.MODELS, "mlp",
                                        hidden=(128, 32))
  c.fairness = fairness_config()
  c.loss.label_smoothing = 0.0
  c.batch_size = 256
  c.eval_batch_size = 1000
  c.num_steps = 2000
  c.log_every_steps = 100
  c.optimizer.base_learning_rate = 2e-3
  c.optimizer.warmup_steps = 100
  c.checkpoint.every_steps = 1000
  c.evals = ml_collections.ConfigDict(dict(
      test=dict(type="fairness", splits=("test",), probe_fit_split=None,
                every_steps=1000)))
  c.final_eval = ml_collections.ConfigDict(dict(
      type="fairness", splits="all", probe_fit_split="validation"))
  return c
