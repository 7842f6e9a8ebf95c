"""Where metrics go: `metrics.jsonl`, TensorBoard event files and the console."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping

from absl import logging
import jax


def _plain(value: Any) -> Any:
  try:
    value = float(value)
  except (TypeError, ValueError):
    return value
  return value if math.isfinite(value) else str(value)


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard (process 0).

  Each `write` appends one JSON object `{"step": s, "split": ..., name:
  value, ...}`, flushed at once so that a killed run loses nothing written.
  """

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self.active:
      return
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    if tensorboard:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._tb = tf.summary.create_file_writer(workdir)

  def write(self, step: int, scalars: Mapping[str, Any],
            split: str = "train") -> None:
    if not self.active:
      return
    record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
    record.update({k: _plain(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      with self._tb.as_default():
        for name, value in scalars.items():
          if isinstance(value, (int, float)) and math.isfinite(float(value)):
            self._tf.summary.scalar(f"{split}/{name}", float(value),
                                    step=int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def drop_rows_after(workdir: str, step: int) -> int:
  """Drops the rows of `workdir/metrics.jsonl` that a resumed run rewrites.

  Those are the rows after `step` (the restored checkpoint), the final
  evaluation's rows (`final/...`, rewritten whenever the run is run again)
  and a line cut short by a kill. The file is replaced atomically. Returns
  the number of rows dropped. (TensorBoard event files are append-only and
  keep the old rows; TensorBoard shows the newest value of a step.)
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
      ok = (line.endswith("\n") and int(row["step"]) <= step and
            not str(row.get("split", "")).startswith("final/"))
    except (ValueError, KeyError, TypeError):
      ok = False
    if ok:
      kept.append(line)
  if len(kept) == len(lines):
    return 0
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)
  logging.info("metrics.jsonl: dropped %d row(s) after step %d (rewritten "
               "by this run).", len(lines) - len(kept), step)
  return len(lines) - len(kept)


_WINDOW = "log_window.json"


def save_window(workdir: str, step: int, window: list[Mapping[str, Any]]
                ) -> None:
  """Keeps the metrics of the steps after the last log line of a run that
  stops at `step` (host values), for `load_window` on resume."""
  rows = [{k: float(v) for k, v in m.items()} for m in window]
  tmp = os.path.join(workdir, f".{_WINDOW}.tmp.{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump({"step": int(step), "rows": rows}, f)
  os.replace(tmp, os.path.join(workdir, _WINDOW))


def load_window(workdir: str, step: int) -> list[dict[str, float]]:
  """The window saved by a run stopped at `step`, else [] (the file stays:
  training is deterministic, so a later resume from `step` reads the same
  values)."""
  try:
    with open(os.path.join(workdir, _WINDOW)) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return []
  return list(saved["rows"]) if saved.get("step") == step else []


def format_seconds(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """Console progress: a bar on a terminal, plain log lines otherwise."""

  def __init__(self, total_steps: int, start_step: int, global_batch: int):
    self.total = total_steps
    self.batch = global_batch
    self._t0 = time.time()
    self._s0 = start_step
    self._bar = None
    if jax.process_index() == 0 and sys.stderr.isatty():
      try:
        import tqdm  # pylint: disable=g-import-not-at-top
        self._bar = tqdm.tqdm(total=total_steps, initial=start_step,
                              unit="step", dynamic_ncols=True)
      except ImportError:
        self._bar = None

  def reset_clock(self, step: int) -> None:
    """Starts the throughput clock after compilation."""
    self._t0, self._s0 = time.time(), step

  def rates(self, step: int) -> tuple[float, float]:
    """(examples/s, seconds left) since the clock started."""
    elapsed = max(time.time() - self._t0, 1e-9)
    steps_per_s = max(step - self._s0, 0) / elapsed
    eta = (self.total - step) / steps_per_s if steps_per_s > 0 else float("nan")
    return steps_per_s * self.batch, eta

  def update(self, step: int, scalars: Mapping[str, float]) -> None:
    ex_s, eta = self.rates(step)
    text = " | ".join(f"{k} {v:.4g}" for k, v in scalars.items())
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix_str(f"{text} | {ex_s:.0f} ex/s")
      self._bar.refresh()
    elif jax.process_index() == 0:
      eta_s = format_seconds(eta) if math.isfinite(eta) else "?"
      logging.info("step %d/%d | %s | %.0f ex/s | ETA %s", step, self.total,
                   text, ex_s, eta_s)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
