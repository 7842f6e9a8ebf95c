"""The blocks of Neural Interpreters (`crl.models.interpreters`).

`compatibility` (the normalised, truncated kernel between functions and
tokens), `TypeInference` (the type MLP), `FunctionPod` (one iteration of the
functions: typed, kernel-modulated attention and MLP), `freeze_rows` and
`Script` (iterations of a pod over shared functions). Axis letters: `B`
batch, `T` tokens, `U` functions, `H` heads, `C` channels.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl.models import kernel as kernel_lib
from crl.models import layers

NORMALIZATION_EPS = 1e-6


def compatibility(distance: jax.Array, sigma: jax.Array | float,
                  tau: Optional[float], keep: Optional[jax.Array] = None,
                  eps: float = NORMALIZATION_EPS
                  ) -> tuple[jax.Array, jax.Array]:
  """Truncated, normalised function-token compatibility.

  `C~ = exp(-d / sigma) * [d <= tau] * keep` (straight-through truncation:
  the gradient is that of the untruncated kernel), then
  `C = C~ / (eps + max(sum_u C~, exp(-tau / sigma)))` over the function axis.
  A pair exactly at `d = tau` is kept.

  Args:
    distance: `[..., functions, tokens]` cosine distances in [0, 2].
    sigma: bandwidth (scalar, > 0).
    tau: truncation; None: none.
    keep: optional float mask (function dropout), broadcastable to
      `distance`, 1 where a pair is kept.
    eps: the normaliser's epsilon.

  Returns:
    `C` shaped like `distance` (sums to `S / (eps + S)` ~ 1 over functions
    where a function is compatible, exactly 0 where none is) and the bool
    truncation link (True where `d <= tau`).
  """
  kern = kernel_lib.signature_kernel(distance, sigma, tau)
  k = kern["kernel"]
  if keep is not None:
    k = k * keep
  total = jnp.sum(k, axis=-2, keepdims=True)
  floor = jax.lax.stop_gradient(
      jnp.exp(-(2.0 if tau is None else tau) / jnp.asarray(sigma)))
  return k / (eps + jnp.where(total >= floor, total, floor)), kern["link"]


class TypeInference(nn.Module):
  """Token types `t = MLP(LN(x))`: [LN, Dense, GELU] x (depth - 1), Dense.

  Attributes:
    features: type channels d_sig.
    hidden: hidden channels.
    depth: number of Dense layers (>= 1).
  """
  features: int
  hidden: int
  depth: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`[..., d_model]` -> `[..., d_sig]` (not normalised)."""
    h = nn.LayerNorm(name="norm")(x)
    for i in range(self.depth - 1):
      h = nn.gelu(nn.Dense(self.hidden, name=f"fc{i + 1}")(h),
                  approximate=False)
    return nn.Dense(self.features, name=f"fc{self.depth}")(h)


def relative_index(grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Relative row and column offsets between the grid's tokens.

  Args:
    grid: `(rows, cols)` of the patch grid.

  Returns:
    Two int arrays `[P, P]` (P = rows * cols, row-major) indexing tables of
    `2 * rows - 1` and `2 * cols - 1` entries.
  """
  rows, cols = grid
  r, c = np.divmod(np.arange(rows * cols), cols)
  return (r[None, :] - r[:, None] + rows - 1,
          c[None, :] - c[:, None] + cols - 1)


class FunctionPod(nn.Module):
  """One iteration of a script: type inference, routing, ModAttn + ModMLP.

  Shaped for `nn.scan` over iterations: `(x, consts) -> (x, outputs)` with
  the parameters broadcast (shared by all iterations).

  Attributes:
    d_model: token channels D.
    d_code: code channels.
    d_sig: type / signature channels.
    type_hidden: hidden channels of the type MLP.
    type_depth: Dense layers of the type MLP.
    num_heads: attention heads.
    head_dim: query/key channels per head.
    mlp_hidden: hidden channels of the ModMLP.
    modlin_mode: 'plain_scale' (W (x * g LN(W_c c)) + b) or 'one_plus'.
    modlin_gain_init: initial gain g.
    kernel_tau: truncation (None: none).
    function_dropout: probability of dropping a (function, token) pair.
    relative_positions: add the relative positional bias to the logits.
    num_cls_tokens: leading tokens without a grid position.
    grid: `(rows, cols)` of the patch grid.
    train: training mode (function dropout).
  """
  d_model: int
  d_code: int
  d_sig: int
  type_hidden: int
  type_depth: int
  num_heads: int
  head_dim: int
  mlp_hidden: int
  modlin_mode: str
  modlin_gain_init: float
  kernel_tau: Optional[float]
  function_dropout: float
  relative_positions: bool
  num_cls_tokens: int
  grid: tuple[int, int]
  train: bool

  def _modlin(self, in_features: int, features: int, use_bias: bool,
              name: str) -> layers.ModFC:
    return layers.ModFC(in_features, features, self.d_code, self.modlin_mode,
                        self.modlin_gain_init, use_bias, name=name)

  def _position_bias(self, codes: jax.Array) -> jax.Array:
    """Relative positional logits `[U, H, T, T]`, zero on class tokens."""
    rows, cols = self.grid
    heads = self.num_heads
    init = nn.initializers.normal(0.02)
    row_table = self.param("relative_row_bias", init, (2 * rows - 1, heads))
    col_table = self.param("relative_col_bias", init, (2 * cols - 1, heads))
    function_offset = nn.Dense(heads, use_bias=False,
                               name="relative_function_bias")(codes)  # [U, H]
    r_idx, c_idx = relative_index(self.grid)
    bias = row_table[r_idx] + col_table[c_idx]  # [P, P, H]
    bias = (jnp.transpose(bias, (2, 0, 1))[None]
            + function_offset[:, :, None, None])  # [U, H, P, P]
    n = self.num_cls_tokens
    return jnp.pad(bias, ((0, 0), (0, 0), (n, 0), (n, 0)))

  @nn.compact
  def __call__(self, x: jax.Array, signatures: jax.Array, codes: jax.Array,
               sigma: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs the pod once.

    Args:
      x: tokens `[batch, tokens, d_model]`.
      signatures: `[functions, d_sig]`.
      codes: `[functions, d_code]`.
      sigma: kernel bandwidth (scalar).

    Returns:
      New tokens `[batch, tokens, d_model]` and a dict with 'compatibility'
      `[batch, functions, tokens]`, 'truncated' and 'uncovered' (fractions).
    """
    b, t, d = x.shape
    u = signatures.shape[0]
    heads, dim = self.num_heads, self.head_dim

    # ---- Routing: types, distances, compatibilities [B, U, T].
    types = TypeInference(self.d_sig, self.type_hidden, self.type_depth,
                          name="type_inference")(x)
    distance = kernel_lib.cosine_distance(
        signatures, types.reshape(b * t, self.d_sig))
    distance = jnp.transpose(distance.reshape(u, b, t), (1, 0, 2))
    keep = None
    if self.train and self.function_dropout > 0.0:
      keep = jax.random.bernoulli(self.make_rng("dropout"),
                                  1.0 - self.function_dropout,
                                  distance.shape).astype(x.dtype)
    sigma = jnp.asarray(sigma, x.dtype)
    compat, link = compatibility(distance, sigma, self.kernel_tau, keep)
    c = jnp.transpose(compat, (0, 2, 1))[..., None]  # [B, T, U, 1]

    # ---- ModAttn: per-function attention among tokens, [B, T, U, D].
    # (ModFC broadcasts the codes' scales `[U, in]` against `[..., U, in]`;
    # a batched per-function matmul measured 4x slower on CPU.)
    xn = nn.LayerNorm(name="attention_norm")(x)
    xn = jnp.broadcast_to(xn[:, :, None, :], (b, t, u, d))
    q = self._modlin(d, heads * dim, False, "query")(xn, codes)
    k = self._modlin(d, heads * dim, False, "key")(xn, codes)
    v = self._modlin(d, d, True, "value")(xn, codes)
    q = q.reshape(b, t, u, heads, dim)
    k = k.reshape(b, t, u, heads, dim)
    v = v.reshape(b, t, u, heads, d // heads)
    logits = jnp.einsum("bruhc,bsuhc->buhrs", q, k) / math.sqrt(dim)
    if self.relative_positions:
      logits = logits + self._position_bias(codes)[None]
    weights = layers.softmax(logits)
    weights = (weights * compat[:, :, None, :, None]
               * compat[:, :, None, None, :])
    weights = weights / (jnp.sum(weights, axis=-1, keepdims=True)
                         + NORMALIZATION_EPS)
    out = jnp.einsum("buhrs,bsuhc->bruhc", weights, v).reshape(b, t, u, d)
    out = self._modlin(d, d, True, "attention_out")(out, codes)
    h = x[:, :, None, :] + c * out

    # ---- ModMLP, gated by the compatibility.
    m = nn.LayerNorm(name="mlp_norm")(h)
    m = nn.gelu(self._modlin(d, self.mlp_hidden, True, "mlp_fc1")(m, codes),
                approximate=False)
    m = self._modlin(self.mlp_hidden, d, True, "mlp_fc2")(m, codes)
    h = h + c * m

    # ---- Mix the functions' outputs back; uncovered tokens pass through.
    # The pass-through weight is a stop-gradient: the gradient with respect
    # to C is the published one (whose mixing has no pass-through), so a
    # token that no function takes still learns whether it should be taken.
    coverage = jax.lax.stop_gradient(jnp.sum(c, axis=2))  # [B, T, 1]
    x = (jnp.einsum("btu,btuc->btc", c[..., 0], h)
         + (1.0 - coverage) * x).astype(x.dtype)  # scan carry dtype
    covered = jnp.any(compat > 0.0, axis=1)  # [B, T]
    stats = {
        "compatibility": compat,
        "truncated": 1.0 - jnp.mean(link.astype(jnp.float32)),
        "uncovered": 1.0 - jnp.mean(covered.astype(jnp.float32)),
    }
    return x, stats


def freeze_rows(p: jax.Array, num_frozen: int, all_rows: bool) -> jax.Array:
  """`p` with no gradient to its first `num_frozen` rows (all if `all_rows`).

  Args:
    p: `[functions, channels]`.
    num_frozen: leading rows to freeze.
    all_rows: freeze every row.

  Returns:
    `p` (same values).
  """
  if all_rows:
    return jax.lax.stop_gradient(p)
  if num_frozen == 0:
    return p
  return jnp.concatenate([jax.lax.stop_gradient(p[:num_frozen]),
                          p[num_frozen:]], axis=0)


class Script(nn.Module):
  """A function pod iterated `num_iterations` times with shared weights.

  Owns the functions' signatures and codes; the first `num_frozen_functions`
  rows receive no gradient (capacity extension).

  Attributes:
    num_functions: functions U.
    num_iterations: iterations of the pod.
    num_frozen_functions: leading functions whose signature and code rows
      get no gradient.
    freeze_signatures: no gradient to any signature (fixed signatures).
    freeze_codes: no gradient to any code.
    kernel_sigma: bandwidth (initial value when learned).
    learn_sigma: learn the bandwidth (parameter 'kernel_log_sigma').
    pod: keyword arguments of `FunctionPod` (a tuple of pairs).
    remat: recompute each iteration's activations in the backward pass
      instead of storing them for every iteration.
  """
  num_functions: int
  num_iterations: int
  num_frozen_functions: int
  freeze_signatures: bool
  freeze_codes: bool
  kernel_sigma: float
  learn_sigma: bool
  pod: tuple[tuple[str, Any], ...]
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`[batch, tokens, d_model]` -> same, and per-iteration statistics."""
    pod = dict(self.pod)
    init = nn.initializers.normal(1.0)
    signatures = self.param("function_signatures", init,
                            (self.num_functions, pod["d_sig"]))
    codes = self.param("function_codes", init,
                       (self.num_functions, pod["d_code"]))

    signatures = freeze_rows(signatures, self.num_frozen_functions,
                             self.freeze_signatures)
    codes = freeze_rows(codes, self.num_frozen_functions, self.freeze_codes)
    if self.learn_sigma:
      sigma = jnp.exp(self.param(
          "kernel_log_sigma",
          nn.initializers.constant(math.log(self.kernel_sigma)), ()))
    else:
      sigma = jnp.asarray(self.kernel_sigma, jnp.float32)

    pod_cls = (nn.remat(FunctionPod, prevent_cse=False) if self.remat
               else FunctionPod)
    scanned = nn.scan(
        pod_cls, variable_broadcast="params",
        split_rngs={"params": False, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
        length=self.num_iterations)
    return scanned(name="pod", **pod)(x, signatures, codes, sigma)

