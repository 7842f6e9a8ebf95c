"""Low-latency inference by dropping mediator modules from a trained NAC.

Mediators are ranked by importance, then the least important fraction is
*removed*: their signature and code rows are deleted and the model is
rebuilt with fewer modules, so attention and feed-forward work shrink with
them (masking would cost the same time). For every fraction the curve
records accuracy on a split and the measured inference latency of the
jit-compiled smaller model on this machine, relative to the full model.

Rankings (most important first):
  'degree':    in- plus out-degree in the learned graph (the truncated
               kernel K among mediators, self-links excluded), plus the
               module's link weight to the output modules;
  'code_norm': the L2 norm of the module's code;
  'random':    a seeded permutation (the control).

When input modules double as mediators (`inputs_are_mediators`), removing
a mediator also removes its read-in.
"""

from __future__ import annotations

import csv
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crl.evaluators import common as eval_common
from crl.models import kernel as kernel_lib
from crl.models import nac as nac_lib

RANKINGS = ("degree", "code_norm", "random")
DEFAULT_FRACTIONS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def _mediator_kernel(model: nac_lib.NAC, params: Any) -> tuple[np.ndarray,
                                                                np.ndarray]:
  """`(K among mediators [U, U], K from outputs to mediators [O, U])`."""
  sigma = (float(np.exp(params["kernel_log_sigma"])) if model.learn_sigma
           else model.kernel_sigma)
  med = params["mediator_signatures"]
  out = params["output_signatures"]
  k_med = kernel_lib.signature_kernel(
      kernel_lib.cosine_distance(med, med), sigma, model.kernel_tau)["kernel"]
  k_out = kernel_lib.signature_kernel(
      kernel_lib.cosine_distance(out, med), sigma, model.kernel_tau)["kernel"]
  if model.complete_graph:
    k_med, k_out = jnp.ones_like(k_med), jnp.ones_like(k_out)
  return np.asarray(k_med), np.asarray(k_out)


def rank_mediators(model: nac_lib.NAC, params: Any, by: str,
                   seed: int = 0) -> np.ndarray:
  """Mediator indices, most important first.

  Args:
    model: the trained NAC.
    params: its parameters.
    by: one of `RANKINGS`.
    seed: seed of the 'random' ranking.

  Returns:
    int `[num_mediator_modules]`.
  """
  n = model.num_mediator_modules
  if by == "degree":
    k_med, k_out = _mediator_kernel(model, params)
    k_med = k_med * (1.0 - np.eye(n))
    score = k_med.sum(0) + k_med.sum(1) + k_out.sum(0)
  elif by == "code_norm":
    codes = np.asarray(params["mediator_codes"])
    if codes.ndim == 3:  # per-layer codes [layers, U, d]
      codes = codes.transpose(1, 0, 2).reshape(n, -1)
    score = np.linalg.norm(codes, axis=-1)
  elif by == "random":
    return np.random.default_rng(seed).permutation(n)
  else:
    raise ValueError(f"ranking must be one of {RANKINGS}, got {by!r}.")
  # Stable: ties keep the lower index first.
  return np.argsort(-score, kind="stable")


def drop_mediators(model: nac_lib.NAC, params: Any,
                   keep: Sequence[int]) -> tuple[nac_lib.NAC, Any]:
  """A smaller NAC with only the mediators `keep`, and its parameters.

  The signature and code rows of the dropped mediators are removed (and their
  input modules, when inputs double as mediators); every other parameter is
  shared with the full model. The graph prior and regulariser are switched
  off in the returned model: they only shape training.
  """
  if not isinstance(model, nac_lib.NAC):
    raise TypeError(f"module dropping needs a NAC model, got "
                    f"{type(model).__name__}.")
  keep = np.sort(np.asarray(keep, np.int64))
  n = model.num_mediator_modules
  if keep.size < 1 or keep.min() < 0 or keep.max() >= n or len(
      np.unique(keep)) != keep.size:
    raise ValueError(f"keep must be distinct mediator indices in [0, {n}), "
                     f"got {keep.tolist()}.")
  new = dict(params)
  new["mediator_signatures"] = params["mediator_signatures"][keep]
  codes = params["mediator_codes"]
  new["mediator_codes"] = (codes[:, keep] if model.per_layer_codes
                           else codes[keep])
  fields = {"num_mediator_modules": int(keep.size), "graph_prior": None,
            "graph_regularizer": None}
  if model.inputs_are_mediators:
    fields["num_input_modules"] = int(keep.size)
  return model.clone(**fields), new


def _compiled_forward(model: Any, params: Any, images: jax.Array):
  """A no-argument call of the jitted inference pass, compiled and warm."""
  fn = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)[0])
  jax.block_until_ready(fn(params, images))
  return lambda: jax.block_until_ready(fn(params, images))


def _time_in_turn(calls: Sequence[Any], repeats: int) -> list[float]:
  """Median seconds of each call, the calls alternating (A B A B ...), so
  that load from other processes on a shared machine falls on all alike."""
  times = [[] for _ in calls]
  for _ in range(repeats):
    for call, ts in zip(calls, times):
      t0 = time.perf_counter()
      call()
      ts.append(time.perf_counter() - t0)
  return [float(np.median(ts)) for ts in times]


def measure_latencies(models: Sequence[tuple[Any, Any]], images: jax.Array,
                      repeats: int = 10) -> list[float]:
  """Median seconds of one jitted inference call on `images` (after
  compilation) for each `(model, params)`, timed in turn on this machine."""
  return _time_in_turn([_compiled_forward(m, p, images) for m, p in models],
                       repeats)


def accuracy(model: Any, params: Any, pipeline: Any, split: str,
             input_key: str = "image") -> float:
  """Top-1 accuracy of `model` on one pass over `split` of `pipeline`."""
  predict = jax.jit(lambda p, x: jnp.argmax(
      model.apply({"params": p}, x, train=False)[0], -1))
  correct = total = 0.0
  for batch in pipeline.eval_batches(split):
    pred = eval_common.gather(predict(params, batch[input_key]))
    label = eval_common.gather(batch["label"])
    mask = eval_common.gather(batch["mask"]) > 0
    correct += float(np.sum((pred == label) & mask))
    total += float(mask.sum())
  return correct / max(total, 1.0)


def dropping_curve(run: Any, *, rankings: Sequence[str] = RANKINGS,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS,
                   split: str = "test", latency_batch: int = 256,
                   repeats: int = 10, seed: int = 0) -> list[dict[str, Any]]:
  """Accuracy and latency for each ranking and dropped fraction.

  Args:
    run: a `crl.trainers.runs.Run` of a trained NAC.
    rankings: names from `RANKINGS`.
    fractions: fractions of mediators to drop, each in [0, 1).
    split: the evaluation split of the run's dataset.
    latency_batch: images per timed inference call.
    repeats: timed calls per point (the median is kept).
    seed: seed of the random ranking and the timing images.

  Returns:
    One row per (ranking, fraction): ranking, fraction, kept modules,
    accuracy, latency (s per batch), images/s, speed-up (the full model's
    latency over this one's, both timed alternately in one window) and
    accuracy drop (points) against the full model.
  """
  model, params = run.model, run.params
  n = model.num_mediator_modules
  images = jax.random.uniform(jax.random.PRNGKey(seed),
                              (latency_batch, *run.task.input_shape))
  full_acc = accuracy(model, params, run.task.pipeline, split,
                      run.task.input_key)
  full_call = _compiled_forward(model, params, images)  # Compiled once.
  rows = []
  for by in rankings:
    order = rank_mediators(model, params, by, seed)
    for fraction in fractions:
      if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fractions must lie in [0, 1), got {fraction}.")
      kept = max(1, int(round(n * (1.0 - fraction))))
      if kept == n:
        acc = full_acc
        full_latency = lat = _time_in_turn([full_call], repeats)[0]
      else:
        small, small_params = drop_mediators(model, params, order[:kept])
        acc = accuracy(small, small_params, run.task.pipeline, split,
                       run.task.input_key)
        # The full model is timed again beside each smaller one: the
        # speed-up is a ratio measured in one window.
        full_latency, lat = _time_in_turn(
            [full_call, _compiled_forward(small, small_params, images)],
            repeats)
      rows.append({
          "ranking": by, "fraction_dropped": float(fraction),
          "modules_kept": kept, "accuracy": acc,
          "accuracy_drop_points": 100.0 * (full_acc - acc),
          "latency_s": lat, "images_per_s": latency_batch / lat,
          "speedup": full_latency / lat})
  return rows


def best_speedup(rows: Sequence[dict[str, Any]],
                 max_drop_points: float = 3.0) -> dict[str, Any] | None:
  """The row with the largest speed-up whose accuracy drop is below
  `max_drop_points`, over every ranking (None if there is none)."""
  ok = [r for r in rows if r["accuracy_drop_points"] < max_drop_points]
  return max(ok, key=lambda r: r["speedup"]) if ok else None


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> str:
  """Writes `rows` (dicts with the same keys) to the CSV file `path`;
  returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


def plot_curve(rows: Sequence[dict[str, Any]], path: str,
               max_drop_points: float = 3.0) -> str:
  """Accuracy against speed-up, one line per ranking; writes a PNG."""
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top

  fig = figure.Figure(figsize=(10, 4))
  backend_agg.FigureCanvasAgg(fig)
  ax_acc, ax_speed = fig.subplots(1, 2)
  for by in dict.fromkeys(r["ranking"] for r in rows):
    sub = sorted((r for r in rows if r["ranking"] == by),
                 key=lambda r: r["fraction_dropped"])
    frac = [r["fraction_dropped"] for r in sub]
    ax_acc.plot([r["speedup"] for r in sub],
                [100 * r["accuracy"] for r in sub], "o-", label=by)
    ax_speed.plot(frac, [r["speedup"] for r in sub], "o-", label=by)
  full = max(r["accuracy"] for r in rows if r["fraction_dropped"] == 0.0)
  ax_acc.axhline(100 * full - max_drop_points, color="gray", ls="--",
                 label=f"full - {max_drop_points:g} points")
  ax_acc.set(xlabel="measured speed-up (x)", ylabel="accuracy (%)",
             title="accuracy vs inference speed-up")
  ax_speed.set(xlabel="fraction of mediators dropped",
               ylabel="measured speed-up (x)", title="speed-up")
  ax_acc.legend()
  ax_speed.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path
