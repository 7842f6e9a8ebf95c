"""The small from-scratch ConvNet: shapes, gradients, determinism, export."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.models import two_heads as th
from crl.models.cnn import ConvNet


def test_convnet_shapes_gradients_determinism_and_two_heads():
  model = ConvNet(num_classes=2, widths=(8, 16), groups=4)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(1), x, train=False)["params"]
  assert set(params) == {"conv_0", "norm_0", "conv_1", "norm_1",
                         "classifier"}

  @jax.jit
  def run(p, x):
    return model.apply({"params": p}, x, train=True)

  logits, aux = run(params, x)
  chex.assert_shape(logits, (3, 2))
  chex.assert_shape(aux["features"], (3, 16))
  head = params["classifier"]
  np.testing.assert_allclose(aux["features"] @ head["kernel"] + head["bias"],
                             logits, rtol=1e-5, atol=1e-5)
  again, _ = run(params, x)
  np.testing.assert_array_equal(logits, again)
  grads = jax.grad(lambda p: jnp.sum(run(p, x)[0][:, 1]))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    if "classifier" not in jax.tree_util.keystr(path) or "kernel" in str(path):
      assert float(jnp.max(jnp.abs(g))) > 0, path
  chex.assert_tree_all_finite(grads)
  # As the backbone of the two-headed model, exported to a single head.
  heads = th.TwoHeads(backbone="cnn",
                      backbone_kwargs={"widths": (8, 16), "groups": 4})
  p2 = heads.init(jax.random.PRNGKey(2), x, train=False)["params"]
  z, aux2 = heads.apply({"params": p2}, x, train=False)
  chex.assert_shape(aux2["group_logits"], (3, 2))
  single, _ = th.backbone_model(heads).apply(
      {"params": th.export_params(p2, 0.5, 0.1)}, x, train=False)
  z2 = aux2["group_logits"][:, 1] - aux2["group_logits"][:, 0]
  np.testing.assert_allclose(single[:, 1] - single[:, 0],
                             z[:, 1] - z[:, 0] + 0.5 * z2 + 0.1, atol=1e-4)
  with pytest.raises(ValueError, match="groups"):
    ConvNet(widths=(6,), groups=4)
  with pytest.raises(ValueError, match="images must be"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 3)), train=False)
