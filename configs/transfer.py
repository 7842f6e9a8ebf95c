"""The transfer-learning study (issue 14): pretrain, fine-tune, analyse.

Command (default, CPU):
  python -m crl.main --config=configs/transfer.py --workdir=runs/transfer
Runtime: 56 min wall, 3,276 CPU-s for the whole default (48 members, 4
pretrainings of 2-6 min, 12 domain + 36 corruption pairs), measured
2026-12-06 on the shared 2-core CPU at load average 4-7 (two other jobs
beside it), this run at 96% of one core (docs/results/transfer/profile.md).
Expected (docs/results/transfer/): pretrained ResNet members at .84-.99 ID
accuracy, the attention models at .09-.47 (chance .10); Spearman of ID
accuracy with OOD accuracy +0.85 [+0.70, +0.93] over corruptions and +0.64
[+0.41, +0.77] over domains (NLL -0.70, PGD accuracy +0.63 there); at
equal ID accuracy, pretraining (+0.23), a linear probe (+0.42) and LP-FT
(+0.25) raise probit domain-OOD accuracy over full fine-tuning, with
intervals above 0. Outputs: results.csv (model, shift, kind, metric, value
+ one column per factor), results.json (`proxies`, `best_proxies`,
`factors`), plots/transfer/.

Variants (`configs/transfer.py:<variant>`):
  (none)  48 members: for each of the 4 multi_domain targets (photo,
          sketch, cartoon, painting; the 3 others are its OOD domains: 12
          domain pairs) and each architecture (the small NAC, Perceiver IO,
          ViT and ResNet-10 of configs/pretrain.py), 3 of the 72
          combinations of pretrained or scratch x strategy (full, head,
          lp_ft) x regime (all, fewshot100, fewshot10) x augmentation
          (none, standard, randaugment, augmix), drawn by a seeded design;
          200 fine-tuning steps of batch 64 after 2500 (600 for ResNet)
          pretraining steps; corruptions contrast, gaussian noise and
          defocus blur at severities 1, 3, 5 (36 more pairs); PGD-10 at eps
          1/255 on 200 ID examples. `--config.grid.lr_scales=0.3,1,3` and
          `--config.grid.steps=100,400` make the learning rate and the
          length member choices too.
  reduced the default grid, pairs and analyses with the `:tiny` models,
          150 pretraining and 60 fine-tuning steps, 100 examples per shift,
          PGD-5: for a loaded machine.
  large   each architecture's default-size model, for a cluster and real
          data: a DomainBed folder as the target
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


# Peak learning rates (batch 64) and pretraining steps of the small models,
# from a probe on the photo target (adamw, cosine, 400-800 steps): the
# ResNet reaches .72 test accuracy in 200 steps at 1e-2 (.26 at 3e-3); the
# attention models learn far slower at any rate tried (ViT .28 after 800
# steps at 3e-3, .15 at 1e-2), so they pretrain longer; Perceiver IO stayed
# at chance on the source for 1500 steps at 3e-3 and learns at 1e-3.
PEAK_LR = {"nac": 3e-3, "perceiver": 1e-3, "vit": 3e-3, "resnet": 1e-2}
PRETRAIN_STEPS = {"nac": 2500, "perceiver": 2500, "vit": 2500, "resnet": 600}


def _peak_lr(c: ml_collections.ConfigDict, peak: float) -> None:
  """Sets the base learning rate that gives peak `peak` at `c.batch_size`."""
  c.optimizer.base_learning_rate = (peak * c.optimizer.base_batch_size /
                                    c.batch_size)


def _small_member(suite, pretrain, arch: str) -> ml_collections.ConfigDict:
  """A member of `arch`'s small model (configs/pretrain.py `small_model`),
  batch 64 at peak learning rate `PEAK_LR[arch]`."""
  c = suite.member(f"{arch}:tiny", num_steps=1)
  c.model = pretrain.small_model(arch)
  c.batch_size = 64
  _peak_lr(c, PEAK_LR[arch])
  return c


def _pretrain_schedule(p: ml_collections.ConfigDict, steps: int) -> None:
  p.num_steps = steps
  p.checkpoint.every_steps = steps
  p.log_every_steps = min(p.log_every_steps, steps)
  p.evals.test.every_steps = steps
  p.optimizer.warmup_steps = max(steps // 10, 1)


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
  # The models (a complete classification config each, without data) and
  # their pretraining on the procedural source, one run per architecture.
  if tiny:
    c.models = ml_collections.ConfigDict({
        a: suite.member(f"{a}:tiny", num_steps=1) for a in archs})
    c.pretrain = ml_collections.ConfigDict({
        a: pretrain.get_config(f"{a}_tiny") for a in archs})
    for m in list(c.models.values()) + list(c.pretrain.values()):
      m.batch_size = 16
    for p in c.pretrain.values():
      _pretrain_schedule(p, 4)
      p.optimizer.warmup_steps = 1
    c.models.resnet.model.norm = "group"  # a population holds no batch
    c.pretrain.resnet.model.norm = "group"  # statistics
  else:
    c.models = ml_collections.ConfigDict({
        a: _small_member(suite, pretrain, a) for a in archs})
    c.pretrain = ml_collections.ConfigDict()
    for a in archs:
      p = pretrain.get_config(f"{a}_small")
      _peak_lr(p, PEAK_LR[a])
      _pretrain_schedule(p, PRETRAIN_STEPS[a])
      c.pretrain[a] = p
  # Learning rate per strategy, times the architecture's: a linear probe
  # tolerates a larger one; LP-FT's fine-tuning phase (after the probe)
  # moves the pretrained features gently, as in the LP-FT paper.
  c.fine_tune = ml_collections.ConfigDict(dict(
      num_steps=4 if tiny else 200,
      lr_scale=ml_collections.ConfigDict(dict(full=1.0, head=3.0,
                                              lp_ft=0.3))))
  c.augmentations = ml_collections.ConfigDict(dict(
      none=(), standard=("standard",), randaugment=("randaugment",),
      augmix=("augmix",), flip_crop=("flip", "crop"), hue=("hue",)))
  c.grid = ml_collections.ConfigDict(dict(
      domains=("photo", "sketch") if tiny else multi_domain.DOMAINS,
      architectures=archs, pretrained=(True, False),
      strategies=("full", "head", "lp_ft"),
      regimes=("all", "fewshot100", "fewshot10"),
      augmentations=("none", "standard", "randaugment", "augmix"),
      seeds=(0,), per_cell=2 if tiny else 3, design_seed=0,
      # learning-rate multipliers and fine-tuning lengths as member choices
      # (one level each by default: not part of the names)
      lr_scales=(1.0,), steps=()))
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
    for a, m in c.models.items():
      m.batch_size = 32
      _peak_lr(m, PEAK_LR[a])
    for a, p in c.pretrain.items():
      _peak_lr(p, PEAK_LR[a])
      _pretrain_schedule(p, 150)
      p.log_every_steps = 50
    c.models.resnet.model.norm = "group"
    c.pretrain.resnet.model.norm = "group"
    c.fine_tune.num_steps = 60
    c.xla_fast_compile = True  # compiling dominates these small steps
    c.data.eval_examples = 100
    c.eval_batch_size = 100
    c.adversarial.max_examples = 100
    c.adversarial.steps = 5
  if variant == "large":  # each architecture's default-size model
    c.models = ml_collections.ConfigDict({a: suite.member(a, num_steps=1)
                                          for a in archs})
    c.pretrain = ml_collections.ConfigDict({a: pretrain.get_config(a)
                                            for a in archs})
    c.models.resnet.model.norm = "group"
    c.pretrain.resnet.model.norm = "group"
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
  if not tiny:  # not every step (members are built with num_steps=1):
    for m in c.models.values():  # each log waits for the device
      m.log_every_steps = 50
  return c
