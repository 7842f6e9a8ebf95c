"""Transfer-study analyses against scipy, statsmodels and hand cases."""

import numpy as np
import pytest
from scipy import stats

from crl.evaluators import population as pop
from crl.evaluators import transfer_analysis as ta


def _population(n=30, seed=0):
  rng = np.random.default_rng(seed)
  id_acc = rng.uniform(0.5, 0.95, n)
  ood_acc = np.clip(id_acc - 0.2 + 0.05 * rng.normal(size=n), 0.01, 0.99)
  return rng, id_acc, ood_acc


def test_correlations_match_scipy():
  rng, id_acc, ood_acc = _population()
  nll = rng.uniform(0.1, 2.0, id_acc.size)
  res = ta.proxy_correlations({"id_accuracy": id_acc, "nll": nll}, ood_acc,
                              n_boot=50)
  py, px = pop.probit(ood_acc), pop.probit(id_acc)
  assert res["id_accuracy"]["pearson"] == pytest.approx(
      stats.pearsonr(px, py).statistic)
  assert res["id_accuracy"]["spearman"] == pytest.approx(
      stats.spearmanr(id_acc, ood_acc).statistic)
  assert res["id_accuracy"]["kendall"] == pytest.approx(
      stats.kendalltau(id_acc, ood_acc).statistic)
  # NLL is not an accuracy: Pearson on the raw value vs probit(OOD).
  assert res["nll"]["probit"] == 0.0
  assert res["nll"]["pearson"] == pytest.approx(
      stats.pearsonr(nll, py).statistic)
  assert res["nll"]["spearman"] == pytest.approx(
      stats.spearmanr(nll, ood_acc).statistic)


def test_spearman_with_ties_matches_scipy():
  x = np.array([1.0, 2, 2, 3, 5, 5, 5])
  y = np.array([0.3, 0.1, 0.4, 0.4, 0.9, 0.2, 0.5])
  assert ta.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
  assert np.isnan(ta.spearman(np.ones(4), np.arange(4.0)))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
  _, id_acc, ood_acc = _population(n=40)
  a = ta.bootstrap_ci(pop.pearson, id_acc, ood_acc, n_boot=200, seed=3)
  b = ta.bootstrap_ci(pop.pearson, id_acc, ood_acc, n_boot=200, seed=3)
  c = ta.bootstrap_ci(pop.pearson, id_acc, ood_acc, n_boot=200, seed=4)
  assert a == b and a != c
  r = pop.pearson(id_acc, ood_acc)
  assert a[0] < r < a[1] and a[2] == 200
  # A perfectly monotone relation: every defined resample has rho = 1.
  x = np.arange(6.0)
  low, high, n_valid = ta.bootstrap_ci(ta.spearman, x, x ** 3, n_boot=100)
  assert low == high == pytest.approx(1.0) and 0 < n_valid <= 100


def test_bootstrap_matches_hand_resampling():
  x = np.array([0.1, 0.4, 0.2, 0.9, 0.5])
  y = np.array([0.2, 0.3, 0.1, 0.8, 0.7])
  idx = np.random.default_rng(7).integers(0, 5, size=(300, 5))
  vals = np.array([stats.pearsonr(x[i], y[i]).statistic
                   if np.ptp(x[i]) and np.ptp(y[i]) else np.nan for i in idx])
  vals = vals[np.isfinite(vals)]
  low, high, n_valid = ta.bootstrap_ci(pop.pearson, x, y, n_boot=300, seed=7,
                                       level=0.9)
  assert n_valid == vals.size
  np.testing.assert_allclose([low, high], np.quantile(vals, [0.05, 0.95]))


def test_proxy_analysis_by_pair_and_kind():
  rng, id_acc, ood_acc = _population(n=12)
  other = np.clip(ood_acc + 0.1 * rng.normal(size=12), 0.01, 0.99)
  res = ta.proxy_analysis(
      {"id_accuracy": id_acc},
      {"photo->sketch": ("domain", ood_acc), "photo->cartoon": ("domain", other),
       "gaussian_noise/3": ("corruption", other)}, n_boot=20)
  assert sorted(res["by_pair"]) == ["gaussian_noise/3", "photo->cartoon",
                                    "photo->sketch"]
  assert sorted(res["by_kind"]) == ["corruption", "domain"]
  mean_domain = (ood_acc + other) / 2
  assert res["by_kind"]["domain"]["id_accuracy"]["spearman"] == pytest.approx(
      stats.spearmanr(id_acc, mean_domain).statistic)
  with pytest.raises(ValueError, match="at least one OOD pair"):
    ta.proxy_analysis({"id_accuracy": id_acc}, {})


def test_ols_matches_statsmodels():
  sm = pytest.importorskip("statsmodels.api")
  rng = np.random.default_rng(1)
  n = 24
  factors = {"architecture": rng.choice(["nac", "resnet", "vit"], n).tolist(),
             "pretrained": rng.choice(["no", "yes"], n).tolist()}
  id_acc = rng.uniform(0.4, 0.95, n)
  ood_acc = np.clip(id_acc - 0.15 + 0.05 * rng.normal(size=n), 0.01, 0.99)
  res = ta.factor_effects(id_acc, ood_acc, factors,
                          reference={"architecture": "resnet"})
  assert res["references"] == {"architecture": "resnet", "pretrained": "no"}
  x, names, _ = ta.design_matrix(factors, {"architecture": "resnet"},
                                 {"probit_id_accuracy": pop.probit(id_acc)})
  assert names == ["intercept", "probit_id_accuracy", "architecture=nac",
                   "architecture=vit", "pretrained=yes"]
  fit = sm.OLS(pop.probit(ood_acc), x).fit()
  ci = fit.conf_int(0.05)
  er = res["effective_robustness"]
  for j, name in enumerate(names):
    assert er[name]["coef"] == pytest.approx(fit.params[j])
    assert er[name]["se"] == pytest.approx(fit.bse[j])
    assert [er[name]["low"], er[name]["high"]] == pytest.approx(list(ci[j]))
  assert er["_fit"]["r2"] == pytest.approx(fit.rsquared)
  assert "probit_id_accuracy" not in res["ood"]


def test_ols_hand_case():
  # y = 1 + 2 * [group b] exactly plus residuals +-1: coef known by hand.
  x, names, refs = ta.design_matrix({"g": ["a", "a", "b", "b"]})
  res = ta.ols(x, [0.0, 2.0, 2.0, 4.0], names)
  assert refs == {"g": "a"}
  assert res["intercept"]["coef"] == pytest.approx(1.0)
  assert res["g=b"]["coef"] == pytest.approx(2.0)
  # s^2 = RSS / dof = 4 / 2; var(g=b) = s^2 * (1/2 + 1/2) = 2.
  assert res["g=b"]["se"] == pytest.approx(np.sqrt(2.0))
  t = stats.t.ppf(0.975, 2)
  assert res["g=b"]["low"] == pytest.approx(2.0 - t * np.sqrt(2.0))


def test_bad_designs_raise_one_clear_error():
  with pytest.raises(ValueError, match="rank deficient"):
    x, names, _ = ta.design_matrix({"a": ["x", "y", "x", "y", "x"],
                                    "b": ["p", "q", "p", "q", "p"]})
    ta.ols(x, np.arange(5.0), names)
  with pytest.raises(ValueError, match="more members than columns"):
    x, names, _ = ta.design_matrix({"a": ["x", "y"]})
    ta.ols(x, [1.0, 2.0], names)
  with pytest.raises(ValueError, match="reference level 'z'"):
    ta.design_matrix({"a": ["x", "y"]}, {"a": "z"})
  res = ta.factor_effects([0.5, 0.6, 0.7, 0.8, 0.9], [0.4, 0.5, 0.5, 0.7, 0.7],
                          {"seed": ["0"] * 5, "aug": list("aabba")})
  assert res["constant"] == ["seed"] and "aug=b" in res["ood"]
  # 3 members, 3 columns with the ID covariate: that fit alone is an error.
  res = ta.factor_effects([0.5, 0.6, 0.8], [0.4, 0.5, 0.7],
                          {"aug": list("aab")})
  assert "aug=b" in res["ood"]
  assert "more members than columns" in res["effective_robustness"]["error"]


def test_plots_are_written(tmp_path):
  from crl.reports import transfer_plots  # pylint: disable=g-import-not-at-top
  rng, id_acc, ood_acc = _population(n=8)
  factors = {"architecture": ["vit", "resnet"] * 4,
             "strategy": ["full"] * 4 + ["head"] * 4}
  analysis = {
      "proxies": ta.proxy_analysis({"id_accuracy": id_acc},
                                   {"a": ("domain", ood_acc)}, n_boot=10),
      "factors": {"domain": ta.factor_effects(id_acc, ood_acc, factors)}}
  paths = transfer_plots.write_all(str(tmp_path), analysis, id_acc,
                                   {"domain": ood_acc}, factors)
  assert len(paths) == 4
  for p in paths:
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="at least one shift kind"):
    transfer_plots.proxy_heatmap({}, str(tmp_path / "x.png"))
  del rng


def test_best_proxies_counts_pairs_by_absolute_correlation():
  by_pair = {
      "a->x": {"id": {"spearman": 0.9}, "ece": {"spearman": -0.5}},
      "b->x": {"id": {"spearman": 0.2}, "ece": {"spearman": -0.7}},
      "a->c": {"id": {"spearman": 0.4}, "ece": {"spearman": float("nan")}},
      "b->c": {"id": {"spearman": float("nan")},
               "ece": {"spearman": float("nan")}},
  }
  kinds = {"a->x": "domain", "b->x": "domain", "a->c": "corruption",
           "b->c": "corruption"}
  out = ta.best_proxies(by_pair, kinds)
  assert out["domain"]["best_in"] == {"id": 1, "ece": 1}
  assert out["domain"]["mean"]["id"] == pytest.approx(0.55)
  assert out["domain"]["mean"]["ece"] == pytest.approx(-0.6)
  assert out["corruption"]["best_in"] == {"id": 1, "ece": 0}
  assert out["corruption"]["pairs"] == 2
  assert out["corruption"]["mean"]["id"] == pytest.approx(0.4)
