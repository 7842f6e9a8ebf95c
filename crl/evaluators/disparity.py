"""Group-disparity metrics of binary predictions (Fairlearn 0.15's definitions).

NumPy, float64; `y` the true label in {0, 1}, `yhat` the predicted label, `s`
the protected attribute with any number of values (a group counts only if it
has examples). Each metric compares one rate across groups:

| metric | rate per group g |
|---|---|
| demographic parity | selection rate `P(yhat = 1 | s = g)` |
| equal opportunity | TPR `P(yhat = 1 | y = 1, s = g)` |
| equalized odds | TPR and FPR `P(yhat = 1 | y = 0, s = g)` |

A group without positives (negatives) has TPR (FPR) 0, as in Fairlearn
(scikit-learn's normalised confusion matrix); so does the overall rate.

`method` (Fairlearn's `MetricFrame.difference` / `.ratio`):

* `'between_groups'` (default): difference `max_g r_g - min_g r_g`; ratio
  `min_g r_g / max_g r_g` (NaN when every rate is 0).
* `'to_overall'`: against the rate `r` of all examples together: difference
  `max_g |r_g - r|`; ratio `min_g min(r_g / r, r / r_g)` (a group with
  `r_g = r = 0` is skipped; NaN if all are).

Equalized odds aggregates its TPR and FPR numbers with `agg`:
`'worst_case'` (the larger difference, the smaller ratio; with a NaN ratio,
Python's `min([tpr_ratio, fpr_ratio])` as Fairlearn: NaN iff the TPR ratio
is NaN) or `'mean'` (their mean, NaN ignored).

All are checked against Fairlearn in tests/evaluators/test_fairness.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EO_AGGREGATIONS = ("worst_case", "mean")
METHODS = ("between_groups", "to_overall")
CONVENTIONS = {
    "dp": "selection rate P(yhat=1|s=g) per group (Fairlearn 0.15)",
    "eop": "TPR P(yhat=1|y=1,s=g) per group; 0 without positives "
           "(Fairlearn 0.15 equal_opportunity_*)",
    "eo": "TPR and FPR per group; 0 without positives/negatives "
          "(Fairlearn 0.15 equalized_odds_*)",
    "between_groups": "difference max_g - min_g; ratio min_g / max_g",
    "to_overall": "difference max_g |r_g - r_all|; ratio min_g "
                  "min(r_g/r_all, r_all/r_g)",
    "worst_case": "larger difference / smaller ratio of TPR and FPR",
    "mean": "mean of the TPR and FPR numbers",
}


def as_1d(x: Any, name: str) -> np.ndarray:
  """`x` as a 1-D array; `ValueError` naming `name` otherwise."""
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array, got shape {x.shape}.")
  return x


def binary(x: Any, name: str) -> np.ndarray:
  """`x` as a 1-D int64 array of 0/1 values; `ValueError` naming `name`
  otherwise."""
  x = as_1d(x, name)
  values = np.unique(x)
  if not np.all(np.isin(values, (0, 1))):
    raise ValueError(f"{name} must hold 0/1 values, got {values[:5]}.")
  return x.astype(np.int64)


def check_lengths(**arrays: np.ndarray) -> None:
  """`ValueError` unless the named arrays are non-empty and of one
  length."""
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"Arrays must have the same length, got {lengths}.")
  if not next(iter(lengths.values())):
    raise ValueError("Fairness metrics need at least one example.")


def group_values(groups: Any) -> np.ndarray:
  """The distinct attribute values present, sorted."""
  return np.unique(as_1d(groups, "groups"))


def group_rates(y_pred: np.ndarray, groups: np.ndarray,
                where: np.ndarray | None = None) -> dict[Any, float]:
  """`{g: mean(y_pred[groups == g & where])}` (0 for an empty cell)."""
  rates = {}
  for g in group_values(groups):
    sel = groups == g
    if where is not None:
      sel = sel & where
    rates[g.item()] = float(y_pred[sel].mean()) if sel.any() else 0.0
  return rates


def _rate(y_pred: np.ndarray, where: np.ndarray | None = None) -> float:
  sel = y_pred if where is None else y_pred[where]
  return float(sel.mean()) if len(sel) else 0.0


def _check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def _check_agg(agg: str) -> None:
  if agg not in EO_AGGREGATIONS:
    raise ValueError(f"agg must be one of {EO_AGGREGATIONS}, got {agg!r}.")


def difference(rates: dict[Any, float], overall: float, method: str) -> float:
  """Fairlearn's `MetricFrame.difference` of one rate (see the module doc)."""
  _check_method(method)
  r = np.asarray(list(rates.values()), np.float64)
  if method == "between_groups":
    return float(r.max() - r.min())
  return float(np.max(np.abs(r - overall)))


def ratio(rates: dict[Any, float], overall: float, method: str) -> float:
  """Fairlearn's `MetricFrame.ratio` of one rate (see the module doc)."""
  _check_method(method)
  r = np.asarray(list(rates.values()), np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    if method == "between_groups":
      return float(r.min() / r.max()) if r.max() > 0 else float("nan")
    q = r / overall
    q = np.where(q > 1, 1 / q, q)
  return float(np.nanmin(q)) if not np.isnan(q).all() else float("nan")


def selection_rates(y_pred: Any, groups: Any) -> dict[Any, float]:
  """`{g: P(y_pred = 1 | s = g)}` for every group present."""
  y_pred, groups = binary(y_pred, "y_pred"), as_1d(groups, "groups")
  check_lengths(y_pred=y_pred, groups=groups)
  return group_rates(y_pred, groups)


def true_and_false_positive_rates(
    y_true: Any, y_pred: Any, groups: Any
) -> tuple[dict[Any, float], dict[Any, float]]:
  """`({g: TPR_g}, {g: FPR_g})`; an empty cell gives 0 (as Fairlearn)."""
  y_true, y_pred = binary(y_true, "y_true"), binary(y_pred, "y_pred")
  groups = as_1d(groups, "groups")
  check_lengths(y_true=y_true, y_pred=y_pred, groups=groups)
  return (group_rates(y_pred, groups, y_true == 1),
          group_rates(y_pred, groups, y_true == 0))


def _tpr_fpr(y_true, y_pred, groups):
  """`((TPR by group, overall TPR), (FPR by group, overall FPR))`."""
  tpr, fpr = true_and_false_positive_rates(y_true, y_pred, groups)
  y_true, y_pred = binary(y_true, "y_true"), binary(y_pred, "y_pred")
  return ((tpr, _rate(y_pred, y_true == 1)),
          (fpr, _rate(y_pred, y_true == 0)))


def demographic_parity_difference(y_pred: Any, groups: Any,
                                  method: str = "between_groups") -> float:
  """Difference of selection rates (Fairlearn's, `method` as there)."""
  return difference(selection_rates(y_pred, groups),
                    _rate(binary(y_pred, "y_pred")), method)


def demographic_parity_ratio(y_pred: Any, groups: Any,
                             method: str = "between_groups") -> float:
  """Ratio of selection rates (Fairlearn's; NaN if all rates are 0)."""
  return ratio(selection_rates(y_pred, groups),
               _rate(binary(y_pred, "y_pred")), method)


def equal_opportunity_difference(y_true: Any, y_pred: Any, groups: Any,
                                 method: str = "between_groups") -> float:
  """Difference of true-positive rates (Fairlearn's)."""
  tpr, _ = _tpr_fpr(y_true, y_pred, groups)
  return difference(*tpr, method)


def equal_opportunity_ratio(y_true: Any, y_pred: Any, groups: Any,
                            method: str = "between_groups") -> float:
  """Ratio of true-positive rates (Fairlearn's)."""
  tpr, _ = _tpr_fpr(y_true, y_pred, groups)
  return ratio(*tpr, method)


def equalized_odds_difference(y_true: Any, y_pred: Any, groups: Any,
                              agg: str = "worst_case",
                              method: str = "between_groups") -> float:
  """The TPR and FPR differences, their max (`agg='worst_case'`) or mean."""
  _check_agg(agg)
  values = [difference(*r, method) for r in _tpr_fpr(y_true, y_pred, groups)]
  return float(max(values) if agg == "worst_case" else np.mean(values))


def equalized_odds_ratio(y_true: Any, y_pred: Any, groups: Any,
                         agg: str = "worst_case",
                         method: str = "between_groups") -> float:
  """The TPR and FPR ratios, their min (`agg='worst_case'`) or mean."""
  _check_agg(agg)
  values = [ratio(*r, method) for r in _tpr_fpr(y_true, y_pred, groups)]
  if agg == "worst_case":
    return float(min(values))  # Python's min, as Fairlearn (NaN first wins).
  kept = [v for v in values if not np.isnan(v)]
  return float(np.mean(kept)) if kept else float("nan")
