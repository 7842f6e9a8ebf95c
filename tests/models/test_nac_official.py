"""crl's NAC against the official PyTorch NAC; the official-behaviour options.

The reference data (`../shared/fixtures/nac_official/*.npz` from the
repository root; see its README) holds official weights, inputs and
eval-mode outputs of the official code. Tolerance of the comparison:
`rtol=1e-5` plus `atol=1e-5 * max|reference|` per tensor. float32 carries
2^-23 ~ 1.2e-7 relative precision; a dozen sequential layers with sums over
32-128 terms, computed in another order than torch's, leave differences of a
few ulps of a tensor's largest entries (measured <= 1.2e-6 absolute on
entries up to 5.5), and entries near zero have no meaningful relative error.
Real differences (e.g. a LayerNorm more or less) are orders larger.
"""

import functools
import json
import os

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import config_lib
from crl import registry
from crl.models import kernel as kernel_lib
from crl.models import layers
from crl.models import tokenizer as tokenizer_lib
from crl.models import nac_official
from crl.models import nac_official_weights
from crl.models.nac import NAC
from tests import helpers
from tests.models.test_nac import (BATCH, RNGS, TINY, _apply, _host_params,
                                   _images)

FIXTURES = os.path.join(os.path.dirname(helpers.ROOT), "shared", "fixtures",
                        "nac_official")
STATES = ("tokens", "input_states", "mediator_states", "output_states")


def _fixture(name):
  path = os.path.join(FIXTURES, name)
  if not os.path.exists(path):
    pytest.skip(f"official NAC fixture {path} not found (expected at "
                "../shared/fixtures/nac_official/ from the repository root)")
  return np.load(path)


def _weights(z):
  return {k: z[k] for k in z.files if k.startswith(("w/", "b/"))}


def _official_model(z):
  return NAC(**nac_official.model_kwargs_from_official(
      json.loads(str(z["config_json"]))))


@pytest.mark.parametrize("name", ["crl_default.npz", "nac_s32.npz"])
def test_ported_weights_reproduce_the_official_outputs(name):
  z = _fixture(name)
  model = _official_model(z)
  params = nac_official_weights.params_from_official(_weights(z), model)
  (logits, _), state = model.apply({"params": params}, z["x"], train=False,
                                   mutable=["intermediates"])
  got = {k: state["intermediates"][k][0] for k in STATES}
  got["logits"] = logits
  for key, value in got.items():
    ref = z[key]
    np.testing.assert_allclose(np.asarray(value), ref, rtol=1e-5,
                               atol=1e-5 * float(np.abs(ref).max()),
                               err_msg=f"{name}: {key}")


def test_official_s32_config_is_the_fixture_config():
  z = _fixture("nac_s32.npz")
  expected = nac_official.model_kwargs_from_official(
      json.loads(str(z["config_json"])))
  config = config_lib.load_config(
      os.path.join(helpers.ROOT, "configs/nac.py:official_s32"))
  model = config_lib.component_kwargs(config.model)
  for key, value in expected.items():
    assert model[key] == value, key


def test_converter_names_missing_unexpected_and_misshaped_keys():
  z = _fixture("crl_default.npz")
  model = _official_model(z)
  weights = _weights(z)
  gone = "w/latent_graphs.0.read_out.ffn.layernorm.bias"
  bad = "w/output_tokenizer.to_logits.weight"
  del weights[gone]
  weights["w/latent_graphs.0.extra.weight"] = np.zeros(3, np.float32)
  weights[bad] = np.zeros((3, 64), np.float32)
  with pytest.raises(ValueError) as e:
    nac_official_weights.params_from_official(weights, model)
  message = str(e.value)
  assert "\n" not in message
  assert f"missing: {gone[2:]}" in message
  assert "unexpected: latent_graphs.0.extra.weight" in message
  assert "mis-shaped: output_tokenizer.to_logits.weight (3, 64)" in message
  # The bandwidth buffer must agree with the model's kernel_sigma.
  weights = _weights(z)
  key = "b/latent_graphs.0.read_out.latent_attention.kernel.bandwidth"
  weights[key] = np.float32(2.0)
  with pytest.raises(ValueError, match="kernel_sigma"):
    nac_official_weights.params_from_official(weights, model)


def test_unsupported_official_config_is_one_clear_error():
  z = _fixture("nac_s32.npz")
  config = json.loads(str(z["config_json"]))
  config["latent_graph_kwargs"]["share_propagator_weights"] = True
  with pytest.raises(ValueError,
                     match=r"share_propagator_weights=True is not supported"):
    nac_official.model_kwargs_from_official(config)


# ---- The options, on a tiny model.

def _tiny(**overrides):
  return NAC(**{**TINY, "num_layers": 2, **overrides})


@functools.lru_cache(maxsize=None)
def _tiny_params(**overrides):
  model = _tiny(**overrides)
  return model, _host_params(model, _images())


OFFICIAL = dict(separate_input_codes=True, shared_propagator_norm=True,
                read_out_residual=False, head_norm=False,
                graph_sampling="per_attention", truncation="clamp",
                init_scheme="official", layer_norm_eps=1e-5)


@pytest.mark.parametrize("option", list(OFFICIAL.items()) + [(None, None)],
                         ids=lambda o: str(o))
def test_each_official_option_runs_deterministically(option):
  overrides = OFFICIAL if option[0] is None else dict([option])
  model, params = _tiny_params(**overrides)
  x = _images()
  logits, aux = _apply(model, params, x, train=True)
  chex.assert_shape(logits, (BATCH, 5))
  chex.assert_shape(aux["graph"], (BATCH, 8, 8))
  chex.assert_tree_all_finite((logits, aux))
  chex.assert_trees_all_equal(
      (logits, aux), _apply(model, params, x, train=True))
  eval_logits, _ = _apply(model, params, x, train=False)
  chex.assert_tree_all_finite(eval_logits)


def test_all_official_options_give_finite_gradients_to_every_parameter():
  """Every option is on at once, so every new code path is differentiated
  (one compile instead of one per option; eager gradients cost more here)."""
  model, params = _tiny_params(**OFFICIAL)
  x = _images()

  @jax.jit
  def grads_fn(p):
    def loss(p):
      logits, _ = _apply(model, {"params": p}, x, train=True)
      return jnp.sum(jax.nn.log_softmax(logits)[:, 0])
    return jax.grad(loss)(p)

  grads = grads_fn(params["params"])
  chex.assert_tree_all_finite(grads)
  flat = flax.traverse_util.flatten_dict(grads)
  # Output signatures: with 'clamp', the read-out graph's kept pairs carry
  # gradient; the input codes feed the read-in.
  zero = [p for p, g in flat.items() if not bool(jnp.any(g != 0))]
  assert not zero, f"parameters without gradient: {zero}"


def test_options_change_the_parameter_tree_as_documented():
  flat = lambda m: set(flax.traverse_util.flatten_dict(_tiny_params(
      **m)[1]["params"]))
  default = flat({})
  assert flat(dict(head_norm=False)) == default - {
      ("head_norm", "scale"), ("head_norm", "bias")}
  assert flat(dict(separate_input_codes=True)) == default | {("input_codes",)}
  assert flat(dict(shared_propagator_norm=True)) == default - {
      (f"propagator{i}", "sender_norm", p) for i in (0, 1)
      for p in ("scale", "bias")}
  for same in (dict(read_out_residual=False), dict(layer_norm_eps=1e-5),
               dict(graph_sampling="per_attention"), dict(truncation="clamp"),
               dict(init_scheme="official")):
    assert flat(same) == default, same


def test_options_change_the_computation():
  x = _images()
  model, params = _tiny_params()
  base_train, _ = _apply(model, params, x, train=True)
  base_eval, _ = _apply(model, params, x, train=False)

  def run(train, **overrides):
    return _apply(_tiny(**overrides), params, x, train=train)[0]

  # Same parameters, different computation.
  for overrides in (dict(read_out_residual=False), dict(layer_norm_eps=1e-3),
                    dict(graph_sampling="per_attention"),
                    dict(truncation="clamp")):
    assert float(jnp.abs(run(True, **overrides) - base_train).max()) > 1e-6
  # Sampling options change training only.
  for overrides in (dict(graph_sampling="per_attention"),
                    dict(truncation="clamp")):
    chex.assert_trees_all_equal(run(False, **overrides), base_eval)
  # The read-in reads with the input codes when they are separate: equal to
  # the default when they equal the mediator codes, different otherwise.
  model_in = _tiny(separate_input_codes=True)
  for codes, same in ((params["params"]["mediator_codes"], True),
                      (params["params"]["mediator_codes"][::-1], False)):
    p = {**params["params"], "input_codes": codes}
    out = _apply(model_in, {"params": p}, x, train=False)[0]
    if same:
      chex.assert_trees_all_equal(out, base_eval)
    else:
      assert float(jnp.abs(out - base_eval).max()) > 1e-6


def test_sow_states_and_no_head_norm():
  model, params = _tiny_params(head_norm=False)
  x = _images()
  (logits, aux), state = model.apply(params, x, train=False,
                                     mutable=["intermediates"])
  out = state["intermediates"]["output_states"][0]
  chex.assert_shape(out, (BATCH, 2, 16))
  pooled = jnp.einsum("bu,buc->bc", aux["readout_weights"], out)
  chex.assert_trees_all_close(pooled, aux["features"], atol=1e-6)


def test_clamped_truncation_matches_torch_relaxed_bernoulli():
  distance = jnp.array([[0.0, 0.5, 1.5], [1.5, 0.0, 0.2]])
  straight = kernel_lib.signature_kernel(distance, 1.0, 0.9)
  clamped = kernel_lib.signature_kernel(distance, 1.0, 0.9,
                                        straight_through=False)
  chex.assert_trees_all_equal(straight["kernel"], clamped["kernel"])
  key = jax.random.key(0)
  graph = kernel_lib.make_graph(clamped, "sample", key=key, batch_size=64,
                                temperature=0.5, truncation="clamp")
  eps = float(jnp.finfo(jnp.float32).eps)
  z = np.asarray(graph["graph"])
  assert z.min() >= eps and z.max() <= 1.0 - eps
  # Truncated pairs are clamped near eps, not masked; kept pairs are sampled.
  assert np.median(z[:, 0, 2]) == pytest.approx(eps, rel=1e-6)
  assert z[:, 0, 2].max() < 1e-3
  assert z[:, 0, 1].std() > 0.1
  np.testing.assert_allclose(graph["log_graph"], np.log(z), rtol=1e-6)
  assert bool(jnp.all(graph["link"]))

  # Gradients of the log-graph: zero through truncated pairs when clamped,
  # straight-through (the untruncated kernel's) otherwise.
  def total(d, truncation):
    kern = kernel_lib.signature_kernel(d, 1.0, 0.9,
                                       truncation == "straight_through")
    g = kernel_lib.make_graph(kern, "sample", key=key, batch_size=8,
                              temperature=0.5, truncation=truncation)
    return jnp.sum(g["log_graph"])

  g_clamp = jax.grad(total)(distance, "clamp")
  g_st = jax.grad(total)(distance, "straight_through")
  truncated = np.asarray(distance) > 0.9
  np.testing.assert_array_equal(np.asarray(g_clamp)[truncated], 0.0)
  assert np.all(np.asarray(g_st)[truncated] != 0.0)
  assert np.all(np.asarray(g_clamp)[[0, 1], [1, 2]] != 0.0)


def test_official_init_scheme():
  key = jax.random.key(0)
  fc = layers.ModFC(64, 128, 16, init_scheme="official").init(
      key, jnp.ones((2, 64)), jnp.ones((2, 16)))["params"]
  bound = 1.0 / np.sqrt(64)  # torch kaiming_uniform(a=sqrt(5)): 1/sqrt(in)
  assert float(jnp.abs(fc["kernel"]).max()) <= bound
  assert float(jnp.abs(fc["kernel"]).max()) > 0.95 * bound  # uniform
  assert float(jnp.abs(fc["code_proj"]).max()) <= 1.0 / np.sqrt(16)
  np.testing.assert_array_equal(fc["bias"], 0.0)
  crl = layers.ModFC(64, 128, 16).init(key, jnp.ones((2, 64)),
                                       jnp.ones((2, 16)))["params"]
  assert float(jnp.abs(crl["kernel"]).max()) > bound  # lecun normal
  # timm's trunc_normal_(std=.02) truncates at +-2 absolute: a plain normal.
  block = tokenizer_lib.ConvNeXtBlock(init_scheme="official").init(
      key, jnp.ones((1, 4, 4, 32)))["params"]
  for name in ("fc1", "fc2", "depthwise"):
    assert abs(float(jnp.std(block[name]["kernel"])) - 0.02) < 0.002, name
    np.testing.assert_array_equal(block[name]["bias"], 0.0)


@pytest.mark.parametrize("overrides,field", [
    (dict(graph_sampling="per_layer"), "graph_sampling"),
    (dict(truncation="hard"), "truncation"),
    (dict(init_scheme="torch"), "init_scheme"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps"),
    (dict(separate_input_codes=True, inputs_are_mediators=False),
     "separate_input_codes"),
])
def test_invalid_official_options_name_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    _tiny(**overrides)


def test_old_config_json_without_the_new_fields_gets_todays_defaults():
  config = config_lib.load_config(os.path.join(helpers.ROOT, "configs/nac.py"))
  today = config_lib.to_plain(config.model)
  old = {k: v for k, v in today.items() if k not in OFFICIAL}
  filled = config_lib.with_component_defaults(registry.MODELS, old)
  assert filled == today


def test_crl_default_fixture_is_the_default_config_with_official_behaviour():
  z = _fixture("crl_default.npz")
  official = nac_official.model_kwargs_from_official(
      json.loads(str(z["config_json"])))
  default = config_lib.component_kwargs(config_lib.load_config(
      os.path.join(helpers.ROOT, "configs/nac.py")).model)
  differ = {k for k, v in official.items() if default[k] != v}
  assert differ == {"head_norm", "layer_norm_eps", "graph_sampling",
                    "truncation", "init_scheme"}
