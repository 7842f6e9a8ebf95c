"""Test-wide settings: quiet TensorFlow, CPU only, faster XLA compiles, and
one persistent XLA compilation cache for the whole session."""

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Many tests compile the same tiny programs again: a resumed run, a rerun
# after a kill, every `crl.main` subprocess of the same `:tiny` config. One
# cache per session (fresh each time), shared through the environment by
# the xdist workers and the processes the tests start (`tests.helpers`);
# every program is cached (no minimum compile time or size), as in
# `crl.runtime.setup_compile_cache`. A cached executable is the one the
# compiler produced, so no result changes. The process that made it
# removes it at the end.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="crl-tests-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # pylint: disable=g-import-not-at-top

# Compile time dominates the small test models; optimisations do not pay.
jax.config.update("jax_disable_most_optimizations", True)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: runs for minutes (CI still runs it; deselect with "
      "-m 'not slow' locally)")


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
