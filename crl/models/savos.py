"""SaVos: self-supervised amodal video object segmentation (specs/amodal.md).

Yao et al., "Self-supervised Amodal Video Object Segmentation", NeurIPS 2022,
as in the public PyTorch code, on one square crop per track:

1. Crops: per object, the union of its visible masks over the video gives
   one square box (enlarged `box_enlarge` x), resampled to a fixed
   `patch_size` patch (`savos_layers.track_boxes`, `crop_tracks`); flows are
   rescaled to patch pixels.
2. Encoder: a per-frame CNN on `[RGB, visible mask, flow]` (and optionally
   the occluder mask) to a vector, then an LSTM over time
   (`flax.linen.scan` of `savos_nets.LSTMCell`).
3. Mask decoder: from the recurrent state, the encoder's skips and the
   current visible mask to an amodal-mask logit and a fusion logit
   (`mask_decoder='bottleneck'`: the public code's, through one vector).
4. Flow decoder: a residual added to the base motion (observed flow inside
   the visible mask, its mean elsewhere): the corrected flow (bounded at a
   quarter resolution, or `flow_decoder='full'`: the public code's,
   unbounded at full patch resolution).
5. Warping: the amodal probability (and the fusion logit) of frame t is
   warped to frame t + 1 along the corrected forward flow. The same weights
   run on the time-reversed track with the backward flow (frame t -> t - 1).
6. Fusion: the prediction for frame t is the softmax-weighted (fusion
   logits) mean of the forward prediction made at t - 1 and the backward
   prediction made at t + 1; the first frame has only the backward one and
   the last only the forward one.

So the amodal prediction for frame t never sees frame t's visible mask; it
is what the model carried over from the neighbouring frames. The training
signals (crl.trainers.savos_losses) compare it with frame t's visible mask
where nothing occludes.

Call: `out = model.apply({'params': p}, video, train=bool)`, `video` a dict
with 'frames' `[B, T, H, W, 3]` in [0, 1], 'visible' and 'occluder'
`[B, K, T, H, W]`, 'flow_fwd' and 'flow_bwd' `[B, T, H, W, 2]` (pixels); any
other key (the amodal ground truth in particular) is ignored. `out`:

* 'boxes' `[B, K, 3]`: each track's box (centre x, centre y, side), pixels;
* 'patches': the cropped inputs, 'frames' `[B, K, T, P, P, 3]`, 'visible',
  'occluder' `[B, K, T, P, P]`, 'flow_fwd', 'flow_bwd' `[B, K, T, P, P, 2]`;
* 'amodal' `[B, K, T, P, P]`: the fused amodal probability of every frame;
* 'forward', 'backward' `[B, K, T, P, P]`: the two directions' predictions
  (aligned to the frame they predict; 0 where a direction has none);
* 'fusion' `[B, K, T, P, P]`: the forward direction's fusion weight;
* 'flow_fwd', 'flow_bwd' `[B, K, T, P, P, 2]`: the corrected flows (frame t
  -> t + 1 and t -> t - 1, patch pixels);
* 'current_fwd', 'current_bwd' `[B, K, T, P, P]`: the decoders' amodal
  probabilities before warping.

`to_frames(amodal, boxes, height, width)` pastes patch masks back into the
frames for evaluation; `init_params(model, key, video)` initialises all
parameters from one random draw (much cheaper to compile than `model.init`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl.models import layers
from crl.models import savos_layers as sl
from crl.models import savos_nets as nets

Array = jax.Array
FLOW_INPUT_SCALE = 4.0  # flows (patch pixels) are divided by this on input
MASK_DECODERS = ("skip", "bottleneck")
FLOW_DECODERS = ("bounded", "full")
BOXES = ("track", "frame")

_ScanLSTM = nn.scan(nets.LSTMCell, variable_broadcast="params",
                    split_rngs={"params": False}, in_axes=1, out_axes=1)


class SaVos(nn.Module):
  """Self-supervised amodal video object segmentation (see module docstring).

  Attributes:
    patch_size: side P of the per-track patch.
    box_enlarge: the track box is this x the union of the visible boxes.
    min_box: smallest box side, frame pixels.
    patch_stride: the encoder's patch-embedding stride.
    encoder_channels: the per-frame CNN's channels at `P / patch_stride`,
      then one stride-2 stage per further entry (so `patch_size` must be
      divisible by `patch_stride * 2 ** (len - 1)`).
    decoder_channels: mask decoder channels, coarse to fine (one per
      encoder stage).
    decoder_output_channels: mask decoder features per patch pixel.
    features: size of the per-frame vector.
    hidden: LSTM state size.
    flow_channels: flow decoder channels.
    max_flow_residual: bound of the flow residual, patch pixels ('bounded'
      flow decoder).
    flow_residual: False: the corrected flow is the base flow.
    occluder_input: also feed the occluder mask to the encoder.
    mask_decoder: 'skip' (crl's: encoder skips, the visible mask joins
      pixel-wise in the last layer) or 'bottleneck' (the public code's: the
      visible mask and the state through one `bottleneck` vector, no skips;
      `nets.BottleneckDecoder`). The public code feeds the decoder channel 4
      of its input stack, a flow channel, where the visible mask is meant
      (channel 3); crl feeds the visible mask.
    flow_decoder: 'bounded' (crl's: `+-max_flow_residual` at a quarter of
      the patch resolution) or 'full' (the public code's: unbounded, full
      patch resolution, the observed flow and the state through one
      `bottleneck` vector).
    boxes: 'track' (crl's: one square box per track around the union of its
      visible masks) or 'frame' (the public code's: one box per frame
      around that frame's visible mask, x `box_enlarge`, at the patch's
      aspect; the outputs go back into the frames, where warping, fusion
      and the losses happen; outputs are then frame-sized).
    patch_width: patch width with boxes='frame' (0: `patch_size`, square;
      the public code: 64 x 128).
    bottleneck: width of the bottleneck decoders' joint vector.
    input_features: width of their input map's vector.
  """

  patch_size: int = 32
  box_enlarge: float = 1.5
  min_box: float = 8.0
  patch_stride: int = 4
  encoder_channels: tuple[int, ...] = (32, 64)
  decoder_channels: tuple[int, ...] = (64, 32)
  decoder_output_channels: int = 8
  features: int = 128
  hidden: int = 128
  flow_channels: int = 16
  max_flow_residual: float = 2.0
  flow_residual: bool = True
  occluder_input: bool = False
  mask_decoder: str = "skip"
  flow_decoder: str = "bounded"
  boxes: str = "track"
  patch_width: int = 0
  bottleneck: int = 512
  input_features: int = 256

  @property
  def patch_shape(self) -> tuple[int, int]:
    """(height, width) of the patches."""
    return self.patch_size, self.patch_width or self.patch_size

  def __post_init__(self):
    for name, known in (("mask_decoder", MASK_DECODERS),
                        ("flow_decoder", FLOW_DECODERS), ("boxes", BOXES)):
      if getattr(self, name) not in known:
        raise ValueError(f"SaVos: {name}={getattr(self, name)!r} is not one "
                         f"of {known}.")
    stages = len(self.encoder_channels) - 1
    factor = self.patch_stride * 2 ** stages
    if self.boxes == "track" and self.patch_width not in (
        0, self.patch_size):
      raise ValueError(f"SaVos: patch_width={self.patch_width} needs "
                       "boxes='frame' (track boxes are square).")
    if stages < 0 or self.patch_stride < 1 or any(
        side % factor for side in self.patch_shape):
      raise ValueError(
          f"SaVos: patch sides {self.patch_shape} must be divisible by "
          f"patch_stride * 2 ** {stages} = {factor} (one halving per "
          f"stride-2 encoder stage; encoder_channels="
          f"{self.encoder_channels}).")
    if len(self.decoder_channels) != len(self.encoder_channels):
      raise ValueError(
          f"SaVos: decoder_channels {self.decoder_channels} needs one entry "
          f"per encoder stage ({len(self.encoder_channels)}).")
    if self.box_enlarge < 1. or self.min_box <= 0.:
      raise ValueError(f"SaVos: box_enlarge must be >= 1 and min_box > 0, "
                       f"got {self.box_enlarge}, {self.min_box}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, video: dict[str, Array], *,
               train: bool = False) -> dict[str, Any]:
    del train  # no dropout or batch statistics
    visible = jnp.asarray(video["visible"], jnp.float32)
    b, k, t, height, width = visible.shape
    if t < 3:
      raise ValueError(f"SaVos needs at least 3 frames, got {t}.")
    ph, pw = self.patch_shape
    if self.boxes == "track":
      boxes = jax.lax.stop_gradient(
          sl.track_boxes(visible, self.box_enlarge, self.min_box))
      patches = sl.crop_tracks(
          video["frames"], {"visible": visible,
                            "occluder": video["occluder"]},
          {"flow_fwd": video["flow_fwd"], "flow_bwd": video["flow_bwd"]},
          boxes, self.patch_size)
    else:
      boxes = jax.lax.stop_gradient(sl.frame_boxes(
          visible, self.box_enlarge, self.min_box, pw / ph))
      patches = sl.crop_frames(
          video["frames"], {"visible": visible,
                            "occluder": video["occluder"]},
          {"flow_fwd": video["flow_fwd"], "flow_bwd": video["flow_bwd"]},
          boxes, ph, pw)
    n = b * k
    flat = {name: x.reshape((n,) + x.shape[2:]) for name, x in patches.items()}

    # Both directions through the same weights: [2N, T, ...], the backward
    # half time-reversed with the backward flow.
    rev = lambda x: jnp.flip(x, 1)
    vis2 = jnp.concatenate([flat["visible"], rev(flat["visible"])])
    flow2 = jnp.concatenate([flat["flow_fwd"], rev(flat["flow_bwd"])])
    parts = [layers.standardize_images(flat["frames"]),
             flat["visible"][..., None]]
    if self.occluder_input:
      parts.append(flat["occluder"][..., None])
    image_part = jnp.concatenate(parts, -1)
    x2 = jnp.concatenate(
        [jnp.concatenate([image_part, rev(image_part)]),
         flow2 / FLOW_INPUT_SCALE], -1)                 # [2N, T, ph, pw, C]

    m = 2 * n
    encoder = nets.FrameEncoder(self.encoder_channels, self.features,
                              self.patch_stride, name="encoder")
    vec, skips = encoder(x2.reshape((m * t,) + x2.shape[2:]))
    zeros = jnp.zeros((m, self.hidden), jnp.float32)
    _, states = _ScanLSTM(self.hidden, name="lstm")(
        (zeros, zeros), vec.reshape(m, t, -1))            # [2N, T, hidden]
    states = states.reshape(m * t, self.hidden)
    flat_vis = vis2.reshape(m * t, ph, pw)
    flat_flow = flow2.reshape(m * t, ph, pw, 2)
    if self.mask_decoder == "skip":
      dec = nets.MaskDecoder(self.decoder_channels,
                           self.decoder_output_channels, self.patch_stride,
                           name="mask_decoder")(states, skips, flat_vis)
    else:
      dec = nets.BottleneckDecoder(
          self.encoder_channels, 2, self.patch_stride, self.input_features,
          self.bottleneck, name="mask_decoder")(states, flat_vis[..., None])
    dec = dec.reshape(m, t, ph, pw, 2)
    if not self.flow_residual:
      residual = jnp.zeros((m, t, ph, pw, 2), jnp.float32)
    elif self.flow_decoder == "bounded":
      residual = nets.FlowDecoder(self.flow_channels, self.max_flow_residual,
                                name="flow_decoder")(states, flat_flow,
                                                     flat_vis)
    else:
      residual = nets.BottleneckDecoder(
          self.encoder_channels, 2, self.patch_stride, self.input_features,
          self.bottleneck, zero_init=True, name="flow_decoder")(
              states, flat_flow / FLOW_INPUT_SCALE)
    residual = residual.reshape(m, t, ph, pw, 2)

    prob = jax.nn.sigmoid(dec[..., 0])
    alpha = dec[..., 1]
    if self.boxes == "frame":
      # As the public code: each frame's patch outputs go back into the
      # frame (its own box; zero outside), where warping and the losses
      # work; the residual flow in frame pixels.
      box2 = jnp.concatenate([boxes.reshape(n, t, 4),
                              rev(boxes.reshape(n, t, 4))])
      out_patch = jnp.concatenate([prob[..., None], alpha[..., None],
                                   residual * (box2[..., 2] / pw)[
                                       ..., None, None, None]], -1)
      out_frame = sl.paste_frames(out_patch, box2, height, width)
      prob, alpha, residual = (out_frame[..., 0], out_frame[..., 1],
                               out_frame[..., 2:])
      frame_obs = {
          "frames": jnp.broadcast_to(video["frames"][:, None],
                                     (b, k) + video["frames"].shape[1:]),
          "visible": visible,
          "occluder": jnp.asarray(video["occluder"], jnp.float32)}
      for name in ("flow_fwd", "flow_bwd"):
        frame_obs[name] = jnp.broadcast_to(video[name][:, None],
                                           (b, k) + video[name].shape[1:])
      patches = frame_obs
      flat = {name: x.reshape((n,) + x.shape[2:])
              for name, x in frame_obs.items()}

    # Back to time order.
    prob_f, prob_b = prob[:n], rev(prob[n:])
    alpha_f, alpha_b = alpha[:n], rev(alpha[n:])
    flow_f = sl.base_flow(flat["flow_fwd"], flat["visible"]) + residual[:n]
    flow_b = sl.base_flow(flat["flow_bwd"], flat["visible"]) + rev(
        residual[n:])

    # Frame t -> t + 1 (forward) and t -> t - 1 (backward).
    # Both directions in one warp: frames 1..T-1 and frames 0..T-2.
    both = sl.warp(
        jnp.stack([jnp.stack([prob_f[:, :-1], alpha_f[:, :-1]], -1),
                   jnp.stack([prob_b[:, 1:], alpha_b[:, 1:]], -1)]),
        jnp.stack([flow_f[:, :-1], flow_b[:, 1:]]))
    fwd, bwd = both[0], both[1]
    weight_f = jax.nn.sigmoid(fwd[:, :-1, ..., 1] - bwd[:, 1:, ..., 1])
    middle = weight_f * fwd[:, :-1, ..., 0] + (1. - weight_f) * bwd[:, 1:, ...,
                                                                     0]
    amodal = jnp.concatenate([bwd[:, :1, ..., 0], middle, fwd[:, -1:, ..., 0]],
                             1)
    pad = jnp.zeros_like(prob_f[:, :1])
    one = jnp.ones_like(prob_f[:, :1])
    unflat = lambda x: x.reshape((b, k) + x.shape[1:])
    return {
        "boxes": boxes,
        "patches": patches,
        "amodal": unflat(amodal),
        "forward": unflat(jnp.concatenate([pad, fwd[..., 0]], 1)),
        "backward": unflat(jnp.concatenate([bwd[..., 0], pad], 1)),
        "fusion": unflat(jnp.concatenate([0. * one, weight_f, one], 1)),
        "flow_fwd": unflat(flow_f),
        "flow_bwd": unflat(flow_b),
        "current_fwd": unflat(prob_f),
        "current_bwd": unflat(prob_b),
    }


def init_params(model: SaVos, key: Array, video: dict[str, Array]) -> Any:
  """Fresh SaVos parameters from a single random draw.

  `model.init` compiles one random-number generator per parameter (about
  0.3 s each on a CPU, a third of a small run's compile time); this draws
  all parameters at once instead: LeCun-uniform weights (variance
  1 / fan-in), zero biases, unit norm scales, and a zero output layer of the
  flow decoder (the corrected flow starts as the base flow). Pure and
  jit-compatible.

  Args:
    model: the module.
    key: a PRNG key.
    video: an example input (only shapes matter).

  Returns:
    The `params` collection.
  """
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), video)["params"])
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  total = sum(int(np.prod(leaf.shape)) for _, leaf in leaves)
  draws = jax.random.uniform(key, (total,), jnp.float32, -1., 1.)
  out, offset = [], 0
  for path, leaf in leaves:
    size = int(np.prod(leaf.shape))
    x = draws[offset:offset + size].reshape(leaf.shape)
    offset += size
    name = jax.tree_util.keystr(path)
    if "flow_decoder" in name and "'out'" in name:
      x = jnp.zeros(leaf.shape, leaf.dtype)
    elif leaf.ndim >= 2:
      fan_in = int(np.prod(leaf.shape[:-1]))
      x = x * np.sqrt(3. / fan_in)
    elif "scale" in name:
      x = jnp.ones(leaf.shape, leaf.dtype)
    else:
      x = jnp.zeros(leaf.shape, leaf.dtype)
    out.append(x.astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def to_frames(amodal: Array, boxes: Array, height: int, width: int) -> Array:
  """Model-space masks -> frame masks `[B, K, T, H, W]`: patches `[B, K,
  T, P, P]` with track boxes `[B, K, 3]` are pasted; with per-frame boxes
  `[B, K, T, 4]` the model's outputs are frame-sized already."""
  if boxes.shape[-1] == 4:
    return amodal
  return sl.paste_tracks(amodal, boxes, height, width)


def to_model_space(masks: Array, boxes: Array, patch_size: int) -> Array:
  """Frame masks `[B, K, T, H, W]` -> the space of the model's outputs
  (the inverse of `to_frames`; e.g. the upper bound's targets)."""
  if boxes.shape[-1] == 4:
    return masks
  return sl.crop_masks(masks, boxes, patch_size)
