"""Paper-scale configs stay alive: one train step of every paper-scale
variant is lowered ahead of time (`jax.jit(...).lower(...)`) on the CPU with
a reduced batch (2), from abstract shapes (nothing is allocated; TFDS data
is not read); the ViT one is also compiled (`.compile()`, its FLOPs must
agree with the lowered estimate). The others are lowered only: their CPU
compiles took 18-72 s each on the loaded 2-core machine (NAC-S/32 23-37 s,
Tiny-ImageNet NAC 72 s), too long for CI. Prints parameter counts and FLOPs per example (XLA's cost
analysis of the lowered step: forward, backward, optimizer)."""

import jax
import pytest

from crl import bench_device
from tests.models import test_vit

BATCH = 2
PAPER_SCALE = ("configs/nac.py:bench", "configs/nac.py:official_s32",
               "configs/nac.py:tiny_imagenet", "configs/nac.py:imagenet",
               "configs/perceiver.py:bench",
               "configs/perceiver.py:nac_ablation_bench",
               "configs/vit.py:bench", "configs/interpreters.py:bench")
COMPILED = ("configs/vit.py:bench",)
# Floors that a silently shrunken model would fail.
MIN_PARAMS = {"configs/nac.py:tiny_imagenet": 20e6,
              "configs/nac.py:imagenet": 20e6}


def _flops(analysis):
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis["flops"])


@pytest.mark.parametrize("spec", PAPER_SCALE)
def test_one_train_step_lowers(spec):
  config = bench_device._config(spec, "float32")  # pylint: disable=protected-access
  step, _, (_, state), batch = bench_device.abstract_step(config, BATCH)
  lowered = step.lower(state, batch)
  params = sum(x.size for x in jax.tree.leaves(state.params))
  flops = _flops(lowered.cost_analysis()) / BATCH
  if spec in COMPILED:
    compiled_flops = bench_device.flops(lowered.compile()) / BATCH
    assert compiled_flops == pytest.approx(flops, rel=0.05)
  print(f"\n{spec}: {params:,} params, {flops / 1e9:.3f} GFLOP/example "
        f"(train step)")
  assert params >= MIN_PARAMS.get(spec, 1e6)
  assert flops > 2 * params  # at least a multiply-add per parameter
  if spec == "configs/nac.py:bench":
    assert params == test_vit.NAC_BENCH_PARAMS
