"""Attribute probes with a regularisation sweep, and feature collapse.

`probe_sweep` is the linear probe of `crl.evaluators.fairness.probe_accuracy`
(standardised features, logistic regression) with its inverse
regularisation strength `C` chosen on a held-out part of the fitting data:
the fitting examples are split once (a fixed permutation from `seed`) into
`1 - holdout` to fit and `holdout` to choose `C`; the chosen `C` is refitted
on all fitting examples and scored on the evaluation examples. The study
fits it on training-split features (the public two-heads code's probe) and
on validation-split features (crl's earlier probe), and reports both.

`feature_spectrum` measures whether penultimate features collapse (e.g. at a
high parity penalty): total variance, effective rank (exp of the entropy of
the normalised singular values of the centred features; Roy & Vetterli
2007), and the number of singular values above 1% of the largest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crl.evaluators import fairness as fm

PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


def probe_sweep(fit_features: Any, fit_groups: Any, eval_features: Any,
                eval_groups: Any, cs: tuple[float, ...] = PROBE_CS,
                holdout: float = 0.25, seed: int = 0) -> dict[str, Any]:
  """A linear attribute probe with `C` chosen on held-out fitting data.

  Args:
    fit_features: `[n, D]` features to fit (and choose `C`) on.
    fit_groups: `[n]` their attribute values.
    eval_features: `[m, D]` features to score the probe on.
    eval_groups: `[m]` their attribute values.
    cs: candidate inverse regularisation strengths.
    holdout: share of the fitting examples held out to choose `C`.
    seed: the seed of the fixed fit/held-out split (host NumPy).

  Returns:
    `{'accuracy': on eval, 'C': chosen, 'holdout_accuracy': {C: acc}}`.
  """
  x = np.asarray(fit_features)
  s = np.asarray(fit_groups)
  if not cs or not 0 < holdout < 1:
    raise ValueError(f"probe_sweep needs candidate Cs and 0 < holdout < 1, "
                     f"got {cs!r} and {holdout!r}.")
  if len(x) < 4:
    raise ValueError(f"probe_sweep needs at least 4 fitting examples, got "
                     f"{len(x)}.")
  order = np.random.default_rng(seed).permutation(len(x))
  cut = max(1, int(round(len(x) * holdout)))
  held, fit = order[:cut], order[cut:]
  scores = {float(c): fm.probe_accuracy(x[fit], s[fit], x[held], s[held],
                                        l2=float(c)) for c in cs}
  best = max(scores, key=lambda c: (scores[c], -c))  # ties: stronger reg.
  return {"accuracy": fm.probe_accuracy(x, s, eval_features, eval_groups,
                                        l2=best),
          "C": best, "holdout_accuracy": {f"{c:g}": v
                                          for c, v in scores.items()}}


def feature_spectrum(features: Any) -> dict[str, float]:
  """Collapse statistics of `[n, D]` features (module docstring).

  Returns:
    `{'total_variance', 'effective_rank', 'rank_1pct', 'dims'}`.
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or len(x) < 2:
    raise ValueError(f"feature_spectrum needs [n >= 2, D] features, got "
                     f"shape {x.shape}.")
  x = x - x.mean(0)
  sv = np.linalg.svd(x, compute_uv=False)
  total = float(np.sum(sv ** 2) / (len(x) - 1))
  if sv[0] <= 1e-12:
    return {"total_variance": total, "effective_rank": 0.,
            "rank_1pct": 0, "dims": x.shape[1]}
  p = sv / sv.sum()
  p = p[p > 0]
  return {"total_variance": total,
          "effective_rank": float(np.exp(-np.sum(p * np.log(p)))),
          "rank_1pct": int(np.sum(sv > 0.01 * sv[0])),
          "dims": int(x.shape[1])}
