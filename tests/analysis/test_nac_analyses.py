"""Circuit analysis, module dropping and few-shot adaptation on a trained
tiny NAC (one short training shared by every test of this file)."""

import csv
import json
import os

import jax
import numpy as np
import pytest

from crl.analysis import circuits
from crl.analysis import few_shot
from crl.analysis import module_dropping
from crl.analysis import runs
from crl.checkpointing import CheckpointError
from crl.tasks import classification
from tests import helpers


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("nac_run"))
  config = helpers.tiny_config(**{
      "num_steps": 4, "evals.test.every_steps": 0,
      "final_eval.splits": "test", "data.eval_examples": 64,
      "tensorboard": False})
  classification.train_and_evaluate(config, workdir)
  return runs.load_run(workdir)


def test_load_run_restores_the_trained_params(run):
  assert run.step == 4
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


def test_dropping_curve_writes_csv_and_png(run, tmp_path):
  rows = module_dropping.dropping_curve(
      run, rankings=("degree", "random"), fractions=(0.0, 0.5), repeats=1,
      latency_batch=8)
  assert len(rows) == 4
  full = [r for r in rows if r["fraction_dropped"] == 0.0]
  assert all(r["speedup"] == 1.0 and r["accuracy_drop_points"] == 0.0
             for r in full)
  assert all(r["modules_kept"] == 4 for r in rows
             if r["fraction_dropped"] == 0.5)
  path = module_dropping.write_csv(rows, str(tmp_path / "d.csv"))
  with open(path) as f:
    assert len(list(csv.DictReader(f))) == 4
  png = module_dropping.plot_curve(rows, str(tmp_path / "d.png"))
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  best = module_dropping.best_speedup(rows, max_drop_points=1e9)
  assert best["speedup"] == max(r["speedup"] for r in rows)


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


def test_variation_of_identical_graphs_is_zero():
  g = np.tile((np.eye(4) > 0)[None], (5, 1, 1)).astype(np.float32)
  v = circuits.variation(g)
  assert v["mean_abs_deviation"] == 0.0 and v["mean_jaccard_distance"] == 0.0


def test_circuit_report_and_drawing(run, tmp_path):
  report = circuits.analyse(run, examples=16)
  assert set(report["across_interventions"]) >= {"test", "hue_independent"}
  assert 0.0 <= report["per_example"]["mean_jaccard_distance"] <= 1.0
  paths = circuits.write_report(report, str(tmp_path))
  with open(paths["json"]) as f:
    assert json.load(f)["averaged"]["num_modules"] == 8
  assert os.path.getsize(paths["png"]) > 1000


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
