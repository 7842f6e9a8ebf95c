"""Fairness metrics and the fairness evaluator (binary targets, any groups).

Definitions (NumPy, float64; `y` the true label in {0, 1}, `yhat` the
predicted label, `s` the protected attribute with any number of values; a
group counts only if it has examples):

* `accuracy`: `mean(yhat == y)`.
* `average_precision`: `crl.evaluators.metrics.average_precision` of the
  scores `sigmoid(z)` (scikit-learn's `average_precision_score`).
* `signed_ddp`: `P(yhat=1 | s=positive_group) - P(yhat=1 | s=reference_group)`
  (the paper's DDP; binary attributes, or any two groups of a multi-group one).
* Fairlearn 0.15's group-disparity metrics, from `crl.evaluators.disparity`
  (re-exported here): `selection_rates`, `demographic_parity_difference` /
  `_ratio`, `equal_opportunity_difference` / `_ratio`,
  `equalized_odds_difference` / `_ratio` (`agg` 'worst_case' or 'mean'), each
  with `method` 'between_groups' (default) or 'to_overall'.
* `probe_accuracy`: a linear probe (standardised features, L2 logistic
  regression) fitted on one set of features to predict `s`, scored on
  another.

`FairnessEvaluator` runs a binary classifier over eval splits whose batches
carry the protected attribute under key 'group', and reports all of the
above per split (the probe when given the model's penultimate features).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from crl.evaluators import common
from crl.evaluators import metrics as metrics_lib
# The group-disparity metrics (Fairlearn's) live in `disparity`; re-exported.
from crl.evaluators.disparity import (  # pylint: disable=unused-import
    EO_AGGREGATIONS, as_1d, binary, check_lengths,
    demographic_parity_difference, demographic_parity_ratio,
    equal_opportunity_difference,
    equal_opportunity_ratio, equalized_odds_difference, equalized_odds_ratio,
    group_rates, selection_rates, true_and_false_positive_rates)


# Metrics ---------------------------------------------------------------------


def accuracy(y_true: Any, y_pred: Any) -> float:
  """`mean(y_pred == y_true)`."""
  y_true, y_pred = as_1d(y_true, "y_true"), as_1d(y_pred, "y_pred")
  check_lengths(y_true=y_true, y_pred=y_pred)
  return float(np.mean(y_true == y_pred))


def signed_ddp(y_pred: Any, groups: Any, positive_group: Any = 1,
               reference_group: Any = 0) -> float:
  """`P(y_pred=1 | s=positive_group) - P(y_pred=1 | s=reference_group)`."""
  rates = selection_rates(y_pred, groups)
  missing = [g for g in (positive_group, reference_group) if g not in rates]
  if missing:
    raise ValueError(f"signed_ddp: group(s) {missing} have no examples; "
                     f"groups present: {sorted(rates)}.")
  return rates[positive_group] - rates[reference_group]


def probe_accuracy(fit_features: Any, fit_groups: Any, eval_features: Any,
                   eval_groups: Any, l2: float = 1.0,
                   max_iter: int = 2000) -> float:
  """Accuracy of a linear probe for the attribute, fitted and scored apart.

  Args:
    fit_features: `[n, D]` features to fit the probe on.
    fit_groups: `[n]` attribute values of those examples.
    eval_features: `[m, D]` features to score it on.
    eval_groups: `[m]` attribute values.
    l2: inverse regularisation strength `C` of the logistic regression.
    max_iter: solver iterations.

  Returns:
    The fraction of `eval_groups` predicted correctly (the majority group of
    `fit_groups` when only one group is present there).
  """
  from sklearn import linear_model  # pylint: disable=g-import-not-at-top
  x_fit = np.asarray(fit_features, np.float64)
  x_eval = np.asarray(eval_features, np.float64)
  s_fit, s_eval = as_1d(fit_groups, "fit_groups"), as_1d(eval_groups,
                                                         "eval_groups")
  if x_fit.ndim != 2 or x_eval.ndim != 2 or x_fit.shape[1] != x_eval.shape[1]:
    raise ValueError(f"probe features must be [n, D] with the same D, got "
                     f"{x_fit.shape} and {x_eval.shape}.")
  check_lengths(fit_features=x_fit, fit_groups=s_fit)
  check_lengths(eval_features=x_eval, eval_groups=s_eval)
  values = np.unique(s_fit)
  if len(values) < 2:
    return float(np.mean(s_eval == values[0]))
  mean, std = x_fit.mean(0), x_fit.std(0)
  std = np.where(std > 1e-8, std, 1.0)
  probe = linear_model.LogisticRegression(C=l2, max_iter=max_iter)
  probe.fit((x_fit - mean) / std, s_fit)
  return float(np.mean(probe.predict((x_eval - mean) / std) == s_eval))


def majority_rate(groups: Any) -> float:
  """Share of the largest group (the accuracy of a constant probe)."""
  _, counts = np.unique(as_1d(groups, "groups"), return_counts=True)
  return float(counts.max() / counts.sum())


def binary_margin(logits: Any) -> np.ndarray:
  """`[n]` margin `z = logit_1 - logit_0` of `[n, 2]` logits (or `[n]`)."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim == 1:
    return logits
  if logits.ndim != 2 or logits.shape[1] != 2:
    raise ValueError(f"Fairness metrics need a binary classifier: logits "
                     f"[n, 2] or margins [n], got shape {logits.shape}.")
  return logits[:, 1] - logits[:, 0]


CONVENTIONS = {
    "accuracy": "mean(yhat == y), yhat = 1[logit_1 - logit_0 > 0]",
    "average_precision": "sklearn average_precision_score of "
                         "sigmoid(margin): step-wise, no interpolation",
    "ddp": "signed P(yhat=1|s=positive_group) - P(yhat=1|s=reference_group)",
    "abs_ddp": "|ddp|",
    "dp_difference": "Fairlearn 0.15 demographic_parity_difference, "
                     "between_groups (max - min selection rate)",
    "dp_ratio": "Fairlearn 0.15 demographic_parity_ratio, between_groups "
                "(min / max selection rate; NaN if all 0)",
    "eo_difference": "Fairlearn 0.15 equalized_odds_difference, "
                     "between_groups, agg worst_case (larger of the TPR and "
                     "FPR gaps; an empty cell's rate is 0)",
    "eo_difference_mean": "as eo_difference with agg mean",
    "selection_rate/<g>": "P(yhat=1|s=g)",
    "positive_rate/<g>": "base rate P(y=1|s=g)",
    "nll": metrics_lib.CONVENTIONS["nll"],
    "probe_accuracy": "accuracy of an L2 logistic-regression probe for s on "
                      "standardised penultimate features, fitted on the "
                      "probe_fit_split",
    "probe_majority": "share of the largest group (a constant probe)",
}


def fairness_metrics(margin: Any, y_true: Any, groups: Any,
                     positive_group: Any = 1,
                     reference_group: Any = 0) -> dict[str, float]:
  """The per-split row from margins `z` (predict 1 iff `z > 0`).

  Keys: accuracy, average_precision, ddp (signed; when both groups are
  present), abs_ddp, dp_difference, dp_ratio, eo_difference (worst case),
  eo_difference_mean, selection_rate/<g>, positive_rate/<g> (the base rate
  `P(y=1 | s=g)`), num_examples, num_groups.
  """
  z = as_1d(margin, "margin").astype(np.float64)
  y_true, groups = binary(y_true, "y_true"), as_1d(groups, "groups")
  check_lengths(margin=z, y_true=y_true, groups=groups)
  y_pred = (z > 0).astype(np.int64)
  rates = selection_rates(y_pred, groups)
  row = {
      "accuracy": accuracy(y_true, y_pred),
      "average_precision": metrics_lib.average_precision(
          1. / (1. + np.exp(-z)), y_true),
      "dp_difference": demographic_parity_difference(y_pred, groups),
      "dp_ratio": demographic_parity_ratio(y_pred, groups),
      "eo_difference": equalized_odds_difference(y_true, y_pred, groups),
      "eo_difference_mean": equalized_odds_difference(y_true, y_pred, groups,
                                                      "mean"),
      "num_examples": int(len(z)),
      "num_groups": int(len(rates)),
  }
  if positive_group in rates and reference_group in rates:
    row["ddp"] = rates[positive_group] - rates[reference_group]
    row["abs_ddp"] = abs(row["ddp"])
  for g, rate in rates.items():
    row[f"selection_rate/{g}"] = rate
  for g, rate in group_rates(y_true, groups).items():
    row[f"positive_rate/{g}"] = rate
  return row


def group_threshold_search(margin: Any, y_true: Any, groups: Any, eps: float,
                           max_candidates: int = 1024
                           ) -> dict[str, Any] | None:
  """Group-specific thresholds of best accuracy with |DDP| <= eps.

  The post-processing baseline that needs the attribute at prediction time:
  `yhat = 1[margin > t_s]` with one threshold per group (binary attribute),
  searched exhaustively over each group's distinct margins (subsampled to
  `max_candidates` quantiles per group) and below its minimum. Ties go to
  the smallest |DDP|.

  Args:
    margin: `[n]` margins of a classifier (validation split).
    y_true: `[n]` labels in {0, 1}.
    groups: `[n]` attribute in {0, 1}, both present.
    eps: the parity slack on the signed DDP.
    max_candidates: thresholds per group.

  Returns:
    `{'thresholds': [t_0, t_1], 'accuracy', 'ddp'}` on the given data, or
    None when infeasible.
  """
  z = as_1d(margin, "margin").astype(np.float64)
  y, s = binary(y_true, "y_true"), binary(groups, "groups")
  check_lengths(margin=z, y_true=y, groups=s)
  if len(np.unique(s)) != 2:
    raise ValueError("group_threshold_search needs both groups present.")
  correct, rate, cands = [], [], []
  for g in (0, 1):
    zg, yg = z[s == g], y[s == g]
    values = np.unique(zg)
    if len(values) > max_candidates:
      values = np.unique(np.quantile(values, np.linspace(0, 1,
                                                         max_candidates)))
    t = np.r_[values[0] - 1., values]                       # yhat = z > t
    order = np.sort(zg)
    above = len(zg) - np.searchsorted(order, t, side="right")
    pos = np.sort(zg[yg == 1])
    tp = len(pos) - np.searchsorted(pos, t, side="right")
    neg_below = (len(zg) - len(pos)) - (above - tp)
    correct.append(tp + neg_below)
    rate.append(above / len(zg))
    cands.append(t)
  acc = (correct[0][:, None] + correct[1][None, :]) / len(z)
  ddp = rate[1][None, :] - rate[0][:, None]
  ok = np.abs(ddp) <= eps + 1e-12
  if not ok.any():
    return None
  key = np.where(ok, acc - 1e-9 * np.abs(ddp), -np.inf)
  i, j = np.unravel_index(int(np.argmax(key)), key.shape)
  return {"thresholds": [float(cands[0][i]), float(cands[1][j])],
          "accuracy": float(acc[i, j]), "ddp": float(ddp[i, j])}


def apply_group_thresholds(margin: Any, groups: Any,
                           thresholds: Sequence[float]) -> np.ndarray:
  """`[n]` margins of the rule `1[margin > t_s]`: `margin - t_s`."""
  z = as_1d(margin, "margin").astype(np.float64)
  s = as_1d(groups, "groups").astype(np.int64)
  return z - np.asarray(thresholds, np.float64)[s]


# Evaluator -------------------------------------------------------------------

# The batch entries a fairness pass returns with the model's outputs.
KEYS = ("label", "group")


class FairnessEvaluator:
  """Accuracy, AP and parity metrics per split, and the attribute probe.

  Args:
    pipeline: a `crl.data.pipeline.InputPipeline`; batches carry 'group'.
    predict_fn: `(params, batch) -> logits [B, 2]`, jitted.
    num_classes: must be 2 (a binary target).
    splits: split names, a comma-separated string, or "all".
    features_fn: `(params, batch) -> [B, D]` penultimate features, jitted;
      needed for the probe.
    probe_fit_split: the split whose features the probe is fitted on (None:
      no probe); it is scored on every split in `splits` except itself.
    positive_group, reference_group: the two groups of the signed DDP.
  """

  def __init__(self, *, pipeline: Any, predict_fn: Callable[..., jax.Array],
               num_classes: int, splits: Sequence[str] | str = ("test",),
               features_fn: Callable[..., jax.Array] | None = None,
               probe_fit_split: str | None = "validation",
               positive_group: int = 1, reference_group: int = 0):
    if num_classes != 2:
      raise ValueError(f"The fairness evaluator needs a binary target "
                       f"(num_classes=2), got num_classes={num_classes}.")
    if "group" not in getattr(pipeline.dataset, "batch_keys",
                              ("group",)):
      raise ValueError("The fairness evaluator needs a dataset whose batches "
                       "carry the protected attribute 'group' (batch_keys).")
    self.pipeline = pipeline
    self.predict_fn = predict_fn
    self.features_fn = features_fn
    known = pipeline.dataset.eval_splits()
    if isinstance(splits, str):
      splits = list(known) if splits == "all" else [
          s.strip() for s in splits.split(",") if s.strip()]
    self.splits = list(splits)
    unknown = [s for s in self.splits if s not in known]
    if probe_fit_split and probe_fit_split not in known:
      unknown.append(probe_fit_split)
    if unknown:
      raise ValueError(f"Unknown eval split(s) {unknown}; the dataset has: "
                       f"{', '.join(known)}.")
    self.descriptions = {s: known[s] for s in self.splits}
    self.probe_fit_split = probe_fit_split if features_fn else None
    self.positive_group = positive_group
    self.reference_group = reference_group

  def conventions(self) -> dict[str, str]:
    """`{metric: how it is computed}` for the keys of `run`'s rows."""
    return dict(CONVENTIONS)

  def _outputs_fn(self, with_features: bool):
    if not with_features:
      return lambda params, batch: {"logits": self.predict_fn(params, batch)}
    return lambda params, batch: {"logits": self.predict_fn(params, batch),
                                  "features": self.features_fn(params, batch)}

  def predict(self, params: Any, split: str,
              with_features: bool = False) -> dict[str, np.ndarray]:
    """`{'logits', 'label', 'group'[, 'features']}` of one pass over split."""
    return common.collect(self.pipeline, self._outputs_fn(with_features),
                          params, split, KEYS)

  def run(self, params: Any) -> dict[str, dict[str, float]]:
    """`{split: {metric: value}}` for every configured split."""
    probe = self.probe_fit_split is not None
    fit = self.predict(params, self.probe_fit_split, True) if probe else None
    results = {}
    for split in self.splits:
      out = (fit if split == self.probe_fit_split else
             self.predict(params, split, probe))
      row = fairness_metrics(binary_margin(out["logits"]), out["label"],
                             out["group"], self.positive_group,
                             self.reference_group)
      row["nll"] = metrics_lib.nll(out["logits"], out["label"])
      if probe and split != self.probe_fit_split:
        row["probe_accuracy"] = probe_accuracy(fit["features"], fit["group"],
                                               out["features"], out["group"])
        row["probe_majority"] = majority_rate(out["group"])
      results[split] = row
    return results


def format_table(results: dict[str, dict[str, float]],
                 columns: Sequence[str] = ("accuracy", "abs_ddp",
                                           "dp_difference", "eo_difference",
                                           "probe_accuracy")) -> str:
  """A fixed-width text table, one row per split."""
  width = max([len("split")] + [len(s) for s in results]) + 2
  head = "split".ljust(width) + "".join(c.rjust(16) for c in columns)
  lines = [head, "-" * len(head)]
  for split, row in results.items():
    cells = [("-" if row.get(c) is None else f"{row[c]:.4f}").rjust(16)
             for c in columns]
    lines.append(split.ljust(width) + "".join(cells))
  return "\n".join(lines)
