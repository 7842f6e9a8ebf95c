"""The transfer study's analyses: proxies of OOD accuracy and factor effects.

Inputs are per-member numbers `[members]` (one entry per fine-tuned member, in
the same order everywhere); outputs are plain dicts of Python floats / lists,
ready for `results.json`. Accuracies are fractions in `[0, 1]`.

**Proxies** (`proxy_correlations`, `proxy_analysis`). For each ID-measurable
quantity q (ID accuracy, NLL, ECE, Brier, mean corruption accuracy,
adversarial accuracy, ...) and an OOD accuracy y over the population:
Pearson's r of `(probit(q), probit(y))` when q is an accuracy (named in
`accuracy_quantities`) and of `(q, probit(y))` otherwise, Kendall's tau-b and
Spearman's rho (rank-based, so the probit does not change them). Each comes
with a percentile bootstrap interval: `n_boot` resamples of the members with
replacement from `np.random.default_rng(seed)`; resamples where the
statistic is undefined (a constant input) are dropped and the count of valid
ones is reported as `n_valid`. `proxy_analysis` does this for every (ID, OOD)
pair and for every shift kind, where a kind's OOD accuracy is the member's
mean accuracy over that kind's pairs.

**Factors** (`factor_effects`). Ordinary least squares with one-hot factors,
the first level of each factor (in sorted order, unless `reference` names
one) being the reference, dropped from the design:
- `ood`: `probit(ood) ~ 1 + one-hots` (effect of each choice on OOD accuracy);
- `effective_robustness`: `probit(ood) ~ 1 + probit(id) + one-hots` (effect
  controlling for ID accuracy, i.e. on effective robustness in probit units).
Intervals are classical OLS t-intervals
`coef +- t_{1-a/2, n-p} * sqrt(s^2 diag((X'X)^-1))`, `s^2 = RSS / (n - p)`.
A design with `n <= p` or rank-deficient columns (a level that never occurs
apart from another) makes `ols` raise `ValueError` naming the problem;
`factor_effects` then gives that fit as `{"error": message}`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from crl.evaluators import population as pop

DEFAULT_ACCURACY_QUANTITIES = ("id_accuracy", "mean_corruption_accuracy",
                               "adversarial_accuracy")


def spearman(x, y) -> float:
  """Spearman's rho of two `[members]` vectors (`nan` if one is constant)."""
  x, y = pop._pair(x, y, ("x", "y"))  # pylint: disable=protected-access
  return pop.pearson(stats.rankdata(x), stats.rankdata(y))


STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson": pop.pearson, "kendall": pop.kendall, "spearman": spearman}


def bootstrap_ci(statistic: Callable[[np.ndarray, np.ndarray], float], x, y,
                 *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float, int]:
  """Percentile bootstrap interval of `statistic(x, y)`, members resampled.

  Returns:
    `(low, high, n_valid)`; `(nan, nan, 0)` when no resample is defined.
  """
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1); got {level}.")
  if n_boot < 1:
    raise ValueError(f"n_boot must be >= 1; got {n_boot}.")
  x, y = pop._pair(x, y, ("x", "y"))  # pylint: disable=protected-access
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, x.size, size=(n_boot, x.size))
  values = np.array([statistic(x[i], y[i]) for i in idx])
  values = values[np.isfinite(values)]
  if values.size == 0:
    return float("nan"), float("nan"), 0
  a = (1 - level) / 2
  low, high = np.quantile(values, [a, 1 - a])
  return float(low), float(high), int(values.size)


def proxy_correlations(quantities: Mapping[str, Sequence[float]],
                       ood_accuracy: Sequence[float], *,
                       accuracy_quantities: Sequence[str] = (
                           DEFAULT_ACCURACY_QUANTITIES),
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95
                       ) -> dict[str, dict[str, float]]:
  """Correlation of each ID quantity with one OOD accuracy over members.

  Args:
    quantities: `{name: [members]}` ID-measurable quantities.
    ood_accuracy: `[members]` OOD accuracies in [0, 1].
    accuracy_quantities: names probit-transformed for Pearson.
    n_boot, seed, level: the bootstrap (see the module docstring).

  Returns:
    `{name: {pearson, pearson_low, pearson_high, kendall, ..., spearman, ...,
    n_valid, probit}}`; `probit` says whether q was probit-scaled.
  """
  y = pop.probit(pop._accuracies(ood_accuracy, "ood_accuracy"))  # pylint: disable=protected-access
  out = {}
  for name, values in quantities.items():
    is_acc = name in accuracy_quantities
    x = (pop.probit(pop._accuracies(values, name)) if is_acc  # pylint: disable=protected-access
         else pop._vector(values, name))  # pylint: disable=protected-access
    row: dict[str, float] = {"probit": float(is_acc)}
    n_valid = n_boot
    for stat_name, fn in STATISTICS.items():
      row[stat_name] = fn(x, y)
      low, high, valid = bootstrap_ci(fn, x, y, n_boot=n_boot, seed=seed,
                                      level=level)
      row[f"{stat_name}_low"], row[f"{stat_name}_high"] = low, high
      n_valid = min(n_valid, valid)
    row["n_valid"] = float(n_valid)
    out[name] = row
  return out


def proxy_analysis(quantities: Mapping[str, Sequence[float]],
                   ood: Mapping[str, tuple[str, Sequence[float]]], **kwargs
                   ) -> dict[str, dict]:
  """Proxies for every (ID, OOD) pair and every shift kind.

  Args:
    quantities: `{name: [members]}` ID-measurable quantities.
    ood: `{pair_name: (kind, [members] OOD accuracies)}`.
    **kwargs: passed to `proxy_correlations`.

  Returns:
    `{"by_pair": {pair: {quantity: stats}}, "by_kind": {kind: {...}}}`, the
    kind's OOD accuracy being the members' mean over its pairs.
  """
  if not ood:
    raise ValueError("proxy_analysis needs at least one OOD pair.")
  by_pair = {pair: proxy_correlations(quantities, acc, **kwargs)
             for pair, (_, acc) in sorted(ood.items())}
  kinds: dict[str, list[np.ndarray]] = {}
  for _, (kind, acc) in sorted(ood.items()):
    kinds.setdefault(kind, []).append(np.asarray(acc, dtype=np.float64))
  by_kind = {kind: proxy_correlations(quantities, np.mean(accs, axis=0),
                                      **kwargs)
             for kind, accs in sorted(kinds.items())}
  return {"by_pair": by_pair, "by_kind": by_kind}


# Factors --------------------------------------------------------------------


def design_matrix(factors: Mapping[str, Sequence[str]],
                  reference: Mapping[str, str] | None = None,
                  covariates: Mapping[str, Sequence[float]] | None = None
                  ) -> tuple[np.ndarray, list[str], dict[str, str]]:
  """`[members, p]` design: intercept, covariates, one-hots (reference dropped).

  Returns:
    `(X, column_names, references)`; one-hot columns are named
    `"factor=level"`.
  """
  reference = dict(reference or {})
  covariates = dict(covariates or {})
  sizes = {len(v) for v in list(factors.values()) + list(covariates.values())}
  if len(sizes) != 1:
    raise ValueError(f"factors and covariates need one value per member; got "
                     f"lengths {sorted(sizes)}.")
  n = sizes.pop()
  cols, names = [np.ones(n)], ["intercept"]
  for name, values in covariates.items():
    cols.append(pop._vector(values, name))  # pylint: disable=protected-access
    names.append(name)
  refs = {}
  for name, values in factors.items():
    values = [str(v) for v in values]
    levels = sorted(set(values))
    ref = reference.get(name, levels[0])
    if ref not in levels:
      raise ValueError(f"reference level {ref!r} of factor {name!r} is not "
                       f"among its levels {levels}.")
    refs[name] = ref
    for level in levels:
      if level != ref:
        cols.append(np.array([v == level for v in values], dtype=np.float64))
        names.append(f"{name}={level}")
  return np.stack(cols, axis=1), names, refs


def ols(x: np.ndarray, y, names: Sequence[str], level: float = 0.95
        ) -> dict[str, dict[str, float]]:
  """OLS `y ~ x` with classical t-intervals (see the module docstring).

  Args:
    x: `[members, p]` design (include the intercept column).
    y: `[members]` response.
    names: `p` column names.

  Returns:
    `{column: {coef, se, low, high}}` plus `"_fit": {n, p, dof, rss, r2}`.
  """
  x = np.asarray(x, dtype=np.float64)
  y = pop._vector(y, "y")  # pylint: disable=protected-access
  n, p = x.shape
  if n <= p:
    raise ValueError(f"OLS needs more members than columns; got {n} members "
                     f"for {p} columns {list(names)}.")
  if np.linalg.matrix_rank(x) < p:
    raise ValueError(f"OLS design is rank deficient (a factor level is "
                     f"confounded with others); columns {list(names)}.")
  coef, _, _, _ = np.linalg.lstsq(x, y, rcond=None)
  resid = y - x @ coef
  dof = n - p
  rss = float(resid @ resid)
  cov = rss / dof * np.linalg.inv(x.T @ x)
  se = np.sqrt(np.diag(cov))
  t = stats.t.ppf(1 - (1 - level) / 2, dof)
  out = {name: {"coef": float(c), "se": float(s), "low": float(c - t * s),
                "high": float(c + t * s)}
         for name, c, s in zip(names, coef, se)}
  tss = float(np.sum((y - y.mean()) ** 2))
  out["_fit"] = {"n": float(n), "p": float(p), "dof": float(dof), "rss": rss,
                 "r2": float(1 - rss / tss) if tss > 0 else float("nan")}
  return out


def _ols_or_error(x, y, names, level) -> dict[str, Any]:
  """`ols(...)`, or `{"error": message}` where the design cannot be fit (so
  one fit's failure, e.g. too few members, does not hide the other)."""
  try:
    return ols(x, y, names, level)
  except ValueError as e:
    return {"error": str(e)}


def factor_effects(id_accuracy, ood_accuracy,
                   factors: Mapping[str, Sequence[str]], *,
                   reference: Mapping[str, str] | None = None,
                   level: float = 0.95) -> dict[str, dict]:
  """Effects of each choice on probit OOD accuracy, without and with ID.

  Args:
    id_accuracy, ood_accuracy: `[members]` in [0, 1].
    factors: `{factor: [members] level names}`; factors with a single level
      carry no information and are left out (listed under `constant`).
    reference: optional `{factor: reference level}`.

  Returns:
    `{"ood": ols(...), "effective_robustness": ols(...), "references":
    {factor: level}, "constant": [factor, ...], "level": level}`.
  """
  x_id = pop.probit(pop._accuracies(id_accuracy, "id_accuracy"))  # pylint: disable=protected-access
  y = pop.probit(pop._accuracies(ood_accuracy, "ood_accuracy"))  # pylint: disable=protected-access
  varying = {k: v for k, v in factors.items() if len(set(map(str, v))) > 1}
  constant = sorted(set(factors) - set(varying))
  x0, names0, refs = design_matrix(varying, reference)
  x1, names1, _ = design_matrix(varying, reference, {"probit_id_accuracy": x_id})
  return {"ood": _ols_or_error(x0, y, names0, level),
          "effective_robustness": _ols_or_error(x1, y, names1, level),
          "references": refs, "constant": constant, "level": level}


def best_proxies(by_pair: Mapping[str, Mapping[str, Mapping[str, float]]],
                 kinds: Mapping[str, str], statistic: str = "spearman"
                 ) -> dict[str, dict[str, Any]]:
  """Which ID quantity predicts OOD accuracy best, per shift kind.

  Args:
    by_pair: `proxy_analysis`'s `by_pair` (`{pair: {quantity: stats}}`).
    kinds: `{pair: kind}`.
    statistic: the correlation compared (by its absolute value: ECE, NLL
      and Brier predict with a negative sign).

  Returns:
    `{kind: {"pairs": n, "best_in": {quantity: number of pairs where its
    |statistic| is the largest}, "mean": {quantity: mean statistic over the
    kind's pairs}}}`; pairs whose statistics are all NaN are not counted.
  """
  out: dict[str, dict[str, Any]] = {}
  for kind in sorted(set(kinds.values())):
    pairs = [p for p in sorted(by_pair) if kinds.get(p) == kind]
    quantities = list(by_pair[pairs[0]]) if pairs else []
    best = {q: 0 for q in quantities}
    for p in pairs:
      values = {q: abs(by_pair[p][q][statistic]) for q in quantities
                if np.isfinite(by_pair[p][q][statistic])}
      if values:
        best[max(values, key=values.get)] += 1
    mean = {}
    for q in quantities:
      finite = [by_pair[p][q][statistic] for p in pairs
                if np.isfinite(by_pair[p][q][statistic])]
      mean[q] = float(np.mean(finite)) if finite else float("nan")
    out[kind] = {"pairs": len(pairs), "statistic": statistic,
                 "best_in": best, "mean": mean}
  return out
