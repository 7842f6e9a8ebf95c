"""The signature kernel: which module may send to which.

For receivers `u` and senders `w` with signatures `s`:
  `d_uw = 1 - cos(s_u, s_w)`, `log K_uw = -d_uw / sigma`,
and pairs with `d_uw > tau` are truncated to `K = 0` (a pair exactly at
`d = tau` is kept). The truncation uses a straight-through estimator: the
forward value is exactly zero, the gradient is that of the untruncated kernel.

The graph used for message passing is one of
- 'soft': `K` itself (log-mask `log K`);
- 'threshold': the hard graph `K > 0.5` (log-mask 0 / masked);
- 'sample': per example `z ~ RelaxedBernoulli(K, T)` of shape
  `[batch, U, W]`. Sampling is exact at hard threshold: `P(z > 0.5) = K`.

Truncation handling ('straight_through', the default, above) or 'clamp', the
official NAC code's: truncated pairs get K = 0 without a straight-through
gradient, and 'sample' draws `z ~ RelaxedBernoulli(clamp(K, eps, 1 - eps), T)`
as torch.distributions does (`eps` = float32 machine epsilon; uniforms and
samples clamped likewise), so truncated pairs get the clamped sample
`z >= eps` (log z >= -15.9) rather than an exact zero, and no gradient.

NaN safety: log(0) never appears. Non-links carry the finite
`attention.MASK_VALUE` in every log-graph, relaxed samples are computed in log
space with `log_sigmoid`, and `log(1 - K)` is clipped at `K = 1` (the
self-link). Rows without any link are handled by `attention.masked_softmax`
(uniform fallback).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from crl.models.attention import MASK_VALUE

GRAPH_MODES = ("soft", "threshold", "sample")
TRUNCATIONS = ("straight_through", "clamp")

_NORM_EPS = 1e-8
_ONE_MINUS_P_MIN = 1e-6


def _straight_through(value: jax.Array, forward: jax.Array) -> jax.Array:
  """Returns `forward` in the forward pass with the gradient of `value`."""
  return value + jax.lax.stop_gradient(forward - value)


def cosine_distance(receivers: jax.Array, senders: jax.Array) -> jax.Array:
  """`1 - cos` between all pairs of signatures.

  Args:
    receivers: `[U, sig]`.
    senders: `[W, sig]`.

  Returns:
    `[U, W]` distances in [0, 2]. Zero-norm rows are guarded (no NaN).
  """
  def unit(x):
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, _NORM_EPS ** 2))

  receivers = receivers.astype(jnp.float32)  # float32 under mixed precision
  senders = senders.astype(jnp.float32)
  return 1.0 - jnp.einsum("us,ws->uw", unit(receivers), unit(senders))


def signature_kernel(distance: jax.Array, sigma: jax.Array | float,
                     tau: Optional[float],
                     straight_through: bool = True) -> dict[str, jax.Array]:
  """Truncated kernel with straight-through gradients.

  Args:
    distance: `[U, W]` cosine distances.
    sigma: bandwidth (scalar, > 0).
    tau: truncation; pairs with `distance > tau` are cut. None: no truncation.
    straight_through: False gives truncated pairs zero gradient (the
      official 'clamp' handling) instead of the untruncated kernel's.

  Returns:
    A dict with
      'kernel': `[U, W]` K, exactly 0 where truncated (gradient of the
        untruncated kernel everywhere);
      'log_kernel': `[U, W]` log K, `MASK_VALUE` where truncated (same
        straight-through gradient);
      'link': bool `[U, W]`, True where not truncated;
      'distance': the input distances.
  """
  distance = jnp.asarray(distance, jnp.float32)
  log_k = -distance / jnp.asarray(sigma, jnp.float32)
  k = jnp.exp(log_k)
  if tau is None:
    link = jnp.ones(distance.shape, bool)
  else:
    link = jax.lax.stop_gradient(distance <= tau)
  if not straight_through:
    return {"kernel": jnp.where(link, k, 0.0),
            "log_kernel": jnp.where(link, log_k, MASK_VALUE),
            "link": link, "distance": distance}
  return {
      "kernel": _straight_through(k, jnp.where(link, k, 0.0)),
      "log_kernel": _straight_through(log_k,
                                      jnp.where(link, log_k, MASK_VALUE)),
      "link": link,
      "distance": distance,
  }


def sample_graph(key: jax.Array, log_kernel: jax.Array, link: jax.Array,
                 batch_size: int, temperature: float
                 ) -> tuple[jax.Array, jax.Array]:
  """Draws one relaxed Bernoulli graph per example.

  `z = sigmoid((logit K + L) / T)` with logistic noise `L`, drawn with one key
  on the full `[batch, U, W]` shape (so values do not depend on sharding).
  Truncated pairs are exactly 0 (log: `MASK_VALUE`), with straight-through
  gradients. Reparameterised: gradients reach the signatures.

  Args:
    key: PRNG key.
    log_kernel: `[U, W]` from `signature_kernel`.
    link: bool `[U, W]`.
    batch_size: number of graphs.
    temperature: relaxation temperature T > 0.

  Returns:
    `z` and `log z`, both `[batch, U, W]`.
  """
  log_p = jnp.minimum(log_kernel, 0.0)
  log_1mp = jnp.log(jnp.clip(-jnp.expm1(log_p), _ONE_MINUS_P_MIN, 1.0))
  logits = log_p - log_1mp
  noise = jax.random.logistic(key, (batch_size,) + log_kernel.shape,
                              log_kernel.dtype)
  log_z = jax.nn.log_sigmoid((logits + noise) / temperature)
  z = jnp.exp(log_z)
  return (_straight_through(z, jnp.where(link, z, 0.0)),
          _straight_through(log_z, jnp.where(link, log_z, MASK_VALUE)))


def sample_graph_clamped(key: jax.Array, kernel: jax.Array, batch_size: int,
                         temperature: float) -> tuple[jax.Array, jax.Array]:
  """The official NAC's relaxed Bernoulli graph (torch RelaxedBernoulli).

  `p = clamp(K, eps, 1 - eps)`, `u = clamp(U(0, 1), eps, 1 - eps)`,
  `z = clamp(sigmoid((logit p + log u - log(1 - u)) / T), eps, 1 - eps)`,
  eps the float32 machine epsilon. Truncated pairs (K = 0) get `z >= eps`
  and no gradient; so does the self-link (K = 1, clamped).

  Args:
    key: PRNG key.
    kernel: `[U, W]` K from `signature_kernel(..., straight_through=False)`.
    batch_size: number of graphs.
    temperature: relaxation temperature T > 0.

  Returns:
    `z` and `log z`, both `[batch, U, W]`.
  """
  eps = float(jnp.finfo(jnp.float32).eps)
  p = jnp.clip(kernel, eps, 1.0 - eps)
  logits = jnp.log(p) - jnp.log1p(-p)
  u = jnp.clip(jax.random.uniform(key, (batch_size,) + kernel.shape,
                                  kernel.dtype), eps, 1.0 - eps)
  z = jax.nn.sigmoid((logits + jnp.log(u) - jnp.log1p(-u)) / temperature)
  z = jnp.clip(z, eps, 1.0 - eps)
  return z, jnp.log(z)


def make_graph(kernel: dict[str, jax.Array], mode: str, *,
               key: Optional[jax.Array] = None,
               batch_size: Optional[int] = None,
               temperature: float = 0.5,
               truncation: str = "straight_through") -> dict[str, jax.Array]:
  """The graph used for message passing.

  Args:
    kernel: output of `signature_kernel`.
    mode: 'soft', 'threshold' or 'sample'.
    key: PRNG key, required for 'sample'.
    batch_size: number of graphs, required for 'sample'.
    temperature: relaxation temperature for 'sample'.
    truncation: 'straight_through' or 'clamp' (module docstring); only
      changes 'sample' (truncated pairs are then not exactly masked: 'link'
      is all True).

  Returns:
    A dict with 'graph' (values in [0, 1]), 'log_graph' (finite, `MASK_VALUE`
    at non-links) and bool 'link'; `[U, W]` for 'soft'/'threshold',
    `[batch, U, W]` for 'sample'.
  """
  if mode == "soft":
    return {"graph": kernel["kernel"], "log_graph": kernel["log_kernel"],
            "link": kernel["link"]}
  if mode == "threshold":
    link = jnp.logical_and(kernel["link"],
                           jax.lax.stop_gradient(kernel["kernel"]) > 0.5)
    return {"graph": link.astype(jnp.float32),
            "log_graph": jnp.where(link, 0.0, MASK_VALUE), "link": link}
  if mode == "sample":
    if key is None or batch_size is None:
      raise ValueError("make_graph(mode='sample') needs a key and batch_size.")
    if truncation not in TRUNCATIONS:
      raise ValueError(f"truncation must be one of {TRUNCATIONS}, got "
                       f"{truncation!r}.")
    if truncation == "clamp":
      z, log_z = sample_graph_clamped(key, kernel["kernel"], batch_size,
                                      temperature)
      return {"graph": z, "log_graph": log_z,
              "link": jnp.ones(z.shape, bool)}
    z, log_z = sample_graph(key, kernel["log_kernel"], kernel["link"],
                            batch_size, temperature)
    link = jnp.broadcast_to(kernel["link"], z.shape)
    return {"graph": z, "log_graph": log_z, "link": link}
  raise ValueError(f"graph mode must be one of {GRAPH_MODES}, got {mode!r}.")
