"""Cross-model statistics against scipy, scikit-learn and hand cases."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from crl.evaluators import population as pop


@pytest.fixture
def accs():
  rng = np.random.default_rng(0)
  id_acc = rng.uniform(0.4, 0.99, 25)
  ood_acc = np.clip(id_acc - rng.uniform(0.05, 0.3, 25), 0, 1)
  ood_acc[3] = 0.0  # exercises the probit clip
  id_acc[7] = 1.0
  return id_acc, ood_acc


def test_accuracy_correlation_matches_scipy(accs):
  id_acc, ood_acc = accs
  out = pop.accuracy_correlation(id_acc, ood_acc)
  eps = pop.PROBIT_EPS
  pid = stats.norm.ppf(np.clip(id_acc, eps, 1 - eps))
  pood = stats.norm.ppf(np.clip(ood_acc, eps, 1 - eps))
  assert np.all(np.isfinite(pid)) and np.all(np.isfinite(pood))
  assert out["pearson"] == pytest.approx(stats.pearsonr(id_acc, ood_acc)[0])
  assert out["kendall"] == pytest.approx(stats.kendalltau(id_acc, ood_acc)[0])
  assert out["pearson_probit"] == pytest.approx(stats.pearsonr(pid, pood)[0])
  assert out["kendall_probit"] == pytest.approx(
      stats.kendalltau(pid, pood)[0])
  assert out["pearson_probit"] != pytest.approx(out["pearson"])
  assert all(isinstance(v, float) for v in out.values())


def test_kendall_hand_case_with_ties():
  x, y = [1, 2, 3, 4], [1, 2, 2, 1.5]
  # Pairs (i<j): (0,1) C, (0,2) C, (0,3) C, (1,2) tied in y, (1,3) D, (2,3) D.
  # tau-b = (C - D) / sqrt((n0 - x ties)(n0 - y ties)) with n0 = 6 pairs.
  expected = (3 - 2) / math.sqrt(6 * 5)
  assert pop.kendall(x, y) == pytest.approx(expected)
  assert pop.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
  assert pop.kendall([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_constant_input_is_nan_and_too_few_models_raise():
  assert math.isnan(pop.pearson([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
  assert math.isnan(pop.kendall([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]))
  with pytest.raises(ValueError, match="at least 2 models"):
    pop.accuracy_correlation([0.5], [0.4])
  with pytest.raises(ValueError, match="one value per model"):
    pop.ece_correlation([0.1, 0.2], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match="not percent"):
    pop.accuracy_correlation([50.0, 60.0], [0.4, 0.5])


def test_ece_correlation_matches_scipy():
  rng = np.random.default_rng(1)
  a, b = rng.uniform(0, 0.2, 10), rng.uniform(0, 0.2, 10)
  out = pop.ece_correlation(a, b)
  assert out["pearson"] == pytest.approx(stats.pearsonr(a, b)[0])
  assert out["kendall"] == pytest.approx(stats.kendalltau(a, b)[0])


def test_probit_fit_matches_linregress(accs):
  id_acc, ood_acc = accs
  fit = pop.linear_fit(id_acc, ood_acc)
  ref = stats.linregress(pop.probit(id_acc), pop.probit(ood_acc))
  assert fit.slope == pytest.approx(ref.slope)
  assert fit.intercept == pytest.approx(ref.intercept)
  raw = pop.linear_fit(id_acc, ood_acc, probit_scale=False)
  ref = stats.linregress(id_acc, ood_acc)
  assert (raw.slope, raw.intercept) == pytest.approx(
      (ref.slope, ref.intercept))
  with pytest.raises(ValueError, match="same ID accuracy"):
    pop.linear_fit([0.5, 0.5], [0.1, 0.3])


def test_effective_robustness_on_a_line_is_zero():
  id_acc = np.array([0.3, 0.5, 0.7, 0.8, 0.9])
  ood_acc = stats.norm.cdf(0.8 * stats.norm.ppf(id_acc) - 0.4)
  er = pop.effective_robustness(id_acc, ood_acc)
  np.testing.assert_allclose(er, 0.0, atol=1e-12)
  fit = pop.linear_fit(id_acc, ood_acc)
  assert (fit.slope, fit.intercept) == pytest.approx((0.8, -0.4))
  # A new model 0.05 above the reference line at ID 0.6.
  on_line = stats.norm.cdf(0.8 * stats.norm.ppf(0.6) - 0.4)
  er_new = pop.effective_robustness([0.6], [on_line + 0.05], fit=fit)
  assert er_new == pytest.approx([0.05])
  # Without a reference fit: the population's own probit-space regression.
  x, y = np.r_[id_acc, 0.6], np.r_[ood_acc, on_line + 0.05]
  ref = stats.linregress(stats.norm.ppf(x), stats.norm.ppf(y))
  expected = y - stats.norm.cdf(ref.slope * stats.norm.ppf(x) + ref.intercept)
  np.testing.assert_allclose(pop.effective_robustness(x, y), expected)
  assert expected[-1] > 0 and np.all(expected[:-1] < 0)


def test_mce_hand_computed_two_models_two_corruptions():
  acc = {
      "base": {"noise": [0.8, 0.6], "blur": [0.9, 0.5]},
      "model": {"noise": [0.9, 0.8], "blur": [0.8, 0.5]},
  }
  clean = {"base": 0.95, "model": 0.9}
  out = pop.population_corruption_errors(acc, "base", clean_accuracy=clean)
  # Errors: base noise .2+.4=.6, blur .1+.5=.6; model noise .1+.2=.3,
  # blur .2+.5=.7.
  assert out["model"]["ce"] == pytest.approx({"noise": 0.5, "blur": 7 / 6})
  assert out["model"]["mce"] == pytest.approx((0.5 + 7 / 6) / 2)
  assert out["base"]["mce"] == pytest.approx(1.0)
  # Relative: model noise (.1-.1)+(.2-.1)=.1, blur .1+.4=.5; base noise
  # (.2-.05)+(.4-.05)=.5, blur .05+.45=.5.
  assert out["model"]["relative_ce"] == pytest.approx(
      {"noise": 0.2, "blur": 1.0})
  assert out["model"]["relative_mce"] == pytest.approx(0.6)
  assert pop.mean_corruption_accuracy(acc["model"]) == pytest.approx(0.75)
  assert pop.accuracy_by_severity(acc["model"]) == pytest.approx([0.85, 0.65])


def test_corruption_errors_edge_cases():
  base = {"a": [1.0, 1.0], "b": [0.5, 0.5]}
  out = pop.corruption_errors({"a": [0.9, 0.9], "b": [0.5, 0.5]}, base)
  assert math.isnan(out["ce"]["a"]) and out["ce"]["b"] == pytest.approx(1.0)
  assert math.isnan(out["mce"])  # Documented: a baseline with no errors.
  with pytest.raises(ValueError, match="Unknown baseline model 'alexnet'"):
    pop.population_corruption_errors({"m": base}, "alexnet")
  with pytest.raises(ValueError, match="same corruptions"):
    pop.corruption_errors({"a": [0.5, 0.5]}, base)
  with pytest.raises(ValueError, match="number of severities"):
    pop.mean_corruption_accuracy({"a": [0.5, 0.5], "b": [0.5]})
  with pytest.raises(ValueError, match="both clean_accuracy"):
    pop.corruption_errors(base, base, clean_accuracy=0.9)


def test_agreement_matches_sklearn():
  rng = np.random.default_rng(2)
  la, lb = rng.normal(size=(100, 4)), rng.normal(size=(100, 4))
  mask = rng.random(100) > 0.3
  pa, pb = la.argmax(-1), lb.argmax(-1)
  assert pop.agreement(la, lb) == pytest.approx(skm.accuracy_score(pa, pb))
  assert pop.agreement(la, pb, mask) == pytest.approx(
      skm.accuracy_score(pa[mask], pb[mask]))
  table = pop.pairwise_agreement({"a": la, "b": lb, "c": pa})
  assert table["a"]["a"] == 1.0 and table["a"]["c"] == 1.0
  assert table["a"]["b"] == table["b"]["a"] == pop.agreement(la, lb)
  with pytest.raises(ValueError, match="same examples"):
    pop.agreement(pa, pb[:50])
