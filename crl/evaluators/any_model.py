"""Any classifier on the suite's shifts: `evaluate_classifier(apply_fn, params)`.

For users of other libraries (OpenOOD / RobustBench style): a model is just
`apply_fn(params, images [batch, H, W, C] float32) -> logits [batch, classes]`
and its params pytree; the result is the OOD suite's rows, one per (shift,
metric), with keys model, shift, kind, metric, value and protocol, exactly
as `configs/ood_suite.py` writes them to results.csv/json::

    rows = evaluate_classifier(apply_fn, params, dataset=ds,
                               shifts=("domain", "corruption/*/3"))

The evaluation is `crl.evaluators.ood_suite.OODSuiteEvaluator` (metrics,
shift data, protocols) driven by `crl.evaluators.suite_loop.evaluate_models`,
the suite trainer's own per-shift loop, so numbers agree with the suite's
for the same model. `evaluate_classifiers` does several models from one pass
over each shift's data.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections

from crl import config_lib
from crl import registry
from crl import runtime
from crl.data import pipeline as pipeline_lib
from crl.evaluators import ood_suite
from crl.evaluators import suite_loop

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def make_pipeline(dataset: Any, eval_batch_size: int = 64
                  ) -> pipeline_lib.InputPipeline:
  """An eval pipeline over `dataset`: a dataset object, a data ConfigDict
  (`config.data`, built through the dataset registry) or an `InputPipeline`
  (returned as is)."""
  if isinstance(dataset, pipeline_lib.InputPipeline):
    return dataset
  if isinstance(dataset, (ml_collections.ConfigDict, dict)):
    dataset = config_lib.build(registry.DATASETS,
                               ml_collections.ConfigDict(dict(dataset)))
  return pipeline_lib.InputPipeline(dataset, runtime.make_mesh(),
                                    eval_batch_size, eval_batch_size,
                                    runtime.DATA_AXIS)


def _predict_fn(apply_fn: ApplyFn, input_key: str) -> Callable[..., Any]:
  return jax.jit(lambda params, batch: apply_fn(params, batch[input_key]))


def evaluate_classifiers(models: Mapping[str, tuple[ApplyFn, Any]], *,
                         dataset: Any, shifts: Sequence[str] | str = "all",
                         eval_batch_size: int = 64, **options: Any
                         ) -> list[dict[str, Any]]:
  """Rows of several models on the ID split and the selected shifts.

  Args:
    models: `{name: (apply_fn, params)}`.
    dataset: see `make_pipeline`; its label space is the models' classes.
    shifts: a shift-registry selection (names, kinds, globs or "all").
    eval_batch_size: examples per evaluation step (a multiple of the device
      count).
    **options: other `OODSuiteEvaluator` arguments (ece_bins, severities,
      scores, id_split, corruption_seed, temperature).

  Returns:
    `[{model, shift, kind, metric, value, protocol}]`, model by model.
  """
  if not models:
    raise ValueError("evaluate_classifiers needs at least one model.")
  pipeline = make_pipeline(dataset, eval_batch_size)
  key = getattr(pipeline.dataset, "input_key", "image")
  evaluator = ood_suite.OODSuiteEvaluator(
      pipeline=pipeline, predict_fn=None,
      num_classes=pipeline.dataset.num_classes, shifts=shifts, **options)
  wrapped = {name: (params, _predict_fn(fn, key))
             for name, (fn, params) in models.items()}
  results = suite_loop.evaluate_models(evaluator, wrapped)["results"]
  return [{"model": m, **row} for m in models
          for row in evaluator.rows(results[m])]


def evaluate_classifier(apply_fn: ApplyFn, params: Any, *, dataset: Any,
                        shifts: Sequence[str] | str = "all",
                        model: str = "model", **options: Any
                        ) -> list[dict[str, Any]]:
  """`evaluate_classifiers({model: (apply_fn, params)}, ...)`."""
  return evaluate_classifiers({model: (apply_fn, params)}, dataset=dataset,
                              shifts=shifts, **options)
