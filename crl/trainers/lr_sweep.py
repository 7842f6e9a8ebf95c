"""Models compared at equal tuning effort: one learning-rate sweep each.

`config.trainer = "lr_sweep"` (configs/sweep.py):

1. Sweep. Every candidate (`config.candidates.<name>`: a classification
   config without `data`, i.e. model, optimizer, batch size, steps and
   optionally `init_from`) is trained once per base learning rate of
   `config.sweep.grid` (the same log grid for every candidate), with seed
   `config.sweep.seed`, on the training stream of `config.data`, and scored
   by accuracy on the dataset's 'validation' split (`validation_examples`
   examples of a stream disjoint from 'train' and 'test', see
   `crl.data.causal_shapes`). The best learning rate is chosen (a tie goes to
   the smaller one). `WORKDIR/<candidate>/sweep.json`:
   `{'grid', 'validation_accuracy' (one per grid value), 'chosen_learning_rate',
   'seed', 'validation_examples', 'num_steps'}`.
2. Seeds. Every candidate is trained again at its chosen learning rate with
   each seed of `config.seeds` (the sweep's own seed reuses its run) and
   evaluated on `config.eval_splits` of
   `config.data` (its ID 'test' split and, for `multi_domain`, the other
   domains). `WORKDIR/results.json`: per candidate the chosen learning rate,
   and per split the accuracies per seed with their mean and 95% Student-t
   interval (`two_heads_summary.interval`); rewritten after each candidate
   (`complete`: whether every candidate is in).
3. Differences. For each pair `"A-B"` of `config.contrasts`, per split the
   difference of the seeds' mean accuracies A - B with its 95% Welch
   interval (`welch_interval`), in `results.json`'s `differences`.

Every run is a normal run directory (`WORKDIR/<candidate>/lr_<i>/`,
`WORKDIR/<candidate>/seed_<s>/`); a finished one is reused on a rerun
(`ood_suite.train_or_load`), so a killed sweep continues where it stopped.
With one candidate and `config.seeds = ()` this is the plain sweep.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crl import config_lib
from crl import registry
from crl import runtime
from crl import workdir as workdir_lib
from crl.evaluators import classification
from crl.trainers import ood_suite
from crl.trainers import two_heads_summary

SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.json"


def log_grid(low: float, high: float, num: int) -> list[float]:
  """`num` base learning rates evenly spaced in log between `low` and `high`
  (rounded to 3 significant digits, so that they read as typed)."""
  if num < 1 or not 0. < low <= high:
    raise config_lib.ConfigError(
        f"A learning-rate grid needs num >= 1 and 0 < low <= high, got "
        f"low={low}, high={high}, num={num}.")
  return [float(f"{v:.3g}") for v in np.geomspace(low, high, num)]


def check(config: ml_collections.ConfigDict) -> list[str]:
  """Every config error of the sweep, one line each, before any write.

  Returns:
    The candidates' names.
  """
  names = list(config.get("candidates", {}) or {})
  if not names:
    raise config_lib.ConfigError("config.candidates is empty; name at least "
                                 "one model config to sweep.")
  for pair in config.get("contrasts", ()) or ():
    if len(pair.split("-")) != 2 or any(p not in names
                                        for p in pair.split("-")):
      raise config_lib.ConfigError(
          f"config.contrasts has {pair!r}; expected 'A-B' with A and B "
          f"among the candidates ({', '.join(names)}).")
  grid = list(config.sweep.grid)
  if not grid or any(not isinstance(v, (int, float)) or v <= 0
                     for v in grid):
    raise config_lib.ConfigError(
        f"config.sweep.grid={grid!r}; expected a non-empty list of positive "
        "base learning rates.")
  if int(config.sweep.validation_examples) < 1:
    raise config_lib.ConfigError("config.sweep.validation_examples must be "
                                 ">= 1.")
  for name in names:
    if "data" in config.candidates[name]:
      raise config_lib.ConfigError(
          f"config.candidates.{name} has its own `data`; every candidate "
          "trains on config.data (set it there).")
    init_from(config, name)
  dataset = config_lib.build(registry.DATASETS, config.data)
  if not hasattr(dataset, "encode"):
    raise config_lib.ConfigError(
        f"config.data.name={config.data.name!r} has no procedural "
        "'validation' split; the sweep needs one (e.g. multi_domain, "
        "causal_shapes).")
  splits = config.eval_splits
  known = dataset.eval_splits()
  wanted = list(known) if splits == "all" else [
      s.strip() for s in str(splits).split(",") if s.strip()]
  unknown = [s for s in wanted if s not in known]
  if unknown:
    raise config_lib.ConfigError(
        f"config.eval_splits names unknown split(s) {', '.join(unknown)}; "
        f"known: {', '.join(known)}.")
  return names


def run_config(config: ml_collections.ConfigDict, name: str,
               learning_rate: float, seed: int) -> ml_collections.ConfigDict:
  """Candidate `name` as trained: the suite's member config (shared data,
  final evaluation on 'test') at this base learning rate and seed."""
  suite = ml_collections.ConfigDict({
      "members": {name: config_lib.to_plain(config.candidates[name])},
      **{k: config_lib.to_plain(config[k]) for k in ood_suite.SHARED_KEYS}})
  member = ood_suite.member_config(suite, name)
  member.init_from = init_from(config, name)
  member.optimizer.base_learning_rate = float(learning_rate)
  member.seed = int(seed)
  return member


def init_from(config: ml_collections.ConfigDict, name: str) -> str:
  """Candidate `name`'s `init_from`, with `{pretrained_dir}` replaced by
  `config.pretrained_dir` ('' for a candidate trained from scratch)."""
  path = str(config.candidates[name].get("init_from", "") or "")
  if "{pretrained_dir}" in path:
    if not config.get("pretrained_dir"):
      raise config_lib.ConfigError(
          f"config.candidates.{name} starts from a pretrained run; pass "
          "--config.pretrained_dir=DIR (the folder holding the pretrained "
          "runs, one per model: DIR/nac, DIR/perceiver, DIR/vit).")
    path = path.replace("{pretrained_dir}", str(config.pretrained_dir))
  if path and not os.path.exists(path):
    raise config_lib.ConfigError(
        f"config.candidates.{name}.init_from={path!r} does not exist; "
        "expected a finished run directory (configs/pretrain.py) or a "
        "weights file.")
  return path


def validation_accuracy(task: Any, params: Any, num_examples: int) -> float:
  """Top-1 accuracy of `params` on the first `num_examples` examples of
  `task.dataset`'s 'validation' stream (batches of `eval_batch_size`)."""
  dataset = task.dataset
  code = jnp.asarray(dataset.encode("validation", None))
  batch = int(task.config.eval_batch_size)
  correct = 0
  for start in range(0, num_examples, batch):
    indices = jnp.arange(start, min(start + batch, num_examples),
                         dtype=jnp.int32)
    examples = _sample(dataset, code, indices)
    logits = task.predict_fn(params, {task.input_key: examples["image"]})
    correct += int(np.sum(np.asarray(jnp.argmax(logits, -1)) ==
                          np.asarray(examples["label"])))
  return correct / num_examples


def _sample(dataset, code, indices):
  out = dataset.sample_encoded(code, indices)
  return {"image": out["image"], "label": out["label"]}


_sample = jax.jit(_sample, static_argnums=(0,))


def _train(member: ml_collections.ConfigDict, member_dir: str) -> tuple[
    Any, Any]:
  task = ood_suite.AugmentedClassificationTask(member)
  params, _, reused = ood_suite.train_or_load(member, member_dir, task)
  logging.info("%s: %s.", member_dir, "reused" if reused else "trained")
  return task, params


def sweep(config: ml_collections.ConfigDict, workdir: str,
          name: str) -> dict[str, Any]:
  """Sweeps candidate `name` over `config.sweep.grid`; writes and returns
  `WORKDIR/<name>/sweep.json` (see the module docstring)."""
  grid = [float(v) for v in config.sweep.grid]
  seed = int(config.sweep.seed)
  num = int(config.sweep.validation_examples)
  accuracies = []
  for i, lr in enumerate(grid):
    member = run_config(config, name, lr, seed)
    task, params = _train(member, os.path.join(workdir, name, f"lr_{i}"))
    accuracies.append(validation_accuracy(task, params, num))
    logging.info("Sweep %s: base lr %g, validation accuracy %.4f.", name, lr,
                 accuracies[-1])
  best = int(np.argmax(accuracies))  # first maximum: the smaller lr
  record = {"grid": grid, "validation_accuracy": accuracies,
            "chosen_learning_rate": grid[best], "seed": seed,
            "validation_examples": num,
            "num_steps": int(config.candidates[name].num_steps)}
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, name), exist_ok=True)
    workdir_lib.write_json_atomic(
        os.path.join(workdir, name, SWEEP_FILE), record)
  return record


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Sweeps every candidate, trains its seeds at the chosen learning rate,
  evaluates them; writes and returns `WORKDIR/results.json`."""
  names = check(config)
  runtime.setup_fast_compile(config)
  runtime.setup_compile_cache(config)
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lib.WorkdirLock(workdir)
  lock.acquire()
  try:
    return _compare(config, workdir, names)
  finally:
    lock.release()


def welch_interval(a: list[float], b: list[float],
                   level: float = 0.95) -> dict[str, Any]:
  """Difference of means mean(a) - mean(b) with its Welch (unequal-variance)
  Student-t interval: half width t(df) * se, se = sqrt(var_a/n_a +
  var_b/n_b), Welch-Satterthwaite df (half width 0 when both spreads are 0).
  Needs at least two values on each side."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 2 or len(b) < 2:
    raise ValueError(f"A Welch interval needs >= 2 values per side, got "
                     f"{len(a)} and {len(b)}.")
  va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
  diff = float(a.mean() - b.mean())
  half = 0.
  if va + vb > 0:
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df) * np.sqrt(va + vb))
  return {"difference": diff, "half_width": half, "low": diff - half,
          "high": diff + half, "level": level}


def differences(config: ml_collections.ConfigDict,
                candidates: dict[str, Any]) -> dict[str, Any]:
  """`{"A-B": {split: welch_interval(A's seeds, B's seeds)}}` for each pair of
  `config.contrasts` whose two candidates are in `candidates`, plus
  `OOD_MEAN`: the same for each seed's mean over the splits other than
  'test' (when there are two or more)."""
  out = {}
  for pair in config.get("contrasts", ()) or ():
    a, b = pair.split("-")
    if a in candidates and b in candidates and len(config.seeds) > 1:
      acc_a, acc_b = (_with_ood_mean(candidates[k]["accuracy"])
                      for k in (a, b))
      out[pair] = {s: welch_interval(acc_a[s], acc_b[s])
                   for s in acc_a if s in acc_b}
  return out


OOD_MEAN = "ood_mean"


def _with_ood_mean(accuracy: dict[str, Any]) -> dict[str, list[float]]:
  """Per split the seeds' accuracies, and `OOD_MEAN` per seed."""
  out = {s: list(v["per_seed"]) for s, v in accuracy.items()}
  ood = [v for s, v in out.items() if s != "test"]
  if len(ood) > 1:
    out[OOD_MEAN] = [float(x) for x in np.mean(np.asarray(ood), axis=0)]
  return out


def _compare(config, workdir, names):
  out: dict[str, Any] = {"data": config_lib.to_plain(config.data),
                         "grid": [float(v) for v in config.sweep.grid],
                         "seeds": [int(s) for s in config.seeds],
                         "candidates": {}}
  for name in names:
    record = sweep(config, workdir, name)
    per_split: dict[str, list[float]] = {}
    for seed in config.seeds:
      member = run_config(config, name, record["chosen_learning_rate"], seed)
      run_dir = (f"lr_{record['grid'].index(record['chosen_learning_rate'])}"
                 if int(seed) == record["seed"] else f"seed_{seed}")
      task, params = _train(member, os.path.join(workdir, name, run_dir))
      evaluator = classification.ClassificationEvaluator(
          pipeline=task.pipeline, predict_fn=task.predict_fn,
          num_classes=task.num_classes, splits=config.eval_splits)
      for split, metrics in evaluator.run(params).items():
        per_split.setdefault(split, []).append(float(metrics["accuracy"]))
    out["candidates"][name] = {
        "sweep": record,
        "accuracy": {s: {"per_seed": v, **two_heads_summary.interval(v)}
                     for s, v in per_split.items()}}
    out["differences"] = differences(config, out["candidates"])
    out["complete"] = len(out["candidates"]) == len(names)
    if jax.process_index() == 0:  # after each candidate: a partial table
      workdir_lib.write_json_atomic(os.path.join(workdir, RESULTS_FILE), out)
  if jax.process_index() == 0:
    print(format_table(out), flush=True)
  return out


def format_table(results: dict[str, Any]) -> str:
  """A plain-text table: candidate, chosen lr, mean accuracy +- 95% half
  width per split."""
  rows = []
  splits: list[str] = []
  for c in results["candidates"].values():
    splits += [s for s in c["accuracy"] if s not in splits]
  rows.append(["candidate", "lr"] + splits)
  for name, c in results["candidates"].items():
    rows.append([name, f"{c['sweep']['chosen_learning_rate']:g}"] + [
        f"{c['accuracy'][s]['mean']:.4f}+-{c['accuracy'][s]['half_width']:.4f}"
        if s in c["accuracy"] else "-" for s in splits])
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths))
                   for r in rows)


def load_results(workdir: str) -> dict[str, Any]:
  """`WORKDIR/results.json` of a finished comparison."""
  with open(os.path.join(workdir, RESULTS_FILE)) as f:
    return json.load(f)
