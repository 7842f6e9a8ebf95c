"""Where metrics go: `metrics.jsonl`, TensorBoard event files and the console.

The console part: `Progress` (a bar or log lines, evaluation lines) and
`setup_console` (what programs call first: the `--verbose` flag, library
INFO filtering, TensorFlow's start-up notices once instead of twice).
"""

from __future__ import annotations

import json
import logging as std_logging
import math
import os
import re
import sys
import tempfile
import time
from typing import Any, Mapping

from absl import flags
from absl import logging
import jax
import numpy as np

from crl import workdir as workdir_lib


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
  with workdir_lib.atomic_write(path) as f:
    f.writelines(kept)
  logging.info("metrics.jsonl: dropped %d row(s) after step %d (rewritten "
               "by this run).", len(lines) - len(kept), step)
  return len(lines) - len(kept)


_WINDOW = "log_window.json"


def save_window(workdir: str, step: int, window: list[Mapping[str, Any]]
                ) -> None:
  """Keeps the metrics of the steps after the last log line of a run that
  stops at `step` (host values), for `load_window` on resume."""
  rows = [{k: float(v) for k, v in m.items()} for m in window]
  workdir_lib.write_json_atomic(os.path.join(workdir, _WINDOW),
                                {"step": int(step), "rows": rows},
                                indent=None)


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


def _terminal_width(stream: Any) -> int:
  """Columns of the terminal behind `stream`; 0 when it is not a terminal or
  reports no width (some IDE consoles, `script`, CI pseudo-terminals)."""
  try:
    if not stream.isatty():
      return 0
    columns = os.get_terminal_size(stream.fileno()).columns
  except (AttributeError, OSError, ValueError):
    return 0
  if columns <= 0:
    columns = int(os.environ.get("COLUMNS", "0") or 0)
  return columns


class Progress:
  """Console progress of a training run (process 0 only).

  A tqdm bar when stderr is a terminal at least `MIN_COLUMNS` wide; on any
  other terminal, a pipe or a file, one log line per `update` (the loop calls
  it every `log_every_steps`): step, the task's metrics, examples/s, ETA.
  Examples/s and the ETA count from `reset_clock` (called after the first
  step, so compilation is excluded), in the bar as in the lines; `note`
  prints a line (an evaluation's results) without breaking the bar.
  """

  MIN_COLUMNS = 40

  def __init__(self, total_steps: int, start_step: int, global_batch: int,
               stream: Any = None):
    self.total = total_steps
    self.batch = global_batch
    self._t0 = time.time()
    self._s0 = start_step
    self._clock_started = False
    self._bar = None
    self._active = jax.process_index() == 0
    stream = sys.stderr if stream is None else stream
    if self._active and _terminal_width(stream) >= self.MIN_COLUMNS:
      try:
        import tqdm  # pylint: disable=g-import-not-at-top
        # tqdm's own rate and ETA would count compilation: ours are in the
        # postfix instead.
        self._bar = tqdm.tqdm(
            total=total_steps, initial=start_step, unit="step",
            dynamic_ncols=True, file=stream,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}"
                       "{postfix}]")
        self._bar.set_postfix_str("compiling", refresh=True)
      except ImportError:
        self._bar = None

  @property
  def draws_bar(self) -> bool:
    """True when progress is a bar, False when it is log lines."""
    return self._bar is not None

  def reset_clock(self, step: int) -> None:
    """Starts the throughput clock after compilation."""
    self._t0, self._s0 = time.time(), step
    self._clock_started = True

  def rates(self, step: int) -> tuple[float, float]:
    """(examples/s, seconds left) since the clock started (NaN before)."""
    elapsed = max(time.time() - self._t0, 1e-9)
    steps_per_s = max(step - self._s0, 0) / elapsed
    if not self._clock_started:
      steps_per_s = 0.
    eta = (self.total - step) / steps_per_s if steps_per_s > 0 else float("nan")
    return steps_per_s * self.batch, eta

  def update(self, step: int, scalars: Mapping[str, float]) -> None:
    """Shows `step` with `scalars` (a bar update or one log line)."""
    if not self._active:
      return
    ex_s, eta = self.rates(step)
    eta_s = format_seconds(eta) if math.isfinite(eta) else "?"
    text = " | ".join(f"{k} {v:.4g}" for k, v in scalars.items())
    if self._bar is not None:
      self._bar.n = step
      self._bar.set_postfix_str(f"{text} | {ex_s:.0f} ex/s | ETA {eta_s}",
                                refresh=True)
    else:
      logging.info("step %d/%d | %s | %.0f ex/s | ETA %s", step, self.total,
                   text, ex_s, eta_s)

  def note(self, text: str) -> None:
    """One line on the console (above the bar when there is one)."""
    if not self._active:
      return
    if self._bar is not None:
      self._bar.write(text, file=self._bar.fp)
    else:
      logging.info("%s", text)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def eval_line(step: int, name: str, split: str,
              row: Mapping[str, Any], limit: int = 6) -> str:
  """`eval test/test @ step 500: accuracy 0.9 | nll 0.31 | ...`: the first
  `limit` numeric entries of an evaluator's row, for `Progress.note`."""
  items = []
  for key, value in row.items():
    if isinstance(value, bool) or not isinstance(value, (int, float,
                                                         np.number)):
      continue
    items.append(f"{key} {float(value):.4g}")
  shown = " | ".join(items[:limit]) + (" | ..." if len(items) > limit else "")
  where = name if split == name else f"{name}/{split}"
  return f"eval {where} @ step {step}: {shown or 'no scalars'}"


# Console set-up (crl.main, python -m crl.analysis) ---------------------------

VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Also show the libraries' INFO logs (Orbax checkpoint "
    "narration, JAX backend probing such as libtpu) and TensorFlow's C++ "
    "start-up notices, hidden by default.")


class QuietLibraries:
  """A logging filter: drops INFO records of libraries that narrate every
  checkpoint (Orbax, etils) or probe absent backends (JAX's libtpu)."""

  NOISY = ("/orbax/", "/jax/_src/xla_bridge.py", "/etils/")

  def filter(self, record) -> bool:
    return (record.levelno >= std_logging.WARNING or
            not any(n in record.pathname for n in self.NOISY))


# TensorFlow's wheel holds two copies of its C++ core (the framework library
# and the Python extension), each with its own absl logging state, so each
# prints "All log messages before absl::InitializeLog()..." and the oneDNN
# notice: every start-up line came twice. TF_CPP_MIN_LOG_LEVEL no longer
# reaches these (absl logging, TensorFlow >= 2.16).
_PRE_INIT_HEADER = "WARNING: All log messages before absl::InitializeLog()"
_CPP_PREFIX = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ")


def startup_lines(text: str) -> list[str]:
  """What is worth showing of TensorFlow's import-time stderr: warnings and
  errors once each, without absl's pre-init header and INFO notices (with
  their continuation lines)."""
  kept, seen, dropping = [], set(), False
  for line in text.splitlines():
    match = _CPP_PREFIX.match(line)
    if line.startswith(_PRE_INIT_HEADER):
      dropping = True
      continue
    if match:
      dropping = match.group(1) == "I"
    if dropping or not line.strip():
      continue
    key = line[match.end():] if match else line
    if key not in seen:
      seen.add(key)
      kept.append(line)
  return kept


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow (if installed and not imported yet) with its C++
  start-up stderr filtered by `startup_lines`."""
  if "tensorflow" in sys.modules:
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      pass
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
    captured.seek(0)
    text = captured.read().decode("utf-8", "replace")
  for line in startup_lines(text):
    print(line, file=sys.stderr)


def setup_console(verbose: bool | None = None,
                  tensorflow: bool = True) -> None:
  """absl INFO logs on the console; unless `verbose` (default: the
  `--verbose` flag), library chatter is filtered and (with `tensorflow`)
  TensorFlow is imported quietly. Call first thing in a program's `main`
  (a notebook that does not use TensorFlow passes `tensorflow=False`)."""
  verbose = VERBOSE.value if verbose is None else verbose
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  if verbose:
    return
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())
  if tensorflow:
    import_tensorflow_quietly()
