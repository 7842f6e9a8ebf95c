"""Perceiver IO baselines of NAC on causal shapes (specs/nac.md).

Command (default, CPU):
  python -m crl.main --config=configs/perceiver.py --workdir=runs/perceiver
Runtime: 24m55s wall on the 2-core CPU with two to four other jobs (measured
2026-12-01); nac_ablation 23m37s wall with two other jobs (measured
2026-12-01).
Expected (default, measured 2026-12-01, 2000 steps): 98.35% in-distribution
test accuracy, hue_independent 86.25%. nac_ablation (measured 2026-12-01):
97.05% in-distribution, hue_independent 72.50%.

Variants (`configs/perceiver.py:<variant>`):
  (none)              Perceiver IO matched to the default NAC: 279,146
                      parameters (+1.0%); base learning rate 1.2e-2.
  tiny                a few steps of a very small Perceiver IO; for tests.
  bench               Perceiver IO matched to NAC-S/32: 1,708,522 parameters
                      (+0.8%); batch 64 as NAC's bench.
  nac_ablation        NAC with a complete graph, frozen signatures, no graph
                      prior, no stochastic kernel and Dense instead of ModFC,
                      at the size of configs/nac.py's default (173,866
                      parameters) and with its recipe.
  nac_ablation_tiny   ... of configs/nac.py:tiny; for tests.
  nac_ablation_bench  ... of configs/nac.py:bench (1,015,274 parameters).
"""


import importlib.util
import os

import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config, tiny_schedule

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
    c = tiny_schedule(c)
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
