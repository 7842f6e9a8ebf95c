"""Circuit analysis of a trained NAC: the learned module graph.

NAC's mediator graph comes from the signatures alone: the averaged graph is
the truncated kernel K `[U, U]`; with the stochastic kernel each example gets
its own sample `z ~ RelaxedBernoulli(K, T)`. This module exports both and
describes them:

* the degree distribution (in, out, total) of the averaged graph binarised
  at K > 0.5 (and of the weighted graph: row and column sums of K);
* modularity of the greedy-modularity communities (networkx);
* shortest-path lengths (mean and diameter over reachable pairs);
* how much per-example graphs vary: mean absolute deviation of sampled
  graphs from their mean, and the mean Jaccard distance between the edge
  sets (z > 0.5) of pairs of examples;
* how much graphs vary across interventions: the mean sampled graph for each
  eval split against the in-distribution one (L1 per link). The graph does
  not depend on token content, so any difference is sampling noise; the
  content-dependent part of the circuit is the read-in, whose attention
  entropy and per-split difference are reported as well;
* a drawn graph (PNG): nodes sized by degree, coloured by community.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import networkx as nx
import numpy as np

from crl.analysis import module_dropping
from crl.evaluators import common as eval_common
from crl.models import nac as nac_lib


def averaged_graph(model: nac_lib.NAC, params: Any) -> np.ndarray:
  """K among mediators, `[U, U]` (receiver u, sender w)."""
  return module_dropping._mediator_kernel(model, params)[0]  # pylint: disable=protected-access


def graph_statistics(kernel: np.ndarray, threshold: float = 0.5,
                     seed: int = 0) -> dict[str, Any]:
  """Degree, modularity and path statistics of a weighted directed graph.

  Args:
    kernel: `[U, U]` link weights (receiver, sender) in [0, 1].
    threshold: links with weight > threshold are edges; self-links ignored.
    seed: seed of the community detection tie-breaks.

  Returns:
    A JSON-able dict.
  """
  n = kernel.shape[0]
  weights = np.asarray(kernel, np.float64) * (1.0 - np.eye(n))
  adjacency = weights > threshold
  directed = nx.from_numpy_array(adjacency.T.astype(int),
                                 create_using=nx.DiGraph)  # edge w -> u
  undirected = nx.Graph(directed.to_undirected())
  in_degree = adjacency.sum(1)
  out_degree = adjacency.sum(0)
  degree = np.array([d for _, d in undirected.degree()])
  communities = nx.community.greedy_modularity_communities(
      undirected, weight=None) if undirected.number_of_edges() else [
          set(range(n))]
  modularity = (nx.community.modularity(undirected, communities)
                if undirected.number_of_edges() else 0.0)
  lengths = [d for _, row in nx.all_pairs_shortest_path_length(directed)
             for d in row.values() if d > 0]
  del seed
  return {
      "num_modules": int(n),
      "num_edges_directed": int(adjacency.sum()),
      "density": float(adjacency.sum() / max(n * (n - 1), 1)),
      "degree_histogram": np.bincount(degree, minlength=1).tolist(),
      "degree_mean": float(degree.mean()), "degree_max": int(degree.max()),
      "in_degree_mean": float(in_degree.mean()),
      "out_degree_std": float(out_degree.std()),
      "weighted_degree": (weights.sum(0) + weights.sum(1)).tolist(),
      "num_communities": len(communities),
      "communities": [sorted(int(i) for i in c) for c in communities],
      "modularity": float(modularity),
      "mean_shortest_path": float(np.mean(lengths)) if lengths else float(
          "nan"),
      "diameter_reachable": int(max(lengths)) if lengths else 0,
      "reachable_pair_fraction": float(len(lengths) / max(n * (n - 1), 1)),
      "weakly_connected_components":
          nx.number_weakly_connected_components(directed),
  }


def sampled_graphs(model: nac_lib.NAC, params: Any, images: jax.Array,
                   key: jax.Array) -> dict[str, np.ndarray]:
  """Per-example graphs `[B, U, U]` (sampled as in training) and read-in
  attention `[B, heads, U_in, tokens]` of the eval forward pass."""
  if not model.stochastic_kernel:
    raise ValueError("per-example graphs need a NAC with stochastic_kernel="
                     "True; this one uses the same graph for every example.")
  sampler = model.clone(eval_graph="sample")
  fn = jax.jit(lambda p, x, k: sampler.apply(
      {"params": p}, x, train=False, rngs={"sample": k})[1])
  aux = fn(params, images, key)
  return {"graph": eval_common.gather(aux["graph"]),
          "read_in_attention": eval_common.gather(
              aux["read_in_attention"])}


def variation(graphs: np.ndarray, threshold: float = 0.5,
              max_pairs: int = 2000, seed: int = 0) -> dict[str, float]:
  """How much per-example graphs `[B, U, U]` differ from one another."""
  b = graphs.shape[0]
  mean = graphs.mean(0)
  edges = graphs > threshold
  rng = np.random.default_rng(seed)
  i = rng.integers(0, b, max_pairs)
  j = (i + rng.integers(1, b, max_pairs)) % b
  inter = np.logical_and(edges[i], edges[j]).sum((1, 2))
  union = np.logical_or(edges[i], edges[j]).sum((1, 2))
  jaccard = 1.0 - inter / np.maximum(union, 1)
  return {"mean_abs_deviation": float(np.abs(graphs - mean).mean()),
          "mean_jaccard_distance": float(jaccard.mean()),
          "edges_per_example": float(edges.sum((1, 2)).mean())}


def _attention_entropy(attention: np.ndarray) -> float:
  p = np.clip(attention, 1e-12, 1.0)
  return float(-(p * np.log(p)).sum(-1).mean())


def analyse(run: Any, *, splits: Sequence[str] | None = None,
            examples: int = 256, seed: int = 0) -> dict[str, Any]:
  """The circuit report of a trained NAC run (see the module docstring).

  Args:
    run: a `crl.trainers.runs.Run` of a trained NAC.
    splits: eval splits compared with 'test' (default: all but novel ones).
    examples: examples per split for the per-example graphs.
    seed: seed of graph sampling.
  """
  model, params = run.model, run.params
  if not isinstance(model, nac_lib.NAC):
    raise TypeError(f"circuit analysis needs a NAC, got "
                    f"{type(model).__name__}.")
  k = averaged_graph(model, params)
  report: dict[str, Any] = {"averaged": graph_statistics(k),
                            "kernel": k.tolist()}
  if not model.stochastic_kernel:
    return report
  known = run.dataset.eval_splits()
  splits = list(splits) if splits is not None else [
      s for s in known if s != "novel_classes"]
  if "test" not in splits:
    splits = ["test", *splits]
  per_split = {}
  for i, split in enumerate(splits):
    batch = next(iter(run.task.pipeline.eval_batches(split)))
    images = batch[run.task.input_key][:examples]
    out = sampled_graphs(model, params, images,
                         jax.random.fold_in(jax.random.PRNGKey(seed), i))
    per_split[split] = out
  test = per_split["test"]
  report["per_example"] = variation(test["graph"], seed=seed)
  report["per_example"]["sampled_mean_vs_kernel_l1"] = float(
      np.abs(test["graph"].mean(0) - k).mean())
  test_attention = test["read_in_attention"].mean(0)
  report["across_interventions"] = {
      split: {
          "graph_mean_l1_vs_test": float(
              np.abs(out["graph"].mean(0) - test["graph"].mean(0)).mean()),
          "read_in_attention_l1_vs_test": float(np.abs(
              out["read_in_attention"].mean(0) - test_attention).sum(-1)
              .mean()),
          "read_in_attention_entropy": _attention_entropy(
              out["read_in_attention"]),
      } for split, out in per_split.items()}
  return report


def draw(kernel: np.ndarray, path: str, communities: Sequence[Sequence[int]]
         | None = None, threshold: float = 0.5, seed: int = 0,
         title: str | None = None) -> str:
  """Draws the averaged graph (edges K > threshold) as a PNG."""
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top

  n = kernel.shape[0]
  weights = np.asarray(kernel) * (1.0 - np.eye(n))
  g = nx.Graph()
  g.add_nodes_from(range(n))
  for u, w in zip(*np.nonzero(np.triu(np.maximum(weights, weights.T)
                                      > threshold))):
    g.add_edge(int(u), int(w), weight=float(max(weights[u, w],
                                                weights[w, u])))
  colour = np.zeros(n)
  for c, members in enumerate(communities or []):
    colour[list(members)] = c
  pos = nx.spring_layout(g, seed=seed)
  degree = np.array([g.degree(i) for i in range(n)])
  fig = figure.Figure(figsize=(6, 6))
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.subplots()
  nx.draw_networkx_edges(g, pos, ax=ax, alpha=0.3,
                         width=[2 * d["weight"] for *_, d in
                                g.edges(data=True)])
  nx.draw_networkx_nodes(g, pos, ax=ax, node_size=40 + 30 * degree,
                         node_color=colour, cmap="tab10")
  nx.draw_networkx_labels(g, pos, ax=ax, font_size=7)
  ax.set_title(title or f"learned mediator graph (K > {threshold:g}), "
               f"{g.number_of_edges()} edges")
  ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path


def write_report(report: dict[str, Any], outdir: str) -> dict[str, str]:
  """Writes `circuits.json` and `circuit_graph.png`; returns their paths."""
  os.makedirs(outdir, exist_ok=True)
  k = np.asarray(report["kernel"])
  png = draw(k, os.path.join(outdir, "circuit_graph.png"),
             report["averaged"]["communities"])
  path = os.path.join(outdir, "circuits.json")
  with open(path, "w") as f:
    json.dump(report, f, indent=1)
  return {"json": path, "png": png}
