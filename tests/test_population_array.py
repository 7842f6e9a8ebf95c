"""Job-array coordination (launch/slurm_population.sh) on one machine: two
array tasks of the tiny suite as two processes on one workdir, task 0
SIGKILLed part-way and restarted; then the plain command evaluates, reusing
every member. Bad inputs: one line, exit code 2, nothing overwritten."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from crl import checkpointing
from crl import config_lib
from crl.trainers import ood_suite
from crl.trainers import suite_groups
from tests import helpers

STEPS = 30
# One shift and no plots: the evaluation job is here to reuse the members,
# the suite's evaluation is tested elsewhere (tests/test_ood_suite_run.py).
LIGHT = {"shifts": ("hue_independent",),
         "reliability_shifts": ("hue_independent",), "plots": False}
ARGS = ["--config=configs/ood_suite.py:tiny"] + [
    f"--config.members.{m}.{k}" for m in ("vit_s0", "vit_hue")
    for k in (f"num_steps={STEPS}", "checkpoint.every_steps=3")] + [
        f"--config.{k}={v!r}" for k, v in LIGHT.items()]


def _task(workdir, i, n=2):
  return subprocess.Popen(
      [sys.executable, "-m", "crl.main", *ARGS, f"--workdir={workdir}",
       f"--config.population.num_tasks={n}",
       f"--config.population.task_index={i}"],
      cwd=helpers.ROOT, env=helpers.subprocess_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def test_two_array_tasks_one_killed_and_restarted(tmp_path):
  workdir = str(tmp_path / "suite")
  # Units: perceiver_s0 (task 0), the two ViTs together (task 1).
  group = os.path.join(workdir, "population", "group_vit_hue+vit_s0",
                       "checkpoints")
  t0, t1 = _task(workdir, 1), _task(workdir, 0)
  deadline = time.time() + 500
  while not (os.path.isdir(group) and any(d.isdigit()
                                          for d in os.listdir(group))):
    assert t0.poll() is None, t0.communicate()[1][-3000:]
    assert time.time() < deadline
    time.sleep(0.05)
  t0.send_signal(signal.SIGKILL)  # part-way
  t0.wait()
  killed_at = max(int(d) for d in os.listdir(group) if d.isdigit())
  assert killed_at < STEPS
  t0 = _task(workdir, 1)
  for p in (t0, t1):
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  for member, steps in (("vit_s0", STEPS), ("vit_hue", STEPS),
                        ("perceiver_s0", 10)):
    assert os.path.isdir(os.path.join(workdir, "models", member,
                                      "checkpoints", str(steps))), member
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  # The dependent job: the plain command (ARGS without the array's flags;
  # its trainer, in this process: no third start-up) reuses every member
  # that the two processes trained.
  same = {f"members.{m}.{k}": v for m in ("vit_s0", "vit_hue")
          for k, v in (("num_steps", STEPS), ("checkpoint.every_steps", 3))}
  ood_suite.train_and_evaluate(
      helpers.load_with("configs/ood_suite.py:tiny", {**same, **LIGHT}),
      workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    members = json.load(f)["members"]
  assert all(m["reused"] for m in members.values()), members

  # Bad inputs (crl.main turns these errors into one line and exit code 2,
  # see tests/test_bad_input.py): nothing is overwritten.
  before = open(os.path.join(workdir, "config.json")).read()
  for overrides, error, message in (
      ({"population.task_index": 2}, config_lib.ConfigError, "out of range"),
      ({"severities": (5,)}, checkpointing.CheckpointError, "another config")):
    config = helpers.load_with("configs/ood_suite.py:tiny", {
        "population.num_tasks": 2, **same, **LIGHT, **overrides})
    with pytest.raises(error, match=message):
      ood_suite.train_and_evaluate(config, workdir)
    assert open(os.path.join(workdir, "config.json")).read() == before


def test_member_names_that_collide():
  suite_groups.check_names(["vit_s0", "nac_s0"])
  for names, message in ((["vit_s0", "VIT_s0"], "collide"),
                         (["group_a"], "cannot name"), (["a/b"], "cannot")):
    with pytest.raises(config_lib.ConfigError, match=message):
      suite_groups.check_names(names)


def test_units_group_members_that_share_an_architecture():
  config = config_lib.load_config(os.path.join(
      helpers.ROOT, "configs/ood_suite.py:tiny"))
  members = {n: ood_suite.member_config(config, n) for n in config.members}
  # Members come sorted by name (ConfigDict order).
  assert suite_groups.units(config, members) == [
      ("perceiver_s0", ["perceiver_s0"]),
      ("group_vit_hue+vit_s0", ["vit_hue", "vit_s0"])]
  config.population.group = "off"
  assert [u for u, _ in suite_groups.units(config, members)] == list(members)
  config.population.num_tasks = 2
  config.population.task_index = 1
  assert suite_groups.array_share(config, ["a", "b", "c"]) == ["b"]


def test_suite_lists_a_diverged_member_as_failed(tmp_path):
  config = config_lib.load_config(os.path.join(
      helpers.ROOT, "configs/ood_suite.py:tiny"))
  config.unlock()
  del config.members["perceiver_s0"]
  config.members.vit_s0.num_steps = 3
  config.members.vit_hue.num_steps = 3
  config.members.vit_hue.optimizer.base_learning_rate = 1e38
  config.baseline = "vit_hue"
  config.shifts = ("hue_independent",)
  config.reliability_shifts = ("hue_independent",)
  config.plots = False
  out = ood_suite.train_and_evaluate(config, str(tmp_path))
  failed = out["members"]["vit_hue"]
  assert failed["failed"] and 1 <= failed["failed_at_step"] <= 3
  assert out["members"]["vit_s0"]["group"] == "group_vit_hue+vit_s0"
  assert {r["model"] for r in out["rows"]} == {"vit_s0"}
