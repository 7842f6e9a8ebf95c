"""Classification metrics on host arrays (NumPy), each with a tested reference.

All functions take logits `[examples, classes]` (NumPy or JAX arrays; computed
in float64 on the host) and integer labels `[examples]`, plus an optional
`mask` `[examples]` (1 = real example, 0 = padding) so that padded evaluation
batches can be passed as they are. They return Python floats.

Logits may contain `-inf` (classes masked out, e.g. ImageNet-R's 200 of 1000)
but not NaN. Impossible inputs (wrong ranks or lengths, labels outside
`[0, classes)`, no unmasked example, fewer than one bin) raise `ValueError`.

References checked in tests/evaluators/test_metrics.py:

| function | reference |
|---|---|
| `accuracy` | `sklearn.metrics.accuracy_score`, `top_k_accuracy_score` |
| `nll` | `sklearn.metrics.log_loss` |
| `brier` | the sum-over-classes formula; 2x `brier_score_loss` for 2 classes |
| `ece`, `reliability` | hand-computed cases with given bins; a per-bin loop |
| `auroc` | `sklearn.metrics.roc_auc_score` (ties included) |

OOD-detection scores and metrics are in `crl.evaluators.ood_detection`,
cross-model statistics (correlations, effective robustness, mCE, agreement) in
`crl.evaluators.population`.
"""

from __future__ import annotations

import numpy as np


def _masked(mask: np.ndarray | None, n: int) -> np.ndarray:
  if mask is None:
    return np.ones(n, dtype=bool)
  mask = np.asarray(mask)
  if mask.size != n:
    raise ValueError(f"mask has {mask.size} entries but there are {n} "
                     "examples; expected a mask of shape [examples].")
  return mask.astype(bool).reshape(n)


def _prepare(logits, labels, mask) -> tuple[np.ndarray, np.ndarray]:
  """Checked, masked `(logits [n, classes] float64, labels [n] int)`."""
  logits = np.asarray(logits, dtype=np.float64)
  labels = np.asarray(labels)
  if logits.ndim != 2:
    raise ValueError(f"logits must be [examples, classes]; got shape "
                     f"{logits.shape}.")
  if labels.shape != (len(logits),):
    raise ValueError(f"labels must be [examples] = [{len(logits)}] to match "
                     f"logits {logits.shape}; got shape {labels.shape}.")
  m = _masked(mask, len(logits))
  logits, labels = logits[m], labels[m]
  if not len(logits):
    raise ValueError("No (unmasked) examples: metrics are undefined.")
  if not np.issubdtype(labels.dtype, np.integer):
    if not np.all(np.mod(labels, 1) == 0):
      raise ValueError("labels must be integer class indices.")
    labels = labels.astype(np.int64)
  if labels.min() < 0 or labels.max() >= logits.shape[1]:
    raise ValueError(f"labels must lie in [0, {logits.shape[1]}) for "
                     f"{logits.shape[1]} classes; got range "
                     f"[{labels.min()}, {labels.max()}].")
  if np.isnan(logits).any():
    raise ValueError("logits contain NaN.")
  return logits, labels


def softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable softmax over the last axis, in float64."""
  logits = np.asarray(logits, dtype=np.float64)
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable log-softmax over the last axis, in float64."""
  logits = np.asarray(logits, dtype=np.float64)
  z = logits - logits.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def accuracy(logits: np.ndarray, labels: np.ndarray,
             mask: np.ndarray | None = None, top_k: int = 1) -> float:
  """Fraction of examples whose label is among the `top_k` largest logits.

  Ties between logits go to the lower class index (as `argmax` does for
  `top_k=1`); scikit-learn's `top_k_accuracy_score` breaks them towards the
  higher index instead, so the two agree whenever the top k are untied.
  `top_k >= classes` gives 1.0.
  """
  if int(top_k) != top_k or top_k < 1:
    raise ValueError(f"top_k must be a positive integer; got {top_k}.")
  logits, labels = _prepare(logits, labels, mask)
  top = np.argsort(-logits, axis=-1, kind="stable")[:, :int(top_k)]
  return float(np.mean(np.any(top == labels[:, None], axis=-1)))


def nll(logits: np.ndarray, labels: np.ndarray,
        mask: np.ndarray | None = None) -> float:
  """Mean negative log-likelihood of the labels (natural log; may be inf)."""
  logits, labels = _prepare(logits, labels, mask)
  logp = log_softmax(logits)
  return float(-np.mean(logp[np.arange(len(labels)), labels]))


def brier(logits: np.ndarray, labels: np.ndarray,
          mask: np.ndarray | None = None) -> float:
  """`mean_i sum_k (p_ik - 1[k = y_i])^2` (multi-class Brier score)."""
  logits, labels = _prepare(logits, labels, mask)
  p = softmax(logits)
  onehot = np.eye(p.shape[-1])[labels]
  return float(np.mean(np.sum((p - onehot) ** 2, axis=-1)))


def reliability(logits: np.ndarray, labels: np.ndarray,
                mask: np.ndarray | None = None,
                num_bins: int = 15) -> dict[str, np.ndarray]:
  """Reliability-diagram data: top-label confidence in equal-width bins.

  Confidence is the maximum softmax probability and the prediction its argmax
  (ties to the lower class). Bin b holds confidences in `(b/n, (b+1)/n]`,
  computed as `ceil(conf * n) - 1` (the first bin also holds 0); confidence
  1.0 falls in the last bin. 15 bins is the Google libraries' default
  (uncertainty-baselines, robustness_metrics), 10 the assaying-ood one.

  Returns:
    `count`, `confidence` (mean per bin, 0 where empty), `accuracy` (mean per
    bin, 0 where empty), all `[num_bins]`, and `edges` `[num_bins + 1]`.
  """
  if int(num_bins) != num_bins or num_bins < 1:
    raise ValueError(f"num_bins must be a positive integer; got {num_bins}.")
  num_bins = int(num_bins)
  logits, labels = _prepare(logits, labels, mask)
  p = softmax(logits)
  conf = p.max(axis=-1)
  correct = (p.argmax(axis=-1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  bins = np.clip(np.ceil(conf * num_bins).astype(int) - 1, 0, num_bins - 1)
  count = np.bincount(bins, minlength=num_bins).astype(np.float64)
  safe = np.maximum(count, 1.0)
  return {
      "count": count,
      "confidence": np.bincount(bins, conf, minlength=num_bins) / safe,
      "accuracy": np.bincount(bins, correct, minlength=num_bins) / safe,
      "edges": edges,
  }


def ece(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None,
        num_bins: int = 15) -> float:
  """Top-label expected calibration error `sum_b n_b/N |acc_b - conf_b|`.

  Equal-width bins as in `reliability` (the number of bins changes the value:
  report it beside the number).
  """
  r = reliability(logits, labels, mask, num_bins)
  total = r["count"].sum()
  return float(np.sum(r["count"] / total * np.abs(r["accuracy"] -
                                                   r["confidence"])))


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           mask: np.ndarray | None = None,
                           ece_bins: int = 15) -> dict[str, float]:
  """The standard per-distribution table row.

  Keys: `accuracy`, `nll`, `brier`, `ece` (with `ece_bins` bins),
  `num_examples`, and `top5_accuracy` when there are more than 5 classes.
  """
  num_classes = np.asarray(logits).shape[-1]
  out = {
      "accuracy": accuracy(logits, labels, mask),
      "nll": nll(logits, labels, mask),
      "brier": brier(logits, labels, mask),
      "ece": ece(logits, labels, mask, ece_bins),
      "num_examples": int(_masked(mask, len(logits)).sum()),
  }
  if num_classes > 5:
    out["top5_accuracy"] = accuracy(logits, labels, mask, top_k=5)
  return out


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
  """Area under the ROC curve of `scores` for binary `positives`.

  The Mann-Whitney statistic with average ranks for ties, i.e. a tied
  (positive, negative) pair counts 1/2 (equal to the trapezoidal
  `sklearn.metrics.roc_auc_score`). Higher scores mean "more positive".

  Args:
    scores: `[examples]`, no NaN (+-inf allowed).
    positives: `[examples]` booleans (or 0/1).

  Raises:
    ValueError: if lengths differ, scores contain NaN, or one class is absent.
  """
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  positives = np.asarray(positives).astype(bool).reshape(-1)
  if scores.shape != positives.shape:
    raise ValueError(f"scores ({scores.size}) and positives "
                     f"({positives.size}) must have the same length.")
  if np.isnan(scores).any():
    raise ValueError("scores contain NaN.")
  n_pos, n_neg = positives.sum(), (~positives).sum()
  if n_pos == 0 or n_neg == 0:
    raise ValueError("AUROC needs both positive and negative examples.")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores), dtype=np.float64)
  sorted_scores = scores[order]
  # Average ranks over ties.
  _, first, counts = np.unique(sorted_scores, return_index=True,
                               return_counts=True)
  avg = first + (counts + 1) / 2.0
  ranks[order] = np.repeat(avg, counts)
  return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) /
               (n_pos * n_neg))
