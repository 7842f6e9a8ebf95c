"""`crl.bench --population` rows on `:tiny` configs (the default sizes take
minutes): fields, ratio and the printed line."""

import math

import pytest

from crl import bench
from crl import population_bench


def test_population_bench_row(monkeypatch):
  monkeypatch.setattr(population_bench, "MODELS",
                      {"vit": "configs/vit.py:tiny"})
  r = population_bench.measure(
      "vit", members=2, batch_size=4, steps=1,
      load_config=bench.load_model_config,
      memory_mib=bench._memory_mib,  # pylint: disable=protected-access
      layouts=("per_member",))
  for key in ("alone_member_examples_per_s", "together_member_examples_per_s",
              "alone_peak_mib", "together_peak_mib", "speedup"):
    assert math.isfinite(r[key]) and r[key] > 0, key
  assert r["speedup"] == pytest.approx(
      r["together_member_examples_per_s"] / r["alone_member_examples_per_s"])
  # Two members' state and batches take more memory than one's.
  assert r["together_peak_mib"] > r["alone_peak_mib"]
  assert f"vit population speedup: {r['speedup']:.2f}x" in (
      population_bench.format_row(r))
