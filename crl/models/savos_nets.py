"""Network blocks of SaVos (crl.models.savos).

* `LSTMCell`: the recurrent cell (scanned over time by SaVos).
* `FrameEncoder`, `MaskDecoder`, `FlowDecoder`: the per-frame CNN and the two
  decoders (patch embedding and pixel shuffle instead of full-resolution
  convolutions: those dominate the time on a CPU).
* `BottleneckDecoder`: the public code's decoder shape (an input map and the
  recurrent state through one vector, no skips, full patch resolution out);
  SaVos's 'bottleneck' mask decoder and 'full' flow decoder.

Feature maps are `[N, h, w, C]` (patches need not be square).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """Bilinear resampling weights `[n_out, n_in]` (half-pixel centres,
  edges clamped), a constant."""
  coords = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.,
                   n_in - 1.)
  return np.maximum(0., 1. - np.abs(coords[:, None] - np.arange(n_in)[None]))


def _upsample(x: Array, size: int | tuple[int, int]) -> Array:
  """Bilinear resize of `[N, h, w, C]` to `[N, size, size, C]` (or `[N,
  *size, C]`); two small constant matrix products (cheaper to compile than
  `jax.image.resize`)."""
  rows, cols = (size, size) if isinstance(size, int) else size
  my = jnp.asarray(_resize_matrix(x.shape[1], rows), x.dtype)
  mx = jnp.asarray(_resize_matrix(x.shape[2], cols), x.dtype)
  return jnp.einsum("ph,nhwc,qw->npqc", my, x, mx)


def _downsample(x: Array, factor: int) -> Array:
  """Mean over `factor x factor` blocks of `[N, h, w, C]`."""
  n, h, w, c = x.shape
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(
      (2, 4))


def space_to_depth(x: Array, block: int) -> Array:
  """`[N, H, W, C]` -> `[N, H / block, W / block, block * block * C]`."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // block, block, w // block, block, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // block, w // block, -1)


def depth_to_space(x: Array, block: int) -> Array:
  """Inverse of `space_to_depth`."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, block, block, c // (block * block))
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * block, w * block, -1)


class FrameEncoder(nn.Module):
  """Per-frame CNN: `[N, P, P, C]` -> vector `[N, features]` and skips.

  A `stride x stride` patch embedding (space-to-depth and a dense layer; a
  full-resolution stem costs most of the time on a CPU), a 3x3 convolution
  at `P / stride`, then one stride-2 3x3 convolution per further entry of
  `channels`.

  Attributes:
    channels: channels at `P / stride`, `P / (2 stride)`, ...
    features: size of the output vector.
    stride: the patch embedding's stride.
  """
  channels: Sequence[int] = (32, 64)
  features: int = 128
  stride: int = 4

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, list[Array]]:
    """Returns the vector and the feature maps, finest first."""
    h = nn.relu(nn.Dense(self.channels[0], name="embed")(
        space_to_depth(x, self.stride)))
    h = nn.relu(nn.Conv(self.channels[0], (3, 3), name="conv0")(h))
    skips = [h]
    for i, c in enumerate(self.channels[1:], start=1):
      h = nn.relu(nn.Conv(c, (3, 3), strides=2, name=f"down{i}")(h))
      skips.append(h)
    vec = nn.Dense(self.features, name="to_vector")(h.reshape(h.shape[0], -1))
    return nn.LayerNorm(name="norm")(vec), skips


class MaskDecoder(nn.Module):
  """Recurrent state + encoder skips + visible mask -> 2 logits per pixel.

  From the state to the coarsest skip's grid, up through the skips (3x3
  convolutions), then `depth_to_space` back to the patch resolution, where
  the current visible mask joins through a 1x1 layer. Channel 0 of the
  output is the amodal-mask logit, channel 1 the fusion logit.

  Attributes:
    channels: channels at each skip's resolution, coarse to fine.
    output_channels: features per pixel at full resolution.
    stride: the encoder's patch-embedding stride.
  """
  channels: Sequence[int] = (64, 32)
  output_channels: int = 8
  stride: int = 4

  @nn.compact
  def __call__(self, state: Array, skips: Sequence[Array],
               visible: Array) -> Array:
    """`state` `[N, D]`, skips finest first, `visible` `[N, P, P]`."""
    if len(skips) != len(self.channels):
      raise ValueError(f"MaskDecoder: {len(self.channels)} channel entries "
                       f"for {len(skips)} encoder stages.")
    coarse = skips[-1]
    n, sh, sw = state.shape[0], coarse.shape[1], coarse.shape[2]
    x = nn.Dense(sh * sw * self.channels[0], name="from_state")(state)
    x = nn.relu(x.reshape(n, sh, sw, self.channels[0]))
    for i, (skip, c) in enumerate(zip(reversed(skips), self.channels)):
      if x.shape[1:3] != skip.shape[1:3]:
        x = _upsample(x, skip.shape[1:3])
      x = nn.relu(nn.Conv(c, (3, 3), name=f"up{i}")(
          jnp.concatenate([x, skip], -1)))
    x = nn.Dense(self.stride * self.stride * self.output_channels,
                 name="to_pixels")(x)
    x = nn.relu(depth_to_space(x, self.stride))
    x = jnp.concatenate([x, visible[..., None]], -1)
    return nn.Dense(2, name="out")(x)


class LSTMCell(nn.Module):
  """An LSTM cell with one fused gate projection (2 parameter tensors
  instead of flax's 12: fewer optimizer ops to compile).

  `(c, h), x -> (c', h'), h'` with gates `[i, f, g, o] = W [x, h] + b`,
  `c' = sigmoid(f + 1) c + sigmoid(i) tanh(g)`, `h' = sigmoid(o) tanh(c')`.
  """
  features: int

  @nn.compact
  def __call__(self, carry: tuple[Array, Array],
               x: Array) -> tuple[tuple[Array, Array], Array]:
    c, h = carry
    gates = nn.Dense(4 * self.features, name="gates")(
        jnp.concatenate([x, h], -1))
    i, f, g, o = jnp.split(gates, 4, -1)
    c = nn.sigmoid(f + 1.) * c + nn.sigmoid(i) * jnp.tanh(g)
    h = nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


class FlowDecoder(nn.Module):
  """Recurrent state + observed flow -> a smooth flow residual `[N, P, P, 2]`.

  Predicted at `P / 4` and upsampled bilinearly; the output layer starts at
  zero (the initial corrected flow is the base flow) and is bounded by
  `max_residual` pixels.
  """
  channels: int = 16
  max_residual: float = 2.0

  @nn.compact
  def __call__(self, state: Array, flow: Array, visible: Array) -> Array:
    n, ph, pw = flow.shape[:3]
    factor = 4 if ph % 4 == 0 and pw % 4 == 0 else 1
    lh, lw = ph // factor, pw // factor
    x = nn.Dense(lh * lw * self.channels, name="from_state")(state)
    x = x.reshape(n, lh, lw, self.channels)
    obs = jnp.concatenate([flow / 4., visible[..., None]], -1)
    obs = _downsample(obs, factor)
    x = nn.relu(nn.Conv(self.channels, (3, 3), name="conv")(
        jnp.concatenate([x, obs], -1)))
    x = nn.Conv(2, (3, 3), kernel_init=nn.initializers.zeros, name="out")(x)
    x = self.max_residual * jnp.tanh(x)
    return _upsample(x, (ph, pw))


class BottleneckDecoder(nn.Module):
  """Input map + recurrent state -> `[N, P, P, outputs]` through one vector.

  As the public SaVos code's decoders: the input map (the current visible
  mask, or the observed flow) is encoded by strided convolutions to a
  vector of `input_features`, joined with the recurrent state, mapped to a
  `bottleneck`-wide vector, then decoded up to the full patch resolution
  with no skip connections (everything passes through the bottleneck). The
  output is unbounded; `zero_init` starts it at 0 (a flow residual).

  Attributes:
    channels: channels at `P / stride`, `P / (2 stride)`, ... (encoder;
      the decoder runs them coarse to fine).
    outputs: output channels per pixel.
    stride: patch-embedding stride (as the frame encoder's).
    input_features: size of the input map's vector.
    bottleneck: size of the joint vector.
    zero_init: zero output layer.
  """
  channels: Sequence[int] = (32, 64)
  outputs: int = 2
  stride: int = 4
  input_features: int = 256
  bottleneck: int = 512
  zero_init: bool = False

  @nn.compact
  def __call__(self, state: Array, x: Array) -> Array:
    """`state` `[N, D]`, `x` `[N, P, P, C]` -> `[N, P, P, outputs]`."""
    n, p = x.shape[0], x.shape[1:3]
    h = nn.relu(nn.Dense(self.channels[0], name="embed")(
        space_to_depth(x, self.stride)))
    for i, c in enumerate(self.channels[1:], start=1):
      h = nn.relu(nn.Conv(c, (3, 3), strides=2, name=f"down{i}")(h))
    sh, sw = h.shape[1:3]
    vec = nn.relu(nn.Dense(self.input_features, name="input_vector")(
        h.reshape(n, -1)))
    z = nn.relu(nn.Dense(self.bottleneck, name="bottleneck")(
        jnp.concatenate([state, vec], -1)))
    rev = list(reversed(self.channels))
    y = nn.relu(nn.Dense(sh * sw * rev[0], name="from_bottleneck")(z))
    y = y.reshape(n, sh, sw, rev[0])
    for i, c in enumerate(rev):
      if i:
        y = _upsample(y, (2 * y.shape[1], 2 * y.shape[2]))
      y = nn.relu(nn.Conv(c, (3, 3), name=f"up{i}")(y))
    y = nn.Dense(self.stride * self.stride * rev[-1], name="to_pixels")(y)
    y = nn.relu(depth_to_space(y, self.stride))
    if y.shape[1:3] != p:
      raise ValueError(f"BottleneckDecoder: decoded {y.shape[1:3]} px for a "
                       f"{p} px patch.")
    init = (nn.initializers.zeros if self.zero_init
            else nn.linear.default_kernel_init)
    return nn.Dense(self.outputs, kernel_init=init, name="out")(y)
