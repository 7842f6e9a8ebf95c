"""Tests for crl.models.graph_priors."""

import functools

import chex
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from crl.models import graph_priors
from crl.models import kernel

TAU = 0.9


@functools.partial(jax.jit, static_argnames=("dim", "steps"))
def _fit(key, adjacency, dim=16, steps=1000):
  return graph_priors.fit_signatures(key, adjacency, dim, tau=TAU, steps=steps)


@pytest.mark.parametrize("name,n,kwargs", [
    ("barabasi_albert", 32, {"m": 2}),
    ("watts_strogatz", 32, {"k": 4, "p": 0.2}),
    ("planted_partition", 32, {"num_groups": 4}),
    ("stochastic_block", 32, {"num_groups": 4, "seed": 3}),
    ("ring_of_cliques", 32, {"num_cliques": 4}),
    ("erdos_renyi", 32, {"p": 0.15}),
    ("complete", 32, {}),
    ("barabasi_albert", 64, {"m": 2}),  # The NAC-S/32 prior.
])
def test_fit_reproduces_target_edges_exactly(name, n, kwargs):
  adj = graph_priors.target_adjacency(name, n, kwargs)
  assert adj.shape == (n, n) and (adj == adj.T).all()
  assert not adj.diagonal().any()
  sig = _fit(jax.random.key(0), jnp.asarray(adj), dim=64 if n == 64 else 16)
  d = np.asarray(kernel.cosine_distance(sig, sig))
  off = ~np.eye(n, dtype=bool)
  np.testing.assert_array_equal((d < TAU)[off], adj[off])
  assert float(graph_priors.fitting_loss(sig, adj, TAU, 0.0)) == 0.0


def test_target_graphs_are_deterministic_from_seed():
  a = graph_priors.target_adjacency("barabasi_albert", 32, {"seed": 1})
  b = graph_priors.target_adjacency("barabasi_albert", 32, (("seed", 1),))
  c = graph_priors.target_adjacency("barabasi_albert", 32, {"seed": 2})
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  g = graph_priors.target_graph("ring_of_cliques", 12, num_cliques=3)
  assert nx.number_of_edges(g) == 3 * 6 + 3


def test_unknown_names_and_kwargs_fail_clearly():
  with pytest.raises(ValueError, match="known graph priors: .*barabasi_albert"):
    graph_priors.target_adjacency("scale_free_typo", 16)
  with pytest.raises(ValueError, match="takes keywords"):
    graph_priors.target_adjacency("erdos_renyi", 16, {"q": 0.1})
  with pytest.raises(ValueError, match="num_cliques"):
    graph_priors.target_adjacency("ring_of_cliques", 10, {"num_cliques": 3})


def test_hinge_repulsion_hand_built():
  e1, e2 = jnp.eye(2)
  sig = jnp.stack([e1, e1, (e1 + e2) / jnp.sqrt(2.0), -e1])
  d = jax.jit(kernel.cosine_distance)(sig, sig)
  # Pairs u < w with d < 0.4: (0, 1): 0, (0, 2) and (1, 2): 1 - 1/sqrt(2).
  expected = -2.0 * (1.0 - 1.0 / np.sqrt(2.0))
  np.testing.assert_allclose(graph_priors.hinge_repulsion(d, 0.4), expected,
                             rtol=1e-5)
  np.testing.assert_allclose(graph_priors.hinge_repulsion(d, 0.1), 0.0,
                             atol=1e-6)
  grads = jax.jit(jax.grad(lambda s: graph_priors.hinge_repulsion(
      kernel.cosine_distance(s, s), 0.4)))(sig)
  chex.assert_tree_all_finite(grads)
  assert float(jnp.abs(grads).sum()) > 0.0


def test_graphon_loss_hand_built():
  adj = graph_priors.target_adjacency("ring_of_cliques", 8, {"num_cliques": 2})
  target = jnp.asarray(adj + np.eye(8), jnp.float32)
  # K equal to the target: zero loss, identity-equivalent permutation.
  assert float(graph_priors.graphon_loss(target, target)) == pytest.approx(0.0)
  # Row costs see degree profiles: matching K = A against A keeps a
  # permutation that only swaps nodes with equal profiles.
  perm = np.asarray(graph_priors.best_permutation(target, target))
  assert sorted(perm.tolist()) == list(range(8))
  np.testing.assert_array_equal(np.asarray(target).sum(1)[perm],
                                np.asarray(target).sum(1))
  # A constant kernel: any permutation gives mean((c - A)^2).
  const = jnp.full((8, 8), 0.25)
  np.testing.assert_allclose(graph_priors.graphon_loss(const, target),
                             np.mean((0.25 - np.asarray(target)) ** 2),
                             rtol=1e-6)


def test_graphon_loss_gradients_and_jit():
  adj = graph_priors.target_adjacency("barabasi_albert", 16, {"m": 2})
  target = jnp.asarray(adj + np.eye(16), jnp.float32)
  sig = jax.random.normal(jax.random.key(0), (16, 8))

  def loss(s):
    k = kernel.signature_kernel(kernel.cosine_distance(s, s), 1.0, TAU)
    return graph_priors.graphon_loss(k["kernel"], target)

  value, grads = jax.jit(jax.value_and_grad(loss))(sig)
  assert np.isfinite(float(value)) and float(value) > 0.0
  chex.assert_tree_all_finite(grads)
  assert float(jnp.abs(grads).sum()) > 0.0
  np.testing.assert_allclose(value, jax.jit(loss)(sig), rtol=1e-6)
