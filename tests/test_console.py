"""The console: progress on any terminal, evaluation lines, start-up noise."""

import io
import os

from absl import logging
import pytest

from crl import metric_writers


class _Terminal(io.StringIO):
  """A stream that says it is a terminal (its width comes from the patch)."""

  def isatty(self):
    return True

  def fileno(self):
    return 2


def _lines_logged(monkeypatch):
  seen = []
  monkeypatch.setattr(logging, "info", lambda fmt, *a: seen.append(fmt % a))
  return seen


@pytest.mark.parametrize("columns", [0, None])
def test_no_width_or_no_terminal_gives_log_lines(monkeypatch, columns):
  monkeypatch.delenv("COLUMNS", raising=False)
  if columns is None:
    stream = io.StringIO()  # a pipe or a file
  else:
    stream = _Terminal()
    monkeypatch.setattr(os, "get_terminal_size",
                        lambda fd: os.terminal_size((columns, 0)))
  seen = _lines_logged(monkeypatch)
  progress = metric_writers.Progress(100, 0, global_batch=8, stream=stream)
  assert not progress.draws_bar
  progress.update(1, {"loss": 2.5})
  progress.reset_clock(1)  # the first step (compilation) is done
  progress._t0 -= 2.0  # 9 steps in 2 s after it: 4.5 steps/s
  progress.update(10, {"loss": 2.25})
  progress.note("eval test @ step 10: accuracy 0.5")
  progress.close()
  assert seen[0] == "step 1/100 | loss 2.5 | 0 ex/s | ETA ?"
  assert seen[1].startswith("step 10/100 | loss 2.25 | 36 ex/s | ETA 0m2")
  assert seen[2] == "eval test @ step 10: accuracy 0.5"
  assert stream.getvalue() == ""


def test_wide_terminal_draws_a_bar_with_our_eta(monkeypatch):
  stream = _Terminal()
  monkeypatch.setattr(os, "get_terminal_size",
                      lambda fd: os.terminal_size((120, 40)))
  seen = _lines_logged(monkeypatch)
  progress = metric_writers.Progress(100, 0, global_batch=8, stream=stream)
  assert progress.draws_bar
  assert "compiling" in stream.getvalue()
  progress.reset_clock(1)
  progress._t0 -= 2.0
  progress.update(10, {"loss": 2.25})
  progress.note("eval test @ step 10: accuracy 0.5")
  progress.close()
  out = stream.getvalue()
  assert "10/100" in out and "36 ex/s | ETA 0m2" in out
  assert "eval test @ step 10: accuracy 0.5\n" in out
  assert not seen


def test_eval_line_shows_the_first_scalars():
  row = {"accuracy": 0.96875, "nll": 0.1234567, "per_class": [1, 2],
         "flag": True, "ece": 0.02, "a": 1, "b": 2, "c": 3, "d": 4}
  assert metric_writers.eval_line(500, "test", "test", row) == (
      "eval test @ step 500: accuracy 0.9688 | nll 0.1235 | ece 0.02 | a 1 | "
      "b 2 | c 3 | ...")
  assert metric_writers.eval_line(5, "ood", "hue", {}) == (
      "eval ood/hue @ step 5: no scalars")


def test_startup_lines_keep_each_warning_once_and_drop_info():
  text = (
      "WARNING: All log messages before absl::InitializeLog() is called are "
      "written to STDERR\n"
      "I0000 00:00:1796511764.766796   12294 port.cc:153] oneDNN custom "
      "operations are on.\n"
      "I0000 00:00:1796511799.020742   12982 cpu_feature_guard.cc:227] This "
      "TensorFlow binary is optimized\n"
      "To enable the following instructions: AVX2, in other operations, "
      "rebuild TensorFlow.\n"
      "W0000 00:00:1796511764.9   12294 cuda.cc:1] no CUDA\n"
      "WARNING: All log messages before absl::InitializeLog() is called are "
      "written to STDERR\n"
      "I0000 00:00:1796511766.133364   12294 port.cc:153] oneDNN custom "
      "operations are on.\n"
      "W0000 00:00:1796511766.2   12294 cuda.cc:1] no CUDA\n"
      "a Python warning\n")
  assert metric_writers.startup_lines(text) == [
      "W0000 00:00:1796511764.9   12294 cuda.cc:1] no CUDA",
      "a Python warning"]
