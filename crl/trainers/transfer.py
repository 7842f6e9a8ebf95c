"""The transfer-learning study: pretrain, fine-tune a population, analyse it.

`config.trainer = "transfer"` (configs/transfer.py):

1. Pretraining: for each architecture with pretrained members and no
   `config.init_files.<arch>` (a weight file or run directory to start
   from instead, see `crl.pretrained`), `config.pretrain.<arch>` (a classification config on `pretrain_source`)
   is trained once into `WORKDIR/pretrain/<arch>`, a normal run directory;
   a finished one (same config) is reused on a rerun.
2. Fine-tuning: members = architecture x pretrained (`init_from` that run
   directory, head re-created) or scratch x strategy x regime x
   augmentation x seed, all on `config.data` (one target domain), trained
   and evaluated by the OOD suite (`crl.trainers.ood_suite`: the population
   engine for members sharing an architecture, then the ID test split and
   every selected shift). Strategies (`STRATEGIES`): `full` (every
   parameter trained) and `head` (linear probe: only the classifier head,
   `population.HEAD_PARAMS`), learning rate = the architecture's times
   `config.fine_tune.lr_scale[strategy]`. Regimes (`REGIMES`): `all` (the
   target's full training stream).
3. Per member: adversarial accuracy on the ID test split
   (`crl.evaluators.adversarial`, `config.adversarial`) and the mean
   accuracy over the evaluated corruptions; then the analyses of
   `crl.evaluators.transfer_analysis` over the population: `proxies` (each
   ID quantity against the OOD accuracy of every pair and every shift kind)
   and `factors` (per shift kind other than the ID split, OLS of probit OOD
   accuracy on the factors without and with probit ID accuracy).

Outputs: the suite's files, with `results.csv` extended by one column per
factor (`FACTORS`) and the adversarial and mean-corruption rows, and
`results.json` with those rows (each with its protocol), `members` (their
factors), `proxies` and `factors`. Every config error (unknown strategy,
regime, architecture, target domain) is one line (exit 2) before anything
is written.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from crl import config_lib
from crl import train
from crl.reports import ood_report
from crl.reports import transfer_plots
from crl.trainers import runs
from crl.data import multi_domain
from crl.evaluators import adversarial
from crl.evaluators import transfer_analysis
from crl.trainers import classification
from crl.trainers import ood_suite as suite

STRATEGIES = {"full": "all", "head": "head"}   # strategy -> config.trainable
REGIMES = ("all",)
FACTORS = ("architecture", "pretrained", "strategy", "regime", "augmentation",
           "seed")
QUANTITIES = ("id_accuracy", "nll", "ece", "brier", "mean_corruption_accuracy",
              "adversarial_accuracy")
_SUITE_KEYS = ("data", "eval_batch_size", "xla_fast_compile", "shifts",
               "severities", "ece_bins", "scores", "corruption_seed", "plots",
               "population", "reliability_shifts")


def _error(message: str) -> config_lib.ConfigError:
  return config_lib.ConfigError(message)


def check(config: ml_collections.ConfigDict) -> None:
  """Every config error of the study, one line each (before any write)."""
  g = config.grid
  archs = list(config.models)
  for name, known, what in (
      (g.architectures, archs, "architecture"),
      (g.strategies, list(STRATEGIES), "strategy"),
      (g.regimes, list(REGIMES), "regime"),
      (g.augmentations, list(config.augmentations), "augmentation")):
    bad = [n for n in name if n not in known]
    if bad or not name:
      raise _error(f"config.grid: unknown {what}(s) {bad or '(none given)'}"
                   f"; known: {', '.join(known)}.")
  for a in config.augmentations.values():
    bad = [op for op in a if op not in suite.AUGMENTATIONS]
    if bad:
      raise _error(f"config.augmentations: unknown operation(s) {bad}; "
                   f"known: {', '.join(suite.AUGMENTATIONS)}.")
  if config.data.name == "multi_domain" and (
      config.data.domain not in multi_domain.DOMAINS):
    raise _error(f"config.data.domain={config.data.domain!r} is not a domain"
                 f" of multi_domain; known: {', '.join(multi_domain.DOMAINS)}.")
  if any(g.pretrained):
    files = config.get("init_files") or {}
    missing = [a for a in g.architectures
               if a not in config.pretrain and not files.get(a)]
    if missing:
      raise _error(f"config.pretrain has no config for architecture(s) "
                   f"{missing}, needed by pretrained members.")
  scale = config.fine_tune.lr_scale
  for s in g.strategies:
    if s not in scale:
      raise _error(f"config.fine_tune.lr_scale has no entry for strategy "
                   f"{s!r}.")


def members(config: ml_collections.ConfigDict, workdir: str
            ) -> dict[str, tuple[ml_collections.ConfigDict, dict[str, str]]]:
  """`{name: (member config, factors)}` of the grid, in grid order."""
  g = config.grid
  out = {}
  for arch in g.architectures:
    for pre in g.pretrained:
      for strategy in g.strategies:
        for regime in g.regimes:
          for aug in g.augmentations:
            for seed in g.seeds:
              c = config.models[arch].copy_and_resolve_references()
              c.seed = int(seed)
              c.num_steps = int(config.fine_tune.num_steps)
              c.optimizer.warmup_steps = max(c.num_steps // 10, 1)
              c.optimizer.base_learning_rate *= float(
                  config.fine_tune.lr_scale[strategy])
              c.log_every_steps = min(c.log_every_steps, c.num_steps)
              c.checkpoint.every_steps = c.num_steps
              with c.unlocked():
                c.trainable = STRATEGIES[strategy]
              c.augment = tuple(config.augmentations[aug])
              c.init_from = _init_from(config, workdir, arch) if pre else ""
              name = (f"{arch}_{'pt' if pre else 'scratch'}_{strategy}_"
                      f"{regime}_{aug}_s{seed}")
              out[name] = (c, {
                  "architecture": arch, "pretrained": str(bool(pre)).lower(),
                  "strategy": strategy, "regime": regime,
                  "augmentation": aug, "seed": str(seed)})
  return out


def _init_from(config: ml_collections.ConfigDict, workdir: str,
               arch: str) -> str:
  """`config.init_files.<arch>` (a weight file or run dir) if set, else the
  study's own pretraining run `WORKDIR/pretrain/<arch>`."""
  given = (config.get("init_files") or {}).get(arch)
  return str(given) if given else os.path.abspath(
      os.path.join(workdir, "pretrain", arch))


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or reuses) `WORKDIR/pretrain/<arch>`; `{arch: info}`."""
  info = {}
  if not any(config.grid.pretrained):
    return info
  for arch in config.grid.architectures:
    if (config.get("init_files") or {}).get(arch):
      info[arch] = {"init_from": config.init_files[arch]}
      continue
    c = config.pretrain[arch]
    run_dir = os.path.join(workdir, "pretrain", arch)
    step = suite.finished_step(c, run_dir)
    reused = step is not None and step >= c.num_steps
    if not reused:
      logging.info("Pretraining %s on %s into %s.", arch, c.data.name, run_dir)
      out = train.run(c, run_dir, classification.ClassificationTask(c))
      if out.get("preempted"):
        raise suite._Preempted(  # pylint: disable=protected-access
            f"Stopped while pretraining {arch} in {run_dir}; run the same "
            "command to continue.")
    info[arch] = {"workdir": os.path.abspath(run_dir), "reused": reused}
  return info


def suite_config(config: ml_collections.ConfigDict,
                 grid: dict[str, Any]) -> ml_collections.ConfigDict:
  """The OOD-suite config that fine-tunes and evaluates the members."""
  c = ml_collections.ConfigDict()
  c.trainer = "ood_suite"
  for key in _SUITE_KEYS:
    c[key] = config[key]
  c.checkpoint = None
  c.baseline = next(iter(grid))
  c.members = ml_collections.ConfigDict({n: m for n, (m, _) in grid.items()})
  return c


def adversarial_rows(config: ml_collections.ConfigDict, workdir: str,
                     names: list[str]) -> list[dict[str, Any]]:
  """Robust accuracy of each member on its ID test split."""
  a = config.adversarial
  attack = adversarial.Attack(name=a.attack, eps=float(a.eps),
                              steps=int(a.steps), loss=a.loss)
  rows = []
  for name in names:
    run = runs.load_run(os.path.join(workdir, "models", name))
    key = run.task.input_key

    def apply_fn(params, images, run=run, key=key):
      return run.task.predict_fn(params, {key: images})

    acc = adversarial.adversarial_accuracy(
        apply_fn, run.params, run.task.pipeline.eval_batches("test"),
        (attack,), jax.random.PRNGKey(int(a.seed)),
        max_examples=int(a.max_examples))
    for metric, value in acc.items():
      rows.append({"model": name, "shift": "test", "kind": "id",
                   "metric": metric, "value": value,
                   "protocol": {**attack.protocol(), "split": "test",
                                "max_examples": int(a.max_examples),
                                "seed": int(a.seed)}})
  return rows


def _metric(rows, model, shift, metric) -> float:
  for r in rows:
    if (r["model"], r["shift"], r["metric"]) == (model, shift, metric):
      return float("nan") if r["value"] is None else float(r["value"])
  raise KeyError(f"No {metric} of {model} on {shift}.")


def analyse(config: ml_collections.ConfigDict, rows: list[dict[str, Any]],
            factors: dict[str, dict[str, str]], adv_metric: str
            ) -> dict[str, Any]:
  """`{"proxies": ..., "factors": ...}` over the evaluated members."""
  names = [n for n in factors if any(r["model"] == n for r in rows)]
  pairs = {}
  for r in rows:
    if (r["model"] == names[0] and r["metric"] == "accuracy" and
        r["kind"] in ("interventional", "corruption", "domain", "natural")
        and r["shift"] != "mean_corruption"):
      pairs[r["shift"]] = r["kind"]
  corruptions = [s for s, k in pairs.items() if k == "corruption"]
  q = {"id_accuracy": [_metric(rows, n, "test", "accuracy") for n in names],
       "nll": [_metric(rows, n, "test", "nll") for n in names],
       "ece": [_metric(rows, n, "test", "ece") for n in names],
       "brier": [_metric(rows, n, "test", "brier") for n in names],
       "adversarial_accuracy": [_metric(rows, n, "test", adv_metric)
                                for n in names]}
  if corruptions:
    q["mean_corruption_accuracy"] = [
        _metric(rows, n, "mean_corruption", "accuracy") for n in names]
  ood = {s: (k, [_metric(rows, n, s, "accuracy") for n in names])
         for s, k in pairs.items()}
  boot = dict(n_boot=int(config.analysis.n_boot),
              seed=int(config.analysis.seed), level=float(config.analysis.level))
  proxies = transfer_analysis.proxy_analysis(q, ood, **boot)
  effects = {}
  by_kind: dict[str, list[np.ndarray]] = {}
  for _, (k, acc) in ood.items():
    by_kind.setdefault(k, []).append(np.asarray(acc))
  for k, accs in sorted(by_kind.items()):
    effects[k] = transfer_analysis.factor_effects(
        q["id_accuracy"], np.mean(accs, axis=0),
        {f: [factors[n][f] for n in names] for f in FACTORS if f != "seed"},
        level=float(config.analysis.level))
  return {"analysed_members": names, "pairs": pairs, "quantities": list(q),
          "proxies": proxies,
          "factors": effects, "bootstrap": boot}


def _write(workdir, rows, factors, out) -> None:
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(ood_report.CSV_COLUMNS + FACTORS)
    for r in rows:
      v = r["value"]
      w.writerow([r["model"], r["shift"], r["kind"], r["metric"],
                  "nan" if v is None or not math.isfinite(v) else repr(v)] +
                 [factors.get(r["model"], {}).get(f, "") for f in FACTORS])
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(ood_report._finite(out), f, indent=1)  # pylint: disable=protected-access


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """The study; returns the content of results.json."""
  check(config)
  grid = members(config, workdir)
  pre = pretrain(config, workdir)
  out = suite.train_and_evaluate(suite_config(config, grid), workdir)
  if out.get("preempted") or (config.population.get("num_tasks") or 0) > 0:
    return out  # a job array's task trains its share; the plain run reports
  factors = {n: f for n, (_, f) in grid.items()}
  evaluated = [n for n in grid if not out["members"][n].get("failed")]
  rows = list(out["rows"])
  adv = adversarial_rows(config, workdir, evaluated)
  rows += adv
  for n in evaluated:
    acc = [r["value"] for r in rows if r["model"] == n and
           r["kind"] == "corruption" and r["metric"] == "accuracy"]
    if acc:
      rows.append({"model": n, "shift": "mean_corruption",
                   "kind": "corruption", "metric": "accuracy",
                   "value": float(np.mean(acc)),
                   "protocol": {"definition": "mean accuracy over the "
                                f"{len(acc)} evaluated corruption shifts"}})
  out.update(rows=rows, study={"pretrain": pre, "factors": factors,
                               "strategies": STRATEGIES})
  out.update(analyse(config, rows, factors, adv[0]["metric"]))
  if jax.process_index() == 0:
    if config.get("plots", True):
      names = out["analysed_members"]
      by_kind: dict[str, list[list[float]]] = {}
      for pair, kind in out["pairs"].items():
        by_kind.setdefault(kind, []).append(
            [_metric(rows, n, pair, "accuracy") for n in names])
      paths = transfer_plots.write_all(
          os.path.join(workdir, "plots", "transfer"), out,
          [_metric(rows, n, "test", "accuracy") for n in names],
          {k: np.mean(v, axis=0) for k, v in by_kind.items()},
          {f: [factors[n][f] for n in names] for f in FACTORS})
      out["plots"] = list(out.get("plots", [])) + [
          os.path.relpath(p, workdir) for p in paths]
    _write(workdir, rows, factors, out)
  return out
