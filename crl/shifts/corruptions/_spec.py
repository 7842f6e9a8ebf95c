"""The record every corruption is registered with."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# (image [height, width, 3], noise pytree, severity index 0..4) -> image.
ApplyFn = Callable[[jax.Array, Any, jax.Array], jax.Array]
# (key, height, width) -> noise pytree of standard random variates.
DrawFn = Callable[[jax.Array, int, int], Any]


@dataclasses.dataclass(frozen=True)
class Corruption:
  """One corruption type.

  Attributes:
    name: imagecorruptions' name.
    kind: 'noise', 'blur', 'weather', 'digital' or 'extra'.
    description: one sentence for results files.
    param_names: names of the severity parameters.
    params: per severity 1..5, the tuple of parameter values (Hendrycks &
      Dietterich's, as in imagecorruptions 1.1.2).
    draw: draws the example's randomness from its key as standard variates
      (U[0, 1), N(0, 1)) so that tests can replay the reference's draws.
    apply: corrupts one image given its draws and the severity index.
  """
  name: str
  kind: str
  description: str
  param_names: tuple[str, ...]
  params: tuple[tuple[Any, ...], ...]
  draw: DrawFn
  apply: ApplyFn


def pick(table: np.ndarray, s: jax.Array) -> jax.Array:
  """`table[s]` for a static NumPy table and a traced severity index."""
  return jnp.asarray(table)[s]


def no_draw(key: jax.Array, height: int, width: int) -> dict:
  del key, height, width
  return {}
