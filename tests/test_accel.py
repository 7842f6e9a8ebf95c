"""Accelerator-scale options end to end: mixed precision, bad inputs."""

import json
import os

import jax
import numpy as np

from crl.tasks import classification
from tests import helpers


def _train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return [r["loss"] for r in rows if r["split"] == "train"]


def test_tiny_bfloat16_run_loss_falls(tmp_path):
  config = helpers.tiny_config(**{
      "compute_dtype": "bfloat16", "num_steps": 16, "log_every_steps": 1,
      "checkpoint.async_save": False, "final_eval.splits": "test",
      "evals": {}})
  workdir = str(tmp_path / "bf16")
  out = classification.train_and_evaluate(config, workdir)
  losses = np.asarray(_train_losses(workdir))
  assert len(losses) == 16 and np.all(np.isfinite(losses))
  assert losses[-4:].mean() < losses[:4].mean() - 0.05, losses
  for leaf in jax.tree.leaves(out["params"]):  # stored in float32
    assert leaf.dtype == np.float32


def test_unknown_compute_dtype_is_one_line_exit_2(tmp_path):
  proc = helpers.run_main("--config=configs/nac.py:tiny",
                          f"--workdir={tmp_path}/w",
                          "--config.compute_dtype=float16")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert ("config.compute_dtype='float16' is not supported; expected one of "
          "float32, bfloat16.") in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(f"{tmp_path}/w/checkpoints")
