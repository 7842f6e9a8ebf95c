"""The train state's `model_state` (BatchNorm statistics): updated by the
train step, used by evaluation, checkpointed and resumed exactly; checkpoints
written before the field existed still restore; and a finished run
initialises another (`--config.init_from=DIR`).

One tiny ResNet run (`resnet_run`) serves all of them: compilation dominates.
"""

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import checkpointing
from crl import train
from crl import train_step
from crl.trainers import classification
from tests import helpers


def resnet_tiny(**overrides: Any):
  """`configs/resnet.py:tiny` (BatchNorm) with dotted-key overrides."""
  values = {"num_steps": 4, "log_every_steps": 1, "checkpoint.every_steps": 2,
            "checkpoint.async_save": False, "final_eval.splits": "test",
            "evals": {}, "data.eval_examples": 16, "data.resolution": 16}
  values.update(overrides)
  return helpers.load_with("configs/resnet.py:tiny", values)


def _newest(workdir):
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 0,
                                    10, async_save=False)
  tree = ckpt._manager.restore(ckpt.steps()[-1])  # pylint: disable=protected-access
  ckpt.close()
  return jax.tree.map(np.asarray, tree)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
  """`(workdir, output)` of an uninterrupted tiny ResNet run."""
  workdir = str(tmp_path_factory.mktemp("resnet") / "straight")
  return workdir, classification.train_and_evaluate(resnet_tiny(), workdir)


def test_batch_norm_statistics_are_trained_checkpointed_and_resumed(
    tmp_path, resnet_run):
  config = resnet_tiny()
  straight, full = resnet_run
  resumed = str(tmp_path / "resumed")
  assert isinstance(full["params"], train_step.StatefulParams)
  stats = full["params"].model_state["batch_stats"]
  # Updated away from the initial running variance (ones).
  var = np.asarray(stats["stem_norm"]["bn"]["var"])
  assert not np.allclose(var, 1.0)
  saved = _newest(straight)
  assert set(saved) == {"step", "params", "opt_state", "model_state"}
  np.testing.assert_array_equal(
      saved["model_state"]["batch_stats"]["stem_norm"]["bn"]["var"], var)

  assert classification.train_and_evaluate(config, resumed, stop_at=3) == {
      "step": 3, "preempted": True}
  again = classification.train_and_evaluate(config, resumed)
  assert again["results"] == full["results"]
  jax.tree.map(np.testing.assert_array_equal, _newest(straight),
               _newest(resumed))

  # Evaluation uses the running statistics: restore_trained gives them back.
  task = classification.ClassificationTask(config)
  restored, step = train.restore_trained(config, straight, task)
  assert step == 4
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(restored.model_state),
               jax.device_get(full["params"].model_state))
  assert task.final_evaluation(restored, step)["results"] == full["results"]


@flax.struct.dataclass
class _OldTrainState:
  """The TrainState of runs written before `model_state` existed."""
  step: Any
  params: Any
  opt_state: Any


def test_checkpoints_without_model_state_still_restore(tmp_path):
  params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3)}}
  opt_state = (jnp.ones(3),)
  ckpt = checkpointing.Checkpointer(str(tmp_path), 1, 3, async_save=False)
  ckpt.save(7, _OldTrainState(jnp.asarray(7, jnp.int32), params, opt_state))
  # A model without state writes the same layout as before.
  new = train_step.TrainState(jnp.asarray(8, jnp.int32), params, opt_state)
  assert set(train_step.checkpoint_tree(new)) == {"step", "params", "opt_state"}
  ckpt.save(8, train_step.checkpoint_tree(new))
  ckpt.wait()
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      train_step.TrainState(jnp.asarray(0, jnp.int32), params, opt_state))
  for step in (7, 8):
    tree = ckpt._manager.restore(  # pylint: disable=protected-access
        step, args=checkpointing.ocp.args.StandardRestore(
            train_step.checkpoint_tree(abstract)))
    state = train_step.TrainState(**tree)
    assert int(state.step) == step and state.model_state == {}
    np.testing.assert_array_equal(state.params["dense"]["kernel"],
                                  params["dense"]["kernel"])
  ckpt.close()
  # The newest-first restore the trainer uses.
  ckpt = checkpointing.Checkpointer(str(tmp_path), 1, 3, async_save=False)
  (tree, step) = ckpt.restore_latest(train_step.checkpoint_tree(abstract))
  ckpt.close()
  assert step == 8 and train_step.eval_params(
      train_step.TrainState(**tree)) is not None


def test_init_from_a_run_directory(tmp_path, resnet_run):
  source, out = resnet_run
  trained = jax.device_get(out["params"])

  # A 4-class target, learning rate 0: after its one step the backbone is
  # still the source's, the head is new, BatchNorm statistics moved on.
  target = str(tmp_path / "target")
  config = resnet_tiny(**{"init_from": source, "data.num_classes": 4,
                          "num_steps": 1, "optimizer.base_learning_rate": 0.0})
  got = jax.device_get(classification.train_and_evaluate(config, target)["params"])
  for k in ("stem_conv", "stage3_block0"):
    jax.tree.map(np.testing.assert_array_equal, got.params[k],
                 trained.params[k])
  assert got.params["classifier"]["kernel"].shape == (32, 4)

  # A resumed run keeps its checkpoint: init_from is not even read.
  config = resnet_tiny(**{"init_from": str(tmp_path / "gone"),
                          "data.num_classes": 4, "num_steps": 1})
  assert classification.train_and_evaluate(config, target)["step"] == 1

  # Another model's run as init_from: one line, exit 2, nothing written
  # (tests/test_bad_inputs_table.py).
