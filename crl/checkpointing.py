"""Orbax checkpoints: atomic saves, automatic resume, safe fallback.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoints intact. On restore the
newest step is tried first; a step that cannot be read (truncated, corrupted)
is reported with a warning naming it and the next older one is tried. Nothing
is silently re-initialised: if checkpoints exist but none can be read, the run
stops. A checkpoint whose arrays do not match the model (another config) is
refused with the mismatching parameter paths.
"""

from __future__ import annotations

import os
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


class Checkpointer:
  """Saves every `every_steps` steps, keeps the newest `keep` checkpoints."""

  def __init__(self, directory: str, every_steps: int, keep: int,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every_steps = every_steps
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=1, create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True),
        # Known up front, so a fresh process can read metadata before any save.
        item_handlers=ocp.StandardCheckpointHandler())

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

  def wait(self) -> None:
    self._manager.wait_until_finished()

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
        return state, step
      except CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        reason = meta_error or e
        path = os.path.join(self.directory, str(step))
        logging.warning("Checkpoint %s cannot be read (%s: %s); falling back "
                        "to the previous one.", path, type(reason).__name__,
                        str(reason).splitlines()[0][:300] if str(reason)
                        else "")
        errors.append(f"{path}: {type(reason).__name__}")
    raise CheckpointError(
        f"None of the {len(steps)} checkpoint(s) in {self.directory} can be "
        "read:\n  " + "\n  ".join(errors) + "\nMove them away to start over.")

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _check_finite(state: Any, step: int) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      continue
    value = np.asarray(jax.device_get(leaf))
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
      raise ValueError(f"non-finite values in {path_name(path)} "
                       f"at step {step}")
