"""`crl.bench`: every row's fields, the ratios and the table, on `:tiny`
configs (the `:bench` sizes take minutes)."""

import math

import pytest

from crl import bench
from crl import config_lib

_TINY = {
    "nac": ("configs/nac.py:tiny", {}),
    "perceiver_io": ("configs/perceiver.py:tiny", {}),
}


def test_rows_ratios_and_table(monkeypatch):
  monkeypatch.setattr(bench, "MODELS", _TINY)
  monkeypatch.setattr(bench, "matmul_flops_per_s", lambda: 1e10)
  out = bench.run(list(_TINY), batch_size=4, steps=1)
  rows = {r["model"]: r for r in out["models"]}
  assert list(rows) == list(_TINY)
  for r in rows.values():
    assert r["params"] > 0 and r["batch_size"] == 4
    for key in ("train_gflop_per_example", "infer_gflop_per_example",
                "train_examples_per_s", "infer_examples_per_s",
                "compile_s", "peak_memory_mib", "mfu"):
      assert math.isfinite(r[key]) and r[key] > 0, key
    # A train step (forward, backward, update) costs more than inference.
    assert r["train_gflop_per_example"] > r["infer_gflop_per_example"]
    assert r["mfu"] == pytest.approx(
        r["train_gflop_per_example"] * 1e9 * r["train_examples_per_s"] / 1e10)
  ratios = out["ratios"]
  assert ratios["nac_over_perceiver_io_time_per_example"] == pytest.approx(
      rows["nac"]["train_ms_per_example"]
      / rows["perceiver_io"]["train_ms_per_example"])
  assert set(ratios) == {"nac_over_perceiver_io_time_per_example"}
  table = bench.format_table(out["models"]).splitlines()
  assert len(table) == 2 + len(_TINY) and table[0].split()[0] == "model"
  assert out["machine"]["devices"] and out["peak_rss_mib"] > 0


def test_unknown_model_is_refused():
  with pytest.raises(config_lib.ConfigError, match="unknown bench model"):
    bench.run(["nac", "resnet"], batch_size=4, steps=1)


def test_transfer_rows(monkeypatch):
  from crl import bench_transfer as transfer_bench  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(bench, "matmul_flops_per_s", lambda: 1e10)
  monkeypatch.setattr(transfer_bench, "MODEL_SPEC", "configs/vit.py:tiny")
  # One policy here (test_augment compiles them all).
  monkeypatch.setattr(transfer_bench, "POLICIES", ("standard",))
  monkeypatch.setattr(transfer_bench, "ATTACKS", (
      ("fgsm", {"name": "fgsm"}),
      ("apgd2_dlr", {"name": "apgd", "steps": 2, "loss": "dlr"})))
  out = bench.run([], batch_size=4, steps=1, transfer=True)
  names = [r["name"] for r in out["transfer"]]
  assert names == ["augment/standard", "attack/fgsm", "attack/apgd2_dlr"]
  assert all(r["images_per_s"] > 0 for r in out["transfer"])
  assert len(transfer_bench.format_table(out["transfer"]).splitlines()) == 5
