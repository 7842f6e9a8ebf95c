"""Vision Transformer baseline of NAC on causal shapes (specs/nac.md).

Command (default, CPU):
  python -m crl.main --config=configs/vit.py --workdir=runs/vit
Runtime: 39m24s wall, 26m48s CPU time, with two to three other jobs on the
2 cores (measured 2026-12-01; a train step takes 2.19x the time of
configs/nac.py's default side by side, and that default trains in 11
minutes on a quiet machine, so about 24 minutes there).
Expected (measured 2026-12-01, 2000 steps): 95.35% in-distribution test
accuracy; hue_independent 57.60%, unseen_hue 50.45%, scale_out 36.25%,
border_position 86.00%, unseen_background 95.35%, unseen_rotation 77.40%,
unseen_combination 19.10%, novel-class MSP AUROC 0.873. Against NAC's
default (96.95% ID; hue_independent 71.40%, border_position 67.30%) the ViT
leans harder on the spurious hue but does better on positions and
rotations it has not seen (one seed each; the OOD suite's seeds show the
spread).

`crl.models.vit.ViT`: 4 px patch embedding (64 patch tokens for 32 px
images), class token, learned position embedding, pre-LN encoder blocks, head
on the class token. Same data, batch size 128, 2000 steps and schedule as
configs/nac.py (the recipe is shared with configs/perceiver.py).

Variants (`configs/vit.py:<variant>`):
  (none)  ViT matched to the default NAC (276,288 parameters): width 64,
          2 heads x 32 (NAC default's state width and heads), 6 blocks, GELU
          MLPs of hidden 224 (3.5x): 282,890 parameters (+2.4%). Base
          learning rate 4e-3 (peak 1e-3 at batch 128), the best of the sweep
          below.
  tiny    a few steps of a very small ViT; for tests (47 s end to end on
          the shared 2-core CPU).
  bench   ViT matched to NAC-S/32 (1,695,246): width 128, 4 heads x 32,
          8 blocks, GELU MLPs of hidden 512: 1,601,418 parameters (-5.5%);
          batch 64 as NAC's bench.

Learning-rate sweep (default model, 300-step runs of
`--config.num_steps=300 --config.optimizer.warmup_steps=30`; accuracy on the
2000-image test and hue_independent splits; wall time on a shared 2-core CPU
with several other jobs running, so only roughly comparable):
  base lr 4e-3:   test 92.05%, hue_independent 19.45%, 1028 s
  base lr 1.2e-2: test 91.85%, hue_independent 17.55%, 1215 s
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
