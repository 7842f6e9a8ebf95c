"""One classifier trained under a demographic-parity penalty.

Command (default: MLP on the procedural tabular data, lambda 5):
  python -m crl.main --config=configs/fair.py --workdir=runs/fair
  (any lambda: --config.fairness.penalty_weight=20; the sweep, probes and the
  two-headed model: configs/two_heads.py)
Runtime: 1m17s on the shared 2-core CPU (measured 2026-11-22 with other
  jobs running, load average 12; 28 s of CPU time), TensorBoard included.
Expected: test accuracy 0.810 with |DDP| 0.132 (the unconstrained MLP:
  0.837 and 0.339), equalized-odds difference 0.066, and a linear probe on
  the penultimate features predicts the protected attribute with accuracy
  0.921 (0.851 for the unconstrained MLP; majority group 0.60); bitwise
  reproducible.

Variants (`configs/fair.py:<variant>`):
  (none)   MLP (128, 32) on fair_tabular, squared parity penalty, lambda 5.
  tiny     a few steps of a small MLP; for tests.
  shapes   a small NAC on fair_shapes (the attribute shows as the background
           hue, the target is the shape). Not timed end to end: 30 steps ran
           at 167 examples/s on the shared CPU, so 1500 steps take about 20
           minutes on 2 cores; minutes on an accelerator.
  celeba   the small NAC on TFDS CelebA at 32 px (target Smiling, protected
           Male; --config.data.group_key=Male,Young for 4 groups); the data
           must be prepared locally (config.data.data_dir). Not timed.
"""

import ml_collections

from crl import config_lib
from crl import registry
from crl.trainers import fairness


def nac_model(**overrides) -> ml_collections.ConfigDict:
  """A small NAC for 32 px images (the tiny NAC of configs/nac.py, wider)."""
  kwargs = dict(
      tokenizer="patch", patch_size=8, d_state=32, d_code=32, d_sig=16,
      num_input_modules=8, num_mediator_modules=8, inputs_are_mediators=True,
      num_output_modules=2, num_layers=1, num_heads=1, head_dim=32,
      read_in_heads=1, read_out_heads=1, shared_read_in_projection=True,
      ffn_hidden=64, pos_grid_channels=16, prior_fit_steps=50,
      graph_prior="barabasi_albert", graph_prior_kwargs={"m": 2})
  kwargs.update(overrides)
  return config_lib.component_config(registry.MODELS, "nac", **kwargs)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant == "default":
    c = fairness.base_config("fair_tabular")
    c.fairness.penalty_weight = 5.0
  elif variant == "tiny":
    c = fairness.base_config("fair_tabular", eval_examples=256)
    c.model.hidden = (16, 8)
    c.fairness.penalty_weight = 5.0
    c.tensorboard = False
    c.xla_fast_compile = True
    c.batch_size = 64
    c.eval_batch_size = 128
    c.num_steps = 20
    c.log_every_steps = 10
    c.optimizer.warmup_steps = 5
    c.checkpoint.every_steps = 10
    c.evals.test.every_steps = 10
  elif variant in ("shapes", "celeba"):
    c = fairness.base_config("fair_shapes" if variant == "shapes" else
                             "celeba")
    c.model = nac_model()
    c.fairness.penalty_weight = 5.0
    c.batch_size = 128
    c.eval_batch_size = 500
    c.num_steps = 1500
    c.optimizer.base_learning_rate = 4e-3
    c.evals.test.every_steps = 500
    if variant == "celeba":
      c.data.resolution = 32
      c.num_steps = 5000
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/fair.py; known: "
                     "default, tiny, shapes, celeba.")
  return c
