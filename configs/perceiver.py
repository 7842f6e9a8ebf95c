"""Perceiver IO baselines of NAC on causal shapes (specs/nac.md).

Command (default, CPU):
  python -m crl.main --config=configs/perceiver.py --workdir=runs/perceiver
Runtime: 24m55s wall on the 2-core CPU with two to four other jobs on the
machine (measured 2026-12-01; a train step takes about 0.9-1.3x the time of
configs/nac.py's default side by side, which trains in 11 minutes on a quiet
machine). nac_ablation (`--config=configs/perceiver.py:nac_ablation`):
23m37s wall, 13m54s CPU time, with two other jobs on the 2 cores (measured
2026-12-01).
Expected (default, measured 2026-12-01, 2000 steps): 98.35% in-distribution
test accuracy; hue_independent 86.25%, unseen_hue 79.15%, scale_out 38.50%,
border_position 70.45%, unseen_background 97.80%, unseen_rotation 65.75%,
unseen_combination 70.00%, novel-class MSP AUROC 0.789. Against NAC's
default (96.95% ID; hue_independent 71.40%, unseen_combination 35.85%) this
Perceiver IO relies much less on the spurious hue.
Expected (nac_ablation, measured 2026-12-01, 2000 steps): 97.05% ID;
hue_independent 72.50%, unseen_hue 62.90%, scale_out 33.55%,
border_position 71.80%, unseen_background 95.20%, unseen_rotation 68.95%,
unseen_combination 38.80%, novel-class MSP AUROC 0.785. Against NAC:
within 3 points on six of the eight splits, scale_out 8.2 points lower and
border_position 4.5 points higher (one seed each, so differences of a few
points are within seed noise; see the OOD suite's seeds).

Two comparison models, both with the NAC tokenizer (ConvNeXt stem + 1 block
+ learned 8x8 positional grid: 64 tokens of 96 channels) and the same data,
batch size 128, 2000 steps and schedule as configs/nac.py:

* Perceiver IO (`crl.models.perceiver.PerceiverIO`): learned latents read the
  tokens through one shared cross-attention, then latent self-attention,
  then a learned output query reads the latents.
* The NAC-as-Perceiver ablation: NAC itself with a complete graph, frozen
  signatures, no graph prior, no stochastic kernel and plain Dense layers
  instead of ModFC (`complete_graph=True, modfc_mode='dense',
  graph_prior=None, freeze_signatures=True, stochastic_kernel=False`); every
  other field and the whole training recipe are those of the matching
  configs/nac.py variant (its learning rate included).

Variants (`configs/perceiver.py:<variant>`):
  (none)              Perceiver IO matched to the default NAC (276,288
                      parameters): the NAC default's latent sizes (32 latents
                      of 64 channels, 2 heads x 32, 1 read-in head), 4 latent
                      self-attention layers, GELU MLPs of hidden 224 (3.5x),
                      1 output query: 279,146 parameters (+1.0%). Base
                      learning rate 1.2e-2 (peak 3e-3 at batch 128), the best
                      of the sweep below.
  tiny                a few steps of a very small Perceiver IO; for tests
                      (36 s end to end on the shared 2-core CPU).
  bench               Perceiver IO matched to NAC-S/32 (1,695,246): NAC-S/32's
                      tokenizer and latent sizes (64 latents of 128 channels,
                      4 heads x 32), 7 layers, GELU MLPs of hidden 512:
                      1,708,522 parameters (+0.8%); batch 64 as NAC's bench.
  nac_ablation        NAC-as-Perceiver at the size of configs/nac.py default
                      (173,866 parameters: without ModFC, the code
                      projections and gains are gone; codes remain as the
                      initial module states).
  nac_ablation_tiny   ... of configs/nac.py:tiny; for tests (48 s end to end).
  nac_ablation_bench  ... of configs/nac.py:bench (NAC-S/32; 1,015,274
                      parameters).

Learning-rate sweep (Perceiver IO default, 300-step runs of
`--config.num_steps=300 --config.optimizer.warmup_steps=30`; accuracy on the
2000-image test and hue_independent splits; wall time on a shared 2-core CPU
with several other jobs running, so only roughly comparable):
  base lr 1e-3:   test 87.75%, hue_independent 15.55%, 855 s
  base lr 4e-3:   test 89.90%, hue_independent 16.60%, 417 s
  base lr 1.2e-2: test 90.95%, hue_independent 20.80%, 795 s
A 300-step horizon favours large rates; the trend is monotonic up to 1.2e-2.
The NAC ablation keeps NAC's own rate (4e-3): only the model changes.
"""

import importlib.util
import os

import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config

# The NAC-as-Perceiver ablation: these fields of NAC, nothing else, change.
NAC_ABLATION = dict(complete_graph=True, modfc_mode="dense", graph_prior=None,
                    freeze_signatures=True, stochastic_kernel=False)

VARIANTS = ("default", "tiny", "bench", "nac_ablation", "nac_ablation_tiny",
            "nac_ablation_bench")


def nac_config(variant: str) -> ml_collections.ConfigDict:
  """`configs/nac.py:<variant>` (loaded from the file next to this one)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nac.py")
  spec = importlib.util.spec_from_file_location("_crl_nac_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def schedule(c: ml_collections.ConfigDict,
             variant: str) -> ml_collections.ConfigDict:
  """The training recipe of configs/nac.py's variant (all but the model and
  the learning rate): the comparison changes the model only."""
  if variant == "default":
    c.num_steps = 2000
    c.evals.test.every_steps = 500
  elif variant == "tiny":
    c.data.eval_examples = 64
    c.xla_fast_compile = True
    c.batch_size = 32
    c.eval_batch_size = 32
    c.num_steps = 20
    c.log_every_steps = 5
    c.optimizer.warmup_steps = 5
    c.checkpoint.every_steps = 5
    c.evals.test.every_steps = 10
  elif variant == "bench":
    c.batch_size = 64
  else:
    raise ValueError(f"No recipe for variant {variant!r}.")
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r} of configs/perceiver.py; "
                     f"known: {', '.join(VARIANTS)}.")
  if variant.startswith("nac_ablation"):
    c = nac_config(variant.partition("nac_ablation_")[2] or "default")
    for key, value in NAC_ABLATION.items():
      c.model[key] = value
    return c
  c = schedule(base_config(), variant)
  if variant == "default":
    c.model = config_lib.component_config(
        registry.MODELS, "perceiver_io",
        tokenizer="convnext", num_latents=32, d_latent=64, num_layers=4,
        num_heads=2, head_dim=32, cross_heads=1, decoder_heads=1,
        ffn_hidden=224)
    c.optimizer.base_learning_rate = 1.2e-2
  elif variant == "tiny":
    c.model = config_lib.component_config(
        registry.MODELS, "perceiver_io",
        tokenizer="patch", patch_size=8, pos_grid_channels=16, num_latents=8,
        d_latent=32, num_layers=1, num_heads=1, head_dim=32, ffn_hidden=64)
  else:  # bench
    c.model = config_lib.component_config(registry.MODELS, "perceiver_io")
  return c
