"""`crl.bench --device` harness: row fields, MFU arithmetic, table, on a CPU
with `:tiny` configs (the real check runs on an accelerator, not in CI)."""

import math

import pytest

from crl import bench_device


def test_peak_table_lookup():
  assert bench_device.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == (
      pytest.approx(989.4e12))
  assert bench_device.peak_flops("NVIDIA H100 PCIe", "float32") == (
      pytest.approx(378e12))
  assert bench_device.peak_flops("NVIDIA H200", "bfloat16") == (
      pytest.approx(989.4e12))
  assert bench_device.peak_flops("TPU v5 lite", "float32") == (
      pytest.approx(197e12))
  assert math.isnan(bench_device.peak_flops("cpu", "float32"))


def test_rows_and_table_on_cpu(monkeypatch):
  monkeypatch.setattr(bench_device, "peak_flops", lambda kind, dtype: 1e10)
  out = bench_device.run(steps=1, rows={"vit_tiny": ("configs/vit.py:tiny",
                                                     4)})
  rows = out["rows"]
  assert [r["compute_dtype"] for r in rows] == ["float32", "bfloat16"]
  assert rows[0]["params"] == rows[1]["params"] > 0
  for r in rows:
    for key in ("train_gflop_per_example", "train_examples_per_s", "mfu",
                "peak_memory_gib", "compile_s"):
      assert math.isfinite(r[key]) and r[key] > 0, key
    assert r["mfu"] == pytest.approx(
        r["train_gflop_per_example"] * 1e9 * r["train_examples_per_s"] / 1e10)
  table = bench_device.format_table(rows).splitlines()
  assert len(table) == 4 and table[0].split()[:2] == ["row", "dtype"]
  assert out["platform"] == "cpu"
