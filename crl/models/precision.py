"""Mixed precision for every model: float32 parameters, `compute_dtype` math.

`with_compute_dtype(model, 'bfloat16')` returns the same model (same fields,
same parameter tree, same checkpoints) whose `__call__`

  - reads its float32 'params' cast to bfloat16 (`nn.map_variables`; the
    stored parameters, their gradients and the optimizer state stay float32:
    the gradient of the cast is cast back);
  - casts the floating inputs of every matmul module (`MATMUL_MODULES`:
    Dense, DenseGeneral, Conv, ConvTranspose, Einsum and NAC's `ModFC`) to
    bfloat16 (`nn.intercept_methods`), so that all matmul and convolution
    FLOPs are bfloat16 even where an elementwise op met a float32 constant;
  - returns float32 floating outputs (logits, aux).

What stays float32 by construction: normalisation statistics (flax's
LayerNorm/GroupNorm/BatchNorm reduce in float32 and keep float32 running
stats), every softmax (`crl.models.layers.softmax`), NAC's signature kernel
and graph sampling (`crl.models.kernel` computes in float32), the loss
(`crl.trainers.classification.cross_entropy` upcasts the logits).

`float32` returns the model object unchanged: the default path is untouched.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_compute_dtype(name: Any) -> None:
  """Raises ValueError (one line) unless `name` is a supported dtype name."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype={name!r} is not supported; "
                     f"expected one of {', '.join(COMPUTE_DTYPES)}.")


def _cast_floating(tree: Any, dtype: Any) -> Any:
  def cast(x):
    if isinstance(x, (jax.Array, jnp.ndarray)) and jnp.issubdtype(
        x.dtype, jnp.floating):
      return x.astype(dtype)
    return x
  return jax.tree_util.tree_map(cast, tree)


def _matmul_modules() -> tuple[type, ...]:
  from crl.models import layers  # pylint: disable=g-import-not-at-top
  return (nn.Dense, nn.DenseGeneral, nn.Conv, nn.ConvTranspose, nn.Einsum,
          layers.ModFC)


def _interceptor(dtype: Any):
  matmuls = _matmul_modules()

  def intercept(next_fun, args, kwargs, context):
    if (isinstance(context.module, matmuls)
        and context.method_name == "__call__"):
      args = _cast_floating(args, dtype)
      kwargs = _cast_floating(kwargs, dtype)
    return next_fun(*args, **kwargs)
  return intercept


@functools.lru_cache(maxsize=None)
def _mixed_class(cls: type, dtype_name: str) -> type:
  """`cls` reading bfloat16 params and casting matmul inputs (cached)."""
  dtype = COMPUTE_DTYPES[dtype_name]
  mapped = nn.map_variables(
      cls, "params", trans_in_fn=lambda v: _cast_floating(v, dtype),
      init=True)

  class Mixed(mapped):  # pylint: disable=missing-class-docstring
    def __call__(self, *args, **kwargs):
      if self.is_initializing():  # Create the params in float32.
        return cls.__call__(self, *args, **kwargs)
      with nn.intercept_methods(_interceptor(dtype)):
        out = super().__call__(*_cast_floating(args, dtype), **kwargs)
      return _cast_floating(out, jnp.float32)

  Mixed.__name__ = cls.__name__
  Mixed.__qualname__ = cls.__qualname__
  Mixed.compute_dtype = dtype_name
  return Mixed


def with_compute_dtype(model: nn.Module, compute_dtype: str) -> nn.Module:
  """`model` computing in `compute_dtype` (module docstring).

  Args:
    model: an unbound model built from its config.
    compute_dtype: a name in `COMPUTE_DTYPES`.

  Raises:
    ValueError: an unsupported name (one line).
  """
  check_compute_dtype(compute_dtype)
  if compute_dtype == "float32":
    return model
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.init and f.name not in ("parent", "name")}
  return _mixed_class(type(model), compute_dtype)(**fields)
