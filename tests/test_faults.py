"""Injected faults: broken checkpoints, other configs, NaNs, busy workdirs,
SIGTERM. Each asserts the recovery or the one clear message."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from crl import checkpointing
from crl import config_lib
from crl import train
from crl import train_step
from crl import workdir as workdir_lib
from crl.trainers import classification
from tests import helpers

FAST = {"checkpoint.async_save": False, "evals": {},
        "final_eval.splits": "test"}
# The in-process runs are 8 steps long (checkpoints and logs vary): one
# schedule, so one compiled train step for the whole file.


def _steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit())


def _largest_data_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns
           if os.sep + "d" + os.sep in os.path.join(r, n)]
  return max(files, key=os.path.getsize)


def _train_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_corrupted_data_is_detected_moved_aside_and_retrained(tmp_path,
                                                              caplog):
  # Same-size overwrite of 64 bytes inside an array file: Orbax restores it
  # without complaint; the integrity record catches it.
  config = helpers.tiny_config(num_steps=8, **{"checkpoint.every_steps": 2},
                               **FAST)
  workdir = str(tmp_path / "run")
  classification.train_and_evaluate(config, workdir, stop_at=6)
  assert _steps(workdir) == [2, 4, 6]
  step_dir = os.path.join(workdir, "checkpoints", "6")
  assert os.path.exists(os.path.join(step_dir, checkpointing.RECORD_NAME))
  victim = _largest_data_file(step_dir)
  size = os.path.getsize(victim)
  with open(victim, "r+b") as f:
    f.seek(size // 2)
    f.write(bytes(64))
  assert os.path.getsize(victim) == size
  with caplog.at_level(logging.INFO):
    out = classification.train_and_evaluate(config, workdir)
  assert out["step"] == 8
  text = caplog.text
  rel = os.path.relpath(victim, step_dir)
  assert f"checkpoints/6 is broken: file {rel} does not match" in text
  assert "Resumed from the checkpoint at step 4." in text
  assert "bound method" not in text
  # Moved aside for inspection; step 6 was saved again by the retraining.
  ckpt_dir = os.path.join(workdir, "checkpoints")
  broken = [d for d in os.listdir(ckpt_dir) if d.startswith("broken-6-")]
  assert len(broken) == 1 and 6 in _steps(workdir)
  assert checkpointing.verify_record(os.path.join(ckpt_dir, "6")) is None
  # Each step's rows once, as in an uninterrupted run.
  train_steps = [r["step"] for r in _train_rows(workdir)
                 if r["split"] == "train"]
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 8
  # Readers (analysis, the OOD suite) go through the same check.
  newest = os.path.join(ckpt_dir, "8")
  with open(_largest_data_file(newest), "r+b") as f:
    f.seek(10)
    f.write(b"\xff" * 64)
  caplog.clear()
  _, step = train.restore_trained(config, workdir,
                                  classification.ClassificationTask(config))
  assert step == 6 and "checkpoints/8 is broken" in caplog.text


def test_unreadable_checkpoints_are_never_silently_reinitialised(tmp_path):
  config = helpers.tiny_config(num_steps=8, **{"checkpoint.every_steps": 4},
                               **FAST)
  workdir = str(tmp_path / "run")
  classification.train_and_evaluate(config, workdir, stop_at=4)
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "4")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with pytest.raises(checkpointing.CheckpointError, match="can be read"):
    classification.train_and_evaluate(config, workdir)
  # Moved aside: the next attempt finds the previous run's records without
  # a checkpoint and refuses too, rather than starting a second run.
  with pytest.raises(checkpointing.CheckpointError,
                     match="holds a previous run .*1 broken checkpoint"):
    classification.train_and_evaluate(config, workdir)


def test_records_without_checkpoint_are_never_restarted_silently(tmp_path):
  config = helpers.tiny_config(num_steps=8, **{"checkpoint.every_steps": 4},
                               **FAST)
  workdir = str(tmp_path / "run")
  classification.train_and_evaluate(config, workdir, stop_at=4)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  before = {f: open(os.path.join(workdir, f)).read()
            for f in ("config.json", "metrics.jsonl")}
  with pytest.raises(checkpointing.CheckpointError) as e:
    classification.train_and_evaluate(config, workdir)
  assert "holds a previous run (config.json, metrics.jsonl)" in str(e.value)
  assert "move that workdir away" in str(e.value)
  assert before == {f: open(os.path.join(workdir, f)).read() for f in before}
  assert not os.path.exists(os.path.join(workdir, "run.lock"))


def test_a_step_without_integrity_record_is_used_and_recorded(tmp_path,
                                                              caplog):
  # The process died between Orbax's commit and the record (or older code
  # wrote the step): Orbax reads it, so it is used, with a warning.
  config = helpers.tiny_config(num_steps=8, **{"checkpoint.every_steps": 4},
                               **FAST)
  workdir = str(tmp_path / "run")
  classification.train_and_evaluate(config, workdir, stop_at=4)
  record = os.path.join(workdir, "checkpoints", "4",
                        checkpointing.RECORD_NAME)
  os.remove(record)
  with caplog.at_level(logging.INFO):
    out = classification.train_and_evaluate(config, workdir)
  assert out["step"] == 8
  assert "checkpoints/4 has no integrity record" in caplog.text
  assert "Resumed from the checkpoint at step 4." in caplog.text
  assert os.path.exists(record)


def test_checkpoint_of_another_model_config_is_refused(tmp_path):
  config = helpers.tiny_config(num_steps=8, **{"checkpoint.every_steps": 4},
                               **FAST)
  workdir = str(tmp_path / "run")
  classification.train_and_evaluate(config, workdir, stop_at=4)
  other = helpers.tiny_config(num_steps=8, **{"checkpoint.every_steps": 4,
                                              "model.d_state": 64,
                                              "model.d_code": 64}, **FAST)
  with pytest.raises(checkpointing.CheckpointError) as e:
    classification.train_and_evaluate(other, workdir)
  assert "model.d_state: 32 -> 64" in str(e.value)
  assert "new --workdir" in str(e.value)
  # A run written before a model field existed resumes when today's config
  # keeps that field's default, and is refused when it does not.
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    written = json.load(f)
  assert written["model"].pop("fold_read_in") is True
  with open(path, "w") as f:
    json.dump(written, f)
  workdir_lib.check_run_identity(workdir, config_lib.to_plain(config),
                                 train.run_identity)
  changed = helpers.tiny_config(num_steps=8, **{"checkpoint.every_steps": 4,
                                                "model.fold_read_in": False},
                                **FAST)
  with pytest.raises(checkpointing.CheckpointError,
                     match="model.fold_read_in: True -> False"):
    workdir_lib.check_run_identity(workdir, config_lib.to_plain(changed),
                                   train.run_identity)
  # The array-level check names the arrays even without config.json.
  os.remove(os.path.join(workdir, "config.json"))
  with pytest.raises(checkpointing.CheckpointError, match="array"):
    classification.train_and_evaluate(other, workdir)


def test_nan_stops_the_run_naming_step_and_quantity(tmp_path):
  config = helpers.tiny_config(
      num_steps=12, **{"checkpoint.every_steps": 2, "optimizer.clip_norm": 0.0,
                       "optimizer.base_learning_rate": 1e38,
                       "optimizer.warmup_steps": 0}, **FAST)
  workdir = str(tmp_path / "run")
  with pytest.raises(train_step.NonFiniteError) as e:
    classification.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert "Non-finite values at step" in message
  assert "loss" in message or "gradients of" in message
  bad_step = int(message.split("at step ")[1].split(":")[0])
  # Only checkpoints before the bad step exist, and they are finite.
  assert all(s < bad_step for s in _steps(workdir))


def test_busy_workdir_is_refused_and_stale_lock_taken_over(tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  sleeper = subprocess.Popen([sys.executable, "-c",
                              "import time; time.sleep(60)"])
  try:
    lock_path = os.path.join(workdir, workdir_lib.LOCK_NAME)
    with open(lock_path, "w") as f:
      json.dump({"pid": sleeper.pid, "host": os.uname().nodename,
                 "started": "now"}, f)
    with pytest.raises(workdir_lib.WorkdirBusyError,
                       match=f"in use by process {sleeper.pid}"):
      workdir_lib.WorkdirLock(workdir).acquire()
  finally:
    sleeper.kill()
    sleeper.wait()
  lock = workdir_lib.WorkdirLock(workdir)
  lock.acquire()  # the owner is dead now: taken over
  with open(lock_path) as f:
    assert json.load(f)["pid"] == os.getpid()
  lock.release()
  assert not os.path.exists(lock_path)


_READER = """
import json, sys, time
path, bad, reads = sys.argv[1], 0, 0
end = time.time() + float(sys.argv[2])
while time.time() < end:
  try:
    with open(path) as f:
      json.load(f)
  except ValueError:
    bad += 1
  reads += 1
print(bad, reads)
"""


def test_workdir_json_is_never_seen_half_written(tmp_path):
  # The other processes of a multi-process run read config.json while
  # process 0 rewrites it; a truncated read killed a CI run.
  path = str(tmp_path / "config.json")
  obj = {f"key_{i}": list(range(50)) for i in range(200)}
  workdir_lib.write_json_atomic(path, obj)
  reader = subprocess.Popen([sys.executable, "-c", _READER, path, "2"],
                            stdout=subprocess.PIPE, text=True)
  while reader.poll() is None:
    workdir_lib.write_json_atomic(path, obj, sort_keys=True)
  bad, reads = map(int, reader.stdout.read().split())
  assert reads > 100 and bad == 0, (bad, reads)
  with open(path) as f:
    assert json.load(f) == obj
  assert os.listdir(tmp_path) == ["config.json"]  # no temporary left


def test_sigterm_saves_then_the_rerun_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  args = ["--config=configs/nac.py:tiny", f"--workdir={workdir}",
          "--config.num_steps=2000", "--config.checkpoint.every_steps=1000",
          "--config.evals.test.every_steps=0", "--config.log_every_steps=1",
          "--config.final_eval.splits=test"]
  proc = subprocess.Popen([sys.executable, "-m", "crl.main", *args],
                          cwd=helpers.ROOT, env=helpers.subprocess_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 240
  while time.time() < deadline:
    if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3:
      break
    assert proc.poll() is None
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert "SIGTERM received" in err
  saved = _steps(workdir)
  assert len(saved) == 1 and 0 < saved[0] < 1000  # not a periodic save
  assert f"saved the checkpoint of step {saved[0]}" in err
  assert not os.path.exists(os.path.join(workdir, "run.lock"))
  # The rerun continues from that checkpoint.
  rerun = helpers.run_main(*args, "--config.num_steps=" + str(saved[0] + 2))
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f"Resumed from the checkpoint at step {saved[0]}." in rerun.stderr


def _sigterm_self():
  os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_final_evaluation_stops_then_rerun_finishes(
    tmp_path, monkeypatch):
  config = helpers.tiny_config(num_steps=8, log_every_steps=2,
                               **{"checkpoint.every_steps": 4}, **FAST)
  workdir = str(tmp_path / "run")
  original = classification.ClassificationTask.final_evaluation

  def interrupted(self, params, step):
    _sigterm_self()  # arrives while the evaluation batches are read
    return original(self, params, step)

  monkeypatch.setattr(classification.ClassificationTask, "final_evaluation",
                      interrupted)
  out = classification.train_and_evaluate(config, workdir)
  assert out == {"step": 8, "preempted": True}
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert not os.path.exists(os.path.join(workdir, "run.lock"))
  assert _steps(workdir) == [4, 8]
  monkeypatch.setattr(classification.ClassificationTask, "final_evaluation",
                      original)
  out = classification.train_and_evaluate(config, workdir)
  assert out["step"] == 8 and "results" in out
  assert os.path.exists(os.path.join(workdir, "results.json"))
  rows = _train_rows(workdir)
  keys = [(r["step"], r["split"]) for r in rows]
  assert len(keys) == len(set(keys))  # nothing twice
  assert [k for k in keys if k[1] == "final/test"] == [(8, "final/test")]


def test_sigterm_while_the_last_checkpoint_is_finalised(tmp_path,
                                                        monkeypatch):
  config = helpers.tiny_config(num_steps=8, log_every_steps=2,
                               **{"checkpoint.every_steps": 8}, **FAST)
  workdir = str(tmp_path / "run")
  original = checkpointing.Checkpointer.wait

  def wait(self):
    _sigterm_self()
    original(self)

  monkeypatch.setattr(checkpointing.Checkpointer, "wait", wait)
  out = classification.train_and_evaluate(config, workdir)
  assert out == {"step": 8, "preempted": True}  # not ignored
  assert _steps(workdir) == [8]
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  monkeypatch.setattr(checkpointing.Checkpointer, "wait", original)
  assert classification.train_and_evaluate(config, workdir)["step"] == 8
  assert os.path.exists(os.path.join(workdir, "results.json"))


def test_resumed_records_equal_an_uninterrupted_run(tmp_path):
  config = helpers.tiny_config(num_steps=8, log_every_steps=4,
                               **{"checkpoint.every_steps": 4}, **FAST)

  def rows(workdir):
    wall = ("time", "examples_per_s")
    return [{k: v for k, v in r.items() if k not in wall}
            for r in _train_rows(workdir)]

  classification.train_and_evaluate(config, str(tmp_path / "a"))
  stopped = str(tmp_path / "b")
  # Stopped between two log lines (7), then stopped again after the final
  # checkpoint so that the rerun drops the rows after it and the final rows.
  classification.train_and_evaluate(config, stopped, stop_at=7)
  classification.train_and_evaluate(config, stopped)
  shutil.rmtree(os.path.join(stopped, "checkpoints", "8"))
  classification.train_and_evaluate(config, stopped)
  assert rows(stopped) == rows(str(tmp_path / "a"))


def test_orbax_reprs_are_dropped_from_warnings():
  text = ("Failed in <bound method Foo.bar of <obj at 0x1>> while reading "
          "<Path '/x'> data")
  assert checkpointing._without_reprs(text) == (  # pylint: disable=protected-access
      "Failed in while reading data")
