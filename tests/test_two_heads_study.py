"""The parity penalty, the fair trainer and the two-heads study end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import config_lib
from crl.trainers import classification
from crl.trainers import fairness
from crl.trainers import two_heads
from tests import helpers


def test_parity_penalty_values_and_gradients():
  scores = jnp.array([0.9, 0.7, 0.2, 0.4, 0.1])
  groups = jnp.array([1, 1, 0, 0, 0])
  one = jnp.zeros(5, jnp.int32)

  @jax.jit
  def values(x):  # one compilation for every value checked
    return {
        "gap": fairness.parity_gap(x, groups, 2),
        "squared": fairness.parity_penalty(x, groups, 2),
        "absolute": fairness.parity_penalty(x, groups, 2, "absolute"),
        # Multi-group: max minus min over the groups present (means 0.2,
        # 0.9, 0.4; group 3 absent), then means 0.9, 0.35.
        "three": fairness.parity_gap(x, jnp.array([1, 2, 0, 2, 2]), 4),
        "two_of_four": fairness.parity_gap(x, jnp.array([1, 2, 2, 2, 2]), 4),
        # One group in the batch: no penalty and no gradient.
        "one": fairness.parity_gap(x, one, 2),
        "grad_one": jax.grad(lambda v: fairness.parity_penalty(v, one, 2))(x),
        "grad": jax.grad(lambda v: fairness.parity_penalty(v, groups, 2))(x),
    }

  v = values(scores)
  gap = 0.8 - 0.7 / 3
  assert float(v["gap"]) == pytest.approx(gap)
  assert float(v["squared"]) == pytest.approx(gap ** 2)
  assert float(v["absolute"]) == pytest.approx(gap)
  assert float(v["three"]) == pytest.approx(0.7)
  assert float(v["two_of_four"]) == pytest.approx(0.9 - 1.4 / 4)
  assert float(v["one"]) == 0.
  np.testing.assert_array_equal(v["grad_one"], 0.)
  np.testing.assert_allclose(v["grad"], 2 * gap * np.array(
      [0.5, 0.5, -1 / 3, -1 / 3, -1 / 3]), rtol=1e-5)
  with pytest.raises(ValueError, match="penalty"):
    fairness.parity_penalty(scores, groups, 2, "cubic")


def _tiny(**overrides):
  return helpers.load_with("configs/two_heads.py:tiny", overrides)


def test_fair_task_objective_is_ce_plus_lambda_penalty():
  config = _tiny(**{"fairness.penalty_weight": 3.0, "trainer":
                    "fair_classification"})
  task = fairness.FairClassificationTask(config)
  logits = jnp.array([[0., 1.], [1., 0.], [0., 2.], [0., -1.]])
  batch = {"label": jnp.array([1, 0, 1, 1]), "group": jnp.array([0, 0, 1, 1])}
  loss, metrics = task.objective(logits, {}, batch)
  ce = classification.cross_entropy(logits, batch["label"], 2, 0.).mean()
  p = jax.nn.sigmoid(logits[:, 1] - logits[:, 0])
  gap = abs(float((p[2] + p[3]) / 2 - (p[0] + p[1]) / 2))
  assert float(metrics["parity_gap"]) == pytest.approx(gap, rel=1e-5)
  assert float(loss) == pytest.approx(float(ce) + 3.0 * gap ** 2, rel=1e-5)
  with pytest.raises(config_lib.ConfigError, match="protected attribute"):
    fairness.FairClassificationTask(_tiny(**{"data": config_lib
                                             .component_config(
                                                 fairness.registry.DATASETS,
                                                 "causal_shapes")}))


def test_study_end_to_end_and_resume(tmp_path):
  config = _tiny()
  workdir = str(tmp_path / "study")
  # Stopped (as if preempted) at the end of the first training: the study
  # stops there with a checkpoint ...
  out = two_heads.train_and_evaluate(config, workdir,
                                     stop_at=config.num_steps)
  assert out["preempted"] and out["workdir"].endswith("lambda_0")
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert not os.path.exists(os.path.join(workdir, "lambda_20"))
  # ... and the same command resumes it (lambda_0 from its checkpoint).
  out = two_heads.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  for name in ("lambda_0", "lambda_20", "two_heads"):
    assert os.path.exists(os.path.join(workdir, name, "results.json")), name
  for name in ("probe_vs_ddp.png", "frontier.png"):
    with open(os.path.join(workdir, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert saved["summary"] == json.loads(json.dumps(out["summary"]))
  sweep = saved["penalty_sweep"]
  assert [r["lambda"] for r in sweep] == [0.0, 20.0]
  for r in sweep:
    assert 0. <= r["probe_accuracy"] <= 1.
    assert r["test"]["abs_ddp"] == pytest.approx(abs(r["test"]["ddp"]))
  (heads,) = saved["two_heads"]
  assert heads["frontier"], "the loosest eps is always feasible"
  for point in heads["frontier"] + saved["group_thresholds"]:
    assert point["validation"]["abs_ddp"] <= point["eps"] + 1e-9
  check = heads["export_check"]
  assert check["max_abs_margin_difference"] < 1e-4
  assert check["decisions_agree"] > 0.99
  summary = saved["summary"]
  assert [row["lambda"] for row in summary["per_lambda"]] == [0.0, 20.0]
  assert isinstance(summary["probe_rises_with_lambda"], bool)
  assert {"penalty_lambda_0", "penalty_lambda_20",
          "two_heads_eps_1"} <= set(saved["results"])


@pytest.mark.parametrize("spec", ["fair.py", "fair.py:tiny", "fair.py:shapes",
                                  "fair.py:celeba", "two_heads.py",
                                  "two_heads.py:tiny", "two_heads.py:shapes",
                                  "two_heads.py:weak_proxy",
                                  "two_heads.py:celeba"])
def test_config_variants_build(spec):
  config = config_lib.load_config(os.path.join(helpers.ROOT, "configs", spec))
  assert config.trainer == ("two_heads" if spec.startswith("two_heads")
                            else "fair_classification")
  fairness.check_fairness_config(config, classification.build_dataset(config))
  model = classification.build_model(config, 2)
  assert model.num_classes == 2
  if config.trainer == "two_heads":
    two_heads.check_study_config(config)
    heads = two_heads._sub_config(config, 0, 0., two_heads=True)  # pylint: disable=protected-access
    assert heads.model.name == "two_heads" and "study" not in heads
    classification.build_model(heads, 2)


def test_group_mse_is_the_official_mse_of_the_attribute_probability():
  # The public code: MSELoss()(sigmoid(z2), s) on one attribute logit.
  g = jnp.array([[0., 0.], [0., 2.], [1., -1.], [0.5, 0.]])
  s = jnp.array([1, 1, 0, 1])
  z2 = np.asarray(g[:, 1] - g[:, 0])
  want = np.mean((1 / (1 + np.exp(-z2)) - np.asarray(s)) ** 2)
  assert float(fairness.group_mse(g, s)) == pytest.approx(want, rel=1e-6)
  # Hand case: probability 0.5 for the true group -> 0.25 (not 0.5).
  assert float(fairness.group_mse(g[:1], s[:1])) == pytest.approx(0.25)
  config = _tiny(**{"fairness.group_loss": "mse", "model": config_lib
                    .component_config(fairness.registry.MODELS, "two_heads",
                                      backbone="mlp",
                                      backbone_kwargs={"hidden": (4,)})})
  task = fairness.TwoHeadsTask(config)
  logits = jnp.zeros((4, 2))
  batch = {"label": jnp.array([1, 0, 1, 1]), "group": s}
  loss, metrics = task.objective(logits, {"group_logits": g}, batch)
  assert float(metrics["group_loss"]) == pytest.approx(want, rel=1e-6)
  assert float(loss) == pytest.approx(0.5 * np.log(2) + 0.5 * want, rel=1e-5)


def test_celeba_study_selects_by_validation_ap_and_resumes(tmp_path):
  # configs/two_heads.py:celeba at toy size on mocked TFDS celeb_a records.
  tfds = pytest.importorskip("tensorflow_datasets")
  config = config_lib.load_config(
      os.path.join(helpers.ROOT, "configs/two_heads.py:celeba_tiny"))
  assert config.data.split_examples == 16 and config.num_steps == 4
  assert config.model.name == "cnn"
  workdir = str(tmp_path / "celeba")
  with tfds.testing.mock_data(num_examples=20,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    out = two_heads.train_and_evaluate(config, workdir, stop_at=2)
    assert out["preempted"] and out["workdir"].endswith("lambda_0")
    out = two_heads.train_and_evaluate(config, workdir)
    again = two_heads.train_and_evaluate(config, workdir)  # re-read only
  runs = out["penalty_sweep"] + out["two_heads"]
  assert [r["lambda"] for r in out["penalty_sweep"]] == [0.0]
  for run in runs:
    checks = run["selection_checks"]
    assert [c["step"] for c in checks] == [2, 4]
    best = max(checks, key=lambda c: c["validation_average_precision"])
    assert run["selected_step"] == best["step"]
    assert 0. <= run["probe_train"]["accuracy"] <= 1.
    assert run["probe_train"]["C"] in two_heads.probes.PROBE_CS
  with open(os.path.join(workdir, "lambda_0", "selection.json")) as f:
    assert len(json.load(f)["checks"]) == 2  # the rerun added none
  assert again["summary"] == out["summary"]


def test_interval_is_the_student_t_interval_of_the_mean():
  from crl.trainers import two_heads_summary  # pylint: disable=g-import-not-at-top
  out = two_heads_summary.interval([0.70, 0.72, 0.74])
  # sd 0.02, t(0.975, 2 dof) = 4.302653: half width 4.302653 * .02 / sqrt(3).
  assert out["mean"] == pytest.approx(0.72)
  assert out["half_width"] == pytest.approx(4.302653 * 0.02 / np.sqrt(3),
                                            rel=1e-5)
  assert out["low"] == pytest.approx(0.72 - out["half_width"])
  assert out["n"] == 3
  assert two_heads_summary.interval([0.5])["half_width"] == 0.
