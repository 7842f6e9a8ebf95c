"""Image -> tokens: the ConvNeXt or patch tokenizer with a positional grid.

Shared by NAC and Perceiver IO (`ImageTokenizer`); `ConvNeXtBlock` is one
stage block of its ConvNeXt variant.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl.models.layers import LayerScale, check_init

TOKENIZERS = ("convnext", "patch")


def tokenizer_blocks(model_name: str, blocks) -> tuple[int, ...]:
  """ConvNeXt blocks per stage; an integer n means n stages of one block."""
  if isinstance(blocks, (int, np.integer)):
    return (1,) * int(blocks)
  try:
    return tuple(int(d) for d in blocks)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{model_name}.tokenizer_blocks must be a tuple of block "
                     "counts per stage or a number of stages, got "
                     f"{blocks!r}.") from e


def _convnext_init(init: str) -> dict:
  """Kernel/bias initialisers of the tokenizer's convs and dense layers."""
  check_init(init)
  if init == "official":
    return dict(kernel_init=nn.initializers.truncated_normal(
        0.02, lower=-100.0, upper=100.0),
                bias_init=nn.initializers.zeros)
  return {}



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
