"""Test-wide settings: quiet TensorFlow, CPU only, faster XLA compiles."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # pylint: disable=g-import-not-at-top

# Compile time dominates the small test models; optimisations do not pay.
jax.config.update("jax_disable_most_optimizations", True)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: runs for minutes (CI still runs it; deselect with "
      "-m 'not slow' locally)")
