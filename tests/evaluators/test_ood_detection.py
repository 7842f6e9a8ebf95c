"""OOD-detection scores and metrics against scikit-learn and hand cases."""

import numpy as np
import pytest
from scipy import special
from scipy import stats
from sklearn import metrics as skm

from crl.evaluators import metrics
from crl.evaluators import ood_detection as od


def _sk_reference(id_s, ood_s):
  y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
  s = np.r_[id_s, ood_s]
  fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
  return {"auroc": skm.roc_auc_score(y, s),
          "aupr_in": skm.average_precision_score(y, s),
          "aupr_out": skm.average_precision_score(1 - y, -s),
          "fpr95": fpr[np.argmax(tpr >= 0.95)]}


def _sk_fpr95_ood_positive(id_s, ood_s):
  """OpenOOD v1.5's recipe (OOD positive, score negated), every ROC point."""
  is_ood = np.r_[np.zeros(len(id_s)), np.ones(len(ood_s))]
  fpr, tpr, _ = skm.roc_curve(is_ood, -np.r_[id_s, ood_s],
                              drop_intermediate=False)
  return fpr[np.argmax(tpr >= 0.95)]


def _ours(id_s, ood_s):
  return {name: fn(id_s, ood_s) for name, fn in od.METRICS.items()}


@pytest.mark.parametrize("seed,n_id,n_ood,decimals", [
    (0, 300, 200, None),  # continuous scores
    (1, 200, 300, 1),     # many ties, across ID and OOD
    (2, 40, 7, 0),        # heavy ties, unbalanced
    (3, 1, 5, None),      # a single ID example
    (4, 20, 20, 1),       # 95% of 20 is exactly 19 examples
])
def test_metrics_match_sklearn(seed, n_id, n_ood, decimals):
  rng = np.random.default_rng(seed)
  id_s = rng.normal(0.7, 1.0, n_id)
  ood_s = rng.normal(0.0, 1.0, n_ood)
  if decimals is not None:
    id_s, ood_s = np.round(id_s, decimals), np.round(ood_s, decimals)
  ours, ref = _ours(id_s, ood_s), _sk_reference(id_s, ood_s)
  for k in ref:
    assert ours[k] == pytest.approx(ref[k], abs=1e-12), k
    assert isinstance(ours[k], float)
  assert od.fpr_at_95_tpr(id_s, ood_s, "ood_positive") == pytest.approx(
      _sk_fpr95_ood_positive(id_s, ood_s), abs=1e-12)


def test_fpr95_hand_case_and_no_intermediate_dropping():
  # 20 ID scores 20..1: accepting 95% (19) needs threshold 2.
  id_s = np.arange(20.0, 0.0, -1.0)
  ood_s = np.array([0.5, 1.5, 2.0, 3.0, 25.0])
  # OOD accepted at score >= 2 (ties accepted): 2.0, 3.0, 25.0 -> 3 / 5.
  assert od.fpr_at_95_tpr(id_s, ood_s) == pytest.approx(0.6)
  assert od.fpr_at_tpr(id_s, ood_s, tpr=1.0) == pytest.approx(0.8)
  # The 95% ROC point lies on a straight segment: sklearn's default
  # drop_intermediate=True removes it (OpenOOD-style code then reports 7/7).
  id_s = np.r_[np.arange(100.0, 82.0, -1.0), 10.0, 9.0]
  ood_s = np.array([50.0, 49, 48, 47, 46, 10, 9])
  assert od.fpr_at_95_tpr(id_s, ood_s) == pytest.approx(6 / 7)
  y = np.r_[np.ones(20), np.zeros(7)]
  fpr, tpr, _ = skm.roc_curve(y, np.r_[id_s, ood_s])
  assert fpr[np.argmax(tpr >= 0.95)] == 1.0


def test_fpr95_conventions_hand_cases():
  # 20 ID scores 20..1, OOD [0.5, 1.5, 2, 3, 25].
  id_s = np.arange(20.0, 0.0, -1.0)
  ood_s = np.array([0.5, 1.5, 2.0, 3.0, 25.0])
  # ID positive: t = 2 accepts 19/20 ID; OOD >= 2: 2, 3, 25 -> 3/5.
  assert od.fpr_at_95_tpr(id_s, ood_s, "id_positive") == pytest.approx(0.6)
  # OpenOOD v1: k = floor(0.95 * 20) = 19, t = 19th largest ID = 2; OOD
  # strictly above 2: 3, 25 -> 2/5 (the tie at 2 is not counted).
  assert od.fpr_at_95_tpr(id_s, ood_s, "openood_v1") == pytest.approx(0.4)
  # OOD positive: flagging 95% of 5 OOD (all 5) needs score <= 25, which
  # flags all 20 ID -> 1.0; at 80% TPR (4 of 5: score <= 3) 3 of 20 ID.
  assert od.fpr_at_95_tpr(id_s, ood_s, "ood_positive") == pytest.approx(1.0)
  assert od.fpr_at_tpr(id_s, ood_s, 0.8, "ood_positive") == pytest.approx(
      3 / 20)
  # 30 ID 30..1: floor(28.5) = 28 ID (TPR 0.933 < 0.95) at t = 3 in OpenOOD
  # v1 -> OOD > 3: 3.5 only; ID positive needs 29 ID (t = 2) -> both OOD.
  id_s, ood_s = np.arange(30.0, 0.0, -1.0), np.array([2.5, 3.5])
  assert od.fpr_at_95_tpr(id_s, ood_s, "openood_v1") == pytest.approx(0.5)
  assert od.fpr_at_95_tpr(id_s, ood_s) == pytest.approx(1.0)
  for conv in od.FPR_CONVENTIONS:
    if conv != "openood_v1":
      y = np.r_[np.ones(30), np.zeros(2)] if conv == "id_positive" else (
          np.r_[np.zeros(30), np.ones(2)])
      sign = 1.0 if conv == "id_positive" else -1.0
      fpr, tpr, _ = skm.roc_curve(y, sign * np.r_[id_s, ood_s],
                                  drop_intermediate=False)
      assert od.fpr_at_95_tpr(id_s, ood_s, conv) == pytest.approx(
          fpr[np.argmax(tpr >= 0.95)]), conv
  with pytest.raises(ValueError, match="Unknown FPR convention 'strict'"):
    od.fpr_at_95_tpr(id_s, ood_s, "strict")


def test_perfect_and_reversed_separation():
  id_s, ood_s = np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0])
  assert _ours(id_s, ood_s) == {"auroc": 1.0, "aupr_in": 1.0,
                                "aupr_out": 1.0, "fpr95": 0.0}
  rev = _ours(ood_s, id_s)
  assert rev["auroc"] == 0.0 and rev["fpr95"] == 1.0
  # All scores tied: chance AUROC, everything accepted, AP = prevalence.
  tied = _ours(np.zeros(3), np.zeros(2))
  assert tied == pytest.approx({"auroc": 0.5, "aupr_in": 0.6,
                                "aupr_out": 0.4, "fpr95": 1.0})


def test_scores_match_formulas():
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(50, 6)) * 3
  p = metrics.softmax(logits)
  np.testing.assert_allclose(od.msp_score(logits), p.max(-1))
  np.testing.assert_allclose(od.max_logit_score(logits), logits.max(-1))
  np.testing.assert_allclose(od.energy_score(logits),
                             special.logsumexp(logits, axis=-1))
  np.testing.assert_allclose(od.energy_score(logits, temperature=2.0),
                             2.0 * special.logsumexp(logits / 2.0, axis=-1))
  np.testing.assert_allclose(od.entropy_score(logits),
                             -stats.entropy(p, axis=-1))
  # Masked classes contribute nothing.
  masked = np.c_[logits, np.full(50, -np.inf)]
  for name in od.SCORE_NAMES:
    np.testing.assert_allclose(od.score(name, masked), od.score(name, logits))


def test_detection_metrics_orientation_and_keys():
  rng = np.random.default_rng(6)
  labels = rng.integers(0, 5, 200)
  id_logits = rng.normal(size=(200, 5)) + 4 * np.eye(5)[labels]  # confident
  ood_logits = rng.normal(size=(150, 5))                          # flat
  out = od.detection_metrics(id_logits, ood_logits)
  assert set(out) == {f"{m}_{s}" for m in od.METRIC_NAMES
                      for s in od.SCORE_NAMES}
  for s in od.SCORE_NAMES:
    assert out[f"auroc_{s}"] > 0.8, s  # Higher score = more ID.
    assert out[f"fpr95_{s}"] < 0.8, s
  assert out["auroc_msp"] == pytest.approx(skm.roc_auc_score(
      np.r_[np.ones(200), np.zeros(150)],
      np.r_[od.msp_score(id_logits), od.msp_score(ood_logits)]))
  only = od.detection_metrics(id_logits, ood_logits, scores=("energy",))
  assert set(only) == {f"{m}_energy" for m in od.METRIC_NAMES}


def test_edge_cases_raise():
  with pytest.raises(ValueError, match="ood_scores is empty"):
    od.auroc(np.ones(3), np.array([]))
  with pytest.raises(ValueError, match="id_scores is empty"):
    od.fpr_at_95_tpr(np.array([]), np.ones(3))
  with pytest.raises(ValueError, match="NaN"):
    od.aupr_in(np.array([1.0, np.nan]), np.ones(3))
  with pytest.raises(ValueError, match="1-D"):
    od.aupr_out(np.ones((2, 2)), np.ones(3))
  with pytest.raises(ValueError, match="Unknown OOD score 'odin'"):
    od.score("odin", np.zeros((2, 3)))
  with pytest.raises(ValueError, match="classes"):
    od.detection_metrics(np.zeros((2, 3)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match="tpr"):
    od.fpr_at_tpr(np.ones(2), np.ones(2), tpr=0.0)
