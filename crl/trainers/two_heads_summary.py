"""The two-heads study's summary: per-lambda means with t-intervals over
seeds, the probe's rank correlations, and the two heads (and the group
thresholds) against the penalty sweep at the same |DDP|
(`crl.trainers.two_heads` writes it into results.json and prints
`format_summary`)."""

from __future__ import annotations

from typing import Any

import numpy as np

def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
  """The mean of each key present in every row."""
  keys = [k for k in rows[0] if all(k in r for r in rows)]
  return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def _envelope_at(points: list[dict[str, float]], ddp: float) -> float | None:
  """The best accuracy reachable at |DDP| = `ddp` on a frontier: the upper
  envelope (accuracy non-decreasing in |DDP|) interpolated linearly; None
  outside the frontier's |DDP| range."""
  pts = sorted((p["abs_ddp"], p["accuracy"]) for p in points)
  x = np.array([p[0] for p in pts])
  y = np.maximum.accumulate(np.array([p[1] for p in pts]))
  if ddp < x[0] - 1e-12:
    return None
  return float(np.interp(ddp, x, y))


def interval(values: list[float], level: float = 0.95) -> dict[str, Any]:
  """Mean and Student-t confidence interval of the mean over seeds
  (`half_width` 0 for a single value)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  v = np.asarray(values, np.float64)
  half = 0.
  if len(v) > 1:
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) *
                 np.std(v, ddof=1) / np.sqrt(len(v)))
  return {"mean": float(v.mean()), "half_width": half,
          "low": float(v.mean()) - half, "high": float(v.mean()) + half,
          "level": level, "n": int(len(v))}


def _stats(values: list[float]) -> dict[str, Any] | None:
  """Mean, min, max and count of differences (None if there are none)."""
  if not values:
    return None
  return {"mean": float(np.mean(values)), "min": float(np.min(values)),
          "max": float(np.max(values)), "count": len(values),
          "non_negative_fraction": float(np.mean(np.array(values) >= -1e-12))}


def _spearman(a, b) -> float:
  """Spearman's rank correlation; 0 when either side is constant."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return 0.
  return float(stats.spearmanr(a, b)[0])


def summarize(sweep, heads, thresholds, lambdas) -> dict[str, Any]:
  """Per-lambda means over seeds and the two comparisons to quote."""
  per_lambda = []
  for lam in lambdas:
    runs = [r for r in sweep if r["lambda"] == lam]
    per_lambda.append({
        "lambda": lam, **mean_rows([r["test"] for r in runs]),
        "probe_accuracy": float(np.mean([r["probe_accuracy"] for r in runs])),
        "probe_accuracy_std": float(np.std([r["probe_accuracy"]
                                            for r in runs])),
        "probe_accuracy_interval": interval(
            [r["probe_accuracy"] for r in runs]),
        "probe_train_interval": interval(
            [r["probe_train"]["accuracy"] for r in runs]),
        "probe_validation_interval": interval(
            [r["probe_validation"]["accuracy"] for r in runs]),
        "abs_ddp_interval": interval([r["test"]["abs_ddp"] for r in runs]),
        "effective_rank_interval": interval(
            [r["features_test"]["effective_rank"] for r in runs]),
        "total_variance_interval": interval(
            [r["features_test"]["total_variance"] for r in runs]),
        "num_seeds": len(runs)})
  lam = [r["lambda"] for r in sweep]
  probe = [r["probe_accuracy"] for r in sweep]
  ddp = [r["test"]["abs_ddp"] for r in sweep]
  rho_lambda = _spearman(lam, probe)
  rho_train = _spearman(lam, [r["probe_train"]["accuracy"] for r in sweep])
  rho_ddp = _spearman(ddp, probe)
  means = [p["probe_accuracy"] for p in per_lambda]
  # The two heads (and the group thresholds) against the penalty sweep, per
  # penalised run, on the same seed, at the penalised model's test |DDP|.
  comparisons = []
  for run in sweep:
    if run["lambda"] == 0:
      continue
    frontier = [p["test"] for h in heads if h["seed"] == run["seed"]
                for p in h["frontier"]]
    if not frontier:
      continue
    gap, acc = run["test"]["abs_ddp"], run["test"]["accuracy"]
    below = [p["accuracy"] for p in frontier if p["abs_ddp"] <= gap + 1e-12]
    cuts = [p["test"] for p in thresholds if p["seed"] == run["seed"]]
    comparisons.append({
        "lambda": run["lambda"], "seed": run["seed"],
        "penalty_accuracy": acc, "penalty_abs_ddp": gap,
        "two_heads_accuracy_at_no_larger_ddp": max(below) if below else None,
        "two_heads_accuracy_interpolated": _envelope_at(frontier, gap),
        "group_thresholds_accuracy_interpolated": (
            _envelope_at(cuts, gap) if cuts else None)})
  at_most = [c["two_heads_accuracy_at_no_larger_ddp"] - c["penalty_accuracy"]
             for c in comparisons
             if c["two_heads_accuracy_at_no_larger_ddp"] is not None]
  interp, cut = ([c[f"{k}_accuracy_interpolated"] - c["penalty_accuracy"]
                  for c in comparisons
                  if c[f"{k}_accuracy_interpolated"] is not None]
                 for k in ("two_heads", "group_thresholds"))
  unconstrained = [r for r in sweep if r["lambda"] == 0]
  loose = [max(h["frontier"], key=lambda p: p["eps"])["test"]["accuracy"]
           for h in heads if h["frontier"]]
  return {
      "per_lambda": per_lambda,
      "probe_spearman_lambda": float(np.nan_to_num(rho_lambda)),
      "probe_spearman_abs_ddp": float(np.nan_to_num(rho_ddp)),
      "probe_train_spearman_lambda": float(np.nan_to_num(rho_train)),
      "probe_rises_with_lambda": bool(np.nan_to_num(rho_lambda) > 0 and
                                      means[-1] > means[0]),
      "probe_accuracy_lowest_lambda": means[0],
      "probe_accuracy_highest_lambda": means[-1],
      "probe_accuracy_max_over_lambdas": float(max(means)),
      "probe_peak_lambda": float(lambdas[int(np.argmax(means))]),
      "two_heads_probe_accuracy": float(np.mean(
          [h["probe_accuracy"] for h in heads])) if heads else None,
      "two_heads_vs_penalty": comparisons,
      # Accuracy of the two heads minus that of the penalised model, at the
      # penalised model's test |DDP|: the best merged point with no larger
      # |DDP|, and the frontier's upper envelope interpolated there.
      "two_heads_minus_penalty_at_no_larger_ddp": _stats(at_most),
      "two_heads_minus_penalty_interpolated": _stats(interp),
      "group_thresholds_minus_penalty_interpolated": _stats(cut),
      "unconstrained_test_accuracy": float(np.mean(
          [r["test"]["accuracy"] for r in unconstrained]))
                                     if unconstrained else None,
      "two_heads_loosest_eps_test_accuracy": float(np.mean(loose))
                                             if loose else None,
      "group_thresholds_points": len(thresholds),
  }


def mean_frontier(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Points of several seeds averaged per eps (only eps every seed has)."""
  by_eps: dict[float, list[dict[str, Any]]] = {}
  for p in points:
    by_eps.setdefault(p["eps"], []).append(p)
  seeds = {p["seed"] for p in points}
  return [{"eps": eps, "test": mean_rows([p["test"] for p in ps])}
          for eps, ps in sorted(by_eps.items()) if len(ps) == len(seeds)]


def format_summary(summary: dict[str, Any]) -> str:
  """The numbers to quote, as text."""
  lines = ["", "Two-heads study (test split; means over seeds):",
           f"{'lambda':>8} {'accuracy':>9} {'|DDP|':>7} {'probe acc':>10} "
           f"{'probe train split':>17} {'probe val split':>15} "
           f"{'eff. rank':>9}",
           f"{'':>36} (C swept on held-out data; +- 95% over seeds)"]
  for row in summary["per_lambda"]:
    t, v = row["probe_train_interval"], row["probe_validation_interval"]
    lines.append(f"{row['lambda']:>8g} {row['accuracy']:>9.4f} "
                 f"{row['abs_ddp']:>7.4f} {row['probe_accuracy']:>10.4f} "
                 f"{t['mean']:>8.4f} +- {t['half_width']:.4f} "
                 f"{v['mean']:>6.4f} +- {v['half_width']:.4f} "
                 f"{row['effective_rank_interval']['mean']:>9.2f}")
  lines.append(f"probe accuracy vs lambda: Spearman "
               f"{summary['probe_spearman_lambda']:+.3f} (rises: "
               f"{summary['probe_rises_with_lambda']}); two-heads trunk probe "
               f"{summary['two_heads_probe_accuracy']}")
  for key, method, what in (
      ("two_heads_minus_penalty_interpolated", "two heads",
       "on the merged frontier at the same |DDP|"),
      ("two_heads_minus_penalty_at_no_larger_ddp", "two heads",
       "of the best merged point with no larger |DDP|"),
      ("group_thresholds_minus_penalty_interpolated", "group thresholds",
       "at the same |DDP|")):
    d = summary[key]
    if d is not None:
      lines.append(
          f"{method} minus penalty, accuracy {what}: mean {d['mean']:+.4f} "
          f"(min {d['min']:+.4f}, max {d['max']:+.4f}; {method} >= penalty "
          f"in {d['non_negative_fraction']:.0%} of {d['count']} runs)")
  return "\n".join(lines) + "\n"
