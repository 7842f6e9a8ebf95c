"""Fault campaign: random faults on a tiny run; nothing silent allowed.

  python -m crl.fault_campaign --trials=50 --out=/tmp/campaign

Trains `configs/nac.py:tiny` once without interruption (the reference), and
once stopped by SIGTERM after its first checkpoint (the partial run). Each
trial copies one of them and applies one random fault:

  flip      overwrite 1-64 random bytes of a random file of a random
            checkpoint step of the finished run (same size);
  truncate  cut a random checkpoint file of the finished run short;
  delete    delete a random checkpoint file of the finished run;
  sigkill   rerun the partial run and SIGKILL it at a random moment;
  sigterm   rerun the partial run and SIGTERM it at a random moment;

then runs the same command again (until it finishes or refuses) and
classifies the outcome:

  exact     exit 0; the newest checkpoint's parameters, results.json and
            metrics.jsonl (wall-clock fields aside) equal the reference's
            bit for bit;
  refused   exit 2 with one `crl: error:` line and no traceback;
  silent    exit 0 but something differs from the reference (must be 0);
  unclear   anything else (a traceback, another exit code).

Writes `OUT/summary.json` (counts and one row per trial). Runtime: about 30
seconds per trial on 2 CPU cores (a tiny run takes about 20 s).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags

_TRIALS = flags.DEFINE_integer("trials", 10, "Number of trials.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the fault choices.")
_OUT = flags.DEFINE_string("out", "/tmp/crl_fault_campaign",
                           "Folder for the runs and summary.json.")
_FAULTS = flags.DEFINE_list(
    "faults", ["flip", "truncate", "delete", "sigkill", "sigterm"],
    "Fault kinds to draw from.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ("--config=configs/nac.py:tiny", "--config.final_eval.splits=test")
_WALL_CLOCK = ("time", "examples_per_s")


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             CUDA_VISIBLE_DEVICES="",
             PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
  return env


def start(workdir: str) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, "-m", "crl.main", *ARGS, f"--workdir={workdir}"],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)


_HANG_SECONDS = 1800  # a run this long counts as hung (`unclear`)


def run(workdir: str) -> tuple[int, str]:
  proc = start(workdir)
  try:
    _, err = proc.communicate(timeout=_HANG_SECONDS)
  except subprocess.TimeoutExpired:
    proc.kill()
    _, err = proc.communicate()
    return -9, err + f"\nhung: killed after {_HANG_SECONDS}s"
  return proc.returncode, err


def checkpoint_steps(workdir: str) -> list[int]:
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


def classify(rc: int, err: str, workdir: str,
             reference: dict[str, Any]) -> tuple[str, str]:
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
  workdir = os.path.join(dirs["trials"], f"{i:03d}")
  shutil.rmtree(workdir, ignore_errors=True)
  source = dirs["partial"] if kind.startswith("sig") else dirs["reference"]
  shutil.copytree(source, workdir)
  if kind.startswith("sig"):
    delay = rng.uniform(0.5, 1.2 * duration)
    proc = start(workdir)
    time.sleep(delay)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL if kind == "sigkill" else
                       signal.SIGTERM)
    try:
      _, err = proc.communicate(timeout=_HANG_SECONDS)
    except subprocess.TimeoutExpired:
      proc.kill()
      _, err = proc.communicate()
      return {"trial": i, "fault": f"{kind} after {delay:.1f}s",
              "outcome": "unclear", "detail": "hung after the signal"}
    what = f"{kind} after {delay:.1f}s (exit {proc.returncode})"
    if kind == "sigterm" and proc.returncode not in (0, -signal.SIGTERM):
      return {"trial": i, "fault": what, "outcome": "unclear",
              "detail": err.strip().splitlines()[-1:]}
  else:
    what = apply_file_fault(kind, workdir, rng)
  rc, err = run(workdir)
  outcome, detail = classify(rc, err, workdir, reference)
  return {"trial": i, "fault": what, "outcome": outcome, "detail": detail}


def _partial(workdir: str) -> None:
  """A run stopped by SIGTERM once its first checkpoint is committed."""
  proc = start(workdir)
  first = os.path.join(workdir, "checkpoints", "5", "_CHECKPOINT_METADATA")
  while proc.poll() is None and not os.path.exists(first):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate()
  if proc.returncode != 0 or not checkpoint_steps(workdir):
    raise RuntimeError(f"The partial run failed: {err[-2000:]}")


def main(argv: list[str]) -> None:
  del argv
  rng = random.Random(_SEED.value)
  dirs = {k: os.path.join(_OUT.value, k)
          for k in ("reference", "partial", "trials")}
  for k in ("reference", "partial"):
    shutil.rmtree(dirs[k], ignore_errors=True)
  t0 = time.time()
  rc, err = run(dirs["reference"])
  duration = time.time() - t0
  if rc != 0:
    raise RuntimeError(f"The reference run failed: {err[-2000:]}")
  reference = snapshot(dirs["reference"])
  _partial(dirs["partial"])
  rows, counts = [], {"exact": 0, "refused": 0, "silent": 0, "unclear": 0}
  for i in range(_TRIALS.value):
    kind = rng.choice(_FAULTS.value)
    row = trial(i, kind, rng, dirs, reference, duration)
    counts[row["outcome"]] += 1
    rows.append(row)
    print(json.dumps(row), flush=True)
    if row["outcome"] in ("exact", "refused"):  # keep the others to inspect
      shutil.rmtree(os.path.join(dirs["trials"], f"{i:03d}"),
                    ignore_errors=True)
  summary = {"trials": _TRIALS.value, "seed": _SEED.value, "counts": counts,
             "reference_seconds": round(duration, 1), "rows": rows}
  with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(json.dumps(counts))
  if counts["silent"] or counts["unclear"]:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
