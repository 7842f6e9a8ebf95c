"""Circuit analysis, module dropping and few-shot adaptation on a trained
tiny NAC (one short training shared by every test of this file). The full
curve, report and drawings run end to end in tests/test_colabs.py."""

import os

import jax
import numpy as np
import pytest

from crl.analysis import circuits
from crl.analysis import few_shot
from crl.analysis import module_dropping
from crl.trainers import runs
from crl.checkpointing import CheckpointError
from crl.trainers import classification
from tests import helpers


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("nac_run"))
  config = helpers.tiny_config(**{
      "num_steps": 8, "evals.test.every_steps": 0,
      "final_eval.splits": "test", "data.eval_examples": 64,
      "tensorboard": False})
  classification.train_and_evaluate(config, workdir)
  return runs.load_run(workdir)


def test_load_run_restores_the_trained_params(run):
  assert run.step == 8
  assert run.model.num_mediator_modules == 8


def test_load_run_refuses_a_directory_without_a_run(tmp_path):
  with pytest.raises(CheckpointError, match="not a run directory"):
    runs.load_run(str(tmp_path))


def test_dropped_model_is_the_full_model_restricted_to_kept_modules(run):
  model, params = run.model, run.params
  keep = module_dropping.rank_mediators(model, params, "degree")[:5]
  small, small_params = module_dropping.drop_mediators(model, params, keep)
  assert small.num_mediator_modules == 5 == small.num_input_modules
  np.testing.assert_array_equal(small_params["mediator_codes"],
                                params["mediator_codes"][np.sort(keep)])
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 32, 32, 3))
  logits, aux = small.apply({"params": small_params}, x, train=False)
  assert logits.shape == (4, 10) and aux["kernel"].shape == (5, 5)
  # Keeping every module reproduces the full model exactly.
  same, same_params = module_dropping.drop_mediators(
      model, params, np.arange(8))
  np.testing.assert_allclose(
      same.apply({"params": same_params}, x, train=False)[0],
      model.apply({"params": params}, x, train=False)[0], atol=1e-6)
  with pytest.raises(ValueError, match="distinct mediator indices"):
    module_dropping.drop_mediators(model, params, [0, 0])


def test_latencies_are_timed_in_turn_for_each_model(run):
  model, params = run.model, run.params
  small, small_params = module_dropping.drop_mediators(
      model, params, np.arange(2))
  x = jax.random.uniform(jax.random.PRNGKey(0), (8, 32, 32, 3))
  full, dropped = module_dropping.measure_latencies(
      [(model, params), (small, small_params)], x, repeats=3)
  assert full > 0 and dropped > 0


def test_rankings_are_permutations_and_degree_follows_the_kernel(run):
  model, params = run.model, run.params
  for by in module_dropping.RANKINGS:
    order = module_dropping.rank_mediators(model, params, by)
    assert sorted(order) == list(range(8))
  k_med, k_out = module_dropping._mediator_kernel(model, params)  # pylint: disable=protected-access
  k_med = k_med * (1 - np.eye(8))
  score = k_med.sum(0) + k_med.sum(1) + k_out.sum(0)
  order = module_dropping.rank_mediators(model, params, "degree")
  assert np.all(np.diff(score[order]) <= 1e-6)


def test_graph_statistics_on_a_hand_built_graph():
  # Two triangles joined by nothing: 2 communities, modularity 0.5.
  k = np.zeros((6, 6))
  for a, b in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)]:
    k[a, b] = k[b, a] = 0.9
  stats = circuits.graph_statistics(k)
  assert stats["num_edges_directed"] == 12
  assert stats["num_communities"] == 2
  assert stats["modularity"] == pytest.approx(0.5)
  assert stats["mean_shortest_path"] == pytest.approx(1.0)
  assert stats["degree_histogram"] == [0, 0, 6]
  assert stats["weakly_connected_components"] == 2


def test_drawn_graph_has_the_counted_links(tmp_path):
  # The two triangles plus one one-way link 5 -> 0 (K[0, 5]); 0.4 is no link.
  k = np.zeros((6, 6))
  for a, b in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)]:
    k[a, b] = k[b, a] = 0.9
  k[0, 5], k[2, 3] = 0.7, 0.4
  stats = circuits.graph_statistics(k)
  g = circuits.link_graph(k)
  assert g.number_of_edges() == stats["num_edges_directed"] == 13
  assert g.has_edge(5, 0) and not g.has_edge(0, 5)
  pos = circuits.community_layout(g, stats["communities"])
  centre = [np.mean([pos[i] for i in c], 0) for c in stats["communities"]]
  spread = max(np.linalg.norm(pos[i] - centre[j]) for j, c in
               enumerate(stats["communities"]) for i in c)
  assert np.linalg.norm(centre[0] - centre[1]) > 2 * spread  # apart
  path = circuits.draw(k, str(tmp_path / "g.png"), stats["communities"])
  assert os.path.getsize(path) > 1000


def test_variation_of_identical_graphs_is_zero():
  g = np.tile((np.eye(4) > 0)[None], (5, 1, 1)).astype(np.float32)
  v = circuits.variation(g)
  assert v["mean_abs_deviation"] == 0.0 and v["mean_jaccard_distance"] == 0.0


def test_episodes_are_disjoint_and_balanced():
  labels = np.repeat(np.arange(4), 20)
  rng = np.random.default_rng(0)
  s, sy, q, qy = few_shot.sample_episode(labels, 3, 5, 7, rng)
  assert len(s) == 15 and len(q) == 21 and not set(s) & set(q)
  assert np.bincount(sy).tolist() == [5, 5, 5]
  # Episode labels name the same class for support and query.
  for c in range(3):
    assert len(set(labels[s[sy == c]]) | set(labels[q[qy == c]])) == 1
  with pytest.raises(ValueError, match="need 5 classes"):
    few_shot.sample_episode(labels, 5, 1, 1, rng)


def test_codes_mode_adapts_code_vectors_only():
  # 'decoder' and 'encoder_norm' contain "code" but are not codes (Perceiver
  # IO and ViT have none); ModFC's code projections are shared weights.
  assert few_shot.is_code(("mediator_codes",))
  assert few_shot.is_code(("script0", "function_codes"))
  for path in [("decoder", "exit", "kernel"), ("encoder_norm", "scale"),
               ("propagator0", "key", "code_proj")]:
    assert not few_shot.is_code(path)
  assert not few_shot.has_codes({"decoder": {"kernel": np.zeros(2)}})
  assert few_shot.has_codes({"output_codes": np.zeros(2)})


def test_few_shot_rows_and_frozen_params(run):
  pool = few_shot.collect_pool(run.task.pipeline, "novel_classes")
  assert list(pool["classes"]) == [10, 11, 12, 13]
  before = jax.tree.map(np.asarray, run.params)
  rows = few_shot.evaluate(run.model, run.params, pool, shots=(1,),
                           modes=("head", "codes"), episodes=3, steps=3,
                           queries=4)
  assert [(r["mode"], r["shots"], r["ways"]) for r in rows] == [
      ("head", 1, 4), ("codes", 1, 4)]
  assert all(0.0 <= r["accuracy"] <= 1.0 and r["ci95"] >= 0 for r in rows)
  jax.tree.map(np.testing.assert_array_equal, before,
               jax.tree.map(np.asarray, run.params))
  # Episodes adapted one per call give the same rows as vectorised ones
  # (up to a query prediction flipped by rounding: 1 of 3 x 16 queries).
  one = few_shot.evaluate(run.model, run.params, pool, shots=(1,),
                          modes=("head", "codes"), episodes=3, steps=3,
                          queries=4, episode_batch=1)
  for a, b in zip(rows, one):
    assert abs(a["accuracy"] - b["accuracy"]) <= 1 / 48 + 1e-6


def test_best_speedup_respects_the_accuracy_budget(tmp_path):
  rows = [{"ranking": "degree", "fraction_dropped": f, "modules_kept": k,
           "accuracy": a, "accuracy_drop_points": 100 * (0.95 - a),
           "latency_s": 1 / s, "images_per_s": s, "speedup": s}
          for f, k, a, s in [(0.0, 8, 0.95, 1.0), (0.5, 4, 0.93, 2.0),
                             (0.75, 2, 0.80, 4.0)]]
  assert module_dropping.best_speedup(rows)["speedup"] == 2.0
  assert module_dropping.best_speedup(rows, max_drop_points=1.0)[
      "speedup"] == 1.0
  path = module_dropping.write_csv(rows, str(tmp_path / "d.csv"))
  assert open(path).read().splitlines()[0].startswith("ranking,")
