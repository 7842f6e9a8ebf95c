"""Accelerator-scale options end to end: mixed precision, bad inputs."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crl import bench_device
from crl import config_lib
from crl import runtime
from crl import optim
from crl import train_step
from crl.trainers import classification
from tests import helpers


def _train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return [r["loss"] for r in rows if r["split"] == "train"]


def test_tiny_bfloat16_run_loss_falls(tmp_path):
  config = helpers.tiny_config(**{
      "compute_dtype": "bfloat16", "num_steps": 16, "log_every_steps": 1,
      "checkpoint.async_save": False, "final_eval.splits": "test",
      "evals": {}})
  workdir = str(tmp_path / "bf16")
  out = classification.train_and_evaluate(config, workdir)
  losses = np.asarray(_train_losses(workdir))
  assert len(losses) == 16 and np.all(np.isfinite(losses))
  assert losses[-4:].mean() < losses[:4].mean() - 0.05, losses
  for leaf in jax.tree.leaves(out["params"]):  # stored in float32
    assert leaf.dtype == np.float32


def test_grad_accumulation_equals_the_full_batch_step():
  config = config_lib.load_config(
      os.path.join(helpers.ROOT, "configs/vit.py:tiny"))
  task = bench_device.synthetic_task(config)
  tx, schedule = optim.make_optimizer(config.optimizer, 16, 100)
  params = task.init_params(jax.random.PRNGKey(0))
  state = train_step.TrainState(step=jnp.zeros((), jnp.int32),
                                params=params, opt_state=tx.init(params))
  key = jax.random.PRNGKey(1)
  batch = {"image": jax.random.uniform(key, (16, *task.input_shape)),
           "label": jax.random.randint(key, (16,), 0, task.num_classes)}
  out = {}
  for k in (1, 4):
    step = jax.jit(train_step.make_train_step(task, tx, schedule, 0, k))
    new, metrics = step(state, batch)
    new, metrics = step(new, batch)  # two steps: moments are used too
    out[k] = (new, metrics)
  np.testing.assert_allclose(out[4][1]["loss"], out[1][1]["loss"],
                             rtol=1e-5)
  np.testing.assert_allclose(out[4][1]["grad_norm"],
                             out[1][1]["grad_norm"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               out[4][0].params, out[1][0].params)
  assert int(out[4][0].step) == 2


def test_compile_cache_is_written_and_read_on_a_second_start(tmp_path):
  code = f"""
import time, jax, jax.numpy as jnp, ml_collections
from crl import runtime
c = ml_collections.ConfigDict({{"compile_cache_dir": {str(tmp_path)!r}}})
assert runtime.setup_compile_cache(c) == {str(tmp_path)!r}
f = jax.jit(lambda x: jnp.sin(x) @ x.T)
t = time.perf_counter(); f.lower(jnp.ones((8, 8))).compile()
print("COMPILE", time.perf_counter() - t)
"""
  for _ in range(2):
    proc = helpers.run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.listdir(tmp_path)  # entries written by the first start
  auto = ml_collections.ConfigDict({"compile_cache_dir": "auto"})
  assert runtime.setup_compile_cache(auto) is None  # CPU: off by default
