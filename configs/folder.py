"""Your own images: a classifier trained on a folder of class folders.

Command (ROOT/<class>/<image> or ROOT/<split>/<class>/<image>):
  python -m crl.main --config=configs/folder.py --config.data.root=DIR --workdir=runs/mine
Runtime: 589 s for the digits of the README (1,797 PNGs) on 2 CPU cores at a
load average of 15-18 (measured 2026-12-06; a quiet machine is faster).
Expected: 99.44% test accuracy on those digits (docs/results/digits/).

Variants (`configs/folder.py:<model>[,tiny]`):
  (none), cnn   the small-dataset preset with a small CNN (widths 32, 64,
                128; 95k parameters for 10 classes): batch 64, 1000 steps,
                peak learning rate 1e-2 (base 8e-2 at batch 512), 50 warmup
                steps, no augmentation; from a short sweep on the digits
                (docs/results/digits_sweep/: peak 2.5e-3 / 1e-2 / 4e-2 gave
                85.0 / 90.0 / 88.0% at 300 steps; random 4 px crops lost 5.3
                points at 300 steps and 0.8 at 1000). For photos whose
                objects are not centred, try --config.augment="('crop',
                'flip')" (flip, crop, hue; see crl/trainers/augmented.py).
  nac, vit, perceiver, resnet, interpreters
                the same preset with that config file's default model
                (configs/<name>.py; larger and slower on a CPU).
  <model>,tiny  a few steps at 16 px with random crops; for tests.
"""

import os

import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config

MODEL_CONFIGS = ("nac", "vit", "perceiver", "resnet", "interpreters")


def _model_of(name: str) -> ml_collections.ConfigDict:
  """The `model` section of configs/<name>.py's default variant."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      f"{name}.py")
  return ml_collections.ConfigDict(
      config_lib.to_plain(config_lib.load_config(path).model))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  model, _, size = (arg or "cnn").partition(",")
  if model not in ("cnn",) + MODEL_CONFIGS or size not in ("", "tiny"):
    raise ValueError(f"Unknown variant {arg!r} of configs/folder.py; known: "
                     f"<model>[,tiny] with model one of cnn, "
                     f"{', '.join(MODEL_CONFIGS)}.")
  tiny = size == "tiny"
  c = base_config()
  c.trainer = "augmented_classification"
  c.data = config_lib.component_config(
      registry.DATASETS, "image_folder", root="",
      resolution=16 if tiny else 32)
  if model == "cnn":
    c.model = config_lib.component_config(
        registry.MODELS, "cnn", widths=(8, 16) if tiny else (32, 64, 128))
  else:
    c.model = _model_of(model)
  # The sweep: crops hurt on the digits (see above); tiny runs crop so that
  # the tests go through the augmentation.
  c.augment = ("crop",) if tiny else ()
  c.batch_size = 16 if tiny else 64
  c.eval_batch_size = 32 if tiny else 256
  c.num_steps = 6 if tiny else 1000
  c.log_every_steps = 2 if tiny else 50
  c.optimizer.base_learning_rate = 8e-2
  c.optimizer.warmup_steps = 2 if tiny else 50
  c.checkpoint.every_steps = 3 if tiny else 500
  c.evals.test.every_steps = 3 if tiny else 250
  c.xla_fast_compile = tiny
  return c
