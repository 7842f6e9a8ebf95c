"""Tests for crl.models.vit and configs/vit.py.

Compilation dominates on a 2-core CPU: one tiny model is initialised with a
jitted `init` once per module; option paths and parameter counts are traced
with `jax.eval_shape` (no compile) or applied eagerly.
"""

import functools
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
from crl.models.vit import ViT
from tests import helpers

TINY = dict(num_classes=5, patch_size=4, d_model=16, num_layers=2,
            num_heads=2, mlp_hidden=24, drop_path=0.3)
BATCH = 4
NAC_DEFAULT_PARAMS = 276_288  # configs/nac.py (default), 10 classes.
NAC_BENCH_PARAMS = 1_695_246  # configs/nac.py:bench (NAC-S/32).


def _images(batch=BATCH, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3))


def _rngs(seed):
  return {"dropout": jax.random.key(seed)}


def _param_shapes(model, size=16):
  return jax.eval_shape(functools.partial(model.init, train=False),
                        {"params": jax.random.key(0)},
                        jnp.zeros((2, size, size, 3)))["params"]


def _param_count(model, size=32):
  return sum(x.size for x in jax.tree.leaves(_param_shapes(model, size)))


def _config(variant):
  path = os.path.join(helpers.ROOT, "configs/vit.py")
  return config_lib.load_config(f"{path}:{variant}" if variant else path)


def _host_params(model, images, seed=0):
  """Parameters with the structure of `model.init`, filled on the host
  (no initializer is compiled)."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          {"params": jax.random.key(0)}, images)
  rng = np.random.RandomState(seed)

  def fill(path, s):
    if jax.tree_util.keystr(path).endswith("['scale']"):
      return jnp.asarray(1.0 + 0.1 * rng.normal(size=s.shape), s.dtype)
    if s.ndim <= 1:
      return jnp.asarray(0.1 * rng.normal(size=s.shape), s.dtype)
    return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[-2]),
                       s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny():
  """The tiny model, its variables and every output the tests need: three
  compiled functions (train, eval, gradient) and one eager forward pass."""
  model = ViT(**TINY)
  x, x_other = _images(), _images(seed=3)
  variables = _host_params(model, x)
  labels = jnp.arange(BATCH) % 5

  @jax.jit
  def train_fn(v, key):
    return model.apply(v, x, train=True, rngs={"dropout": key})

  @jax.jit
  def eval_fn(v, images):  # No rngs: eval must not need any.
    return model.apply(v, images, train=False)

  @jax.jit
  def grad_fn(params):
    # Training mode without DropPath: every leaf must get a gradient.
    def loss(p):
      logits, aux = model.clone(drop_path=0.0).apply(
          {"params": p}, x, train=True, rngs=_rngs(1))
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return ce.mean() + aux["reg_loss"], (logits, aux)
    return jax.grad(loss, has_aux=True)(params)

  both = jax.device_get(eval_fn(variables, jnp.concatenate([x, x_other])))
  grads, no_drop_path = grad_fn(variables["params"])
  out = {
      "train": train_fn(variables, jax.random.key(1)),
      "again": train_fn(variables, jax.random.key(1)),
      "train_other_key": train_fn(variables, jax.random.key(2)),
      "eval": jax.tree.map(lambda a: a[:BATCH] if a.ndim else a, both),
      "eval_other_input": jax.tree.map(lambda a: a[BATCH:] if a.ndim else a,
                                       both),
      "train_no_drop_path": no_drop_path,
      "grads": grads,
      "eager_train": model.apply(variables, x, train=True, rngs=_rngs(1)),
  }
  # Checks run in NumPy: eager jnp ops would compile one kernel per shape.
  return model, jax.device_get(variables), jax.device_get(out)


def test_output_and_aux_shapes(tiny):
  _, variables, out = tiny
  for mode in ("train", "eval", "eager_train"):
    logits, aux = out[mode]
    chex.assert_shape(logits, (BATCH, 5))
    assert logits.dtype == jnp.float32
    chex.assert_shape(aux["features"], (BATCH, 16))
    chex.assert_shape(aux["reg_loss"], ())
    assert float(aux["reg_loss"]) == 0.0
    chex.assert_tree_all_finite((logits, aux))
  params = variables["params"]
  chex.assert_shape(params["patch_embedding"]["kernel"], (4, 4, 3, 16))
  chex.assert_shape(params["cls_token"], (1, 16))
  chex.assert_shape(params["position_embedding"], (1 + 16, 16))
  chex.assert_shape(params["classifier"]["kernel"], (16, 5))
  # The features are what the classifier reads.
  logits, aux = out["eval"]
  head = params["classifier"]
  np.testing.assert_allclose(aux["features"] @ head["kernel"] + head["bias"],
                             logits, rtol=1e-4, atol=1e-5)


def test_gradients_finite_and_nonzero_for_every_parameter(tiny):
  _, variables, out = tiny
  chex.assert_tree_all_finite(out["grads"])
  flat = flax.traverse_util.flatten_dict(out["grads"])
  zero = [p for p, g in flat.items() if not np.any(g != 0)]
  assert not zero, f"parameters without gradient: {zero}"
  assert len(flat) == len(jax.tree.leaves(variables["params"]))


def test_determinism_jit_versus_eager_and_train_versus_eval(tiny):
  _, _, out = tiny
  chex.assert_trees_all_equal(out["train"], out["again"])
  chex.assert_trees_all_close(out["eager_train"], out["train"], rtol=1e-5,
                              atol=1e-6)
  assert float(np.abs(out["train"][0] - out["train_other_key"][0]).max()) > 0
  assert float(np.abs(out["train"][0] - out["eval"][0]).max()) > 0
  chex.assert_trees_all_close(out["train_no_drop_path"], out["eval"],
                              rtol=1e-5, atol=1e-6)
  assert float(np.abs(out["eval_other_input"][0] - out["eval"][0]).max()) > 0


def test_gap_pooling_has_no_class_token():
  model = ViT(**{**TINY, "pooling": "gap", "head_dim": 4, "ffn": "geglu",
                 "layer_scale_init": 0.1})
  shapes = _param_shapes(model)
  assert "cls_token" not in shapes
  chex.assert_shape(shapes["position_embedding"], (16, 16))
  logits, aux = jax.eval_shape(
      lambda v: model.apply({"params": v}, _images(), train=True,
                            rngs=_rngs(0)), shapes)
  chex.assert_shape(logits, (BATCH, 5))
  chex.assert_shape(aux["features"], (BATCH, 16))


@pytest.mark.parametrize("variant,target", [
    ("", NAC_DEFAULT_PARAMS), ("bench", NAC_BENCH_PARAMS)])
def test_parameter_counts_match_nac_within_10_percent(variant, target):
  config = _config(variant)
  assert config.model.name == "vit"
  model = config_lib.build(registry.MODELS, config.model, num_classes=10)
  count = _param_count(model)
  assert abs(count - target) <= 0.1 * target, (variant, count, target)


@pytest.mark.parametrize("variant", ["", "tiny", "bench"])
def test_recipe_is_that_of_the_matching_nac_config(variant):
  nac_path = os.path.join(helpers.ROOT, "configs/nac.py")
  nac = config_lib.to_plain(config_lib.load_config(
      f"{nac_path}:{variant}" if variant else nac_path))
  mine = config_lib.to_plain(_config(variant))
  for c in (nac, mine):
    del c["model"]
    del c["optimizer"]["base_learning_rate"]
  assert mine == nac


@pytest.mark.parametrize("overrides,field", [
    (dict(d_model=16, num_heads=3), "num_heads"),
    (dict(head_dim=0), "head_dim"),
    (dict(d_model=0), "d_model"),
    (dict(patch_size=0), "patch_size"),
    (dict(mlp_hidden=0), "mlp_hidden"),
    (dict(num_layers=-1), "num_layers"),
    (dict(drop_path=1.0), "drop_path"),
    (dict(pooling="max"), "pooling"),
    (dict(ffn="relu"), "ffn"),
])
def test_impossible_dimensions_raise(overrides, field):
  with pytest.raises(ValueError, match=field):
    ViT(**{**TINY, **overrides})


def test_bad_image_size_and_traced_train_flag_fail_clearly():
  model = ViT(**TINY)
  with pytest.raises(ValueError, match="patch_size"):
    jax.eval_shape(functools.partial(model.init, train=False),
                   {"params": jax.random.key(0)}, _images(size=18))
  with pytest.raises(ValueError, match="static_argnames"):
    jax.eval_shape(model.init, {"params": jax.random.key(0)}, _images(),
                   train=True)


def test_unknown_variant_is_a_clear_error():
  with pytest.raises(ValueError, match="Unknown variant 'huge'.*known"):
    _config("huge")
