"""The README's result tables, rendered from the committed results files.

Every number the README quotes from a documented run sits between two markers,

    <!-- results: NAME -->
    ...rendered text...
    <!-- /results -->

and is rendered by `TABLES[NAME]` from the files of that run committed under
`docs/results/<run>/`: the run's own `results.json` (or `circuits.json`, ...)
and `run.json` (`command`, `date`, `machine`, `load`, `wall`), written when the
documented command was run.

    python -m crl.reports.readme            # rewrite README.md's blocks
    python -m crl.reports.readme --check    # exit 1 if README.md is stale

When code changes a number: rerun the documented command, copy its small
result files into `docs/results/<run>/` with `collect(...)`, and rerun the
renderer; `tests/test_readme.py` fails until README and files agree.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import sys
from typing import Callable

from crl.reports.results_files import load
from crl.reports.results_files import provenance
from crl.reports.results_files import REPO
from crl.reports.results_files import RESULTS
from crl.reports.results_files import f3 as _f3
from crl.reports.results_files import table as _table
from crl.reports.study_tables import sweep_domain
from crl.reports.study_tables import sweep_shapes
from crl.reports.study_tables import transfer

BLOCK = re.compile(r"(<!-- results: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
                   r"(<!-- /results -->)", re.S)
# The small files of a run that are committed (no checkpoints, no events).
COLLECTED = ("results.json", "results.csv", "circuits.json", "sweep.json",
             "config.json")

NAC_DISTRIBUTIONS = ("test", "hue_independent", "unseen_hue", "scale_out",
                     "border_position", "unseen_background", "unseen_rotation",
                     "unseen_combination")
COMPARISON = (("nac", "NAC"), ("perceiver_io", "Perceiver IO"),
              ("nac_as_perceiver", "NAC as Perceiver"), ("vit", "ViT"),
              ("interpreters", "Neural Interpreters"))


def nac_default(root: pathlib.Path) -> str:
  """Accuracy, NLL and ECE of the default NAC run per test distribution."""
  res = load("nac", root=root)["results"]
  rows = [[("test (in distribution)" if d == "test" else d),
           f"{res[d]['accuracy']:.4f}", f"{res[d]['nll']:.3f}",
           f"{res[d]['ece']:.3f}"] for d in NAC_DISTRIBUTIONS]
  rows.append(["novel_classes",
               f"MSP AUROC vs test: {res['novel_classes']['ood_auroc_msp']:.3f}",
               "", ""])
  return (provenance("nac", root) + "\n\n"
          + _table(["distribution", "accuracy", "NLL", "ECE"], rows))


def comparison(root: pathlib.Path) -> str:
  """Accuracy of NAC and each comparison model that has committed results."""
  runs = [(run, label, load(run, root=root)) for run, label in COMPARISON]
  runs = [(run, label, r["results"]) for run, label, r in runs if r]
  rows = [[("test (ID)" if d == "test" else d)]
          + [f"{res[d]['accuracy']:.4f}" for _, _, res in runs]
          for d in NAC_DISTRIBUTIONS]
  rows.append(["novel_classes (MSP AUROC)"]
              + [f"{res['novel_classes']['ood_auroc_msp']:.3f}"
                 for _, _, res in runs])
  lines = [f"- {label}: {provenance(run, root)}" for run, label, _ in runs]
  return ("\n".join(lines) + "\n\n"
          + _table(["distribution"] + [label for _, label, _ in runs], rows))


def circuits(root: pathlib.Path) -> str:
  """The circuit statistics of the default NAC run (`circuits.json`)."""
  c = load("nac_circuits", "circuits.json", root)
  k, s = c["averaged"], c["per_example"]
  rows = [
      ["directed links among mediators in the averaged graph K (K > 0.5)",
       f"{k['num_edges_directed']} among {k['num_modules']}"],
      ["density / max degree", f"{k['density']:.3f} / {k['degree_max']}"],
      ["modularity (communities)",
       f"{k['modularity']:.3f} ({k['num_communities']})"],
      ["mean shortest path (diameter; pairs reachable)",
       f"{k['mean_shortest_path']:.2f} ({k['diameter_reachable']}; "
       f"{100 * k['reachable_pair_fraction']:.1f}%)"],
      ["links per sampled per-example graph (mean)",
       f"{s['edges_per_example']:.1f}"],
      ["mean Jaccard distance between sampled graphs",
       f"{s['mean_jaccard_distance']:.3f}"],
      ["L1 between the sampled graphs' mean and K",
       f"{s['sampled_mean_vs_kernel_l1']:.3f}"],
  ]
  shifts = [[name, f"{v['graph_mean_l1_vs_test']:.4f}",
             f"{v['read_in_attention_l1_vs_test']:.3f}"]
            for name, v in c["across_interventions"].items() if name != "test"]
  return (f"{provenance('nac_circuits', root)}\n\n"
          + _table(["circuit of the default NAC", "value"], rows) + "\n\n"
          + _table(["intervention", "L1 change of the sampled graphs' mean",
                    "L1 change of the read-in attention"], shifts))


def savos(root: pathlib.Path) -> str:
  """mIoU of SaVos, its supervised bound and the baselines per split, under
  crl's protocol and the official ones (`docs/results/savos/`)."""
  own = load("savos", root=root)["results"]
  sup = load("savos/supervised", root=root)["results"]
  base = load("savos", "baselines_and_filters.json", root)
  rows = []
  for split in own:
    methods = {**own[split], **sup.get(split, {}),
               **base.get(split, {}).get("baselines", {})}
    for name in ("savos", "supervised", "convex_hull", "visible"):
      if name in methods:
        m = methods[name]
        rows.append([split, name] + [_f3(m.get(f"{p}{k}_miou"))
                                     for p in ("", "official_", "official_px_")
                                     for k in ("full", "occluded")])
  header = ["split", "method", "full", "occluded", "official full",
            "official occluded", "official_px full", "official_px occluded"]
  return provenance("savos", root) + "\n\n" + _table(header, rows)


def _gain(x: float | None) -> str:
  """+.012 / -.004 (signed `_f3`)."""
  return "-" if x is None else _f3(abs(x)).join(("+" if x >= 0 else "-", ""))


def savos_tta(root: pathlib.Path) -> str:
  """SaVos adapted on each scored video: the choice on held-out shifted
  videos, the curves against steps and the gains at the chosen steps with
  their paired bootstrap intervals (`docs/results/savos_tta/`)."""
  out = load("savos_tta", root=root)
  tta, occlusion = out["tta"], out.get("occlusion", {})
  steps = tta["validation"][next(iter(tta["validation"]))]["steps"]
  chosen = tta["chosen"]
  header = ["videos", "mIoU"] + [f"{n} steps" for n in steps]
  rows = [[f"validation, lr {lr}", "occluded"] + [_f3(v) for v in
                                                 c["occluded_miou"]]
          for lr, c in tta["validation"].items()]
  gains = []
  for split, row in tta["splits"].items():
    for metric in ("occluded", "full"):
      rows.append([f"{split} ({row['videos']})", metric] + [
          _f3(v) for v in row["curve"][f"{metric}_miou"]])
      cells = []
      for g in row["gains"][metric][1:]:
        low, high = g["interval"] or (None, None)
        cells.append(f"{_gain(g['gain'])} [{_gain(low)}, {_gain(high)}]")
      gains.append([split, metric] + cells)
  lines = [provenance("savos_tta", root), "",
           f"Chosen on the held-out shifted videos: learning rate "
           f"{chosen['learning_rate']}, {chosen['steps']} steps ("
           f"{chosen['by']}).", "", _table(header, rows), "",
           "Gain over no adaptation, mean over videos of each video's own "
           "difference, with its 95% paired bootstrap interval:", "",
           _table(["split", "mIoU"] + [
               f"{n} steps" + (" (chosen)" if n == chosen["steps"] else "")
               for n in steps[1:]], gains)]
  if occlusion:
    lines += ["", "Occluded pixels per object-frame: " + ", ".join(
        f"{s} {o['occluded_px_per_object_frame']:.1f}"
        for s, o in occlusion.items()) + "."]
  return "\n".join(lines)


def digits(root: pathlib.Path) -> str:
  """The folder-of-images preset on scikit-learn's digits."""
  test = load("digits", root=root)["results"]["test"]
  return (provenance("digits", root) + "\n\n" + _table(
      ["split", "examples", "accuracy", "NLL", "ECE"],
      [["test", str(test["num_examples"]), f"{100 * test['accuracy']:.2f}%",
        f"{test['nll']:.3f}", f"{test['ece']:.3f}"]]))


def two_heads_weak_proxy(root: pathlib.Path) -> str:
  """Accuracy, |DDP|, probe accuracy and effective rank per lambda, mean
  and 95% interval over seeds (`configs/two_heads.py:weak_proxy`)."""
  summary = load("two_heads_weak_proxy", root=root)["summary"]

  def ci(row, key):
    i = row[key]
    return f"{_f3(i['mean'])} ± {_f3(i['half_width'])}"
  rows = [[f"{r['lambda']:g}", _f3(r["accuracy"]), ci(r, "abs_ddp_interval"),
           ci(r, "probe_train_interval"),
           f"{r['effective_rank_interval']['mean']:.1f} ± "
           f"{r['effective_rank_interval']['half_width']:.1f}"]
          for r in summary["per_lambda"]]
  return (provenance("two_heads_weak_proxy", root) + "\n\n" + _table(
      ["lambda", "accuracy", "abs DDP", "probe (training-split features)",
       "effective rank (of 32)"], rows))


def population_bench(root: pathlib.Path) -> str:
  """8 members trained together in each step layout against one at a time:
  member x examples/s, the ratio, peak memory and XLA's GFLOP per step of
  all 8 (`crl.bench --population`); the profile is `profile.md` there."""
  rows = []
  for r in load("population_bench", root=root)["population"]:
    gflop = r.get("alone_gflop")
    rows.append([r["model"], "one at a time",
                 f"{r['alone_member_examples_per_s']:.1f}", "1.00x",
                 f"{r['alone_peak_mib']:.0f}",
                 "" if gflop is None else f"{gflop:.1f}"])
    for name, lay in r["layouts"].items():
      rows.append([r["model"], f"{r['members']} together, `{name}`",
                   f"{lay['member_examples_per_s']:.1f}",
                   f"{lay['speedup']:.2f}x", f"{lay['peak_mib']:.0f}",
                   f"{lay['gflop']:.1f}" if "gflop" in lay else ""])
  return (provenance("population_bench", root) + "\n\n" + _table(
      ["model", "how", "member x examples/s", "speed-up", "peak MiB",
       "GFLOP per step of all"], rows))


TABLES: dict[str, Callable[[pathlib.Path], str]] = {
    "nac_default": nac_default,
    "comparison": comparison,
    "circuits": circuits,
    "savos": savos,
    "savos_tta": savos_tta,
    "digits": digits,
    "two_heads_weak_proxy": two_heads_weak_proxy,
    "sweep_domain": sweep_domain,
    "sweep_shapes": sweep_shapes,
    "transfer": transfer,
    "population_bench": population_bench,
}


def render(text: str, root: pathlib.Path = RESULTS) -> str:
  """`text` with every results block re-rendered from the files under `root`."""
  def one(match: re.Match) -> str:
    name = match["name"]
    if name not in TABLES:
      raise KeyError(f"README block {name!r} has no renderer; known: "
                     f"{', '.join(sorted(TABLES))}")
    return f"{match[1]}{TABLES[name](root).rstrip()}\n{match[4]}"
  return BLOCK.sub(one, text)


def collect(run: str, workdir: str, command: str, wall: str, load_: str,
            date: str, machine: str, root: pathlib.Path = RESULTS) -> None:
  """Copies a finished run's small result files into `root/run/`."""
  out = root / run
  out.mkdir(parents=True, exist_ok=True)
  src = pathlib.Path(workdir)
  for name in COLLECTED:
    if (src / name).exists():
      shutil.copyfile(src / name, out / name)
  (out / "run.json").write_text(json.dumps(
      dict(command=command, date=date, machine=machine, load=load_, wall=wall),
      indent=1) + "\n")


def main(argv: list[str]) -> int:
  """`--check` compares; otherwise rewrites README.md in place."""
  readme = REPO / "README.md"
  text = readme.read_text()
  rendered = render(text)
  if "--check" in argv:
    if rendered != text:
      print("README.md is stale: run `python -m crl.reports.readme`")
      return 1
    return 0
  readme.write_text(rendered)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
