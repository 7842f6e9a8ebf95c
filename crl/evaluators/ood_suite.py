"""OOD-suite evaluator: one model on many shifts, each number with its protocol.

`OODSuiteEvaluator` follows the evaluator convention of
`crl.trainers.classification` (built from a `config.evals.<name>` section with
`pipeline`, `predict_fn` and `num_classes`), so any training config can
track shifts during training::

    config.evals.ood = dict(type="ood_suite", every_steps=500,
                            shifts=("hue_independent", "corruption/contrast/3"))

For the ID split and every shift of the registry selection
(`crl.shifts.registry`):

* covariate shifts (interventional, corruption, natural) and the ID split:
  top-1 / top-5 accuracy, NLL, Brier score and ECE with `ece_bins`
  equal-width bins (`crl.evaluators.metrics`), and reliability data;
* semantic shifts: AUROC, AUPR-in, AUPR-out and FPR at 95% TPR for each of
  `scores` (`crl.evaluators.ood_detection`), ID split positive.

`run(params)` returns `{name: {metric: float}}` (the ID split under its own
name, e.g. 'test') for the trainer's periodic logging; `report(params)` adds
the rows of the results files, each carrying the exact protocol of its number
(bins, severity, subset sizes, score, randomness), and the reliability data;
`predict_many` evaluates several models on one shift from one pass over its
data (the suite trainer's population loop).

Data. Interventional shifts are eval splits of the causal-shapes generator
(rendered on the devices). Corruption shifts corrupt the ID split's batches
on the devices with one jitted function per corruption type
(`suite_loop.corrupt_examples`; the severity is traced, so one compilation serves all
five): example `i` of the split draws its randomness from
`fold_in(fold_in(PRNGKey(corruption_seed), crc32(name)), i)`, the same draws
at every severity, independent of the batch size. Natural pairs read the
locally prepared TFDS dataset (`crl.shifts.natural`), with ImageNet-R/-A
logits masked to their 200 classes.

Shifts selected by 'all', a kind or a glob pattern that do not apply to the
run (an interventional shift on TFDS data, a TFDS pair whose data is not
prepared) are skipped and listed in `skipped`; explicitly named ones that do
not apply raise `ValueError` (or the `DataError` of missing TFDS data)
before anything is compiled.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from crl.data import pipeline as pipeline_lib
from crl.evaluators import metrics as metrics_lib
from crl.evaluators import ood_detection
from crl.evaluators import suite_loop
from crl.evaluators.common import gather
from crl.shifts import corruptions
from crl.shifts import natural
from crl.shifts import registry as shift_registry

ECE_BINNING = metrics_lib.ECE_CONVENTION
METRIC_PROTOCOLS = {
    "accuracy": {"top_k": 1, "ties": "to the lower class index"},
    "top5_accuracy": {"top_k": 5, "ties": "to the lower class index"},
    "nll": {"definition": "mean over examples of -log softmax(z)_y, natural "
                          "log"},
    "brier": {"definition": "mean_i sum_k (p_ik - 1[k = y_i])^2"},
}
DETECTION_PROTOCOLS = ood_detection.CONVENTIONS
SCORE_PROTOCOLS = {
    "msp": "max_k softmax(z)_k",
    "max_logit": "max_k z_k",
    "energy": "T logsumexp(z / T)",
    "entropy": "sum_k p_k log p_k (negative entropy)",
}


# The corrupted batches live with the suite's loop (crl.evaluators.suite_loop).
corrupt_examples = suite_loop.corrupt_examples
corruption_key = suite_loop.corruption_key


def _as_tuple(x: Any, what: str) -> tuple:
  if isinstance(x, str):
    x = [s.strip() for s in x.split(",") if s.strip()]
  try:
    return tuple(x)
  except TypeError:
    raise ValueError(f"{what} must be a sequence, got {x!r}.") from None


class OODSuiteEvaluator:
  """Accuracy, calibration and OOD detection on registered shifts.

  Args:
    pipeline: the run's `crl.data.pipeline.InputPipeline`.
    predict_fn: `(params, batch) -> logits [batch, classes]`, jitted.
    num_classes: size of the training label space.
    shifts: a registry selection: names, kinds, glob patterns or "all" (a
      sequence, or one comma-separated string as typed on the command line).
    ece_bins: equal-width ECE bins (15: the Google libraries'; 10:
      assaying-ood's).
    severities: corruption severities kept when corruptions are selected by
      'all', a kind or a pattern (explicit names are always kept).
    scores: OOD-detection scores for semantic shifts.
    id_split: the in-distribution split (default 'test', else the dataset's
      first eval split).
    corruption_seed: root seed of the corruptions' randomness.
    temperature: temperature of the energy score.
  """

  def __init__(self, *, pipeline: Any, predict_fn: Callable[..., jax.Array],
               num_classes: int, shifts: Sequence[str] | str = "all",
               ece_bins: int = 15,
               severities: Sequence[int] = shift_registry.SEVERITIES,
               scores: Sequence[str] = ood_detection.SCORE_NAMES,
               id_split: str | None = None, corruption_seed: int = 0,
               temperature: float = 1.0):
    self.pipeline = pipeline
    self.predict_fn = predict_fn
    self.num_classes = int(num_classes)
    self.dataset = pipeline.dataset
    if int(ece_bins) != ece_bins or ece_bins < 1:
      raise ValueError(f"ece_bins must be a positive integer, got {ece_bins}.")
    self.ece_bins = int(ece_bins)
    self.severities = tuple(int(s) for s in _as_tuple(severities,
                                                      "severities"))
    if not self.severities or not set(self.severities) <= set(
        shift_registry.SEVERITIES):
      raise ValueError(f"severities must be a non-empty subset of "
                       f"{shift_registry.SEVERITIES}, got {severities!r}.")
    self.scores = _as_tuple(scores, "scores")
    unknown = [s for s in self.scores if s not in ood_detection.SCORE_NAMES]
    if unknown or not self.scores:
      raise ValueError(f"Unknown OOD score(s) {unknown or self.scores}; known:"
                       f" {', '.join(ood_detection.SCORE_NAMES)}.")
    self.temperature = float(temperature)
    self.corruption_seed = int(corruption_seed)
    known = self.dataset.eval_splits()
    if id_split is None:
      id_split = "test" if "test" in known else next(iter(known))
    if id_split not in known:
      raise ValueError(f"id_split {id_split!r} is not an eval split of the "
                       f"dataset; it has: {', '.join(known)}.")
    self.id_split = id_split
    self.shifts: list[shift_registry.Shift] = []
    self.skipped: dict[str, str] = {}
    self._ood_pipelines: dict[str, Any] = {}
    self._masks: dict[str, np.ndarray] = {}
    for shift, explicit in shift_registry.select(_as_tuple(shifts,
                                                           "shifts")):
      self._add(shift, explicit)
    if not self.shifts:
      raise ValueError(
          "None of the selected shifts applies to this run: " + "; ".join(
              f"{n}: {r}" for n, r in list(self.skipped.items())[:5]) + ".")
    self.descriptions = {self.id_split: known[self.id_split]}
    self.descriptions.update({s.name: self.description(s)
                              for s in self.shifts})
    self.kinds = {self.id_split: "id", **{s.name: s.kind for s in self.shifts}}

  # Construction --------------------------------------------------------------

  def _add(self, shift: shift_registry.Shift, explicit: bool) -> None:
    if (not explicit and shift.severity is not None and
        shift.severity not in self.severities):
      return
    reason = shift_registry.applies_to(shift, self.dataset)
    if reason is None and shift.source == "tfds":
      try:
        ood = natural.ood_dataset(shift, self.dataset)
        mask = natural.class_mask(shift, self.dataset)
      except pipeline_lib.DataError as e:
        if explicit:
          raise
        reason = str(e).split(";")[0]
      else:
        self._ood_pipelines[shift.name] = pipeline_lib.InputPipeline(
            ood, self.pipeline.mesh, self.pipeline.global_batch,
            self.pipeline.eval_batch, self.pipeline.sharding.spec[0])
        if mask is not None:
          self._masks[shift.name] = mask
    if reason is not None:
      if explicit:
        raise ValueError(f"Shift {shift.name!r} cannot be evaluated on this "
                         f"run: {reason}.")
      self.skipped[shift.name] = reason
      return
    self.shifts.append(shift)

  def description(self, shift: shift_registry.Shift) -> str:
    """The shift's description, with the run dataset's own parameters."""
    if shift.source == "causal_shapes":
      return self.dataset.describe(shift.intervention)
    return shift.description

  @property
  def names(self) -> list[str]:
    """The ID split, then the evaluated shifts, in order."""
    return [self.id_split] + [s.name for s in self.shifts]

  def shift(self, name: str) -> shift_registry.Shift | None:
    """The `Shift` called `name` (None for the ID split)."""
    if name == self.id_split:
      return None
    for s in self.shifts:
      if s.name == name:
        return s
    raise KeyError(f"{name!r} is not evaluated here; evaluated: "
                   f"{', '.join(self.names)}.")

  # Data ----------------------------------------------------------------------

  def batches(self, name: str) -> Iterator[dict[str, jax.Array]]:
    """One padded pass over the data of `name` (ID split or shift)."""
    shift = self.shift(name)
    if shift is None:
      yield from self.pipeline.eval_batches(self.id_split)
    elif shift.source == "causal_shapes":
      yield from self.pipeline.eval_batches(shift.intervention)
    elif shift.source == "domain":
      yield from self.pipeline.eval_batches(shift.domain)
    elif shift.source == "corruption":
      key = suite_loop.corruption_key(self.corruption_seed, shift.corruption)
      severity = jnp.int32(shift.severity)
      for b, batch in enumerate(self.pipeline.eval_batches(self.id_split)):
        start = jnp.int32(b * self.pipeline.eval_batch)
        yield {**batch, "image": suite_loop.corrupt_examples(
            batch["image"], start, severity, key, name=shift.corruption)}
    else:
      yield from self._ood_pipelines[name].eval_batches(shift.tfds_split)

  def predict_many(self, models: Mapping[str, tuple[Any, Callable[..., Any]]],
                   name: str) -> dict[str, dict[str, np.ndarray]]:
    """`{model: {'logits', 'label'}}` on `name` from one pass over its data.

    Args:
      models: `{model: (params, predict_fn)}`; the predict functions take
        this pipeline's batches.
      name: the ID split or a shift name.

    Returns:
      Host float64 logits `[examples, classes]` (padding removed, classes
      outside a shift's class subset at -inf) and int labels `[examples]`.
    """
    logits: dict[str, list[np.ndarray]] = {m: [] for m in models}
    labels, masks = [], []
    for batch in self.batches(name):
      for model, (params, fn) in models.items():
        logits[model].append(gather(fn(params, batch)))
      labels.append(gather(batch["label"]))
      masks.append(gather(batch["mask"]))
    keep = np.concatenate(masks) > 0
    label = np.concatenate(labels)[keep]
    subset = self._masks.get(name)
    if subset is not None and label.size and not subset[label].all():
      raise pipeline_lib.DataError(
          f"Shift {name!r}: {int((~subset[label]).sum())} of {label.size} "
          "examples have labels outside its class subset "
          f"({int(subset.sum())} classes); the data does not match the "
          "published dataset.")
    out = {}
    for model, parts in logits.items():
      z = np.concatenate(parts)[keep].astype(np.float64)
      if subset is not None:
        z[:, ~subset] = -np.inf
      out[model] = {"logits": z, "label": label}
    return out

  def predict(self, params: Any,
              predict_fn: Callable[..., Any] | None = None
              ) -> dict[str, dict[str, np.ndarray]]:
    """`{name: {'logits', 'label'}}` of one model on the ID split and shifts."""
    fn = predict_fn or self.predict_fn
    out = {}
    for name in self.names:
      t0 = time.time()
      out[name] = self.predict_many({"model": (params, fn)}, name)["model"]
      logging.debug("OOD suite: %s in %.1fs.", name, time.time() - t0)
    return out

  # Metrics -------------------------------------------------------------------

  def evaluate(self, name: str, out: Mapping[str, np.ndarray],
               id_logits: np.ndarray) -> dict[str, float]:
    """`{metric: value}` of one model on `name` (see the module docstring).

    Args:
      name: the ID split or a shift.
      out: `predict_many`'s `{'logits', 'label'}` of the model on `name`.
      id_logits: the model's logits on the ID split (for semantic shifts).
    """
    if self.kinds[name] == "semantic":
      row = ood_detection.detection_metrics(
          id_logits, out["logits"], self.scores, self.temperature)
      row["num_examples"] = int(len(out["logits"]))
      row["num_id_examples"] = int(len(id_logits))
    else:
      row = metrics_lib.classification_metrics(
          out["logits"], out["label"], ece_bins=self.ece_bins)
      if "top5_accuracy" not in row:  # <= 5 classes: top-5 is trivially 1
        row["top5_accuracy"] = metrics_lib.accuracy(
            out["logits"], out["label"], top_k=5)
    return {k: float(v) for k, v in row.items()}

  def metrics(self, outputs: Mapping[str, Mapping[str, np.ndarray]]
              ) -> dict[str, dict[str, float]]:
    """`{name: {metric: value}}` from `predict`'s outputs of one model."""
    id_logits = outputs[self.id_split]["logits"]
    return {name: self.evaluate(name, outputs[name], id_logits)
            for name in self.names}

  def reliability_of(self, out: Mapping[str, np.ndarray]
                     ) -> dict[str, list[float]]:
    """Reliability-diagram data (`metrics.reliability`, `ece_bins` bins)."""
    return {k: v.tolist() for k, v in metrics_lib.reliability(
        out["logits"], out["label"], num_bins=self.ece_bins).items()}

  def reliability(self, outputs: Mapping[str, Mapping[str, np.ndarray]]
                  ) -> dict[str, dict[str, list[float]]]:
    """`reliability_of` every covariate shift and the ID split."""
    return {name: self.reliability_of(outputs[name]) for name in self.names
            if self.kinds[name] != "semantic"}

  def protocol(self, name: str, num_examples: int) -> dict[str, Any]:
    """What `name`'s numbers were computed on (shared by its rows)."""
    shift = self.shift(name)
    p: dict[str, Any] = {"examples": num_examples,
                         "description": self.descriptions[name]}
    if shift is None:
      p.update(split=self.id_split, kind="id")
      return p
    p.update({k: v for k, v in shift.protocol().items()
              if k not in ("name", "description", "needs")})
    if shift.source == "causal_shapes":
      p["dataset_seed"] = getattr(self.dataset, "seed", None)
    if shift.source == "corruption":
      p.update(images=f"ID split {self.id_split!r}",
               corruption_seed=self.corruption_seed,
               severity_parameters=corruptions.SEVERITY_PARAMS[
                   shift.corruption][shift.severity - 1],
               randomness="example i draws from fold_in(fold_in(PRNGKey("
                          "corruption_seed), crc32(name)), i); the same "
                          "draws at every severity")
    if name in self._masks:
      p.update(class_subset_size=int(self._masks[name].sum()),
               logits="classes outside the subset set to -inf")
    return p

  def rows(self, results: Mapping[str, Mapping[str, float]]
           ) -> list[dict[str, Any]]:
    """One row per (name, metric) of `metrics`' results: shift, kind,
    metric, value and protocol (counts are in the protocol, not rows)."""
    num_id = int(results[self.id_split]["num_examples"])
    rows = []
    for name in self.names:
      base = self.protocol(name, int(results[name]["num_examples"]))
      for metric, value in results[name].items():
        if metric.startswith("num_"):
          continue  # counts are in every row's protocol
        p = dict(base)
        if metric == "ece":
          p.update(ece_bins=self.ece_bins, binning=ECE_BINNING)
        elif metric in METRIC_PROTOCOLS:
          p.update(METRIC_PROTOCOLS[metric])
        else:
          what = next(m for m in DETECTION_PROTOCOLS
                      if metric.startswith(m + "_"))
          score = metric[len(what) + 1:]
          p.update(score=score, score_definition=SCORE_PROTOCOLS[score],
                   metric_definition=DETECTION_PROTOCOLS[what],
                   positive=f"in-distribution ({self.id_split!r})",
                   id_examples=num_id)
          if score == "energy":
            p["temperature"] = self.temperature
        rows.append({"shift": name, "kind": self.kinds[name],
                     "metric": metric, "value": float(value), "protocol": p})
    return rows

  # The evaluator protocol ----------------------------------------------------

  def run(self, params: Any) -> dict[str, dict[str, float]]:
    """`{name: {metric: value}}` for the ID split and every shift."""
    return self.metrics(self.predict(params))

  def report(self, params: Any, predict_fn: Callable[..., Any] | None = None
             ) -> dict[str, Any]:
    """`results` (as `run`), `rows`, `reliability`, `outputs` and `skipped`."""
    outputs = self.predict(params, predict_fn)
    results = self.metrics(outputs)
    return {"results": results, "rows": self.rows(results),
            "reliability": self.reliability(outputs), "outputs": outputs,
            "skipped": dict(self.skipped)}
