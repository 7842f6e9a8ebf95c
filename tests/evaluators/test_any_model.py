"""`evaluate_classifier`: any apply_fn gets the suite's rows and numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from crl import runtime
from crl.data import causal_shapes
from crl.data import pipeline as pipeline_lib
from crl.evaluators import any_model
from crl.evaluators import ood_suite

N = 12


def _apply(params, images):
  """A linear model on quadrant colour means: [batch, 12] @ [12, 10]."""
  b, h, w, _ = images.shape
  q = images.reshape(b, 2, h // 2, 2, w // 2, 3).mean(axis=(2, 4))
  return q.reshape(b, 12) @ params["w"]


@pytest.fixture(scope="module")
def setup():
  ds = causal_shapes.CausalShapes(eval_examples=N)
  params = {"w": jax.random.normal(jax.random.PRNGKey(1), (12, 10)) * 8.}
  return ds, params


def test_rows_match_the_suite_evaluator_and_sklearn(setup):
  ds, params = setup
  shifts = ("hue_independent", "corruption/gaussian_noise/2")
  rows = any_model.evaluate_classifier(_apply, params, dataset=ds,
                                       shifts=shifts, model="linear",
                                       eval_batch_size=8, ece_bins=10)
  # The suite's own evaluator on the same model, batch-dict predict_fn.
  pipe = pipeline_lib.InputPipeline(ds, runtime.make_mesh(), 8, 8)
  ev = ood_suite.OODSuiteEvaluator(
      pipeline=pipe, predict_fn=jax.jit(lambda p, b: _apply(p, b["image"])),
      num_classes=10, shifts=shifts, ece_bins=10)
  expected = ev.report(params)["rows"]
  assert [{k: r[k] for k in ("shift", "kind", "metric")} for r in rows] == [
      {k: r[k] for k in ("shift", "kind", "metric")} for r in expected]
  for got, want in zip(rows, expected):
    assert got["model"] == "linear"
    assert got["value"] == pytest.approx(want["value"])
    assert got["protocol"] == want["protocol"]
  ex = ds.eval_batch("hue_independent", jnp.arange(N))
  logits = np.asarray(_apply(params, ex["image"]))
  acc = next(r["value"] for r in rows
             if (r["shift"], r["metric"]) == ("hue_independent", "accuracy"))
  assert acc == pytest.approx(skm.accuracy_score(np.asarray(ex["label"]),
                                                 logits.argmax(1)))
  assert {r["kind"] for r in rows} == {"id", "interventional", "corruption"}


def test_several_models_and_bad_selection(setup):
  ds, params = setup
  zero = {"w": jnp.zeros((12, 10))}
  rows = any_model.evaluate_classifiers(
      {"a": (_apply, params), "b": (_apply, zero)}, dataset=ds,
      shifts=("hue_independent",), eval_batch_size=8)
  acc = {(r["model"], r["shift"]): r["value"] for r in rows
         if r["metric"] == "accuracy"}
  # All-zero logits predict class 0 everywhere (ties to the lower index).
  labels = np.asarray(ds.eval_batch("test", jnp.arange(N))["label"])
  assert acc[("b", "test")] == pytest.approx(np.mean(labels == 0))
  assert set(acc) == {("a", "test"), ("a", "hue_independent"),
                      ("b", "test"), ("b", "hue_independent")}
  with pytest.raises(ValueError, match="at least one model"):
    any_model.evaluate_classifiers({}, dataset=ds)
  with pytest.raises(ValueError, match="no_such_shift"):
    any_model.evaluate_classifier(_apply, params, dataset=ds,
                                  shifts=("no_such_shift",), eval_batch_size=8)
