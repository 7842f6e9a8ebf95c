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
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from crl import config_lib
from crl import runtime
from crl import train
from crl.evaluators import adversarial
from crl.evaluators import transfer_analysis
from crl.reports import ood_report
from crl.reports import transfer_plots
from crl.trainers import classification
from crl.trainers import ood_suite as suite
from crl.trainers import transfer_grid

STRATEGIES = transfer_grid.STRATEGIES
REGIMES = transfer_grid.REGIMES
FACTORS = transfer_grid.FACTORS
QUANTITIES = ("id_accuracy", "nll", "ece", "brier", "mean_corruption_accuracy",
              "adversarial_accuracy")
_SUITE_KEYS = ("eval_batch_size", "xla_fast_compile", "shifts",
               "severities", "ece_bins", "scores", "corruption_seed", "plots",
               "population", "reliability_shifts")


def check(config: ml_collections.ConfigDict) -> None:
  """Every config error of the study, one line each (before any write)."""
  transfer_grid.check(config, suite.AUGMENTATIONS)


def members(config: ml_collections.ConfigDict, workdir: str
            ) -> dict[str, tuple[ml_collections.ConfigDict, dict[str, str]]]:
  """`{name: (member config, factors)}` (`transfer_grid.members`)."""
  return transfer_grid.members(config, workdir)


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


def suite_config(config: ml_collections.ConfigDict, target: str,
                 grid: dict[str, Any]) -> ml_collections.ConfigDict:
  """The OOD-suite config that fine-tunes and evaluates the members of one
  target domain (`config.data` with that domain)."""
  c = ml_collections.ConfigDict()
  c.trainer = "ood_suite"
  c.data = config.data.copy_and_resolve_references()
  c.data.domain = target
  for key in _SUITE_KEYS:
    c[key] = config[key]
  c.checkpoint = None
  names = [n for n, (_, f) in grid.items() if f["target"] == target]
  c.baseline = names[0]
  c.members = ml_collections.ConfigDict({n: grid[n][0] for n in names})
  return c


def target_dir(workdir: str, target: str) -> str:
  """The suite workdir of one target domain's members."""
  return os.path.join(workdir, "targets", target)


def adversarial_rows(config: ml_collections.ConfigDict, workdir: str,
                     names: list[str], grid: dict[str, Any]
                     ) -> list[dict[str, Any]]:
  """Robust accuracy of each member on its ID test split.

  The attack is compiled once per model (architecture and classes): the
  parameters are an argument of the jitted attack, so every member of an
  architecture, on every target, reuses one program.
  """
  a = config.adversarial
  attack = adversarial.Attack(name=a.attack, eps=float(a.eps),
                              steps=int(a.steps), loss=a.loss)
  protocol = {**attack.protocol(), "split": "test",
              "max_examples": int(a.max_examples), "seed": int(a.seed)}
  fns, tasks, rows = {}, {}, []
  suites = {}
  t0 = time.time()
  for name in names:
    target = grid[name][1]["target"]
    if target not in suites:
      suites[target] = suite_config(config, target, grid)
    member = suite.member_config(suites[target], name)
    model_key = json.dumps(config_lib.to_plain(member.model), sort_keys=True)
    if (target, model_key) not in tasks:
      tasks[(target, model_key)] = classification.ClassificationTask(member)
    task = tasks[(target, model_key)]
    params, _ = train.restore_trained(
        member, os.path.join(target_dir(workdir, target), "models", name),
        task)
    if model_key not in fns:
      key = task.input_key
      fns[model_key] = adversarial.make_attack(
          lambda p, x, t=task, k=key: t.predict_fn(p, {k: x}), attack)
    acc = adversarial.adversarial_accuracy(
        None, params, task.pipeline.eval_batches("test"), (attack,),
        jax.random.PRNGKey(int(a.seed)), max_examples=int(a.max_examples),
        attack_fns={attack: fns[model_key]})
    for metric, value in acc.items():
      rows.append({"model": name, "shift": "test", "kind": "id",
                   "metric": metric, "value": value, "protocol": protocol})
  logging.info("Adversarial accuracy of %d members in %.0fs (%d compiled "
               "attacks).", len(names), time.time() - t0, len(fns))
  return rows


def _metric(rows, model, shift, metric) -> float:
  for r in rows:
    if (r["model"], r["shift"], r["metric"]) == (model, shift, metric):
      return float("nan") if r["value"] is None else float(r["value"])
  raise KeyError(f"No {metric} of {model} on {shift}.")


OOD_KINDS = ("interventional", "corruption", "domain", "natural")


def pairs_of(rows: list[dict[str, Any]], factors: dict[str, dict[str, str]],
             names: list[str]) -> dict[str, tuple[str, str, str]]:
  """`{pair: (target, shift, kind)}`: every (ID domain, OOD shift) pair,
  named `<target>-><shift>`, from the accuracy rows of `names`."""
  pairs = {}
  for r in rows:
    if (r["model"] in names and r["metric"] == "accuracy" and
        r["kind"] in OOD_KINDS and r["shift"] != "mean_corruption"):
      target = factors[r["model"]]["target"]
      pairs[f"{target}->{r['shift']}"] = (target, r["shift"], r["kind"])
  return pairs


def analyse(config: ml_collections.ConfigDict, rows: list[dict[str, Any]],
            factors: dict[str, dict[str, str]], adv_metric: str
            ) -> dict[str, Any]:
  """`{"proxies": ..., "factors": ..., "best_proxies": ...}` over the
  evaluated members.

  A pair's population is the members fine-tuned on its ID domain; a shift
  kind's is every member, with its mean accuracy over its own pairs of
  that kind.
  """
  names = [n for n in factors if any(r["model"] == n for r in rows)]
  pairs = pairs_of(rows, factors, names)
  corruptions = any(k == "corruption" for _, _, k in pairs.values())
  q = {"id_accuracy": [_metric(rows, n, "test", "accuracy") for n in names],
       "nll": [_metric(rows, n, "test", "nll") for n in names],
       "ece": [_metric(rows, n, "test", "ece") for n in names],
       "brier": [_metric(rows, n, "test", "brier") for n in names],
       "adversarial_accuracy": [_metric(rows, n, "test", adv_metric)
                                for n in names]}
  if corruptions:
    q["mean_corruption_accuracy"] = [
        _metric(rows, n, "mean_corruption", "accuracy") for n in names]
  boot = dict(n_boot=int(config.analysis.n_boot),
              seed=int(config.analysis.seed), level=float(config.analysis.level))
  by_pair = {}
  for pair, (target, shift, kind) in sorted(pairs.items()):
    idx = [i for i, n in enumerate(names) if factors[n]["target"] == target]
    by_pair[pair] = transfer_analysis.proxy_correlations(
        {k: [v[i] for i in idx] for k, v in _proxies(q, kind).items()},
        [_metric(rows, names[i], shift, "accuracy") for i in idx], **boot)
  ood_by_kind = ood_per_kind(rows, factors, names, pairs)
  by_kind = {k: transfer_analysis.proxy_correlations(_proxies(q, k), acc,
                                                     **boot)
             for k, acc in sorted(ood_by_kind.items())}
  # The factors in the OLS (`config.analysis.factors`; default all but the
  # seed): a small population cannot fit a column per level of every one.
  fitted = [f for f in (config.analysis.get("factors") or FACTORS)
            if f != "seed"]
  effects = {k: transfer_analysis.factor_effects(
      q["id_accuracy"], acc,
      {f: [factors[n].get(f, "") for n in names] for f in fitted},
      level=float(config.analysis.level))
             for k, acc in sorted(ood_by_kind.items())}
  kinds = {p: k for p, (_, _, k) in pairs.items()}
  return {"analysed_members": names,
          "pairs": {p: {"target": t, "shift": s, "kind": k}
                    for p, (t, s, k) in pairs.items()},
          "quantities": list(q),
          "excluded_proxies": {k: sorted(set(q) - set(_proxies(q, k)))
                               for k in sorted(ood_by_kind)},
          "proxies": {"by_pair": by_pair, "by_kind": by_kind},
          "best_proxies": transfer_analysis.best_proxies(by_pair, kinds),
          "factors": effects, "bootstrap": boot}


def _proxies(q: dict[str, list[float]], kind: str) -> dict[str, list[float]]:
  """The ID quantities that may predict OOD accuracy on shifts of `kind`:
  all but the mean corruption accuracy for corruption shifts, whose OOD
  accuracy is one of the accuracies that mean is made of."""
  if kind != "corruption":
    return q
  return {k: v for k, v in q.items() if k != "mean_corruption_accuracy"}


def ood_per_kind(rows, factors, names, pairs) -> dict[str, list[float]]:
  """`{kind: [members]}`: each member's mean OOD accuracy over the pairs of
  that kind on its own target."""
  out: dict[str, list[float]] = {}
  kinds = sorted({k for _, _, k in pairs.values()})
  for kind in kinds:
    out[kind] = [float(np.mean([
        _metric(rows, n, s, "accuracy") for t, s, k in pairs.values()
        if k == kind and t == factors[n]["target"]])) for n in names]
  return out


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
  if config.get("compile_cache_dir") == "workdir":
    runtime.setup_compile_cache(ml_collections.ConfigDict(dict(
        compile_cache_dir=os.path.join(os.path.abspath(workdir),
                                       "compile_cache"))))
  pre = pretrain(config, workdir)
  targets = transfer_grid.domains(config)
  out: dict[str, Any] = {"members": {}, "rows": [], "targets": {}}
  for target in targets:
    logging.info("Target domain %s: fine-tuning and evaluating its members.",
                 target)
    part = suite.train_and_evaluate(suite_config(config, target, grid),
                                    target_dir(workdir, target))
    if part.get("preempted") or (config.population.get("num_tasks") or 0) > 0:
      return part  # a job array's task trains its share; the plain run reports
    out["members"].update(part["members"])
    out["rows"] += part["rows"]
    out["targets"][target] = {k: v for k, v in part.items()
                              if k not in ("members", "rows")}
  factors = {n: f for n, (_, f) in grid.items()}
  evaluated = [n for n in grid if not out["members"][n].get("failed")]
  rows = list(out["rows"])
  adv = adversarial_rows(config, workdir, evaluated, grid)
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
                               "strategies": STRATEGIES, "regimes": REGIMES,
                               "targets": list(targets)})
  out.update(analyse(config, rows, factors, adv[0]["metric"]))
  if jax.process_index() == 0:
    if config.get("plots", True):
      names = out["analysed_members"]
      pairs = {p: (v["target"], v["shift"], v["kind"])
               for p, v in out["pairs"].items()}
      paths = transfer_plots.write_all(
          os.path.join(workdir, "plots", "transfer"), out,
          [_metric(rows, n, "test", "accuracy") for n in names],
          ood_per_kind(rows, factors, names, pairs),
          {f: [factors[n].get(f, "") for n in names] for f in FACTORS})
      out["plots"] = [os.path.relpath(p, workdir) for p in paths]
    _write(workdir, rows, factors, out)
  return out
