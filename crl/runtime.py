"""Runtime pieces of a training step and a process: gradient accumulation,
the persistent compilation cache, the per-step and evaluation RNG streams,
the (data, fsdp) mesh and the sharding of parameters, and their start-up
checks.

Gradient accumulation (`config.grad_accum_steps = K`): the global batch
`[B, ...]` is viewed as K micro-batches `[K, B / K, ...]` taken with stride
K (`x.reshape(B / K, K, ...)`, micro-batch k = rows k, k + K, ...), so each
device's rows stay on that device when K divides the per-device batch; a
`lax.scan` sums the micro-batch gradients and the step averages them. With
mean losses over equal micro-batches this equals the full-batch gradient up
to float rounding; the data pipeline, the step counter and the resume
arithmetic are unchanged (one optimizer step per global batch). Random
streams of micro-batch k are `fold_in(stream, k)`; BatchNorm statistics
(`model_state`) are updated micro-batch after micro-batch.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from crl import config_lib


def loss_and_grads(loss_fn: Callable[..., Any], params: Any,
                   batch: dict[str, jax.Array], rngs: dict[str, jax.Array],
                   model_state: Any = None, accum_steps: int = 1
                   ) -> tuple[tuple[jax.Array, dict[str, Any]], Any]:
  """`((loss, metrics), grads)` of `loss_fn(params, batch, rngs[,
  model_state=])` over `accum_steps` micro-batches (module docstring).

  `metrics` are averaged over micro-batches; a model's updated state comes
  back in `metrics['model_state']` (as `loss_fn` returns it).
  """

  def one(micro_batch, micro_rngs, state):
    fn = (functools.partial(loss_fn, model_state=state) if state
          else loss_fn)
    return jax.value_and_grad(fn, has_aux=True)(params, micro_batch,
                                                micro_rngs)

  if accum_steps == 1:
    return one(batch, rngs, model_state)
  k = accum_steps
  micro = jax.tree.map(
      lambda x: jnp.moveaxis(x.reshape(x.shape[0] // k, k, *x.shape[1:]),
                             1, 0), batch)

  def body(carry, xs):
    grad_sum, state = carry
    index, micro_batch = xs
    micro_rngs = {name: jax.random.fold_in(key, index)
                  for name, key in rngs.items()}
    (loss, metrics), grads = one(micro_batch, micro_rngs, state)
    metrics = dict(metrics)
    state = metrics.pop("model_state", state)
    return (jax.tree.map(jnp.add, grad_sum, grads), state), (loss, metrics)

  zeros = jax.tree.map(jnp.zeros_like, params)
  (grads, state), (losses, metrics) = jax.lax.scan(
      body, (zeros, model_state if model_state else {}),
      (jnp.arange(k), micro))
  grads = jax.tree.map(lambda g: g / k, grads)
  metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
  if model_state:
    metrics["model_state"] = state
  return (jnp.mean(losses), metrics), grads


def check_grad_accum(config: ml_collections.ConfigDict) -> None:
  """One-line `ConfigError` unless `grad_accum_steps` divides the
  per-device batch."""
  k = config.get("grad_accum_steps", 1)
  if not isinstance(k, int) or k < 1:
    raise config_lib.ConfigError(
        f"config.grad_accum_steps must be a positive integer, got {k!r}.")
  per_device = config.batch_size // jax.device_count()
  if per_device % k:
    raise config_lib.ConfigError(
        f"config.grad_accum_steps={k} does not divide the per-device batch "
        f"{per_device} (batch_size {config.batch_size} over "
        f"{jax.device_count()} devices); use a divisor of {per_device}.")


def setup_compile_cache(config: ml_collections.ConfigDict) -> str | None:
  """Turns on JAX's persistent compilation cache; returns its directory.

  `config.compile_cache_dir`: a directory, '' for off, or 'auto' (default):
  `~/.cache/crl/jax_compile` on accelerators, off on CPU so that tests
  and laptop runs write nothing under the home directory (it pays there
  too: the configs/nac.py:tiny step compiled in 35.2 s on a first start
  and 2.1 s on a second, loaded 2-core CPU; set a directory to use it).
  Every compiled program is cached (no minimum compile time or size),
  so a restarted or resumed run does not compile its step again.
  """
  where = config.get("compile_cache_dir", "auto")
  if where == "auto":
    if jax.default_backend() == "cpu":
      return None
    where = os.path.join(os.path.expanduser("~"), ".cache", "crl",
                         "jax_compile")
  if not where:
    return None
  os.makedirs(where, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  logging.info("Persistent compilation cache: %s", where)
  return where


def setup_fast_compile(config: ml_collections.ConfigDict) -> None:
  """`config.xla_fast_compile`: turns most XLA optimisations off for the
  whole process, for small runs whose time is all compilation (tests,
  `:tiny` variants); every trainer calls this before it builds anything."""
  if config.get("xla_fast_compile", False):
    jax.config.update("jax_disable_most_optimizations", True)


# Random streams -------------------------------------------------------------


def step_rngs(seed: int, step: jax.Array) -> dict[str, jax.Array]:
  """The per-step RNG streams: `fold_in(key(seed), step)`, split by name."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
  dropout, sample = jax.random.split(key)
  return {"dropout": dropout, "sample": sample}


def eval_rngs(seed: int) -> dict[str, jax.Array]:
  """Fixed streams for evaluation (used only by stochastic eval modes)."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 1)
  dropout, sample = jax.random.split(key)
  return {"dropout": dropout, "sample": sample}


# Sharded parameters ---------------------------------------------------------
#
# The mesh of a run is (`data`, `fsdp`) with `config.mesh.fsdp` devices on
# `fsdp`; batches are split over both axes. Parameters and optimizer state
# are sharded over `fsdp` by one rule: an array of at least
# `FSDP_MIN_SIZE` elements is split along its largest dimension divisible by
# the axis size; smaller arrays, and arrays with no such dimension, are
# replicated. XLA gathers each one where it is used (ZeRO-3 / FSDP style).

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
FSDP_MIN_SIZE = 2**12


def fsdp_size(config: ml_collections.ConfigDict) -> int:
  """`config.mesh.fsdp` (1 without a `mesh` section)."""
  mesh = config.get("mesh", None)
  return int(mesh.get("fsdp", 1)) if mesh is not None else 1


def check_fsdp(config: ml_collections.ConfigDict) -> None:
  """One-line `ConfigError` unless `mesh.fsdp` divides the device count."""
  n, f = jax.device_count(), fsdp_size(config)
  if f < 1 or n % f:
    raise config_lib.ConfigError(
        f"config.mesh.fsdp={f} does not divide the {n} devices; use a "
        f"divisor of {n}.")


def make_mesh(fsdp: int = 1) -> jax.sharding.Mesh:
  """`(data, fsdp)` mesh over every device of every process."""
  devices = np.asarray(jax.devices())
  return jax.sharding.Mesh(devices.reshape(devices.size // fsdp, fsdp),
                           (DATA_AXIS, FSDP_AXIS))


def batch_axes(mesh: jax.sharding.Mesh) -> Any:
  """The mesh axes a batch is split over: `data` (and `fsdp` if present)."""
  if FSDP_AXIS in mesh.axis_names:
    return (DATA_AXIS, FSDP_AXIS)
  return DATA_AXIS


def leaf_spec(shape: tuple[int, ...], size: int) -> P:
  """The rule above for one array of `shape` on an `fsdp` axis of `size`."""
  if size == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  dims = [d for d in np.argsort(shape, kind="stable")[::-1]
          if shape[d] % size == 0]
  if not dims:
    return P()
  spec = [None] * len(shape)
  spec[dims[0]] = FSDP_AXIS
  return P(*spec)


def state_shardings(abstract: Any, mesh: jax.sharding.Mesh) -> Any:
  """`NamedSharding`s of a train state's leaves (replicated without fsdp)."""
  size = dict(zip(mesh.axis_names, mesh.devices.shape)).get(FSDP_AXIS, 1)
  return jax.tree.map(
      lambda x: NamedSharding(mesh, leaf_spec(tuple(x.shape), size)),
      abstract)
