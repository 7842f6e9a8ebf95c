"""Tests for crl.models.nac.

Compilation dominates on a 2-core CPU, so most option paths are checked by
tracing `init` (`jax.eval_shape`, which runs the whole construction code,
prior fitting included, without compiling) and running `apply` eagerly on
host-filled parameters; `init` itself is jitted once.
"""

import functools

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crl.models import graph_priors
from crl.models.nac import NAC

TINY = dict(
    num_classes=5, stem_channels=8, pos_grid_channels=8, d_state=16,
    d_code=16, d_sig=16, num_input_modules=8, num_mediator_modules=8,
    num_output_modules=2, num_layers=1, num_heads=2, head_dim=8,
    read_in_heads=2, read_out_heads=2, ffn_hidden=16,
    graph_prior=None, prior_fit_steps=200)
BATCH = 4
RNGS = {"params": jax.random.key(0), "sample": jax.random.key(1),
        "dropout": jax.random.key(2)}


def _images(batch=BATCH, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3))


def _model(**overrides):
  return NAC(**{**TINY, **overrides})


def _host_params(model, images, seed=0):
  """Parameters with the structure of `model.init`, filled on the host."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), RNGS,
                          images)
  rng = np.random.RandomState(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']"):
      return jnp.asarray(1.0 + 0.1 * rng.normal(size=s.shape), s.dtype)
    if s.ndim <= 1:
      return jnp.asarray(0.1 * rng.normal(size=s.shape), s.dtype)
    return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[-2]),
                       s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _apply(model, variables, images, train, seed=1):
  rngs = {"sample": jax.random.key(seed), "dropout": jax.random.key(seed + 7)}
  return model.apply(variables, images, train=train, rngs=rngs)


@functools.lru_cache(maxsize=None)
def _jit_init_default():
  """The jitted init of the tiny model with a fitted graph prior."""
  model = _model(graph_prior="ring_of_cliques",
                 graph_prior_kwargs=(("num_cliques", 2),),
                 graph_regularizer="hinge", hinge_threshold=0.9)
  init = jax.jit(functools.partial(model.init, train=False))
  return model, init(RNGS, _images())


def test_jit_init_fits_prior_and_param_conventions():
  model, variables = _jit_init_default()
  params = variables["params"]
  sig = params["mediator_signatures"]
  d = 1.0 - (sig / jnp.linalg.norm(sig, axis=-1, keepdims=True)) @ (
      sig / jnp.linalg.norm(sig, axis=-1, keepdims=True)).T
  adj = graph_priors.target_adjacency("ring_of_cliques", 8,
                                      {"num_cliques": 2})
  off = ~np.eye(8, dtype=bool)
  np.testing.assert_array_equal(np.asarray(d < model.kernel_tau)[off],
                                adj[off])
  flat = flax.traverse_util.flatten_dict(params)
  signature_paths = [p for p in flat if "signature" in "/".join(p)]
  assert {p[-1] for p in signature_paths} == {"mediator_signatures",
                                              "output_signatures"}
  # Gains, norms and biases are ndim <= 1 (excluded from weight decay).
  for path, value in flat.items():
    if path[-1] in ("gain", "bias", "scale"):
      assert value.ndim <= 1, path


def test_output_shapes_train_and_eval():
  model, variables = _jit_init_default()
  x = _images()
  logits, aux = _apply(model, variables, x, train=True)
  chex.assert_shape(logits, (BATCH, 5))
  assert logits.dtype == jnp.float32
  chex.assert_shape(aux["graph"], (BATCH, 8, 8))
  chex.assert_shape(aux["kernel"], (8, 8))
  chex.assert_shape(aux["reg_loss"], ())
  chex.assert_shape(aux["readout_weights"], (BATCH, 2))
  chex.assert_shape(aux["readout_graph"], (BATCH, 2, 8))
  chex.assert_shape(aux["read_in_attention"], (BATCH, 2, 8, 16))
  np.testing.assert_allclose(aux["readout_weights"].sum(-1), 1.0, rtol=1e-5)
  assert float(aux["reg_loss"]) < 0.0  # Hinge repulsion is <= 0.
  # Eval: no rng needed; the soft graph is the kernel.
  logits_eval, aux_eval = model.apply(variables, x, train=False)
  chex.assert_shape(logits_eval, (BATCH, 5))
  np.testing.assert_array_equal(aux_eval["graph"], aux_eval["kernel"])
  chex.assert_tree_all_finite((logits, aux, logits_eval, aux_eval))


def test_finite_gradients_for_every_parameter():
  model, variables = _jit_init_default()
  x = _images()
  labels = jnp.arange(BATCH) % 5

  @jax.jit
  def grads_fn(params):
    def loss(p):
      logits, aux = _apply(model, {"params": p}, x, train=True)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return ce.mean() + aux["reg_loss"]
    return jax.grad(loss)(params)

  grads = grads_fn(variables["params"])
  chex.assert_tree_all_finite(grads)
  flat = flax.traverse_util.flatten_dict(grads)
  zero = [p for p, g in flat.items() if not bool(jnp.any(g != 0))]
  assert not zero, f"parameters without gradient: {zero}"


def test_determinism_and_train_eval_behaviour():
  model, variables = _jit_init_default()
  x = _images()
  a = _apply(model, variables, x, train=True, seed=1)
  b = _apply(model, variables, x, train=True, seed=1)
  c = _apply(model, variables, x, train=True, seed=2)
  chex.assert_trees_all_equal(a, b)
  assert float(jnp.abs(a[1]["graph"] - c[1]["graph"]).max()) > 0.0
  assert float(jnp.abs(a[0] - c[0]).max()) > 0.0
  # Per-example graphs differ across the batch.
  assert float(jnp.abs(a[1]["graph"][0] - a[1]["graph"][1]).max()) > 0.0
  # Eval is deterministic and independent of the rngs passed.
  e1 = model.apply(variables, x, train=False)
  e2 = _apply(model, variables, x, train=False, seed=5)
  chex.assert_trees_all_equal(e1, e2)


class VariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_apply_variants_agree(self):
    model, variables = _jit_init_default()
    x = _images()
    reference = _apply(model, variables, x, train=True)

    @self.variant
    def forward(v, images):
      return _apply(model, v, images, train=True)

    out = forward(variables, x)
    chex.assert_trees_all_close(out, reference, rtol=1e-4, atol=1e-5)


OPTIONS = [
    dict(tokenizer="patch"),
    dict(tokenizer_blocks=2, patch_size=2, stem_channels=4),
    dict(shared_read_in_projection=True),
    dict(fold_read_in=False),
    dict(readout="single", per_layer_codes=True),
    dict(ffn="gelu", layer_scale_init=0.1, drop_path=0.3),
    dict(complete_graph=True),
    dict(stochastic_kernel=False),
    dict(eval_graph="threshold"),
    dict(eval_graph="sample"),
    dict(inputs_are_mediators=False),
    dict(initial_state="dense", state_noise=True),
    dict(modfc_mode="dense"),
    dict(modfc_mode="plain_scale", learn_sigma=True, kernel_sigma=0.5),
    dict(freeze_signatures=True, graph_regularizer="hinge",
         hinge_threshold=0.9),
    dict(head_dim=None, num_heads=4),
    dict(graph_regularizer="hinge", hinge_threshold=0.9),
    dict(graph_regularizer="graphon", graph_prior="barabasi_albert",
         graph_prior_kwargs={"m": 2}),
]


@pytest.mark.parametrize("overrides", OPTIONS, ids=lambda o: "-".join(o))
def test_option_paths_build_and_run(overrides):
  model = _model(**overrides)
  x = _images()
  params = _host_params(model, x)
  logits, aux = _apply(model, params, x, train=True)
  chex.assert_shape(logits, (BATCH, 5))
  chex.assert_tree_all_finite((logits, aux))
  logits_eval, aux_eval = _apply(model, params, x, train=False)
  chex.assert_tree_all_finite((logits_eval, aux_eval))
  senders = 8 + (8 if not model.inputs_are_mediators else 0)
  sampled_eval = model.eval_graph == "sample" and model.stochastic_kernel
  expected_eval = (BATCH, 8, senders) if sampled_eval else (8, senders)
  if model.complete_graph:
    np.testing.assert_array_equal(aux["graph"], 1.0)
    chex.assert_shape(aux["graph"], (8, senders))
  elif model.stochastic_kernel:
    chex.assert_shape(aux["graph"], (BATCH, 8, senders))
    chex.assert_shape(aux_eval["graph"], expected_eval)
  else:
    chex.assert_shape(aux["graph"], (8, senders))
  if model.eval_graph == "threshold":
    assert set(np.unique(np.asarray(aux_eval["graph"]))) <= {0.0, 1.0}
  if model.readout == "single":
    np.testing.assert_array_equal(aux["readout_weights"][:, 0], 1.0)
  if model.graph_regularizer is None:
    assert float(aux["reg_loss"]) == 0.0
  else:
    assert float(aux["reg_loss"]) != 0.0
  if model.drop_path > 0.0:
    other = model.apply(params, x, train=True, rngs={
        "sample": jax.random.key(1), "dropout": jax.random.key(99)})
    assert float(jnp.abs(other[0] - logits).max()) > 0.0
  if model.freeze_signatures:
    # Jitted: with the gradient symbolically zero, XLA prunes the network.
    def loss(sig):
      p = flax.core.copy(params, {})
      p["params"] = {**p["params"], "mediator_signatures": sig}
      logits, aux = _apply(model, p, x, True)
      return jnp.sum(logits) + aux["reg_loss"]
    grads = jax.jit(jax.grad(loss))(params["params"]["mediator_signatures"])
    np.testing.assert_array_equal(grads, 0.0)


@pytest.mark.parametrize("prior", graph_priors.known_graph_priors())
def test_each_graph_prior_builds(prior):
  kwargs = {"ring_of_cliques": {"num_cliques": 2},
            "planted_partition": {"num_groups": 2},
            "stochastic_block": {"num_groups": 2}}.get(prior, {})
  model = _model(graph_prior=prior, graph_prior_kwargs=kwargs)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), RNGS,
                          _images())
  assert shapes["params"]["mediator_signatures"].shape == (8, 16)


@pytest.mark.parametrize("overrides,field", [
    (dict(graph_prior="scale_free"), "graph_prior"),
    (dict(head_dim=None, num_heads=3), "num_heads"),
    (dict(d_code=8), "d_code"),
    (dict(num_input_modules=4), "num_input_modules"),
    (dict(readout="mean"), "readout"),
    (dict(eval_graph="hard"), "eval_graph"),
    (dict(graph_regularizer="graphon"), "graph_prior"),
    (dict(graph_prior="ring_of_cliques",
          graph_prior_kwargs={"num_cliques": 3}), "graph_prior"),
    (dict(tokenizer="vit"), "tokenizer"),
    (dict(drop_path=1.0), "drop_path"),
    (dict(tokenizer_blocks="two"), "tokenizer_blocks"),
])
def test_invalid_configs_name_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    _model(**overrides)


def test_traced_train_flag_fails_clearly():
  model = _model()
  with pytest.raises(ValueError, match="static_argnames"):
    jax.eval_shape(model.init, RNGS, _images(), train=True)
