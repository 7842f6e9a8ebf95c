"""Building blocks shared by NAC, Perceiver IO, ViT and Neural Interpreters.

Conventions: `B` batch, `V` input tokens, `U` receiving modules, `W` sending
modules, `H` heads, `C` channels. Every block takes a keyword-only
`deterministic` flag; stochastic depth draws from the rng stream 'dropout'.

The module-conditioned linear layer (ModFC) is the core primitive: a weight
matrix `W` shared by all modules, modulated per module by its code `c_u`,
`y = W (x * scale(c_u)) + b`. That equals a per-module weight
`W diag(scale(c_u))` while storing only the code.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGE_MEAN = 0.5
IMAGE_STD = 0.25

MODFC_MODES = ("one_plus", "plain_scale", "dense")
# 'crl': lecun-normal ModFC weights, flax defaults in the tokenizer.
# 'official': as the official PyTorch NAC: ModFC weight and code projection
# U(+-1/sqrt(fan_in)) (torch's kaiming_uniform(a=sqrt(5))), zero bias;
# ConvNeXt conv/linear weights timm's trunc_normal_(std=0.02) (cut at +-2
# absolute, i.e. +-100 std), zero bias.
INIT_SCHEMES = ("crl", "official")
FFN_KINDS = ("geglu", "gelu")
TOKENIZERS = ("convnext", "patch")

# A finite stand-in for log(0) in attention logits. Adding it to O(10) scores
# makes exp() underflow to exactly 0 after the softmax's max-subtraction, and
# unlike -inf it never produces inf - inf = NaN.
MASK_VALUE = -1e9

_SCALE_NORM_EPS = 1e-6


def standardize_images(images: jax.Array) -> jax.Array:
  """Maps images in [0, 1] to roughly zero mean and unit scale.

  Args:
    images: float `[batch, height, width, 3]` in [0, 1].

  Returns:
    `(images - 0.5) / 0.25`, same shape, float32.
  """
  return (jnp.asarray(images, jnp.float32) - IMAGE_MEAN) / IMAGE_STD


def _plain_layer_norm(x: jax.Array, eps: float = _SCALE_NORM_EPS) -> jax.Array:
  """Layer norm over the last axis without a learned scale or offset."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.var(x, axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def _check_init(init: str) -> None:
  if init not in INIT_SCHEMES:
    raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}.")


def _linear_init(init: str):
  """Weight initialiser of ModFC kernels / code projections (`[in, out]`)."""
  _check_init(init)
  if init == "official":
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
  return nn.initializers.lecun_normal()


def _convnext_init(init: str) -> dict:
  """Kernel/bias initialisers of the tokenizer's convs and dense layers."""
  _check_init(init)
  if init == "official":
    return dict(kernel_init=nn.initializers.truncated_normal(
        0.02, lower=-100.0, upper=100.0),
                bias_init=nn.initializers.zeros)
  return {}


class ModFC(nn.Module):
  """Module-conditioned linear layer: `y = W (x * scale(c)) + b`.

  `scale(c) = g * LN(W_c c)` ('plain_scale') or `1 + g * LN(W_c c)`
  ('one_plus'), where `LN` has no affine parameters and `g` is a learnable
  scalar gain. Mode 'dense' drops the modulation: a plain shared Dense layer
  (the NAC-as-Perceiver ablation).

  Parameters: 'kernel' `[in, out]`, 'bias' `[out]`, 'code_proj'
  `[code, in]` and the scalar 'gain'.

  Attributes:
    in_features: input channels.
    features: output channels.
    code_features: channels of the conditioning code.
    mode: 'one_plus', 'plain_scale' or 'dense'.
    gain_init: initial value of the gain `g`.
    use_bias: whether to add `b`.
    norm_eps: epsilon of the LayerNorm `LN` of the scale (1e-5 in the
      official NAC's `F.layer_norm`).
    init_scheme: weight initialisation scheme, see `INIT_SCHEMES`.
  """
  in_features: int
  features: int
  code_features: int
  mode: str = "one_plus"
  gain_init: float = 0.1
  use_bias: bool = True
  norm_eps: float = _SCALE_NORM_EPS
  init_scheme: str = "crl"

  def setup(self):
    if self.mode not in MODFC_MODES:
      raise ValueError(f"ModFC mode must be one of {MODFC_MODES}, got "
                       f"{self.mode!r}.")
    self.kernel = self.param("kernel", _linear_init(self.init_scheme),
                             (self.in_features, self.features))
    if self.use_bias:
      self.bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.mode != "dense":
      self.code_proj = self.param("code_proj", _linear_init(self.init_scheme),
                                  (self.code_features, self.in_features))
      self.gain = self.param("gain", nn.initializers.constant(self.gain_init),
                             ())

  def scale(self, codes: jax.Array) -> Optional[jax.Array]:
    """The per-module input scale.

    Args:
      codes: `[..., modules, code]`.

    Returns:
      `[..., modules, in]`, or None in 'dense' mode (scale 1).
    """
    if self.mode == "dense":
      return None
    s = self.gain * _plain_layer_norm(
        jnp.einsum("...c,ci->...i", codes, self.code_proj), self.norm_eps)
    return 1.0 + s if self.mode == "one_plus" else s

  def weights(self) -> tuple[jax.Array, Optional[jax.Array]]:
    """Returns `(W [in, out], b [out] or None)`."""
    return self.kernel, (self.bias if self.use_bias else None)

  def project(self, x: jax.Array) -> jax.Array:
    """Applies the shared `W x + b` to already-scaled inputs `[..., in]`."""
    y = jnp.einsum("...i,io->...o", x, self.kernel)
    return y + self.bias if self.use_bias else y

  def __call__(self, x: jax.Array, codes: jax.Array) -> jax.Array:
    """Applies the layer.

    Args:
      x: `[..., modules, in]`.
      codes: `[modules, code]` (broadcast against `x`).

    Returns:
      `[..., modules, out]`.
    """
    s = self.scale(codes)
    return self.project(x if s is None else x * s)


class LayerScale(nn.Module):
  """Per-channel learnable residual scale (`x * gamma`, gamma init small)."""
  init_value: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gamma = self.param("scale", nn.initializers.constant(self.init_value),
                       (x.shape[-1],))
    return x * gamma


class DropPath(nn.Module):
  """Stochastic depth: drops a residual branch per example.

  Uses the rng stream 'dropout'. Kept branches are scaled by `1 / (1 - rate)`.
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0)


def _residual(x: jax.Array, branch: jax.Array,
              layer_scale_init: Optional[float], drop_path: float,
              deterministic: bool, name: str) -> jax.Array:
  """`x + DropPath(LayerScale(branch))`; call inside a compact method."""
  if layer_scale_init is not None:
    branch = LayerScale(layer_scale_init, name=f"{name}_layer_scale")(branch)
  if drop_path > 0.0:
    branch = DropPath(drop_path, name=f"{name}_drop_path")(
        branch, deterministic=deterministic)
  return x + branch


def softmax(logits: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax computed in float32, returned in the logits' dtype (mixed
  precision: `crl.models.precision`)."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=axis).astype(
      logits.dtype)


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
    return _residual(receivers, out, self.layer_scale_init, self.drop_path,
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


class ModFeedForward(nn.Module):
  """Pre-norm feed-forward block built from ModFC, with residual.

  'geglu': `ModFC(C -> 2 hidden)`, `a * gelu(gate)`, `ModFC(hidden -> C)`;
  'gelu': `ModFC(C -> hidden)`, gelu, `ModFC(hidden -> C)`.

  Attributes:
    features: state channels.
    hidden: hidden channels.
    code_features: code channels.
    kind: 'geglu' or 'gelu'.
    modfc_mode: see `ModFC`.
    modfc_gain_init: see `ModFC`.
    layer_scale_init: LayerScale init, None for no LayerScale.
    drop_path: stochastic depth rate.
    norm_eps: epsilon of the LayerNorm (and of ModFC's scale norm).
    init_scheme: weight initialisation scheme, see `INIT_SCHEMES`.
    gelu_approximate: tanh-approximate GELU instead of the exact (erf) one.
  """
  features: int
  hidden: int
  code_features: int
  kind: str = "geglu"
  modfc_mode: str = "one_plus"
  modfc_gain_init: float = 0.1
  layer_scale_init: Optional[float] = None
  drop_path: float = 0.0
  norm_eps: float = 1e-6
  init_scheme: str = "crl"
  gelu_approximate: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, codes: jax.Array, *,
               deterministic: bool) -> jax.Array:
    """Applies the block.

    Args:
      x: `[batch, modules, features]`.
      codes: `[modules, code]`.
      deterministic: disables DropPath.

    Returns:
      `[batch, modules, features]`.
    """
    if self.kind not in FFN_KINDS:
      raise ValueError(f"ffn must be one of {FFN_KINDS}, got {self.kind!r}.")

    def modfc(in_features, features, name):
      return ModFC(in_features, features, self.code_features, self.modfc_mode,
                   self.modfc_gain_init, True, self.norm_eps,
                   self.init_scheme,
                   name=name)

    h = nn.LayerNorm(epsilon=self.norm_eps, name="norm")(x)
    if self.kind == "geglu":
      h = modfc(self.features, 2 * self.hidden, "fc1")(h, codes)
      a, gate = jnp.split(h, 2, axis=-1)
      h = a * nn.gelu(gate, approximate=self.gelu_approximate)
    else:
      h = nn.gelu(modfc(self.features, self.hidden, "fc1")(h, codes),
                  approximate=self.gelu_approximate)
    h = modfc(self.hidden, self.features, "fc2")(h, codes)
    return _residual(x, h, self.layer_scale_init, self.drop_path,
                     deterministic, "ffn")


class ConvNeXtBlock(nn.Module):
  """ConvNeXt block: depthwise 7x7, LN, MLP x4 (GELU), LayerScale, residual.

  `init_scheme`: see `INIT_SCHEMES`.
  """
  layer_scale_init: float = 1e-6
  init_scheme: str = "crl"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the block to `[batch, height, width, channels]`."""
    c = x.shape[-1]
    init = _convnext_init(self.init_scheme)
    h = nn.Conv(c, (7, 7), padding="SAME", feature_group_count=c,
                name="depthwise", **init)(x)
    h = nn.LayerNorm(name="norm")(h)
    h = nn.gelu(nn.Dense(4 * c, name="fc1", **init)(h), approximate=False)
    h = nn.Dense(c, name="fc2", **init)(h)
    h = LayerScale(self.layer_scale_init, name="layer_scale")(h)
    return x + h


class ImageTokenizer(nn.Module):
  """Image -> tokens, concatenated with a learned positional grid.

  'convnext': stem conv (kernel = stride = `patch_size`) to `channels`, LN,
  then stages of ConvNeXt blocks (`blocks[i]` blocks in stage i); every stage
  after the first starts with LN + a stride-2 2x2 conv doubling the channels.
  'patch': one conv with kernel = stride = `patch_size` (a patch embedding).
  A learned `[grid_h, grid_w, pos_grid_channels]` grid (parameter
  'positional_grid') is concatenated on channels.

  Attributes:
    kind: 'convnext' or 'patch'.
    patch_size: stem / patch stride.
    channels: stem channels.
    blocks: ConvNeXt blocks per stage (ignored for 'patch').
    pos_grid_channels: channels of the positional grid (0 for none).
    init_scheme: weight initialisation of the convs and ConvNeXt blocks, see
      `INIT_SCHEMES`.
  """
  kind: str = "convnext"
  patch_size: int = 4
  channels: int = 32
  blocks: Sequence[int] = (1,)
  pos_grid_channels: int = 64
  init_scheme: str = "crl"

  def output_stride(self) -> int:
    """Total downsampling factor from pixels to tokens."""
    if self.kind == "patch":
      return self.patch_size
    return self.patch_size * 2 ** max(len(self.blocks) - 1, 0)

  def output_channels(self) -> int:
    """Channels per token, positional grid included."""
    if self.kind == "patch":
      c = self.channels
    else:
      c = self.channels * 2 ** max(len(self.blocks) - 1, 0)
    return c + self.pos_grid_channels

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """Tokenizes images.

    Args:
      images: standardized `[batch, height, width, 3]`.

    Returns:
      `[batch, tokens, channels]` with tokens in row-major grid order.
    """
    if self.kind not in TOKENIZERS:
      raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got "
                       f"{self.kind!r}.")
    stride = self.output_stride()
    height, width = images.shape[1:3]
    if height % stride or width % stride:
      raise ValueError(
          f"image size {height}x{width} must be divisible by the tokenizer's "
          f"total stride {stride} (patch_size={self.patch_size}, "
          f"{len(self.blocks)} stage(s)).")
    p = self.patch_size
    init = _convnext_init(self.init_scheme)
    x = nn.Conv(self.channels, (p, p), strides=(p, p), padding="VALID",
                name="stem", **init)(images)
    if self.kind == "convnext":
      x = nn.LayerNorm(name="stem_norm")(x)
      for stage, depth in enumerate(self.blocks):
        if stage > 0:
          x = nn.LayerNorm(name=f"downsample{stage}_norm")(x)
          x = nn.Conv(self.channels * 2 ** stage, (2, 2), strides=(2, 2),
                      padding="VALID", name=f"downsample{stage}", **init)(x)
        for i in range(depth):
          x = ConvNeXtBlock(init_scheme=self.init_scheme,
                            name=f"stage{stage}_block{i}")(x)
    b, gh, gw, _ = x.shape
    if self.pos_grid_channels > 0:
      grid = self.param("positional_grid", nn.initializers.normal(1.0),
                        (gh, gw, self.pos_grid_channels))
      grid = jnp.broadcast_to(grid, (b,) + grid.shape)
      x = jnp.concatenate([x, grid.astype(x.dtype)], axis=-1)
    return x.reshape(b, gh * gw, x.shape[-1])
