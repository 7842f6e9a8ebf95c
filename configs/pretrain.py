"""Pretraining a backbone on the procedural source (the study's "ImageNet").

Command (default: `vit_small`, CPU):
  python -m crl.main --config=configs/pretrain.py --workdir=runs/pretrain
Other models: `configs/pretrain.py:<model>`, `:<model>_tiny` with model in
vit, nac, perceiver, interpreters, resnet (the model section of
`configs/<model>.py`, default or tiny variant; its learning rate too), and
`:<model>_small` with model in vit, nac, perceiver, resnet (`small_model`,
the models of configs/sweep.py and of the transfer study; 1000 steps of
batch 64, peak lr 1e-3).
Runtime: 7 min wall for the default (measured 2026-12-05 on the shared
2-core CPU at load 8-19, nice 5); `:tiny` (20 steps) about 40 s.
Expected (default, docs/results/pretrain_vit_small/): source test accuracy
over 14 classes (chance 7.1%) by step: 100 9.6%, 300 10.2%, 500 12.1%, 600
14.8%, 800 13.6%, 1000 15.5% (NLL 2.64 -> 2.36, top-5 39% -> 58%; 1000 test
images, so +-2.2 points). The source is learnable but slow for these small
models; the former 70-class source (`--config.data.classes=shape_pattern`)
stayed at chance (loss ln 70) for 400 steps at peak lr 5e-4
(crl/data/multi_domain.py says why). The run directory is named by
`--config.init_from=DIR` of a fine-tuning run.
"""

import os

import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config
from crl.config_base import tiny_schedule

MODEL_FILES = {"vit": "vit.py", "nac": "nac.py", "perceiver": "perceiver.py",
               "interpreters": "interpreters.py", "resnet": "resnet.py"}
DEFAULT_MODEL = "vit"
DEFAULT_VARIANT = "vit_small"
SIZES = ("", "tiny", "small")
SMALL_MODELS = ("nac", "perceiver", "vit", "resnet")


def small_model(model: str) -> ml_collections.ConfigDict:
  """The small models (2 blocks, 4 px patches: 64 tokens) that the CPU study
  of configs/sweep.py pretrains and compares, for 10 classes: NAC 147,376
  parameters (width 48), Perceiver IO 145,418 (width 64, matched to NAC
  within 1.3%), ViT 43,930 (width 48; smaller, the secondary baseline); and
  the transfer study's ResNet-10 (one basic block per stage, width 8,
  GroupNorm: 78,002 parameters)."""
  if model == "resnet":
    return config_lib.component_config(
        registry.MODELS, "resnet", depth=10, width=8, stem="small",
        norm="group")
  if model == "vit":
    return config_lib.component_config(
        registry.MODELS, "vit", patch_size=4, d_model=48, num_layers=2,
        num_heads=2, mlp_hidden=96)
  if model == "perceiver":
    return config_lib.component_config(
        registry.MODELS, "perceiver_io", tokenizer="patch", patch_size=4,
        pos_grid_channels=16, num_latents=16, d_latent=64, num_layers=2,
        num_heads=2, head_dim=32, ffn_hidden=176)
  if model == "nac":
    return config_lib.component_config(
        registry.MODELS, "nac", tokenizer="patch", patch_size=4, d_state=48,
        d_code=48, d_sig=16, num_input_modules=16, num_mediator_modules=16,
        inputs_are_mediators=True, num_output_modules=4, num_layers=2,
        num_heads=2, head_dim=24, read_in_heads=1, read_out_heads=1,
        shared_read_in_projection=True, ffn_hidden=96, pos_grid_channels=16,
        prior_fit_steps=100, graph_prior="barabasi_albert",
        graph_prior_kwargs={"m": 2})
  raise ValueError(f"No small model for {model!r}; known: nac, perceiver, "
                   "vit, resnet.")


def _model_config(model: str, variant: str) -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      MODEL_FILES[model])
  if not os.path.exists(path):
    raise ValueError(f"configs/pretrain.py:{model} needs configs/"
                     f"{MODEL_FILES[model]}, which does not exist.")
  return config_lib.load_config_module(path).get_config(variant)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = arg or DEFAULT_VARIANT
  if arg == "tiny":
    arg = f"{DEFAULT_MODEL}_tiny"
  model, _, variant = arg.partition("_")
  if model not in MODEL_FILES or variant not in SIZES or (
      variant == "small" and model not in SMALL_MODELS):
    raise ValueError(
        f"Unknown variant {arg!r} of configs/pretrain.py; known: tiny, "
        f"<model> and <model>_tiny with model in {', '.join(MODEL_FILES)}, "
        f"<model>_small with model in {', '.join(SMALL_MODELS)}.")
  tiny = variant == "tiny"
  source = _model_config(model, "tiny" if tiny else "default")
  c = base_config()
  c.model = source.model
  c.optimizer.base_learning_rate = source.optimizer.base_learning_rate
  c.data = config_lib.component_config(registry.DATASETS, "pretrain_source")
  if variant == "small":
    c.model = small_model(model)
    c.optimizer.base_learning_rate = 8e-3  # peak 1e-3 at batch 64
    c.batch_size = 64
    c.num_steps = 1000
    c.optimizer.warmup_steps = 100
    c.log_every_steps = 50
    c.checkpoint.every_steps = 500
    c.evals.test.every_steps = 100
    c.data.eval_examples = 1000
  elif tiny:
    tiny_schedule(c)
    c.checkpoint.every_steps = 10
  else:
    c.num_steps = 2000
    c.evals.test.every_steps = 500
  return c
