"""Capacity extension of a trained Neural Interpreter.

`extend_capacity` adds functions to every script, `trainable_mask` marks the
new ones as the only trainable parameters, `freeze_updates` zeroes the
updates of the others: `optax.chain(tx, freeze_updates(trainable_mask(
new_params, new_model.num_frozen_functions)))`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crl.models.interpreters import NeuralInterpreter

EXTENSION_INITS = ("random", "mirror")
FUNCTION_PARAMS = ("function_signatures", "function_codes")


def _is_function_param(path: Sequence[Any]) -> bool:
  name = jax.tree_util.keystr(tuple(path))
  return any(f"['{p}']" in name for p in FUNCTION_PARAMS) and "script" in name


def extend_capacity(model: NeuralInterpreter, params: Any, num_new: int,
                    key: jax.Array, *, init: str = "random"
                    ) -> tuple[NeuralInterpreter, Any]:
  """Adds `num_new` functions to every script of a trained model.

  The new model has `num_functions + num_new` functions and
  `num_frozen_functions = num_functions` (the old functions' signatures and
  codes get no gradient). Every parameter is copied; the signature and code
  tables of each script get `num_new` new rows: N(0, 1) draws ('random', the
  initialisation of fresh functions) or copies of randomly chosen old rows
  ('mirror'). With `freeze_signatures=True` (fixed signatures, the digits
  preset) the new signatures keep their draws and the new codes learn; use
  `new_model.clone(freeze_signatures=False)` to learn new signatures too.

  Args:
    model: the trained model.
    params: its parameters (the 'params' collection).
    num_new: functions to add (>= 1).
    key: PRNG key for the new rows.
    init: 'random' or 'mirror'.

  Returns:
    `(new_model, new_params)`.
  """
  if not isinstance(num_new, (int, np.integer)) or num_new < 1:
    raise ValueError(f"extend_capacity: num_new must be an integer >= 1, got "
                     f"{num_new!r}.")
  if init not in EXTENSION_INITS:
    raise ValueError(f"extend_capacity: init must be one of "
                     f"{EXTENSION_INITS}, got {init!r}.")
  old = model.num_functions
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, len(leaves))
  new_leaves = []
  for (path, leaf), k in zip(leaves, keys):
    if _is_function_param(path):
      if leaf.shape[0] != old:
        raise ValueError(f"extend_capacity: {jax.tree_util.keystr(path)} has "
                         f"{leaf.shape[0]} rows, expected num_functions="
                         f"{old}.")
      if init == "random":
        rows = jax.random.normal(k, (num_new,) + leaf.shape[1:], leaf.dtype)
      else:
        rows = leaf[jax.random.randint(k, (num_new,), 0, old)]
      leaf = jnp.concatenate([leaf, rows], axis=0)
    new_leaves.append(leaf)
  new_model = model.clone(num_functions=old + num_new,
                          num_frozen_functions=old)
  return new_model, jax.tree_util.tree_unflatten(treedef, new_leaves)


def trainable_mask(params: Any, num_frozen_functions: int,
                   also_train: Sequence[str] = ()) -> Any:
  """Which parameter entries train after a capacity extension.

  Args:
    params: the (extended) parameters.
    num_frozen_functions: leading function rows that stay fixed.
    also_train: names of top-level parameters or submodules that train in
      full (e.g. ('classifier', 'head_norm') for a new task).

  Returns:
    A pytree like `params` of bool arrays of the same shapes: True exactly on
    the rows `>= num_frozen_functions` of every script's
    'function_signatures' and 'function_codes', and on every entry of the
    leaves under `also_train`.
  """
  def mask(path, leaf):
    if path and getattr(path[0], "key", None) in also_train:
      return jnp.ones(leaf.shape, bool)
    if _is_function_param(path):
      rows = jnp.arange(leaf.shape[0]) >= num_frozen_functions
      return jnp.broadcast_to(rows.reshape((-1,) + (1,) * (leaf.ndim - 1)),
                              leaf.shape)
    return jnp.zeros(leaf.shape, bool)

  return jax.tree_util.tree_map_with_path(mask, params)


def freeze_updates(mask: Any) -> optax.GradientTransformation:
  """Zeroes the updates where `mask` is False (chain it last).

  Chained after the optimizer (`optax.chain(tx, freeze_updates(mask))`) it
  also cancels weight decay on frozen entries, so they stay bit-identical.
  """
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda g, m: jnp.where(m, g, 0.0), updates,
                        mask), state

  return optax.GradientTransformation(init_fn, update_fn)
