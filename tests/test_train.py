"""The trainer end to end: outputs, exact resume, sharding, start-up errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from crl import checkpointing
from crl import config_lib
from crl import registry
from crl.trainers import classification
from tests import helpers

TINY = "configs/nac.py:tiny"


def _final_params(workdir, config):
  """The params of the newest checkpoint, as host arrays."""
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 0,
                                    10, async_save=False)
  state = ckpt._manager.restore(ckpt.steps()[-1])  # pylint: disable=protected-access
  ckpt.close()
  return jax.tree.map(np.asarray, state["params"])


def _train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def test_main_end_to_end_writes_the_workdir(tmp_path):
  workdir = str(tmp_path / "run")
  proc = helpers.run_main(f"--config={TINY}", f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  files = set(os.listdir(workdir))
  assert {"config.json", "metrics.jsonl", "results.json",
          "checkpoints"} <= files
  assert any(f.startswith("events.out.tfevents") for f in files)
  assert "run.lock" not in files
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["step"] == 20
  splits = set(results["results"])
  assert {"test", "hue_independent", "unseen_hue", "novel_classes"} <= splits
  for split, row in results["results"].items():
    if split != "novel_classes":
      assert 0.0 <= row["accuracy"] <= 1.0 and np.isfinite(row["nll"])
  assert "ood_auroc_msp" in results["results"]["novel_classes"]
  # Every number's convention is recorded next to it.
  for row in results["results"].values():
    assert set(row) - {"num_examples"} <= set(results["conventions"])
  assert "15 bins" in results["conventions"]["ece"]
  assert "Final evaluation" in proc.stdout and "hue_independent" in proc.stdout
  # The console without a terminal: progress lines, evaluation lines, and
  # none of the libraries' INFO (Orbax, libtpu probing).
  assert "step 20/20 | loss" in proc.stderr and "ETA" in proc.stderr
  assert "eval test @ step 10: accuracy" in proc.stderr
  assert "CheckpointManager" not in proc.stderr, proc.stderr[-3000:]
  assert "libtpu" not in proc.stderr
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["name"] == "nac"


def _fast_config(**overrides):
  # 8 steps like the in-process runs of test_faults, test_multiprocess and
  # analysis/test_nac_analyses: one schedule, one compiled train step for
  # all of them (the session's compilation cache).
  values = {"num_steps": 8, "log_every_steps": 1,
            "checkpoint.every_steps": 4, "checkpoint.async_save": False,
            "final_eval.splits": "test", "evals": {}}
  values.update(overrides)
  return helpers.tiny_config(**values)


def _assert_same_run(straight, resumed, config, out_straight, out_resumed):
  assert out_resumed["results"] == out_straight["results"]
  jax.tree.map(np.testing.assert_array_equal, _final_params(straight, config),
               _final_params(resumed, config))
  # Every step's loss, before and after each stop.
  assert _train_losses(straight) == _train_losses(resumed)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """One uninterrupted `_fast_config()` run that several tests compare with
  (trained once per module): (config, workdir, train_and_evaluate output)."""
  config = _fast_config()
  workdir = str(tmp_path_factory.mktemp("straight"))
  return config, workdir, classification.train_and_evaluate(config, workdir)


def test_resume_reproduces_the_uninterrupted_run(straight_run, tmp_path):
  """Stops at several points (between checkpoints, twice): the same
  parameters bitwise, the same per-step losses and the same final metrics."""
  config, straight, full = straight_run
  resumed = str(tmp_path / "resumed")
  for stop in (2, 6):
    assert classification.train_and_evaluate(config, resumed, stop_at=stop) == {
        "step": stop, "preempted": True}
  _assert_same_run(straight, resumed, config, full,
                   classification.train_and_evaluate(config, resumed))


def test_same_seed_same_metrics_other_seed_differs(straight_run, tmp_path):
  config, _, full = straight_run
  again = classification.train_and_evaluate(config, str(tmp_path / "again"))
  other = classification.train_and_evaluate(_fast_config(seed=1),
                                            str(tmp_path / "other"))
  assert again["results"] == full["results"]
  assert full["results"]["test"]["nll"] != other["results"]["test"]["nll"]


def test_resume_with_tfds_input_is_exact(tmp_path):
  """The data position of a TFDS stream survives a restart as well."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data = config_lib.component_config(registry.DATASETS, "tfds",
                                     tfds_name="cifar10", shuffle_buffer=64)
  config = _fast_config(data=data, num_steps=8)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  with tfds.testing.mock_data(num_examples=80):
    full = classification.train_and_evaluate(config, straight)
    classification.train_and_evaluate(config, resumed, stop_at=3)
    _assert_same_run(straight, resumed, config, full,
                     classification.train_and_evaluate(config, resumed))


def test_eight_devices_match_one(straight_run, tmp_path):
  """The straight one-device run's per-step losses, on 8 devices."""
  code = """
import json, sys
import jax
jax.config.update("jax_disable_most_optimizations", True)
from crl.trainers import classification
from tests import test_train
classification.train_and_evaluate(test_train._fast_config(), %r)
print("DEVICES", jax.device_count())
"""
  config, straight, _ = straight_run
  workdir = str(tmp_path / "d8")
  proc = helpers.run_python(code % workdir, devices=8)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "DEVICES 8" in proc.stdout
  one, eight = _train_losses(straight), _train_losses(workdir)
  assert list(one) == list(range(1, config.num_steps + 1)) == list(eight)
  np.testing.assert_allclose(list(eight.values()), list(one.values()),
                             rtol=2e-5)


def test_sigkill_then_rerun_continues(tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "crl.main", f"--config={TINY}",
         f"--workdir={workdir}", "--config.num_steps=100",
         "--config.checkpoint.every_steps=5", "--config.evals.test.every_steps=0"]
  proc = subprocess.Popen(cmd, cwd=helpers.ROOT, env=helpers.subprocess_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline:
    done = [d for d in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir)
                        else []) if d.isdigit()]
    if len(done) >= 2:
      break
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert 0 < killed_at < 100
  # The rerun checkpoints less often and evaluates one split at the end
  # (volatile settings, not part of the run's identity): what is tested is
  # that it continues after the newest checkpoint.
  rerun = helpers.run_main(*cmd[3:5], "--config.num_steps=100",
                           "--config.checkpoint.every_steps=50",
                           "--config.evals.test.every_steps=0",
                           "--config.final_eval.splits=test")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "stale lock" in rerun.stderr
  assert f"Resumed from the checkpoint at step {killed_at}." in rerun.stderr
  steps = [json.loads(l)["step"] for l in open(
      os.path.join(workdir, "metrics.jsonl")) if '"train"' in l]
  assert steps[-1] == 100
  # The rerun started after the checkpoint: step 5 was trained only once.
  assert killed_at >= 10 and steps.count(5) == 1


def test_with_component_defaults_fills_only_missing_fields():
  section = {"name": "interpreters", "d_model": 16}
  filled = config_lib.with_component_defaults(registry.MODELS, section)
  assert filled["d_model"] == 16 and filled["remat"] is False
  assert filled["kernel_tau"] == pytest.approx(1.4202567871309753)
  assert set(filled) == set(config_lib.to_plain(config_lib.component_config(
      registry.MODELS, "interpreters")))
  unknown = {"name": "no_such_model", "width": 3}
  assert config_lib.with_component_defaults(registry.MODELS,
                                            unknown) == unknown
  assert config_lib.with_component_defaults(registry.MODELS, None) is None
