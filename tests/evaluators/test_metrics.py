"""Metrics against scikit-learn, netcal and hand-computed cases."""

import fractions

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
  labels = np.array([0, 1, 1, 0])
  # 10 bins, left-closed: [0.9, 1] holds 0.9, 0.9 and 1.0 (acc 2/3, conf
  # 2.8/3); [0.6, 0.7) holds 0.6 (acc 1, conf .6).
  expected = 3 / 4 * abs(2 / 3 - 2.8 / 3) + 1 / 4 * 0.4
  assert metrics.ece(probs=probs, labels=labels, num_bins=10) == (
      pytest.approx(expected))
  r = metrics.reliability(probs=probs, labels=labels, num_bins=10)
  assert r["count"].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 3]


def test_auroc_matches_sklearn_with_ties():
  rng = np.random.default_rng(1)
  scores = np.round(rng.normal(size=300), 1)  # many ties
  pos = rng.random(300) > 0.4
  assert metrics.auroc(scores, pos) == pytest.approx(
      skm.roc_auc_score(pos, scores))


def test_average_precision_matches_sklearn_with_ties():
  rng = np.random.default_rng(3)
  scores = rng.integers(0, 5, 200).astype(np.float64)  # many ties
  positives = rng.random(200) < 0.3
  assert metrics.average_precision(scores, positives) == pytest.approx(
      skm.average_precision_score(positives, scores), abs=1e-12)
  # Hand case: scores 3, 2, 2, 1 with labels 1, 0, 1, 0: thresholds 3
  # (P=1, R=1/2) and 2 (P=2/3, R=1): 1/2 * 1 + 1/2 * 2/3 = 5/6.
  assert metrics.average_precision([3., 2., 2., 1.], [1, 0, 1, 0]) == (
      pytest.approx(5 / 6))
  assert np.isnan(metrics.average_precision([1., 2.], [0, 0]))
  with pytest.raises(ValueError, match="NaN"):
    metrics.average_precision([np.nan, 1.], [1, 0])
  with pytest.raises(ValueError, match="same length"):
    metrics.average_precision([1., 2.], [1])


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


def _ece_loop(probs, labels, edges):
  """Plain NumPy reference: bins [edges[b], edges[b+1]), the last one closed
  at 1 (netcal's and np.histogram's sides), given explicit edges."""
  conf, pred = probs.max(-1), probs.argmax(-1)
  total, num_bins = 0.0, len(edges) - 1
  for b in range(num_bins):
    lo, hi = edges[b], edges[b + 1]
    inside = (conf >= lo) & ((conf < hi) if b < num_bins - 1 else
                             (conf <= hi))
    if inside.any():
      total += inside.mean() * abs(np.mean(pred[inside] == labels[inside]) -
                                   conf[inside].mean())
  return total


def _exact_edges(num_bins):
  """b / num_bins as the correctly rounded doubles (fractions.Fraction)."""
  return np.array([float(fractions.Fraction(b, num_bins))
                   for b in range(num_bins + 1)])


def _edge_case(edge_ks, denom=10, n=200, classes=10):
  """probs `[n, classes]`, labels: every even example has top-label
  confidence exactly `k / denom` (k cycling over `edge_ks`), the odd ones
  spread over (0.1, 1); class 0 is predicted, correct with probability
  about its confidence. Deterministic arithmetic, no random generator."""
  i = np.arange(n)
  spread = 0.1 + 0.9 * np.modf(i * 0.6180339887498949)[0]
  on_edge = np.asarray(edge_ks, np.float64)[i % len(edge_ks)] / denom
  conf = np.where(i % 2 == 0, on_edge, spread)
  probs = np.repeat(((1 - conf) / (classes - 1))[:, None], classes, axis=1)
  probs[:, 0] = conf
  correct = np.modf(i * 0.7548776662466927)[0] < conf
  return probs, np.where(correct, 0, 1 + i % (classes - 1))


# netcal 1.4.0, `netcal.metrics.ECE(bins).measure(probs, labels)` on
# `_edge_case(ks, denom)`, computed once on this machine (numpy 2.4.6, scipy
# 1.17.1). netcal is not a test dependency: it requires torch, pyro and
# gpytorch; its ECE path (np.histogramdd / scipy binned_statistic_dd) was run
# with those imports stubbed.
NETCAL_ECE = {
    ((2, 4, 5, 8, 9, 10), 10, 10): 0.05976378420284014,
    ((3, 6, 7), 10, 10): 0.0670978270304769,
    (tuple(range(2, 16)), 15, 15): 0.07728138110878034,
}


@pytest.mark.parametrize("ks,denom,num_bins", [
    ((2, 4, 5, 8, 9, 10), 10, 10), (tuple(range(2, 16)), 15, 15)])
def test_ece_at_bin_edges_matches_netcal(ks, denom, num_bins):
  # Half the confidences lie exactly on edges k/denom where netcal's
  # np.linspace edges are the same doubles as b/n: netcal's value exactly.
  probs, labels = _edge_case(ks, denom)
  want = NETCAL_ECE[(ks, denom, num_bins)]
  assert metrics.ece(probs=probs, labels=labels, num_bins=num_bins) == (
      pytest.approx(want, abs=1e-15))
  assert _ece_loop(probs, labels, np.linspace(0, 1, num_bins + 1)) == (
      pytest.approx(want, abs=1e-15))
  assert _ece_loop(probs, labels, _exact_edges(num_bins)) == pytest.approx(
      want, abs=1e-15)


def test_ece_edges_where_linspace_is_one_ulp_high():
  # np.linspace(0, 1, 11)[3] is 0.30000000000000004 (also at 6 and 7), so
  # netcal bins a confidence of exactly 0.3 in [0.2, 0.3); crl bins it in
  # [0.3, 0.4), the bin whose lower edge is 0.3.
  assert np.linspace(0, 1, 11)[3] > 0.3
  assert metrics.bin_edges(10)[3] == 0.3
  probs, labels = _edge_case((3, 6, 7))
  ours = metrics.ece(probs=probs, labels=labels, num_bins=10)
  netcal = NETCAL_ECE[((3, 6, 7), 10, 10)]
  # Our reading of netcal's convention reproduces netcal's number ...
  assert _ece_loop(probs, labels, np.linspace(0, 1, 11)) == pytest.approx(
      netcal, abs=1e-15)
  # ... and crl's value is the same loop with the exact edges b/10.
  assert ours == pytest.approx(_ece_loop(probs, labels, _exact_edges(10)),
                               abs=1e-15)
  assert abs(ours - netcal) > 1e-3
  r = metrics.reliability(probs=probs, labels=labels, num_bins=10)
  on_edge = probs[::2].max(-1)
  np.testing.assert_array_equal(
      metrics.bin_index(on_edge, 10), np.round(on_edge * 10).astype(int))
  assert r["count"][[3, 6, 7]].sum() >= len(on_edge)


def test_bin_index_is_exact_at_every_edge_and_at_0_and_1():
  for n in (1, 3, 7, 10, 15, 20, 100):
    k = np.arange(n + 1)
    np.testing.assert_array_equal(metrics.bin_index(k / n, n),
                                  np.minimum(k, n - 1))
    below = np.nextafter(k[1:] / n, 0.0)  # one ulp below each edge
    np.testing.assert_array_equal(metrics.bin_index(below, n), k[1:] - 1)
  assert metrics.bin_index(np.array([0.0, 1.0]), 10).tolist() == [0, 9]


def test_probs_and_logits_inputs():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(300, 6)) * 2
  labels = rng.integers(0, 6, 300)
  probs = metrics.softmax(logits)
  for fn in (metrics.accuracy, metrics.nll, metrics.brier, metrics.ece):
    assert fn(probs=probs, labels=labels) == pytest.approx(
        fn(logits, labels), rel=1e-9), fn.__name__
  row = metrics.classification_metrics(probs=probs, labels=labels)
  assert row == pytest.approx(metrics.classification_metrics(logits, labels))
  r = metrics.reliability(probs=probs, labels=labels, num_bins=10)
  np.testing.assert_allclose(r["count"], metrics.reliability(
      logits, labels, num_bins=10)["count"])
  # Probabilities are used as given: a confidence of exactly 0.3 stays on
  # its edge, while log() then softmax() moves it by an ulp.
  p = np.array([[0.3, 0.25, 0.25, 0.2]])
  assert metrics.reliability(probs=p, labels=[0], num_bins=10)[
      "count"][3] == 1
  with pytest.raises(ValueError, match="exactly one of logits= or probs="):
    metrics.ece(logits, labels, probs=probs)
  with pytest.raises(ValueError, match="neither"):
    metrics.brier(labels=labels)
  with pytest.raises(ValueError, match="sum to 1"):
    metrics.nll(probs=probs * 0.9, labels=labels)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    metrics.accuracy(probs=probs - 0.5, labels=labels)
  assert metrics.nll(probs=np.array([[1.0, 0.0]]), labels=[1]) == np.inf


@pytest.mark.parametrize("num_bins", [1, 10, 15, 20])
def test_ece_matches_loop_reference_for_any_bins(data, num_bins):
  logits, labels, mask = data
  ref = _ece_loop(metrics.softmax(logits[mask]), labels[mask],
                  np.linspace(0, 1, num_bins + 1))
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
