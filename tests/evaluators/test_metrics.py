"""Metrics against scikit-learn and hand-computed cases."""

import numpy as np
import pytest
from sklearn import metrics as skm

from crl.evaluators import metrics


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(500, 7)) * 2
  labels = rng.integers(0, 7, size=500)
  mask = rng.random(500) > 0.2
  return logits, labels, mask


def test_accuracy_matches_sklearn(data):
  logits, labels, mask = data
  probs = metrics.softmax(logits)
  assert metrics.accuracy(logits, labels, mask) == pytest.approx(
      skm.accuracy_score(labels[mask], logits[mask].argmax(-1)))
  assert metrics.accuracy(logits, labels, mask, top_k=3) == pytest.approx(
      skm.top_k_accuracy_score(labels[mask], probs[mask], k=3,
                               labels=np.arange(7)))


def test_nll_matches_sklearn_log_loss(data):
  logits, labels, mask = data
  ref = skm.log_loss(labels[mask], metrics.softmax(logits[mask]),
                     labels=np.arange(7))
  assert metrics.nll(logits, labels, mask) == pytest.approx(ref, rel=1e-9)


def test_brier_matches_sklearn_multiclass(data):
  logits, labels, mask = data
  p = metrics.softmax(logits[mask])
  # scikit-learn's multiclass brier_score_loss is the same sum over classes.
  ref = np.mean(np.sum((p - np.eye(7)[labels[mask]]) ** 2, -1))
  assert metrics.brier(logits, labels, mask) == pytest.approx(ref)
  binary_logits = np.stack([np.zeros(100), np.linspace(-3, 3, 100)], -1)
  y = (np.arange(100) % 3 == 0).astype(int)
  p1 = metrics.softmax(binary_logits)[:, 1]
  # Two-class Brier over both columns is twice the binary one.
  assert metrics.brier(binary_logits, y) == pytest.approx(
      2 * skm.brier_score_loss(y, p1))


def test_ece_hand_computed():
  # Confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct), 1.0 (correct).
  probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [1.0, 0.0]])
  logits = np.log(np.maximum(probs, 1e-300))
  labels = np.array([0, 1, 1, 0])
  # 10 bins: bin (0.8,0.9] holds two (acc .5, conf .9); (0.5,0.6] one (acc 1,
  # conf .6); 1.0 in the last bin (acc 1, conf 1).
  expected = 2 / 4 * 0.4 + 1 / 4 * 0.4 + 1 / 4 * 0.0
  assert metrics.ece(logits, labels, num_bins=10) == pytest.approx(expected)
  r = metrics.reliability(logits, labels, num_bins=10)
  assert r["count"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 2, 1]


def test_auroc_matches_sklearn_with_ties():
  rng = np.random.default_rng(1)
  scores = np.round(rng.normal(size=300), 1)  # many ties
  pos = rng.random(300) > 0.4
  assert metrics.auroc(scores, pos) == pytest.approx(
      skm.roc_auc_score(pos, scores))


def test_classification_metrics_keys(data):
  logits, labels, mask = data
  row = metrics.classification_metrics(logits, labels, mask)
  assert set(row) == {"accuracy", "nll", "brier", "ece", "num_examples",
                      "top5_accuracy"}
  assert row["num_examples"] == mask.sum()


def test_top5_accuracy_matches_sklearn():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(400, 12))
  labels = rng.integers(0, 12, size=400)
  ref = skm.top_k_accuracy_score(labels, metrics.softmax(logits), k=5,
                                 labels=np.arange(12))
  assert metrics.accuracy(logits, labels, top_k=5) == pytest.approx(ref)
  assert metrics.classification_metrics(logits, labels)[
      "top5_accuracy"] == pytest.approx(ref)
  assert metrics.accuracy(logits, labels, top_k=12) == 1.0


def test_accepts_jax_arrays(data):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  logits, labels, mask = data
  got = metrics.classification_metrics(jnp.asarray(logits, jnp.float32),
                                       jnp.asarray(labels), jnp.asarray(mask))
  want = metrics.classification_metrics(logits.astype(np.float32), labels,
                                        mask)
  for k in want:
    assert got[k] == pytest.approx(want[k], rel=1e-6)
    assert isinstance(got[k], (float, int))


def _ece_loop(probs, labels, num_bins):
  """Reference: explicit (lo, hi] bins computed as b / num_bins."""
  conf, pred = probs.max(-1), probs.argmax(-1)
  total = 0.0
  for b in range(num_bins):
    lo, hi = b / num_bins, (b + 1) / num_bins
    inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
    if inside.any():
      total += inside.mean() * abs(np.mean(pred[inside] == labels[inside]) -
                                   conf[inside].mean())
  return total


@pytest.mark.parametrize("num_bins", [1, 10, 15, 20])
def test_ece_matches_loop_reference_for_any_bins(data, num_bins):
  logits, labels, mask = data
  ref = _ece_loop(metrics.softmax(logits[mask]), labels[mask], num_bins)
  assert metrics.ece(logits, labels, mask, num_bins) == pytest.approx(ref)
  r = metrics.reliability(logits, labels, mask, num_bins)
  assert r["count"].sum() == mask.sum()
  assert len(r["edges"]) == num_bins + 1 and len(r["accuracy"]) == num_bins


def test_ece_hand_case_bins_change_the_value():
  # Confidences .55 (correct), .65 (wrong), .95 (correct), .95 (correct).
  probs = np.array([[.55, .45], [.65, .35], [.05, .95], [.95, .05]])
  logits = np.log(probs)
  labels = np.array([0, 1, 1, 0])
  # 2 bins: (0, .5] empty; (.5, 1] all four: acc .75, conf .775.
  assert metrics.ece(logits, labels, num_bins=2) == pytest.approx(0.025)
  # 10 bins: (.5,.6] 1 correct at .55, (.6,.7] 1 wrong at .65, (.9,1] two
  # correct at .95 -> (.45 + .65 + 2 * .05) / 4.
  assert metrics.ece(logits, labels, num_bins=10) == pytest.approx(0.3)
  r = metrics.reliability(logits, labels, num_bins=10)
  np.testing.assert_allclose(r["accuracy"][[5, 6, 9]], [1, 0, 1])
  np.testing.assert_allclose(r["confidence"][[5, 6, 9]], [.55, .65, .95])
  assert r["count"][[0, 1, 2, 3, 4, 7, 8]].sum() == 0


def test_masked_class_logits_are_allowed():
  logits = np.array([[2.0, -np.inf, 0.0], [0.0, -np.inf, 1.0]])
  labels = np.array([0, 2])
  assert metrics.accuracy(logits, labels) == 1.0
  assert np.isfinite(metrics.nll(logits, labels))
  assert np.isfinite(metrics.brier(logits, labels))


@pytest.mark.parametrize("logits,labels,mask,match", [
    (np.zeros((3, 2)), np.zeros(4, int), None, "labels must be"),
    (np.zeros(3), np.zeros(3, int), None, "examples, classes"),
    (np.zeros((3, 2)), np.array([0, 1, 2]), None, r"\[0, 2\)"),
    (np.zeros((3, 2)), np.zeros(3, int), np.zeros(3), "No \\(unmasked\\)"),
    (np.zeros((3, 2)), np.zeros(3, int), np.ones(2), "mask has 2"),
    (np.full((3, 2), np.nan), np.zeros(3, int), None, "NaN"),
])
def test_bad_inputs_raise(logits, labels, mask, match):
  with pytest.raises(ValueError, match=match):
    metrics.classification_metrics(logits, labels, mask)


def test_bad_bins_and_top_k_raise(data):
  logits, labels, _ = data
  with pytest.raises(ValueError, match="num_bins"):
    metrics.ece(logits, labels, num_bins=0)
  with pytest.raises(ValueError, match="top_k"):
    metrics.accuracy(logits, labels, top_k=0)


def test_auroc_single_class_and_length_errors():
  with pytest.raises(ValueError, match="both positive and negative"):
    metrics.auroc(np.arange(4.0), np.ones(4))
  with pytest.raises(ValueError, match="same length"):
    metrics.auroc(np.arange(4.0), np.ones(3))
