"""Classification evaluator: a model on named eval splits of its dataset.

For each split it runs the jitted predict function over one padded pass,
gathers logits to the host and computes `metrics.classification_metrics`.
Splits whose labels lie outside the training label space (novel classes)
get OOD-detection numbers against the in-distribution `test` split instead
(maximum-softmax-probability AUROC), since accuracy is undefined there.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from crl.evaluators import common
from crl.evaluators import metrics as metrics_lib


class ClassificationEvaluator:
  """Accuracy, NLL, Brier and ECE on eval splits (and MSP-AUROC on novel ones).

  Args:
    pipeline: a `crl.data.pipeline.InputPipeline`.
    predict_fn: `(params, batch) -> logits [batch, classes]`, jitted.
    num_classes: size of the training label space.
    splits: split names (a sequence, or one comma-separated string as typed
      on the command line), or "all" for every split of the dataset.
    ece_bins: equal-width bins for ECE.
  """

  def __init__(self, *, pipeline: Any, predict_fn: Callable[..., jax.Array],
               num_classes: int, splits: Sequence[str] | str = ("test",),
               ece_bins: int = 15):
    self.pipeline = pipeline
    self.predict_fn = predict_fn
    self.num_classes = num_classes
    known = pipeline.dataset.eval_splits()
    if isinstance(splits, str):
      splits = list(known) if splits == "all" else [
          s.strip() for s in splits.split(",") if s.strip()]
    self.splits = list(splits)
    unknown = [s for s in self.splits if s not in known]
    if unknown:
      raise ValueError(f"Unknown eval split(s) {unknown}; the dataset has: "
                       f"{', '.join(known)}.")
    self.descriptions = {s: known[s] for s in self.splits}
    self.ece_bins = ece_bins

  def conventions(self) -> dict[str, str]:
    """`{metric: how it is computed}` for the keys of `run`'s rows."""
    out = dict(metrics_lib.CONVENTIONS)
    out["ece"] = f"{self.ece_bins} bins; {metrics_lib.ECE_CONVENTION}"
    out["msp_mean"] = "mean max softmax probability (novel-class split)"
    out["ood_auroc_msp"] = ("AUROC of the max softmax probability, the "
                            "'test' split positive, this split negative; "
                            "ties count 1/2 (= sklearn roc_auc_score)")
    return out

  def predict(self, params: Any, split: str) -> dict[str, np.ndarray]:
    """Logits, labels and mask of one pass over `split` (padding removed)."""
    out = common.collect(self.pipeline, self.predict_fn, params, split)
    return {"logits": out["output"].astype(np.float64),
            "label": out["label"]}

  def run(self, params: Any) -> dict[str, dict[str, float]]:
    """`{split: {metric: value}}` for every configured split."""
    outputs = {s: self.predict(params, s) for s in self.splits}
    results = {}
    id_msp = None
    if "test" in outputs:
      id_msp = metrics_lib.softmax(outputs["test"]["logits"]).max(-1)
    for split, out in outputs.items():
      novel = out["label"].size and (out["label"].max() >= self.num_classes or
                                     out["label"].min() < 0)
      if not novel:
        results[split] = metrics_lib.classification_metrics(
            out["logits"], out["label"], ece_bins=self.ece_bins)
        continue
      msp = metrics_lib.softmax(out["logits"]).max(-1)
      row = {"num_examples": int(len(msp)), "msp_mean": float(msp.mean())}
      if id_msp is not None:
        row["ood_auroc_msp"] = metrics_lib.auroc(
            np.concatenate([id_msp, msp]),
            np.concatenate([np.ones_like(id_msp), np.zeros_like(msp)]))
      results[split] = row
    return results


def format_table(results: dict[str, dict[str, float]],
                 columns: Sequence[str] = ("accuracy", "nll", "ece")) -> str:
  """A fixed-width text table, one row per split."""
  width = max([len("distribution")] + [len(s) for s in results]) + 2
  head = "distribution".ljust(width) + "".join(c.rjust(12) for c in columns)
  lines = [head, "-" * len(head)]
  for split, row in results.items():
    cells = []
    for c in columns:
      v = row.get(c)
      cells.append(("-" if v is None else f"{v:.4f}").rjust(12))
    extra = ""
    if "ood_auroc_msp" in row:
      extra = f"   (novel classes: MSP AUROC {row['ood_auroc_msp']:.4f})"
    lines.append(split.ljust(width) + "".join(cells) + extra)
  return "\n".join(lines)
