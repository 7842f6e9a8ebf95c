"""The OOD suite's evaluation loop and the corrupted batches it reads.

`evaluate_models` runs an `OODSuiteEvaluator` (`crl.evaluators.ood_suite`)
over several models, shift by shift: one pass over each shift's data
serves every model; only the ID logits, the metrics, the reliability data
and the predicted labels are kept. The suite trainer, `any_model` and the
transfer study call it.

`corrupt_examples` corrupts the ID split's batches on the devices with one
jitted function per corruption type (the severity is traced, so one
compilation serves all five); `corruption_key` is each type's key.
"""

from __future__ import annotations

import functools
import time
import zlib
from typing import Any, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from crl.shifts import corruptions


def evaluate_models(evaluator: Any, models: Mapping[str, tuple[Any, Any]]
                    ) -> dict[str, Any]:
  """`{results, reliability, predictions, seconds}` of every model.

  Args:
    evaluator: an `OODSuiteEvaluator`.
    models: `{model: (params, predict_fn)}`.
  """
  results = {m: {} for m in models}
  reliability = {m: {} for m in models}
  predictions = {m: {} for m in models}
  seconds = {}
  id_logits = {}
  names = evaluator.names
  for i, name in enumerate(names):
    t0 = time.time()
    outputs = evaluator.predict_many(models, name)
    for model, out in outputs.items():
      if i == 0:
        id_logits[model] = out["logits"].astype(np.float32)
      results[model][name] = evaluator.evaluate(name, out, id_logits[model])
      if evaluator.kinds[name] != "semantic":
        reliability[model][name] = evaluator.reliability_of(out)
      predictions[model][name] = np.argmax(out["logits"], -1).astype(np.int32)
    seconds[name] = round(time.time() - t0, 2)
    logging.info("OOD suite %d/%d %s: %d models in %.1fs.", i + 1, len(names),
                 name, len(models), seconds[name])
  return {"results": results, "reliability": reliability,
          "predictions": predictions, "seconds": seconds}


@functools.partial(jax.jit, static_argnames=("name",))
def corrupt_examples(images: jax.Array, start: jax.Array, severity: jax.Array,
                     key: jax.Array, *, name: str) -> jax.Array:
  """Examples `start, start + 1, ...` of a split, corrupted by `name`.

  Args:
    images: f32 `[batch, height, width, 3]` in [0, 1] (rows are consecutive
      examples of the split, the first being example `start`).
    start: int32 scalar, the split index of row 0.
    severity: int32 scalar 1..5 (traced: one compilation per `name`).
    key: the corruption's key; example `i` uses `fold_in(key, i)`.
    name: a corruption name (static).

  Returns:
    The corrupted images, same shape.
  """
  indices = start + jnp.arange(images.shape[0], dtype=jnp.int32)

  def one(image, index):
    k = jax.random.fold_in(key, index)
    return corruptions.corrupt(image[None], name, severity, k)[0]

  return jax.vmap(one)(images, indices)


def corruption_key(seed: int, name: str) -> jax.Array:
  """`fold_in(PRNGKey(seed), crc32(name))`: the key of one corruption type."""
  return jax.random.fold_in(jax.random.PRNGKey(seed),
                            zlib.crc32(name.encode()) & 0x7FFFFFFF)
