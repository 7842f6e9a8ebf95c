"""Entry point: `python -m crl.main --config=configs/nac.py --workdir=runs/nac`.

Flags:
  --config   a config file with `get_config(arg)`; `file.py:arg` picks a variant
             and `--config.key=value` overrides any key (unknown keys fail).
  --workdir  where checkpoints, metrics and results go (required). Running the
             same command again resumes from the newest checkpoint there.
  --verbose  also show the libraries' INFO logs (Orbax, JAX backends) and
             TensorFlow's start-up notices.
Progress goes to stderr: a bar on a terminal, a log line every
`config.log_every_steps` otherwise; periodic evaluations print one line each.
Multi-process runs (several hosts, or several processes on one host) call
`jax.distributed.initialize` first: from `--coordinator_address`,
`--num_processes` and `--process_id`, or from the cluster environment
(SLURM, TPU pods) when `--distributed=auto` detects one.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from crl import metric_writers  # defines --verbose

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/<name>.py[:variant]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Call jax.distributed.initialize: 'auto' when flags or the cluster "
    "environment (SLURM with several tasks, a multi-host TPU) say that this "
    "is one of several processes.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
    "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", int(os.environ.get("JAX_NUM_PROCESSES", "0")) or None,
    "Number of processes (multi-process runs).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", int(os.environ["JAX_PROCESS_ID"])
    if "JAX_PROCESS_ID" in os.environ else None,
    "This process's index (multi-process runs).")

flags.mark_flags_as_required(["config", "workdir"])


def _in_cluster() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return len([h for h in hosts.split(",") if h]) > 1


def _maybe_initialize_distributed() -> bool:
  """Joins the other processes of a multi-process run; True if it did."""
  import jax  # pylint: disable=g-import-not-at-top
  explicit = _NUM_PROCESSES.value is not None and _NUM_PROCESSES.value > 1
  if _DISTRIBUTED.value == "off" or (_DISTRIBUTED.value == "auto" and
                                     not explicit and not _in_cluster()):
    return False
  kwargs = {}
  if _COORDINATOR.value:
    kwargs["coordinator_address"] = _COORDINATOR.value
  if _NUM_PROCESSES.value is not None:
    kwargs["num_processes"] = _NUM_PROCESSES.value
  if _PROCESS_ID.value is not None:
    kwargs["process_id"] = _PROCESS_ID.value
  # CPU processes exchange data through gloo (no effect on GPU/TPU backends).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global "
               "devices.", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def _shutdown_distributed() -> None:
  """Leaves the run through the shutdown barrier.

  Without it, process 0 (which hosts the coordination service) can exit
  while the others are still tearing down; they then poll a dead service
  and abort (SIGABRT), failing a run that had finished.
  """
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.shutdown()


def _hide_accelerators_from_tensorflow() -> None:
  """TensorFlow (tf.data, TFDS) must never take GPU/TPU memory from JAX."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except RuntimeError:  # TensorFlow was initialised already (main called twice)
    pass


# Errors a user can cause by config or data: one clear line, exit code 2.
def _user_errors() -> tuple[type[BaseException], ...]:
  from crl import checkpointing, config_lib, registry, train_step, workdir  # pylint: disable=g-import-not-at-top
  from crl.data import pipeline  # pylint: disable=g-import-not-at-top
  return (config_lib.ConfigError, registry.UnknownNameError,
          pipeline.DataError, checkpointing.CheckpointError,
          workdir.WorkdirBusyError, workdir.WorkdirError,
          train_step.NonFiniteError)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  metric_writers.setup_console()
  _hide_accelerators_from_tensorflow()
  distributed = _maybe_initialize_distributed()
  from crl import preemption, registry, workdir  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  user_errors = _user_errors()
  try:
    workdir.check_workdir(_WORKDIR.value)
    trainer = registry.TRAINERS.get(config.get("trainer", "classification"))
    # SIGTERM anywhere in the run stops at the next safe point (exit 0).
    with preemption.handler():
      trainer(config, _WORKDIR.value)
    exit_code = 0
  except preemption.Preempted as e:
    print(f"\ncrl: {e}", file=sys.stderr, flush=True)
    exit_code = 0
  except user_errors as e:
    print(f"\ncrl: error: {_one_line(e)}", file=sys.stderr, flush=True)
    exit_code = 2
  if distributed:
    _shutdown_distributed()
  if exit_code:
    sys.exit(exit_code)


def _clean(message: str) -> str:
  """One line from ml_collections' nested, repr()'d and traceback'd messages."""
  lines = [l.strip().replace("\\'", "'").strip("'\" ")
           for l in str(message).replace("\\n", "\n").splitlines()]
  lines = [l for l in lines if l]
  if any("Traceback (most recent call last)" in l for l in lines):
    head = lines[0].split("Traceback")[0].strip()
    lines = [head, lines[-1]]
  return ". ".join(l.rstrip(".:") if i < len(lines) - 1 else l
                   for i, l in enumerate(lines))


def _one_line(error: BaseException) -> str:
  """A user error's message on one line (multi-line lists joined by '; ')."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  if not lines:
    return type(error).__name__
  head, rest = lines[0], lines[1:]
  return head + (" " + "; ".join(rest) if rest else "")


def _config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config-file and override errors as one line."""
  spec = _config_path(argv)
  if spec is not None:
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
      what = "is a directory" if os.path.isdir(path) else "does not exist"
      print(f"crl: error: the config file {path} {what}; expected e.g. "
            "--config=configs/nac.py (or configs/nac.py:tiny).",
            file=sys.stderr)
      sys.exit(2)
  try:
    rest = flags.FLAGS(argv)
    error = _load_error()
    if error is not None:
      print(f"crl: error: the config file {spec} cannot be loaded: "
            f"{_clean(str(error))}", file=sys.stderr)
    elif len(rest) > 1:
      print(f"crl: error: unexpected arguments {rest[1:]}; every setting is "
            "a flag (--config.key=value).", file=sys.stderr)
    else:
      return rest
  except flags.Error as e:
    print(f"crl: error: {_clean(str(e))} (--helpfull lists the flags)",
          file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    print(f"crl: error: the config or an override is invalid "
          f"({' '.join(overrides) or 'no overrides'}): {_clean(str(e))}",
          file=sys.stderr)
  except Exception as e:  # pylint: disable=broad-except
    # The config file itself fails (SyntaxError, NameError, ImportError...).
    print(f"crl: error: the config file {spec} cannot be loaded: "
          f"{type(e).__name__}: {_clean(str(e))}", file=sys.stderr)
  sys.exit(2)


def _load_error() -> BaseException | None:
  """The error ml_collections deferred while loading --config, if any."""
  value = flags.FLAGS["config"].value
  if type(value).__name__ != "_ErrorConfig":
    return None
  try:
    return object.__getattribute__(value, "_error")
  except AttributeError:
    return RuntimeError("unknown error")


def run() -> None:
  """Console-script entry (`crl-main`)."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
