"""Analyses of trained runs: `python -m crl.analysis --workdir=runs/nac`.

  circuits   the learned module graph of a NAC (circuits.json, circuit_graph.png)
  dropping   accuracy and measured latency with mediators removed
             (module_dropping.csv, module_dropping.png)
  few_shot   N-way k-shot adaptation on held-out classes (few_shot.json)

Several runs can be given (`--workdir=runs/nac,runs/vit`); the NAC-only
analyses skip other models, and the few-shot rows of every run are written
together to `--out/few_shot.csv` and printed as one table. Outputs go to
`<workdir>/analysis/` (and the combined table to `--out`, default the first
workdir's analysis folder).
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from crl import metric_writers
from crl import workdir as workdir_lib
from crl.analysis import circuits
from crl.analysis import few_shot
from crl.analysis import module_dropping
from crl.trainers import runs
from crl.models import nac as nac_lib

ANALYSES = ("circuits", "dropping", "few_shot")

_WORKDIR = flags.DEFINE_list("workdir", None, "Trained run directories.",
                             required=True)
_ANALYSES = flags.DEFINE_list("analyses", list(ANALYSES),
                              f"Which analyses; known: {', '.join(ANALYSES)}.")
_OUT = flags.DEFINE_string("out", None, "Folder of the combined outputs.")
_SHOTS = flags.DEFINE_list("shots", ["1", "5", "10"], "k of k-shot.")
_MODES = flags.DEFINE_list("modes", list(few_shot.MODES),
                           "Few-shot adaptation modes.")
_EPISODES = flags.DEFINE_integer("episodes", 30, "Episodes per (mode, k).")
_FEW_SHOT_STEPS = flags.DEFINE_integer("few_shot_steps", 50,
                                       "Adam steps per episode.")
_FEW_SHOT_SPLIT = flags.DEFINE_string(
    "few_shot_split", "novel_classes",
    "Split of the run's dataset holding the held-out classes.")
_FEW_SHOT_TFDS = flags.DEFINE_string(
    "few_shot_tfds", None, "A locally prepared TFDS dataset to draw episodes "
    "from instead (name or name:split); nothing is downloaded.")
_FRACTIONS = flags.DEFINE_list(
    "fractions", [str(f) for f in module_dropping.DEFAULT_FRACTIONS],
    "Fractions of mediators dropped.")
_RANKINGS = flags.DEFINE_list("rankings", list(module_dropping.RANKINGS),
                              "Mediator rankings for dropping.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls per latency.")


def tfds_pool(spec: str, run: runs.Run) -> dict:
  """Episodes from a locally prepared TFDS dataset at the run's resolution."""
  from crl.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from crl.data import tfds_input  # pylint: disable=g-import-not-at-top
  name, _, split = spec.partition(":")
  split = split or "test"
  dataset = tfds_input.TFDSImageClassification(
      tfds_name=name, eval_split_names=(split,),
      resolution=run.task.input_shape[0])
  pipe = pipeline_lib.InputPipeline(dataset, run.task.mesh,
                                    run.config.batch_size,
                                    run.config.eval_batch_size)
  return few_shot.collect_pool(pipe, split, max_examples=5000)


def analyse_run(workdir: str, analyses: Sequence[str]) -> list[dict]:
  """Runs `analyses` on the finished run in `workdir`; writes their files
  under `workdir/analysis/` and returns their summary rows."""
  run = runs.load_run(workdir)
  out = os.path.join(workdir, "analysis")
  os.makedirs(out, exist_ok=True)
  is_nac = isinstance(run.model, nac_lib.NAC)
  name = run.config.model.name
  if "circuits" in analyses and is_nac:
    report = circuits.analyse(run)
    paths = circuits.write_report(report, out)
    a = report["averaged"]
    print(f"\n[{workdir}] circuit: {a['num_edges_directed']} links of "
          f"{a['num_modules']} mediators (K > 0.5), modularity "
          f"{a['modularity']:.3f}, mean path {a['mean_shortest_path']:.2f}, "
          f"per-example Jaccard distance "
          f"{report.get('per_example', {}).get('mean_jaccard_distance', 0):.3f}"
          f"\n  wrote {paths['json']} and {paths['png']}")
  elif "circuits" in analyses:
    logging.info("%s: circuits need a NAC; skipped for %s.", workdir, name)
  if "dropping" in analyses and is_nac:
    rows = module_dropping.dropping_curve(
        run, rankings=_RANKINGS.value,
        fractions=[float(f) for f in _FRACTIONS.value],
        repeats=_REPEATS.value)
    csv_path = module_dropping.write_csv(
        rows, os.path.join(out, "module_dropping.csv"))
    png = module_dropping.plot_curve(rows,
                                     os.path.join(out, "module_dropping.png"))
    best = module_dropping.best_speedup(rows)
    print(f"\n[{workdir}] module dropping (wrote {csv_path}, {png}):")
    for r in rows:
      print(f"  {r['ranking']:<10} drop {r['fraction_dropped']:.3f} "
            f"keep {r['modules_kept']:>3}  acc {100 * r['accuracy']:6.2f}  "
            f"speed-up {r['speedup']:.2f}x")
    if best:
      print(f"  largest speed-up with < 3 points lost: {best['speedup']:.2f}x "
            f"({best['ranking']}, {best['modules_kept']} modules kept, "
            f"{best['accuracy_drop_points']:.2f} points)")
  elif "dropping" in analyses:
    logging.info("%s: module dropping needs a NAC; skipped for %s.", workdir,
                 name)
  rows = []
  if "few_shot" in analyses:
    pool = (tfds_pool(_FEW_SHOT_TFDS.value, run) if _FEW_SHOT_TFDS.value
            else few_shot.collect_pool(run.task.pipeline, _FEW_SHOT_SPLIT.value,
                                       run.task.input_key))
    rows = few_shot.evaluate(
        run.model, run.params, pool, shots=[int(k) for k in _SHOTS.value],
        modes=_MODES.value, episodes=_EPISODES.value,
        steps=_FEW_SHOT_STEPS.value, seed=0)
    rows = [{"model": name, "workdir": workdir, **r} for r in rows]
    workdir_lib.write_json_atomic(os.path.join(out, "few_shot.json"), rows,
                                  indent=1)
  return rows


def main(argv: Sequence[str]) -> None:
  """The `python -m crl.analysis` program: every analysis on every
  `--workdir`, one table printed at the end."""
  del argv
  metric_writers.setup_console()  # --verbose shows the libraries' INFO
  unknown = [a for a in _ANALYSES.value if a not in ANALYSES]
  if unknown:
    raise app.UsageError(f"unknown analyses {unknown}; known: "
                         f"{', '.join(ANALYSES)}")
  all_rows = []
  for workdir in _WORKDIR.value:
    all_rows += analyse_run(workdir, _ANALYSES.value)
  if all_rows:
    out = _OUT.value or os.path.join(_WORKDIR.value[0], "analysis")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "few_shot.csv")
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=list(all_rows[0]))
      writer.writeheader()
      writer.writerows(all_rows)
    print("\nFew-shot adaptation (mean accuracy ± 95% interval over "
          "episodes):")
    print(few_shot.format_rows(all_rows))
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
