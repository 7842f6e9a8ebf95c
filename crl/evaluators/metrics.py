"""Classification metrics on host arrays (NumPy), each with a tested reference.

All functions take the model's output as exactly one of `logits=` or
`probs=` `[examples, classes]` (NumPy or JAX arrays; computed in float64 on
the host) and integer labels `[examples]`, plus an optional `mask`
`[examples]` (1 = real example, 0 = padding) so that padded evaluation
batches can be passed as they are. They return Python floats. Logits are the
first positional argument, as before; probabilities are used as given (no
log/softmax round trip, which can move a confidence across a bin edge).

Logits may contain `-inf` (classes masked out, e.g. ImageNet-R's 200 of 1000)
but not NaN; probabilities must lie in [0, 1] with rows summing to 1 (within
1e-3). Impossible inputs (both or neither of logits/probs, wrong ranks or
lengths, labels outside `[0, classes)`, no unmasked example, fewer than one
bin) raise `ValueError`.

References checked in tests/evaluators/test_metrics.py:

| function | reference |
|---|---|
| `accuracy` | `sklearn.metrics.accuracy_score`, `top_k_accuracy_score` |
| `nll` | `sklearn.metrics.log_loss` |
| `brier` | the sum-over-classes formula; 2x `brier_score_loss` for 2 classes |
| `ece`, `reliability` | netcal 1.4.0 `ECE` (values computed with netcal, kept in the test), a plain NumPy loop, hand-computed cases |
| `auroc` | `sklearn.metrics.roc_auc_score` (ties included) |

`CONVENTIONS` holds one line per metric, written next to the numbers in
`results.json`.

OOD-detection scores and metrics are in `crl.evaluators.ood_detection`,
cross-model statistics (correlations, effective robustness, mCE, agreement) in
`crl.evaluators.population`.
"""

from __future__ import annotations

import numpy as np

ECE_CONVENTION = (
    "top-label ECE sum_b n_b/N |acc_b - conf_b| over B equal-width bins of "
    "the max probability; bin b = [b/B, (b+1)/B) with edges the correctly "
    "rounded doubles b/B (a confidence equal to b/B is in bin b), the last "
    "bin [(B-1)/B, 1] also holds 1.0, 0 is in the first; the left-closed "
    "sides of netcal 1.4.0 / np.histogram (netcal's edges np.linspace(0, 1, "
    "B + 1) differ from b/B by 1 ulp at some b, e.g. 0.30000000000000004)")
CONVENTIONS = {
    "accuracy": "top-1; ties to the lower class index",
    "top5_accuracy": "label among the 5 largest; ties to the lower index",
    "nll": "mean over examples of -log p_y, natural log",
    "brier": "mean_i sum_k (p_ik - 1[k = y_i])^2 (sum over classes)",
    "ece": ECE_CONVENTION,
}


def _masked(mask: np.ndarray | None, n: int) -> np.ndarray:
  if mask is None:
    return np.ones(n, dtype=bool)
  mask = np.asarray(mask)
  if mask.size != n:
    raise ValueError(f"mask has {mask.size} entries but there are {n} "
                     "examples; expected a mask of shape [examples].")
  return mask.astype(bool).reshape(n)


def _prepare(logits, probs, labels, mask
             ) -> tuple[np.ndarray, np.ndarray, bool]:
  """Checked, masked `(outputs [n, classes] float64, labels [n] int,
  outputs_are_probs)` from exactly one of `logits` and `probs`."""
  if (logits is None) == (probs is None):
    raise ValueError("Pass exactly one of logits= or probs= ([examples, "
                     "classes]); got " + ("both." if probs is not None
                                          else "neither."))
  is_probs = probs is not None
  name = "probs" if is_probs else "logits"
  out = np.asarray(probs if is_probs else logits, dtype=np.float64)
  if labels is None:
    raise ValueError("labels ([examples] integer class indices) are "
                     "required.")
  labels = np.asarray(labels)
  if out.ndim != 2:
    raise ValueError(f"{name} must be [examples, classes]; got shape "
                     f"{out.shape}.")
  if labels.shape != (len(out),):
    raise ValueError(f"labels must be [examples] = [{len(out)}] to match "
                     f"{name} {out.shape}; got shape {labels.shape}.")
  m = _masked(mask, len(out))
  out, labels = out[m], labels[m]
  if not len(out):
    raise ValueError("No (unmasked) examples: metrics are undefined.")
  if not np.issubdtype(labels.dtype, np.integer):
    if not np.all(np.mod(labels, 1) == 0):
      raise ValueError("labels must be integer class indices.")
    labels = labels.astype(np.int64)
  if labels.min() < 0 or labels.max() >= out.shape[1]:
    raise ValueError(f"labels must lie in [0, {out.shape[1]}) for "
                     f"{out.shape[1]} classes; got range "
                     f"[{labels.min()}, {labels.max()}].")
  if np.isnan(out).any():
    raise ValueError(f"{name} contain NaN.")
  if is_probs:
    if out.min() < 0 or out.max() > 1:
      raise ValueError(f"probs must lie in [0, 1]; got range [{out.min()}, "
                       f"{out.max()}] (pass logits= for unnormalised "
                       "scores).")
    worst = float(np.max(np.abs(out.sum(axis=-1) - 1.0)))
    if worst > 1e-3:
      raise ValueError(f"probs rows must sum to 1 (within 1e-3); the worst "
                       f"row is off by {worst:.3g}.")
  return out, labels, is_probs


def _probabilities(out: np.ndarray, is_probs: bool) -> np.ndarray:
  return out if is_probs else softmax(out)


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


def accuracy(logits=None, labels=None, mask=None, top_k: int = 1, *,
             probs=None) -> float:
  """Fraction of examples whose label is among the `top_k` largest outputs.

  Ties go to the lower class index (as `argmax` does for `top_k=1`);
  scikit-learn's `top_k_accuracy_score` breaks them towards the higher index
  instead, so the two agree whenever the top k are untied. `top_k >= classes`
  gives 1.0.
  """
  if int(top_k) != top_k or top_k < 1:
    raise ValueError(f"top_k must be a positive integer; got {top_k}.")
  out, labels, _ = _prepare(logits, probs, labels, mask)
  top = np.argsort(-out, axis=-1, kind="stable")[:, :int(top_k)]
  return float(np.mean(np.any(top == labels[:, None], axis=-1)))


def nll(logits=None, labels=None, mask=None, *, probs=None) -> float:
  """Mean negative log-likelihood of the labels (natural log; may be inf)."""
  out, labels, is_probs = _prepare(logits, probs, labels, mask)
  picked = np.arange(len(labels)), labels
  if is_probs:
    with np.errstate(divide="ignore"):  # p_y = 0 gives inf, as log_softmax.
      return float(-np.mean(np.log(out[picked])))
  return float(-np.mean(log_softmax(out)[picked]))


def brier(logits=None, labels=None, mask=None, *, probs=None) -> float:
  """`mean_i sum_k (p_ik - 1[k = y_i])^2` (multi-class Brier score)."""
  out, labels, is_probs = _prepare(logits, probs, labels, mask)
  p = _probabilities(out, is_probs)
  onehot = np.eye(p.shape[-1])[labels]
  return float(np.mean(np.sum((p - onehot) ** 2, axis=-1)))


def bin_edges(num_bins: int) -> np.ndarray:
  """`[num_bins + 1]` edges `b / num_bins`, each the correctly rounded double.

  Unlike `np.linspace(0, 1, num_bins + 1)` (`b * (1 / num_bins)`, e.g.
  0.30000000000000004 for b = 3 of 10), a confidence computed as `k / n`
  (a vote fraction, a count ratio) equals its edge exactly.
  """
  return np.arange(num_bins + 1, dtype=np.float64) / num_bins


def bin_index(conf: np.ndarray, num_bins: int) -> np.ndarray:
  """The bin `b` of each confidence: `edges[b] <= conf < edges[b + 1]`.

  Comparisons against `bin_edges` (no products such as `conf * num_bins`,
  which can round across an integer); 1.0 goes to the last bin, and
  confidences below 0 or above 1 to the first and last.
  """
  b = np.searchsorted(bin_edges(num_bins), conf, side="right") - 1
  return np.clip(b, 0, num_bins - 1)


def reliability(logits=None, labels=None, mask=None, num_bins: int = 15, *,
                probs=None) -> dict[str, np.ndarray]:
  """Reliability-diagram data: top-label confidence in equal-width bins.

  Confidence is the maximum probability (softmax of `logits`, or `probs` as
  given) and the prediction its argmax (ties to the lower class). Bin b
  holds confidences in `[b/n, (b+1)/n)`; the last bin also holds 1.0 and
  the first holds 0 (see `ECE_CONVENTION`, `bin_index`). 15 bins is the
  Google libraries' default (uncertainty-baselines, robustness_metrics), 10
  netcal's and the assaying-ood one.

  Returns:
    `count`, `confidence` (mean per bin, 0 where empty), `accuracy` (mean per
    bin, 0 where empty), all `[num_bins]`, and `edges` `[num_bins + 1]`.
  """
  if int(num_bins) != num_bins or num_bins < 1:
    raise ValueError(f"num_bins must be a positive integer; got {num_bins}.")
  num_bins = int(num_bins)
  out, labels, is_probs = _prepare(logits, probs, labels, mask)
  p = _probabilities(out, is_probs)
  conf = p.max(axis=-1)
  correct = (p.argmax(axis=-1) == labels).astype(np.float64)
  bins = bin_index(conf, num_bins)
  count = np.bincount(bins, minlength=num_bins).astype(np.float64)
  safe = np.maximum(count, 1.0)
  return {
      "count": count,
      "confidence": np.bincount(bins, conf, minlength=num_bins) / safe,
      "accuracy": np.bincount(bins, correct, minlength=num_bins) / safe,
      "edges": bin_edges(num_bins),
  }


def ece(logits=None, labels=None, mask=None, num_bins: int = 15, *,
        probs=None) -> float:
  """Top-label expected calibration error `sum_b n_b/N |acc_b - conf_b|`.

  Bins as in `reliability` (`ECE_CONVENTION`; the number of bins changes
  the value: report it beside the number). Equal to netcal 1.4.0's
  `ECE(bins).measure(probs, labels)` except for confidences within one ulp
  of an edge where `np.linspace` and `b / n` differ.
  """
  r = reliability(logits, labels, mask, num_bins, probs=probs)
  total = r["count"].sum()
  return float(np.sum(r["count"] / total * np.abs(r["accuracy"] -
                                                   r["confidence"])))


def classification_metrics(logits=None, labels=None, mask=None,
                           ece_bins: int = 15, *,
                           probs=None) -> dict[str, float]:
  """The standard per-distribution table row.

  Keys: `accuracy`, `nll`, `brier`, `ece` (with `ece_bins` bins),
  `num_examples`, and `top5_accuracy` when there are more than 5 classes
  (conventions in `CONVENTIONS`).
  """
  out, labels, is_probs = _prepare(logits, probs, labels, mask)
  kw = {"probs" if is_probs else "logits": out, "labels": labels}
  row = {
      "accuracy": accuracy(**kw),
      "nll": nll(**kw),
      "brier": brier(**kw),
      "ece": ece(**kw, num_bins=ece_bins),
      "num_examples": len(labels),
  }
  if out.shape[-1] > 5:
    row["top5_accuracy"] = accuracy(**kw, top_k=5)
  return row


def _scores_and_positives(scores, positives
                          ) -> tuple[np.ndarray, np.ndarray]:
  """Flat float64 scores and boolean positives of one length, no NaN."""
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  positives = np.asarray(positives).astype(bool).reshape(-1)
  if scores.shape != positives.shape:
    raise ValueError(f"scores ({scores.size}) and positives "
                     f"({positives.size}) must have the same length.")
  if np.isnan(scores).any():
    raise ValueError("scores contain NaN.")
  return scores, positives


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
  scores, positives = _scores_and_positives(scores, positives)
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


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """Average precision of `scores` for binary `positives`.

  `sum_n (R_n - R_{n-1}) P_n` over the distinct score thresholds, highest
  first, with no interpolation (`sklearn.metrics.average_precision_score(
  positives, scores)`). Higher scores mean "more positive".

  Args:
    scores: `[examples]`, no NaN (+-inf allowed).
    positives: `[examples]` booleans (or 0/1).

  Returns:
    The average precision; NaN when there is no positive example.

  Raises:
    ValueError: if lengths differ or scores contain NaN.
  """
  scores, positives = _scores_and_positives(scores, positives)
  if not positives.any():
    return float("nan")
  order = np.argsort(-scores, kind="mergesort")
  s, y = scores[order], positives[order]
  last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each tie run
  tps = np.cumsum(y)[last].astype(np.float64)
  precision = tps / (last + 1)
  recall = tps / tps[-1]
  return float(np.sum(np.diff(np.r_[0., recall]) * precision))
