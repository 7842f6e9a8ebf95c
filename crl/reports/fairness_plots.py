"""The two plots of the two-heads study (matplotlib, Agg backend).

* `probe_vs_ddp.png`: probe accuracy for the protected attribute (linear
  probe on the penultimate features) against the model's test |DDP|, one
  point per penalised run, coloured and labelled by lambda; the two-headed
  model's trunk and the majority rate for reference.
* `frontier.png`: test accuracy against test |DDP| for every method: the
  penalty sweep (one point per run), the two-headed model merged for each
  eps, group-specific thresholds on the unconstrained model, and the
  unconstrained model.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def _lambda_colours(lambdas):
  cmap = plt.get_cmap("viridis")
  ordered = sorted(set(lambdas))
  n = max(len(ordered) - 1, 1)
  return {lam: cmap(i / n) for i, lam in enumerate(ordered)}


def plot_probe_vs_ddp(study: dict[str, Any], path: str) -> str:
  """Probe accuracy against |DDP| per lambda; returns `path`."""
  sweep = study["penalty_sweep"]
  colours = _lambda_colours([r["lambda"] for r in sweep])
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  seen = set()
  for r in sweep:
    lam = r["lambda"]
    ax.scatter(r["test"]["abs_ddp"], r["probe_accuracy"], color=colours[lam],
               s=40, label=None if lam in seen else f"lambda {lam:g}",
               edgecolor="k", linewidth=0.5, zorder=3)
    seen.add(lam)
  for row in study["summary"]["per_lambda"]:
    ax.annotate(f"{row['lambda']:g}", (row["abs_ddp"], row["probe_accuracy"]),
                textcoords="offset points", xytext=(5, 4), fontsize=8)
  heads = [h for h in study.get("two_heads", [])]
  for i, h in enumerate(heads):
    ddp = h["unmerged_test"]["abs_ddp"]
    ax.scatter(ddp, h["probe_accuracy"], marker="*", s=140, color="tab:red",
               edgecolor="k", linewidth=0.5, zorder=4,
               label="two heads (trunk)" if i == 0 else None)
  majority = sweep[0]["probe_majority"] if sweep else None
  if majority is not None:
    ax.axhline(majority, color="grey", linestyle=":", linewidth=1,
               label="majority group rate")
  ax.set_xlabel("|DDP| of the model (test)")
  ax.set_ylabel("probe accuracy for the protected attribute (test)")
  ax.set_title("Parity penalty: does the network learn the group?")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_frontier(study: dict[str, Any], path: str) -> str:
  """Accuracy against |DDP| for every method; returns `path`."""
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  sweep = study["penalty_sweep"]
  penalised = [r for r in sweep if r["lambda"] > 0]
  ax.scatter([r["test"]["abs_ddp"] for r in penalised],
             [r["test"]["accuracy"] for r in penalised], marker="o", s=36,
             color="tab:blue", edgecolor="k", linewidth=0.5, zorder=3,
             label="parity penalty (lambda > 0)")
  for i, h in enumerate(study.get("two_heads", [])):
    pts = sorted(h["frontier"], key=lambda p: p["eps"])
    ax.plot([p["test"]["abs_ddp"] for p in pts],
            [p["test"]["accuracy"] for p in pts], marker="s", markersize=4,
            color="tab:red", alpha=0.8, zorder=2,
            label="two heads, merged per eps" if i == 0 else None)
  by_seed: dict[int, list[dict[str, Any]]] = {}
  for p in study.get("group_thresholds", []):
    by_seed.setdefault(p["seed"], []).append(p)
  for i, pts in enumerate(by_seed.values()):
    pts = sorted(pts, key=lambda p: p["eps"])
    ax.plot([p["test"]["abs_ddp"] for p in pts],
            [p["test"]["accuracy"] for p in pts], marker="^", markersize=4,
            color="tab:green", alpha=0.8, linestyle="--", zorder=2,
            label="group thresholds" if i == 0 else None)
  free = [r for r in sweep if r["lambda"] == 0]
  ax.scatter([r["test"]["abs_ddp"] for r in free],
             [r["test"]["accuracy"] for r in free], marker="D", s=60,
             color="black", zorder=4, label="unconstrained")
  ax.set_xlabel("|DDP| (test)")
  ax.set_ylabel("accuracy (test)")
  ax.set_title("Accuracy-parity trade-off")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_plots(study: dict[str, Any], workdir: str) -> dict[str, str]:
  """Both plots into `workdir`; `{name: path}`."""
  return {
      "probe_vs_ddp": plot_probe_vs_ddp(
          study, os.path.join(workdir, "probe_vs_ddp.png")),
      "frontier": plot_frontier(study, os.path.join(workdir, "frontier.png")),
  }
