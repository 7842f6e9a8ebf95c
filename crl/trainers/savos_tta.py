"""Test-time adaptation of SaVos on the scored videos: choice, curve, gain.

The paper adapts SaVos to a new distribution with its self-supervised loss
on unlabeled video of that distribution. Here every scored video is adapted
on its own (`crl.trainers.savos_adapt.VideoAdapter`: from the same trained
parameters each time, with that video's self-supervised loss only, never
its amodal masks) and scored after each number of steps in `steps`
(0: no adaptation).

`run_tta`:

1. chooses the learning rate and the number of steps on held-out videos of
   the shifted distribution (the 'validation' stream, disjoint from the
   scored eval splits): the pair with the best occluded-region mIoU
   (crl's per-frame protocol);
2. adapts the scored split's videos (the first `examples`, 0: all) and
   reports the curve of every metric against adaptation steps at the
   chosen learning rate, and the gain over no adaptation at each step:
   the mean over videos of the per-video difference (each video's own
   per-frame mIoU, `per_video`), with a 95% paired percentile bootstrap
   interval over videos (`paired_gain`);
3. does the same on reference splits (e.g. the in-distribution 'test'),
   with the learning rate and steps chosen on the shifted videos.

`occlusion_stats` measures the occluded pixels per object-frame of a split
(to check that the shifted distribution is as occluded as the test split).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

from absl import logging
import numpy as np

from crl.evaluators import amodal as amodal_eval
from crl.evaluators import amodal_metrics
from crl.evaluators import transfer_analysis
from crl.evaluators.common import gather
from crl.trainers import savos_adapt

GAIN_METRICS = {"occluded": "iou_occluded", "full": "iou_full"}


def adapt_stats(adapter: savos_adapt.VideoAdapter, params: Any,
                batches: Iterable[dict[str, Any]], learning_rate: float,
                steps: Sequence[int]) -> dict[str, np.ndarray]:
  """`object_frame_stats` `[S, V, K, T]` of every real video of `batches`
  after each of `steps` steps of its own adaptation."""
  parts = [adapter.curve_stats(params, batch, learning_rate, steps)
           for batch in batches]
  return {k: np.concatenate([p[k] for p in parts], 1) for k in parts[0]}


def curve(stats: dict[str, np.ndarray], steps: Sequence[int],
          evaluator: amodal_eval.AmodalEvaluator) -> dict[str, Any]:
  """`{'steps', metric: [value per step]}`: the evaluator's metrics (crl's
  and the public code's protocols) after each number of steps."""
  rows = [evaluator.summarize({k: v[i] for k, v in stats.items()})
          for i in range(len(steps))]
  out: dict[str, Any] = {"steps": list(steps)}
  for key in rows[0]:
    out[key] = [r[key] for r in rows]
  return out


def per_video(stats: dict[str, np.ndarray], key: str, min_rate: float,
              max_rate: float) -> np.ndarray:
  """`[S, V]` each video's own per-frame mIoU of `stats[key]` (crl's
  protocol on that video alone; NaN where none of its frames qualifies)."""
  s, v = stats[key].shape[:2]
  out = np.full((s, v), np.nan)
  for i in range(s):
    for j in range(v):
      value, frames = amodal_metrics.per_frame_miou(
          stats[key][i, j:j + 1], stats["occlusion_rate"][i, j:j + 1],
          stats["present"][i, j:j + 1], min_rate, max_rate)
      if frames:
        out[i, j] = value
  return out


def paired_gain(before: np.ndarray, after: np.ndarray, *, n_boot: int = 2000,
                seed: int = 0, level: float = 0.95) -> dict[str, Any]:
  """Mean of `after - before` over videos (`[V]` each; NaN pairs dropped)
  with a percentile bootstrap interval, videos resampled in pairs.

  Returns:
    `{'gain', 'interval': [low, high] (None under 2 videos), 'videos',
    'improved': videos with after > before}`.
  """
  before, after = np.asarray(before, float), np.asarray(after, float)
  ok = np.isfinite(before) & np.isfinite(after)
  before, after = before[ok], after[ok]
  if not len(before):
    return {"gain": None, "interval": None, "videos": 0, "improved": 0}
  out = {"gain": float(np.mean(after - before)), "interval": None,
         "videos": int(len(before)),
         "improved": int(np.sum(after > before))}
  if len(before) > 1:
    low, high, _ = transfer_analysis.bootstrap_ci(
        lambda x, y: float(np.mean(y - x)), before, after, n_boot=n_boot,
        seed=seed, level=level)
    out["interval"] = [low, high]
  return out


def gains(stats: dict[str, np.ndarray], min_rate: float,
          max_rate: float) -> dict[str, list[dict[str, Any]]]:
  """`{'occluded'|'full': [paired_gain of step i over step 0, per step]}`."""
  out = {}
  for name, key in GAIN_METRICS.items():
    values = per_video(stats, key, min_rate, max_rate)
    out[name] = [paired_gain(values[0], values[i])
                 for i in range(len(values))]
  return out


def run_tta(*, adapter: savos_adapt.VideoAdapter, params: Any, pipeline: Any,
            evaluator: amodal_eval.AmodalEvaluator, split: str,
            intervention: str, validation_examples: int, examples: int,
            learning_rates: Sequence[float], steps: Sequence[int],
            reference_splits: Sequence[str] = ()) -> dict[str, Any]:
  """Chooses (learning rate, steps) on validation videos, then adapts and
  scores `split` and `reference_splits`.

  Args:
    adapter: the compiled per-video adaptation.
    params: the trained SaVos parameters (every video starts from them).
    pipeline: the `VideoPipeline` (validation stream and eval splits).
    evaluator: the amodal evaluator (its protocols and occlusion range).
    split: the scored shifted split; `intervention` its distribution's
      name for the validation stream.
    validation_examples: held-out videos for the choice.
    examples: scored videos per split (the first ones; 0: all).
    learning_rates, steps: the grid (steps increase from 0).
    reference_splits: further eval splits scored at the same choice.

  Returns:
    `{'validation': {lr: curve}, 'chosen': {'learning_rate', 'steps'},
    'splits': {split: {'videos', 'curve', 'gains', 'gain' (at the chosen
    steps), 'metrics' (at the chosen steps), 'seconds'}}}`.
  """
  steps = savos_adapt.check_steps(steps)
  lo, hi = evaluator.min_occlusion, evaluator.max_occlusion
  val = {}
  best = (-np.inf, learning_rates[0], 0)
  for lr in learning_rates:
    t0 = time.time()
    stats = adapt_stats(adapter, params, pipeline.batches(
        "validation", intervention, validation_examples), lr, steps)
    val[str(lr)] = curve(stats, steps, evaluator)
    for i, value in enumerate(val[str(lr)]["occluded_miou"]):
      if value is not None and value > best[0]:
        best = (value, lr, i)
    logging.info("TTA validation lr %g: occluded mIoU %s (%.0fs)", lr,
                 val[str(lr)]["occluded_miou"], time.time() - t0)
  _, lr, index = best
  out: dict[str, Any] = {
      "validation": val,
      "chosen": {"learning_rate": lr, "steps": steps[index],
                 "by": f"occluded_miou on {validation_examples} held-out "
                       f"'{intervention}' videos"},
      "splits": {}}
  for name in (split,) + tuple(s for s in reference_splits if s != split):
    t0 = time.time()
    stats = adapt_stats(adapter, params,
                        pipeline.eval_batches(name, examples or None), lr,
                        steps)
    row = {"videos": int(stats["present"].shape[1]),
           "curve": curve(stats, steps, evaluator),
           "gains": gains(stats, lo, hi)}
    row["gain"] = {m: g[index] for m, g in row["gains"].items()}
    row["metrics"] = {k: v[index] for k, v in row["curve"].items()
                      if k != "steps"}
    row["seconds"] = round(time.time() - t0, 1)
    out["splits"][name] = row
    logging.info("TTA %s (%d videos, %.0fs): occluded mIoU %s", name,
                 row["videos"], row["seconds"],
                 row["curve"]["occluded_miou"])
  return out


def occlusion_stats(pipeline: Any, split: str) -> dict[str, float]:
  """Occluded pixels (amodal minus visible) per present object-frame, and
  the mean occlusion rate, over eval split `split`."""
  pixels, rates, count = 0., 0., 0
  for batch in pipeline.eval_batches(split):
    real = gather(batch["mask"]) > 0
    truth = {k: gather(v)[real]
             for k, v in amodal_eval.ground_truth(batch).items()}
    a = truth["amodal"] > 0.5
    hidden = (a & ~(truth["visible"] > 0.5)).sum((-2, -1))
    area = a.sum((-2, -1))
    present = area > 0
    pixels += float(hidden[present].sum())
    rates += float((hidden[present] / area[present]).sum())
    count += int(present.sum())
  return {"occluded_px_per_object_frame": pixels / max(count, 1),
          "mean_occlusion_rate": rates / max(count, 1),
          "object_frames": count}
