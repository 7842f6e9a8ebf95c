"""Vision Transformer baseline of NAC on causal shapes (specs/nac.md).

Command (default, CPU):
  python -m crl.main --config=configs/vit.py --workdir=runs/vit
Runtime: 39m24s wall, 26m48s CPU time, with two to three other jobs on the
2 cores (measured 2026-12-01).
Expected (measured 2026-12-01, 2000 steps): 95.35% in-distribution test
accuracy, hue_independent 57.60%.

Variants (`configs/vit.py:<variant>`):
  (none)  ViT matched to the default NAC: width 64, 6 blocks, 282,890
          parameters (+2.4%); base learning rate 4e-3.
  tiny    a few steps of a very small ViT; for tests.
  bench   ViT matched to NAC-S/32: width 128, 8 blocks, 1,601,418 parameters
          (-5.5%); batch 64 as NAC's bench.
"""

import os

import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config

VARIANTS = ("default", "tiny", "bench")


def _schedule(c: ml_collections.ConfigDict,
              variant: str) -> ml_collections.ConfigDict:
  """configs/perceiver.py's `schedule`: the recipe of configs/nac.py."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "perceiver.py")
  return config_lib.load_config_module(path).schedule(c, variant)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r} of configs/vit.py; known: "
                     f"{', '.join(VARIANTS)}.")
  c = _schedule(base_config(), variant)
  if variant == "default":
    c.model = config_lib.component_config(
        registry.MODELS, "vit", patch_size=4, d_model=64, num_layers=6,
        num_heads=2, mlp_hidden=224)
    c.optimizer.base_learning_rate = 4e-3
  elif variant == "tiny":
    c.model = config_lib.component_config(
        registry.MODELS, "vit", patch_size=8, d_model=32, num_layers=1,
        num_heads=1, mlp_hidden=64)
  else:  # bench
    c.model = config_lib.component_config(registry.MODELS, "vit")
  return c
