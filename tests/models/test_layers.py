"""Tests for crl.models.layers."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.models import attention
from crl.models import layers
from crl.models import tokenizer as tokenizer_lib


def _host_params(module, *args, seed=0, **kwargs):
  """Variables with the structure of `module.init`, filled on the host.

  Avoids compiling one random initializer per parameter shape (slow on CPU).
  """
  shapes = jax.eval_shape(
      functools.partial(module.init, **kwargs), jax.random.key(0), *args)
  rng = np.random.RandomState(seed)

  def fill(path, s):
    if jax.tree_util.keystr(path).endswith("['scale']") or s.ndim == 0:
      return jnp.asarray(1.0 + 0.1 * rng.normal(size=s.shape), s.dtype)
    if s.ndim == 1:
      return jnp.asarray(0.1 * rng.normal(size=s.shape), s.dtype)
    return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[-2]),
                       s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _init_apply(module, *args, **kwargs):
  variables = _host_params(module, *args, **kwargs)
  apply = jax.jit(functools.partial(module.apply, **kwargs))
  return variables, apply(variables, *args)


def test_standardize_images():
  x = jnp.array([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1) * jnp.ones((1, 1, 3, 3))
  y = layers.standardize_images(x)
  np.testing.assert_allclose(y[0, 0, :, 0], [-2.0, 0.0, 2.0])
  assert y.dtype == jnp.float32


@pytest.mark.parametrize("mode", ["one_plus", "plain_scale"])
def test_modfc_equals_explicit_per_module_weights(mode):
  cin, cout, ccode, n = 16, 16, 16, 8
  fc = layers.ModFC(cin, cout, ccode, mode=mode, gain_init=0.3)
  x = jax.random.normal(jax.random.key(1), (2, n, cin))
  codes = jax.random.normal(jax.random.key(2), (n, ccode))
  variables, y = _init_apply(fc, x, codes)
  p = variables["params"]
  chex.assert_shape(p["kernel"], (cin, cout))
  chex.assert_shape(p["code_proj"], (ccode, cin))
  chex.assert_shape(p["gain"], ())
  # By hand: scale = g * LN(W_c c) (+ 1), per-module W_u = W diag(scale_u).
  h = codes @ p["code_proj"]
  h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True)
                                                 + 1e-6)
  scale = p["gain"] * h + (1.0 if mode == "one_plus" else 0.0)
  expected = jnp.stack([
      x[:, u] @ (jnp.diag(scale[u]) @ p["kernel"]) + p["bias"]
      for u in range(n)], axis=1)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_modfc_dense_is_shared_linear():
  fc = layers.ModFC(16, 32, 16, mode="dense", use_bias=False)
  x = jax.random.normal(jax.random.key(1), (2, 8, 16))
  codes = jax.random.normal(jax.random.key(2), (8, 16))
  variables, y = _init_apply(fc, x, codes)
  assert set(variables["params"]) == {"kernel"}
  np.testing.assert_allclose(y, x @ variables["params"]["kernel"], rtol=1e-5,
                             atol=1e-6)


def test_modfc_rejects_unknown_mode():
  fc = layers.ModFC(4, 4, 4, mode="nope")
  with pytest.raises(ValueError, match="one_plus"):
    jax.eval_shape(fc.init, jax.random.key(0), jnp.ones((1, 2, 4)),
                   jnp.ones((2, 4)))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_read_in_fold_equals_explicit(qkv_bias):
  kwargs = dict(features=16, code_features=16, num_heads=2, head_dim=8,
                qkv_bias=qkv_bias)
  h = jax.random.normal(jax.random.key(1), (2, 8, 16))
  codes = jax.random.normal(jax.random.key(2), (8, 16))
  tokens = jax.random.normal(jax.random.key(3), (2, 16, 16))
  folded = attention.ReadInAttention(fold=True, **kwargs)
  explicit = attention.ReadInAttention(fold=False, **kwargs)
  variables = _host_params(folded, h, codes, tokens, deterministic=True)
  if qkv_bias:
    assert "bias" in variables["params"]["key"]
  run = lambda m: jax.jit(functools.partial(m.apply, deterministic=True))(
      variables, h, codes, tokens)
  out_f, w_f = run(folded)
  out_e, w_e = run(explicit)
  chex.assert_shape(w_f, (2, 2, 8, 16))
  np.testing.assert_allclose(w_f, w_e, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(out_f, out_e, rtol=1e-4, atol=1e-5)


def test_read_in_shared_projection_has_plain_kv():
  module = attention.ReadInAttention(16, 16, 2, 8, shared_projection=True)
  h = jnp.ones((2, 8, 16))
  tokens = jax.random.normal(jax.random.key(3), (2, 16, 16))
  variables, (out, w) = _init_apply(module, h, jnp.ones((8, 16)), tokens,
                                    deterministic=True)
  assert set(variables["params"]["key"]) == {"kernel"}
  chex.assert_shape(out, (2, 8, 16))
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_mod_attention_respects_graph():
  module = attention.ModAttention(16, 16, num_heads=2, head_dim=8)
  h = jax.random.normal(jax.random.key(1), (2, 4, 16))
  codes = jax.random.normal(jax.random.key(2), (4, 16))
  link = jnp.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]],
                   bool)
  log_graph = jnp.where(link, 0.0, attention.MASK_VALUE)
  variables, (out, w) = _init_apply(module, h, codes, h, codes, log_graph,
                                    link, deterministic=True)
  chex.assert_shape(out, (2, 4, 16))
  chex.assert_shape(w, (2, 2, 4, 4))
  assert jnp.all(jnp.where(link, True, w == 0.0))
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_masked_softmax_uniform_fallback_for_rows_without_links():
  scores = jax.random.normal(jax.random.key(0), (1, 1, 2, 3))
  link = jnp.array([[True, False, False], [False, False, False]])
  log_graph = jnp.where(link, 0.0, attention.MASK_VALUE)
  w = attention.masked_softmax(scores, log_graph[None, None], link[None, None])
  np.testing.assert_allclose(w[0, 0, 0], [1.0, 0.0, 0.0])
  np.testing.assert_allclose(w[0, 0, 1], [1 / 3] * 3, rtol=1e-6)


def test_drop_path_and_layer_scale():
  x = jnp.ones((64, 3, 4))
  dp = layers.DropPath(0.5)
  assert dp.apply({}, x, deterministic=True) is x
  y = dp.apply({}, x, deterministic=False,
               rngs={"dropout": jax.random.key(0)})
  per_example = y[:, 0, 0]
  # Whole examples are dropped (0) or kept and rescaled (2).
  assert set(np.unique(np.asarray(y))) <= {0.0, 2.0}
  np.testing.assert_array_equal(y, per_example[:, None, None] * x)
  assert 0 < int(jnp.sum(per_example == 0)) < 64
  ls = layers.LayerScale(0.1)
  variables = ls.init(jax.random.key(0), x)
  chex.assert_shape(variables["params"]["scale"], (4,))
  np.testing.assert_allclose(ls.apply(variables, x), 0.1 * x)


@pytest.mark.parametrize("kind", ["geglu", "gelu"])
def test_feed_forward(kind):
  ffn = layers.ModFeedForward(16, 16, 16, kind=kind, layer_scale_init=0.5,
                              drop_path=0.1)
  x = jax.random.normal(jax.random.key(1), (2, 8, 16))
  codes = jnp.ones((8, 16))
  variables, y = _init_apply(ffn, x, codes, deterministic=True)
  chex.assert_shape(y, x.shape)
  wide = 32 if kind == "geglu" else 16
  chex.assert_shape(variables["params"]["fc1"]["kernel"], (16, wide))
  y2 = jax.jit(functools.partial(ffn.apply, deterministic=False))(
      variables, x, codes, rngs={"dropout": jax.random.key(1)})
  chex.assert_tree_all_finite(y2)


def test_tokenizer_default_is_nac_s32():
  tok = tokenizer_lib.ImageTokenizer()
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(tok.init, jax.random.key(0), x)
  tokens = jax.eval_shape(tok.apply, variables, x)
  chex.assert_shape(tokens, (2, 64, 96))
  n = sum(p.size for p in jax.tree.leaves(variables))
  # Stem 4x4x3x32 + LN, one ConvNeXt block (dw 7x7, LN, 32-128-32, gamma),
  # and the 8x8x64 positional grid.
  assert n == 1568 + 64 + (1600 + 64 + 4224 + 4128 + 32) + 4096


@pytest.mark.parametrize("kind,blocks,tokens,channels", [
    ("patch", (1,), 16, 16),
    ("convnext", (1, 1), 4, 24),
])
def test_tokenizer_options(kind, blocks, tokens, channels):
  tok = tokenizer_lib.ImageTokenizer(kind, 4, 8, blocks, 8)
  x = jnp.zeros((2, 16, 16, 3))
  variables = jax.eval_shape(tok.init, jax.random.key(0), x)
  out = jax.eval_shape(tok.apply, variables, x)
  chex.assert_shape(out, (2, tokens, channels))
  assert tok.output_channels() == channels


def test_tokenizer_rejects_indivisible_images():
  with pytest.raises(ValueError, match="divisible"):
    jax.eval_shape(tokenizer_lib.ImageTokenizer().init, jax.random.key(0),
                   jnp.zeros((1, 30, 30, 3)))
