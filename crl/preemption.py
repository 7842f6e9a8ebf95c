"""SIGTERM at any point: stop at the next safe point, keep what was saved.

One handler for a whole `crl.main` run (and for each `train.run` called
directly): SIGTERM only sets a flag. The training loop reads it once per step
(`should_stop`) and saves a checkpoint before returning; everything else
(final evaluations, the studies' loops, every evaluation batch through
`Pipeline.eval_batches`) calls `check(where)`, which raises `Preempted`
naming where the run stopped (not inside the training loop, `deferred`: the
loop saves the step first). `train.run` returns `{"preempted": True}` and
`crl.main` prints `Preempted` as one line; either way the exit code is 0,
the workdir lock is released on the way out, and the same command finishes
the job (finished trainings are reused from their checkpoints).

With several processes, JAX's coordination service decides at which step
every process stops (`multihost_utils.reached_preemption_sync_point`); the
evaluation check points are then inactive (one process alone must not leave
a collective computation).
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """SIGTERM stopped the run at a safe point; the message says where."""

  def __init__(self, message: str, step: int | None = None):
    super().__init__(message)
    self.step = step


class Preemption:
  """The SIGTERM flag; a re-entrant context manager that installs it."""

  def __init__(self):
    self.requested = False
    self._previous = None
    self._depth = 0
    self._deferred = 0

  def __enter__(self) -> "Preemption":
    if self._depth == 0 and jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        self._previous = None
    self._depth += 1
    return self

  def __exit__(self, *exc) -> None:
    self._depth -= 1
    if self._depth == 0:
      if self._previous is not None:
        signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
      self.requested = False

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: stopping at the next safe point "
                    "(the training step finishes and is saved first).")
    self.requested = True

  def should_stop(self, step: int) -> bool:
    """Whether the training loop saves and stops after `step`."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  @contextlib.contextmanager
  def deferred(self) -> Iterator[None]:
    """`check` does not raise inside (the training loop stops by itself)."""
    self._deferred += 1
    try:
      yield
    finally:
      self._deferred -= 1

  def check(self, where: str) -> None:
    """Raises `Preempted` ("Stopped by SIGTERM {where}; ...") if requested."""
    if self.requested and not self._deferred and jax.process_count() == 1:
      raise Preempted(f"Stopped by SIGTERM {where}; run the same command to "
                      "continue.")


_HANDLER = Preemption()


def handler() -> Preemption:
  """The process-wide handler (`with handler():` installs it)."""
  return _HANDLER


def check(where: str) -> None:
  """`handler().check(where)`: a safe point outside the training loop."""
  _HANDLER.check(where)
