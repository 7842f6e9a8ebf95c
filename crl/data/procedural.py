"""The base of the procedural datasets: one `sample()` for all of them.

A procedural dataset generates every example in pure JAX from its own seed,
as a function of (split, distribution, index). Causal shapes, occluded video,
the fairness data (shapes and tabular) and the multi-domain shapes all
derive from `ProceduralDataset` and define:

* `encode(split, intervention=None)`: the distribution as data, int32 `[2]`
  `(split id, intervention bits)` (raises on an unknown split or
  intervention);
* `eval_code(name)`: `encode` of eval split `name`;
* `sample_encoded(code, indices)`: examples `indices` of the distribution
  `code`, pure and jit-friendly (`code` may be traced, so one compiled
  function serves every split and intervention);
* `eval_splits()` (name -> description) and `num_examples(split_name)`
  (None for the infinite 'train' stream).

The base adds `sample(split, indices, *, intervention=None)` and
`eval_batch(name, indices)`, both jitted with the dataset as a static
argument (datasets are frozen dataclasses, so hashable). `InterventionSplits`
adds eval splits named by interventions ('a+b' combinations, parsed by
`split_interventions`).
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class ProceduralDataset(abc.ABC):
  """A dataset generated in JAX from a seed (module docstring)."""

  @abc.abstractmethod
  def encode(self, split: str, intervention: str | None = None) -> np.ndarray:
    """The distribution `(split, intervention)` as int32 `[2]`."""

  @abc.abstractmethod
  def eval_code(self, name: str) -> np.ndarray:
    """`encode` of eval split `name` (see `eval_splits()`)."""

  @abc.abstractmethod
  def sample_encoded(self, code: Array, indices: Array) -> dict[str, Any]:
    """Examples `indices` (int32 `[batch]`) of the distribution `code`."""

  @abc.abstractmethod
  def eval_splits(self) -> dict[str, str]:
    """Eval split name -> description."""

  @abc.abstractmethod
  def num_examples(self, split_name: str) -> int | None:
    """Examples in `split_name`; None for the infinite 'train' stream."""

  def sample(self, split: str, indices: Any, *,
             intervention: str | None = None) -> dict[str, Any]:
    """Examples `indices` of `split` under `intervention` (jitted).

    Args:
      split: 'train', 'validation' or 'test' (disjoint streams).
      indices: integer `[batch]` example indices.
      intervention: None (the training distribution) or a name the dataset
        defines (see `encode`).

    Returns:
      The dataset's example dict (see its `sample_encoded`), `[batch, ...]`.
    """
    return _sample_jit(self, jnp.asarray(self.encode(split, intervention)),
                       _check_indices(indices))

  def eval_batch(self, name: str, indices: Any) -> dict[str, Any]:
    """Examples `indices` of eval split `name` (see `eval_splits()`)."""
    return _sample_jit(self, jnp.asarray(self.eval_code(name)),
                       _check_indices(indices))


def _check_indices(indices: Any) -> Array:
  indices = jnp.asarray(indices)
  if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(f"indices must be an integer [batch] array, got "
                     f"{indices.dtype}{list(indices.shape)}.")
  return indices.astype(jnp.int32)


_sample_jit = jax.jit(lambda ds, code, idx: ds.sample_encoded(code, idx),
                      static_argnums=(0,))


def split_interventions(intervention: str,
                        known: tuple[str, ...]) -> tuple[str, ...]:
  """'a+b' -> ('a', 'b') in the order of `known`; raises on unknown names."""
  if not isinstance(intervention, str) or not intervention.strip():
    raise ValueError(f"An intervention is a non-empty string, got "
                     f"{intervention!r}; known: {', '.join(known)}.")
  names = [n.strip() for n in intervention.split("+")]
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"Unknown intervention(s) {unknown} in "
                     f"{intervention!r}; known interventions: "
                     f"{', '.join(known)} (combine with '+').")
  return tuple(n for n in known if n in names)


class InterventionSplits(ProceduralDataset):
  """Eval splits named by interventions, for the procedural datasets.

  Needs `eval_examples`, `eval_splits()` and `parse_intervention(name)`.
  """

  # Appended to the unknown-split error (e.g. how to combine names).
  split_hint = ""

  def num_examples(self, split_name: str) -> int | None:
    """`eval_examples` for eval splits and 'validation'; None for 'train'."""
    if split_name == "train":
      return None
    if split_name != "validation":
      self._eval_intervention(split_name)
    return self.eval_examples

  def _eval_intervention(self, name: str) -> str | None:
    """None for 'test', else `name` once it parses as an intervention."""
    if name == "test":
      return None
    try:
      self.parse_intervention(name)
    except ValueError:
      raise ValueError(f"Unknown eval split {name!r}; known eval splits: "
                       f"{', '.join(self.eval_splits())}"
                       f"{self.split_hint}.") from None
    return name

