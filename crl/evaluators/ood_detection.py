"""OOD detection: confidence scores from logits and threshold-free metrics.

Convention (as in the spec, Hendrycks & Gimpel and OpenOOD v1.0):
**in-distribution is the positive class**, and every score is oriented so
that **higher means "more in-distribution"** (OpenOOD v1.5 takes OOD as
positive: `fpr_at_tpr(..., convention="ood_positive")`). A detector accepts an example as ID when its score is at
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
- `fpr_at_95_tpr` (`fpr_at_tpr` for other levels), `convention=`:
  * `"id_positive"` (the default, as the rest of this module): the threshold
    is the largest score value `t` such that at least 95% of ID examples
    have `score >= t`; the value is the fraction of OOD examples with
    `score >= t`. Equal to `fpr[np.argmax(tpr >= 0.95)]` with `fpr, tpr, _ =
    sklearn.metrics.roc_curve(is_id, score, drop_intermediate=False)` (no
    interpolation between ROC points).
  * `"ood_positive"`: OpenOOD v1.5 (`openood/evaluators/metrics.py`,
    `auc_and_fpr_recall`: `roc_curve(is_ood, -score)`): the fraction of ID
    examples flagged as OOD at the threshold that flags 95% of the OOD
    examples, i.e. `id_positive` with the roles of the two sets swapped and
    the score negated. A different number from `id_positive`.
  * `"openood_v1"`: the older OpenOOD (v1.0) helper `fpr_recall`: `k =
    floor(0.95 * n_id)`, `t` = the k-th largest ID score, value = fraction
    of OOD scores strictly above `t` (`ood > t`: ties with `t` not counted;
    the floor can leave the TPR just under 95%).
  OpenOOD calls `roc_curve` with its default `drop_intermediate=True`, which
  can drop the ROC point where the TPR first reaches 95% when it lies on a
  straight segment and then report the next point's, larger FPR; the
  conventions here use every ROC point.

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
FPR_CONVENTIONS = ("id_positive", "ood_positive", "openood_v1")
CONVENTIONS = {
    "auroc": "area under the ROC curve, ID positive, a tied (ID, OOD) pair "
             "counts 1/2 (= sklearn roc_auc_score)",
    "aupr_in": "average precision, ID positive (= sklearn "
               "average_precision_score(is_id, score))",
    "aupr_out": "average precision, OOD positive, score negated",
    "fpr95": "ID positive: threshold t = the largest score with >= 95% of ID "
             "scores >= t; value = fraction of OOD scores >= t (every ROC "
             "point, no interpolation; OpenOOD v1.5 takes OOD as positive)",
}


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
  """`metrics.average_precision` with `pos` the positives' scores."""
  return metrics_lib.average_precision(
      np.concatenate([pos, neg]),
      np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)])


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


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95,
               convention: str = "id_positive") -> float:
  """False-positive rate at the threshold that reaches `tpr`.

  `convention` (see the module docstring): `"id_positive"` (default; the
  fraction of OOD accepted at the largest threshold `t` with
  `mean(id_scores >= t) >= tpr`), `"ood_positive"` (OpenOOD v1.5: the
  fraction of ID rejected when `tpr` of OOD is rejected) or `"openood_v1"`
  (the older OpenOOD helper: k-th largest ID score, strict `ood > t`).
  """
  if not 0 < tpr <= 1:
    raise ValueError(f"tpr must be in (0, 1]; got {tpr}.")
  if convention not in FPR_CONVENTIONS:
    raise ValueError(f"Unknown FPR convention {convention!r}; known: "
                     f"{', '.join(FPR_CONVENTIONS)}.")
  id_scores, ood_scores = _check_scores(id_scores, ood_scores)
  if convention == "openood_v1":
    k = int(np.floor(tpr * len(id_scores)))
    threshold = np.sort(id_scores)[-k]  # k = 0 picks the smallest, as there.
    return float(np.mean(ood_scores > threshold))
  if convention == "ood_positive":
    id_scores, ood_scores = -ood_scores, -id_scores
  tps, fps = _curve(id_scores, ood_scores)
  first = int(np.argmax(tps / tps[-1] >= tpr))
  return float(fps[first] / fps[-1])


def fpr_at_95_tpr(id_scores, ood_scores,
                  convention: str = "id_positive") -> float:
  """FPR at 95% TPR, ID positive by default (see `fpr_at_tpr`)."""
  return fpr_at_tpr(id_scores, ood_scores, 0.95, convention)


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
