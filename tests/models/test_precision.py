"""Mixed precision (crl.models.precision): bfloat16 math, float32 params.

Tolerance (every model, tiny sizes, same float32 params and inputs):
  max |logits_bf16 - logits_f32| <= 0.05 + 0.05 * max |logits_f32|
bfloat16 has an 8-bit mantissa (relative rounding 2^-8 ~ 0.4%); a few tiny
layers accumulate a few percent at most.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import registry
from crl.models import precision
from tests.models import test_interpreters
from tests.models import test_nac
from tests.models import test_perceiver
from tests.models import test_resnet
from tests.models import test_vit

ATOL, RTOL = 0.05, 0.05

IMAGE = (16, 16, 3)
# name -> (model kwargs (the model tests' tiny sizes), input shape).
CASES = {
    "nac": (test_nac.TINY, IMAGE),
    "interpreters": (test_interpreters.TINY, IMAGE),
    "perceiver_io": (test_perceiver.TINY, IMAGE),
    "vit": (test_vit.TINY, IMAGE),
    "resnet": (test_resnet.TINY, IMAGE),
    "cnn": ({"widths": (8, 16), "groups": 4}, IMAGE),
    "mlp": ({"hidden": (16, 8), "layer_norm": True}, (12,)),
    "two_heads": ({"backbone": "mlp", "backbone_kwargs": {"hidden": (16, 8)}},
                  (12,)),
}


def _model_and_input(name):
  kwargs, shape = CASES[name]
  kwargs = {"num_classes": 3, **{k: v for k, v in kwargs.items()
                                 if k != "num_classes"}}
  model = registry.MODELS.get(name)(**kwargs)
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, *shape))
  return model, x


def _matmul_dtypes(fn, *args):
  """Output dtypes of every dot_general / convolution in `fn`'s jaxpr."""
  text = str(jax.make_jaxpr(fn)(*args))
  return re.findall(r":(\w+)\[[^\]]*\] = (?:dot_general|conv_general_dilated)",
                    text)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_logits_match_float32_with_float32_params(name):
  model, x = _model_and_input(name)
  mixed = precision.with_compute_dtype(model, "bfloat16")
  rngs = {"params": jax.random.PRNGKey(1), "sample": jax.random.PRNGKey(2),
          "dropout": jax.random.PRNGKey(3)}
  variables = jax.jit(functools.partial(model.init, train=False))(rngs, x)
  mixed_variables = jax.eval_shape(
      functools.partial(mixed.init, train=False), rngs, x)
  # Same parameter tree, float32 storage, under both policies.
  assert (jax.tree.structure(variables)
          == jax.tree.structure(mixed_variables))
  for leaf in jax.tree.leaves(mixed_variables["params"]):
    assert leaf.dtype == jnp.float32

  def logits(m, v):
    return m.apply(v, x, train=False, rngs={"sample": rngs["sample"]})[0]

  ref = jax.jit(lambda v: logits(model, v))(variables)
  out = jax.jit(lambda v: logits(mixed, v))(variables)
  assert out.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(ref)))
  err = float(jnp.max(jnp.abs(out - ref)))
  assert err <= ATOL + RTOL * scale, (name, err, scale)
  assert err > 0, "bfloat16 path computed exactly the float32 result"

  # The matmuls run in bfloat16 (NAC's signature kernel stays float32).
  f32_dtypes = _matmul_dtypes(lambda v: logits(model, v), variables)
  bf16_dtypes = _matmul_dtypes(lambda v: logits(mixed, v), variables)
  assert f32_dtypes and "bf16" not in f32_dtypes
  assert bf16_dtypes.count("bf16") >= 0.75 * len(bf16_dtypes), bf16_dtypes

  # Gradients reach the float32 params in float32.
  grads = jax.eval_shape(jax.grad(lambda p: jnp.sum(logits(
      mixed, {**variables, "params": p})[:, 0])), variables["params"])
  for leaf in jax.tree.leaves(grads):
    assert leaf.dtype == jnp.float32


def test_float32_returns_the_same_model_and_bad_names_fail():
  model, _ = _model_and_input("mlp")
  assert precision.with_compute_dtype(model, "float32") is model
  with pytest.raises(ValueError, match="compute_dtype='float16'.*float32"):
    precision.with_compute_dtype(model, "float16")
