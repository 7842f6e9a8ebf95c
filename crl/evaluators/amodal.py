"""Amodal-segmentation evaluation: the baselines and the evaluator.

* baselines: the visible mask as the amodal mask, and the convex hull of
  the visible mask (`convex_hull_masks`, exact, SciPy's Qhull on pixel
  centres);
* `AmodalEvaluator` runs a SaVos model (or the baselines) over eval splits
  of an `OccludedVideo` pipeline: predictions are pasted back into the
  frames and scored there, batch by batch (only per-object-frame numbers
  stay), under crl's per-frame protocol and the public code's protocols
  (`crl.evaluators.amodal_metrics`, `crl.evaluators.amodal_official`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from scipy import spatial

from crl.data import occluded_video
from crl.evaluators import amodal_metrics
from crl.evaluators import amodal_official
from crl.evaluators.common import gather
from crl.models import savos as savos_lib

BASELINES = ("visible", "convex_hull")

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
    protocols: also score with these `OfficialProtocol`s, by prefix
      (e.g. {'official': ...}: 'official_full_miou', ...).
  """

  def __init__(self, *, pipeline: Any, model: Any,
               splits: Sequence[str] | str = ("test",),
               min_occlusion: float = 0.1, max_occlusion: float = 0.7,
               threshold: float = 0.5,
               protocols: Mapping[
                   str, amodal_official.OfficialProtocol] | None = None):
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
    self.protocols = dict(protocols or {})
    self._baselines: dict[str, dict[str, dict[str, float]]] = {}
    self._removed: dict[str, dict[str, Any]] = {}
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
    pred = amodal_metrics.composite(batch["visible"], batch["occluder"],
                                    prob, self.threshold)
    truth = ground_truth(batch)
    return amodal_metrics.object_frame_stats(
        pred, truth["amodal"], truth["visible"], truth["occluder"]), prob

  def summarize(self, stats: dict[str, np.ndarray]) -> dict[str, float]:
    """`amodal_metrics.summarize` with this evaluator's protocols."""
    return amodal_metrics.summarize(stats, self.min_occlusion,
                                    self.max_occlusion, self.protocols)

  def model_metrics(self, params: Any, split: str) -> dict[str, float]:
    """`METRICS` of a SaVos model's composite prediction on `split`."""
    parts = []
    for batch in self.pipeline.eval_batches(split):
      stats = jax.tree.map(gather, self._stats_fn(params, batch)[0])
      real = gather(batch["mask"]) > 0
      parts.append({k: v[real] for k, v in stats.items()})
    return self.summarize(_concat(parts))

  def baseline_metrics(self, split: str) -> dict[str, dict[str, float]]:
    """`{baseline: METRICS}` on `split` (computed once, then cached; so
    is `removed(split)`)."""
    if split not in self._baselines:
      parts: dict[str, list] = {name: [] for name in BASELINES}
      for batch in self.pipeline.eval_batches(split):
        real = gather(batch["mask"]) > 0
        host = {k: gather(batch[k])[real]
                for k in ("visible", "occluder", "amodal")}
        truth = {k: gather(v)[real] for k, v in ground_truth(batch).items()}
        for name in BASELINES:
          guess = baseline_predictions(name, host["visible"])
          pred = amodal_metrics.composite(host["visible"], host["occluder"],
                                          guess, self.threshold)
          stats = amodal_metrics.object_frame_stats(
              pred, truth["amodal"], truth["visible"], truth["occluder"])
          parts[name].append(jax.tree.map(np.asarray, stats))
      stats = {name: _concat(p) for name, p in parts.items()}
      self._baselines[split] = {name: self.summarize(s)
                                for name, s in stats.items()}
      # The filters read the ground truth only (any method's stats do).
      self._removed[split] = {
          prefix: protocol.removed(stats[BASELINES[0]])
          for prefix, protocol in self.protocols.items()}
    return self._baselines[split]

  def removed(self, split: str) -> dict[str, dict[str, Any]]:
    """`{protocol prefix: OfficialProtocol.removed}` on `split`: the
    object-frames and tracks each filter removes."""
    self.baseline_metrics(split)
    return self._removed[split]

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

