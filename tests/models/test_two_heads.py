"""MLP and the explicit two-headed model: shapes, parameters, the merged
single head, and the merge search against brute force."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import config_lib
from crl import registry
from crl.evaluators import fairness as fm
from crl.models import two_heads as th
from crl.models.mlp import MLP
from crl.models.two_heads import TwoHeads

RNGS = {"dropout": jax.random.PRNGKey(1), "sample": jax.random.PRNGKey(2)}


def test_mlp_shapes_features_and_images():
  model = MLP(num_classes=2, hidden=(8, 4), dropout=0.1)
  x = jnp.ones((3, 5))
  params = model.init(jax.random.PRNGKey(0), x, train=False)["params"]
  assert set(params) == {"hidden0", "hidden1", "classifier"}
  logits, aux = model.apply({"params": params}, x, train=False, rngs=RNGS)
  chex.assert_shape(logits, (3, 2))
  chex.assert_shape(aux["features"], (3, 4))
  assert float(aux["reg_loss"]) == 0.
  # The classifier reads the features.
  head = params["classifier"]
  np.testing.assert_allclose(aux["features"] @ head["kernel"] + head["bias"],
                             logits, rtol=1e-5, atol=1e-6)
  image_shapes = jax.eval_shape(
      lambda: MLP(hidden=(4,)).init_with_output(
          jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3)), train=False)[0])
  chex.assert_shape(image_shapes[0], (2, 2))
  with pytest.raises(ValueError, match="activation"):
    MLP(activation="swish2")
  with pytest.raises(ValueError, match="inputs must be"):
    MLP().init(jax.random.PRNGKey(0), jnp.zeros((2, 3, 4)), train=False)


@pytest.fixture(scope="module")
def heads():
  section = config_lib.component_config(
      registry.MODELS, "two_heads", backbone="mlp",
      backbone_kwargs={"hidden": (8, 6)})
  model = config_lib.build(registry.MODELS, section, num_classes=2)
  x = jax.random.normal(jax.random.PRNGKey(3), (16, 5))
  params = model.init(jax.random.PRNGKey(0), x, train=False)["params"]
  return model, params, x


def test_two_heads_share_the_backbone_features(heads):
  model, params, x = heads
  assert set(params) == {"backbone", "classifier", "group_classifier"}
  assert model.backbone_kwargs == (("hidden", (8, 6)),)
  logits, aux = model.apply({"params": params}, x, train=False, rngs=RNGS)
  chex.assert_shape(logits, (16, 2))
  chex.assert_shape(aux["group_logits"], (16, 2))
  chex.assert_shape(aux["features"], (16, 6))
  g = params["group_classifier"]
  np.testing.assert_allclose(aux["features"] @ g["kernel"] + g["bias"],
                             aux["group_logits"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="registered model"):
    TwoHeads(backbone="two_heads")
  with pytest.raises(ValueError, match="num_groups"):
    TwoHeads(num_groups=1)


def test_exported_single_head_is_the_merged_rule(heads):
  model, params, x = heads
  logits, aux = model.apply({"params": params}, x, train=False, rngs=RNGS)
  z1 = fm.binary_margin(logits)
  z2 = fm.binary_margin(aux["group_logits"])
  b, c = -0.7, 0.3
  exported = th.export_params(params, b, c)
  single = th.backbone_model(model)
  assert isinstance(single, MLP) and single.hidden == (8, 6)
  out, single_aux = single.apply({"params": exported}, x, train=False,
                                 rngs=RNGS)
  np.testing.assert_allclose(fm.binary_margin(out), z1 + b * z2 + c,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(single_aux["features"], aux["features"],
                             rtol=1e-6)
  # Same architecture: the exported tree has exactly the MLP's shapes.
  want = jax.eval_shape(lambda: single.init(jax.random.PRNGKey(0), x,
                                            train=False)["params"])
  chex.assert_trees_all_equal_shapes(want, exported)


def _scores(seed, n=400):
  rng = np.random.default_rng(seed)
  s = (rng.random(n) < 0.4).astype(int)
  y = (rng.random(n) < 0.35 + 0.35 * s).astype(int)
  z1 = 2. * (y - 0.5) + rng.normal(size=n) + 0.5 * s
  z2 = 3. * (s - 0.5) + rng.normal(size=n)
  return z1, z2, y, s


def _brute_force(z1, z2, y, s, eps, bs):
  """Best accuracy over b in `bs` and every split of the merged margins."""
  sd1, sd2 = np.std(z1), np.std(z2)
  best = -1.
  for b in bs:
    m = z1 / sd1 + b * z2 / sd2
    cuts = np.r_[-np.inf, np.unique(m)]
    pred = m[None, :] > cuts[:, None]                     # [splits, n]
    acc = np.mean(pred == y, axis=-1)
    ddp = pred[:, s == 1].mean(-1) - pred[:, s == 0].mean(-1)
    best = max(best, np.max(np.where(np.abs(ddp) <= eps + 1e-12, acc, -1.)))
  return best


def test_merge_search_finds_the_grid_optimum():
  z1, z2, y, s = _scores(0)
  base = fm.fairness_metrics(z1, y, s)
  assert base["abs_ddp"] > 0.3
  # eps = 1: at least as good as the target head alone.
  loose = th.merge_search(z1, z2, y, s, 1.0, grid_size=21, rounds=1)
  assert loose["accuracy"] >= base["accuracy"]
  for eps in (0.0, 0.02, 0.1):
    found = th.merge_search(z1, z2, y, s, eps, grid_size=21, rounds=1)
    best = _brute_force(z1, z2, y, s, eps, np.linspace(-4, 4, 21))
    assert found["accuracy"] == pytest.approx(best)
    row = fm.fairness_metrics(z1 + found["b"] * z2 + found["c"], y, s)
    assert row["accuracy"] == pytest.approx(found["accuracy"])
    assert row["ddp"] == pytest.approx(found["ddp"])
    assert row["abs_ddp"] <= eps + 1e-12
    # Refinement never loses accuracy, and uses the attribute head.
    refined = th.merge_search(z1, z2, y, s, eps, grid_size=21, rounds=3)
    assert refined["accuracy"] >= found["accuracy"]
    assert refined["b"] < 0   # lowers the favoured group's margins
  with pytest.raises(ValueError, match="binary attribute"):
    th.merge_search(z1, z2, y, 0 * s, 0.1)


def test_rule_metrics_match_the_metrics():
  z1, _, y, s = _scores(1, n=50)
  offsets = np.array([-1., 0., 0.5])
  acc, ddp = th.rule_metrics(z1, y, s, offsets)
  for i, c in enumerate(offsets):
    row = fm.fairness_metrics(z1 + c, y, s)
    assert acc[i] == pytest.approx(row["accuracy"])
    assert ddp[i] == pytest.approx(row["ddp"])
