"""Tests for crl.models.interpreters (Neural Interpreters).

Tiny models (8 px images, 4 px patches: 4 patch tokens + 1 class token).
Compilation dominates on a CPU, so few functions are compiled, once per
module (`functools.lru_cache`): the loss gradient and the eval forward pass
of the tiny model, which is also the capacity extension (function 0 frozen)
of a one-function model. Other structure is checked by tracing
(`jax.eval_shape`).
"""

import functools
import math
import os

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crl import config_lib
from crl import registry
from crl.models import interpreter_blocks
from crl.models import interpreter_capacity
from crl.models.interpreters import NeuralInterpreter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = dict(
    num_classes=5, patch_size=4, d_model=16, d_code=8, d_sig=8,
    num_functions=3, num_iterations=2, num_scripts=1, num_heads=2, head_dim=8,
    mlp_hidden=16, freeze_signatures=False, kernel_tau=1.0,
    function_dropout=0.25, num_frozen_functions=1)
BATCH = 3
TOKENS = 5  # 1 class token + 2 x 2 patches


def _images(seed=0):
  return jax.random.uniform(jax.random.key(seed), (BATCH, 8, 8, 3))


def _labels():
  return jnp.arange(BATCH) % 5


def _model(**overrides):
  return NeuralInterpreter(**{**TINY, **overrides})


def _is_function_row_param(name):
  return "function_signatures" in name or "function_codes" in name


@functools.lru_cache(maxsize=None)
def _init(**overrides):
  """The model and parameters with the structure of `init`, host-filled."""
  model = _model(**overrides)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          {"params": jax.random.key(0)}, _images())["params"]
  rng = np.random.RandomState(0)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']") or name.endswith("['gain']"):
      value = 1.0 + 0.1 * rng.normal(size=s.shape)
    elif name.endswith("['kernel_log_sigma']"):
      value = np.zeros(s.shape)
    elif _is_function_row_param(name):
      value = rng.normal(size=s.shape)
    elif s.ndim <= 1:
      value = 0.1 * rng.normal(size=s.shape)
    else:
      value = rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    return jnp.asarray(value, s.dtype)

  params = jax.tree_util.tree_map_with_path(fill, shapes)
  # Function 0 matches the class token's first type (d = 0), so the class
  # token is routed and every parameter reaches the loss.
  cls_type = interpreter_blocks.TypeInference(8, 16).apply(
      {"params": params["script0"]["pod"]["type_inference"]},
      params["cls_tokens"])
  params["script0"]["function_signatures"] = (
      params["script0"]["function_signatures"].at[0].set(cls_type[0]))
  return model, params


def _loss(model, params, images, labels, key):
  logits, aux = model.apply({"params": params}, images, train=True,
                            rngs={"dropout": key})
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return ce, aux


@functools.lru_cache(maxsize=None)
def _grad_fn(model):
  return jax.jit(jax.value_and_grad(
      functools.partial(_loss, model), has_aux=True))


@functools.lru_cache(maxsize=None)
def _eval_fn(model):
  """The eval forward pass (it needs no rng)."""
  return jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))


_ADAMW = optax.adamw(1e-2, weight_decay=0.05)


@functools.lru_cache(maxsize=None)
def _update_fn(tx):
  def update(params, opt, grads):
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt
  return jax.jit(update)


def _adamw_steps(model, params, steps, tx=_ADAMW):
  """Runs `steps` optimizer steps; returns params and (loss, grads) per step."""
  opt = jax.jit(tx.init)(params)
  grad_fn, update = _grad_fn(model), _update_fn(tx)
  history = []
  for i in range(steps):
    (loss, _), grads = grad_fn(params, _images(i), _labels(),
                               jax.random.key(i))
    history.append((loss, grads))
    params, opt = update(params, opt, grads)
  return params, history


def _assert_finite_steps(history):
  for loss, grads in history:
    assert np.isfinite(float(loss))
    chex.assert_tree_all_finite(grads)


def _flat(tree):
  return {jax.tree_util.keystr(p): v
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_shapes_aux_and_parameter_names():
  model = _model(num_scripts=2)
  variables = jax.eval_shape(functools.partial(model.init, train=False),
                             {"params": jax.random.key(0)}, _images())
  logits, aux = jax.eval_shape(
      functools.partial(model.apply, train=True), variables, _images(),
      rngs={"dropout": jax.random.key(0)})
  chex.assert_shape(logits, (BATCH, 5))
  chex.assert_shape(aux["features"], (BATCH, 16))
  chex.assert_shape(aux["compatibility"], (2, 2, BATCH, 3, TOKENS))
  for key in ("reg_loss", "truncated_fraction", "uncovered_fraction"):
    chex.assert_shape(aux[key], ())
  names = _flat(variables["params"])
  for s in range(2):
    chex.assert_shape(names[f"['script{s}']['function_signatures']"], (3, 8))
    chex.assert_shape(names[f"['script{s}']['function_codes']"], (3, 8))
  assert "['classifier']['kernel']" in names
  # Iterations share weights: the pod's weights carry no iteration axis.
  chex.assert_shape(names["['script0']['pod']['query']['kernel']"], (16, 16))
  # The values of the aux entries.
  model, params = _init()
  _, aux = _eval_fn(model)(params, _images())
  assert float(aux["reg_loss"]) == 0.0
  assert 0.0 <= float(aux["truncated_fraction"]) <= 1.0
  assert 0.0 <= float(aux["uncovered_fraction"]) <= 1.0


def test_gradients_finite_and_nonzero_for_every_leaf():
  model, params = _init()
  (loss, _), grads = _grad_fn(model)(params, _images(), _labels(),
                                     jax.random.key(1))
  assert np.isfinite(float(loss))
  for name, g in _flat(grads).items():
    assert np.all(np.isfinite(g)), name
    assert np.any(g != 0.0), f"zero gradient for {name}"


def test_deterministic_and_dropout_only_in_training():
  model, params = _init()
  grad_fn = _grad_fn(model)
  x, y = _images(), _labels()
  (a, aux), g = grad_fn(params, x, y, jax.random.key(3))
  (a2, aux2), g2 = grad_fn(params, x, y, jax.random.key(3))
  chex.assert_trees_all_equal((a, aux, g), (a2, aux2, g2))
  # Function dropout: another key, another loss; eval is deterministic.
  assert float(a) != float(grad_fn(params, x, y, jax.random.key(4))[0][0])
  e = _eval_fn(model)(params, x)
  chex.assert_trees_all_equal(e, _eval_fn(model)(params, x))
  eval_loss = optax.softmax_cross_entropy_with_integer_labels(e[0], y).mean()
  assert float(eval_loss) != float(a)


def test_remat_gives_the_same_loss_and_gradients():
  """Rematerialised iterations (memory of one iteration) compute the same
  function, dropout masks included."""
  model, params = _init()
  remat = _model(remat=True)
  args = (params, _images(), _labels(), jax.random.key(3))
  (loss, aux), grads = _grad_fn(model)(*args)
  (loss_r, aux_r), grads_r = _grad_fn(remat)(*args)
  chex.assert_trees_all_close((loss, aux, grads), (loss_r, aux_r, grads_r),
                              rtol=1e-5, atol=1e-6)
  jaxpr = lambda m: str(jax.make_jaxpr(functools.partial(_loss, m))(*args))
  assert "remat" in jaxpr(remat) and "remat" not in jaxpr(model)


def test_compatibility_is_normalised_over_functions():
  model, params = _init()
  (_, train_aux), _ = _grad_fn(model)(params, _images(), _labels(),
                                      jax.random.key(5))
  _, eval_aux = _eval_fn(model)(params, _images())
  for aux in (eval_aux, train_aux):
    c = np.asarray(aux["compatibility"])
    assert np.all(c >= 0.0)
    total = c.sum(axis=-2)
    covered = np.any(c > 0.0, axis=-2)
    assert covered.any()
    np.testing.assert_allclose(total[covered], 1.0, atol=1e-4)
    np.testing.assert_array_equal(total[~covered], 0.0)
  # Function dropout cuts (function, token) pairs in training only: at the
  # first iteration (same types in both modes) training has strictly more
  # zeros, and every pair cut at eval is cut in training.
  zero_train = np.asarray(train_aux["compatibility"][:, 0]) == 0.0
  zero_eval = np.asarray(eval_aux["compatibility"][:, 0]) == 0.0
  assert np.all(zero_train[zero_eval])
  assert zero_train.sum() > zero_eval.sum()


def test_compatibility_function_at_the_truncation_edge():
  sigma, tau = 1.0, 0.5
  # Functions x tokens: token 0 has one pair exactly at tau; token 1 has
  # every pair cut; token 2 has none cut.
  d = jnp.array([[0.5, 0.6, 0.1],
                 [0.7, 1.9, 0.2],
                 [0.5000001, 0.51, 0.3]], jnp.float32)
  c, link = interpreter_blocks.compatibility(d, sigma, tau)
  k = np.exp(-np.asarray(d) / sigma) * (np.asarray(d) <= tau)
  np.testing.assert_allclose(
      c, k / (interpreter_blocks.NORMALIZATION_EPS + k.sum(0)), rtol=1e-6)
  np.testing.assert_array_equal(link[:, 0], [True, False, False])
  np.testing.assert_array_equal(c[:, 1], 0.0)
  # Gradients: finite and bounded at the all-cut token (the published
  # normaliser eps + sum gives 1 / eps = 1e6 there), and straight-through
  # (non-zero for the cut pairs).
  jac = jax.jit(jax.jacobian(
      lambda x: interpreter_blocks.compatibility(x, sigma, tau)[0]))(d)
  assert np.all(np.isfinite(jac))
  assert np.max(np.abs(jac)) < 10.0
  assert np.all(jac[:, 1, :, 1].diagonal() != 0.0)
  # Function dropout before normalisation: the kept pair takes all weight.
  keep = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  c, _ = interpreter_blocks.compatibility(d, sigma, tau, keep=keep)
  np.testing.assert_allclose(c[:, 2], [0.0, 0.0, 1.0], atol=1e-5)


def _edge_params(params, signatures, type_bias):
  """Types fixed to `type_bias` for every token; signatures replaced."""
  params = flax.core.unfreeze(params)
  for name in [n for n in params if n.startswith("script")]:
    script = params[name]
    fc2 = script["pod"]["type_inference"]["fc2"]
    fc2["kernel"] = jnp.zeros_like(fc2["kernel"])
    fc2["bias"] = jnp.asarray(type_bias, jnp.float32)
    script["function_signatures"] = jnp.asarray(signatures, jnp.float32)
  return params


def test_trains_without_nans_with_every_pair_truncated():
  model, params = _init()
  eye = np.eye(8, dtype=np.float32)
  # Every signature far from every type: d in {1.71, 2} > tau = 1.
  params = _edge_params(params, [eye[1] - eye[0], -eye[0], eye[2] - eye[0]],
                        eye[0])
  (_, aux), _ = _grad_fn(model)(params, _images(), _labels(),
                                jax.random.key(0))
  assert float(aux["truncated_fraction"]) == 1.0
  assert float(aux["uncovered_fraction"]) == 1.0
  # Nothing is routed: the tokens pass through, the class token is the same
  # for every image.
  features = np.asarray(aux["features"])
  np.testing.assert_allclose(features, np.broadcast_to(features[0],
                                                       features.shape),
                             atol=1e-6)
  _, history = _adamw_steps(model, params, 4)
  _assert_finite_steps(history)
  # The straight-through kernel still sends gradient to the signatures.
  first = history[0][1]
  assert np.any(first["script0"]["function_signatures"] != 0.0)


def test_trains_without_nans_with_a_pair_exactly_at_tau():
  model, params = _init()  # kernel_tau = 1.0
  eye = np.eye(8, dtype=np.float32)
  # Distances to every token: 0 (kept), exactly 1 = tau (kept), 2 (cut).
  params = _edge_params(params, [eye[0], eye[1], -eye[0]], eye[0])
  _, aux = _eval_fn(model)(params, _images())
  k = np.array([1.0, math.exp(-1.0), 0.0])
  expected = k / (interpreter_blocks.NORMALIZATION_EPS + k.sum())
  np.testing.assert_allclose(
      aux["compatibility"],
      np.broadcast_to(expected[:, None], (1, 2, BATCH, 3, TOKENS)),
      rtol=1e-5)
  _, history = _adamw_steps(model, params, 4)
  _assert_finite_steps(history)


def test_capacity_extension():
  model, params = _init(num_functions=1, num_frozen_functions=0)
  new_model, new_params = interpreter_capacity.extend_capacity(
      model, params, 2, jax.random.key(7))
  assert new_model == _model()  # 3 functions, function 0 frozen
  old, new = _flat(params), _flat(new_params)
  assert old.keys() == new.keys()
  for name, value in old.items():
    if _is_function_row_param(name):
      chex.assert_shape(new[name], (3,) + value.shape[1:])
      chex.assert_trees_all_equal(new[name][:1], value)
      assert np.all(new[name][1:] != value[0])
    else:
      chex.assert_trees_all_equal(new[name], value)

  # The frozen row gets exactly zero gradient, the new rows do not.
  (_, _), grads = _grad_fn(new_model)(new_params, _images(), _labels(),
                                      jax.random.key(1))
  for name, g in _flat(grads).items():
    if _is_function_row_param(name):
      np.testing.assert_array_equal(g[:1], 0.0)
      assert np.any(g[1:] != 0.0), name

  # New functions compatible with no token (opposite to every type: d = 2)
  # leave the old model's outputs unchanged.
  eye = np.eye(8, dtype=np.float32)
  before = _eval_fn(model)(_edge_params(params, [eye[1]], eye[0]),
                           _images())
  after = _eval_fn(new_model)(
      _edge_params(new_params, [eye[1], -eye[0], -eye[0]], eye[0]),
      _images())
  chex.assert_trees_all_close(after[0], before[0], atol=1e-5)
  chex.assert_trees_all_close(after[1]["compatibility"][..., :1, :],
                              before[1]["compatibility"], atol=1e-6)
  np.testing.assert_array_equal(after[1]["compatibility"][..., 1:, :], 0.0)

  # Training with the mask moves only the new rows (weight decay included).
  mask = interpreter_capacity.trainable_mask(new_params, 1)
  tx = optax.chain(optax.adamw(1e-2, weight_decay=0.1),
                   interpreter_capacity.freeze_updates(mask))
  trained, history = _adamw_steps(new_model, new_params, 2, tx)
  _assert_finite_steps(history)
  for name, value in _flat(trained).items():
    if _is_function_row_param(name):
      chex.assert_trees_all_equal(value[:1], new[name][:1])
      assert np.all(np.any(value[1:] != new[name][1:], axis=-1)), name
    else:
      chex.assert_trees_all_equal(value, new[name])
  also = interpreter_capacity.trainable_mask(new_params, 1, also_train=("classifier",))
  assert bool(jnp.all(also["classifier"]["kernel"]))
  assert not bool(jnp.any(also["head_norm"]["scale"]))


def test_freeze_rows():
  p = jnp.arange(12.0).reshape(4, 3)

  def grad(num_frozen, all_rows):
    return jax.grad(lambda q: jnp.sum(
        interpreter_blocks.freeze_rows(q, num_frozen, all_rows) ** 2))(p)

  np.testing.assert_array_equal(grad(0, False), 2 * p)
  np.testing.assert_array_equal(grad(3, False)[:3], 0.0)
  np.testing.assert_array_equal(grad(3, False)[3:], 2 * p[3:])
  np.testing.assert_array_equal(grad(0, True), 0.0)
  np.testing.assert_array_equal(
      interpreter_blocks.freeze_rows(p, 3, False), p)


@pytest.mark.parametrize("variant, target", [("default", 276_288),
                                             ("bench", 1_695_246)])
def test_config_parameter_counts(variant, target):
  config = config_lib.load_config(
      os.path.join(ROOT, f"configs/interpreters.py:{variant}"))
  model = config_lib.build(registry.MODELS, config.model, num_classes=10)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          {"params": jax.random.key(0)},
                          jnp.zeros((1, 32, 32, 3)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert abs(count / target - 1.0) <= 0.10, count
  assert count == {"default": 280_413, "bench": 1_746_679}[variant]


@pytest.mark.parametrize("overrides, match", [
    (dict(d_model=15), "divisible"),
    (dict(num_frozen_functions=4), "num_frozen_functions"),
    (dict(kernel_tau=2.5), "kernel_tau"),
    (dict(function_dropout=1.0), "function_dropout"),
    (dict(modlin_mode="dense"), "modlin_mode"),
])
def test_invalid_fields_raise(overrides, match):
  with pytest.raises(ValueError, match=match):
    _model(**overrides)
