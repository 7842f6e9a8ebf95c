"""ResNet on causal shapes: the transfer-learning study's backbone.

Command (default, CPU):
  python -m crl.main --config=configs/resnet.py --workdir=runs/resnet
Runtime: not measured for the full 2000 steps. A 40-step probe (2026-12-05,
`--config.num_steps=40`) trained at 36 examples/s (3.5 s per step of 128)
with a load average of 14 on the 2 cores, i.e. about 2 hours for the
default there; a quiet machine is several times faster (not measured).
Expected: not measured yet (the probe, 40 steps of the warmup, reached
26.85% test accuracy). The learning rate is base_config's (base 5e-4,
peak 1.25e-4 at batch 128), not tuned for this model.

`crl.models.resnet.ResNet` with BatchNorm (running statistics in the train
state's `model_state`, used at evaluation and checkpointed). Same data, batch
size 128, 2000 steps and schedule as configs/nac.py (the recipe shared with
configs/perceiver.py and configs/vit.py).

Variants (`configs/resnet.py:<variant>`):
  (none)  ResNet-18 layout with a 'small' stem (3x3/1 conv, no max pool) for
          32 px images, width 16: 701,466 parameters for 10 classes.
  tiny    ResNet-10 layout (one basic block per stage), width 4, a few
          steps; for tests.
  18, 26, 50
          the standard ImageNet ResNets (7x7/2 stem, width 64; basic blocks
          for 18, bottleneck blocks for 26 and 50), the layouts of timm's
          resnet18 / resnet26 / resnet50, to fine-tune from their weights
          with `--config.init_from=FILE.safetensors`. timm's weights expect
          `--config.model.pixel_mean='(0.485, 0.456, 0.406)'
          --config.model.pixel_std='(0.229, 0.224, 0.225)'`.
"""

import importlib.util
import os

import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config

VARIANTS = ("default", "tiny", "18", "26", "50")


def _schedule(c: ml_collections.ConfigDict,
              variant: str) -> ml_collections.ConfigDict:
  """configs/perceiver.py's `schedule`: the recipe of configs/nac.py."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "perceiver.py")
  spec = importlib.util.spec_from_file_location("_crl_perceiver_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.schedule(c, variant)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = str(arg or "default")
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r} of configs/resnet.py; "
                     f"known: {', '.join(VARIANTS)}.")
  c = _schedule(base_config(), "tiny" if variant == "tiny" else "default")
  if variant == "default":
    c.model = config_lib.component_config(
        registry.MODELS, "resnet", depth=18, width=16, stem="small")
  elif variant == "tiny":
    c.model = config_lib.component_config(
        registry.MODELS, "resnet", depth=10, width=4, stem="small")
  else:
    c.model = config_lib.component_config(registry.MODELS, "resnet",
                                          depth=int(variant))
  return c
