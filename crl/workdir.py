"""One workdir, one run: the lock file naming the process that owns it, the
atomic writer of its JSON files, and the checks that a workdir belongs to
the run about to use it (`check_run_identity`, `check_no_previous_run`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import IO, Any, Callable, Iterator, Mapping

from absl import logging

from crl import checkpointing
from crl import config_lib
from crl import registry

LOCK_NAME = "run.lock"
# Config keys that may change between invocations without making a trained
# member another model: how it is checkpointed, logged, evaluated, compiled.
VOLATILE_KEYS = ("checkpoint", "log_every_steps", "tensorboard", "evals",
                 "final_eval", "eval_batch_size", "xla_fast_compile")


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO[Any]]:
  """A file whose content replaces `path` in one step when the block ends.

  The one way crl rewrites a file that other processes or a resumed run may
  read (JSON files, metrics.jsonl, saved parameters): it writes a hidden
  temporary file next to `path`, flushes it to disk and renames it over
  `path`, so a reader sees the old file or the new one, never a part of
  either; an exception inside the block leaves `path` as it was.
  """
  folder, name = os.path.split(path)
  tmp = os.path.join(folder, f".{name}.tmp.{os.getpid()}")
  try:
    with open(tmp, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json_atomic(path: str, obj, sort_keys: bool = False,
                      indent: int | None = 2) -> None:
  """Writes `obj` as JSON through `atomic_write`: the one writer of a run's
  JSON files (config.json, results.json, reports)."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=indent, sort_keys=sort_keys)


def _json_plain(value: Any) -> Any:
  """`value` as it reads back from a JSON file (tuples as lists, others as
  strings)."""
  return json.loads(json.dumps(value, default=str))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
  """`'key.sub: old -> new'` for every leaf where two plain dicts differ."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new), key=str):
      out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
    return out
  return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def check_run_identity(workdir: str, plain: Mapping[str, Any],
                       identity: Callable[[dict[str, Any]], Any] = dict,
                       holds: str = "checkpoints of a run with another "
                       "config",
                       advice: str = "Use a new --workdir to train this "
                       "config.") -> None:
  """The one check that `workdir` belongs to the run of config `plain`.

  Compares `identity` of the `config.json` there (if any) with `identity`
  of `plain` (both as JSON reads them back) and raises one
  `CheckpointError` naming `workdir`, what it `holds`, every differing key
  (`a.b: old -> new`) and the `advice`. A single run compares its
  `train.run_identity`; a population or a suite its whole config, less what
  may change between invocations.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  diffs = _differences(_json_plain(identity(old)),
                       _json_plain(identity(_json_plain(plain))))
  if diffs:
    raise checkpointing.CheckpointError(
        f"{workdir} holds {holds}; differences:\n  " + "\n  ".join(diffs) +
        f"\n{advice}")


def model_identity(plain: Mapping[str, Any]) -> dict[str, Any]:
  """What makes a member's config (plain) another model: all of it but
  `VOLATILE_KEYS` and `data.eval_examples`, `model` with today's defaults of
  fields it lacks. The identity of a finished member of a study
  (`crl.trainers.ood_suite.finished_step`) and of a population's members
  (`crl.population_io.check_population_dir`)."""
  out = {k: v for k, v in plain.items() if k not in VOLATILE_KEYS}
  if isinstance(out.get("data"), dict):
    out["data"] = {k: v for k, v in out["data"].items()
                   if k != "eval_examples"}
  out["model"] = config_lib.with_component_defaults(registry.MODELS,
                                                    out.get("model"))
  return out


_PREVIOUS_RUN_FILES = ("config.json", "metrics.jsonl", "results.json")


def check_no_previous_run(workdir: str) -> None:
  """Refuses a workdir with a previous run's records but no checkpoint.

  Such a run stopped before its first checkpoint was committed, or its
  checkpoints were deleted or found broken; starting again would append a
  second run to its files.
  """
  found = [f for f in _PREVIOUS_RUN_FILES
           if os.path.exists(os.path.join(workdir, f))]
  ckpt_dir = os.path.join(workdir, "checkpoints")
  broken = sorted(d for d in os.listdir(ckpt_dir)
                  if d.startswith(checkpointing.BROKEN_PREFIX)
                  ) if os.path.isdir(ckpt_dir) else []
  if broken:
    found.append(f"{len(broken)} broken checkpoint(s) in checkpoints/")
  if found:
    raise checkpointing.CheckpointError(
        f"{workdir} holds a previous run ({', '.join(found)}) but no usable "
        "checkpoint, so it cannot be resumed; nothing was changed. To start "
        "over, move that workdir away (or delete it), or use another "
        "--workdir.")


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
