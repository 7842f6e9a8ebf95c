"""The transfer-learning study (issue 14): pretrain, fine-tune, analyse.

Command (default, CPU):
  python -m crl.main --config=configs/transfer.py --workdir=runs/transfer
Runtime: the whole default was not run. Measured 2026-12-06 on the shared
2-core CPU (nice 5, load average 5-10, this process at about half a core):
its ViT and ResNet arms on the photo and sketch targets (12 members, 6
domain + 18 corruption pairs, 2 pretrainings of 300 steps) in 77 min wall,
2,765 CPU-s (docs/results/transfer/); per member 3-7 min there (41-128 s
compiling each phase, 1.1-2.6 s per step of batch 128), per pretraining
8-11 min (docs/results/transfer/profile.md). Estimate for the whole
default, scaled from those CPU-s: about 10,000 CPU-s, i.e. 80-100 min on 2
quiet cores, about 3 h on one: over the 60-minute goal.
Expected: results.csv (model, shift, kind, metric, value + the factor
columns target, architecture, pretrained, strategy, regime, augmentation,
seed), results.json with `proxies` (per (ID, OOD) pair and per shift kind:
Pearson/Kendall/Spearman of each ID quantity with OOD accuracy, bootstrap
intervals), `best_proxies` (per kind: in how many pairs each quantity
correlates best) and `factors` (OLS effects on probit OOD accuracy, without
and with probit ID accuracy, with intervals), and plots/transfer/. In the
measured part, 11 of 12 members ended at ID accuracy .095-.215 (chance
.10); the pretrained, fully fine-tuned ResNet on sketch's whole stream at
.44; Spearman of ID accuracy with domain OOD accuracy +0.66 [+0.14, +0.94].

Variants (`configs/transfer.py:<variant>`):
  (none)  48 members: for each of the 4 multi_domain targets (photo,
          sketch, cartoon, painting; the 3 others are its OOD domains: 12
          domain pairs) and each architecture (NAC, Perceiver IO, ViT,
          ResNet with GroupNorm), 3 of the 72 combinations of pretrained or
          scratch x strategy (full, head, lp_ft) x regime (all, fewshot100,
          fewshot10) x augmentation (none, standard, randaugment, augmix),
          drawn by a seeded design; 100 fine-tuning steps after 300 steps of
          pretraining per architecture; corruptions contrast, gaussian noise
          and defocus blur at severities 1, 3, 5 (36 more pairs); PGD-10 at
          eps 1/255 on 200 ID examples.
  reduced the default grid, pairs and analyses with the `:tiny` models,
          150 pretraining and 60 fine-tuning steps, 100 examples per shift,
          PGD-5: for a loaded machine.
  large   for a cluster and real data: a DomainBed folder as the target
          (`--config.data.root=/data/PACS --config.grid.domains=art_painting,
          cartoon,photo,sketch`), real weights per architecture
          (`--config.init_files.vit=ViT-S_16.npz --config.init_files.resnet=
          resnet50.safetensors`, with the matching `--config.models.<arch>`
          layout; architectures without a file are pretrained on the
          procedural source first), every combination with 3 seeds, 1000
          fine-tuning steps, every corruption. Train the members as a job
          array, after one plain run has pretrained (or with every init file
          given): `launch/slurm_population.sh 16 configs/transfer.py:large
          RUN`, then the plain command once more evaluates and analyses.
          Runtime: not measured.
  tiny    ViT and ResNet tiny models, 2 targets, 8 members, 4 fine-tuning
          steps, 32 examples per shift; for tests.
"""

import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from crl import config_lib
from crl import registry
from crl.data import multi_domain
from crl.evaluators import ood_detection

_HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("default", "tiny", "large", "reduced")
ARCHITECTURES = ("nac", "perceiver", "vit", "resnet")


def _module(name: str):
  spec = importlib.util.spec_from_file_location(
      f"_crl_transfer_{name}", os.path.join(_HERE, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r} of configs/transfer.py; "
                     f"known: {', '.join(VARIANTS)}.")
  tiny = variant == "tiny"
  suite, pretrain = _module("ood_suite"), _module("pretrain")
  archs = ("vit", "resnet") if tiny else ARCHITECTURES
  c = ml_collections.ConfigDict()
  c.trainer = "transfer"
  c.data = config_lib.component_config(
      registry.DATASETS, "multi_domain", domain="photo",
      eval_examples=32 if tiny else 200)
  c.eval_batch_size = 32 if tiny else 200
  c.xla_fast_compile = tiny
  c.shifts = (("domain", "corruption/contrast/5") if tiny else
              ("domain", "corruption/contrast/*",
               "corruption/gaussian_noise/*", "corruption/defocus_blur/*"))
  c.severities = (1, 3, 5)
  c.ece_bins = 15
  c.scores = ood_detection.SCORE_NAMES
  c.corruption_seed = 0
  c.plots = not tiny
  c.reliability_shifts = ()
  # trace_shared: a member's hyperparameters are traced data even when it
  # trains alone, so that the members of one architecture share compiled
  # programs through the persistent cache below (crl.population).
  c.population = ml_collections.ConfigDict(dict(
      group=True, layout="", trace_shared=True, member_devices=0,
      num_tasks=0, task_index=0))
  # The models (a complete classification config each, without data).
  c.models = ml_collections.ConfigDict({
      a: suite.member(f"{a}:tiny" if tiny else a, num_steps=1)
      for a in archs})
  if tiny:
    for m in c.models.values():
      m.batch_size = 16
  # Pretraining on the procedural source, one run per architecture.
  c.pretrain = ml_collections.ConfigDict({
      a: pretrain.get_config(f"{a}_tiny" if tiny else a) for a in archs})
  for p in c.pretrain.values():
    p.num_steps = 4 if tiny else 300
    p.checkpoint.every_steps = p.num_steps
    p.log_every_steps = min(p.log_every_steps, p.num_steps)
    p.evals.test.every_steps = p.num_steps
    p.optimizer.warmup_steps = 1 if tiny else 30
    if tiny:
      p.batch_size = 16
  if "resnet" in archs:  # a population holds no batch statistics
    c.models.resnet.model.norm = "group"
    c.pretrain.resnet.model.norm = "group"
  c.fine_tune = ml_collections.ConfigDict(dict(
      num_steps=4 if tiny else 100,
      lr_scale=ml_collections.ConfigDict(dict(full=1.0, head=10.0,
                                              lp_ft=1.0))))
  c.augmentations = ml_collections.ConfigDict(dict(
      none=(), standard=("standard",), randaugment=("randaugment",),
      augmix=("augmix",), flip_crop=("flip", "crop"), hue=("hue",)))
  c.grid = ml_collections.ConfigDict(dict(
      domains=("photo", "sketch") if tiny else multi_domain.DOMAINS,
      architectures=archs, pretrained=(True, False),
      strategies=("full", "head", "lp_ft"),
      regimes=("all", "fewshot100", "fewshot10"),
      augmentations=("none", "standard", "randaugment", "augmix"),
      seeds=(0,), per_cell=2 if tiny else 3, design_seed=0))
  c.adversarial = ml_collections.ConfigDict(dict(
      attack="pgd", eps=1 / 255, steps=2 if tiny else 10, loss="ce", seed=0,
      max_examples=16 if tiny else 200))
  c.analysis = ml_collections.ConfigDict(dict(
      n_boot=50 if tiny else 1000, seed=0, level=0.95,
      factors=()))  # () : every factor but the seed in the OLS
  c.init_files = ml_collections.ConfigDict({a: "" for a in archs})
  c.checkpoint = config_dict.placeholder(str)
  # JAX's persistent cache in WORKDIR/compile_cache: the members of one
  # architecture share their compiled programs (population.trace_shared).
  c.compile_cache_dir = "workdir"
  if variant == "reduced":  # the default grid, pairs and analyses, small
    c.models = ml_collections.ConfigDict({
        a: suite.member(f"{a}:tiny", num_steps=1) for a in archs})
    c.pretrain = ml_collections.ConfigDict({
        a: pretrain.get_config(f"{a}_tiny") for a in archs})
    for m in c.models.values():
      m.batch_size = 32
    for p in c.pretrain.values():
      p.num_steps = 150
      p.checkpoint.every_steps = p.num_steps
      p.log_every_steps = 50
      p.evals.test.every_steps = p.num_steps
      p.optimizer.warmup_steps = 15
    c.models.resnet.model.norm = "group"
    c.pretrain.resnet.model.norm = "group"
    c.fine_tune.num_steps = 60
    c.xla_fast_compile = True  # compiling dominates these small steps
    c.data.eval_examples = 100
    c.eval_batch_size = 100
    c.adversarial.max_examples = 100
    c.adversarial.steps = 5
  if variant == "large":
    c.data = config_lib.component_config(registry.DATASETS, "domain_folder",
                                         root="", domain="photo")
    c.eval_batch_size = 256
    c.shifts = ("domain", "corruption")
    c.severities = (1, 2, 3, 4, 5)
    c.grid.domains = ()  # the folder's: --config.grid.domains=photo,sketch,..
    c.grid.seeds = (0, 1, 2)
    c.grid.per_cell = 0  # every combination
    c.fine_tune.num_steps = 1000
    c.adversarial.max_examples = 1000
  return c
