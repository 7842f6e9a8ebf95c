"""Neural Interpreters baseline of NAC on causal shapes (specs/nac.md).

Command (default, CPU):
  python -m crl.main --config=configs/interpreters.py --workdir=runs/interpreters
Runtime: 78m00s wall, 69m11s CPU time (measured 2026-12-01/02; two to
  four other jobs shared the 2 cores for the first 60 minutes, and alone it
  ran at about 90-100 examples/s, so about 45 minutes on a quiet 2-core CPU;
  NAC's default: 11 minutes).
Expected (measured 2026-12-02, 2000 steps): 93.80% in-distribution test
  accuracy; hue_independent 42.55%, unseen_hue 37.90%, scale_out 39.95%,
  border_position 85.00%, unseen_background 92.85%, unseen_rotation 79.60%,
  unseen_combination 6.75%, novel-class MSP AUROC 0.850. Of the five
  models it relies most on the spurious hue, and like ViT (the other
  patch-token model) it does well on unseen positions and rotations.

`crl.models.interpreters.NeuralInterpreter`: 4 px patch embedding (64 patch
tokens for 32 px images) + learned positions + a class token; per iteration,
token types from a shared MLP pick functions through a truncated cosine
kernel, each function runs code-modulated attention and MLP on its share of
the tokens, and the outputs are mixed back. Same data, batch size 128, 2000
steps and schedule as configs/nac.py.

Every weight of a function pod is applied to every (token, function) pair in
every iteration, so NI costs about U x T FLOPs per weight and iteration (U
functions, T tokens); a NI matched to NAC's parameter count cannot have NAC's
width and iterations on a CPU. The default therefore keeps the digits
preset's structure (5 functions, truncation 1.42, learned bandwidth, fixed
signatures, types of 24 channels, relative positional bias) at width 64 and
2 iterations, and reaches the parameter count with wide function codes (code
projections cost no per-token compute).

Variants (`configs/interpreters.py:<variant>`):
  (none)  NI matched to the default NAC (276,288 parameters): width 64,
          codes 512, 5 functions, 1 script x 2 iterations, 2 heads x 32,
          ModMLP hidden 128: 280,413 parameters (+1.5%).
  tiny    a few steps of a very small NI; for tests.
  bench   NI matched to NAC-S/32 (1,695,246): the digits preset (width 192,
          codes 192, 5 functions, 8 iterations, 4 heads x 32) with 3 scripts
          and ModMLP hidden 384: 1,746,679 parameters (+3.0%); batch 64 as
          NAC's bench; iterations rematerialised (`remat`): the train step
          needs 768 MiB instead of 13,485 MiB (XLA's memory analysis) and
          ran 1.31x faster (3.73 vs 2.85 examples/s, `python -m crl.bench`,
          2026-12-02, quiet 2-core CPU) for 29% more FLOPs.
"""

import ml_collections

from crl import config_lib
from crl import registry
from crl.config_base import base_config

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
    c.data.eval_examples = 64
    c.xla_fast_compile = True
    c.batch_size = 32
    c.eval_batch_size = 32
    c.num_steps = 20
    c.log_every_steps = 5
    c.optimizer.warmup_steps = 5
    c.checkpoint.every_steps = 5
    c.evals.test.every_steps = 10
  else:  # bench
    c.model = config_lib.component_config(
        registry.MODELS, "interpreters", num_scripts=3, mlp_hidden=384,
        remat=True)
    c.batch_size = 64
  return c
