"""Probes with a regularisation sweep and the feature-collapse statistics."""

import numpy as np
import pytest

from crl.evaluators import fairness as fm
from crl.evaluators import probes


def _data(n, seed):
  rng = np.random.default_rng(seed)
  s = rng.integers(0, 2, n)
  x = rng.normal(size=(n, 20))
  x[:, 0] += 1.5 * s  # one informative direction, 19 noise features
  return x, s


def test_probe_sweep_chooses_c_on_the_held_out_part_and_refits():
  x, s = _data(300, 0)
  xe, se = _data(2000, 1)
  out = probes.probe_sweep(x, s, xe, se, cs=(1e-4, 1.0), seed=3)
  held = out["holdout_accuracy"]
  assert set(held) == {"0.0001", "1"}
  # C = 1e-4 shrinks the probe to nearly nothing: still the sign of the
  # informative weight, the held-out accuracy decides between the two.
  assert out["C"] == max((1e-4, 1.0), key=lambda c: (held[f"{c:g}"], -c))
  # Reference: the same probe refitted on all fitting data with that C.
  assert out["accuracy"] == fm.probe_accuracy(x, s, xe, se, l2=out["C"])
  # Hand check of the held-out split: the probe fitted on the permuted
  # first 75% and scored on the rest.
  order = np.random.default_rng(3).permutation(300)
  held_idx, fit_idx = order[:75], order[75:]
  assert held["1"] == fm.probe_accuracy(x[fit_idx], s[fit_idx], x[held_idx],
                                        s[held_idx], l2=1.0)
  assert 0.7 < out["accuracy"] < 0.85  # Bayes: Phi(0.75) = .773
  with pytest.raises(ValueError, match="holdout"):
    probes.probe_sweep(x, s, xe, se, holdout=1.0)


def test_feature_spectrum_hand_cases():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(4000, 2))
  z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T
  two = np.concatenate([z, np.zeros((4000, 3))], axis=1)  # whitened 2-D
  out = probes.feature_spectrum(two)
  assert out["effective_rank"] == pytest.approx(2.0, abs=1e-6)
  assert out["rank_1pct"] == 2 and out["dims"] == 5
  assert out["total_variance"] == pytest.approx(2.0, rel=1e-6)
  one = np.outer(rng.normal(size=100), [1., 2., 0.])
  assert probes.feature_spectrum(one)["effective_rank"] == pytest.approx(1.)
  dead = probes.feature_spectrum(np.ones((10, 4)))
  assert dead["effective_rank"] == 0. and dead["total_variance"] == 0.
  with pytest.raises(ValueError, match="n >= 2"):
    probes.feature_spectrum(np.ones(5))
