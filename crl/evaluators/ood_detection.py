"""OOD detection: confidence scores from logits and threshold-free metrics.

Convention (as in the spec and OpenOOD): **in-distribution is the positive
class**, and every score is oriented so that **higher means "more
in-distribution"**. A detector accepts an example as ID when its score is at
least a threshold `t` (`score >= t`: tied examples are all accepted or all
rejected together).

Scores, each `[examples, classes] logits -> [examples]`:

| name | score | reference |
|---|---|---|
| `msp` | `max_k softmax(z)_k` | Hendrycks & Gimpel 2017 |
| `max_logit` | `max_k z_k` | Hendrycks et al. 2022 (MaxLogit) |
| `energy` | `T logsumexp(z / T)` = minus the free energy | Liu et al. 2020 |
| `entropy` | `sum_k p_k log p_k` = minus the predictive entropy | |

Metrics, each `(id_scores [n_id], ood_scores [n_ood]) -> float`:

- `auroc`: area under the ROC curve, ID positive; a tied (ID, OOD) pair counts
  1/2 (trapezoidal rule), equal to `sklearn.metrics.roc_auc_score(is_id,
  score)`. Symmetric: the same value with OOD positive and the score negated.
- `aupr_in`: average precision with ID positive and the score as is, equal to
  `sklearn.metrics.average_precision_score(is_id, score)`: the step-wise sum
  `sum_n (R_n - R_{n-1}) P_n` over distinct thresholds (no interpolation;
  tied scores form one threshold).
- `aupr_out`: average precision with OOD positive and the score negated,
  equal to `average_precision_score(is_ood, -score)`.
- `fpr_at_95_tpr` (`fpr_at_tpr` for other levels): the threshold is the
  largest score value `t` such that at least 95% of ID examples have
  `score >= t`; the value is the fraction of OOD examples with `score >= t`.
  Equal to `fpr[np.argmax(tpr >= 0.95)]` with `fpr, tpr, _ =
  sklearn.metrics.roc_curve(is_id, score, drop_intermediate=False)` (no
  interpolation between ROC points). Beware: with the default
  `drop_intermediate=True` (as OpenOOD calls it) sklearn can drop the ROC point
  where TPR first reaches 95% when it lies on a straight segment and then
  reports the next point's, larger FPR.

Edge cases: an empty ID or OOD set, NaN scores, or arrays that are not 1-D
raise `ValueError` (the metrics are undefined with a single class). `+-inf`
scores are allowed (they are ordered like any other value).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from crl.evaluators import metrics as metrics_lib

SCORE_NAMES = ("msp", "max_logit", "energy", "entropy")
METRIC_NAMES = ("auroc", "aupr_in", "aupr_out", "fpr95")


def _logits(logits) -> np.ndarray:
  logits = np.asarray(logits, dtype=np.float64)
  if logits.ndim != 2 or logits.shape[1] < 1:
    raise ValueError(f"logits must be [examples, classes]; got shape "
                     f"{logits.shape}.")
  if np.isnan(logits).any():
    raise ValueError("logits contain NaN.")
  return logits


def msp_score(logits) -> np.ndarray:
  """Maximum softmax probability `[examples]` of logits `[examples, classes]`."""
  return metrics_lib.softmax(_logits(logits)).max(axis=-1)


def max_logit_score(logits) -> np.ndarray:
  """Maximum logit `[examples]` of logits `[examples, classes]`."""
  return _logits(logits).max(axis=-1)


def energy_score(logits, temperature: float = 1.0) -> np.ndarray:
  """Negative free energy `T logsumexp(z / T)` `[examples]` (higher = more ID).

  Args:
    logits: `[examples, classes]`.
    temperature: `T > 0`; Liu et al. use 1.
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0; got {temperature}.")
  z = _logits(logits) / temperature
  top = z.max(axis=-1, keepdims=True)
  with np.errstate(invalid="ignore"):  # A row of all -inf gives -inf.
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=-1))
  return temperature * np.where(np.isneginf(top[:, 0]), -np.inf, lse)


def entropy_score(logits) -> np.ndarray:
  """Negative predictive entropy `sum_k p_k log p_k` `[examples]` (nats).

  Classes with probability 0 (e.g. `-inf` logits) contribute 0.
  """
  logits = _logits(logits)
  logp = metrics_lib.log_softmax(logits)
  p = np.exp(logp)
  with np.errstate(invalid="ignore"):  # 0 * -inf where p = 0.
    return np.sum(np.where(p > 0, p * logp, 0.0), axis=-1)


SCORES: dict[str, Callable[..., np.ndarray]] = {
    "msp": msp_score,
    "max_logit": max_logit_score,
    "energy": energy_score,
    "entropy": entropy_score,
}


def score(name: str, logits, temperature: float = 1.0) -> np.ndarray:
  """The score called `name` (one of `SCORE_NAMES`) of logits `[N, C]`."""
  if name not in SCORES:
    raise ValueError(f"Unknown OOD score {name!r}; known: "
                     f"{', '.join(SCORE_NAMES)}.")
  if name == "energy":
    return energy_score(logits, temperature)
  return SCORES[name](logits)


def _check_scores(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
  out = []
  for name, s in (("id_scores", id_scores), ("ood_scores", ood_scores)):
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1:
      raise ValueError(f"{name} must be 1-D [examples]; got shape {s.shape}.")
    if not s.size:
      raise ValueError(f"{name} is empty: OOD detection needs both ID and "
                       "OOD examples.")
    if np.isnan(s).any():
      raise ValueError(f"{name} contain NaN.")
    out.append(s)
  return out[0], out[1]


def _curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Cumulative (positives, negatives) with `score >= t`, `t` descending.

  One entry per distinct score value, as scikit-learn's binary curve.
  """
  scores = np.concatenate([pos, neg])
  is_pos = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
  order = np.argsort(-scores, kind="mergesort")
  scores, is_pos = scores[order], is_pos[order]
  last_of_value = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
  tps = np.cumsum(is_pos)[last_of_value]
  fps = (last_of_value + 1) - tps
  return tps, fps


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
  tps, fps = _curve(pos, neg)
  precision = tps / (tps + fps)
  recall = tps / tps[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(id_scores, ood_scores) -> float:
  """AUROC with ID positive (ties count 1/2; = `roc_auc_score`)."""
  id_scores, ood_scores = _check_scores(id_scores, ood_scores)
  return metrics_lib.auroc(
      np.concatenate([id_scores, ood_scores]),
      np.r_[np.ones(len(id_scores), bool), np.zeros(len(ood_scores), bool)])


def aupr_in(id_scores, ood_scores) -> float:
  """Average precision, ID positive (= `average_precision_score(is_id, s)`)."""
  id_scores, ood_scores = _check_scores(id_scores, ood_scores)
  return _average_precision(id_scores, ood_scores)


def aupr_out(id_scores, ood_scores) -> float:
  """Average precision, OOD positive, score negated (= `..._score(is_ood, -s)`).
  """
  id_scores, ood_scores = _check_scores(id_scores, ood_scores)
  return _average_precision(-ood_scores, -id_scores)


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
  """Fraction of OOD accepted at the threshold that accepts `tpr` of ID.

  The threshold is the largest score value `t` with
  `mean(id_scores >= t) >= tpr`; no interpolation (see the module docstring).
  """
  if not 0 < tpr <= 1:
    raise ValueError(f"tpr must be in (0, 1]; got {tpr}.")
  id_scores, ood_scores = _check_scores(id_scores, ood_scores)
  tps, fps = _curve(id_scores, ood_scores)
  first = int(np.argmax(tps / tps[-1] >= tpr))
  return float(fps[first] / fps[-1])


def fpr_at_95_tpr(id_scores, ood_scores) -> float:
  """FPR at 95% TPR, ID positive (see `fpr_at_tpr`)."""
  return fpr_at_tpr(id_scores, ood_scores, 0.95)


METRICS: dict[str, Callable[..., float]] = {
    "auroc": auroc,
    "aupr_in": aupr_in,
    "aupr_out": aupr_out,
    "fpr95": fpr_at_95_tpr,
}


def detection_metrics(id_logits, ood_logits,
                      scores: Sequence[str] = SCORE_NAMES,
                      temperature: float = 1.0) -> dict[str, float]:
  """All detection metrics for all scores, ID vs OOD.

  Args:
    id_logits: `[n_id, classes]` logits on the in-distribution set.
    ood_logits: `[n_ood, classes]` logits on the OOD (e.g. novel-class) set,
      same classes.
    scores: score names from `SCORE_NAMES`.
    temperature: the energy score's temperature.

  Returns:
    `{f"{metric}_{score}": value}` for metric in `METRIC_NAMES` (`auroc`,
    `aupr_in`, `aupr_out`, `fpr95`) and score in `scores`, e.g.
    `auroc_msp`, `fpr95_energy`.
  """
  id_logits, ood_logits = _logits(id_logits), _logits(ood_logits)
  if id_logits.shape[1] != ood_logits.shape[1]:
    raise ValueError(f"ID logits have {id_logits.shape[1]} classes but OOD "
                     f"logits {ood_logits.shape[1]}; expected the same.")
  out = {}
  for name in scores:
    s_id = score(name, id_logits, temperature)
    s_ood = score(name, ood_logits, temperature)
    for metric, fn in METRICS.items():
      out[f"{metric}_{name}"] = fn(s_id, s_ood)
  return out
