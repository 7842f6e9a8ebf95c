"""The shared part of every image-classification config (`configs/*.py`).

Configs are plain files loaded by path, so what they share lives here:
`base_config()` is everything but the model (data, optimizer, loss,
checkpointing, evaluations); each config sets `c.model` and adjusts.
"""

import ml_collections

from crl import config_lib
from crl import registry


def base_config() -> ml_collections.ConfigDict:
  """Everything but the model; shared by the variants of every image config."""
  c = ml_collections.ConfigDict()
  c.trainer = "classification"
  c.seed = 0
  # Model math dtype (crl.models.precision): float32 or bfloat16; params,
  # optimizer state, softmax, normalisation statistics and loss stay float32.
  c.compute_dtype = "float32"
  # Micro-batches per step (crl.runtime): must divide the per-device batch.
  c.grad_accum_steps = 1
  # Devices on the mesh's `fsdp` axis (params/opt state sharded, crl.runtime).
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1))
  # JAX's persistent compilation cache: a directory, '' (off) or 'auto' (on
  # accelerators under ~/.cache/crl/jax_compile, off on CPU).
  c.compile_cache_dir = "auto"
  c.data = config_lib.component_config(registry.DATASETS, "causal_shapes")
  c.batch_size = 128
  c.eval_batch_size = 500
  c.num_steps = 3000
  c.log_every_steps = 50
  c.tensorboard = True
  # Skip most XLA optimisations: faster compiles, slower steps (tiny runs).
  c.xla_fast_compile = False
  c.optimizer = ml_collections.ConfigDict(dict(
      base_learning_rate=5e-4, base_batch_size=512, warmup_steps=200,
      end_learning_rate_factor=0.01, weight_decay=0.05, clip_norm=1.0,
      b1=0.9, b2=0.999, eps=1e-8))
  c.loss = ml_collections.ConfigDict(dict(label_smoothing=0.1))
  # A run directory or a weights file (.npz, .safetensors) whose backbone
  # initialises a fresh run (crl.pretrained); '' for none.
  c.init_from = ""
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=3,
                                                async_save=True))
  # Periodic evaluation on the in-distribution test split.
  c.evals = ml_collections.ConfigDict(dict(
      test=dict(type="classification", splits=("test",), every_steps=1000)))
  # At the end: every split the dataset has (ID test and every intervention).
  c.final_eval = ml_collections.ConfigDict(dict(type="classification",
                                                splits="all"))
  return c


def tiny_schedule(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`c` shrunk to a few fast steps (the `:tiny` variants that tests run):
  small batches and eval splits, frequent logs, checkpoints and evals."""
  c.data.eval_examples = 64
  c.xla_fast_compile = True
  c.batch_size = 32
  c.eval_batch_size = 32
  c.num_steps = 20
  c.log_every_steps = 5
  c.optimizer.warmup_steps = 5
  c.checkpoint.every_steps = 5
  c.evals.test.every_steps = 10
  return c
