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
* a drawn graph (PNG): one arrow per counted link, nodes laid out and
  coloured by community, sized by degree, with a legend.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import networkx as nx
import numpy as np

from crl import workdir as workdir_lib
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


def link_graph(kernel: np.ndarray, threshold: float = 0.5) -> nx.DiGraph:
  """The drawn graph: an edge `w -> u` (attribute `weight` = K[u, w]) for
  every off-diagonal K[u, w] > threshold, as `graph_statistics` counts."""
  n = kernel.shape[0]
  weights = np.asarray(kernel, np.float64) * (1.0 - np.eye(n))
  g = nx.DiGraph()
  g.add_nodes_from(range(n))
  for u, w in zip(*np.nonzero(weights > threshold)):  # receiver u, sender w
    g.add_edge(int(w), int(u), weight=float(weights[u, w]))
  return g


def community_layout(graph: nx.DiGraph, communities: Sequence[Sequence[int]],
                     seed: int = 0) -> dict[int, np.ndarray]:
  """Node positions with each community in its own disc: community centres
  on a circle (radius 1, one community at the centre), members placed by a
  spring layout of their own subgraph scaled into the disc."""
  groups = [sorted(c) for c in communities if len(c)] or [list(graph)]
  grouped = {i for c in groups for i in c}
  groups += [[i] for i in graph if i not in grouped]
  m = len(groups)
  disc = 0.9 * np.sin(np.pi / m) if m > 1 else 1.0
  pos = {}
  for c, members in enumerate(groups):
    angle = 2 * np.pi * c / m
    centre = np.zeros(2) if m == 1 else np.array([np.cos(angle),
                                                  np.sin(angle)])
    inner = nx.spring_layout(graph.subgraph(members).to_undirected(),
                             seed=seed, center=(0, 0)) if len(
                                 members) > 1 else {members[0]: np.zeros(2)}
    radius = max((np.linalg.norm(p) for p in inner.values()), default=0.)
    for node, p in inner.items():
      pos[node] = centre + disc * 0.85 * np.asarray(p) / max(radius, 1e-9)
  return pos


def draw(kernel: np.ndarray, path: str, communities: Sequence[Sequence[int]]
         | None = None, threshold: float = 0.5, seed: int = 0,
         title: str | None = None) -> str:
  """Draws the averaged graph as a PNG: an arrow `w -> u` for every link
  K[u, w] > threshold (the edges `graph_statistics` counts, so the title's
  count is the console's), nodes laid out by community (`community_layout`),
  coloured by community and sized by degree (in + out), with a legend."""
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib import lines as mlines  # pylint: disable=g-import-not-at-top
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top

  n = kernel.shape[0]
  g = link_graph(kernel, threshold)
  groups = [sorted(int(i) for i in c) for c in (communities or [])]
  colour_of = {i: c for c, members in enumerate(groups) for i in members}
  cmap = colormaps["tab10"]
  colours = [cmap(colour_of.get(i, len(groups)) % 10) for i in range(n)]
  pos = community_layout(g, groups, seed)
  degree = np.array([g.in_degree(i) + g.out_degree(i) for i in range(n)])
  sizes = 60 + 40 * degree
  fig = figure.Figure(figsize=(7.5, 6.5))
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.subplots()
  mutual = [(a, b) for a, b in g.edges if g.has_edge(b, a)]
  single = [e for e in g.edges if e not in set(mutual)]
  for edges, rad in ((single, 0.0), (mutual, 0.15)):
    if edges:  # both arrows of a mutual pair stay visible as two arcs
      nx.draw_networkx_edges(
          g, pos, edgelist=edges, ax=ax, arrows=True, arrowstyle="-|>",
          arrowsize=9, node_size=sizes, alpha=0.45, edge_color="0.3",
          width=[0.5 + 1.5 * g.edges[e]["weight"] for e in edges],
          connectionstyle=f"arc3,rad={rad}")
  nx.draw_networkx_nodes(g, pos, ax=ax, node_size=sizes, node_color=colours,
                         edgecolors="black", linewidths=0.5)
  nx.draw_networkx_labels(g, pos, ax=ax, font_size=7)
  handles = [mlines.Line2D([], [], marker="o", linestyle="", markersize=8,
                           color=cmap(c % 10), markeredgecolor="black",
                           label=f"community {c + 1} ({len(members)})")
             for c, members in enumerate(groups)]
  handles += [mlines.Line2D([], [], marker="o", linestyle="", color="0.8",
                            markeredgecolor="black",
                            markersize=np.sqrt(60 + 40 * d),
                            label=f"degree {d}")
              for d in sorted({0, int(np.median(degree)), int(degree.max())})]
  handles.append(mlines.Line2D([], [], color="0.3", marker=">",
                               label="w \u2192 u: K[u, w] > "
                                     f"{threshold:g}"))
  ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0),
            fontsize=8, frameon=False, labelspacing=2.0, borderpad=1.0)
  ax.set_title(title or f"Learned mediator graph: {g.number_of_edges()} "
               f"links among {n} modules (K > {threshold:g})", fontsize=10)
  ax.axis("off")
  ax.set_aspect("equal")
  fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend included
  return path


def write_report(report: dict[str, Any], outdir: str) -> dict[str, str]:
  """Writes `circuits.json` and `circuit_graph.png`; returns their paths."""
  os.makedirs(outdir, exist_ok=True)
  k = np.asarray(report["kernel"])
  png = draw(k, os.path.join(outdir, "circuit_graph.png"),
             report["averaged"]["communities"])
  path = os.path.join(outdir, "circuits.json")
  workdir_lib.write_json_atomic(path, report, indent=1)
  return {"json": path, "png": png}
