"""Two JAX processes joined by jax.distributed over localhost train together
and match one process at the same global batch; their checkpoint resumes.

The one-process reference trains in the test's own process (no second
start-up); the two launches share a compilation cache, and the second one
resumes the first one's step-2 checkpoint to the same end, so that it runs
the same programs (a longer run would compile another schedule).
"""

import json
import os
import shutil
import socket
import subprocess

import numpy as np

from crl.trainers import classification
from tests import helpers

OVERRIDES = {"num_steps": 4, "log_every_steps": 1, "checkpoint.every_steps": 2,
             "evals.test.every_steps": 0, "final_eval.splits": "test"}
ARGS = ["--config=configs/nac.py:tiny",
        *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def _launch(tmp_path, workdir, *extra):
  extra = (*extra, f"--config.compile_cache_dir={tmp_path / 'xla_cache'}")
  env = helpers.subprocess_env()
  env["CRL_LAUNCH_LOGS"] = str(tmp_path / "logs")
  proc = subprocess.run(
      ["bash", "launch/local.sh", "2", str(_free_port()), "--", *ARGS,
       f"--workdir={workdir}", *extra], cwd=helpers.ROOT, env=env,
      capture_output=True, text=True, timeout=400)
  logs = [open(tmp_path / "logs" / f"process_{i}.log").read()
          for i in range(2)]
  assert proc.returncode == 0, proc.stderr + "".join(
      f"\n--- process {i} ---\n{_tail(log)}" for i, log in enumerate(logs))
  return logs


def _tail(log: str, chars: int = 3000) -> str:
  """The end of a log before faulthandler's list of extension modules."""
  return log.split("\nExtension modules:")[0][-chars:]


def test_two_processes_match_one_and_resume(tmp_path):
  single = str(tmp_path / "single")
  classification.train_and_evaluate(helpers.tiny_config(**OVERRIDES), single)
  multi = str(tmp_path / "multi")
  logs = _launch(tmp_path, multi)
  assert "process 1 of 2" in logs[1]
  one, two = _losses(single), _losses(multi)
  assert list(two) == [1, 2, 3, 4]
  np.testing.assert_allclose(list(two.values()), list(one.values()),
                             rtol=2e-5)
  with open(os.path.join(multi, "results.json")) as f:
    assert json.load(f)["results"]["test"]["num_examples"] == 64
  # Both processes restore the shared checkpoint of step 2 and continue to
  # the same steps 3 and 4 (the same programs: all from the cache).
  shutil.rmtree(os.path.join(multi, "checkpoints", "4"))
  logs = _launch(tmp_path, multi)
  for log in logs:
    assert "Resumed from the checkpoint at step 2." in log
  assert _losses(multi) == two
