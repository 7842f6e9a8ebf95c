"""Orbax checkpoints: atomic saves, integrity records, automatic resume.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoints intact. Once Orbax
has committed a step, process 0 writes `<step>/crl_integrity.json` (size and
sha256 of every file of the step) atomically. Every reader (resume,
`train.restore_trained`, hence analysis and the OOD suite) restores through
`Checkpointer.restore_latest`, which tries the newest step first and checks
its record; a step whose files differ from the record, or that Orbax cannot
read, is reported with one warning naming the step directory and the file,
moved aside to `checkpoints/broken-<step>-<time>` (kept for inspection; Orbax
ignores that name, so the retrained step is saved again) and the next older
step is tried. Nothing is silently re-initialised: if checkpoints exist but
none can be read, the run stops. A checkpoint whose arrays do not match the
model (another config) is refused with the mismatching parameter paths.

A committed step without a record (written before records existed, or the
process died in the instant between Orbax's commit and the record) is used if
Orbax reads it and its values are finite, with a warning, and the record is
written then (when the directory is writable). Orbax's commit is atomic, so
such a step is complete; what cannot be detected is a corruption of its files
before the record is written, which is why the record is written right after
the commit (Orbax's post-finalisation callback), not at the next save.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No usable checkpoint although checkpoints exist, or a config mismatch."""


def path_name(path: tuple[Any, ...]) -> str:
  """A pytree path as `a/b/0/c`, whatever the containers (dataclass fields,
  dict keys, sequence indices): the state and Orbax's metadata tree spell
  the same leaf differently."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _shape_mismatches(abstract: Any, stored: Any) -> list[str]:
  """Paths whose shapes differ between the model and a checkpoint's metadata."""
  want = {path_name(p): tuple(x.shape) for p, x in
          jax.tree_util.tree_leaves_with_path(abstract)}
  have = {}
  for p, x in jax.tree_util.tree_leaves_with_path(stored):
    shape = getattr(x, "shape", None)
    if shape is not None:
      have[path_name(p)] = tuple(shape)
  out = []
  for key in sorted(set(want) | set(have)):
    if key not in have:
      out.append(f"{key}: in the model {want[key]}, not in the checkpoint")
    elif key not in want:
      out.append(f"{key}: in the checkpoint {have[key]}, not in the model")
    elif want[key] != have[key]:
      out.append(f"{key}: model {want[key]} vs checkpoint {have[key]}")
  return out


RECORD_NAME = "crl_integrity.json"
BROKEN_PREFIX = "broken-"


def step_dirs(directory: str) -> list[int]:
  """The steps of `directory` (its integer-named folders), sorted."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def file_digests(step_dir: str) -> dict[str, dict[str, Any]]:
  """`{relative path: {"size", "sha256"}}` of every file under `step_dir`
  (but the record itself)."""
  out = {}
  for root, dirs, files in os.walk(step_dir):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel == RECORD_NAME:
        continue
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
      out[rel] = {"size": os.path.getsize(path), "sha256": digest.hexdigest()}
  return out


def write_record(step_dir: str) -> None:
  """Writes `step_dir/crl_integrity.json` atomically (tmp file + rename)."""
  record = {"format": 1, "files": file_digests(step_dir)}
  tmp = os.path.join(step_dir, f".{RECORD_NAME}.tmp.{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, RECORD_NAME))


def verify_record(step_dir: str) -> str | None:
  """None if `step_dir` matches its record, else what differs (one phrase
  naming the file). Raises FileNotFoundError when there is no record."""
  try:
    with open(os.path.join(step_dir, RECORD_NAME)) as f:
      expected = json.load(f)["files"]
  except (ValueError, KeyError, TypeError):
    return f"its integrity record {RECORD_NAME} is unreadable"
  try:
    actual = file_digests(step_dir)
  except OSError as e:
    return f"{e.filename or 'a file'} cannot be read ({e.strerror})"
  for rel in sorted(set(expected) | set(actual)):
    if rel not in actual:
      return f"file {rel} is missing"
    if rel not in expected:
      return f"file {rel} is not in its integrity record"
    if actual[rel]["size"] != expected[rel]["size"]:
      return (f"file {rel} has {actual[rel]['size']} bytes, recorded "
              f"{expected[rel]['size']}")
    if actual[rel]["sha256"] != expected[rel]["sha256"]:
      return f"file {rel} does not match its recorded sha256"
  return None


class Checkpointer:
  """Saves every `every_steps` steps, keeps the newest `keep` checkpoints."""

  def __init__(self, directory: str, every_steps: int, keep: int,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every_steps = every_steps
    self._pending: list[int] = []  # saved steps without a record yet
    self._lock = threading.Lock()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=1, create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            async_options=ocp.AsyncOptions(
                post_finalization_callback=self._record_pending)
            if async_save else None),
        # Known up front, so a fresh process can read metadata before any save.
        item_handlers=ocp.StandardCheckpointHandler())

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _record_pending(self) -> None:
    """Writes the records of the saved steps Orbax has committed (process 0;
    called after each commit, and from `save`, `wait` and `close`)."""
    with self._lock:
      pending, self._pending = self._pending, []
      for step in pending:
        step_dir = self._step_dir(step)
        if not os.path.exists(os.path.join(step_dir, "_CHECKPOINT_METADATA")):
          if self._manager.is_saving_in_progress():
            self._pending.append(step)  # not committed yet
          continue  # else deleted already (max_to_keep)
        if jax.process_index() == 0:
          try:
            write_record(step_dir)
          except OSError as e:
            logging.warning("Cannot write the integrity record of %s: %s",
                            step_dir, e)

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def should_save(self, step: int, final_step: int) -> bool:
    return step == final_step or (self.every_steps > 0 and
                                  step % self.every_steps == 0)

  def save(self, step: int, state: Any) -> None:
    """Starts an (asynchronous) save of `state` as `step`."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    with self._lock:
      self._pending.append(step)
    if not self._manager.is_saving_in_progress():
      self._record_pending()

  def wait(self) -> None:
    self._manager.wait_until_finished()
    self._record_pending()

  def _set_aside(self, step: int, why: str) -> None:
    """Warns naming the step dir and `why`; moves the step aside (process 0)."""
    path = self._step_dir(step)
    moved = "left in place"
    if jax.process_index() == 0:
      aside = os.path.join(self.directory, f"{BROKEN_PREFIX}{step}-"
                           f"{time.strftime('%Y%m%d-%H%M%S')}")
      try:
        os.rename(path, aside)
        moved = f"moved to {aside}"
      except OSError as e:
        moved = f"left in place (cannot move it: {e.strerror})"
    logging.warning("Checkpoint %s is broken: %s; %s; falling back to the "
                    "previous one.", path, why, moved)
    self._manager.reload()

  def restore_latest(self, abstract_state: Any) -> tuple[Any, int] | None:
    """Restores the newest readable checkpoint into `abstract_state`'s layout.

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` with shardings.

    Returns:
      `(state, step)`, or None when the directory holds no checkpoint.

    Raises:
      CheckpointError: checkpoints exist but none is readable, or the newest
        readable one was written for a model with other parameter shapes.
    """
    steps = self.steps()
    if not steps:
      return None
    errors = []
    for step in reversed(steps):
      step_dir = self._step_dir(step)
      try:
        problem = verify_record(step_dir)
        recorded = True
      except FileNotFoundError:
        problem, recorded = None, False
      if problem is not None:
        self._set_aside(step, problem)
        errors.append(f"{step_dir}: {problem}")
        continue
      try:
        metadata = self._manager.item_metadata(step)
      except Exception as e:  # pylint: disable=broad-except
        metadata, meta_error = None, e
      else:
        meta_error = None
      tree = getattr(metadata, "tree", metadata)
      if tree is not None and meta_error is None:
        mismatches = _shape_mismatches(abstract_state, tree)
        if mismatches:
          raise CheckpointError(
              f"The checkpoint at step {step} in {self.directory} was written "
              f"for a different model config; {len(mismatches)} array(s) "
              "differ:\n  " + "\n  ".join(mismatches[:10]) +
              "\nUse a new --workdir, or the config that wrote it (see "
              "config.json in the workdir).")
      try:
        state = self._manager.restore(
            step, args=ocp.args.StandardRestore(abstract_state))
        _check_finite(state, step)
      except CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        reason = meta_error or e
        text = " ".join(str(reason).split())[:300]
        why = f"Orbax cannot read it ({type(reason).__name__}: {text})"
        self._set_aside(step, why)
        errors.append(f"{step_dir}: {type(reason).__name__}")
        continue
      if not recorded:
        logging.warning(
            "Checkpoint %s has no integrity record (written by older code, "
            "or the run stopped right after saving it); it reads and its "
            "values are finite, so it is used and recorded now.", step_dir)
        if jax.process_index() == 0:
          try:
            write_record(step_dir)
          except OSError:
            pass  # a read-only run directory: checked again next time
      return state, step
    raise CheckpointError(
        f"None of the {len(steps)} checkpoint(s) in {self.directory} can be "
        "read (" + "; ".join(errors) + "); they were moved aside as "
        f"{BROKEN_PREFIX}<step>-<time>. Move the workdir away to start over.")

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._record_pending()
    self._manager.close()


def _check_finite(state: Any, step: int) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      continue
    value = np.asarray(jax.device_get(leaf))
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
      raise ValueError(f"non-finite values in {path_name(path)} "
                       f"at step {step}")
