"""Perceiver IO (Jaegle et al., ICLR 2022), the dense baseline of NAC.

A standard Perceiver IO image classifier with the NAC tokenizer, so that the
comparison with NAC changes the latent processor only:

  tokens  = ImageTokenizer(images)                        [B, V, C_tok]
  latents = learned array                                 [B, N, D]
  latents = CrossAttention(latents <- tokens) + MLP       (one read-in,
            shared by all latents: plain Dense q/k/v, pre-LN, residual)
  latents = num_layers x [SelfAttention + MLP]            (pre-LN, residual;
            weights shared across layers only with `share_weights`)
  outputs = CrossAttention(queries <- latents) + MLP      [B, Q, D]
  logits  = classifier(LN(mean_q outputs))                [B, num_classes]

The attention and feed-forward blocks are the NAC blocks of
`crl.models.layers` in their 'dense' mode (no code modulation: a plain shared
Dense layer), so Perceiver IO and NAC share every line of attention code.

The NAC-as-Perceiver ablation of specs/nac.md is *not* this class: it is
`crl.models.nac.NAC` with `complete_graph=True, modfc_mode='dense',
graph_prior=None, freeze_signatures=True, stochastic_kernel=False` (see
configs/perceiver.py, variants `nac_ablation*`).

Call (`train` is a Python bool):
  `logits, aux = model.apply(variables, images, train=bool,
                             rngs={'dropout': k1})`
with images float32 `[batch, height, width, 3]` in [0, 1]. The 'dropout'
stream drives DropPath (needed only with `train=True` and `drop_path > 0`).

`aux` holds
  'features': `[batch, d_latent]` the pooled, normalised output queries fed to
    the final Dense 'classifier';
  'read_in_attention': `[batch, cross_heads, num_latents, tokens]`;
  'reg_loss': 0.0 (no regulariser).
"""

from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl.models import attention
from crl.models import layers
from crl.models import tokenizer as tokenizer_lib


class PerceiverIO(nn.Module):
  """Perceiver IO image classifier (shared cross-attention read-in).

  Defaults are the benchmark size matched to NAC-S/32 (about 1.70M
  parameters with 10 classes; configs/perceiver.py:bench).

  Attributes:
    num_classes: output classes.
    tokenizer: 'convnext' (stem + ConvNeXt stages) or 'patch'.
    patch_size: stem / patch stride in pixels.
    stem_channels: channels after the stem (doubled by each further stage).
    tokenizer_blocks: ConvNeXt blocks per stage (see `NAC`).
    pos_grid_channels: channels of the learned positional grid.
    num_latents: N, rows of the learned latent array.
    d_latent: D, latent (and output query) channels.
    num_layers: latent self-attention blocks (>= 0).
    share_weights: one self-attention block applied `num_layers` times.
    num_heads: heads of the latent self-attention.
    head_dim: channels per head in every attention; None: d_latent // heads.
    cross_heads: heads of the read-in cross-attention.
    decoder_heads: heads of the decoder cross-attention.
    num_output_queries: Q, learned output queries of the decoder.
    ffn: 'gelu' (MLP) or 'geglu' feed-forward blocks.
    ffn_hidden: hidden channels of the feed-forward blocks.
    qkv_bias: bias in query/key/value projections.
    layer_scale_init: LayerScale init; None for no LayerScale.
    drop_path: stochastic depth rate of the self-attention and decoder
      residual branches (the read-in has none).
  """
  num_classes: int = 10
  tokenizer: str = "convnext"
  patch_size: int = 4
  stem_channels: int = 32
  tokenizer_blocks: Tuple[int, ...] = (1,)
  pos_grid_channels: int = 64
  num_latents: int = 64
  d_latent: int = 128
  num_layers: int = 7
  share_weights: bool = False
  num_heads: int = 4
  head_dim: Optional[int] = 32
  cross_heads: int = 1
  decoder_heads: int = 1
  num_output_queries: int = 1
  ffn: str = "gelu"
  ffn_hidden: int = 512
  qkv_bias: bool = False
  layer_scale_init: Optional[float] = None
  drop_path: float = 0.0

  def __post_init__(self):
    self._validate()
    super().__post_init__()

  def _validate(self) -> None:
    """Raises ValueError naming the offending field."""
    name = type(self).__name__
    for field, options in (("tokenizer", tokenizer_lib.TOKENIZERS),
                           ("ffn", layers.FFN_KINDS)):
      if getattr(self, field) not in options:
        raise ValueError(f"{name}.{field} must be one of {options}, got "
                         f"{getattr(self, field)!r}.")
    for field, minimum in (
        ("num_classes", 1), ("patch_size", 1), ("stem_channels", 1),
        ("pos_grid_channels", 0), ("num_latents", 1), ("d_latent", 1),
        ("num_layers", 0), ("num_heads", 1), ("cross_heads", 1),
        ("decoder_heads", 1), ("num_output_queries", 1), ("ffn_hidden", 1)):
      value = getattr(self, field)
      if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}.{field} must be an integer >= {minimum}, "
                         f"got {value!r}.")
    blocks = tokenizer_lib.tokenizer_blocks(name, self.tokenizer_blocks)
    if self.tokenizer == "convnext" and (
        len(blocks) < 1 or any(d < 0 for d in blocks)):
      raise ValueError(f"{name}.tokenizer_blocks must list >= 0 blocks for "
                       "each of at least one stage, got "
                       f"{self.tokenizer_blocks!r}.")
    if self.head_dim is None:
      for field in ("num_heads", "cross_heads", "decoder_heads"):
        if self.d_latent % getattr(self, field):
          raise ValueError(
              f"{name}.d_latent={self.d_latent} must be divisible by "
              f"{name}.{field}={getattr(self, field)} when head_dim is None.")
    elif not isinstance(self.head_dim, (int, np.integer)) or self.head_dim < 1:
      raise ValueError(f"{name}.head_dim must be None or an integer >= 1, "
                       f"got {self.head_dim!r}.")
    if not 0.0 <= self.drop_path < 1.0:
      raise ValueError(f"{name}.drop_path must be in [0, 1), got "
                       f"{self.drop_path}.")

  def _head_dim(self, heads: int) -> int:
    return self.head_dim if self.head_dim is not None else (
        self.d_latent // heads)

  def _attention(self, heads: int, drop_path: float,
                 name: str) -> attention.ModAttention:
    """Pre-LN multi-head attention with plain Dense projections + residual."""
    return attention.ModAttention(
        self.d_latent, 1, heads, self._head_dim(heads), modfc_mode="dense",
        qkv_bias=self.qkv_bias, layer_scale_init=self.layer_scale_init,
        drop_path=drop_path, name=name)

  def _ffn(self, drop_path: float, name: str) -> layers.ModFeedForward:
    """Pre-LN feed-forward block (plain Dense) + residual."""
    return layers.ModFeedForward(
        self.d_latent, self.ffn_hidden, 1, self.ffn, modfc_mode="dense",
        layer_scale_init=self.layer_scale_init, drop_path=drop_path,
        name=name)

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Classifies images.

    Args:
      images: float32 `[batch, height, width, 3]` in [0, 1].
      train: training mode (DropPath).

    Returns:
      `logits` `[batch, num_classes]` and the `aux` dict (module docstring).
    """
    layers.check_train_flag(type(self).__name__, train)
    deterministic = not train
    x = layers.standardize_images(images)
    batch = x.shape[0]
    tokens = tokenizer_lib.ImageTokenizer(
        self.tokenizer, self.patch_size, self.stem_channels,
        tokenizer_lib.tokenizer_blocks(type(self).__name__,
                                       self.tokenizer_blocks),
        self.pos_grid_channels, name="tokenizer")(x)  # [B, V, C_tok]

    init = nn.initializers.truncated_normal(0.02)
    latents = self.param("latents", init, (self.num_latents, self.d_latent))
    h = jnp.broadcast_to(latents, (batch,) + latents.shape)  # [B, N, D]

    # ---- Encoder: one cross-attention read-in, shared by all latents. In
    # 'dense' mode the layers ignore codes, so none are passed.
    h, read_in_attention = attention.ReadInAttention(
        self.d_latent, 1, self.cross_heads, self._head_dim(self.cross_heads),
        modfc_mode="dense", qkv_bias=self.qkv_bias,
        layer_scale_init=self.layer_scale_init, shared_projection=True,
        name="read_in")(h, None, tokens, deterministic=deterministic)
    h = self._ffn(0.0, "read_in_ffn")(h, None, deterministic=deterministic)

    # ---- Processor: latent self-attention.
    if self.share_weights:
      shared = (self._attention(self.num_heads, self.drop_path, "latent"),
                self._ffn(self.drop_path, "latent_ffn"))
    for layer in range(self.num_layers):
      attend, ffn = shared if self.share_weights else (
          self._attention(self.num_heads, self.drop_path, f"latent{layer}"),
          self._ffn(self.drop_path, f"latent{layer}_ffn"))
      h, _ = attend(h, None, h, None, deterministic=deterministic)
      h = ffn(h, None, deterministic=deterministic)

    # ---- Decoder: learned output queries read the latents.
    queries = self.param("output_queries", init,
                         (self.num_output_queries, self.d_latent))
    out = jnp.broadcast_to(queries, (batch,) + queries.shape)  # [B, Q, D]
    out, _ = self._attention(self.decoder_heads, self.drop_path, "decoder")(
        out, None, h, None, deterministic=deterministic)
    out = self._ffn(self.drop_path, "decoder_ffn")(
        out, None, deterministic=deterministic)
    features = nn.LayerNorm(name="head_norm")(jnp.mean(out, axis=1))  # [B, D]
    logits = nn.Dense(self.num_classes, name="classifier")(features)
    aux = {
        "features": features,
        "read_in_attention": read_in_attention,
        "reg_loss": jnp.zeros((), jnp.float32),
    }
    return logits.astype(jnp.float32), aux
