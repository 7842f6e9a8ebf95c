"""The OOD suite's figures, written as PNG files.

Every function draws on its own `matplotlib.figure.Figure` rendered by the
Agg canvas (no `pyplot`, no global backend switch, no display needed), writes
one PNG to `path` (creating missing parent folders) and returns the path as a
string. Inputs are checked before drawing: mismatched lengths or keys raise
`ValueError` naming what is wrong.

- `id_ood_scatter`: one point per model, OOD vs ID accuracy, a colour and a
  least-squares line per shift, on probit axes (ticks labelled in accuracy),
  with the `y = x` diagonal.
- `reliability_diagram`: accuracy per confidence bin against the diagonal,
  one panel per distribution, from `crl.evaluators.metrics.reliability`
  (panel titles wrap to the panel, one legend below the panels).

Legends sit outside the axes, so they never cover data.
- `accuracy_vs_severity`: one curve per model (or corruption), accuracy over
  severities, optionally starting from the clean accuracy at severity 0.
"""

from __future__ import annotations

import os
import textwrap
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from crl.evaluators import population

_PROBIT_TICKS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                 0.9, 0.95, 0.99, 0.999)


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> str:
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  FigureCanvasAgg(fig)
  # "tight": legends placed outside the axes are part of the picture.
  fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
  return path


def _legend_outside(ax) -> None:
  """The legend to the right of the axes, where it covers no data."""
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0, frameon=False)


def _as_mapping(x, default_name: str) -> dict:
  if isinstance(x, Mapping):
    return dict(x)
  return {default_name: x}


def _unit_interval(values: np.ndarray, what: str) -> np.ndarray:
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 1 or not np.all(np.isfinite(values)):
    raise ValueError(f"{what} must be a finite 1-D sequence; got {values}.")
  if np.any((values < 0) | (values > 1)):
    raise ValueError(f"{what} must be accuracies in [0, 1]; got {values}.")
  return values


def id_ood_scatter(id_accuracy: Mapping[str, Sequence[float]] | Sequence[float],
                   ood_accuracy: Mapping[str, Sequence[float]] | Sequence[float],
                   path: str | os.PathLike, *, probit_scale: bool = True,
                   eps: float = population.PROBIT_EPS,
                   title: str | None = None, dpi: int = 100) -> str:
  """OOD vs ID accuracy per model with a fitted line per shift.

  Args:
    id_accuracy: `{shift: [models]}` ID accuracies (each shift may have its
      own ID set and model population), or one sequence for a single shift.
    ood_accuracy: `{shift: [models]}` OOD accuracies, same keys and lengths.
    path: the PNG to write.
    probit_scale: probit axes and a probit-space fit (`population.linear_fit`);
      False: plain axes and a linear fit.
    eps: probit clipping (`population.probit`).
    title: figure title.
    dpi: resolution.

  Returns:
    `path` as a string.
  """
  ids = _as_mapping(id_accuracy, "ood")
  oods = _as_mapping(ood_accuracy, "ood")
  if set(ids) != set(oods):
    raise ValueError(f"id_accuracy and ood_accuracy must name the same "
                     f"shifts; got {sorted(ids)} and {sorted(oods)}.")
  if not ids:
    raise ValueError("No shifts to plot.")
  data = {}
  for shift in ids:
    x = _unit_interval(ids[shift], f"id_accuracy[{shift!r}]")
    y = _unit_interval(oods[shift], f"ood_accuracy[{shift!r}]")
    if x.shape != y.shape or not x.size:
      raise ValueError(f"Shift {shift!r} has {x.size} ID and {y.size} OOD "
                       "accuracies; expected one of each per model (>= 1).")
    data[shift] = (x, y)

  scale = ((lambda a: population.probit(a, eps)) if probit_scale
           else (lambda a: np.asarray(a, dtype=np.float64)))
  fig = Figure(figsize=(6.5, 4.5))
  ax = fig.add_subplot(1, 1, 1)
  all_scaled = []
  for i, (shift, (x, y)) in enumerate(data.items()):
    color = f"C{i % 10}"
    sx, sy = scale(x), scale(y)
    all_scaled += [sx, sy]
    label = shift
    if x.size >= 2 and np.ptp(sx) > 0:
      fit = population.linear_fit(x, y, probit_scale=probit_scale, eps=eps)
      line_x = np.linspace(sx.min(), sx.max(), 2)
      ax.plot(line_x, fit.slope * line_x + fit.intercept, color=color, lw=1.5)
      label = f"{shift} (slope {fit.slope:.2f})"
    ax.scatter(sx, sy, s=14, color=color, alpha=0.8, label=label)
  values = np.concatenate(all_scaled)
  pad = 0.05 * max(np.ptp(values), 0.1 if not probit_scale else 0.5)
  lo, hi = values.min() - pad, values.max() + pad
  ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=1, label="y = x")
  ax.set_xlim(lo, hi)
  ax.set_ylim(lo, hi)
  if probit_scale:
    ticks, positions = [], []
    for t in _PROBIT_TICKS:  # at least 1/12 of the axis apart: no overlaps
      p = float(population.probit(t, eps))
      if lo <= p <= hi and (not positions or p - positions[-1] >= (hi - lo) / 12):
        ticks.append(t)
        positions.append(p)
    labels = [f"{100 * t:g}" for t in ticks]
    ax.set_xticks(positions, labels)
    ax.set_yticks(positions, labels)
    ax.set_xlabel("ID accuracy (%, probit scale)")
    ax.set_ylabel("OOD accuracy (%, probit scale)")
  else:
    ax.set_xlabel("ID accuracy")
    ax.set_ylabel("OOD accuracy")
  ax.grid(alpha=0.3)
  _legend_outside(ax)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return _save(fig, path, dpi)


_RELIABILITY_KEYS = ("count", "confidence", "accuracy", "edges")


def _check_reliability(name: str, r: Mapping[str, np.ndarray]) -> dict:
  missing = [k for k in _RELIABILITY_KEYS if k not in r]
  if missing:
    raise ValueError(f"Reliability data {name!r} lacks {missing}; expected "
                     "the dict of crl.evaluators.metrics.reliability.")
  out = {k: np.asarray(r[k], dtype=np.float64).reshape(-1)
         for k in _RELIABILITY_KEYS}
  bins = out["edges"].size - 1
  lengths = {k: out[k].size for k in ("count", "confidence", "accuracy")}
  if bins < 1 or any(n != bins for n in lengths.values()):
    raise ValueError(f"Reliability data {name!r}: count, confidence and "
                     f"accuracy must have len(edges) - 1 = {bins} entries; "
                     f"got {lengths}.")
  if np.any(np.diff(out["edges"]) <= 0):
    raise ValueError(f"Reliability data {name!r}: edges must increase.")
  if out["count"].sum() <= 0:
    raise ValueError(f"Reliability data {name!r} has no examples.")
  return out


def reliability_diagram(data: Mapping[str, Mapping[str, np.ndarray]] |
                        Mapping[str, np.ndarray],
                        path: str | os.PathLike, *, title: str | None = None,
                        dpi: int = 100) -> str:
  """Reliability diagram(s): per-bin accuracy vs confidence, with the ECE.

  Args:
    data: the dict returned by `crl.evaluators.metrics.reliability`
      (`count`, `confidence`, `accuracy` `[bins]`, `edges` `[bins + 1]`), or
      `{name: such dict}` for one panel per distribution (e.g. ID and OOD).
    path: the PNG to write.
    title: figure title.
    dpi: resolution.

  Returns:
    `path` as a string.
  """
  if "edges" in data:
    panels = {"": data}
  else:
    panels = dict(data)
  if not panels:
    raise ValueError("No reliability data to plot.")
  panels = {n: _check_reliability(n, r) for n, r in panels.items()}
  fig = Figure(figsize=(3.2 * len(panels), 3.4))
  for i, (name, r) in enumerate(panels.items()):
    ax = fig.add_subplot(1, len(panels), i + 1)
    edges, count = r["edges"], r["count"]
    width = np.diff(edges)
    filled = count > 0
    ece = float(np.sum(count / count.sum() *
                       np.abs(r["accuracy"] - r["confidence"])))
    ax.bar(edges[:-1][filled], r["accuracy"][filled], width=width[filled],
           align="edge", color="C0", edgecolor="k", lw=0.5, label="accuracy")
    ax.bar(edges[:-1][filled], (r["confidence"] - r["accuracy"])[filled],
           bottom=r["accuracy"][filled], width=width[filled], align="edge",
           color="C3", alpha=0.3, edgecolor="C3", lw=0.5, label="gap")
    ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1,
            label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    if i == 0:
      ax.set_ylabel("accuracy")
    # Long split names wrap to the panel's width; the numbers on their line.
    head = textwrap.fill(name, 32) + "\n" if name else ""
    ax.set_title(f"{head}ECE {100 * ece:.2f}% ({len(count)} bins)",
                 fontsize=9)
  # One legend for every panel, below them (inside, it covered bars).
  fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="lower center",
             ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0))
  if title:
    fig.suptitle(textwrap.fill(title, 20 * len(panels)))
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  return _save(fig, path, dpi)


def accuracy_vs_severity(curves: Mapping[str, Sequence[float]],
                         path: str | os.PathLike, *,
                         severities: Sequence[float] | None = None,
                         clean_accuracy: Mapping[str, float] | None = None,
                         title: str | None = None,
                         ylabel: str = "accuracy", dpi: int = 100) -> str:
  """Accuracy against corruption severity, one line per curve.

  Args:
    curves: `{name: [accuracy per severity]}` (e.g. per model, averaged over
      corruptions with `population.accuracy_by_severity`, or per corruption
      for one model).
    path: the PNG to write.
    severities: the x values; default `1..len(curve)`. Every curve must have
      one value per severity.
    clean_accuracy: optional `{name: clean accuracy}`, drawn at severity 0.
    title: figure title.
    ylabel: y-axis label.
    dpi: resolution.

  Returns:
    `path` as a string.
  """
  if not curves:
    raise ValueError("No curves to plot.")
  lengths = {n: len(v) for n, v in curves.items()}
  if severities is None:
    if len(set(lengths.values())) != 1:
      raise ValueError(f"Curves have different numbers of severities "
                       f"{lengths}; pass severities or equal lengths.")
    severities = np.arange(1, next(iter(lengths.values())) + 1)
  severities = np.asarray(severities, dtype=np.float64)
  bad = {n: k for n, k in lengths.items() if k != severities.size}
  if bad:
    raise ValueError(f"Curves {bad} do not have one value per severity "
                     f"({severities.size}: {severities.tolist()}).")
  if clean_accuracy is not None:
    unknown = sorted(set(clean_accuracy) - set(curves))
    if unknown:
      raise ValueError(f"clean_accuracy names unknown curves {unknown}.")
  fig = Figure(figsize=(5.0, 3.6))
  ax = fig.add_subplot(1, 1, 1)
  for i, (name, values) in enumerate(curves.items()):
    y = _unit_interval(values, f"curves[{name!r}]")
    x = severities
    if clean_accuracy is not None and name in clean_accuracy:
      x = np.r_[0.0, x]
      y = np.r_[_unit_interval([clean_accuracy[name]],
                               f"clean_accuracy[{name!r}]"), y]
    ax.plot(x, y, marker="o", ms=3, color=f"C{i % 10}", label=name)
  ax.set_xticks(np.unique(np.r_[severities, 0.0] if clean_accuracy
                          else severities))
  ax.set_xlabel("severity (0 = clean)" if clean_accuracy else "severity")
  ax.set_ylabel(ylabel)
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  _legend_outside(ax)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return _save(fig, path, dpi)
