"""One workdir, one run: a lock file naming the process that owns it."""

from __future__ import annotations

import json
import os
import socket
import time

from absl import logging

LOCK_NAME = "run.lock"


def write_json_atomic(path: str, obj, sort_keys: bool = False) -> None:
  """Writes `obj` as JSON so that a reader sees the old file or the new one.

  Other processes of a multi-process run read workdir files (e.g.
  `config.json` on resume) while process 0 rewrites them; a plain
  `open(path, "w")` lets them read an empty, truncated file.
  """
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=sort_keys)
  os.replace(tmp, path)


class WorkdirBusyError(RuntimeError):
  """Another live process is training in this workdir."""


class WorkdirError(ValueError):
  """The workdir path cannot hold a run (a file, not writable)."""


def check_workdir(workdir: str) -> None:
  """Raises `WorkdirError` unless `workdir` is, or can be made, a writable
  directory; writes nothing."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"--workdir={workdir} is a file; expected a directory "
                       "(a new one, or that of a run to resume).")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f"--workdir={workdir} cannot be created: {existing} is "
                       "a file, not a directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    what = ("is" if existing == path else
            f"would be created in {existing}, which is")
    raise WorkdirError(f"--workdir={workdir} {what} not writable; choose a "
                       "writable directory.")


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """Exclusive ownership of a workdir for the lifetime of a run.

  A lock left by a dead process on this host (crash, SIGKILL) is taken over
  with a warning. A lock held by a live process is refused. A lock from
  another host is refused too (its liveness cannot be checked from here);
  delete the file by hand if that run is gone.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._held = False

  def acquire(self) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = self._read()
        if (owner is not None and owner.get("host") == me["host"] and
            owner.get("pid") == me["pid"]):
          self._held = True
          return
        if (owner is None or (owner.get("host") == me["host"] and
                              not _alive(int(owner.get("pid", -1))))):
          logging.warning("Taking over the stale lock %s left by %s.",
                          self.path, owner)
          try:
            os.remove(self.path)
          except FileNotFoundError:
            pass
          continue
        raise WorkdirBusyError(
            f"The workdir is in use by process {owner.get('pid')} on "
            f"{owner.get('host')} (since {owner.get('started')}), according "
            f"to {self.path}. Use another --workdir, or stop that run; "
            "remove the lock file only if that process is gone.") from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self._held = True
      return
    raise WorkdirBusyError(f"Could not acquire {self.path}.")

  def _read(self) -> dict | None:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def release(self) -> None:
    if self._held:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
      self._held = False

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
