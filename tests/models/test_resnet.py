"""Tests for crl.models.resnet and configs/resnet.py.

Parameter counts are traced with `jax.eval_shape` (no compile); one tiny
model (width 4, 16 px) is compiled for the forward, gradient and BatchNorm
checks.
"""

import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import config_lib
from crl import registry
from crl.models.resnet import ResNet
from tests import helpers

TINY = dict(num_classes=5, depth=18, width=4, stem="small")
BATCH = 4


def _images(batch=BATCH, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3))


def _shapes(model, size):
  return jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.key(0), jnp.zeros((2, size, size, 3)))


@pytest.mark.parametrize("depth,count", [
    # torchvision's resnet18/34/50 with 1000 classes.
    (18, 11_689_512), (34, 21_797_672), (50, 25_557_032)])
def test_parameter_counts_match_the_standard_resnets(depth, count):
  variables = _shapes(ResNet(num_classes=1000, depth=depth), 64)
  assert sum(x.size for x in jax.tree.leaves(variables["params"])) == count
  # One running mean and variance per BatchNorm scale.
  scales = [x.size for p, x in jax.tree_util.tree_leaves_with_path(
      variables["params"]) if jax.tree_util.keystr(p).endswith("['scale']")]
  assert sum(x.size for x in jax.tree.leaves(
      variables["batch_stats"])) == 2 * sum(scales)


def test_bottleneck_and_group_norm_layouts():
  v = _shapes(ResNet(num_classes=3, depth=26, width=8, norm="group",
                     num_groups=4), 32)
  assert "batch_stats" not in v
  block = v["params"]["stage2_block0"]
  chex.assert_shape(block["conv1"]["kernel"], (1, 1, 32, 16))
  chex.assert_shape(block["conv2"]["kernel"], (3, 3, 16, 16))
  chex.assert_shape(block["conv3"]["kernel"], (1, 1, 16, 64))
  chex.assert_shape(block["downsample_conv"]["kernel"], (1, 1, 32, 64))
  assert set(block["norm1"]) == {"gn"}
  assert sorted(k for k in v["params"] if k.startswith("stage")) == [
      f"stage{s}_block{b}" for s in range(1, 5) for b in range(2)]
  # GroupNorm: no state, the same function in train and eval mode.
  model = ResNet(num_classes=3, depth=10, width=4, norm="group", num_groups=2)
  x = _images(2, 8)
  variables = model.init(jax.random.key(0), x, train=False)
  assert set(variables) == {"params"}
  a, _ = model.apply(variables, x, train=True)
  b, _ = model.apply(variables, x, train=False)
  chex.assert_shape(a, (2, 3))
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field,value,message", [
    ("depth", 20, "ResNet.depth must be one of"),
    ("norm", "layer", "ResNet.norm must be one of"),
    ("stem", "deep", "ResNet.stem must be one of"),
    ("width", 0, "ResNet.width must be an integer >= 1"),
    ("pixel_std", (1.0, 0.0, 1.0), "ResNet.pixel_std must be positive"),
    ("pixel_mean", (0.5, 0.5), "ResNet.pixel_mean must have 3 values"),
])
def test_bad_fields_are_named(field, value, message):
  with pytest.raises(ValueError, match=message):
    ResNet(**{**TINY, field: value})


@pytest.fixture(scope="module")
def tiny():
  model = ResNet(**TINY)
  x = _images()
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), x)
  eval_fn = jax.jit(functools.partial(model.apply, train=False))
  train_fn = jax.jit(functools.partial(model.apply, train=True,
                                       mutable=["batch_stats"]))

  def loss(params, stats, images):
    (logits, _), new = model.apply({"params": params, "batch_stats": stats},
                                   images, train=True,
                                   mutable=["batch_stats"])
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), new

  grads, _ = jax.jit(jax.grad(loss, has_aux=True))(
      variables["params"], variables["batch_stats"], x)
  return dict(model=model, x=x, variables=variables, eval_fn=eval_fn,
              train_fn=train_fn, grads=grads)


def test_shapes_and_determinism(tiny):
  logits, aux = tiny["eval_fn"](tiny["variables"], tiny["x"])
  chex.assert_shape(logits, (BATCH, 5))
  chex.assert_shape(aux["features"], (BATCH, 32))  # width 4 x 8
  chex.assert_tree_all_finite((logits, aux))
  again, _ = tiny["eval_fn"](tiny["variables"], tiny["x"])
  np.testing.assert_array_equal(logits, again)
  (t1, _), s1 = tiny["train_fn"](tiny["variables"], tiny["x"])
  (t2, _), s2 = tiny["train_fn"](tiny["variables"], tiny["x"])
  np.testing.assert_array_equal(t1, t2)
  chex.assert_trees_all_equal(s1, s2)


def test_every_parameter_gets_a_finite_nonzero_gradient(tiny):
  chex.assert_tree_all_finite(tiny["grads"])
  for path, g in jax.tree_util.tree_leaves_with_path(tiny["grads"]):
    assert float(jnp.max(jnp.abs(g))) > 0, jax.tree_util.keystr(path)


def test_batch_norm_train_uses_and_updates_batch_statistics(tiny):
  model, x, variables = tiny["model"], tiny["x"], tiny["variables"]
  (train_logits, _), new = tiny["train_fn"](variables, x)
  eval_logits, _ = tiny["eval_fn"](variables, x)
  assert not np.allclose(train_logits, eval_logits, atol=1e-3)

  # The stem's running mean: 0.9 * old (zeros) + 0.1 * batch mean of the
  # stem convolution's output.
  kernel = variables["params"]["stem_conv"]["kernel"]
  standardized = (x - 0.5) / 0.25
  conv = jax.lax.conv_general_dilated(
      standardized, kernel, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  stats = new["batch_stats"]["stem_norm"]["bn"]
  np.testing.assert_allclose(stats["mean"], 0.1 * conv.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv.var((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)

  # Eval mode: each example's logits do not depend on the rest of the
  # batch; train mode: they do (batch statistics).
  updated = {"params": variables["params"], **new}
  full, _ = tiny["eval_fn"](updated, x)
  half, _ = tiny["eval_fn"](updated, x[:2])
  np.testing.assert_allclose(full[:2], half, rtol=1e-5, atol=1e-5)
  (train_half, _), _ = tiny["train_fn"](variables, x[:2])
  assert not np.allclose(train_logits[:2], train_half, atol=1e-3)


@pytest.mark.parametrize("variant,params", [
    ("", 701_466), ("tiny", 19_902), ("18", 11_181_642),
    ("50", 23_528_522)])
def test_config_variants(variant, params):
  path = os.path.join(helpers.ROOT, "configs/resnet.py")
  config = config_lib.load_config(f"{path}:{variant}" if variant else path)
  model = config_lib.build(registry.MODELS, config.model, num_classes=10)
  v = _shapes(model, 32)
  assert sum(x.size for x in jax.tree.leaves(v["params"])) == params
