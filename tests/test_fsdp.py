"""Sharded parameters (crl.runtime): the sharding rule, the fsdp train step
against the replicated one on 8 fake CPU devices, and checkpoints moved
between meshes (8 devices with fsdp -> 1 device, 1 device -> 8 with fsdp)."""

import os

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from crl import runtime
from tests import helpers

# Run in a subprocess with N fake devices: ViT :tiny steps on synthetic
# batches, the state laid out by `runtime.state_shardings` on a (data, fsdp)
# mesh; prints the losses. MODE save/restore moves a checkpoint.
_CODE = """
import sys, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from crl import bench_device, checkpointing, config_lib, optim, runtime, train_step
runtime.FSDP_MIN_SIZE = 64  # shard (nearly) every leaf of the tiny model
fsdp, mode, ckpt_dir = %d, %r, %r
config = config_lib.load_config("configs/vit.py:tiny")
task = bench_device.synthetic_task(config)
tx, schedule = optim.make_optimizer(config.optimizer, 16, 100)
mesh = runtime.make_mesh(fsdp)
def init_state(key):
  params = task.init_params(key)
  return train_step.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=tx.init(params))
abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
shardings = runtime.state_shardings(abstract, mesh)
batch_sharding = NamedSharding(mesh, P(runtime.batch_axes(mesh)))
state = jax.jit(init_state, out_shardings=shardings)(jax.random.PRNGKey(0))
ckpt = checkpointing.Checkpointer(ckpt_dir, 1, 5, async_save=False)
if mode == "restore":
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=s), abstract, shardings)
  tree, step = ckpt.restore_latest(train_step.checkpoint_tree(target))
  state = train_step.TrainState(**tree)
  print("RESTORED", step)
step_fn = jax.jit(train_step.make_train_step(task, tx, schedule, 0),
                  in_shardings=(shardings, batch_sharding),
                  out_shardings=(shardings, NamedSharding(mesh, P())))
sharded = sum("fsdp" in str(x.sharding.spec)
              for x in jax.tree.leaves(state.params))
print("SHARDED", sharded, "DEVICES", jax.device_count())
for i in range(3):
  key = jax.random.PRNGKey(100 + int(state.step))
  batch = {"image": jax.random.uniform(key, (16, 32, 32, 3)),
           "label": jax.random.randint(key, (16,), 0, task.num_classes)}
  state, metrics = step_fn(state, jax.device_put(batch, batch_sharding))
  print("LOSS", int(state.step), float(metrics["loss"]))
  if mode == "save" and i == 0:
    ckpt.save(int(state.step), train_step.checkpoint_tree(state))
    ckpt.wait()
ckpt.close()
"""


def _losses(tmp_path, name, devices, fsdp, mode="none", ckpt=None):
  proc = helpers.run_python(
      _CODE % (fsdp, mode, str(ckpt or tmp_path / name)), devices=devices)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.split("\n")
  sharded = int(next(l for l in lines if l.startswith("SHARDED")).split()[1])
  losses = {int(l.split()[1]): float(l.split()[2])
            for l in lines if l.startswith("LOSS")}
  return sharded, losses


def test_sharding_rule():
  assert runtime.leaf_spec((64, 128), 4) == P(None, "fsdp")  # largest dim
  assert runtime.leaf_spec((1024, 6), 4) == P("fsdp", None)
  assert runtime.leaf_spec((6, 2048), 4) == P(None, "fsdp")
  assert runtime.leaf_spec((6, 4098), 4) == P()  # no divisible dimension
  assert runtime.leaf_spec((16,), 4) == P()  # small: replicated
  assert runtime.leaf_spec((64, 128), 1) == P()  # no fsdp axis


def test_fsdp_matches_replicated_and_checkpoints_move_between_meshes(
    tmp_path):
  sharded, replicated = _losses(tmp_path, "a", devices=8, fsdp=1)
  assert sharded == 0
  sharded, fsdp = _losses(tmp_path, "b", devices=8, fsdp=4, mode="save")
  assert sharded > 5
  assert list(fsdp) == [1, 2, 3]
  np.testing.assert_allclose(list(fsdp.values()), list(replicated.values()),
                             rtol=1e-5)
  # Saved after step 1 with fsdp on 8 devices -> restored on 1 device: the
  # next steps repeat the run's losses.
  _, one = _losses(tmp_path, "c", devices=1, fsdp=1, mode="restore",
                   ckpt=tmp_path / "b")
  np.testing.assert_allclose([one[2], one[3]], [fsdp[2], fsdp[3]], rtol=1e-5)
  # And 1 device -> 8 devices with fsdp.
  _losses(tmp_path, "d", devices=1, fsdp=1, mode="save")
  sharded, eight = _losses(tmp_path, "e", devices=8, fsdp=8, mode="restore",
                           ckpt=tmp_path / "d")
  assert sharded > 5
  np.testing.assert_allclose([eight[2], eight[3]], [fsdp[2], fsdp[3]],
                             rtol=1e-5)
