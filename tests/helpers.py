"""Shared test helpers: tiny configs, running `crl.main` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import ml_collections

from crl import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_with(spec: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config `spec` (`configs/<file>.py[:variant]`, from the repository
  root) with dotted-key overrides (`{"data.seed": 1}`), locked."""
  config = config_lib.load_config(os.path.join(ROOT, spec))
  config.unlock()
  for key, value in overrides.items():
    section = config
    *parents, leaf = key.split(".")
    for p in parents:
      section = section[p]
    section[leaf] = value
  config.lock()
  return config


def tiny_config(**overrides: Any) -> ml_collections.ConfigDict:
  """`configs/nac.py:tiny` with dotted-key overrides (`"data.seed": 1`)."""
  return load_with("configs/nac.py:tiny", overrides)


def subprocess_env(devices: int = 1) -> dict[str, str]:
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             CUDA_VISIBLE_DEVICES="", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
  flags = env.get("XLA_FLAGS", "")
  if devices > 1:
    flags += f" --xla_force_host_platform_device_count={devices}"
  env["XLA_FLAGS"] = flags.strip()
  return env


def run_main(*args: str, devices: int = 1, timeout: float = 300,
             **kwargs: Any) -> subprocess.CompletedProcess:
  """Runs `python -m crl.main ARGS` from the repository root."""
  return subprocess.run([sys.executable, "-m", "crl.main", *args], cwd=ROOT,
                        env=subprocess_env(devices), capture_output=True,
                        text=True, timeout=timeout, **kwargs)


def run_python(code: str, devices: int = 1,
               timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        env=subprocess_env(devices), capture_output=True,
                        text=True, timeout=timeout)
