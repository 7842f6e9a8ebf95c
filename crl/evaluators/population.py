"""Statistics across a population of models (the suite's cross-model questions).

Inputs are per-model numbers (one entry per model, in the same order in every
argument) or per-model predictions; outputs are Python floats, dicts of
floats, or `np.ndarray`s `[models]` where there is one value per model.

Accuracies are fractions in `[0, 1]` (not percent); passing values outside
raises `ValueError`.

**Probit scale.** `probit(a) = Phi^-1(clip(a, eps, 1 - eps))` with the
standard normal quantile `Phi^-1` (`scipy.stats.norm.ppf`). Clipping keeps
accuracies of exactly 0 or 1 (easy toy shifts, tiny test sets) finite; the
default `eps = 1e-4` maps them to `-+3.72`. Kendall's tau is rank-based, so the
probit version differs from the raw one only where clipping creates ties.

**Correlations.** Pearson's r and Kendall's tau-b (ties corrected; scipy's
default). Both need at least 2 models (`ValueError` otherwise) and are `nan`
(without a warning) when either input is constant.

**Effective robustness** (Taori et al. 2020; Wenzel et al. 2022):
`ER_i = ood_i - Phi(slope * probit(id_i) + intercept)`, where the line is the
least-squares fit of `probit(ood)` on `probit(id)` over the population (or a
given reference fit). Models on the line have ER = 0.

**Corruption errors** (Hendrycks & Dietterich 2019): with errors
`E = 1 - accuracy` per corruption c and severity s,
`CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}`, `mCE = mean_c CE_c`, and with
clean errors `relative CE_c = sum_s (E_{s,c} - E_clean) /
sum_s (E^base_{s,c} - E^base_clean)`. Values are ratios (1.0 = the baseline;
the paper prints them times 100). A CE whose denominator is 0 (a baseline
without errors on that corruption) or, for relative CE, not positive is
`nan`, and then so is the mean: documented, not raised, because easy
procedural shifts can be solved exactly.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence
import warnings

import numpy as np
from scipy import stats

PROBIT_EPS = 1e-4


def _vector(x, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 1:
    raise ValueError(f"{name} must be 1-D [models]; got shape {x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} must be finite; got {x}.")
  return x


def _pair(x, y, names: tuple[str, str], min_models: int = 2):
  x, y = _vector(x, names[0]), _vector(y, names[1])
  if x.shape != y.shape:
    raise ValueError(f"{names[0]} has {x.size} models but {names[1]} "
                     f"{y.size}; expected one value per model in both.")
  if x.size < min_models:
    raise ValueError(f"Need at least {min_models} models; got {x.size}.")
  return x, y


def _accuracies(x, name: str) -> np.ndarray:
  x = _vector(x, name)
  if np.any((x < 0) | (x > 1)):
    raise ValueError(f"{name} must be accuracies in [0, 1] (fractions, not "
                     f"percent); got range [{x.min()}, {x.max()}].")
  return x


def probit(accuracy, eps: float = PROBIT_EPS) -> np.ndarray:
  """`norm.ppf(clip(accuracy, eps, 1 - eps))`, elementwise."""
  if not 0 < eps < 0.5:
    raise ValueError(f"eps must be in (0, 0.5); got {eps}.")
  a = np.asarray(accuracy, dtype=np.float64)
  if np.any((a < 0) | (a > 1)):
    raise ValueError("probit needs accuracies in [0, 1] (fractions, not "
                     "percent).")
  return stats.norm.ppf(np.clip(a, eps, 1 - eps))


def inverse_probit(z) -> np.ndarray:
  """`norm.cdf(z)`, elementwise (the inverse of `probit` inside the clip)."""
  return stats.norm.cdf(np.asarray(z, dtype=np.float64))


def pearson(x, y) -> float:
  """Pearson's r of two `[models]` vectors (`nan` if one is constant)."""
  x, y = _pair(x, y, ("x", "y"))
  dx, dy = x - x.mean(), y - y.mean()
  denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
  if denom == 0:
    return float("nan")
  return float(np.clip(np.sum(dx * dy) / denom, -1.0, 1.0))


def kendall(x, y) -> float:
  """Kendall's tau-b of two `[models]` vectors (`nan` if one is constant)."""
  x, y = _pair(x, y, ("x", "y"))
  if np.all(x == x[0]) or np.all(y == y[0]):
    return float("nan")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return float(stats.kendalltau(x, y, variant="b").statistic)


def accuracy_correlation(id_accuracy, ood_accuracy,
                         eps: float = PROBIT_EPS) -> dict[str, float]:
  """Correlation of ID and OOD accuracy over models.

  Args:
    id_accuracy: `[models]` in-distribution accuracies in [0, 1].
    ood_accuracy: `[models]` OOD accuracies of the same models.
    eps: probit clipping.

  Returns:
    `pearson`, `kendall` (raw accuracies), `pearson_probit`,
    `kendall_probit` (probit-scaled).
  """
  x, y = _pair(_accuracies(id_accuracy, "id_accuracy"),
               _accuracies(ood_accuracy, "ood_accuracy"),
               ("id_accuracy", "ood_accuracy"))
  px, py = probit(x, eps), probit(y, eps)
  return {"pearson": pearson(x, y), "kendall": kendall(x, y),
          "pearson_probit": pearson(px, py), "kendall_probit": kendall(px, py)}


def ece_correlation(id_ece, ood_ece) -> dict[str, float]:
  """`pearson` and `kendall` correlation of ID and OOD ECE over models."""
  x, y = _pair(id_ece, ood_ece, ("id_ece", "ood_ece"))
  return {"pearson": pearson(x, y), "kendall": kendall(x, y)}


class LinearFit(NamedTuple):
  """`ood ~ slope * id + intercept`, in probit space when `probit_scale`."""
  slope: float
  intercept: float
  probit_scale: bool = True
  eps: float = PROBIT_EPS

  def predict(self, id_accuracy) -> np.ndarray:
    """Predicted OOD accuracy (in [0, 1]) `[models]` for ID accuracies."""
    x = np.asarray(id_accuracy, dtype=np.float64)
    if self.probit_scale:
      return inverse_probit(self.slope * probit(x, self.eps) + self.intercept)
    return self.slope * x + self.intercept


def linear_fit(id_accuracy, ood_accuracy, *, probit_scale: bool = True,
               eps: float = PROBIT_EPS) -> LinearFit:
  """Least-squares line of OOD on ID accuracy over models.

  Args:
    id_accuracy: `[models]` in [0, 1].
    ood_accuracy: `[models]` in [0, 1].
    probit_scale: fit `probit(ood)` on `probit(id)` (the default and the
      spec's choice) instead of raw accuracies.
    eps: probit clipping.

  Raises:
    ValueError: fewer than 2 models or all ID accuracies equal (after
      clipping), where a line is undefined.
  """
  x, y = _pair(_accuracies(id_accuracy, "id_accuracy"),
               _accuracies(ood_accuracy, "ood_accuracy"),
               ("id_accuracy", "ood_accuracy"))
  if probit_scale:
    x, y = probit(x, eps), probit(y, eps)
  dx = x - x.mean()
  sxx = np.sum(dx * dx)
  if sxx == 0:
    raise ValueError("All models have the same ID accuracy: the ID-vs-OOD "
                     "line is undefined.")
  slope = float(np.sum(dx * (y - y.mean())) / sxx)
  return LinearFit(slope, float(y.mean() - slope * x.mean()),
                   bool(probit_scale), float(eps))


def effective_robustness(id_accuracy, ood_accuracy, fit: LinearFit | None = None,
                         *, eps: float = PROBIT_EPS) -> np.ndarray:
  """OOD accuracy minus the population line's prediction, `[models]`.

  Args:
    id_accuracy: `[models]` in [0, 1].
    ood_accuracy: `[models]` in [0, 1].
    fit: the reference line; default: `linear_fit` (probit) over these models.
    eps: probit clipping for the default fit.
  """
  x, y = _pair(_accuracies(id_accuracy, "id_accuracy"),
               _accuracies(ood_accuracy, "ood_accuracy"),
               ("id_accuracy", "ood_accuracy"), min_models=1)
  if fit is None:
    fit = linear_fit(x, y, eps=eps)
  return y - fit.predict(x)


# Corruptions ---------------------------------------------------------------


def _grid(accuracy: Mapping[str, Sequence[float]], name: str
          ) -> dict[str, np.ndarray]:
  """`{corruption: accuracies [severities]}`, checked rectangular."""
  if not accuracy:
    raise ValueError(f"{name} has no corruptions.")
  out = {c: _accuracies(v, f"{name}[{c!r}]") for c, v in accuracy.items()}
  lengths = {c: len(v) for c, v in out.items()}
  if len(set(lengths.values())) != 1 or 0 in lengths.values():
    raise ValueError(f"{name} must have the same (non-zero) number of "
                     f"severities for every corruption; got {lengths}.")
  return out


def mean_corruption_accuracy(accuracy: Mapping[str, Sequence[float]]) -> float:
  """Mean accuracy over corruption types x severities.

  Args:
    accuracy: `{corruption: [accuracy at severity 1, ..., 5]}`, the same
      number of severities for every corruption.
  """
  grid = _grid(accuracy, "accuracy")
  return float(np.mean(np.stack(list(grid.values()))))


def accuracy_by_severity(accuracy: Mapping[str, Sequence[float]]
                         ) -> list[float]:
  """Mean accuracy over corruption types, one value per severity."""
  grid = _grid(accuracy, "accuracy")
  return np.mean(np.stack(list(grid.values())), axis=0).tolist()


def _ratio(num: float, den: float, strict_positive: bool) -> float:
  if den == 0 or (strict_positive and den < 0):
    return float("nan")
  return float(num / den)


def corruption_errors(accuracy: Mapping[str, Sequence[float]],
                      baseline_accuracy: Mapping[str, Sequence[float]], *,
                      clean_accuracy: float | None = None,
                      baseline_clean_accuracy: float | None = None) -> dict:
  """CE per corruption and mCE of one model relative to a baseline model.

  Args:
    accuracy: `{corruption: [accuracy per severity]}` of the model.
    baseline_accuracy: the same for the baseline (same corruptions and
      number of severities).
    clean_accuracy: the model's uncorrupted accuracy; with
      `baseline_clean_accuracy`, also gives relative CE / mCE.
    baseline_clean_accuracy: the baseline's uncorrupted accuracy.

  Returns:
    `{"ce": {corruption: float}, "mce": float}`, plus `"relative_ce"` and
    `"relative_mce"` when both clean accuracies are given.
  """
  model = _grid(accuracy, "accuracy")
  base = _grid(baseline_accuracy, "baseline_accuracy")
  if set(model) != set(base):
    raise ValueError(f"Model and baseline must cover the same corruptions; "
                     f"only the model has {sorted(set(model) - set(base))}, "
                     f"only the baseline {sorted(set(base) - set(model))}.")
  if len(next(iter(model.values()))) != len(next(iter(base.values()))):
    raise ValueError("Model and baseline must have the same number of "
                     "severities.")
  ce = {c: _ratio(np.sum(1 - model[c]), np.sum(1 - base[c]), False)
        for c in model}
  out = {"ce": ce, "mce": float(np.mean(list(ce.values())))}
  if (clean_accuracy is None) != (baseline_clean_accuracy is None):
    raise ValueError("Relative CE needs both clean_accuracy and "
                     "baseline_clean_accuracy (or neither).")
  if clean_accuracy is not None:
    e0 = 1 - float(_accuracies([clean_accuracy], "clean_accuracy")[0])
    b0 = 1 - float(_accuracies([baseline_clean_accuracy],
                               "baseline_clean_accuracy")[0])
    rel = {c: _ratio(np.sum((1 - model[c]) - e0), np.sum((1 - base[c]) - b0),
                     True) for c in model}
    out["relative_ce"] = rel
    out["relative_mce"] = float(np.mean(list(rel.values())))
  return out


def population_corruption_errors(
    accuracy: Mapping[str, Mapping[str, Sequence[float]]], baseline: str, *,
    clean_accuracy: Mapping[str, float] | None = None) -> dict[str, dict]:
  """`corruption_errors` of every model relative to the named baseline.

  Args:
    accuracy: `{model: {corruption: [accuracy per severity]}}`.
    baseline: the name of the baseline model in `accuracy`.
    clean_accuracy: optional `{model: clean accuracy}` for relative CE.

  Returns:
    `{model: corruption_errors(...)}` (the baseline's own CEs are 1).
  """
  if baseline not in accuracy:
    raise ValueError(f"Unknown baseline model {baseline!r}; the population "
                     f"has: {', '.join(accuracy)}.")
  if clean_accuracy is not None:
    missing = [m for m in accuracy if m not in clean_accuracy]
    if missing:
      raise ValueError(f"clean_accuracy lacks models {missing}.")
  out = {}
  for model, acc in accuracy.items():
    kwargs = {}
    if clean_accuracy is not None:
      kwargs = dict(clean_accuracy=clean_accuracy[model],
                    baseline_clean_accuracy=clean_accuracy[baseline])
    out[model] = corruption_errors(acc, accuracy[baseline], **kwargs)
  return out


# Agreement -----------------------------------------------------------------


def predictions(x) -> np.ndarray:
  """Predicted labels `[examples]`: argmax of logits `[examples, classes]`
  (ties to the lower class) or integer labels `[examples]` as they are."""
  x = np.asarray(x)
  if x.ndim == 2:
    return np.argmax(x, axis=-1)
  if x.ndim == 1:
    return x
  raise ValueError(f"Expected logits [examples, classes] or predicted labels "
                   f"[examples]; got shape {x.shape}.")


def agreement(a, b, mask=None) -> float:
  """Fraction of examples on which two models predict the same label.

  Args:
    a: logits `[examples, classes]` or predicted labels `[examples]`.
    b: the same for the other model, on the same examples.
    mask: optional `[examples]`, 1 = real example.
  """
  pa, pb = predictions(a), predictions(b)
  if pa.shape != pb.shape:
    raise ValueError(f"The two models have {pa.size} and {pb.size} "
                     "predictions; expected the same examples.")
  m = np.ones(pa.shape, bool) if mask is None else np.asarray(mask, bool)
  if m.shape != pa.shape:
    raise ValueError(f"mask has shape {m.shape}; expected {pa.shape}.")
  if not m.any():
    raise ValueError("No (unmasked) examples: agreement is undefined.")
  return float(np.mean(pa[m] == pb[m]))


def pairwise_agreement(outputs: Mapping[str, np.ndarray], mask=None
                       ) -> dict[str, dict[str, float]]:
  """`{a: {b: agreement(a, b)}}` for every pair (diagonal 1), symmetric."""
  names = list(outputs)
  preds = {n: predictions(outputs[n]) for n in names}
  out: dict[str, dict[str, float]] = {n: {} for n in names}
  for i, a in enumerate(names):
    for b in names[i:]:
      out[a][b] = out[b][a] = agreement(preds[a], preds[b], mask)
  return out
