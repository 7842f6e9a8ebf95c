"""The optimizer of every trainer: AdamW with optional clipping, the
warmup-cosine learning-rate schedule, and the weight-decay mask.

`make_optimizer(config.optimizer, batch_size, num_steps)` is what a run
uses; a population builds the same optimizer from per-member values
(`optimizer_hparams`, which may be traced) with `build_optimizer`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax


def decay_mask(params: Any) -> Any:
  """True for parameters that get weight decay.

  No decay on signatures (they place modules in the graph), nor on norms,
  biases and gains (every parameter with ndim <= 1).
  """
  def keep(path, x):
    return x.ndim > 1 and "signature" not in jax.tree_util.keystr(path).lower()
  return jax.tree_util.tree_map_with_path(keep, params)


def warmup_cosine(step: jax.Array, peak: jax.Array, warmup: jax.Array,
                  total: jax.Array, end_factor: jax.Array) -> jax.Array:
  """Linear warmup from 0 to `peak` over `warmup` steps, then cosine decay to
  `end_factor * peak` at step `total`; constant after.

  Every argument may be a traced array (a population trains members with
  their own peak and length in one program; see `crl.population`).
  """
  step = jnp.asarray(step, jnp.float32)
  peak, warmup, total, end_factor = (jnp.asarray(x, jnp.float32) for x in
                                     (peak, warmup, total, end_factor))
  warm = peak * step / jnp.maximum(warmup, 1.0)
  decay = jnp.maximum(total - warmup, 1.0)
  t = jnp.minimum(step - warmup, decay)
  cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * t / decay))
  return jnp.where(step < warmup, warm,
                   peak * ((1.0 - end_factor) * cosine + end_factor))


def optimizer_hparams(opt: ml_collections.ConfigDict, batch_size: int,
                      num_steps: int) -> dict[str, float]:
  """The values of `opt` that a population may vary per member (as data)."""
  warmup = min(opt.warmup_steps, max(num_steps - 1, 0))
  return {"peak": opt.base_learning_rate * batch_size / opt.base_batch_size,
          "warmup": float(warmup), "total": float(max(num_steps, warmup + 1)),
          "end_factor": float(opt.end_learning_rate_factor),
          "weight_decay": float(opt.weight_decay)}


def learning_rate_schedule(opt: ml_collections.ConfigDict, batch_size: int,
                           num_steps: int) -> optax.Schedule:
  """Linear warmup to `base_learning_rate * batch_size / base_batch_size`,
  then cosine decay to `end_learning_rate_factor` of it at `num_steps`."""
  return build_optimizer(opt, optimizer_hparams(opt, batch_size,
                                                num_steps))[1]


def build_optimizer(opt: ml_collections.ConfigDict, hparams: Mapping[str, Any]
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (after optional clipping) with the `warmup_cosine` schedule.

  `hparams` (see `optimizer_hparams`) may hold traced arrays; the structure
  of the optimizer state depends only on `opt`.
  """
  h = dict(hparams)

  def schedule(count):
    return warmup_cosine(count, h["peak"], h["warmup"], h["total"],
                         h["end_factor"])

  parts = []
  if opt.clip_norm:
    parts.append(optax.clip_by_global_norm(opt.clip_norm))
  parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=h["weight_decay"], mask=decay_mask))
  return optax.chain(*parts), schedule


def make_optimizer(opt: ml_collections.ConfigDict, batch_size: int,
                   num_steps: int) -> tuple[optax.GradientTransformation,
                                            optax.Schedule]:
  """`(optimizer, schedule)` of one run: `build_optimizer` with the
  `optimizer_hparams` of `opt` for `batch_size` and `num_steps`."""
  return build_optimizer(opt, optimizer_hparams(opt, batch_size, num_steps))
