"""Geometry and network blocks of SaVos (crl.models.savos).

Coordinates: a pixel `(row i, column j)` of an image covers the continuous
square `[j, j + 1) x [i, i + 1)`; "index coordinates" put the pixel centre at
`(x, y) = (j, i)`. Flows are `(dx, dy)` in pixels, channel 0 along the width.

* `bilinear_sample`, `warp`: bilinear sampling with zeros outside the image;
  `warp(x, flow)(p) = x(p - flow(p))` carries the content of frame t to
  frame t + 1 along the forward flow of frame t (as the public SaVos code).
* `track_boxes`, `crop`, `paste`: one square box per track (the union of the
  visible masks over time, enlarged), rescaled to a fixed patch; crop and
  paste-back are separable bilinear resamplings (two small matrix products).
* `base_flow`: the observed flow inside the visible mask and the mean visible
  flow elsewhere (what the flow decoder corrects).
* `LSTMCell`: the recurrent cell (scanned over time by SaVos).
* `FrameEncoder`, `MaskDecoder`, `FlowDecoder`: the per-frame CNN and the two
  decoders (patch embedding and pixel shuffle instead of full-resolution
  convolutions: those dominate the time on a CPU).
* `BottleneckDecoder`: the public code's decoder shape (an input map and the
  recurrent state through one vector, no skips, full patch resolution out);
  SaVos's 'bottleneck' mask decoder and 'full' flow decoder.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# Sampling ---------------------------------------------------------------------


def bilinear_sample(image: Array, x: Array, y: Array) -> Array:
  """Samples `image` at index coordinates `(x, y)`, zero outside.

  Args:
    image: `[height, width, channels]`.
    x, y: `[...]` column and row index coordinates (pixel centres are
      integers).

  Returns:
    `[..., channels]`; points outside the image blend towards 0 (each of
    the four neighbours outside counts as 0).
  """
  height, width = image.shape[:2]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  # The four neighbours at once: one gather (and one scatter in the
  # gradient) instead of four.
  xi = jnp.stack([x0, x0 + 1, x0, x0 + 1], -1)                # [..., 4]
  yi = jnp.stack([y0, y0, y0 + 1, y0 + 1], -1)
  weight = jnp.stack([(1. - fx) * (1. - fy), fx * (1. - fy),
                      (1. - fx) * fy, fx * fy], -1)
  inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
  weight = jnp.where(inside, weight, 0.)
  index = jnp.clip(yi, 0, height - 1) * width + jnp.clip(xi, 0, width - 1)
  values = jnp.take(image.reshape(height * width, -1), index, axis=0)
  return jnp.einsum("...k,...kc->...c", weight, values)


def warp(image: Array, flow: Array) -> Array:
  """`image(p - flow(p))` for every pixel `p`: forward warping by a flow.

  Bilinear, zero outside the image; one flat gather over the whole batch
  (cheaper to compile than a batched one).

  Args:
    image: `[..., height, width, channels]`.
    flow: `[..., height, width, 2]` (dx, dy) in pixels; the leading axes of
      both are batch axes (equal).

  Returns:
    `[..., height, width, channels]`.
  """
  height, width, channels = image.shape[-3:]
  if flow.shape[-3:] != (height, width, 2) or flow.shape[:-3] != image.shape[
      :-3]:
    raise ValueError(f"warp: flow {flow.shape} does not match image "
                     f"{image.shape}; expected [..., {height}, {width}, 2].")
  lead = image.shape[:-3]
  n = int(np.prod(lead)) if lead else 1
  rows, cols = np.meshgrid(np.arange(height, dtype=np.float32),
                           np.arange(width, dtype=np.float32), indexing="ij")
  fl = flow.reshape(n, height, width, 2)
  x, y = cols - fl[..., 0], rows - fl[..., 1]               # [n, H, W]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  xi = jnp.stack([x0, x0 + 1, x0, x0 + 1], -1)              # [n, H, W, 4]
  yi = jnp.stack([y0, y0, y0 + 1, y0 + 1], -1)
  weight = jnp.stack([(1. - fx) * (1. - fy), fx * (1. - fy),
                      (1. - fx) * fy, fx * fy], -1)
  inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
  weight = jnp.where(inside, weight, 0.)
  base = (np.arange(n, dtype=np.int32) * (height * width))[:, None, None,
                                                            None]
  index = base + jnp.clip(yi, 0, height - 1) * width + jnp.clip(
      xi, 0, width - 1)
  values = jnp.take(image.reshape(n * height * width, channels),
                    index.reshape(-1), axis=0)
  values = values.reshape(n, height, width, 4, channels)
  out = jnp.einsum("nhwk,nhwkc->nhwc", weight, values)
  return out.reshape(lead + (height, width, channels))


# Tracks and crops -------------------------------------------------------------


def track_boxes(visible: Array, enlarge: float = 1.5,
                min_size: float = 8.) -> Array:
  """One square box per track around its visible masks over time.

  Args:
    visible: `[..., time, height, width]` visible masks of each track.
    enlarge: the box side is `enlarge` x the longer side of the union of the
      visible masks' boxes over time.
    min_size: smallest box side, pixels.

  Returns:
    `[..., 3]` boxes `(centre x, centre y, side)` in continuous pixel
    coordinates; a track never visible gets the central box of half the
    frame.
  """
  height, width = visible.shape[-2:]
  union = jnp.max(visible, axis=-3) > 0.5                 # [..., H, W]
  rows, cols = jnp.any(union, -1), jnp.any(union, -2)     # [..., H], [..., W]

  def extent(present, n):
    first = jnp.argmax(present, -1)
    last = n - 1 - jnp.argmax(jnp.flip(present, -1), -1)
    return first.astype(jnp.float32), last.astype(jnp.float32) + 1.

  y0, y1 = extent(rows, height)
  x0, x1 = extent(cols, width)
  side = jnp.maximum(enlarge * jnp.maximum(x1 - x0, y1 - y0), min_size)
  seen = jnp.any(rows, -1)
  box = jnp.stack([(x0 + x1) / 2., (y0 + y1) / 2., side], -1)
  default = jnp.asarray([width / 2., height / 2., max(height, width) / 2.],
                        jnp.float32)
  return jnp.where(seen[..., None], box, default)


def _interp_matrix(coords: Array, size: int) -> Array:
  """Bilinear weights `[n, size]` of index coordinates `coords` `[n]`."""
  grid = jnp.arange(size, dtype=jnp.float32)
  return jnp.maximum(0., 1. - jnp.abs(coords[:, None] - grid[None, :]))


def crop(image: Array, box: Array, patch: int) -> Array:
  """The square `box` of `image` resampled to `patch x patch`.

  Args:
    image: `[time, height, width, channels]` (one track).
    box: `[3]` (centre x, centre y, side), continuous pixel coordinates.
    patch: patch side P.

  Returns:
    `[time, P, P, channels]`, zero where the box leaves the image.
  """
  height, width = image.shape[1:3]
  offsets = (jnp.arange(patch, dtype=jnp.float32) + 0.5 - patch / 2.) * (
      box[2] / patch)
  my = _interp_matrix(box[1] + offsets - 0.5, height)     # [P, H]
  mx = _interp_matrix(box[0] + offsets - 0.5, width)      # [P, W]
  return jnp.einsum("ph,thwc,qw->tpqc", my, image, mx)


def paste(patches: Array, box: Array, height: int, width: int) -> Array:
  """Inverse of `crop`: patches resampled into the frame, zero outside.

  Args:
    patches: `[time, P, P, channels]` (one track).
    box: `[3]` as in `crop`.
    height, width: frame size.

  Returns:
    `[time, height, width, channels]`.
  """
  patch = patches.shape[1]
  scale = patch / box[2]

  def coords(n, centre):
    return (jnp.arange(n, dtype=jnp.float32) + 0.5 - centre) * scale + (
        patch / 2. - 0.5)

  my = _interp_matrix(coords(height, box[1]), patch)     # [H, P]
  mx = _interp_matrix(coords(width, box[0]), patch)      # [W, P]
  return jnp.einsum("hp,tpqc,wq->thwc", my, patches, mx)


def frame_boxes(visible: Array, enlarge: float = 1.5, min_size: float = 8.,
                aspect: float = 1.) -> Array:
  """One box per frame around that frame's visible mask (the public code's).

  Args:
    visible: `[..., time, height, width]` visible masks of each track.
    enlarge: each side is `enlarge` x the visible mask's box side.
    min_size: smallest box height, pixels.
    aspect: width / height of every box (the patch's): the enlarged box
      grows along its short side to this aspect.

  Returns:
    `[..., time, 4]` boxes `(centre x, centre y, width, height)` in
    continuous pixel coordinates; a frame where the object is not visible
    gets the box of the union of the track's visible masks (the central box
    when the track is never visible).
  """
  def box_of(mask):                                       # [..., H, W]
    height, width = mask.shape[-2:]
    rows, cols = jnp.any(mask, -1), jnp.any(mask, -2)

    def extent(present, n):
      first = jnp.argmax(present, -1)
      last = n - 1 - jnp.argmax(jnp.flip(present, -1), -1)
      return first.astype(jnp.float32), last.astype(jnp.float32) + 1.

    y0, y1 = extent(rows, height)
    x0, x1 = extent(cols, width)
    h = jnp.maximum(enlarge * jnp.maximum(y1 - y0, (x1 - x0) / aspect),
                    min_size)
    return jnp.stack([(x0 + x1) / 2., (y0 + y1) / 2., aspect * h, h],
                     -1), jnp.any(rows, -1)

  masks = visible > 0.5
  per_frame, seen = box_of(masks)                         # [..., T, 4]
  track, track_seen = box_of(jnp.any(masks, -3))          # [..., 4]
  height, width = visible.shape[-2:]
  centre = jnp.asarray([width / 2., height / 2., aspect * height / 2.,
                        height / 2.], jnp.float32)
  track = jnp.where(track_seen[..., None], track, centre)
  return jnp.where(seen[..., None], per_frame, track[..., None, :])


def crop_rect(image: Array, box: Array, height: int, width: int) -> Array:
  """The box `(cx, cy, w, h)` of `image` `[H, W, C]` resampled to
  `[height, width, C]` (zero outside the image)."""
  rows, cols = image.shape[:2]
  oy = (jnp.arange(height, dtype=jnp.float32) + 0.5 - height / 2.) * (
      box[3] / height)
  ox = (jnp.arange(width, dtype=jnp.float32) + 0.5 - width / 2.) * (
      box[2] / width)
  my = _interp_matrix(box[1] + oy - 0.5, rows)            # [height, H]
  mx = _interp_matrix(box[0] + ox - 0.5, cols)            # [width, W]
  return jnp.einsum("ph,hwc,qw->pqc", my, image, mx)


def paste_rect(patch: Array, box: Array, height: int, width: int) -> Array:
  """Inverse of `crop_rect`: `[ph, pw, C]` into a `[height, width, C]`
  frame, zero outside the box."""
  ph, pw = patch.shape[:2]

  def coords(n, centre, side, p):
    return (jnp.arange(n, dtype=jnp.float32) + 0.5 - centre) * (p / side) + (
        p / 2. - 0.5)

  my = _interp_matrix(coords(height, box[1], box[3], ph), ph)  # [H, ph]
  mx = _interp_matrix(coords(width, box[0], box[2], pw), pw)   # [W, pw]
  return jnp.einsum("hp,pqc,wq->hwc", my, patch, mx)


def crop_frames(frames: Array, masks: dict[str, Array],
                flows: dict[str, Array], boxes: Array, height: int,
                width: int) -> dict[str, Array]:
  """Crops every frame of every track with its own box.

  Args:
    frames: `[B, T, H, W, 3]`.
    masks: name -> `[B, K, T, H, W]`.
    flows: name -> `[B, T, H, W, 2]` (pixels).
    boxes: `[B, K, T, 4]` from `frame_boxes`.
    height, width: the patch size.

  Returns:
    'frames' `[B, K, T, height, width, 3]`, masks `[B, K, T, height,
    width]`, flows `[B, K, T, height, width, 2]` in patch pixels.
  """
  one = lambda img, box: crop_rect(img, box, height, width)
  scene = jax.vmap(jax.vmap(jax.vmap(one, in_axes=(0, 0)),      # T
                            in_axes=(None, 0)),                 # K
                   in_axes=(0, 0))                               # B
  per_object = jax.vmap(jax.vmap(jax.vmap(one)))
  out = {"frames": scene(frames, boxes)}
  for name, m in masks.items():
    out[name] = per_object(m[..., None], boxes)[..., 0]
  scale = (width / boxes[..., 2])[..., None, None, None]
  for name, f in flows.items():
    out[name] = scene(f, boxes) * scale
  return out


def paste_frames(patches: Array, boxes: Array, height: int,
                 width: int) -> Array:
  """`[N, T, ph, pw, C]` patches with boxes `[N, T, 4]` -> `[N, T, height,
  width, C]` frames."""
  fn = jax.vmap(jax.vmap(lambda p, b: paste_rect(p, b, height, width)))
  return fn(patches, boxes)


def crop_tracks(frames: Array, masks: dict[str, Array], flows: dict[str, Array],
                boxes: Array, patch: int) -> dict[str, Array]:
  """Crops every track of a batch of videos.

  Args:
    frames: `[B, T, H, W, 3]`.
    masks: name -> `[B, K, T, H, W]` per-object masks.
    flows: name -> `[B, T, H, W, 2]` scene flows (pixels).
    boxes: `[B, K, 3]` from `track_boxes`.
    patch: P.

  Returns:
    'frames' `[B, K, T, P, P, 3]`, each mask `[B, K, T, P, P]` and each flow
    `[B, K, T, P, P, 2]` in patch pixels.
  """
  per_track = jax.vmap(jax.vmap(crop, in_axes=(None, 0, None)),
                       in_axes=(0, 0, None))
  out = {"frames": per_track(frames, boxes, patch)}
  for name, m in masks.items():
    out[name] = crop_masks(m, boxes, patch)
  scale = (patch / boxes[..., 2])[:, :, None, None, None, None]
  for name, f in flows.items():
    out[name] = per_track(f, boxes, patch) * scale
  return out


def crop_masks(masks: Array, boxes: Array, patch: int) -> Array:
  """`[B, K, T, H, W]` per-object masks -> `[B, K, T, P, P]` patches."""
  fn = jax.vmap(jax.vmap(crop, in_axes=(0, 0, None)), in_axes=(0, 0, None))
  return fn(masks[..., None], boxes, patch)[..., 0]


def paste_tracks(patches: Array, boxes: Array, height: int,
                 width: int) -> Array:
  """`[B, K, T, P, P]` patch masks -> `[B, K, T, height, width]` frames."""
  fn = jax.vmap(jax.vmap(paste, in_axes=(0, 0, None, None)),
                in_axes=(0, 0, None, None))
  return fn(patches[..., None], boxes, height, width)[..., 0]


def base_flow(flow: Array, visible: Array, eps: float = 1e-6) -> Array:
  """Observed flow inside the visible mask, its mean elsewhere.

  Args:
    flow: `[..., P, P, 2]`.
    visible: `[..., P, P]` in [0, 1].

  Returns:
    `[..., P, P, 2]`: `v * flow + (1 - v) * mean_v(flow)` (0 mean when the
    mask is empty).
  """
  v = visible[..., None]
  mean = jnp.sum(v * flow, (-3, -2), keepdims=True) / (
      jnp.sum(v, (-3, -2), keepdims=True) + eps)
  return v * flow + (1. - v) * mean


# Networks ---------------------------------------------------------------------


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
