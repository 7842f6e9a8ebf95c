"""Neural Interpreters baseline of NAC on causal shapes (specs/nac.md).

Command (default, CPU):
  python -m crl.main --config=configs/interpreters.py --workdir=runs/interpreters
Runtime: 78m00s wall, 69m11s CPU time, with two to four other jobs on the
2 cores for the first 60 minutes (measured 2026-12-01/02).
Expected (measured 2026-12-02, 2000 steps): 93.80% in-distribution test
accuracy, hue_independent 42.55%.

Variants (`configs/interpreters.py:<variant>`):
  (none)  NI matched to the default NAC: width 64, codes 512, 5 functions,
          1 script x 2 iterations: 280,413 parameters (+1.5%).
  tiny    a few steps of a very small NI; for tests.
  bench   NI matched to NAC-S/32: the digits preset with 3 scripts, 1,746,679
          parameters (+3.0%); batch 64; iterations rematerialised (`remat`).
"""


import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config, tiny_schedule

VARIANTS = ("default", "tiny", "bench")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r} of "
                     f"configs/interpreters.py; known: {', '.join(VARIANTS)}.")
  c = base_config()
  if variant == "default":
    c.model = config_lib.component_config(
        registry.MODELS, "interpreters",
        patch_size=4, d_model=64, d_code=512, d_sig=24, num_functions=5,
        num_scripts=1, num_iterations=2, num_heads=2, head_dim=32,
        mlp_hidden=128)
    c.num_steps = 2000
    c.evals.test.every_steps = 500
    c.optimizer.base_learning_rate = 4e-3
  elif variant == "tiny":
    c.model = config_lib.component_config(
        registry.MODELS, "interpreters",
        patch_size=8, d_model=16, d_code=16, d_sig=8, num_functions=3,
        num_scripts=1, num_iterations=2, num_heads=2, head_dim=8,
        mlp_hidden=32, function_dropout=0.1)
    c = tiny_schedule(c)
  else:  # bench
    c.model = config_lib.component_config(
        registry.MODELS, "interpreters", num_scripts=3, mlp_hidden=384,
        remat=True)
    c.batch_size = 64
  return c
