"""`crl.bench --population` rows on `:tiny` configs (the default sizes take
minutes): fields, ratio and the printed line."""

import gzip
import json
import math

import pytest

from crl import bench
from crl import population_bench


def test_population_bench_row(monkeypatch, tmp_path):
  monkeypatch.setattr(population_bench, "MODELS",
                      {"vit": "configs/vit.py:tiny"})
  r = population_bench.measure(
      "vit", members=2, batch_size=4, steps=1,
      load_config=bench.load_model_config,
      memory_mib=bench._memory_mib,  # pylint: disable=protected-access
      layouts=("per_member",), profile_dir=str(tmp_path))
  for key in ("alone_member_examples_per_s", "together_member_examples_per_s",
              "alone_peak_mib", "together_peak_mib", "speedup"):
    assert math.isfinite(r[key]) and r[key] > 0, key
  assert r["speedup"] == pytest.approx(
      r["together_member_examples_per_s"] / r["alone_member_examples_per_s"])
  # Two members' state and batches take more memory than one's.
  assert r["together_peak_mib"] > r["alone_peak_mib"]
  assert f"vit population speedup: {r['speedup']:.2f}x" in (
      population_bench.format_row(r))
  # Two members do twice one member's work; the traces saw every op.
  assert r["layouts"]["per_member"]["gflop"] == pytest.approx(
      r["alone_gflop"], rel=0.05)
  for way in ("alone", "per_member"):
    p = r["profile"][way]
    assert p["op_executions"] > 10 and 0 < p["op_ms"]
    assert sum(p["classes_ms"].values()) == pytest.approx(p["op_ms"])
    assert p["classes_ms"]["matmul/conv"] > 0
    assert sum(p["thread_busy_ms"]) == pytest.approx(p["op_ms"])


def test_trace_summary_of_a_hand_made_trace(tmp_path):
  d = tmp_path / "plugins" / "profile" / "run"
  d.mkdir(parents=True)
  def op(name, tid, ts, dur):
    return {"ph": "X", "name": name, "tid": tid, "ts": ts, "dur": dur,
            "args": {"hlo_op": name}}
  events = [op("ynn_fusion.3", 1, 0, 3000), op("copy.7", 2, 1000, 1000),
            op("ynn_fusion.9", 2, 2000, 2000), op("add_fusion", 1, 3000, 1000),
            {"ph": "X", "name": "ThunkExecutor::Execute", "tid": 1, "ts": 0,
             "dur": 9000}]
  with gzip.open(d / "perfetto_trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  assert population_bench.trace_summary(str(tmp_path), top=2) == {
      "wall_ms": 4.0, "op_ms": 7.0, "op_executions": 4,
      "thread_busy_ms": [4.0, 3.0],
      "classes_ms": {"matmul/conv": 5.0, "copy/transpose": 1.0,
                     "other (elementwise, reduce)": 1.0},
      "top_ops_ms": {"ynn_fusion": 5.0, "copy": 1.0}}
