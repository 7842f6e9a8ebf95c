"""The OOD evaluation suite: a population of models on causal shapes.

Command (default, CPU):
  python -m crl.main --config=configs/ood_suite.py --workdir=runs/ood_suite
Runtime: 56m13s wall on 2 CPU cores (measured 2026-12-02 in a fresh workdir:
all 13 members trained, then evaluated; 1.47 cores busy on average; for
about 15 of the 56 minutes low-priority jobs ran alongside). Training took
41.3 min (interpreters_s0 419 s; NAC 141-166 s at 400 steps, 96 s at 200;
Perceiver IO 167-190 s; ViT 223-239 s at 400 steps, 124 s at 200),
evaluating the 13 models on the 123 shifts and the ID split 12.8 min
(5.5-6.5 s per shift). Running the command again reuses every finished
member and only evaluates.
Expected (measured 2026-12-02 with the code of this commit; 400-step
members, ID accuracy .88-.92, and .62-.74 with hue rotation): ID vs OOD
accuracy rises together under corruptions (mean Pearson r on probit
accuracy .810 over 95 shifts, Kendall .376) but not under interventions
(.006 over 27): a rising line on unseen_background (r .933) and scale_out
(.799), a falling one wherever the spurious hue breaks (hue_independent
-.619, unseen_hue -.692, unseen_combination -.665). On corruptions every
NAC, Perceiver IO and Neural Interpreters member lies above the
population's probit line (effective robustness +.016 to +.038) and every
ViT at or below it (-.002 for vit_200steps, -.049 to -.078 for the others);
mCE against nac_s0: Perceiver IO .92-.93, NAC .98-1.09, NI 1.02, ViT
1.09-1.20 (2.27 and 2.30 for the hue-rotated NAC and ViT). Mean ECE .099
ID, .182 under corruptions, .339 under interventions. Training is
deterministic: the fresh run above reproduced every number of the
2026-12-01 population. The random draws of the corruptions changed since
(a faster generator, evaluated again with every member reused: 15m15s):
the 11 random types' accuracies moved by up to .052 on single (model,
shift) pairs of 500 examples, the means above by at most .005. `:tiny`
(for tests) prints a table of 3 barely trained models and writes 300
numbers and 6 plots.

One trained run instead of a population (any classification workdir):
  python -m crl.main --config=configs/ood_suite.py --workdir=runs/ood_nac \
      --config.checkpoint=runs/nac
evaluates that run on every selected shift that applies to its data (for a
TFDS run, the natural pairs whose data is prepared locally with
`--config.shifts=all`); population statistics are then omitted (noted in
results.json).

Outputs in WORKDIR: models/<member>/ (each member's own run directory:
config.json, checkpoints, metrics), results.csv (model, shift, kind, metric,
value), results.json (every number with its protocol, population statistics:
per shift Pearson/Kendall ID-vs-OOD accuracy raw and probit, the probit fit
and effective robustness per model, ID-vs-OOD ECE correlation, CE/mCE
against `baseline`, pairwise agreement), plots/ (ID-vs-OOD scatter with
fitted lines, reliability diagrams, accuracy against severity).

Members: `config.members.<name>` is a classification config built here from
configs/nac.py, configs/perceiver.py, configs/vit.py and
configs/interpreters.py with overrides (seed, num_steps, warmup =
num_steps / 10, augment); every member trains on `config.data` and is
evaluated with `eval_batch_size` (so all share one ID test split). Override
one from the command line, e.g. `--config.members.vit_s0.num_steps=600`
(that member is then retrained in a new workdir: a finished member written
by another config is refused, not overwritten).

Variants (`configs/ood_suite.py:<variant>`):
  (none)  13 members: NAC x 3 seeds, NAC with hue rotation, NAC at 200
          steps; Perceiver IO x 2 seeds, Perceiver IO with flips and crops;
          ViT x 2 seeds, ViT with hue rotation, ViT at 200 steps; Neural
          Interpreters at 300 steps (the defaults
          of each config file, 400 steps unless said); shifts: every
          interventional, corruption (19 types x 5 severities) and semantic
          shift of the registry (the TFDS pairs do not apply to causal
          shapes); 500 examples per shift; mCE against nac_s0.
  tiny    3 members of the `:tiny` models (ViT, ViT with hue rotation and
          flips, Perceiver IO) for 10 steps, 64 examples, 13 shifts; for
          tests (measured 46 s on the shared 2-core CPU, 18 s when run
          again, 2026-12-01).
"""

import os

import ml_collections
from ml_collections import config_dict

from crl import config_lib
from crl import registry
from crl.evaluators import ood_detection

_HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("default", "tiny")
# Keys the suite sets for every member (see crl.trainers.ood_suite).
_SUITE_KEYS = ("data", "eval_batch_size", "evals", "final_eval",
               "xla_fast_compile")


def _load(spec: str) -> ml_collections.ConfigDict:
  """`configs/<file>.py:<variant>` from this folder, unlocked."""
  path, _, variant = spec.partition(":")
  return config_lib.load_config(
      f"{os.path.join(_HERE, path)}.py:{variant}", lock=False)


def member(spec: str, *, seed: int = 0, num_steps: int,
           augment: tuple[str, ...] = (),
           checkpoint_every: int | None = None) -> ml_collections.ConfigDict:
  """The config of one member: `spec`'s config with these overrides."""
  c = _load(spec)
  for key in _SUITE_KEYS:
    if key in c:
      del c[key]
  c.seed = seed
  c.num_steps = num_steps
  c.optimizer.warmup_steps = max(num_steps // 10, 1)
  c.log_every_steps = min(c.log_every_steps, num_steps)
  c.checkpoint.every_steps = checkpoint_every or num_steps
  c.augment = tuple(augment)
  return c


def _default_members() -> dict[str, ml_collections.ConfigDict]:
  m = {}
  for seed in (0, 1, 2):
    m[f"nac_s{seed}"] = member("nac", seed=seed, num_steps=400)
  m["nac_hue"] = member("nac", seed=3, num_steps=400, augment=("hue",))
  m["nac_200steps"] = member("nac", seed=4, num_steps=200)
  for seed in (0, 1):
    m[f"perceiver_s{seed}"] = member("perceiver", seed=seed, num_steps=400)
  m["perceiver_flip_crop"] = member("perceiver", seed=2, num_steps=400,
                                    augment=("flip", "crop"))
  for seed in (0, 1):
    m[f"vit_s{seed}"] = member("vit", seed=seed, num_steps=400)
  m["vit_hue"] = member("vit", seed=2, num_steps=400, augment=("hue",))
  m["vit_200steps"] = member("vit", seed=3, num_steps=200)
  # Neural Interpreters cost 2.85x NAC per step (one member took 11-15 min
  # of the 60-minute budget), so the population has one.
  m["interpreters_s0"] = member("interpreters", seed=0, num_steps=300)
  for c in m.values():
    c.checkpoint.every_steps = 100
  return m


def _tiny_members() -> dict[str, ml_collections.ConfigDict]:
  return {
      "vit_s0": member("vit:tiny", seed=0, num_steps=10),
      "vit_hue": member("vit:tiny", seed=1, num_steps=10,
                        augment=("hue", "flip")),
      "perceiver_s0": member("perceiver:tiny", seed=0, num_steps=10),
  }


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r} of configs/ood_suite.py; "
                     f"known: {', '.join(VARIANTS)}.")
  c = ml_collections.ConfigDict()
  c.trainer = "ood_suite"
  # Shared by every member: one dataset, one ID test split.
  c.data = config_lib.component_config(registry.DATASETS, "causal_shapes",
                                       eval_examples=500)
  c.eval_batch_size = 500
  c.xla_fast_compile = False
  # A registry selection (crl.shifts.registry): 'all', kinds, names, globs.
  c.shifts = ("interventional", "corruption", "semantic")
  c.severities = (1, 2, 3, 4, 5)
  c.ece_bins = 15
  c.scores = ood_detection.SCORE_NAMES
  c.corruption_seed = 0
  # mCE is relative to this member.
  c.baseline = "nac_s0"
  # A classification workdir to evaluate instead of training the members.
  c.checkpoint = config_dict.placeholder(str)
  c.plots = True
  # Members that share a model, batch size and optimizer structure train
  # together in one program (crl.population): group="on"; "off": one at a
  # time; "auto": on accelerators only (on the 2-core CPU 8 members together
  # ran slower than one at a time: docs/results/population_bench).
  # layout: the grouped step's layout (crl.population_step.LAYOUTS; "":
  # per_member on CPU, vmap on accelerators).
  # trace_shared: hyperparameters that every member of a population shares
  # are traced data, not constants: one compiled step for every member of
  # an architecture, not bitwise equal to a single run (crl.population).
  # member_devices: devices on the mesh's `member` axis (0: all).
  # num_tasks > 0: this process is task `task_index` of a job array and
  # trains only its share (launch/slurm_population.sh).
  c.population = ml_collections.ConfigDict(dict(
      group="auto", layout="", trace_shared=False, member_devices=0,
      num_tasks=0, task_index=0))
  # Panels of the reliability diagrams besides the ID split (default: the
  # first three covariate shifts evaluated).
  c.reliability_shifts = ("hue_independent", "unseen_combination",
                          "corruption/gaussian_noise/5")
  if variant == "default":
    c.members = ml_collections.ConfigDict(_default_members())
  else:
    c.data.eval_examples = 64
    c.eval_batch_size = 32
    c.xla_fast_compile = True
    c.shifts = ("hue_independent", "unseen_background", "novel_classes",
                "corruption/contrast/*", "corruption/gaussian_noise/*")
    c.baseline = "vit_s0"
    c.reliability_shifts = ("hue_independent", "corruption/contrast/5")
    c.members = ml_collections.ConfigDict(_tiny_members())
    c.population.group = "on"  # the tests exercise the grouped path
  return c
