"""Classification metrics on host arrays (NumPy), each with a tested reference.

All functions take logits or probabilities `[examples, classes]` and integer
labels `[examples]`, plus an optional `mask` `[examples]` (1 = real example,
0 = padding) so that padded evaluation batches can be passed as they are.
"""

from __future__ import annotations

import numpy as np


def _masked(mask: np.ndarray | None, n: int) -> np.ndarray:
  if mask is None:
    return np.ones(n, dtype=bool)
  return np.asarray(mask).astype(bool).reshape(n)


def softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable softmax over the last axis, in float64."""
  logits = np.asarray(logits, dtype=np.float64)
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = np.asarray(logits, dtype=np.float64)
  z = logits - logits.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def accuracy(logits: np.ndarray, labels: np.ndarray,
             mask: np.ndarray | None = None, top_k: int = 1) -> float:
  """Fraction of examples whose label is among the `top_k` largest logits."""
  logits = np.asarray(logits)
  m = _masked(mask, len(logits))
  top = np.argsort(-logits[m], axis=-1, kind="stable")[:, :top_k]
  return float(np.mean(np.any(top == np.asarray(labels)[m, None], axis=-1)))


def nll(logits: np.ndarray, labels: np.ndarray,
        mask: np.ndarray | None = None) -> float:
  """Mean negative log-likelihood of the labels (natural log)."""
  m = _masked(mask, len(logits))
  logp = log_softmax(np.asarray(logits)[m])
  return float(-np.mean(logp[np.arange(m.sum()), np.asarray(labels)[m]]))


def brier(logits: np.ndarray, labels: np.ndarray,
          mask: np.ndarray | None = None) -> float:
  """`mean_i sum_k (p_ik - 1[k = y_i])^2` (multi-class Brier score)."""
  m = _masked(mask, len(logits))
  p = softmax(np.asarray(logits)[m])
  onehot = np.eye(p.shape[-1])[np.asarray(labels)[m]]
  return float(np.mean(np.sum((p - onehot) ** 2, axis=-1)))


def reliability(logits: np.ndarray, labels: np.ndarray,
                mask: np.ndarray | None = None,
                num_bins: int = 15) -> dict[str, np.ndarray]:
  """Reliability-diagram data: top-label confidence in equal-width bins.

  Bin b holds confidences in `(b/n, (b+1)/n]` (the first bin also holds 0);
  confidence 1.0 falls in the last bin.

  Returns:
    `count`, `confidence` (mean per bin, 0 where empty), `accuracy` (mean per
    bin, 0 where empty) and `edges` `[num_bins + 1]`.
  """
  m = _masked(mask, len(logits))
  p = softmax(np.asarray(logits)[m])
  conf = p.max(axis=-1)
  correct = (p.argmax(axis=-1) == np.asarray(labels)[m]).astype(np.float64)
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
  """Top-label expected calibration error `sum_b n_b/N |acc_b - conf_b|`."""
  r = reliability(logits, labels, mask, num_bins)
  total = r["count"].sum()
  return float(np.sum(r["count"] / total * np.abs(r["accuracy"] -
                                                   r["confidence"])))


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           mask: np.ndarray | None = None,
                           ece_bins: int = 15) -> dict[str, float]:
  """The standard per-distribution table row."""
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

  The Mann-Whitney statistic with average ranks for ties (equal to
  `sklearn.metrics.roc_auc_score`).
  """
  scores = np.asarray(scores, dtype=np.float64)
  positives = np.asarray(positives).astype(bool)
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
