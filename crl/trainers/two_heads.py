"""The two-heads study: penalty sweep, probes, explicit two heads, baselines.

Reproduces the central findings of "Are Two Heads the Same as One?" on one
dataset with a binary target and a binary protected attribute:

1. Penalty sweep. For every lambda in `config.study.lambdas` and every seed
   in `config.study.seeds`, `config.model` is trained under the parity
   penalty (`crl.trainers.fairness.FairClassificationTask`) in its own workdir
   `WORKDIR/lambda_<v>/` (`.../seed_<s>/` with several seeds), through
   `crl.trainers.runs.train_or_reuse`: a killed study run again resumes the
   unfinished run and restores the finished ones. lambda = 0 is the
   unconstrained model.
2. Probes. Each trained network is frozen; a linear probe on its
   penultimate features predicts the protected attribute on the test split:
   fitted on the training split with its regularisation chosen on a held-out
   quarter (`probe_train`, the public code's probe), the same on the
   validation split (`probe_validation`), and on validation with C = 1
   (`probe_accuracy`). Probe accuracy against the model's |DDP| per lambda,
   with 95% t-intervals over seeds, and the test features' spectrum
   (effective rank, total variance: do features collapse at high lambda?).
3. Explicit two heads. `crl.models.two_heads.TwoHeads` around the same
   backbone, trained with `(1 - w) CE(y) + w CE(s)`
   (`crl.trainers.fairness.TwoHeadsTask`, `WORKDIR/two_heads/`); for every
   `eps` in `config.study.eps` the merge `1[z1 + b z2 + c > 0]` of best
   validation accuracy with validation |DDP| <= eps
   (`crl.models.two_heads.merge_search`), reported on test and exported as a
   single linear head (checked against the merged rule).
   With `config.study.select_every_steps > 0` every training (penalised or
   two-headed) keeps the parameters of its best validation average
   precision, checked every that many steps (`crl.trainers.model_selection`;
   the public code checks every epoch).
4. Baselines: the unconstrained model; group-specific thresholds on its
   margins (needs the attribute at prediction time), searched on validation
   for every eps.

Writes `WORKDIR/results.json` (`results` holds the test row of every
method; `penalty_sweep`, `two_heads`, `group_thresholds` all details;
`summary` the numbers to quote) and two plots, `probe_vs_ddp.png` and
`frontier.png` (`crl.reports.fairness_plots`).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from crl import config_lib
from crl import registry
from crl import runtime
from crl import train
from crl import workdir as workdir_lib
from crl.data import fair_tabular
from crl.evaluators import common
from crl.evaluators import fairness as fm
from crl.evaluators import probes
from crl.models import two_heads as two_heads_lib
from crl.trainers import classification
from crl.trainers import fairness
from crl.trainers import model_selection
from crl.trainers import runs
from crl.trainers import two_heads_summary as summary_lib

_ROW_KEYS = ("accuracy", "average_precision", "ddp", "abs_ddp",
             "dp_difference", "dp_ratio", "eo_difference",
             "eo_difference_mean")


def study_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The default `config.study` section."""
  c = ml_collections.ConfigDict(dict(
      lambdas=(0.0, 1.0, 5.0, 10.0, 20.0, 50.0),
      seeds=(0,),
      eps=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 1.0),
      merge_grid_size=41, merge_rounds=4, merge_b_range=4.0,
      threshold_candidates=1024, plots=True, select_every_steps=0))
  c.update(overrides)
  return c


def _sub_config(config: ml_collections.ConfigDict, seed: int,
                penalty_weight: float,
                two_heads: bool) -> ml_collections.ConfigDict:
  """A self-contained config of one training of the study."""
  c = copy.deepcopy(config)
  c.unlock()
  c.seed = int(seed)
  c.fairness.penalty_weight = float(penalty_weight)
  c.trainer = "fair_classification"
  if two_heads:
    backbone = {k: v for k, v in config_lib.to_plain(config.model).items()
                if k not in ("name", "num_classes")}
    c.model = config_lib.component_config(
        registry.MODELS, "two_heads", backbone=config.model.name,
        backbone_kwargs=backbone)
  del c["study"]
  c.lock()
  return c


def _name(value: float) -> str:
  return f"{value:g}"


def _workdir(root: str, what: str, seed: int, seeds: tuple[int, ...]) -> str:
  path = os.path.join(root, what)
  return path if len(seeds) == 1 else os.path.join(path, f"seed_{seed}")


def _row(margin, label, group) -> dict[str, float]:
  full = fm.fairness_metrics(margin, label, group)
  return {k: float(full[k]) for k in _ROW_KEYS if k in full}


def _train(config, workdir, stop_at, shared: runs.Shared,
           select_every_steps: int = 0):
  """One training of the study (a finished one is reused,
  `runs.train_or_reuse`); with `select_every_steps`, its parameters are
  those of the best validation average precision
  (`crl.trainers.model_selection`)."""
  task = fairness.make_task(config, shared)
  if select_every_steps:
    return task, model_selection.train_and_select(
        config, workdir, task, select_every_steps, stop_at)
  return task, runs.train_or_reuse(config, workdir, task, stop_at,
                                   evaluated=True)


def _selected(out: dict[str, Any]) -> dict[str, Any]:
  return ({"selected_step": out["selected_step"],
           "selection_checks": out["checks"]}
          if "selected_step" in out else {})


def _outputs(task, params, split: str) -> dict[str, np.ndarray]:
  """Logits and features (and attribute logits) of one pass over `split`."""
  return common.collect(task.pipeline, task.heads_fn, params, split, fm.KEYS)


def _probes(task, params, val, test, seed: int) -> dict[str, Any]:
  """The attribute probes on the frozen network, scored on test: fitted on
  validation with C = 1 ('probe_accuracy', crl's earlier probe), and with C
  swept on a held-out quarter of the training-split features
  ('probe_train', the public code's probe) and of the validation features
  ('probe_validation'); plus the test features' spectrum."""
  train_split = _outputs(task, params, fair_tabular.TRAIN_SAMPLE)
  return {
      "probe_accuracy": fm.probe_accuracy(val["features"], val["group"],
                                          test["features"], test["group"]),
      "probe_train": probes.probe_sweep(
          train_split["features"], train_split["group"], test["features"],
          test["group"], seed=seed),
      "probe_validation": probes.probe_sweep(
          val["features"], val["group"], test["features"], test["group"],
          seed=seed),
      "probe_majority": fm.majority_rate(test["group"]),
      "features_test": probes.feature_spectrum(test["features"]),
  }


def _penalty_run(task, params, lam: float, seed: int) -> dict[str, Any]:
  val = _outputs(task, params, "validation")
  test = _outputs(task, params, "test")
  zv, zt = fm.binary_margin(val["logits"]), fm.binary_margin(test["logits"])
  return {
      "lambda": lam, "seed": seed,
      "validation": _row(zv, val["label"], val["group"]),
      "test": _row(zt, test["label"], test["group"]),
      **_probes(task, params, val, test, seed),
      "_margins": {"validation": (zv, val["label"], val["group"]),
                   "test": (zt, test["label"], test["group"])},
  }


def _group_thresholds(run: dict[str, Any], eps_grid, candidates: int
                      ) -> list[dict[str, Any]]:
  zv, yv, sv = run["_margins"]["validation"]
  zt, yt, st = run["_margins"]["test"]
  out = []
  for eps in eps_grid:
    found = fm.group_threshold_search(zv, yv, sv, eps, candidates)
    if found is None:
      continue
    t = found["thresholds"]
    out.append({
        "eps": eps, "seed": run["seed"], "thresholds": t,
        "validation": _row(fm.apply_group_thresholds(zv, sv, t), yv, sv),
        "test": _row(fm.apply_group_thresholds(zt, st, t), yt, st)})
  return out


def _two_heads_run(task, params, study, seed: int) -> dict[str, Any]:
  val = _outputs(task, params, "validation")
  test = _outputs(task, params, "test")
  z1v, z2v = (fm.binary_margin(val["logits"]),
              fm.binary_margin(val["group_logits"]))
  z1t, z2t = (fm.binary_margin(test["logits"]),
              fm.binary_margin(test["group_logits"]))
  frontier = []
  for eps in study.eps:
    found = two_heads_lib.merge_search(
        z1v, z2v, val["label"], val["group"], eps, study.merge_grid_size,
        study.merge_rounds, study.merge_b_range)
    if found is None:
      continue
    b, c = found["b"], found["c"]
    frontier.append({
        "eps": eps, "seed": seed, "b": b, "c": c,
        "validation": _row(z1v + b * z2v + c, val["label"], val["group"]),
        "test": _row(z1t + b * z2t + c, test["label"], test["group"])})
  group_pred = np.argmax(test["group_logits"], -1)
  return {
      "seed": seed, "frontier": frontier,
      "unmerged_test": _row(z1t, test["label"], test["group"]),
      "group_head_accuracy": float(np.mean(group_pred == test["group"])),
      **_probes(task, params, val, test, seed),
      "export_check": _export_check(task, params, frontier, z1t, z2t),
  }


def _export_check(task, params, frontier, z1t, z2t) -> dict[str, Any]:
  """Runs the exported single-head backbone on test; compares margins."""
  if not frontier:
    return {}
  point = min(frontier, key=lambda p: p["eps"])
  model = two_heads_lib.backbone_model(task.model)
  exported = two_heads_lib.export_params(params, point["b"], point["c"])
  fn = fairness.model_functions(model, task.input_key, task.pipeline.sharding,
                                task.config.seed, task.shared)["predict"]
  out = common.collect(task.pipeline, fn, exported, "test", fm.KEYS)
  single = fm.binary_margin(out["output"])
  merged = z1t + point["b"] * z2t + point["c"]
  return {"eps": point["eps"],
          "max_abs_margin_difference": float(np.max(np.abs(single - merged))),
          "decisions_agree": float(np.mean((single > 0) == (merged > 0)))}


def check_study_config(config: ml_collections.ConfigDict) -> None:
  """One-line `ConfigError` for an impossible `config.study`, before
  anything is trained."""
  study = config.get("study")
  if study is None:
    raise config_lib.ConfigError("The two-heads trainer needs config.study "
                                 "(see crl.trainers.two_heads.study_config).")
  if not study.lambdas or any(v < 0 for v in study.lambdas):
    raise config_lib.ConfigError(f"config.study.lambdas must be non-negative "
                                 f"values, got {study.lambdas!r}.")
  if not study.seeds:
    raise config_lib.ConfigError("config.study.seeds must not be empty.")
  if not study.eps or any(not 0 <= e <= 1 for e in study.eps):
    raise config_lib.ConfigError(f"config.study.eps must be values in [0, 1], "
                                 f"got {study.eps!r}.")
  if not (isinstance(study.select_every_steps, int) and
          0 <= study.select_every_steps <= config.num_steps):
    raise config_lib.ConfigError(
        f"config.study.select_every_steps must be an integer in [0, "
        f"num_steps={config.num_steps}] (0: no model selection), got "
        f"{study.select_every_steps!r}.")
  if config.model.name == "two_heads":
    raise config_lib.ConfigError(
        "config.model is the backbone of the study (e.g. 'mlp'); the study "
        "wraps it in 'two_heads' itself.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at: int | None = None) -> dict[str, Any]:
  """Runs the study (`config.trainer = "two_heads"`); see the module doc.

  Args:
    config: the study config (`config.study` plus a fairness config).
    workdir: the study directory; finished trainings there are reused.
    stop_at: passed to every training (stop there with a checkpoint); the
      study stops at the first training that stops early.

  Returns:
    The dict written to `workdir/results.json`, or `{"preempted": True,
    "workdir": ...}` when a training stopped early.
  """
  train.check_config(config)
  classification.check_evals(config)
  check_study_config(config)
  dataset = classification.build_dataset(config)
  fairness.check_fairness_config(config, dataset)
  if int(getattr(dataset, "num_groups", 0)) != 2:
    raise config_lib.ConfigError(
        "The two-heads study (merge search, group thresholds, signed DDP) "
        f"needs a binary protected attribute; config.data has "
        f"{getattr(dataset, 'num_groups', None)} groups.")
  runtime.setup_fast_compile(config)
  study = config.study
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    workdir_lib.write_json_atomic(os.path.join(workdir, "config.json"),
                                  config_lib.to_plain(config), sort_keys=True)
  shared = runs.Shared()  # one input pipeline, one compile per model
  seeds = tuple(int(s) for s in study.seeds)
  lambdas = tuple(float(v) for v in study.lambdas)

  sweep, heads, thresholds = [], [], []
  for seed in seeds:
    for lam in lambdas:
      sub = _sub_config(config, seed, lam, two_heads=False)
      path = _workdir(workdir, f"lambda_{_name(lam)}", seed, seeds)
      logging.info("Study: lambda %g, seed %d in %s.", lam, seed, path)
      task, out = _train(sub, path, stop_at, shared,
                         study.select_every_steps)
      if out.get("preempted"):
        return {"preempted": True, "workdir": path}
      run = {**_penalty_run(task, out["params"], lam, seed), **_selected(out)}
      sweep.append(run)
      if lam == 0:
        thresholds += _group_thresholds(run, study.eps,
                                        study.threshold_candidates)
    sub = _sub_config(config, seed, 0.0, two_heads=True)
    path = _workdir(workdir, "two_heads", seed, seeds)
    logging.info("Study: two heads, seed %d in %s.", seed, path)
    task, out = _train(sub, path, stop_at, shared, study.select_every_steps)
    if out.get("preempted"):
      return {"preempted": True, "workdir": path}
    heads.append({**_two_heads_run(task, out["params"], study, seed),
                  **_selected(out)})

  for run in sweep:
    del run["_margins"]
  summary = summary_lib.summarize(sweep, heads, thresholds, lambdas)
  results = {}
  for row in summary["per_lambda"]:
    results[f"penalty_lambda_{_name(row['lambda'])}"] = {
        k: v for k, v in row.items() if k != "lambda"}
  merged = [p for h in heads for p in h["frontier"]]
  for point in summary_lib.mean_frontier(merged):
    results[f"two_heads_eps_{_name(point['eps'])}"] = point["test"]
  for point in summary_lib.mean_frontier(thresholds):
    results[f"group_thresholds_eps_{_name(point['eps'])}"] = point["test"]
  out = {
      "dataset": config.data.name, "model": config.model.name,
      "data": config_lib.to_plain(config.data),
      "penalty": config.fairness.penalty,
      "conventions": fm.CONVENTIONS,
      "results": results, "summary": summary, "penalty_sweep": sweep,
      "two_heads": heads, "group_thresholds": thresholds,
  }
  if jax.process_index() == 0:
    if study.plots:
      from crl.reports import fairness_plots  # pylint: disable=g-import-not-at-top
      out["plots"] = fairness_plots.write_plots(out, workdir)
    workdir_lib.write_json_atomic(os.path.join(workdir, "results.json"), out)
    print(summary_lib.format_summary(summary), flush=True)
  return out
