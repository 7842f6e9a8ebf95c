"""Fault campaign: random faults on a tiny run; nothing silent allowed.

  python -m crl.fault_campaign --trials=50 --out=/tmp/campaign

Trains `configs/nac.py:tiny` (final evaluation on `test`) once without
interruption (the reference) and once stopped at step 7 (the partial run).
Each trial copies one of them and applies one random fault:

  flip      overwrite 1-64 random bytes of a random file of a random
            checkpoint step of the finished run (same size);
  truncate  cut a random checkpoint file of the finished run short;
  delete    delete a random checkpoint file of the finished run;
  sigkill   continue the partial run in a `python -m crl.main` subprocess
            and SIGKILL it at a random moment;
  sigterm   continue the partial run and SIGTERM it at a random moment;

then runs it again to the end and classifies the outcome:

  exact     finished; the newest checkpoint's parameters, results.json and
            metrics.jsonl (wall-clock fields aside) equal the reference's
            bit for bit;
  refused   stopped with a user error: one line (exit code 2 from the CLI);
  silent    finished, but something differs from the reference (must be 0);
  unclear   anything else (another exception, a hung subprocess).

The runs after a fault go through `crl.train` in this process (the code
`crl.main` runs, without 20 s of imports per run); SIGKILL needs a real
process, and at the start one subprocess continues the partial run to check
that a separate process reaches the reference's state bit for bit. Writes
`OUT/summary.json` (counts and one row per trial).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from absl import app
from absl import flags



def _define_flags():
  """The command's flags, defined only when it runs as a program (names
  such as --out and --seed are other modules' flags too)."""
  return (flags.DEFINE_integer("trials", 10, "Number of trials."),
          flags.DEFINE_integer("seed", 0, "Seed of the fault choices."),
          flags.DEFINE_string("out", "/tmp/crl_fault_campaign",
                              "Folder for the runs and summary.json."),
          flags.DEFINE_list(
              "faults", ["flip", "truncate", "delete", "sigkill", "sigterm"],
              "Fault kinds to draw from."))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ("--config=configs/nac.py:tiny", "--config.final_eval.splits=test")
_WALL_CLOCK = ("time", "examples_per_s")


_CPU_ENV = {"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
            "CUDA_VISIBLE_DEVICES": ""}


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env.update(_CPU_ENV, PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH",
                                                               ""))
  return env


def start(workdir: str) -> subprocess.Popen:
  """`crl.main` on the campaign's config in `workdir`, as a child process."""
  return subprocess.Popen(
      [sys.executable, "-m", "crl.main", *ARGS, f"--workdir={workdir}"],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)


_HANG_SECONDS = 1800  # a run this long counts as hung (`unclear`)


def run(workdir: str) -> tuple[int, str]:
  """`(exit code, stderr)` of `crl.main` in `workdir` (-9 if it hung)."""
  proc = start(workdir)
  try:
    _, err = proc.communicate(timeout=_HANG_SECONDS)
  except subprocess.TimeoutExpired:
    proc.kill()
    _, err = proc.communicate()
    return -9, err + f"\nhung: killed after {_HANG_SECONDS}s"
  return proc.returncode, err


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the checkpoints in `workdir`, ascending."""
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit())


def snapshot(workdir: str) -> dict[str, Any]:
  """What must equal the reference: params, results, metric rows."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = checkpoint_steps(workdir)[-1]
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(path)
  params = {jax.tree_util.keystr(p): np.asarray(x).tobytes() for p, x in
            jax.tree_util.tree_leaves_with_path(state["params"])}
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [{k: v for k, v in json.loads(l).items() if k not in _WALL_CLOCK}
            for l in f]
  return {"step": step, "params": params, "results": results, "rows": rows}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
  """Which of step, params, results and metric rows differ between two
  `snapshot`s."""
  return [k for k in ("step", "params", "results", "rows") if a[k] != b[k]]


def _checkpoint_files(workdir: str) -> list[str]:
  out = []
  for step in checkpoint_steps(workdir):
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints",
                                               str(step))):
      out += [os.path.join(root, f) for f in files]
  return sorted(out)


def apply_file_fault(kind: str, workdir: str, rng: random.Random) -> str:
  """Damages one random checkpoint file; returns what was done."""
  path = rng.choice(_checkpoint_files(workdir))
  size = os.path.getsize(path)
  rel = os.path.relpath(path, workdir)
  if kind == "delete":
    os.remove(path)
    return f"deleted {rel}"
  if kind == "truncate":
    new = rng.randrange(size) if size else 0
    with open(path, "r+b") as f:
      f.truncate(new)
    return f"truncated {rel} from {size} to {new} bytes"
  n = min(size, rng.randint(1, 64))
  if not n:
    os.remove(path)
    return f"deleted the empty {rel}"
  offset = rng.randrange(size - n + 1)
  with open(path, "r+b") as f:
    f.seek(offset)
    old = f.read(n)
    f.seek(offset)
    f.write(bytes((x ^ (rng.randrange(255) + 1)) for x in old))
  return f"flipped {n} byte(s) of {rel} at {offset}"


def _config():
  from crl import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(os.path.join(ROOT, "configs/nac.py:tiny"))
  config.unlock()
  config.final_eval.splits = "test"
  config.lock()
  return config


def run_here(workdir: str, stop_at: int | None = None) -> tuple[int, str]:
  """`crl.main`'s outcome in this process: (exit code, error line); 3 when
  stopped early (preempted)."""
  from crl import main as main_lib  # pylint: disable=g-import-not-at-top
  from crl import preemption  # pylint: disable=g-import-not-at-top
  from crl.trainers import classification  # pylint: disable=g-import-not-at-top
  preemption.handler().requested = False
  try:
    out = classification.train_and_evaluate(_config(), workdir, stop_at=stop_at)
  except main_lib._user_errors() as e:  # pylint: disable=protected-access
    line = main_lib._one_line(e)  # pylint: disable=protected-access
    return 2, f"crl: error: {line}"
  except Exception as e:  # pylint: disable=broad-except
    return 1, f"Traceback: {type(e).__name__}: {e}"
  return (3 if out.get("preempted") else 0), ""


def classify(rc: int, err: str, workdir: str,
             reference: dict[str, Any]) -> tuple[str, str]:
  """`(outcome, detail)` of one trial: 'refused' (one clear error line,
  exit code 2), 'exact' (the reference's results), 'silent' (exit 0 with
  other or unreadable results) or 'unclear' (a crash)."""
  errors = [l for l in err.splitlines() if l.startswith("crl: error:")]
  if rc == 2 and len(errors) == 1 and "Traceback" not in err:
    return "refused", errors[0]
  if rc != 0 or "Traceback" in err:
    return "unclear", f"exit {rc}: {err.strip().splitlines()[-1:]}"
  try:
    diff = differences(snapshot(workdir), reference)
  except Exception as e:  # pylint: disable=broad-except
    return "silent", f"exit 0 but the run cannot be read: {e!r}"
  return ("silent", f"differs: {diff}") if diff else ("exact", "")


def trial(i: int, kind: str, rng: random.Random, dirs: dict[str, str],
          reference: dict[str, Any], duration: float) -> dict[str, Any]:
  """Trial `i`: a copy of a finished (or, for signals, a partial) run,
  the fault `kind` injected, rerun, and its outcome `classify`-ed."""
  workdir = os.path.join(dirs["trials"], f"{i:03d}")
  shutil.rmtree(workdir, ignore_errors=True)
  source = dirs["partial"] if kind.startswith("sig") else dirs["reference"]
  shutil.copytree(source, workdir)
  if kind == "sigkill":
    # Mostly while it runs (the calibration run's time varies with load).
    delay = rng.uniform(0.5, 0.8 * duration)
    proc = start(workdir)
    try:
      proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.communicate()
    what = f"sigkill after {delay:.1f}s (exit {proc.returncode})"
  elif kind == "sigterm":
    delay = rng.uniform(0.0, duration)
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    rc, err = run_here(workdir)
    timer.cancel()
    timer.join()
    what = f"sigterm after {delay:.1f}s (outcome {rc})"
    if rc not in (0, 3):  # 3: stopped, to be run again
      return {"trial": i, "fault": what, "outcome": "unclear", "detail": err}
  else:
    what = apply_file_fault(kind, workdir, rng)
  rc, err = run_here(workdir)
  outcome, detail = classify(rc, err, workdir, reference)
  return {"trial": i, "fault": what, "outcome": outcome, "detail": detail}


def main(argv: list[str]) -> None:
  """The `python -m crl.fault_campaign` program: calibrates, runs the
  trials and writes the campaign's report to `--out`."""
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from crl import preemption  # pylint: disable=g-import-not-at-top
  from crl import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  # The runs of this process compile the same programs again and again; a
  # cache given by the environment (the tests' session cache) is also the
  # one the `crl.main` children read, so they find this process's programs.
  jax.config.update("jax_compilation_cache_dir",
                    os.environ.get("JAX_COMPILATION_CACHE_DIR") or
                    os.path.join(_OUT.value, "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  rng = random.Random(_SEED.value)
  dirs = {k: os.path.join(_OUT.value, k)
          for k in ("reference", "partial", "trials", "subprocess")}
  for k in ("reference", "partial", "subprocess"):
    shutil.rmtree(dirs[k], ignore_errors=True)
  rc, err = run_here(dirs["reference"])
  if rc != 0:
    raise RuntimeError(f"The reference run failed: {err}")
  reference = snapshot(dirs["reference"])
  rc, err = run_here(dirs["partial"], stop_at=7)
  if rc != 3:
    raise RuntimeError(f"The partial run failed: {err}")
  sub_seconds = 0.0
  if "sigkill" in _FAULTS.value:
    # A separate process continues the partial run: the same bits.
    shutil.copytree(dirs["partial"], dirs["subprocess"])
    t0 = time.time()
    rc, err = run(dirs["subprocess"])
    sub_seconds = time.time() - t0
    if rc != 0 or differences(snapshot(dirs["subprocess"]), reference):
      raise RuntimeError(f"A separate process did not reach the reference "
                         f"state (exit {rc}): {err[-2000:]}")
  t0 = time.time()
  run_here(os.path.join(_OUT.value, "timing"))
  here_seconds = time.time() - t0
  shutil.rmtree(os.path.join(_OUT.value, "timing"), ignore_errors=True)
  rows, counts = [], {"exact": 0, "refused": 0, "silent": 0, "unclear": 0}
  # A SIGTERM between two runs must not end the campaign.
  with preemption.handler():
    for i in range(_TRIALS.value):
      kind = rng.choice(_FAULTS.value)
      row = trial(i, kind, rng, dirs, reference,
                  sub_seconds if kind == "sigkill" else here_seconds)
      counts[row["outcome"]] += 1
      rows.append(row)
      print(json.dumps(row), flush=True)
      if row["outcome"] in ("exact", "refused"):  # keep the others
        shutil.rmtree(os.path.join(dirs["trials"], f"{i:03d}"),
                      ignore_errors=True)
  summary = {"trials": _TRIALS.value, "seed": _SEED.value, "counts": counts,
             "seconds": {"subprocess_run": round(sub_seconds, 1),
                         "in_process_run": round(here_seconds, 1)},
             "rows": rows}
  workdir_lib.write_json_atomic(os.path.join(_OUT.value, "summary.json"),
                                summary, indent=1)
  print(json.dumps(counts))
  if counts["silent"] or counts["unclear"]:
    sys.exit(1)


if __name__ == "__main__":
  os.environ.update(_CPU_ENV)  # before JAX is imported
  _TRIALS, _SEED, _OUT, _FAULTS = _define_flags()
  app.run(main)
