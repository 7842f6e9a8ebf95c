"""`trace_shared` (crl.population.train_population): members that differ
only in hyperparameter values run the same compiled step program, even
each in a population of its own (the transfer study's members)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import config_lib
from crl import optim
from crl import population
from crl import population_step
from crl import train_step
from crl.trainers import classification
from tests import helpers


def _config(lr, seed):
  c = config_lib.load_config(os.path.join(helpers.ROOT, "configs/vit.py:tiny"),
                             lock=False)
  c.optimizer.base_learning_rate = lr
  c.seed = seed
  return c


def _one(x):
  x = np.asarray(x) if not isinstance(x, jax.ShapeDtypeStruct) else x
  return jax.ShapeDtypeStruct((1, *x.shape), x.dtype)


def _step_program(config, trace_shared):
  """The lowered text of a one-member population's step, as
  `train_population` builds it (abstract values: nothing is computed)."""
  task = classification.ClassificationTask(config)
  params = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
  hp = population_step.member_hparams(config)
  hp["trainable"] = population_step.trainable_mask(params, "all")
  tx, _ = optim.build_optimizer(config.optimizer, hp)
  state = jax.eval_shape(lambda p: train_step.TrainState(
      step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p)), params)
  batch = {task.input_key: jax.ShapeDtypeStruct(
      (config.batch_size, *task.input_shape), jnp.float32),
           "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}
  constants = None if trace_shared else population_step.shared_constants(
      [hp])
  step = population_step.make_population_step(task, config.optimizer,
                                              constants=constants)
  return jax.jit(step).lower(
      jax.tree.map(_one, state), jax.tree.map(_one, hp),
      jax.ShapeDtypeStruct((1,), jnp.int32),
      jax.tree.map(_one, batch)).as_text()


def test_one_program_for_members_of_other_learning_rates_and_seeds():
  a, b = _config(1e-3, 0), _config(3e-3, 1)
  assert _step_program(a, True) == _step_program(b, True)
  # The default bakes a population's shared values in: another program.
  assert _step_program(a, False) != _step_program(b, False)


class _Stop(Exception):
  pass


@pytest.mark.parametrize("trace_shared", [False, True])
def test_train_population_passes_it_to_the_step(trace_shared, monkeypatch,
                                                tmp_path):
  seen = []

  def spy(task, opt, member_chunk=None, grad_accum_steps=1, constants=None,
          layout=None):
    del task, opt, member_chunk, grad_accum_steps, layout
    seen.append(constants)
    raise _Stop  # what is passed is the point; nothing needs compiling

  monkeypatch.setattr(population, "make_population_step", spy)
  config = _config(1e-3, 0)
  config.tensorboard = False
  member = population.Member("a", config,
                             classification.ClassificationTask(config),
                             str(tmp_path / "models" / "a"))
  with pytest.raises(_Stop):
    population.train_population([member], str(tmp_path / "pop"),
                                trace_shared=trace_shared)
  assert (seen[0] is None) == trace_shared
  if not trace_shared:
    assert seen[0]["seed"] == 0
