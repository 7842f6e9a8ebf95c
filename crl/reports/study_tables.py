"""README tables of the studies: equal-effort sweeps and the transfer study.

Renderers of `crl.reports.readme.TABLES` (`sweep_domain`, `sweep_shapes`,
`transfer`), each reading one committed run under `docs/results/<run>/`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from crl.reports.results_files import f3 as _f3
from crl.reports.results_files import load
from crl.reports.results_files import provenance
from crl.reports.results_files import table as _table


def _sweep(run: str, root: pathlib.Path, ood: str) -> str:
  """An equal-effort learning-rate sweep (`configs/sweep.py`,
  `docs/results/<run>/`): validation accuracy per rate, the seeds' accuracy
  at the chosen rate (mean ± 95% interval), and per contrast A-B the
  difference per split with its 95% Welch interval and what it says about
  NAC's claim (about +2.5 points over a matched Perceiver IO); `ood` names
  the splits other than 'test'."""
  r = load(run, root=root)
  grid = r["grid"]
  first = next(iter(r["candidates"].values()))["accuracy"]
  splits = list(first)
  val = [[name] + [_f3(a) for a in c["sweep"]["validation_accuracy"]]
         + [f"{c['sweep']['chosen_learning_rate']:g}"]
         for name, c in r["candidates"].items()]
  acc = [[name] + [f"{_f3(c['accuracy'][s]['mean'])} ± "
                   f"{_f3(c['accuracy'][s]['half_width'])}" for s in splits]
         for name, c in r["candidates"].items()]
  seeds = ", ".join(str(x) for x in r["seeds"])
  text = (provenance(run, root) + "\n\n"
          + _table(["validation accuracy (seed 0)"]
                   + [f"base lr {g:g}" for g in grid] + ["chosen"], val)
          + "\n\n"
          + _table([f"accuracy, seeds {seeds}, mean ± 95%"]
                   + [("ID test" if s == "test" else s) for s in splits],
                   acc))
  for pair, per_split in (r.get("differences") or {}).items():
    a, b = pair.split("-")
    label = {"test": "ID test", "ood_mean": f"mean of the {ood}"}
    cells = [f"{label.get(s, s)} "
             f"{_signed(d['difference'])} [{_signed(d['low'])}, "
             f"{_signed(d['high'])}]" for s, d in per_split.items()]
    text += (f"\n\n{a} − {b}, 95% Welch interval over the seeds: "
             + "; ".join(cells) + ". " + _verdict(per_split.get("ood_mean"),
                                                 ood))
  return text


def _signed(x: float) -> str:
  """+.025 / −.010: a signed accuracy difference, 3 decimals."""
  return ("+" if x >= 0 else "−") + _f3(abs(x))


def _verdict(d: dict[str, Any] | None, ood: str) -> str:
  """What the interval on the mean of the OOD splits says about a +.025
  advantage of NAC."""
  if d is None:
    return ""
  if d["low"] > 0:
    side = f"NAC is ahead on the {ood}"
  elif d["high"] < 0:
    side = f"NAC is behind on the {ood}"
  else:
    side = (f"the seeds resolve no difference on the {ood} (the interval "
            "holds 0)")
  inside = d["low"] <= .025 <= d["high"]
  return (f"Here {side}; a +.025 advantage (NAC's claim) is "
          f"{'inside' if inside else 'outside'} the interval.")


def sweep_domain(root: pathlib.Path) -> str:
  """NAC, Perceiver IO and ViT on multi_domain (train photo, test the other
  domains), from scratch and pretrained, at equal tuning effort."""
  return _sweep("sweep_domain", root, "other domains")


def sweep_shapes(root: pathlib.Path) -> str:
  """NAC against Perceiver IO on causal shapes at equal tuning effort."""
  return _sweep("sweep_shapes", root, "OOD splits")


TRANSFER_PROXIES = (("id_accuracy", "ID accuracy"), ("nll", "NLL"),
                    ("ece", "ECE"), ("brier", "Brier"),
                    ("adversarial_accuracy", "PGD accuracy"),
                    ("mean_corruption_accuracy", "mean corruption acc."))


def transfer(root: pathlib.Path) -> str:
  """The study's answers: the population (mean accuracy per architecture
  and pretraining), the Spearman correlation of each ID-measurable quantity
  with OOD accuracy per shift kind (bootstrap interval) and in how many
  pairs each is the best, and the effect of each choice on effective
  robustness (OLS on probit accuracy with probit ID accuracy, interval)."""
  r = load("transfer", root=root)
  kinds = r["proxies"]["by_kind"]
  npairs = {k: sum(1 for p in r["proxies"]["by_pair"]
                   if (p.split("->", 1)[1].split("/")[0] == "domain") ==
                   (k == "domain")) for k in kinds}

  def cell(v):
    return (f"{v['spearman']:+.2f} [{v['spearman_low']:+.2f}, "
            f"{v['spearman_high']:+.2f}]")
  rows = [[f"{k} ({npairs[k]} pairs)"] + [cell(kinds[k][q]) if q in kinds[k]
                                           else "-" for q, _ in
                                           TRANSFER_PROXIES] for k in kinds]
  best = r.get("best_proxies", {})
  rows += [[f"best in, of {b['pairs']} {k} pairs"] +
           [str(b["best_in"].get(q, "-")) for q, _ in TRANSFER_PROXIES]
           for k, b in best.items()]
  out = [provenance("transfer", root), _transfer_population(r), _table(
      ["Spearman with OOD accuracy"] +
      [label for _, label in TRANSFER_PROXIES], rows)]
  effects = _transfer_effects(r)
  if effects:
    out.append(effects)
  return "\n\n".join(out)


def _transfer_population(r: dict[str, Any]) -> str:
  """Members, mean ID and mean OOD accuracy per (architecture, pretrained)."""
  factors = r["study"]["factors"]
  acc = {}
  for row in r["rows"]:
    if (row["metric"] == "accuracy" and row["model"] in factors and
        row["shift"] != "mean_corruption"):
      acc.setdefault(row["model"], {}).setdefault(row["kind"], []).append(
          row["value"])
  cells = {}
  for name, f in factors.items():
    a = acc.get(name, {})
    if "id" in a:
      cells.setdefault((f["architecture"], f["pretrained"]), []).append(
          (a["id"][0], np.mean(a.get("domain", [np.nan])),
           np.mean(a.get("corruption", [np.nan]))))
  rows = []
  for (arch, pre), v in sorted(cells.items()):
    v = np.asarray(v)
    rows.append([arch, "pretrained" if pre == "true" else "scratch",
                 str(len(v)), f"{v[:, 0].mean():.3f}",
                 f"{v[:, 0].min():.2f}-{v[:, 0].max():.2f}",
                 f"{np.nanmean(v[:, 1]):.3f}", f"{np.nanmean(v[:, 2]):.3f}"])
  return _table(["architecture", "backbone", "members", "mean ID accuracy",
                 "ID range", "mean domain-OOD acc.",
                 "mean corruption acc."], rows)


def _transfer_effects(r: dict[str, Any]) -> str:
  """Effect of each factor level on effective robustness per shift kind
  (probit OOD accuracy beyond what probit ID accuracy predicts); `*` marks
  an interval that excludes 0."""
  kinds = sorted(r.get("factors", {}))
  fits = {k: r["factors"][k].get("effective_robustness", {}) for k in kinds}
  terms = sorted({t for f in fits.values() for t in f
                  if not t.startswith("_") and t != "intercept"})
  if not terms:
    return ""

  def cell(v):
    if not v or "coef" not in v:
      return "-"
    star = "*" if v["low"] > 0 or v["high"] < 0 else ""
    return f"{v['coef']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]{star}"
  head = [f"{k} (n={int(fits[k]['_fit']['n'])}, R² {fits[k]['_fit']['r2']:.2f})"
          if "_fit" in fits[k] else k for k in kinds]
  return _table(["effect on probit OOD accuracy, controlling for probit ID "
                 "accuracy"] + head,
                [[t] + [cell(fits[k].get(t)) for k in kinds] for t in terms])
