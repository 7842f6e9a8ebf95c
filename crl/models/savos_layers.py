"""Geometry of SaVos (crl.models.savos): sampling, warping, crops.

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
* `frame_boxes`, `crop_frames`, `paste_frames`: one box per frame instead
  (the public code's), at any patch aspect.

The networks are in `crl.models.savos_nets`.
"""

from __future__ import annotations

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
