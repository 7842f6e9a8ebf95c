"""The OOD suite's report: evaluation of a population, statistics, files, table.

The evaluation itself is `crl.evaluators.suite_loop.evaluate_models`
(re-exported here). `population_statistics` asks the cross-model questions of
specs/ood.md with `crl.evaluators.population`; `write` produces

* `results.csv`: one row per number, columns model, shift, kind, metric,
  value (per-model metrics, then effective robustness, CE and mCE);
* `results.json`: the same rows, each with its `protocol` (bins, severity,
  examples, score, fit, baseline, ...), the population statistics, the
  suite's settings, the members, the skipped shifts and the reliability data;
* `plots/`: ID-vs-OOD scatter with a fitted line per shift
  (`id_vs_ood_<group>.png`), reliability diagrams (`reliability/<model>.png`)
  and accuracy against corruption severity
  (`accuracy_vs_severity_<family>.png`), from `crl.reports.plots`;

and prints a short table. Non-finite statistics (a correlation over models
of constant accuracy) are written as null in JSON and nan in CSV.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Mapping

import jax
import numpy as np

from crl import config_lib
from crl import workdir as workdir_lib
from crl.reports import plots
from crl.evaluators import population
from crl.evaluators import suite_loop
from crl.shifts import corruptions

CSV_COLUMNS = ("model", "shift", "kind", "metric", "value")
SCATTER_PER_FIGURE = 8


# The suite's loop lives with the suite (crl.evaluators.suite_loop).
evaluate_models = suite_loop.evaluate_models


# Statistics ------------------------------------------------------------------


def _finite(x: Any) -> Any:
  """NaN/inf -> None, recursively; NumPy scalars -> Python."""
  if isinstance(x, Mapping):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def corruption_grids(evaluator: Any, results: Mapping[str, Any]
                     ) -> dict[str, dict[str, Any]]:
  """Per family: the severities common to all its corruptions and
  `{model: {corruption: [accuracy per severity]}}`."""
  found: dict[str, dict[str, dict[int, str]]] = {}
  kinds = {}
  for name in evaluator.names[1:]:
    s = evaluator.shift(name)
    if s.family and s.kind != "semantic":
      found.setdefault(s.family, {}).setdefault(s.corruption, {})[
          s.severity] = name
      kinds[s.family] = s.kind
  grids = {}
  for family, corr in found.items():
    common = sorted(set.intersection(*(set(v) for v in corr.values())))
    if not common:
      continue
    grids[family] = {
        "severities": common, "corruptions": sorted(corr),
        "kind": kinds[family],
        "accuracy": {m: {c: [results[m][corr[c][sev]]["accuracy"]
                             for sev in common] for c in sorted(corr)}
                     for m in results}}
  return grids


def population_statistics(evaluator: Any, evaluation: Mapping[str, Any],
                          baseline: str | None) -> dict[str, Any]:
  """Correlations, fits, effective robustness, mCE and agreement."""
  results, predictions = evaluation["results"], evaluation["predictions"]
  models = list(results)
  id_name = evaluator.id_split
  grids = corruption_grids(evaluator, results)
  out: dict[str, Any] = {"models": models}
  clean = {m: results[m][id_name]["accuracy"] for m in models}
  out["corruption_kinds"] = {f: g["kind"] for f, g in grids.items()}
  out["mean_corruption_accuracy"] = {
      f: {m: population.mean_corruption_accuracy(g["accuracy"][m])
          for m in models} for f, g in grids.items()}
  if len(models) < 2:
    out["note"] = (f"{len(models)} model: correlations, effective robustness, "
                   "CE/mCE and agreement need a population of at least 2.")
    return out
  baseline = baseline or models[0]
  out.update(baseline=baseline, probit_eps=population.PROBIT_EPS,
             fit="least squares of probit(OOD accuracy) on probit(ID "
                 "accuracy) over the population")
  id_acc = np.array([clean[m] for m in models])
  id_ece = np.array([results[m][id_name]["ece"] for m in models])
  per_shift = {}
  for name in evaluator.names[1:]:
    entry: dict[str, Any] = {"kind": evaluator.kinds[name]}
    agree = population.pairwise_agreement(
        {m: predictions[m][name] for m in models})
    entry["agreement"] = agree
    entry["mean_agreement"] = float(np.mean(
        [agree[a][b] for i, a in enumerate(models) for b in models[i + 1:]]))
    if evaluator.kinds[name] != "semantic":
      ood_acc = np.array([results[m][name]["accuracy"] for m in models])
      ood_ece = np.array([results[m][name]["ece"] for m in models])
      entry["accuracy_correlation"] = population.accuracy_correlation(
          id_acc, ood_acc)
      entry["ece_correlation"] = population.ece_correlation(id_ece, ood_ece)
      try:
        fit = population.linear_fit(id_acc, ood_acc)
      except ValueError as e:
        entry["fit"] = None
        entry["note"] = str(e)
      else:
        entry["fit"] = {"slope": fit.slope, "intercept": fit.intercept}
        entry["effective_robustness"] = dict(zip(
            models, population.effective_robustness(id_acc, ood_acc,
                                                    fit).tolist()))
    per_shift[name] = entry
  out["id_agreement"] = population.pairwise_agreement(
      {m: predictions[m][id_name] for m in models})
  out["shifts"] = per_shift
  out["corruption_errors"] = {
      f: {"severities": g["severities"], "corruptions": g["corruptions"],
          "models": population.population_corruption_errors(
              g["accuracy"], baseline, clean_accuracy=clean)}
      for f, g in grids.items()}
  return out


def population_rows(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Effective robustness, CE, mCE and mean corruption accuracy as rows."""
  rows = []
  fit_protocol = {"population": stats.get("models"),
                  "fit": stats.get("fit"), "probit_eps": stats.get(
                      "probit_eps")}
  for name, entry in stats.get("shifts", {}).items():
    for model, value in (entry.get("effective_robustness") or {}).items():
      rows.append({"model": model, "shift": name, "kind": entry["kind"],
                   "metric": "effective_robustness", "value": value,
                   "protocol": {**fit_protocol, **entry["fit"],
                                "definition": "OOD accuracy minus the "
                                              "population line's prediction"}})
  for family, mean_acc in stats.get("mean_corruption_accuracy", {}).items():
    errors = stats.get("corruption_errors", {}).get(family)
    kind = stats["corruption_kinds"][family]
    for model, value in mean_acc.items():
      rows.append({"model": model, "shift": family, "kind": kind,
                   "metric": "mean_accuracy", "value": value,
                   "protocol": {"definition": "mean accuracy over corruption "
                                              "types x severities"}})
      if errors is None:
        continue
      ce = errors["models"][model]
      base = {"baseline": stats["baseline"],
              "severities": errors["severities"],
              "corruptions": errors["corruptions"],
              "definition": "CE_c = sum_s E_sc / sum_s E^base_sc; relative "
                            "CE subtracts the clean (ID) errors"}
      for metric in ("mce", "relative_mce"):
        rows.append({"model": model, "shift": family, "kind": kind,
                     "metric": metric, "value": ce[metric], "protocol": base})
      for metric in ("ce", "relative_ce"):
        for c, value in ce[metric].items():
          rows.append({"model": model, "shift": f"{family}/{c}", "kind": kind,
                       "metric": metric, "value": value, "protocol": base})
  return rows


# Files -----------------------------------------------------------------------


def _scatter_plots(evaluator, results, out_dir) -> list[str]:
  models = list(results)
  id_name = evaluator.id_split
  id_acc = [results[m][id_name]["accuracy"] for m in models]
  groups: dict[str, dict[str, list[float]]] = {}
  singles = {"interventional": [], "natural": []}
  by_severity: dict[str, dict[int, list[str]]] = {}
  for name in evaluator.names[1:]:
    s = evaluator.shift(name)
    if s.kind == "semantic":
      continue
    if s.family:
      by_severity.setdefault(s.family, {}).setdefault(s.severity, []).append(
          name)
    else:
      singles.setdefault(s.kind, []).append(name)  # e.g. 'domain'
  for kind, names in singles.items():
    for k in range(0, len(names), SCATTER_PER_FIGURE):
      chunk = names[k:k + SCATTER_PER_FIGURE]
      suffix = f"_{k // SCATTER_PER_FIGURE + 1}" if len(names) > len(chunk) \
          else ""
      groups[f"{kind}{suffix}"] = {
          n: [results[m][n]["accuracy"] for m in models] for n in chunk}
  for family, sev in by_severity.items():
    groups[family] = {
        f"severity {s} (mean of {len(names)})": [
            float(np.mean([results[m][n]["accuracy"] for n in names]))
            for m in models] for s, names in sorted(sev.items())}
  paths = []
  for group, series in groups.items():
    paths.append(plots.id_ood_scatter(
        {s: id_acc for s in series}, series,
        os.path.join(out_dir, f"id_vs_ood_{group}.png"),
        title=f"{group}: {len(models)} models"))
  return paths


def _severity_plots(evaluator, results, out_dir) -> list[str]:
  paths = []
  id_name = evaluator.id_split
  for family, grid in corruption_grids(evaluator, results).items():
    curves = {m: population.accuracy_by_severity(acc)
              for m, acc in grid["accuracy"].items()}
    clean = {m: results[m][id_name]["accuracy"] for m in curves}
    paths.append(plots.accuracy_vs_severity(
        curves, os.path.join(out_dir, f"accuracy_vs_severity_{family}.png"),
        severities=grid["severities"], clean_accuracy=clean,
        title=f"{family}: mean over {len(grid['corruptions'])} types"))
    if len(curves) == 1:  # one model: a curve per group of corruption types
      (model, acc), = grid["accuracy"].items()
      groups: dict[str, dict[str, list[float]]] = {}
      for c, values in acc.items():
        groups.setdefault(corruptions.KINDS.get(c, "other"), {})[c] = values
      paths.append(plots.accuracy_vs_severity(
          {f"{k} ({len(g)})": population.accuracy_by_severity(g)
           for k, g in groups.items()},
          os.path.join(out_dir, f"accuracy_vs_severity_{family}_by_kind.png"),
          severities=grid["severities"], title=f"{model}: {family}"))
  return paths


def _reliability_plots(evaluator, reliability, wanted, out_dir) -> list[str]:
  paths = []
  for model, data in reliability.items():
    names = [n for n in wanted if n in data] or [
        n for n in evaluator.names[1:] if n in data][:3]
    panels = {n: data[n] for n in [evaluator.id_split] + names}
    paths.append(plots.reliability_diagram(
        panels, os.path.join(out_dir, "reliability", f"{model}.png"),
        title=model))
  return paths


def write(workdir: str, config: Any, evaluator: Any,
          evaluation: Mapping[str, Any],
          members: Mapping[str, Any]) -> dict[str, Any]:
  """Writes results.csv, results.json and plots/; prints the table."""
  results = evaluation["results"]
  stats = population_statistics(evaluator, evaluation,
                                config.get("baseline") or None)
  rows = [{"model": m, **r} for m in results
          for r in evaluator.rows(results[m])]
  rows += population_rows(stats)
  out = {
      "mode": "checkpoint" if config.get("checkpoint") else "population",
      "suite": {
          "id_split": evaluator.id_split, "shifts": evaluator.names,
          "kinds": evaluator.kinds, "descriptions": evaluator.descriptions,
          "skipped": evaluator.skipped, "ece_bins": evaluator.ece_bins,
          "scores": list(evaluator.scores),
          "severities": list(evaluator.severities),
          "corruption_seed": evaluator.corruption_seed,
          "selection": config_lib.to_plain(config.shifts),
          "seconds_per_shift": evaluation["seconds"]},
      "members": members, "rows": rows, "population": stats,
      "reliability": evaluation["reliability"]}
  out = _finite(out)
  if jax.process_index() != 0:
    return out
  plot_dir = os.path.join(workdir, "plots")
  paths = []
  if config.get("plots", True):
    if len(results) >= 2:
      paths += _scatter_plots(evaluator, results, plot_dir)
    paths += _reliability_plots(evaluator, evaluation["reliability"],
                                tuple(config.get("reliability_shifts", ())),
                                plot_dir)
    paths += _severity_plots(evaluator, results, plot_dir)
  out["plots"] = [os.path.relpath(p, workdir) for p in paths]
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
      writer.writerow([r["model"], r["shift"], r["kind"], r["metric"],
                       "nan" if r["value"] is None or not math.isfinite(
                           r["value"]) else repr(float(r["value"]))])
  workdir_lib.write_json_atomic(os.path.join(workdir, "results.json"), out,
                                indent=1)
  print(format_table(evaluator, results, stats, members), flush=True)
  print(f"\nWrote {len(rows)} numbers to {workdir}/results.csv and "
        f"results.json, {len(paths)} plots to {plot_dir}/.", flush=True)
  return out


# Table -----------------------------------------------------------------------


def _mean(values) -> float:
  values = [v for v in values if v is not None and math.isfinite(v)]
  return float(np.mean(values)) if values else float("nan")


def format_table(evaluator: Any, results: Mapping[str, Any],
                 stats: Mapping[str, Any], members: Mapping[str, Any]) -> str:
  """One line per model: ID, mean per kind, mCE, detection, ER."""
  id_name = evaluator.id_split
  by_kind: dict[str, list[str]] = {}
  for name in evaluator.names[1:]:
    by_kind.setdefault(evaluator.kinds[name], []).append(name)
  errors = stats.get("corruption_errors", {}).get("corruption", {})
  columns = ["ID acc", "ID ECE"] + [f"{k[:6]} acc" for k in by_kind
                                    if k != "semantic"]
  if errors:
    columns.append("mCE")
  if "semantic" in by_kind:
    columns.append("AUROC msp")
  if stats.get("shifts"):
    columns.append("eff.rob.")
  width = max([len("model")] + [len(m) for m in results]) + 2
  lines = [f"\nOOD suite: {len(results)} model(s), {len(evaluator.names) - 1}"
           f" shifts (+ ID split {id_name!r}); means over each kind's shifts",
           "model".ljust(width) + "".join(c.rjust(12) for c in columns)]
  lines.append("-" * len(lines[-1]))
  for m, res in results.items():
    cells = [res[id_name]["accuracy"], res[id_name]["ece"]]
    cells += [_mean(res[n]["accuracy"] for n in names)
              for k, names in by_kind.items() if k != "semantic"]
    if errors:
      cells.append(errors["models"][m]["mce"])
    if "semantic" in by_kind:
      cells.append(_mean(res[n]["auroc_msp"] for n in by_kind["semantic"]
                         if "auroc_msp" in res[n]))
    if stats.get("shifts"):
      cells.append(_mean(e.get("effective_robustness", {}).get(m)
                         for e in stats["shifts"].values()))
    lines.append(m.ljust(width) + "".join(
        ("-" if c is None or not math.isfinite(c) else f"{c:.4f}").rjust(12)
        for c in cells))
  for kind, names in by_kind.items():
    entries = [stats.get("shifts", {}).get(n, {}) for n in names]
    r = _mean(e.get("accuracy_correlation", {}).get("pearson_probit")
              for e in entries)
    if math.isfinite(r):
      tau = _mean(e.get("accuracy_correlation", {}).get("kendall")
                  for e in entries)
      lines.append(f"ID vs OOD accuracy over {kind} shifts: mean Pearson r "
                   f"(probit) {r:.3f}, mean Kendall tau {tau:.3f}")
  if "note" in stats:
    lines.append(stats["note"])
  if evaluator.skipped:
    lines.append(f"{len(evaluator.skipped)} selected shift(s) skipped (they "
                 "do not apply to this run; see results.json suite.skipped).")
  reused = [m for m, i in members.items() if i.get("reused")]
  if reused and len(reused) == len(members):
    lines.append("Every model came from an existing checkpoint.")
  return "\n".join(lines)
