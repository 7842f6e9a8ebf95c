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
