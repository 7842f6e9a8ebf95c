"""The fault campaign (`python -m crl.fault_campaign`) with a few trials."""

import json
import os
import random
import subprocess
import sys

import pytest

from crl import fault_campaign
from tests import helpers


def test_file_faults_change_one_checkpoint_file(tmp_path):
  step_dir = tmp_path / "checkpoints" / "5" / "default"
  step_dir.mkdir(parents=True)
  (step_dir / "a").write_bytes(bytes(100))
  rng = random.Random(0)
  what = fault_campaign.apply_file_fault("flip", str(tmp_path), rng)
  data = (step_dir / "a").read_bytes()
  assert what.startswith("flipped") and len(data) == 100 and any(data)
  what = fault_campaign.apply_file_fault("truncate", str(tmp_path), rng)
  assert what.startswith("truncated")
  assert len((step_dir / "a").read_bytes()) < 100
  fault_campaign.apply_file_fault("delete", str(tmp_path), rng)
  assert not (step_dir / "a").exists()


def test_outcomes_are_classified():
  assert fault_campaign.classify(2, "I1205 x\ncrl: error: bad\n", "", {}) == (
      "refused", "crl: error: bad")
  assert fault_campaign.classify(
      1, "Traceback (most recent call last):\nValueError: x", "", {}
  )[0] == "unclear"
  assert fault_campaign.classify(0, "", "/nonexistent", {})[0] == "silent"


@pytest.mark.slow
def test_campaign_trials_end_exact_or_refused(tmp_path):
  out = tmp_path / "campaign"
  proc = subprocess.run(
      [sys.executable, "-m", "crl.fault_campaign", "--trials=3", "--seed=3",
       f"--out={out}", "--faults=flip,sigterm,delete"],
      cwd=helpers.ROOT, env=helpers.subprocess_env(), capture_output=True,
      text=True, timeout=900)
  assert os.path.exists(out / "summary.json"), proc.stderr[-3000:]
  with open(out / "summary.json") as f:
    summary = json.load(f)
  counts = summary["counts"]
  assert counts["silent"] == 0 and counts["unclear"] == 0, summary["rows"]
  assert counts["exact"] + counts["refused"] == 3
  assert proc.returncode == 0
