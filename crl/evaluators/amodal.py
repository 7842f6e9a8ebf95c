"""Amodal-segmentation evaluation: metrics, the protocol, baselines.

specs/amodal.md, "Evaluation":

* `composite`: the visible mask where nothing occludes, the thresholded
  amodal prediction inside the occluder region (a method only ever has to
  guess what is hidden);
* `iou`: `(|P and A| + 1e-6) / (|P or A| + 1e-6)`, of the full mask and
  restricted to the occluded region (the pixels under other objects);
* `per_frame_miou`: keep object-frames with occlusion rate `1 - |V| / |A|`
  in `[0.1, 0.7]`, drop each track's first and last frame, average over the
  objects of a frame, then over frames; `object_frame_miou`: the plain
  average over every object-frame where the object is present;
* `OfficialProtocol` (the public SaVos code's test set): object-frames
  whose amodal box is over `20 x 20` px and at least 16 px from the border,
  whose visible box is over `8 x 8` px, of tracks longer than 10 frames,
  with an occlusion rate strictly inside (0.1, 0.7), the first and last
  frame dropped, then the per-frame mean (reported as 'official_*' beside
  crl's protocol);
* baselines: the visible mask as the amodal mask, and the convex hull of
  the visible mask (`convex_hull_masks`, exact, SciPy's Qhull on pixel
  centres).

`AmodalEvaluator` runs a SaVos model (or the baselines) over eval splits of
an `OccludedVideo` pipeline: predictions are pasted back into the frames and
scored there, batch by batch (only per-object-frame numbers stay).
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import spatial

from crl.data import occluded_video
from crl.evaluators.common import gather
from crl.models import savos as savos_lib

IOU_EPS = 1e-6
METRICS = ("full_miou", "occluded_miou", "full_miou_all",
           "occluded_miou_all")
OFFICIAL_METRICS = ("official_full_miou", "official_occluded_miou")
BASELINES = ("visible", "convex_hull")


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


class OfficialProtocol(NamedTuple):
  """The public SaVos code's test-set filters (pixels and frames).

  An object-frame is kept when its amodal box is over `min_amodal_side`
  px on both sides and at least `min_border` px from every frame edge, its
  visible box is over `min_visible_side` px on both sides, its track is
  present in more than `min_track_frames` frames, and its occlusion rate is
  strictly inside `(min_occlusion, max_occlusion)`; each track's first and
  last frame are dropped. The defaults are the public code's (320x480
  FISHBOWL frames); configs scale the pixel sizes to smaller frames.
  """
  min_amodal_side: float = 20
  min_border: float = 16
  min_visible_side: float = 8
  min_track_frames: int = 10
  min_occlusion: float = 0.1
  max_occlusion: float = 0.7

  def keep(self, stats: dict[str, np.ndarray]) -> np.ndarray:
    """`[V, K, T]` bool: the object-frames passing the size, border and
    track-length filters (occlusion is applied by `per_frame_miou`)."""
    s = {k: np.asarray(v) for k, v in stats.items()}
    present = s["present"].astype(bool)
    keep = (present & (s["amodal_height"] > self.min_amodal_side) &
            (s["amodal_width"] > self.min_amodal_side) &
            (s["amodal_border"] >= self.min_border) &
            (s["visible_height"] > self.min_visible_side) &
            (s["visible_width"] > self.min_visible_side))
    long_tracks = present.sum(-1, keepdims=True) > self.min_track_frames
    return keep & long_tracks

  def describe(self) -> str:
    return (f"official: amodal box > {self.min_amodal_side:g} px a side and "
            f">= {self.min_border:g} px from the border, visible box > "
            f"{self.min_visible_side:g} px a side, tracks of > "
            f"{self.min_track_frames} frames, occlusion rate in "
            f"({self.min_occlusion:g}, {self.max_occlusion:g}) exclusive, "
            "first and last frame dropped, mean over objects then frames")


def summarize(stats: dict[str, np.ndarray], min_rate: float = 0.1,
              max_rate: float = 0.7,
              official: OfficialProtocol | None = None) -> dict[str, Any]:
  """`METRICS` (and counts) from `object_frame_stats` arrays `[V, K, T]`;
  a metric is None when no frame (object-frame) qualifies. With `official`,
  also `OFFICIAL_METRICS` and 'official_num_frames'."""
  out: dict[str, Any] = {}
  if official is not None:
    keep = official.keep(stats)
    for name, key in (("full", "iou_full"), ("occluded", "iou_occluded")):
      value, frames = per_frame_miou(
          stats[key], stats["occlusion_rate"], stats["present"],
          official.min_occlusion, official.max_occlusion, exclusive=True,
          keep=keep)
      out[f"official_{name}_miou"] = value if frames else None
    out["official_num_frames"] = frames
  for name, key in (("full", "iou_full"), ("occluded", "iou_occluded")):
    value, frames = per_frame_miou(stats[key], stats["occlusion_rate"],
                                   stats["present"], min_rate, max_rate)
    out[f"{name}_miou"] = value if frames else None
    value, object_frames = object_frame_miou(stats[key], stats["present"])
    out[f"{name}_miou_all"] = value if object_frames else None
  out["num_frames"] = frames
  out["num_object_frames"] = object_frames
  return out


# Baselines --------------------------------------------------------------------


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
  """The pixels whose centres lie in the convex hull of `mask`'s pixel
  centres, `[H, W]` (the mask itself when its pixels are collinear or
  fewer than 3)."""
  mask = np.asarray(mask) > 0.5
  ys, xs = np.nonzero(mask)
  if len(xs) < 3:
    return mask.astype(np.float32)
  points = np.stack([xs, ys], 1).astype(np.float64)
  try:
    hull = spatial.ConvexHull(points)
  except spatial.QhullError:
    return mask.astype(np.float32)
  y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
  gy, gx = np.mgrid[y0:y1, x0:x1]
  grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
  inside = np.all(grid @ hull.equations[:, :2].T + hull.equations[:, 2] <=
                  1e-9, axis=1)
  out = np.zeros(mask.shape, np.float32)
  out[y0:y1, x0:x1] = inside.reshape(gy.shape)
  return out


def convex_hull_masks(visible: np.ndarray) -> np.ndarray:
  """`convex_hull_mask` of every `[H, W]` mask of `[..., H, W]`."""
  visible = np.asarray(visible)
  flat = visible.reshape((-1,) + visible.shape[-2:])
  return np.stack([convex_hull_mask(m) for m in flat]).reshape(visible.shape)


def baseline_predictions(name: str, visible: np.ndarray) -> np.ndarray:
  """The amodal 'prediction' of a baseline from the visible masks."""
  if name == "visible":
    return np.asarray(visible, np.float32)
  if name == "convex_hull":
    return convex_hull_masks(visible)
  raise ValueError(f"Unknown baseline {name!r}; known: {BASELINES}.")


# Evaluator --------------------------------------------------------------------


def ground_truth(batch: dict[str, Any]) -> dict[str, Any]:
  """The exact 'amodal', 'visible' and 'occluder' masks of an eval batch:
  'gt_visible' / 'gt_occluder' when the observed ones are perturbed
  (`crl.data.tracker_noise`), else the batch's own."""
  return {"amodal": batch["amodal"],
          "visible": batch.get("gt_visible", batch["visible"]),
          "occluder": batch.get("gt_occluder", batch["occluder"])}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class AmodalEvaluator:
  """Scores SaVos parameters and the baselines on eval splits.

  Args:
    pipeline: an `InputPipeline` over an `OccludedVideo` dataset whose eval
      batches carry 'amodal' (the ground truth) and 'mask' (padding).
    model: the `SaVos` module.
    splits: eval split names (a sequence or a comma-separated string).
    min_occlusion, max_occlusion: the per-frame protocol's occlusion range.
    threshold: amodal probability threshold.
    official: also score with this `OfficialProtocol` ('official_*').
  """

  def __init__(self, *, pipeline: Any, model: Any,
               splits: Sequence[str] | str = ("test",),
               min_occlusion: float = 0.1, max_occlusion: float = 0.7,
               threshold: float = 0.5,
               official: OfficialProtocol | None = None):
    self.pipeline = pipeline
    self.model = model
    known = pipeline.dataset.eval_splits()
    if isinstance(splits, str):
      splits = [s.strip() for s in splits.split(",") if s.strip()]
    unknown = [s for s in splits if s not in known]
    if unknown or not splits:
      raise ValueError(f"Unknown or no eval split(s) {list(unknown)}; the "
                       f"dataset has: {', '.join(known)}.")
    if not 0. <= min_occlusion <= max_occlusion <= 1.:
      raise ValueError(f"Occlusion range must satisfy 0 <= min <= max <= 1, "
                       f"got [{min_occlusion}, {max_occlusion}].")
    self.splits = list(splits)
    self.descriptions = {s: known[s] for s in self.splits}
    self.min_occlusion, self.max_occlusion = min_occlusion, max_occlusion
    self.threshold = threshold
    self.official = official
    self._baselines: dict[str, dict[str, dict[str, float]]] = {}
    # One compiled function for scores and pictures: (stats, probabilities).
    self._stats_fn = jax.jit(self._model_stats)

  def predict_frames(self, params: Any, batch: dict[str, jax.Array]
                     ) -> jax.Array:
    """The model's amodal probabilities in the frames, `[B, K, T, H, W]`."""
    observed = {k: batch[k] for k in occluded_video.OBSERVED_KEYS}
    out = self.model.apply({"params": params}, observed, train=False)
    height, width = batch["visible"].shape[-2:]
    return savos_lib.to_frames(out["amodal"], out["boxes"], height, width)

  def _model_stats(self, params, batch):
    prob = self.predict_frames(params, batch)
    pred = composite(batch["visible"], batch["occluder"], prob,
                     self.threshold)
    truth = ground_truth(batch)
    return object_frame_stats(pred, truth["amodal"], truth["visible"],
                              truth["occluder"]), prob

  def _summarize(self, parts: list[dict[str, np.ndarray]]) -> dict[str, float]:
    return summarize(_concat(parts), self.min_occlusion, self.max_occlusion,
                     self.official)

  def model_metrics(self, params: Any, split: str) -> dict[str, float]:
    """`METRICS` of a SaVos model's composite prediction on `split`."""
    parts = []
    for batch in self.pipeline.eval_batches(split):
      stats = jax.tree.map(gather, self._stats_fn(params, batch)[0])
      real = gather(batch["mask"]) > 0
      parts.append({k: v[real] for k, v in stats.items()})
    return self._summarize(parts)

  def baseline_metrics(self, split: str) -> dict[str, dict[str, float]]:
    """`{baseline: METRICS}` on `split` (computed once, then cached)."""
    if split not in self._baselines:
      parts: dict[str, list] = {name: [] for name in BASELINES}
      for batch in self.pipeline.eval_batches(split):
        real = gather(batch["mask"]) > 0
        host = {k: gather(batch[k])[real]
                for k in ("visible", "occluder", "amodal")}
        truth = {k: gather(v)[real] for k, v in ground_truth(batch).items()}
        for name in BASELINES:
          guess = baseline_predictions(name, host["visible"])
          pred = composite(host["visible"], host["occluder"], guess,
                           self.threshold)
          stats = object_frame_stats(pred, truth["amodal"], truth["visible"],
                                     truth["occluder"])
          parts[name].append(jax.tree.map(np.asarray, stats))
      self._baselines[split] = {name: self._summarize(p)
                                for name, p in parts.items()}
    return self._baselines[split]

  def evaluate(self, params: dict[str, Any],
               splits: Iterable[str] | None = None,
               baselines: bool = True) -> dict[str, dict[str, dict]]:
    """`{split: {method: METRICS}}` for named parameter sets.

    Args:
      params: `{method name: SaVos params}` (e.g. 'savos', 'supervised').
      splits: eval splits (default: the evaluator's).
      baselines: also score `BASELINES` (cached per split).
    """
    out = {}
    for split in (self.splits if splits is None else list(splits)):
      row = {name: self.model_metrics(p, split) for name, p in params.items()}
      if baselines:
        row.update(self.baseline_metrics(split))
      out[split] = row
    return out

  def run(self, params: Any) -> dict[str, dict[str, float]]:
    """Periodic evaluation: `{split: {metric: value}}` of the model alone."""
    return {split: self.model_metrics(params, split) for split in self.splits}

  def first_videos(self, params: Any, split: str, num: int
                   ) -> dict[str, np.ndarray]:
    """Frames, masks and predicted amodal probabilities of the first `num`
    videos of `split` (host arrays; for pictures)."""
    batch = next(iter(self.pipeline.eval_batches(split)))
    prob = gather(self._stats_fn(params, batch)[1])
    keys = ("frames", "visible", "occluder", "amodal")
    out = {k: gather(batch[k])[:num] for k in keys}
    out["prediction"] = prob[:num]
    return out


def format_table(results: dict[str, dict[str, dict[str, float]]],
                 metrics: Sequence[str] | None = None) -> str:
  """A fixed-width table: one row per (split, method); by default the
  `METRICS` and, where rows have them, the `OFFICIAL_METRICS`."""
  rows = [(split, method, row) for split, methods in results.items()
          for method, row in methods.items()]
  if metrics is None:
    official = any(OFFICIAL_METRICS[0] in r for _, _, r in rows)
    metrics = METRICS + (OFFICIAL_METRICS if official else ())
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
