"""Test-time adaptation of SaVos on the scored videos themselves.

The paper adapts SaVos to a new distribution with its self-supervised loss
on unlabeled video of that distribution. Here every scored video is adapted
on its own: from the same trained parameters each time, with the
self-supervised loss of that one video only (its observed masks, flows and
frames; never its amodal masks), Adam for `steps[-1]` steps; the amodal
prediction is scored after each number of steps in `steps` (0: no
adaptation), which gives the curve of mIoU against adaptation steps.

The learning rate and the number of steps are chosen on held-out videos of
the same shifted distribution ('validation' stream, disjoint from the
scored 'test' stream): the pair with the best occluded-region mIoU (crl's
per-frame protocol). The test split then reports the whole curve at that
learning rate, and the gain at the chosen steps over no adaptation with a
95% interval over videos (normal approximation of the paired per-video
differences of the mean occluded-region IoU).

`occlusion_stats` measures the occluded pixels per object-frame of a split
(to compare the shifted distribution's occlusion with the test split's).

Videos are adapted in parallel (`jax.vmap` over a batch, one parameter copy
per video); one compilation serves every batch and learning rate.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crl.evaluators import amodal as amodal_eval
from crl.evaluators import amodal_metrics
from crl.evaluators.common import gather
from crl.data import occluded_video
from crl.models import savos as savos_lib
from crl.trainers import savos_losses

OBSERVED_KEYS = occluded_video.OBSERVED_KEYS


def make_adapt_fn(model: Any, steps: Sequence[int], loss_kwargs: dict,
                  threshold: float = 0.5):
  """A jitted `(params, batch, learning_rate) -> (stats, probabilities)`.

  Args:
    model: the SaVos module.
    steps: increasing step counts at which to score (e.g. (0, 5, 20)).
    loss_kwargs: keyword arguments of `savos_losses.self_supervised_loss`.
    threshold: amodal probability threshold of the composite.

  Returns:
    A function returning `object_frame_stats` arrays `[S, B, K, T]` and the
    amodal probabilities in the frames `[S, B, K, T, H, W]`, one row per
    entry of `steps`.
  """
  steps = tuple(int(s) for s in steps)
  if not steps or steps[0] < 0 or any(b <= a for a, b in zip(steps,
                                                             steps[1:])):
    raise ValueError(f"TTA steps must be increasing and >= 0, got {steps}.")

  def loss(params, video):
    out = model.apply({"params": params}, video, train=True)
    return savos_losses.self_supervised_loss(out, **loss_kwargs)[0]

  def predict(params, video):
    out = model.apply({"params": params}, video, train=False)
    h, w = video["visible"].shape[-2:]
    return savos_lib.to_frames(out["amodal"], out["boxes"], h, w)[0]

  def adapt_one(params, video, learning_rate):
    video = jax.tree.map(lambda x: x[None], video)        # a batch of one
    tx = optax.adam(learning_rate)
    state = tx.init(params)

    def step(carry, _):
      p, s = carry
      g = jax.grad(loss)(p, video)
      updates, s = tx.update(g, s, p)
      return (optax.apply_updates(p, updates), s), None

    probs, done, carry = [], 0, (params, state)
    for n in steps:
      if n > done:
        carry, _ = jax.lax.scan(step, carry, None, length=n - done)
        done = n
      probs.append(predict(carry[0], video))
    return jnp.stack(probs)                                # [S, K, T, H, W]

  def fn(params, batch, learning_rate):
    observed = {k: batch[k] for k in OBSERVED_KEYS}
    probs = jax.vmap(adapt_one, in_axes=(None, 0, None))(
        params, observed, learning_rate)                   # [B, S, ...]
    probs = jnp.moveaxis(probs, 1, 0)
    truth = amodal_eval.ground_truth(batch)
    pred = amodal_metrics.composite(batch["visible"], batch["occluder"],
                                    probs, threshold)
    stats = amodal_metrics.object_frame_stats(
        pred, truth["amodal"], truth["visible"], truth["occluder"])
    # Ground-truth-only entries have no step axis yet.
    stats = {k: jnp.broadcast_to(v, pred.shape[:-2])
             for k, v in stats.items()}
    return stats, probs

  return jax.jit(fn)


def adapt_stats(adapt_fn, params: Any, batches: Iterator[dict[str, Any]],
                learning_rate: float) -> dict[str, np.ndarray]:
  """`object_frame_stats` `[S, V, K, T]` over all (real) videos."""
  parts = []
  for batch in batches:
    stats = jax.tree.map(gather, adapt_fn(params, batch,
                                          jnp.float32(learning_rate))[0])
    real = gather(batch["mask"]) > 0
    parts.append({k: v[:, real] for k, v in stats.items()})
  return {k: np.concatenate([p[k] for p in parts], 1) for k in parts[0]}


def curve(stats: dict[str, np.ndarray], steps: Sequence[int],
          evaluator: amodal_eval.AmodalEvaluator) -> dict[str, Any]:
  """`{'steps', metric: [value per step]}` with crl's and the official
  protocol's metrics."""
  rows = [evaluator.summarize({k: v[i] for k, v in stats.items()})
          for i in range(len(steps))]
  out: dict[str, Any] = {"steps": list(steps)}
  for key in rows[0]:
    out[key] = [r[key] for r in rows]
  return out


def per_video_occluded(stats: dict[str, np.ndarray], min_rate: float,
                       max_rate: float) -> np.ndarray:
  """`[S, V]` mean occluded-region IoU of each video's object-frames with
  occlusion rate in `[min_rate, max_rate]` (NaN where none)."""
  rate = stats["occlusion_rate"]
  keep = stats["present"].astype(bool) & (rate >= min_rate) & (
      rate <= max_rate)
  total = np.where(keep, stats["iou_occluded"], 0.).sum((-2, -1))
  count = keep.sum((-2, -1))
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def paired_gain(per_video: np.ndarray, index: int) -> dict[str, Any]:
  """Mean gain of row `index` over row 0 `[S, V]`, with a 95% interval."""
  diff = per_video[index] - per_video[0]
  diff = diff[np.isfinite(diff)]
  if not len(diff):
    return {"gain": None, "interval": None, "videos": 0}
  mean = float(diff.mean())
  half = float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff))) if len(
      diff) > 1 else float("nan")
  return {"gain": mean, "interval": [mean - half, mean + half],
          "videos": int(len(diff))}


def run_tta(*, model: Any, params: Any, pipeline: Any,
            evaluator: amodal_eval.AmodalEvaluator, split: str,
            intervention: str, validation_examples: int,
            learning_rates: Sequence[float], steps: Sequence[int],
            loss_kwargs: dict) -> dict[str, Any]:
  """Chooses (learning rate, steps) on validation videos, scores `split`.

  Returns:
    {'validation': {lr: curve}, 'chosen': {'learning_rate', 'steps'},
     'test': curve at the chosen learning rate, 'gain': `paired_gain` at
     the chosen steps, 'metrics': the split's metrics at the chosen
     steps}.
  """
  adapt_fn = make_adapt_fn(model, steps, loss_kwargs, evaluator.threshold)
  val = {}
  best = (-np.inf, learning_rates[0], 0)
  for lr in learning_rates:
    stats = adapt_stats(adapt_fn, params, pipeline.batches(
        "validation", intervention, validation_examples), lr)
    val[str(lr)] = curve(stats, steps, evaluator)
    for i, value in enumerate(val[str(lr)]["occluded_miou"]):
      if value is not None and value > best[0]:
        best = (value, lr, i)
  _, lr, index = best
  stats = adapt_stats(adapt_fn, params, pipeline.eval_batches(split), lr)
  test = curve(stats, steps, evaluator)
  per_video = per_video_occluded(stats, evaluator.min_occlusion,
                                 evaluator.max_occlusion)
  metrics = {k: v[index] for k, v in test.items() if k != "steps"}
  return {"validation": val,
          "chosen": {"learning_rate": lr, "steps": int(steps[index])},
          "test": test, "gain": paired_gain(per_video, index),
          "metrics": metrics}


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
