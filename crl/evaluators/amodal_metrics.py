"""Amodal-segmentation metrics and crl's per-frame protocol.

specs/amodal.md, "Evaluation":

* `composite`: the visible mask where nothing occludes, the thresholded
  amodal prediction inside the occluder region (a method only ever has to
  guess what is hidden);
* `iou`: `(|P and A| + 1e-6) / (|P or A| + 1e-6)`, of the full mask and
  restricted to the occluded region (the pixels under other objects);
* `object_frame_stats`: those IoUs with each object-frame's occlusion rate
  and box geometry (`box_geometry`);
* `per_frame_miou`: keep object-frames with occlusion rate `1 - |V| / |A|`
  in `[0.1, 0.7]`, drop each track's first and last frame, average over the
  objects of a frame, then over frames; `object_frame_miou`: the plain
  average over every object-frame where the object is present;
* `summarize`: every metric of a split from `object_frame_stats` arrays,
  under crl's protocol and any number of public-code protocols
  (`crl.evaluators.amodal_official`), and `format_table`.

The baselines and the evaluator that runs a model are in
`crl.evaluators.amodal`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crl.data import occluded_video

IOU_EPS = 1e-6
METRICS = ("full_miou", "occluded_miou", "full_miou_all",
           "occluded_miou_all")
OFFICIAL_METRICS = ("official_full_miou", "official_occluded_miou")

# Metrics ----------------------------------------------------------------------


def composite(visible: Any, occluder: Any, amodal_prob: Any,
              threshold: float = 0.5) -> jax.Array:
  """The evaluated mask: `visible` outside the occluder, `amodal_prob >
  threshold` inside it (all `[..., H, W]`), as float 0/1."""
  inside = jnp.asarray(occluder) > 0.5
  return jnp.where(inside, jnp.asarray(amodal_prob) > threshold,
                   jnp.asarray(visible) > 0.5).astype(jnp.float32)


def iou(pred: Any, target: Any, region: Any = None,
        eps: float = IOU_EPS) -> jax.Array:
  """`(|P and A| + eps) / (|P or A| + eps)` over the last two axes.

  Args:
    pred, target: binary masks `[..., H, W]`.
    region: optional binary mask `[..., H, W]`: only pixels inside count.

  Returns:
    `[...]` IoUs (1 where both masks are empty in the region).
  """
  p, a = jnp.asarray(pred) > 0.5, jnp.asarray(target) > 0.5
  if region is not None:
    r = jnp.asarray(region) > 0.5
    p, a = p & r, a & r
  inter = jnp.sum(p & a, (-2, -1)).astype(jnp.float32)
  union = jnp.sum(p | a, (-2, -1)).astype(jnp.float32)
  return (inter + eps) / (union + eps)


def object_frame_stats(pred: Any, amodal: Any, visible: Any,
                       occluder: Any) -> dict[str, jax.Array]:
  """Per object-frame numbers of a composite prediction, all `[...]`.

  Args:
    pred: the composite prediction `[..., H, W]` (see `composite`).
    amodal, visible, occluder: ground truth `[..., H, W]`.

  Returns:
    'iou_full', 'iou_occluded' (inside `occluder`), 'occlusion_rate'
    (`1 - |V| / |A|`, 0 for absent objects), 'present' (`|A| > 0`), and the
    boxes' geometry (`box_geometry`) of the amodal ('amodal_height',
    'amodal_width', 'amodal_border') and visible masks ('visible_height',
    'visible_width').
  """
  a_geo = box_geometry(amodal)
  v_geo = box_geometry(visible)
  return {
      "amodal_height": a_geo["height"], "amodal_width": a_geo["width"],
      "amodal_border": a_geo["border"], "visible_height": v_geo["height"],
      "visible_width": v_geo["width"],
      "iou_full": iou(pred, amodal),
      "iou_occluded": iou(pred, amodal, occluder),
      "occlusion_rate": occluded_video.occlusion_rate(
          jnp.asarray(visible) > 0.5, jnp.asarray(amodal) > 0.5),
      "present": jnp.sum(jnp.asarray(amodal) > 0.5, (-2, -1)) > 0,
  }


def box_geometry(mask: Any) -> dict[str, jax.Array]:
  """Bounding-box height, width and distance to the nearest frame border.

  Args:
    mask: `[..., H, W]` binary masks.

  Returns:
    'height', 'width' (pixels; 0 for an empty mask) and 'border' (the
    fewest pixels between the box and a frame edge; -1 for an empty mask),
    all `[...]` int32.
  """
  m = jnp.asarray(mask) > 0.5
  height, width = m.shape[-2:]
  rows, cols = jnp.any(m, -1), jnp.any(m, -2)

  def extent(present, n):
    first = jnp.argmax(present, -1)
    last = n - 1 - jnp.argmax(jnp.flip(present, -1), -1)
    return first, last

  y0, y1 = extent(rows, height)
  x0, x1 = extent(cols, width)
  seen = jnp.any(rows, -1)
  border = jnp.minimum(jnp.minimum(y0, height - 1 - y1),
                       jnp.minimum(x0, width - 1 - x1))
  zero = jnp.zeros_like(y0)
  return {"height": jnp.where(seen, y1 - y0 + 1, zero).astype(jnp.int32),
          "width": jnp.where(seen, x1 - x0 + 1, zero).astype(jnp.int32),
          "border": jnp.where(seen, border, zero - 1).astype(jnp.int32)}


def _track_ends(present: np.ndarray) -> np.ndarray:
  """True at each track's first and last present frame, `[V, K, T]`."""
  t = present.shape[-1]
  idx = np.arange(t)
  first = np.where(present, idx, t).min(-1, keepdims=True)
  last = np.where(present, idx, -1).max(-1, keepdims=True)
  return present & ((idx == first) | (idx == last))


def per_frame_miou(values: Any, occlusion_rate: Any, present: Any,
                   min_rate: float = 0.1, max_rate: float = 0.7,
                   drop_ends: bool = True, exclusive: bool = False,
                   keep: Any = None) -> tuple[float, int]:
  """The per-frame protocol: mean over frames of the mean over kept objects.

  Args:
    values: `[V, K, T]` per object-frame IoUs (videos, objects, frames).
    occlusion_rate: `[V, K, T]`.
    present: `[V, K, T]` bool, the object is in the frame (`|A| > 0`).
    min_rate, max_rate: kept occlusion rates (inclusive).
    drop_ends: drop each track's first and last present frame.
    exclusive: keep rates strictly inside `(min_rate, max_rate)`.
    keep: optional `[V, K, T]` bool: further object-frames to keep (the
      official protocol's filters).

  Returns:
    `(mean, number of frames that kept at least one object)`; the mean is
    NaN when no frame qualifies.
  """
  values = np.asarray(values, np.float64)
  rate = np.asarray(occlusion_rate, np.float64)
  present = np.asarray(present, bool)
  if exclusive:
    in_range = (rate > min_rate) & (rate < max_rate)
  else:
    in_range = (rate >= min_rate) & (rate <= max_rate)
  keep = present & in_range & (True if keep is None else np.asarray(keep,
                                                                    bool))
  if drop_ends:
    keep &= ~_track_ends(present)
  count = keep.sum(1)                                     # [V, T]
  frame_mean = np.where(keep, values, 0.).sum(1) / np.maximum(count, 1)
  frames = count > 0
  if not frames.any():
    return float("nan"), 0
  return float(frame_mean[frames].mean()), int(frames.sum())


def object_frame_miou(values: Any, present: Any) -> tuple[float, int]:
  """Plain mean over every present object-frame: `(mean, count)`."""
  values = np.asarray(values, np.float64)
  present = np.asarray(present, bool)
  if not present.any():
    return float("nan"), 0
  return float(values[present].mean()), int(present.sum())

def summarize(stats: dict[str, np.ndarray], min_rate: float = 0.1,
              max_rate: float = 0.7,
              protocols: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """`METRICS` (and counts) from `object_frame_stats` arrays `[V, K, T]`;
  a metric is None when no frame (object-frame) qualifies.

  `protocols` maps a prefix (e.g. 'official') to an `OfficialProtocol`
  (`crl.evaluators.amodal_official`): each adds '<prefix>_full_miou',
  '<prefix>_occluded_miou' and '<prefix>_num_frames'."""
  out: dict[str, Any] = {}
  for prefix, protocol in (protocols or {}).items():
    keep = protocol.keep(stats)
    for name, key in (("full", "iou_full"), ("occluded", "iou_occluded")):
      value, frames = per_frame_miou(
          stats[key], stats["occlusion_rate"], stats["present"],
          protocol.min_occlusion, protocol.max_occlusion, exclusive=True,
          keep=keep)
      out[f"{prefix}_{name}_miou"] = value if frames else None
    out[f"{prefix}_num_frames"] = frames
  for name, key in (("full", "iou_full"), ("occluded", "iou_occluded")):
    value, frames = per_frame_miou(stats[key], stats["occlusion_rate"],
                                   stats["present"], min_rate, max_rate)
    out[f"{name}_miou"] = value if frames else None
    value, object_frames = object_frame_miou(stats[key], stats["present"])
    out[f"{name}_miou_all"] = value if object_frames else None
  out["num_frames"] = frames
  out["num_object_frames"] = object_frames
  return out


def protocol_prefixes(row: Mapping[str, Any]) -> list[str]:
  """The prefixes of the public-code protocols a result row holds (those
  with a '<prefix>_full_miou' entry), e.g. ['official', 'official_px']."""
  return [k[:-len("_full_miou")] for k in row
          if k.startswith("official") and k.endswith("_full_miou")]

def format_table(results: dict[str, dict[str, dict[str, float]]],
                 metrics: Sequence[str] | None = None) -> str:
  """A fixed-width table: one row per (split, method); by default the
  `METRICS` and, where rows have them, the public-code protocols' full and
  occluded mIoU (`protocol_prefixes`)."""
  rows = [(split, method, row) for split, methods in results.items()
          for method, row in methods.items()]
  if metrics is None:
    prefixes: list[str] = []
    for _, _, r in rows:
      prefixes += [p for p in protocol_prefixes(r) if p not in prefixes]
    metrics = METRICS + tuple(f"{p}_{m}_miou" for p in prefixes
                              for m in ("full", "occluded"))
  w_split = max([len("split")] + [len(r[0]) for r in rows]) + 2
  w_method = max([len("method")] + [len(r[1]) for r in rows]) + 2
  head = ("split".ljust(w_split) + "method".ljust(w_method) +
          "".join(m.rjust(max(19, len(m) + 1)) for m in metrics))
  lines = [head, "-" * len(head)]
  for split, method, row in rows:
    cells = []
    for m in metrics:
      v = row.get(m)
      cells.append(("-" if v is None else f"{v:.4f}").rjust(
          max(19, len(m) + 1)))
    lines.append(split.ljust(w_split) + method.ljust(w_method) +
                 "".join(cells))
  return "\n".join(lines)

