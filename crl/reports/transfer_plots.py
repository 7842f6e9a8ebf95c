"""The transfer study's figures (PNG, Agg canvas, as `crl.reports.plots`).

- `proxy_heatmap`: one cell per (ID quantity, shift kind), the chosen
  correlation of `transfer_analysis.proxy_analysis`'s `by_kind`.
- `factor_effects`: each factor level's OLS coefficient with its interval,
  one panel per fit (`ood`, `effective_robustness`), reference levels in the
  title.
- ID-vs-OOD scatter coloured by one factor: `plots.id_ood_scatter` with one
  series (and fitted line) per level, see `write_all`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure
import numpy as np

from crl.reports import plots


def proxy_heatmap(by_kind: Mapping[str, Mapping[str, Mapping[str, float]]],
                  path: str | os.PathLike, *, statistic: str = "spearman",
                  dpi: int = 100) -> str:
  """`by_kind[kind][quantity][statistic]` as a quantities x kinds grid."""
  kinds = sorted(by_kind)
  if not kinds:
    raise ValueError("proxy_heatmap needs at least one shift kind.")
  quantities = list(by_kind[kinds[0]])
  grid = np.array([[by_kind[k][q].get(statistic, np.nan) if q in by_kind[k]
                    else np.nan for k in kinds] for q in quantities],
                  dtype=np.float64)
  fig = Figure(figsize=(1.6 + 1.3 * len(kinds), 0.9 + 0.5 * len(quantities)))
  ax = fig.add_subplot()
  im = ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
  ax.set_xticks(range(len(kinds)), kinds)
  ax.set_yticks(range(len(quantities)), quantities)
  for i in range(len(quantities)):
    for j in range(len(kinds)):
      ax.text(j, i, "nan" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}",
              ha="center", va="center", fontsize=8)
  fig.colorbar(im, ax=ax, label=statistic)
  ax.set_title(f"{statistic} of ID quantity with OOD accuracy")
  return plots._save(fig, path, dpi)  # pylint: disable=protected-access


def factor_effects(effects: Mapping[str, Any], path: str | os.PathLike, *,
                   dpi: int = 100) -> str:
  """Coefficients with intervals of `transfer_analysis.factor_effects`."""
  fits = [f for f in ("ood", "effective_robustness")
          if f in effects and "error" not in effects[f]]
  if not fits:
    raise ValueError("factor_effects needs the 'ood' or "
                     "'effective_robustness' fit (without an error).")
  fig = Figure(figsize=(5 * len(fits), 3.5))
  for i, fit in enumerate(fits):
    ax = fig.add_subplot(1, len(fits), i + 1)
    names = [n for n in effects[fit] if n not in ("_fit", "intercept")]
    coef = np.array([effects[fit][n]["coef"] for n in names])
    low = np.array([effects[fit][n]["low"] for n in names])
    high = np.array([effects[fit][n]["high"] for n in names])
    y = np.arange(len(names))
    ax.errorbar(coef, y, xerr=[coef - low, high - coef], fmt="o", capsize=3)
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(y, names)
    ax.set_xlabel("effect on probit OOD accuracy")
    ax.set_title(fit.replace("_", " "))
  refs = ", ".join(f"{k}={v}" for k, v in effects.get("references",
                                                      {}).items())
  fig.suptitle(f"reference: {refs}" if refs else "factor effects",
               fontsize=9)
  fig.tight_layout()
  return plots._save(fig, path, dpi)  # pylint: disable=protected-access


def write_all(out_dir: str, analysis: Mapping[str, Any],
              id_accuracy: Sequence[float],
              ood_by_kind: Mapping[str, Sequence[float]],
              factors: Mapping[str, Sequence[str]]) -> list[str]:
  """Heatmap, factor effects per kind and scatters per (kind, factor)."""
  paths = [proxy_heatmap(analysis["proxies"]["by_kind"],
                         os.path.join(out_dir, "proxies_by_kind.png"))]
  for kind, effects in analysis["factors"].items():
    if any("error" not in effects.get(f, {"error": ""})
           for f in ("ood", "effective_robustness")):
      paths.append(factor_effects(
          effects, os.path.join(out_dir, f"factors_{kind}.png")))
  ids = np.asarray(id_accuracy, dtype=np.float64)
  for kind, ood in ood_by_kind.items():
    ood = np.asarray(ood, dtype=np.float64)
    for factor, levels in factors.items():
      levels = np.asarray(levels)
      if len(set(levels)) < 2:
        continue
      paths.append(plots.id_ood_scatter(
          {str(l): ids[levels == l] for l in sorted(set(levels))},
          {str(l): ood[levels == l] for l in sorted(set(levels))},
          os.path.join(out_dir, f"id_vs_ood_{kind}_by_{factor}.png"),
          title=f"{kind}: coloured by {factor}"))
  return paths
