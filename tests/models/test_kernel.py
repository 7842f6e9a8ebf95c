"""Tests for crl.models.kernel (signature kernel, truncation, sampling)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.models import kernel
from crl.models import attention

TAU = 0.9


def _signatures(n=8, dim=16, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, dim))


@functools.partial(jax.jit, static_argnames=("tau",))
def _kernel(sig, tau=TAU, sigma=1.0):
  return kernel.signature_kernel(kernel.cosine_distance(sig, sig), sigma, tau)


def test_kernel_values_and_truncation():
  sig = _signatures()
  k = _kernel(sig)
  d = k["distance"]
  np.testing.assert_allclose(jnp.diag(d), 0.0, atol=1e-6)
  expected = jnp.where(d <= TAU, jnp.exp(-d), 0.0)
  np.testing.assert_allclose(k["kernel"], expected, rtol=1e-6)
  truncated = d > TAU
  assert bool(truncated.any()) and bool((~truncated).any())
  # Exactly zero where truncated, finite log-mask.
  assert bool(jnp.all(jnp.where(truncated, k["kernel"] == 0.0, True)))
  assert bool(jnp.all(jnp.where(truncated,
                                k["log_kernel"] == attention.MASK_VALUE, True)))
  chex.assert_tree_all_finite(k)


def test_truncated_pairs_get_exactly_zero_attention_weight():
  sig = _signatures()
  k = _kernel(sig)
  scores = 10.0 * jax.random.normal(jax.random.key(1), (2, 3, 8, 8))
  @functools.partial(jax.jit, static_argnames="mode")
  def weights(k, mode):
    g = kernel.make_graph(k, mode, key=jax.random.key(2), batch_size=2)
    lg = g["log_graph"]
    lg = lg[None, None] if lg.ndim == 2 else lg[:, None]
    link = g["link"][None, None] if g["link"].ndim == 2 else g["link"][:, None]
    return attention.masked_softmax(scores, lg, link), link

  for mode in ("soft", "threshold", "sample"):
    w, link = weights(k, mode)
    assert bool(jnp.all(jnp.where(link, True, w == 0.0))), mode
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_straight_through_gradient_equals_untruncated_kernel():
  sig = _signatures()
  weights = jax.random.normal(jax.random.key(3), (8, 8))

  def truncated(s):
    return jnp.sum(weights * _kernel(s)["kernel"])

  def untruncated(s):
    return jnp.sum(weights * jnp.exp(-kernel.cosine_distance(s, s)))

  g_trunc = jax.jit(jax.grad(truncated))(sig)
  np.testing.assert_allclose(g_trunc, jax.jit(jax.grad(untruncated))(sig),
                             rtol=1e-5, atol=1e-6)
  # A signature all of whose pairs are truncated still gets a gradient.
  far = jnp.concatenate([sig[:1], -sig[:1]])  # d = 2 > tau.
  g_far = jax.jit(jax.grad(lambda s: jnp.sum(_kernel(s)["kernel"])))(far)
  assert float(jnp.abs(g_far).sum()) > 0.0
  assert float(_kernel(far)["kernel"][0, 1]) == 0.0
  # Same for the log kernel.
  g_log = jax.jit(jax.grad(
      lambda s: jnp.sum(weights * _kernel(s)["log_kernel"])))(sig)
  g_log_ref = jax.jit(jax.grad(
      lambda s: jnp.sum(weights * -kernel.cosine_distance(s, s))))(sig)
  np.testing.assert_allclose(g_log, g_log_ref, rtol=1e-5, atol=1e-6)


def test_sampled_graphs_per_example_and_unbiased():
  sig = _signatures()
  k = _kernel(sig)
  batch = 4000
  g = jax.jit(functools.partial(
      kernel.make_graph, mode="sample", batch_size=batch, temperature=0.5))(
          k, key=jax.random.key(4))
  z = g["graph"]
  chex.assert_shape(z, (batch, 8, 8))
  chex.assert_tree_all_finite(g["log_graph"])
  # Different examples get different graphs.
  assert float(jnp.abs(z[0] - z[1]).max()) > 0.0
  # Truncated pairs are never sampled.
  assert bool(jnp.all(jnp.where(k["link"], True, z == 0.0)))
  # Hard-thresholded relaxed samples are exact Bernoulli(K) draws:
  # P(z > 0.5) = K. 4000 samples: standard error <= 0.008.
  np.testing.assert_allclose(jnp.mean(z > 0.5, axis=0), k["kernel"],
                             atol=0.04)
  # log z agrees with z where linked.
  np.testing.assert_allclose(
      jnp.where(k["link"], jnp.exp(g["log_graph"]), 0.0), z, atol=1e-6)


def test_sampling_gradient_reaches_signatures():
  sig = _signatures()

  def loss(s):
    g = kernel.make_graph(_kernel(s), "sample", key=jax.random.key(5),
                          batch_size=3)
    return jnp.sum(g["graph"] * jnp.arange(8.0))

  grads = jax.jit(jax.grad(loss))(sig)
  chex.assert_tree_all_finite(grads)
  assert float(jnp.abs(grads).sum()) > 0.0


def test_eval_modes():
  sig = _signatures()
  k = _kernel(sig)
  soft = kernel.make_graph(k, "soft")
  np.testing.assert_array_equal(soft["graph"], k["kernel"])
  thr = kernel.make_graph(k, "threshold")
  np.testing.assert_array_equal(thr["graph"], (k["kernel"] > 0.5) * 1.0)
  assert bool(jnp.all(jnp.diag(thr["link"])))
  sample = jax.jit(functools.partial(kernel.make_graph, mode="sample",
                                     batch_size=2))
  s1 = sample(k, key=jax.random.key(0))
  s2 = sample(k, key=jax.random.key(1))
  chex.assert_shape(s1["graph"], (2, 8, 8))
  assert float(jnp.abs(s1["graph"] - s2["graph"]).max()) > 0.0
  with pytest.raises(ValueError, match="key"):
    kernel.make_graph(k, "sample")
  with pytest.raises(ValueError, match="soft"):
    kernel.make_graph(k, "bogus")


def test_no_nan_at_truncation_edge():
  # d exactly tau: kept (K = exp(-tau)), finite.
  d = jnp.array([[0.0, TAU], [TAU, 0.0]])
  k = jax.jit(kernel.signature_kernel, static_argnums=2)(d, 1.0, TAU)
  np.testing.assert_allclose(k["kernel"][0, 1], np.exp(-TAU), rtol=1e-6)
  assert bool(k["link"][0, 1])
  # All pairs truncated (receivers orthogonal to every sender): no NaN in
  # weights, samples or gradients; rows fall back to uniform.
  receivers = jnp.eye(4)[:2]
  senders = jnp.eye(4)[2:]

  @functools.partial(jax.jit, static_argnames="mode")
  def out(r, mode):
    kk = kernel.signature_kernel(kernel.cosine_distance(r, senders), 1.0, 0.5)
    g = kernel.make_graph(kk, mode, key=jax.random.key(0), batch_size=2)
    lg = g["log_graph"]
    link = g["link"]
    lg = lg[None, None] if lg.ndim == 2 else lg[:, None]
    link = link[None, None] if link.ndim == 2 else link[:, None]
    scores = jnp.ones((2, 1, 2, 2)) * r.sum()
    return attention.masked_softmax(scores, lg, link)

  for mode in ("soft", "threshold", "sample"):
    w = out(receivers, mode)
    np.testing.assert_allclose(w, 0.5)
    grads = jax.jit(jax.grad(lambda r: jnp.sum(out(r, mode) ** 2)))(receivers)
    chex.assert_tree_all_finite(grads)
  # Zero signatures do not NaN either.
  z = _kernel(jnp.zeros((2, 4)))
  chex.assert_tree_all_finite(z)
