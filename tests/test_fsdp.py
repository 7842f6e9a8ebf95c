"""Sharded parameters (crl.runtime): the sharding rule, the fsdp train step
against the replicated one on 8 fake CPU devices, and checkpoints moved
between meshes (8 devices with fsdp -> 1 device, 1 device -> 8 with fsdp)."""

import numpy as np
from jax.sharding import PartitionSpec as P

from crl import runtime
from tests import helpers

# Runs in a subprocess with N fake devices, one after another in the one
# process (a process per run would start Python and JAX again each time):
# ViT :tiny steps on synthetic batches, the state laid out by
# `runtime.state_shardings` on a (data, fsdp) mesh; prints each run's
# losses. MODE save/restore moves a checkpoint.
_CODE = """
import sys, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from crl import bench_device, checkpointing, config_lib, optim, runtime, train_step
runtime.FSDP_MIN_SIZE = 64  # shard (nearly) every leaf of the tiny model
config = config_lib.load_config("configs/vit.py:tiny")
task = bench_device.synthetic_task(config)
tx, schedule = optim.make_optimizer(config.optimizer, 16, 100)
def init_state(key):
  params = task.init_params(key)
  return train_step.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=tx.init(params))
for name, fsdp, mode, ckpt_dir in %r:
  mesh = runtime.make_mesh(fsdp)
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
    print("RESTORED", name, step)
  step_fn = jax.jit(train_step.make_train_step(task, tx, schedule, 0),
                    in_shardings=(shardings, batch_sharding),
                    out_shardings=(shardings, NamedSharding(mesh, P())))
  sharded = sum("fsdp" in str(x.sharding.spec)
                for x in jax.tree.leaves(state.params))
  print("SHARDED", name, sharded, "DEVICES", jax.device_count())
  for i in range(3):
    key = jax.random.PRNGKey(100 + int(state.step))
    batch = {"image": jax.random.uniform(key, (16, 32, 32, 3)),
             "label": jax.random.randint(key, (16,), 0, task.num_classes)}
    state, metrics = step_fn(state, jax.device_put(batch, batch_sharding))
    print("LOSS", name, int(state.step), float(metrics["loss"]))
    if mode == "save" and i == 0:
      ckpt.save(int(state.step), train_step.checkpoint_tree(state))
      ckpt.wait()
  ckpt.close()
"""


def _losses(tmp_path, devices, runs):
  """{name: (fsdp-sharded leaves, {step: loss})} of `runs`: (name, fsdp,
  mode, checkpoint directory or None for tmp_path/name), in one process."""
  runs = [(n, f, m, str(c or tmp_path / n)) for n, f, m, c in runs]
  proc = helpers.run_python(_CODE % (runs,), devices=devices)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [l.split() for l in proc.stdout.split("\n")]
  return {n: (int(next(r[2] for r in rows if r[:2] == ["SHARDED", n])),
              {int(r[2]): float(r[3]) for r in rows
               if r[:2] == ["LOSS", n]}) for n, *_ in runs}


def test_sharding_rule():
  assert runtime.leaf_spec((64, 128), 4) == P(None, "fsdp")  # largest dim
  assert runtime.leaf_spec((1024, 6), 4) == P("fsdp", None)
  assert runtime.leaf_spec((6, 2048), 4) == P(None, "fsdp")
  assert runtime.leaf_spec((6, 4098), 4) == P()  # no divisible dimension
  assert runtime.leaf_spec((16,), 4) == P()  # small: replicated
  assert runtime.leaf_spec((64, 128), 1) == P()  # no fsdp axis


def test_fsdp_matches_replicated_and_checkpoints_move_between_meshes(
    tmp_path):
  # Three processes: 1 device (d saves), 8 devices (a, b saves, e restores
  # d's), 1 device (c restores b's).
  runs = _losses(tmp_path, 1, [("d", 1, "save", None)])
  runs.update(_losses(tmp_path, 8, [("a", 1, "none", None),
                                    ("b", 4, "save", None),
                                    ("e", 8, "restore", tmp_path / "d")]))
  runs.update(_losses(tmp_path, 1, [("c", 1, "restore", tmp_path / "b")]))
  sharded, replicated = runs["a"]
  assert sharded == 0
  sharded, fsdp = runs["b"]
  assert sharded > 5
  assert list(fsdp) == [1, 2, 3]
  np.testing.assert_allclose(list(fsdp.values()), list(replicated.values()),
                             rtol=1e-5)
  # Saved after step 1 with fsdp on 8 devices -> restored on 1 device: the
  # next steps repeat the run's losses.
  _, one = runs["c"]
  np.testing.assert_allclose([one[2], one[3]], [fsdp[2], fsdp[3]], rtol=1e-5)
  # And 1 device -> 8 devices with fsdp.
  sharded, eight = runs["e"]
  assert sharded > 5
  np.testing.assert_allclose([eight[2], eight[3]], [fsdp[2], fsdp[3]],
                             rtol=1e-5)
