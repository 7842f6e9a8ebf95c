"""Graph priors for NAC's signatures and the graph regularisers.

- Target graphs are built with networkx, chosen by name, deterministic from an
  integer `seed` (a keyword of every prior).
- `fit_signatures` finds signatures whose truncated kernel realises a target
  graph: `d_uw < tau` exactly where an edge exists. It is a pure JAX function
  (orthogonal init, optax Adam inside `lax.fori_loop`) usable inside a jitted
  `model.init`. Self-pairs (`d_uu = 0`) are always links and are not part of
  the target.
- `hinge_repulsion` and `graphon_loss` are the two graph regularisers.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import optax
import scipy.optimize

from crl.models.kernel import cosine_distance


def _barabasi_albert(n, m=2, seed=0):
  return nx.barabasi_albert_graph(n, m, seed=seed)


def _watts_strogatz(n, k=4, p=0.1, seed=0):
  return nx.connected_watts_strogatz_graph(n, k, p, seed=seed)


def _planted_partition(n, num_groups=4, p_in=0.5, p_out=0.02, seed=0):
  if n % num_groups:
    raise ValueError(f"planted_partition: num_groups={num_groups} must divide "
                     f"the number of modules {n}.")
  return nx.planted_partition_graph(num_groups, n // num_groups, p_in, p_out,
                                    seed=seed)


def _ring_of_cliques(n, num_cliques=4, seed=0):
  del seed  # Deterministic by construction.
  if n % num_cliques or n // num_cliques < 2:
    raise ValueError(f"ring_of_cliques: num_cliques={num_cliques} must divide "
                     f"the number of modules {n} into cliques of size >= 2.")
  return nx.ring_of_cliques(num_cliques, n // num_cliques)


def _erdos_renyi(n, p=0.1, seed=0):
  return nx.erdos_renyi_graph(n, p, seed=seed)


def _complete(n, seed=0):
  del seed
  return nx.complete_graph(n)


GRAPH_PRIORS: dict[str, Callable[..., nx.Graph]] = {
    "barabasi_albert": _barabasi_albert,
    "watts_strogatz": _watts_strogatz,
    "planted_partition": _planted_partition,
    "stochastic_block": _planted_partition,
    "ring_of_cliques": _ring_of_cliques,
    "erdos_renyi": _erdos_renyi,
    "complete": _complete,
}


def known_graph_priors() -> list[str]:
  """Names accepted by `target_graph`."""
  return sorted(GRAPH_PRIORS)


def kwargs_dict(kwargs: Any) -> dict[str, Any]:
  """Normalises prior kwargs: None, a mapping or `((key, value), ...)`."""
  if kwargs is None:
    return {}
  if isinstance(kwargs, Mapping) or hasattr(kwargs, "items"):
    return dict(kwargs.items())
  try:
    return {str(k): v for k, v in kwargs}
  except (TypeError, ValueError) as e:
    raise ValueError("graph_prior_kwargs must be a dict or a tuple of (key, "
                     f"value) pairs, got {kwargs!r}.") from e


def check_prior(name: str, kwargs: Any = None) -> None:
  """Raises ValueError for an unknown prior name or keyword."""
  if name not in GRAPH_PRIORS:
    raise ValueError(f"Unknown graph prior {name!r}; known graph priors: "
                     f"{', '.join(known_graph_priors())}.")
  import inspect  # pylint: disable=g-import-not-at-top
  params = list(inspect.signature(GRAPH_PRIORS[name]).parameters)[1:]
  for key in kwargs_dict(kwargs):
    if key not in params:
      raise ValueError(f"graph prior {name!r} takes keywords {params}, got "
                       f"{key!r}.")


def target_graph(name: str, num_nodes: int, **kwargs) -> nx.Graph:
  """Builds the named target graph on `num_nodes` nodes.

  Args:
    name: one of `known_graph_priors()`.
    num_nodes: number of nodes (mediator modules).
    **kwargs: the prior's keywords (e.g. `m` for barabasi_albert) and `seed`.

  Returns:
    An undirected networkx graph with nodes `0..num_nodes-1`.
  """
  check_prior(name, kwargs)
  graph = GRAPH_PRIORS[name](num_nodes, **kwargs)
  if graph.number_of_nodes() != num_nodes:
    raise ValueError(f"graph prior {name!r} built {graph.number_of_nodes()} "
                     f"nodes, expected {num_nodes}.")
  return graph


@functools.lru_cache(maxsize=64)
def _adjacency_cached(name: str, num_nodes: int,
                      items: tuple[tuple[str, Any], ...]) -> np.ndarray:
  graph = target_graph(name, num_nodes, **dict(items))
  adj = nx.to_numpy_array(graph, nodelist=range(num_nodes)) > 0
  np.fill_diagonal(adj, False)
  adj.setflags(write=False)
  return adj


def target_adjacency(name: str, num_nodes: int,
                     kwargs: Any = None) -> np.ndarray:
  """Boolean `[num_nodes, num_nodes]` symmetric adjacency, no self-loops."""
  items = tuple(sorted(kwargs_dict(kwargs).items()))
  return _adjacency_cached(name, num_nodes, items)


def fitting_loss(signatures: jax.Array, adjacency: jax.Array, tau: float,
                 margin: float) -> jax.Array:
  """Hinge loss for `d < tau - margin` on edges and `d > tau + margin` off.

  Args:
    signatures: `[n, sig]`.
    adjacency: bool `[n, n]` without self-loops.
    tau: kernel truncation.
    margin: safety margin around tau.

  Returns:
    Scalar, zero iff all off-diagonal pairs satisfy their margin.
  """
  n = signatures.shape[0]
  d = cosine_distance(signatures, signatures)
  edge_violation = jax.nn.relu(d - (tau - margin))
  gap_violation = jax.nn.relu((tau + margin) - d)
  per_pair = jnp.where(adjacency, edge_violation, gap_violation)
  off_diagonal = 1.0 - jnp.eye(n, dtype=d.dtype)
  return jnp.sum(per_pair * off_diagonal) / max(n * (n - 1), 1)


def fit_signatures(key: jax.Array, adjacency: np.ndarray | jax.Array,
                   dim: int, *, tau: float, steps: int = 1000,
                   learning_rate: float = 1e-3,
                   margin: float = 0.05) -> jax.Array:
  """Fits signatures so that the truncated kernel realises `adjacency`.

  Orthogonal init, then `steps` Adam steps on `fitting_loss`, all in JAX
  (`lax.fori_loop`), so it can run inside a jitted `model.init`.

  Args:
    key: PRNG key for the orthogonal init.
    adjacency: bool `[n, n]` target without self-loops.
    dim: signature channels.
    tau: kernel truncation.
    steps: Adam steps.
    learning_rate: Adam learning rate.
    margin: hinge margin around tau.

  Returns:
    `[n, dim]` float32 signatures.
  """
  adjacency = jnp.asarray(adjacency, bool)
  n = adjacency.shape[0]
  init = jax.nn.initializers.orthogonal()(key, (n, dim), jnp.float32)
  optimizer = optax.adam(learning_rate)
  loss_grad = jax.grad(fitting_loss)

  def step(_, carry):
    sig, opt_state = carry
    grads = loss_grad(sig, adjacency, tau, margin)
    updates, opt_state = optimizer.update(grads, opt_state, sig)
    return optax.apply_updates(sig, updates), opt_state

  sig, _ = jax.lax.fori_loop(0, steps, step, (init, optimizer.init(init)))
  return sig


def hinge_repulsion(distance: jax.Array, threshold: float) -> jax.Array:
  """`-sum_{u<w, d_uw < h} d_uw`: pushes apart signatures closer than h.

  Args:
    distance: `[n, n]` symmetric cosine distances.
    threshold: h.

  Returns:
    Scalar (<= 0).
  """
  n = distance.shape[0]
  upper = jnp.triu(jnp.ones((n, n), bool), k=1)
  close = jnp.logical_and(upper, jax.lax.stop_gradient(distance) < threshold)
  return -jnp.sum(jnp.where(close, distance, 0.0))


def _row_cost_assignment(kernel: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Host-side: permutation matching rows of `kernel` to rows of `target`.

  The cost of matching kernel row i with target row j is the squared distance
  between their sorted values (a permutation-invariant row profile).
  """
  k_rows = np.sort(np.asarray(kernel, np.float64), axis=1)
  t_rows = np.sort(np.asarray(target, np.float64), axis=1)
  cost = (np.sum(k_rows ** 2, 1)[:, None] + np.sum(t_rows ** 2, 1)[None, :]
          - 2.0 * k_rows @ t_rows.T)
  rows, cols = scipy.optimize.linear_sum_assignment(cost)
  perm = np.empty(kernel.shape[0], np.int32)
  perm[rows] = cols
  return perm


def best_permutation(kernel: jax.Array, target: jax.Array) -> jax.Array:
  """`perm[i]` = target node matched to kernel node i (no gradient).

  Runs `scipy.optimize.linear_sum_assignment` through `jax.pure_callback`.
  """
  n = kernel.shape[0]
  return jax.pure_callback(
      _row_cost_assignment, jax.ShapeDtypeStruct((n,), jnp.int32),
      jax.lax.stop_gradient(kernel), jax.lax.stop_gradient(target),
      vmap_method="sequential")


def graphon_loss(kernel: jax.Array, target: jax.Array,
                 perm: Optional[jax.Array] = None) -> jax.Array:
  """MSE between the kernel and the best-permuted target graphon.

  Args:
    kernel: `[n, n]` K without sampling.
    target: `[n, n]` target graphon / adjacency in [0, 1] (self-loops should
      be 1 to match `K_uu = 1`).
    perm: optional precomputed permutation; found with `best_permutation`
      otherwise.

  Returns:
    Scalar `mean((K - A[perm][:, perm])**2)`; gradient flows to K only.
  """
  target = jnp.asarray(target, kernel.dtype)
  if perm is None:
    perm = best_permutation(kernel, target)
  permuted = target[perm][:, perm]
  return jnp.mean((kernel - permuted) ** 2)
