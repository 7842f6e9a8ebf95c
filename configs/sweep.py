"""NAC against Perceiver IO and ViT at equal tuning effort (issue 14 item 10).

Command (the domain comparison; DIR holds the pretrained small models,
DIR/<model>, e.g. the transfer study's `W/pretrain` written by
`python -m crl.main --config=configs/transfer.py --workdir=W`):
  python -m crl.main --config=configs/sweep.py:domain --workdir=runs/sweep \
      --config.pretrained_dir=DIR
  python -m crl.main --config=configs/sweep.py:shapes --workdir=runs/shapes
Runtime (2026-12-06, shared 2-core CPU at load 4.5-7.5, nice 10, with
--config.compile_cache_dir set): `domain` (6 candidates x (4 sweep runs + 2
more seeds), 600 steps each) 48 min (11.5 min `domain_scratch`, then
36.8 min); `shapes` (2 x (5 + 2) runs) about 16 min; about 40-80 s per NAC or
Perceiver IO run, 45 s to 4 min per ViT run (the first run at a rate
compiles; the others hit the cache) (`:tiny`: about 2 min).
Expected (docs/results/sweep_domain/, sweep_shapes/; 3 seeds, 95% intervals):
`domain`: every chosen rate inside the grid (NAC 8e-3 pretrained, 2.53e-2
scratch; Perceiver IO 2.53e-2, 8e-3; ViT 2.53e-2 both); ID photo test .181
+- .008 / .187 +- .049 (NAC pretrained / scratch), .427 +- .067 / .253 +-
.061 (Perceiver IO), .389 +- .065 / .249 +- .037 (ViT); NAC - Perceiver IO
on the mean of the other domains -.037 [-.112, +.038] from scratch and -.101
[-.145, -.058] pretrained (95% Welch).
`shapes`: NAC chooses base 2.53e-2, Perceiver IO 8e-2 (validation .888-.912
across the grid for both); ID test .900 +- .005 vs .899 +- .006,
hue_independent .139 vs .119, unseen_combination 0 vs 0, scale_out .682 vs
.886; NAC - Perceiver IO on the mean of the OOD splits -.061 [-.088, -.034].
Variants: nac, perceiver, vit (one model's sweep, no seeds); domain (NAC,
Perceiver IO and ViT, each from scratch and pretrained); domain_nac_perceiver
(without ViT); domain_scratch (NAC and Perceiver IO from scratch; a later
`domain` in the same workdir reuses its runs); shapes (NAC vs Perceiver IO on
causal shapes); tiny.
All use the small models of configs/pretrain.py (`small_model`), batch 64,
600 steps, the half-decade grid of base learning rates 2.53e-3, 8e-3, 2.53e-2,
8e-2 (peak 3.2e-4 to 1e-2 at batch 64; `shapes` adds 2.53e-1), and seeds
0, 1, 2 (seed 0 is the sweep's run at the chosen rate).
"""

import importlib.util
import os

import ml_collections

from crl import config_lib
from crl import registry

_HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("nac", "perceiver", "vit")
VARIANTS = MODELS + ("domain", "domain_nac_perceiver", "domain_scratch",
                     "shapes", "tiny")
STEPS = 600  # per run: the small models learn within it on the CPU
# The shared half-decade grid of base learning rates: peak 3.2e-4, 1e-3,
# 3.2e-3, 1e-2 at batch 64 (peak = base * batch / 512), bracketing the rates
# at which the small models learn (configs/transfer.py PEAK_LR; Perceiver IO
# chose the lowest of 8e-3, 2.53e-2, 8e-2, so the grid reaches one lower).
GRID = (2.53e-3, 8e-3, 2.53e-2, 8e-2)


def _module(name: str):
  spec = importlib.util.spec_from_file_location(
      f"_crl_sweep_{name}", os.path.join(_HERE, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def candidate(model: str, size: str, num_steps: int,
              init_from: str = "") -> ml_collections.ConfigDict:
  """A candidate: configs/<model>.py's model (`size`: default, tiny, or the
  small models of configs/pretrain.py) and recipe, `num_steps` steps."""
  suite = _module("ood_suite")
  if size == "small":
    c = suite.member(f"{model}:tiny", num_steps=num_steps)
    c.model = _module("pretrain").small_model(model)
    c.batch_size = 64
    c.xla_fast_compile = False
  else:
    c = suite.member(model if size == "default" else f"{model}:{size}",
                     num_steps=num_steps)
  c.init_from = init_from
  c.log_every_steps = min(50, num_steps)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "vit"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r} of configs/sweep.py; "
                     f"known: {', '.join(VARIANTS)}.")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.trainer = "lr_sweep"
  c.data = config_lib.component_config(
      registry.DATASETS, "multi_domain", domain="photo",
      eval_examples=32 if tiny else 500)
  c.eval_batch_size = 32 if tiny else 250
  c.xla_fast_compile = tiny
  c.eval_splits = "all"
  # The same half-decade grid of base learning rates for every candidate.
  c.sweep = ml_collections.ConfigDict(dict(
      grid=(1e-3, 1e-2) if tiny else GRID,
      seed=0, validation_examples=32 if tiny else 500))
  # Seeds of the final runs; the sweep's seed reuses its run at the chosen
  # learning rate.
  c.seeds = (0, 1) if tiny else (0, 1, 2)
  c.pretrained_dir = ""
  # Pairs "A-B" whose per-split difference gets a Welch interval.
  c.contrasts = ()
  # Persistent compilation cache for the whole sweep ('' for off): the runs
  # at one learning rate (seeds, scratch and pretrained) share one program.
  c.compile_cache_dir = ""
  if tiny:
    c.candidates = ml_collections.ConfigDict({
        "vit": candidate("vit", "tiny", 3)})
    c.candidates.vit.batch_size = 16
  elif variant in MODELS:
    c.candidates = ml_collections.ConfigDict({
        variant: candidate(variant, "small", STEPS)})
    c.seeds = ()
  elif variant.startswith("domain"):
    c.candidates = ml_collections.ConfigDict()
    for m in MODELS if variant == "domain" else ("nac", "perceiver"):
      c.candidates[f"{m}_scratch"] = candidate(m, "small", STEPS)
      if variant != "domain_scratch":
        c.candidates[f"{m}_pretrained"] = candidate(
            m, "small", STEPS, init_from=f"{{pretrained_dir}}/{m}")
    c.contrasts = tuple(f"nac_{k}-perceiver_{k}" for k in (
        ("scratch",) if variant == "domain_scratch" else
        ("scratch", "pretrained")))
  else:  # shapes: causal shapes, NAC vs Perceiver IO at a reduced budget
    c.data = config_lib.component_config(registry.DATASETS, "causal_shapes",
                                         eval_examples=500)
    c.eval_splits = "test,hue_independent,unseen_combination,scale_out"
    c.candidates = ml_collections.ConfigDict({
        m: candidate(m, "small", STEPS) for m in ("nac", "perceiver")})
    c.contrasts = ("nac-perceiver",)
    # Perceiver IO chose the top of GRID here: one half-decade more.
    c.sweep.grid = GRID + (2.53e-1,)
  return c
