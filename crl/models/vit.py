"""Vision Transformer (Dosovitskiy et al., ICLR 2021), a baseline of NAC.

  patches = Conv(kernel = stride = patch_size)(images)     [B, T, D]
  tokens  = [cls; patches] + learned position embedding    [B, 1 + T, D]
  tokens  = num_layers x [MHA + MLP]                        (pre-LN, residual,
            optional LayerScale and DropPath)
  logits  = classifier(LN(tokens)[:, 0])                   ('cls' pooling)
         or classifier(mean_t LN(tokens))                  ('gap': no class
            token, mean over the patch tokens)

The encoder blocks are the NAC blocks of `crl.models.layers` in their 'dense'
mode (no code modulation: plain shared Dense layers).

Call (`train` is a Python bool):
  `logits, aux = model.apply(variables, images, train=bool,
                             rngs={'dropout': k1})`
with images float32 `[batch, height, width, 3]` in [0, 1]; 'dropout' drives
DropPath (needed only with `train=True` and `drop_path > 0`).

`aux` holds
  'features': `[batch, d_model]` the representation fed to the final Dense
    'classifier' (the normalised class token, or the mean patch token);
  'reg_loss': 0.0 (no regulariser).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl.models import attention
from crl.models import layers

POOLINGS = ("cls", "gap")


class ViT(nn.Module):
  """Vision Transformer image classifier.

  Defaults are the benchmark size matched to NAC-S/32 (about 1.60M
  parameters for 32 px images and 10 classes; configs/vit.py:bench).

  Attributes:
    num_classes: output classes.
    patch_size: patch size and stride in pixels (4 for 32 px images: 64
      patch tokens).
    d_model: token channels D.
    num_layers: encoder blocks.
    num_heads: attention heads.
    head_dim: channels per head; None: d_model // num_heads.
    mlp_hidden: hidden channels of the MLP blocks.
    ffn: 'gelu' (MLP) or 'geglu'.
    pooling: 'cls' (class token) or 'gap' (mean patch token, no class token).
    qkv_bias: bias in query/key/value projections.
    layer_scale_init: LayerScale init; None for no LayerScale.
    drop_path: stochastic depth rate of every residual branch.
    gelu_approximate: tanh-approximate GELU in the MLPs (as big_vision's
      ViTs); False: the exact GELU (as timm's).
  """
  num_classes: int = 10
  patch_size: int = 4
  d_model: int = 128
  num_layers: int = 8
  num_heads: int = 4
  head_dim: Optional[int] = None
  mlp_hidden: int = 512
  ffn: str = "gelu"
  pooling: str = "cls"
  qkv_bias: bool = False
  layer_scale_init: Optional[float] = None
  drop_path: float = 0.0
  gelu_approximate: bool = False

  def __post_init__(self):
    self._validate()
    super().__post_init__()

  def _validate(self) -> None:
    """Raises ValueError naming the offending field."""
    for field, options in (("pooling", POOLINGS), ("ffn", layers.FFN_KINDS)):
      if getattr(self, field) not in options:
        raise ValueError(f"ViT.{field} must be one of {options}, got "
                         f"{getattr(self, field)!r}.")
    for field, minimum in (("num_classes", 1), ("patch_size", 1),
                           ("d_model", 1), ("num_layers", 0),
                           ("num_heads", 1), ("mlp_hidden", 1)):
      value = getattr(self, field)
      if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"ViT.{field} must be an integer >= {minimum}, got "
                         f"{value!r}.")
    if self.head_dim is None:
      if self.d_model % self.num_heads:
        raise ValueError(
            f"ViT.d_model={self.d_model} must be divisible by ViT.num_heads="
            f"{self.num_heads} when head_dim is None.")
    elif not isinstance(self.head_dim, (int, np.integer)) or self.head_dim < 1:
      raise ValueError(f"ViT.head_dim must be None or an integer >= 1, got "
                       f"{self.head_dim!r}.")
    if not 0.0 <= self.drop_path < 1.0:
      raise ValueError(f"ViT.drop_path must be in [0, 1), got "
                       f"{self.drop_path}.")

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Classifies images.

    Args:
      images: float32 `[batch, height, width, 3]` in [0, 1]; height and width
        divisible by `patch_size`.
      train: training mode (DropPath).

    Returns:
      `logits` `[batch, num_classes]` and the `aux` dict (module docstring).
    """
    layers.check_train_flag("ViT", train)
    deterministic = not train
    height, width = images.shape[1:3]
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f"ViT: image size {height}x{width} must be divisible "
                       f"by ViT.patch_size={p}.")
    x = layers.standardize_images(images)
    batch = x.shape[0]
    x = nn.Conv(self.d_model, (p, p), strides=(p, p), padding="VALID",
                name="patch_embedding")(x)
    x = x.reshape(batch, -1, self.d_model)  # [B, T, D], row-major patches
    init = nn.initializers.normal(0.02)
    if self.pooling == "cls":
      cls = self.param("cls_token", nn.initializers.zeros, (1, self.d_model))
      x = jnp.concatenate(
          [jnp.broadcast_to(cls, (batch, 1, self.d_model)), x], axis=1)
    pos = self.param("position_embedding", init, x.shape[1:])
    x = x + pos  # [B, (1 +) T, D]

    head_dim = self.head_dim or self.d_model // self.num_heads
    for layer in range(self.num_layers):
      x, _ = attention.ModAttention(
          self.d_model, 1, self.num_heads, head_dim, modfc_mode="dense",
          qkv_bias=self.qkv_bias, layer_scale_init=self.layer_scale_init,
          drop_path=self.drop_path, name=f"block{layer}_attention")(
              x, None, x, None, deterministic=deterministic)
      x = layers.ModFeedForward(
          self.d_model, self.mlp_hidden, 1, self.ffn, modfc_mode="dense",
          layer_scale_init=self.layer_scale_init, drop_path=self.drop_path,
          gelu_approximate=self.gelu_approximate,
          name=f"block{layer}_mlp")(x, None, deterministic=deterministic)

    x = nn.LayerNorm(name="encoder_norm")(x)
    features = x[:, 0] if self.pooling == "cls" else jnp.mean(x, axis=1)
    logits = nn.Dense(self.num_classes, name="classifier")(features)
    aux = {"features": features, "reg_loss": jnp.zeros((), jnp.float32)}
    return logits.astype(jnp.float32), aux
