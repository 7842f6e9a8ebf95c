"""Attention between modules, with per-module ModFC projections.

`ModAttention` (modules attend to modules through an optional graph),
`ReadInAttention` (modules read input tokens) and `masked_softmax` (the
softmax with a log graph on the logits). Axis letters as in
`crl.models.layers`: `B` batch, `V` input tokens, `U` receiving modules, `W`
sending modules, `H` heads, `C` channels.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from crl.models.layers import LayerScale, ModFC, residual, softmax

# A finite stand-in for log(0) in attention logits. Adding it to O(10) scores
# makes exp() underflow to exactly 0 after the softmax's max-subtraction, and
# unlike -inf it never produces inf - inf = NaN.
MASK_VALUE = -1e9


def masked_softmax(scores: jax.Array, log_graph: Optional[jax.Array] = None,
                   link: Optional[jax.Array] = None) -> jax.Array:
  """Softmax over senders with a (log) graph added to the logits.

  Non-links carry `MASK_VALUE` in `log_graph`, so they get exactly zero weight.
  A row with no link at all falls back to uniform weights over all senders
  (it cannot NaN). NAC's mediator rows always keep their self-link, so the
  fallback only concerns read-out rows or thresholded graphs.

  Args:
    scores: `[batch, heads, receivers, senders]`.
    log_graph: broadcastable to `scores`, or None (complete graph).
    link: bool, broadcastable to `scores`; True where a link exists.

  Returns:
    Attention weights shaped like `scores`.
  """
  if log_graph is None:
    return softmax(scores)
  weights = jax.nn.softmax(scores.astype(jnp.float32) + log_graph, axis=-1)
  if link is not None:
    has_link = jnp.any(link, axis=-1, keepdims=True)
    weights = jnp.where(has_link, weights, 1.0 / scores.shape[-1])
  return weights.astype(scores.dtype)


def _graph_to_bhuw(x: Optional[jax.Array]) -> Optional[jax.Array]:
  """Head axis: `[U, W]` -> `[1, 1, U, W]`, `[B, U, W]` -> `[B, 1, U, W]`."""
  if x is None:
    return None
  return x[None, None] if x.ndim == 2 else x[:, None]


class ModAttention(nn.Module):
  """Multi-head attention between modules with per-module ModFC projections.

  Queries are projected with the receivers' codes, keys and values with the
  senders' codes; an optional (log) graph masks the logits:
  `softmax_w(q_u . k_w / sqrt(C) + log g_uw)`. The exit projection uses the
  receivers' codes, then LayerScale, DropPath and the residual.

  Attributes:
    features: state channels (receivers and output).
    code_features: code channels.
    num_heads: attention heads.
    head_dim: channels per head.
    modfc_mode: see `ModFC`.
    modfc_gain_init: see `ModFC`.
    qkv_bias: bias in the query/key/value projections.
    layer_scale_init: LayerScale init, None for no LayerScale.
    drop_path: stochastic depth rate.
    norm_eps: epsilon of the LayerNorms (and of ModFC's scale norm).
    init_scheme: weight initialisation scheme, see `INIT_SCHEMES`.
    shared_norm: one LayerNorm ('receiver_norm') for receivers and senders
      (the official propagators' `share_layernorm`) instead of two.
    residual: add the receivers back (`h + m`); False returns the message
      `m` alone (the official read-out, `include_residual_in_latent_attention
      =False`; LayerScale still applies, DropPath needs a residual).
  """
  features: int
  code_features: int
  num_heads: int
  head_dim: int
  modfc_mode: str = "one_plus"
  modfc_gain_init: float = 0.1
  qkv_bias: bool = False
  layer_scale_init: Optional[float] = None
  drop_path: float = 0.0
  norm_eps: float = 1e-6
  init_scheme: str = "crl"
  shared_norm: bool = False
  residual: bool = True

  @nn.compact
  def __call__(self, receivers: jax.Array, receiver_codes: jax.Array,
               senders: jax.Array, sender_codes: jax.Array,
               log_graph: Optional[jax.Array] = None,
               link: Optional[jax.Array] = None, *,
               deterministic: bool) -> tuple[jax.Array, jax.Array]:
    """Updates the receivers.

    Args:
      receivers: `[batch, receivers, features]`.
      receiver_codes: `[receivers, code]`.
      senders: `[batch, senders, features]`.
      sender_codes: `[senders, code]`.
      log_graph: `[receivers, senders]` or `[batch, receivers, senders]`, or
        None for the complete graph.
      link: bool, same shape as `log_graph`.
      deterministic: disables DropPath.

    Returns:
      New receiver states `[batch, receivers, features]` and the attention
      weights `[batch, heads, receivers, senders]`.
    """
    b, u, _ = receivers.shape
    w = senders.shape[1]
    heads, dim = self.num_heads, self.head_dim
    inner = heads * dim

    def modfc(in_features, features, use_bias, name):
      return ModFC(in_features, features, self.code_features, self.modfc_mode,
                   self.modfc_gain_init, use_bias, self.norm_eps,
                   self.init_scheme,
                   name=name)

    receiver_norm = nn.LayerNorm(epsilon=self.norm_eps, name="receiver_norm")
    sender_norm = (receiver_norm if self.shared_norm else
                   nn.LayerNorm(epsilon=self.norm_eps, name="sender_norm"))
    r = receiver_norm(receivers)
    s = sender_norm(senders)
    q = modfc(self.features, inner, self.qkv_bias, "query")(r, receiver_codes)
    k = modfc(self.features, inner, self.qkv_bias, "key")(s, sender_codes)
    v = modfc(self.features, inner, self.qkv_bias, "value")(s, sender_codes)
    q = q.reshape(b, u, heads, dim)
    k = k.reshape(b, w, heads, dim)
    v = v.reshape(b, w, heads, dim)
    scores = jnp.einsum("buhc,bwhc->bhuw", q, k) / math.sqrt(dim)
    weights = masked_softmax(scores, _graph_to_bhuw(log_graph),
                             _graph_to_bhuw(link))
    out = jnp.einsum("bhuw,bwhc->buhc", weights, v).reshape(b, u, inner)
    out = modfc(inner, self.features, True, "exit")(out, receiver_codes)
    if not self.residual:
      if self.layer_scale_init is not None:
        out = LayerScale(self.layer_scale_init, name="exit_layer_scale")(out)
      return out, weights
    return residual(receivers, out, self.layer_scale_init, self.drop_path,
                    deterministic, "exit"), weights


class ReadInAttention(nn.Module):
  """Modules (queries) read the input tokens through their own projections.

  `q = ModFC(LN(h_u), c_u)`, `k_uv, v_uv = ModFC(LN(x_v), c_u)`: the keys and
  values of every token are projected with the *receiving* module's code, so
  conceptually they are `[batch, heads, modules, tokens, channels]`.

  `fold=True` never builds that tensor. With `s_u = scale(c_u)` and the
  shared key weight `W_k`:
    `q_u . k_uv = (s_u * (W_k^T q_u)) . x_v + q_u . b_k`,
  so the scale is folded into a per-module query in token space (the bias
  term is constant over tokens and cancels in the softmax over tokens), and
  since the weights sum to one over tokens,
    `sum_v a_uv v_uv = W_v^T (s_u * sum_v a_uv x_v) + b_v`.
  Both are exact rewrites (up to float rounding), and cost
  O(B H U V C_in) instead of O(B U V C_in H C). `fold=False` computes the
  explicit per-module keys and values (the reference; used in tests).

  `shared_projection=True` uses one plain Dense key/value projection for all
  modules (Perceiver-style), computed once per token.

  Attributes:
    features: state channels of the modules.
    code_features: code channels.
    num_heads: heads.
    head_dim: channels per head.
    modfc_mode: see `ModFC`.
    modfc_gain_init: see `ModFC`.
    qkv_bias: bias in query/key/value projections.
    layer_scale_init: LayerScale init, None for no LayerScale.
    shared_projection: share key/value projections across modules.
    fold: use the folded (fast, equal) computation.
    norm_eps: epsilon of the LayerNorms (and of ModFC's scale norm).
    init_scheme: weight initialisation scheme, see `INIT_SCHEMES`.
  """
  features: int
  code_features: int
  num_heads: int
  head_dim: int
  modfc_mode: str = "one_plus"
  modfc_gain_init: float = 0.1
  qkv_bias: bool = False
  layer_scale_init: Optional[float] = None
  shared_projection: bool = False
  fold: bool = True
  norm_eps: float = 1e-6
  init_scheme: str = "crl"

  @nn.compact
  def __call__(self, receivers: jax.Array, codes: jax.Array, tokens: jax.Array,
               *, deterministic: bool) -> tuple[jax.Array, jax.Array]:
    """Reads the tokens into the module states.

    Args:
      receivers: `[batch, modules, features]`.
      codes: `[modules, code]`.
      tokens: `[batch, tokens, token_channels]`.
      deterministic: unused here (read-in has no DropPath); kept for a
        uniform interface.

    Returns:
      New states `[batch, modules, features]` and attention weights
      `[batch, heads, modules, tokens]`.
    """
    del deterministic
    b, u, _ = receivers.shape
    token_dim = tokens.shape[-1]
    heads, dim = self.num_heads, self.head_dim
    inner = heads * dim

    def modfc(in_features, features, use_bias, name, mode=self.modfc_mode):
      return ModFC(in_features, features, self.code_features, mode,
                   self.modfc_gain_init, use_bias, self.norm_eps,
                   self.init_scheme,
                   name=name)

    r = nn.LayerNorm(epsilon=self.norm_eps, name="receiver_norm")(receivers)
    x = nn.LayerNorm(epsilon=self.norm_eps, name="token_norm")(tokens)
    q = modfc(self.features, inner, self.qkv_bias, "query")(r, codes)
    q = q.reshape(b, u, heads, dim)
    scale = 1.0 / math.sqrt(dim)
    kv_mode = "dense" if self.shared_projection else self.modfc_mode
    key = modfc(token_dim, inner, self.qkv_bias, "key", kv_mode)
    value = modfc(token_dim, inner, self.qkv_bias, "value", kv_mode)

    if self.shared_projection or kv_mode == "dense":
      # One projection for all modules: k, v are [B, V, H, C].
      k = key.project(x).reshape(b, -1, heads, dim)
      v = value.project(x).reshape(b, -1, heads, dim)
      weights = softmax(
          jnp.einsum("buhc,bvhc->bhuv", q, k) * scale, axis=-1)
      out = jnp.einsum("bhuv,bvhc->buhc", weights, v)
    elif self.fold:
      w_k, _ = key.weights()
      w_v, b_v = value.weights()
      w_k = w_k.reshape(token_dim, heads, dim)
      w_v = w_v.reshape(token_dim, heads, dim)
      s_k = key.scale(codes)  # [U, C_in]
      s_v = value.scale(codes)  # [U, C_in]
      # Per-module query in token space: s_u * (W_k^T q_u), [B, H, U, C_in].
      q_tok = jnp.einsum("buhc,ihc->bhui", q, w_k) * s_k
      weights = softmax(
          jnp.einsum("bhui,bvi->bhuv", q_tok, x) * scale, axis=-1)
      pooled = jnp.einsum("bhuv,bvi->bhui", weights, x) * s_v
      out = jnp.einsum("bhui,ihc->buhc", pooled, w_v)
      if b_v is not None:
        out = out + b_v.reshape(heads, dim)
    else:
      # Explicit per-module keys and values: [B, U, V, H, C].
      s_k = key.scale(codes)[None, :, None, :]
      s_v = value.scale(codes)[None, :, None, :]
      x_u = x[:, None, :, :]
      k = key.project(x_u * s_k).reshape(b, u, -1, heads, dim)
      v = value.project(x_u * s_v).reshape(b, u, -1, heads, dim)
      weights = softmax(
          jnp.einsum("buhc,buvhc->bhuv", q, k) * scale, axis=-1)
      out = jnp.einsum("bhuv,buvhc->buhc", weights, v)

    out = modfc(inner, self.features, True, "exit")(
        out.reshape(b, u, inner), codes)
    if self.layer_scale_init is not None:
      out = LayerScale(self.layer_scale_init, name="exit_layer_scale")(out)
    return receivers + out, weights

