"""Fairness metrics against Fairlearn and scikit-learn; the evaluator; the
group-threshold baseline against brute force."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import runtime
from crl.data.fair_tabular import FairTabular
from crl.data.pipeline import InputPipeline
from crl.evaluators import fairness as fm
from crl.evaluators import metrics as metrics_lib

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
sk_metrics = pytest.importorskip("sklearn.metrics")


def _data(seed, n=300, groups=2, ties=False):
  rng = np.random.default_rng(seed)
  s = rng.integers(0, groups, n)
  y = (rng.random(n) < 0.3 + 0.4 * (s == 1)).astype(int)
  margin = rng.normal(size=n) + 0.8 * y - 0.3 * s
  if ties:
    margin = np.round(margin, 1)
  return margin, y, s


@pytest.mark.parametrize("seed,groups,ties", [(0, 2, False), (1, 2, True),
                                              (2, 3, False), (3, 4, True)])
def test_metrics_match_fairlearn_and_sklearn(seed, groups, ties):
  margin, y, s = _data(seed, groups=groups, ties=ties)
  pred = (margin > 0).astype(int)
  kw = dict(sensitive_features=s)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    assert fm.demographic_parity_difference(pred, s) == pytest.approx(
        fairlearn_metrics.demographic_parity_difference(y, pred, **kw))
    assert fm.demographic_parity_ratio(pred, s) == pytest.approx(
        fairlearn_metrics.demographic_parity_ratio(y, pred, **kw))
    for agg in ("worst_case", "mean"):
      assert fm.equalized_odds_difference(y, pred, s, agg) == pytest.approx(
          fairlearn_metrics.equalized_odds_difference(y, pred, agg=agg, **kw))
    frame = fairlearn_metrics.MetricFrame(
        metrics={"sel": fairlearn_metrics.selection_rate,
                 "tpr": fairlearn_metrics.true_positive_rate,
                 "fpr": fairlearn_metrics.false_positive_rate},
        y_true=y, y_pred=pred, sensitive_features=s)
  by_group = frame.by_group
  rates = fm.selection_rates(pred, s)
  tpr, fpr = fm.true_and_false_positive_rates(y, pred, s)
  for g in range(groups):
    assert rates[g] == pytest.approx(by_group.loc[g, "sel"])
    assert tpr[g] == pytest.approx(by_group.loc[g, "tpr"])
    assert fpr[g] == pytest.approx(by_group.loc[g, "fpr"])
  score = 1. / (1. + np.exp(-margin))
  assert metrics_lib.average_precision(score, y) == pytest.approx(
      sk_metrics.average_precision_score(y, score), abs=1e-12)
  assert fm.accuracy(y, pred) == pytest.approx(
      sk_metrics.accuracy_score(y, pred))
  row = fm.fairness_metrics(margin, y, s)
  assert row["num_groups"] == groups
  assert row["dp_difference"] == pytest.approx(
      fm.demographic_parity_difference(pred, s))


_DISPARITY = (
    # (ours, Fairlearn's, takes y_true, has agg)
    ("demographic_parity_difference", False, False),
    ("demographic_parity_ratio", False, False),
    ("equal_opportunity_difference", True, False),
    ("equal_opportunity_ratio", True, False),
    ("equalized_odds_difference", True, True),
    ("equalized_odds_ratio", True, True),
)


def _disparity_cases():
  cases = []
  for seed, groups in ((0, 2), (2, 3), (3, 4)):
    margin, y, s = _data(seed, groups=groups)
    cases.append((y, (margin > 0).astype(int), s))
  # Hand-built edge cases: a group without positives (TPR 0), a group
  # without negatives (FPR 0), all-zero predictions (0/0 ratios), a group
  # whose rate is 0 while the overall rate is not.
  y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
  s = np.array([0, 0, 0, 1, 1, 1, 2, 2])
  cases.append((y, np.array([1, 0, 0, 1, 1, 0, 1, 0]), s))
  cases.append((y, np.zeros(8, int), s))
  cases.append((y, np.array([0, 0, 0, 1, 0, 1, 0, 0]), s))
  cases.append((y, y.copy(), s))
  return cases


@pytest.mark.parametrize("case", range(7))
def test_disparity_metrics_match_fairlearn(case):
  y, pred, s = _disparity_cases()[case]
  checked = 0
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name, takes_y, has_agg in _DISPARITY:
      ours, ref = getattr(fm, name), getattr(fairlearn_metrics, name)
      for method in ("between_groups", "to_overall"):
        for agg in (("worst_case", "mean") if has_agg else (None,)):
          kw = {"method": method} | ({"agg": agg} if agg else {})
          want = ref(y, pred, sensitive_features=s, **kw)
          got = (ours(y, pred, s, **kw) if takes_y else ours(pred, s, **kw))
          assert isinstance(got, float)
          if np.isnan(want):
            assert np.isnan(got), (name, kw)
          else:
            assert got == pytest.approx(want, abs=1e-12), (name, kw)
          checked += 1
  assert checked == 16


def test_disparity_hand_case():
  # Groups 0: y 0,0,0 pred 1,0,0; 1: y 1,0,1 pred 1,1,0; 2: y 1,1 pred 1,0.
  y, pred, s = _disparity_cases()[3]
  # TPR: g0 0 (no positives), g1 1/2, g2 1/2; overall 2/4.
  assert fm.equal_opportunity_difference(y, pred, s) == pytest.approx(0.5)
  assert fm.equal_opportunity_ratio(y, pred, s) == 0.0
  assert fm.equal_opportunity_difference(
      y, pred, s, method="to_overall") == pytest.approx(0.5)
  # FPR: g0 1/3, g1 1/1, g2 0 (no negatives); overall 2/4.
  assert fm.equalized_odds_difference(y, pred, s) == pytest.approx(1.0)
  assert fm.equalized_odds_difference(y, pred, s,
                                      agg="mean") == pytest.approx(0.75)
  # to_overall ratios: TPR min(0/.5, 1, 1) = 0; FPR min(2/3, .5, 0) = 0.
  assert fm.equalized_odds_ratio(y, pred, s, method="to_overall") == 0.0
  with pytest.raises(ValueError, match="method must be one of"):
    fm.demographic_parity_ratio(pred, s, method="overall")
  with pytest.raises(ValueError, match="agg must be one of"):
    fm.equalized_odds_ratio(y, pred, s, agg="max")


def test_signed_ddp_by_hand_and_edge_cases():
  pred = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 1])
  s = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
  # P(yhat=1|s=1) = 2/6, P(yhat=1|s=0) = 2/4.
  assert fm.signed_ddp(pred, s) == pytest.approx(2 / 6 - 2 / 4)
  assert fm.signed_ddp(pred, s, positive_group=0,
                       reference_group=1) == pytest.approx(2 / 4 - 2 / 6)
  row = fm.fairness_metrics(np.where(pred, 1., -1.), pred, s)
  assert row["ddp"] == pytest.approx(-1 / 6)
  assert row["abs_ddp"] == pytest.approx(1 / 6)
  assert row["accuracy"] == 1.0 and row["eo_difference"] == 0.0
  # A group without positives: TPR 0, as in Fairlearn.
  y = np.array([0, 0, 0, 1, 0, 1])
  p = np.array([1, 0, 0, 1, 1, 0])
  g = np.array([0, 0, 0, 1, 1, 1])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    want = fairlearn_metrics.equalized_odds_difference(y, p,
                                                       sensitive_features=g)
    assert np.isnan(fairlearn_metrics.demographic_parity_ratio(
        y, 0 * p, sensitive_features=g))
  assert fm.equalized_odds_difference(y, p, g) == pytest.approx(want)
  assert np.isnan(fm.demographic_parity_ratio(0 * p, g))
  assert np.isnan(metrics_lib.average_precision(np.arange(6.), 0 * y))
  with pytest.raises(ValueError, match="no examples"):
    fm.signed_ddp(p, 0 * g)
  with pytest.raises(ValueError, match="0/1"):
    fm.selection_rates(p + 1, g)
  with pytest.raises(ValueError, match="same length"):
    fm.accuracy(y, p[:3])


def test_probe_accuracy_reads_a_linearly_encoded_attribute():
  rng = np.random.default_rng(0)
  s = rng.integers(0, 3, 600)
  centres = rng.normal(size=(3, 5)) * 3.
  x = centres[s] + rng.normal(size=(600, 5)) * 0.5
  assert fm.probe_accuracy(x[:300], s[:300], x[300:], s[300:]) > 0.95
  noise = rng.normal(size=(600, 5))
  assert fm.probe_accuracy(noise[:300], s[:300], noise[300:], s[300:]) < 0.5
  assert fm.majority_rate(np.array([0, 0, 1])) == pytest.approx(2 / 3)


def test_group_threshold_search_matches_brute_force():
  margin, y, s = _data(5, n=120, ties=True)
  for eps in (0.0, 0.05, 0.2, 1.0):
    found = fm.group_threshold_search(margin, y, s, eps)
    best = -1.
    cands = [np.r_[np.unique(margin[s == g])[0] - 1., np.unique(margin[s == g])]
             for g in (0, 1)]
    for t0 in cands[0]:
      for t1 in cands[1]:
        pred = np.where(s == 0, margin > t0, margin > t1).astype(int)
        if abs(fm.signed_ddp(pred, s)) <= eps + 1e-12:
          best = max(best, fm.accuracy(y, pred))
    assert found["accuracy"] == pytest.approx(best)
    shifted = fm.apply_group_thresholds(margin, s, found["thresholds"])
    row = fm.fairness_metrics(shifted, y, s)
    assert row["accuracy"] == pytest.approx(found["accuracy"])
    assert row["abs_ddp"] <= eps + 1e-12
    assert row["ddp"] == pytest.approx(found["ddp"])


def test_evaluator_runs_a_model_over_the_splits():
  ds = FairTabular(eval_examples=90)
  pipe = InputPipeline(ds, runtime.make_mesh(), 32, 40)
  w = jnp.zeros((ds.num_features, 2)).at[:6, 1].set(1.)  # reads u

  def predict(params, batch):
    return batch["features"] @ params

  def features(params, batch):
    return batch["features"][:, :16]

  ev = fm.FairnessEvaluator(pipeline=pipe, predict_fn=jax.jit(predict),
                            num_classes=2, splits="all",
                            features_fn=jax.jit(features))
  results = ev.run(w)
  assert set(results) == {"validation", "test"}
  assert "probe_accuracy" in results["test"]
  assert "probe_accuracy" not in results["validation"]
  test = ds.sample("test", np.arange(90))
  x, y, s = (np.asarray(test[k]) for k in ("features", "label", "group"))
  want = fm.fairness_metrics(x[:, :6].sum(1), y, s)
  for key, value in want.items():
    assert results["test"][key] == pytest.approx(value, rel=1e-5), key
  assert results["test"]["num_examples"] == 90
  conventions = ev.conventions()
  for row in results.values():
    for key in set(row) - {"num_examples", "num_groups"}:
      assert key.split("/")[0] + ("/<g>" if "/" in key else "") in (
          conventions), key
  assert results["test"]["accuracy"] > 0.7
  with pytest.raises(ValueError, match="binary target"):
    fm.FairnessEvaluator(pipeline=pipe, predict_fn=predict, num_classes=3)
  with pytest.raises(ValueError, match="Unknown eval split"):
    fm.FairnessEvaluator(pipeline=pipe, predict_fn=predict, num_classes=2,
                         splits=("train",))
