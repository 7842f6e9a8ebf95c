"""What evaluators share: host copies of global arrays, and one pass of a
jitted function over an eval split with the padding removed.

Every evaluator that reads predictions does it through `collect` (or
`gather` where it walks the batches itself), so that multi-process
gathering and the padding mask are handled in one place.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np


def gather(x: jax.Array) -> np.ndarray:
  """A global array as one host array on every process."""
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def collect(pipeline: Any, fn: Callable[[Any, dict[str, jax.Array]], Any],
            params: Any, split: str, keys: Sequence[str] = ("label",)
            ) -> dict[str, np.ndarray]:
  """One pass of `fn(params, batch)` over `split`, padding removed.

  Args:
    pipeline: a `crl.data.pipeline.InputPipeline` (its batches carry
      'mask', 1 for real examples, and `keys`).
    fn: jitted `(params, batch) -> array [B, ...] or {name: [B, ...]}`.
    params: model parameters.
    split: an eval split of the dataset.
    keys: batch entries returned alongside `fn`'s outputs.

  Returns:
    `{name: [n, ...]}` of `fn`'s outputs (`'output'` for a bare array) and
    of `keys`, real examples only.

  Raises:
    ValueError: the split has no batch.
  """
  parts: dict[str, list[np.ndarray]] = {}
  for batch in pipeline.eval_batches(split):
    out = fn(params, batch)
    if not isinstance(out, dict):
      out = {"output": out}
    out = {**out, **{k: batch[k] for k in keys}, "mask": batch["mask"]}
    for k, v in out.items():
      parts.setdefault(k, []).append(gather(v))
  if not parts:
    raise ValueError(f"Eval split {split!r} is empty.")
  mask = np.concatenate(parts.pop("mask")) > 0
  return {k: np.concatenate(v)[mask] for k, v in parts.items()}
