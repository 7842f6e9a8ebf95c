"""Pretraining a backbone on the procedural source (the study's "ImageNet").

Command (default: the ViT of configs/vit.py, CPU):
  python -m crl.main --config=configs/pretrain.py --workdir=runs/pretrain
Other models: `configs/pretrain.py:<model>` or `:<model>_tiny` with model in
vit, nac, perceiver, interpreters, resnet (the model section of
`configs/<model>.py`, default or tiny variant; its learning rate too).
Runtime: the 2000-step default was not run to the end. Measured
2026-12-05 on the shared 2-core CPU with several other jobs (load ~12):
67-89 examples/s, so about 50-60 minutes for 2000 steps of batch 128 under
that load. `:tiny` (20 steps) takes 37 s end to end.
Expected: the run directory of a normal classification run (checkpoints,
metrics, results.json with the source test accuracy over 70 classes, chance
1.43%), to be named by `--config.init_from=DIR` of a fine-tuning run. The
source is hard and learned slowly: a 300-step run (`--config.num_steps=300
--config.optimizer.warmup_steps=50`) reached 2.30% accuracy on 1000 test
images (NLL 4.07 against ln 70 = 4.25); the full run's accuracy is not
measured yet.
"""

import os

import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config

MODEL_FILES = {"vit": "vit.py", "nac": "nac.py", "perceiver": "perceiver.py",
               "interpreters": "interpreters.py", "resnet": "resnet.py"}
DEFAULT_MODEL = "vit"


def _model_config(model: str, variant: str) -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      MODEL_FILES[model])
  if not os.path.exists(path):
    raise ValueError(f"configs/pretrain.py:{model} needs configs/"
                     f"{MODEL_FILES[model]}, which does not exist.")
  return config_lib.load_config_module(path).get_config(variant)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = arg or DEFAULT_MODEL
  if arg == "tiny":
    arg = f"{DEFAULT_MODEL}_tiny"
  model, _, variant = arg.partition("_")
  if model not in MODEL_FILES or variant not in ("", "tiny"):
    raise ValueError(
        f"Unknown variant {arg!r} of configs/pretrain.py; known: tiny, "
        f"<model> and <model>_tiny with model in {', '.join(MODEL_FILES)}.")
  tiny = variant == "tiny"
  source = _model_config(model, "tiny" if tiny else "default")
  c = base_config()
  c.model = source.model
  c.optimizer.base_learning_rate = source.optimizer.base_learning_rate
  c.data = config_lib.component_config(registry.DATASETS, "pretrain_source")
  if tiny:
    c.data.eval_examples = 64
    c.xla_fast_compile = True
    c.batch_size = 32
    c.eval_batch_size = 32
    c.num_steps = 20
    c.log_every_steps = 5
    c.optimizer.warmup_steps = 5
    c.checkpoint.every_steps = 10
    c.evals.test.every_steps = 10
  else:
    c.num_steps = 2000
    c.evals.test.every_steps = 500
  return c
