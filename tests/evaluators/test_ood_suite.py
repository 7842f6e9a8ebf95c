"""The OOD-suite evaluator against scikit-learn, the metrics module and TFDS.

A fixed random linear "model" on image statistics stands in for a network:
the expected numbers are recomputed from the dataset's own examples with
scikit-learn and `crl.evaluators.metrics`, independently of the evaluator's
batching, padding and gathering. TFDS data comes from
`tfds.testing.mock_data` with an `as_dataset_fn` that writes a few PNG
examples per builder (labels chosen per dataset, e.g. inside ImageNet-R's
200 classes), so nothing is downloaded.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from sklearn import metrics as skm
import tensorflow as tf
import tensorflow_datasets as tfds

from crl import config_lib
from crl import registry
from crl import runtime
from crl.data import causal_shapes
from crl.data import pipeline as pipeline_lib
from crl.data import tfds_input
from crl.evaluators import metrics as metrics_lib
from crl.evaluators import ood_suite
from crl.shifts import corruptions
from crl.shifts import natural
from crl.trainers import classification
from tests import helpers

N = 20  # examples per causal-shapes split; eval batches of 8 pad the last


def _features(images):
  """[batch, 12]: channel means of the four image quadrants."""
  b, h, w, _ = images.shape
  q = images.reshape(b, 2, h // 2, 2, w // 2, 3).mean(axis=(2, 4))
  return q.reshape(b, 12)


_W = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (12, 10))) * 8.


@jax.jit
def _predict(params, batch):
  del params
  return _features(batch["image"]) @ jnp.asarray(_W)


def _host_logits(images):
  return np.asarray(_predict(None, {"image": jnp.asarray(images)}),
                    np.float64)


@pytest.fixture(scope="module")
def shapes():
  ds = causal_shapes.CausalShapes(eval_examples=N)
  return ds, pipeline_lib.InputPipeline(ds, runtime.make_mesh(), 8, 8)


def _split(ds, name):
  ex = ds.eval_batch(name, jnp.arange(N))
  return np.asarray(ex["image"]), np.asarray(ex["label"])


def _ece(probs, labels, bins):
  conf, pred = probs.max(1), probs.argmax(1)
  total = 0.
  for b in range(bins):
    lo, hi = b / bins, (b + 1) / bins
    sel = (conf > lo) & (conf <= hi) if b else (conf <= hi)
    if sel.any():
      total += sel.mean() * abs((pred[sel] == labels[sel]).mean() -
                                conf[sel].mean())
  return total


def test_metrics_agree_with_sklearn(shapes):
  ds, pipe = shapes
  ev = ood_suite.OODSuiteEvaluator(
      pipeline=pipe, predict_fn=_predict, num_classes=10, ece_bins=10,
      shifts=("hue_independent", "novel_classes"))
  report = ev.report(None)
  results = report["results"]
  assert list(results) == ["test", "hue_independent", "novel_classes"]
  for name in ("test", "hue_independent"):
    images, labels = _split(ds, name)
    logits = _host_logits(images)
    p = special.softmax(logits, axis=1)
    r = results[name]
    assert r["num_examples"] == N
    assert r["accuracy"] == pytest.approx(
        skm.accuracy_score(labels, logits.argmax(1)))
    assert r["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(
        labels, logits, k=5, labels=np.arange(10)))
    assert r["nll"] == pytest.approx(skm.log_loss(labels, p,
                                                  labels=np.arange(10)))
    assert r["brier"] == pytest.approx(
        np.mean(np.sum((p - np.eye(10)[labels]) ** 2, axis=1)))
    assert r["ece"] == pytest.approx(_ece(p, labels, 10))
    assert r["ece"] == pytest.approx(metrics_lib.ece(logits, labels,
                                                     num_bins=10))
  id_logits = _host_logits(_split(ds, "test")[0])
  ood_logits = _host_logits(_split(ds, "novel_classes")[0])
  is_id = np.r_[np.ones(N, bool), np.zeros(N, bool)]
  z = np.concatenate([id_logits, ood_logits])
  p = special.softmax(z, axis=1)
  scores = {"msp": p.max(1), "max_logit": z.max(1),
            "energy": special.logsumexp(z, axis=1),
            "entropy": np.sum(p * np.log(p), axis=1)}
  r = results["novel_classes"]
  for name, s in scores.items():
    assert r[f"auroc_{name}"] == pytest.approx(skm.roc_auc_score(is_id, s))
    assert r[f"aupr_in_{name}"] == pytest.approx(
        skm.average_precision_score(is_id, s))
    assert r[f"aupr_out_{name}"] == pytest.approx(
        skm.average_precision_score(~is_id, -s))
    fpr, tpr, _ = skm.roc_curve(is_id, s, drop_intermediate=False)
    assert r[f"fpr95_{name}"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
  # Every row carries its protocol; run() gives scalar floats only.
  rows = {(row["shift"], row["metric"]): row for row in report["rows"]}
  ece_row = rows[("hue_independent", "ece")]["protocol"]
  assert ece_row["ece_bins"] == 10 and ece_row["examples"] == N
  assert "do(hue" in ece_row["description"]
  det = rows[("novel_classes", "fpr95_energy")]["protocol"]
  assert det["score"] == "energy" and det["id_examples"] == N
  assert det["positive"] == "in-distribution ('test')"
  assert rows[("test", "accuracy")]["kind"] == "id"
  assert set(report["reliability"]) == {"test", "hue_independent"}
  assert sum(report["reliability"]["test"]["count"]) == N
  for row in ev.run(None).values():
    assert {type(v) for v in row.values()} == {float}


def _corrupted(ev, name):
  images = [np.asarray(b["image"])[np.asarray(b["mask"]) > 0]
            for b in ev.batches(name)]
  return np.concatenate(images)


def test_corruptions_are_deterministic_jitted_and_batch_size_free(shapes):
  ds, pipe = shapes
  shifts = ("corruption/gaussian_noise/*", "corruption/contrast/3")
  ev = ood_suite.OODSuiteEvaluator(pipeline=pipe, predict_fn=_predict,
                                   num_classes=10, shifts=shifts)
  other = ood_suite.OODSuiteEvaluator(
      pipeline=pipeline_lib.InputPipeline(ds, pipe.mesh, 8, 4),
      predict_fn=_predict, num_classes=10, shifts=shifts, severities=(1, 5))
  assert [s.severity for s in other.shifts] == [1, 5, 3]  # explicit kept
  compiled = getattr(ood_suite.corrupt_examples, "_cache_size")
  before = compiled()
  first = {s: _corrupted(ev, s) for s in ev.names[1:]}
  # One compilation per corruption type and batch shape, all severities.
  assert compiled() - before <= 2
  clean = _split(ds, "test")[0]
  key = ood_suite.corruption_key(0, "gaussian_noise")
  for severity in (1, 5):
    name = f"corruption/gaussian_noise/{severity}"
    np.testing.assert_array_equal(first[name], _corrupted(ev, name))
    np.testing.assert_array_equal(first[name], _corrupted(other, name))
    for i in (0, 13):  # example i draws from fold_in(key, i)
      expected = corruptions.corrupt(clean[i:i + 1], "gaussian_noise",
                                     severity, jax.random.fold_in(key, i))
      np.testing.assert_allclose(first[name][i], expected[0], atol=1e-6)
  assert not np.allclose(first["corruption/gaussian_noise/1"], clean)
  np.testing.assert_allclose(
      first["corruption/contrast/3"],
      corruptions.corrupt(clean, "contrast", 3, key), atol=1e-6)


def test_selection_and_argument_errors(shapes):
  ds, pipe = shapes
  make = lambda **kw: ood_suite.OODSuiteEvaluator(
      pipeline=pipe, predict_fn=_predict, num_classes=10, **kw)
  ev = make(shifts="all", severities=(2,))
  assert "cifar10_1" in ev.skipped and "TFDS 'cifar10'" in ev.skipped[
      "cifar10_1"]
  assert [s.name for s in ev.shifts if s.kind == "corruption"] == [
      f"corruption/{c}/2" for c in corruptions.names()]
  assert ev.kinds["novel_classes"] == "semantic"
  assert ev.descriptions["scale_out"] == ds.describe("scale_out")
  with pytest.raises(ValueError, match="cifar10_1.*cannot be evaluated"):
    make(shifts=("hue_independent", "cifar10_1"))
  with pytest.raises(registry.UnknownNameError, match="known shifts"):
    make(shifts=("hue_indep",))
  for kwargs, message in ((dict(ece_bins=0), "ece_bins"),
                          (dict(scores=("odin",)), "odin"),
                          (dict(severities=(6,)), "severities"),
                          (dict(id_split="train"), "id_split"),
                          (dict(shifts="imagenet*"), "None of the selected")):
    with pytest.raises(ValueError, match=message):
      make(**kwargs)


def test_periodic_and_final_evaluation_in_a_training_run(tmp_path):
  config = helpers.tiny_config(**{
      "model": config_lib.component_config(registry.MODELS, "mlp",
                                           hidden=(16,)),
      "num_steps": 2, "log_every_steps": 1, "checkpoint.every_steps": 2,
      "tensorboard": False,
      "evals": {"ood": {"type": "ood_suite", "every_steps": 2,
                        "shifts": ("hue_independent",
                                   "corruption/contrast/3")}},
      "final_eval": {"type": "ood_suite", "shifts": "novel_classes",
                     "scores": ("msp",)}})
  out = classification.train_and_evaluate(config, str(tmp_path))
  assert set(out["results"]) == {"test", "novel_classes"}
  assert set(out["results"]["novel_classes"]) >= {"auroc_msp", "fpr95_msp"}
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  logged = {r["split"]: r for r in records if r["split"].startswith("ood/")}
  assert set(logged) == {"ood/test", "ood/hue_independent",
                         "ood/corruption/contrast/3"}
  assert 0. <= logged["ood/hue_independent"]["accuracy"] <= 1.
  bad = helpers.tiny_config(evals={"ood": {"type": "ood_suite",
                                           "shifts": "corruption/fog/7",
                                           "every_steps": 1}})
  with pytest.raises(config_lib.ConfigError, match="ood_suite.*fog/7"):
    classification.ClassificationTask(bad).evaluators()


# TFDS natural pairs ----------------------------------------------------------

_MISSING = set()
_LABELS = {}


def _fake_as_dataset(self, split, decoders=None, read_config=None,
                     shuffle_files=False):
  """A few PNG examples per builder: the mock's `_as_dataset`."""
  del decoders, read_config, shuffle_files
  if self.name in _MISSING:
    raise FileNotFoundError(f"{self.name} is not prepared")
  rng = np.random.RandomState(sum(map(ord, self.name + split)))
  n = 12
  size = (32, 32) if self.info.features["image"].shape[0] == 32 else (40, 36)
  images = rng.randint(0, 256, (n,) + size + (3,)).astype(np.uint8)
  classes = self.info.features["label"].num_classes
  labels = _LABELS.get(self.name, rng.randint(0, classes, n))
  return tf.data.Dataset.from_tensor_slices({
      "image": [tf.io.encode_png(x).numpy() for x in images],
      "label": np.asarray(labels, np.int64)})


@pytest.fixture
def mocked():
  _MISSING.clear()
  _LABELS.clear()
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _tfds_pipeline(**kwargs):
  ds = tfds_input.TFDSImageClassification(**kwargs)
  return ds, pipeline_lib.InputPipeline(ds, runtime.make_mesh(), 8, 8)


def _read(tfds_name, split, resolution=None):
  ds = tfds_input.TFDSImageClassification(
      tfds_name=tfds_name, eval_split_names=(split,), resolution=resolution)
  batch = next(ds.eval_numpy(split, 64, 0, 1))
  keep = batch["mask"] > 0
  return batch["image"][keep], batch["label"][keep]


def test_cifar10_pairs(mocked):
  del mocked
  ds, pipe = _tfds_pipeline(tfds_name="cifar10")
  ev = ood_suite.OODSuiteEvaluator(
      pipeline=pipe, predict_fn=_predict, num_classes=10,
      shifts=("cifar10_1", "cifar10_corrupted/glass_blur/3", "svhn_cropped",
              "corruption/contrast/2"), scores=("msp",))
  assert ev.kinds == {"test": "id", "cifar10_1": "natural",
                      "cifar10_corrupted/glass_blur/3": "natural",
                      "svhn_cropped": "semantic",
                      "corruption/contrast/2": "corruption"}
  report = ev.report(None)
  results = report["results"]
  id_images, _ = _read("cifar10", "test")
  for name, tfds_name in (("cifar10_1", "cifar10_1/v6"),
                          ("cifar10_corrupted/glass_blur/3",
                           "cifar10_corrupted/frosted_glass_blur_3")):
    images, labels = _read(tfds_name, "test")
    expected = metrics_lib.classification_metrics(_host_logits(images),
                                                  labels)
    for metric, value in expected.items():
      assert results[name][metric] == pytest.approx(value), (name, metric)
  svhn, _ = _read("svhn_cropped", "test")
  msp = lambda x: special.softmax(_host_logits(x), axis=1).max(1)
  assert results["svhn_cropped"]["auroc_msp"] == pytest.approx(
      skm.roc_auc_score(np.r_[np.ones(len(id_images)), np.zeros(len(svhn))],
                        np.r_[msp(id_images), msp(svhn)]))
  protocol = next(r["protocol"] for r in report["rows"]
                  if r["shift"] == "cifar10_1")
  assert protocol["tfds_name"] == "cifar10_1/v6"
  assert protocol["examples"] == 12


def test_domainnet_domain_pairs(mocked):
  """A run on one DomainNet domain is evaluated on the other five; its own
  domain is skipped, and refused when named."""
  del mocked
  ds, pipe = _tfds_pipeline(tfds_name="domainnet/real", resolution=32)
  w = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (12, 345))) * 8.
  predict = jax.jit(lambda p, b: _features(b["image"]) @ jnp.asarray(w))
  ev = ood_suite.OODSuiteEvaluator(pipeline=pipe, predict_fn=predict,
                                   num_classes=345, shifts=("natural",))
  others = [f"domainnet/{d}" for d in natural.DOMAINNET_DOMAINS
            if d != "real"]
  assert [s.name for s in ev.shifts] == others
  assert "own data" in ev.skipped["domainnet/real"]
  assert "cifar10" in ev.skipped["cifar10_1"]
  results = ev.run(None)
  for name in ("domainnet/sketch", "domainnet/quickdraw"):
    images, labels = _read(name, "test", resolution=32)
    logits = np.asarray(_features(jnp.asarray(images)) @ jnp.asarray(w),
                        np.float64)
    for metric, value in metrics_lib.classification_metrics(
        logits, labels).items():
      assert results[name][metric] == pytest.approx(value), (name, metric)
  with pytest.raises(ValueError, match="own data"):
    ood_suite.OODSuiteEvaluator(pipeline=pipe, predict_fn=predict,
                                num_classes=345, shifts=("domainnet/real",))


def test_imagenet_r_logits_are_masked_to_its_200_classes(mocked):
  del mocked
  ds, pipe = _tfds_pipeline(tfds_name="imagenet2012", resolution=32,
                            eval_split_names=("validation",))
  names = list(ds.builder.info.features["label"].names)
  subset = np.isin(names, natural.IMAGENET_R_WNIDS)
  _LABELS["imagenet_r"] = np.flatnonzero(subset)[::17][:12]
  w = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (12, 1000))) * 8.
  predict = jax.jit(lambda p, b: _features(b["image"]) @ jnp.asarray(w))
  ev = ood_suite.OODSuiteEvaluator(pipeline=pipe, predict_fn=predict,
                                   num_classes=1000, shifts=("imagenet_r",))
  assert ev.id_split == "validation"
  out = ev.predict_many({"m": (None, predict)}, "imagenet_r")["m"]
  images, labels = _read("imagenet_r", "test", resolution=32)
  logits = _features(jnp.asarray(images)) @ jnp.asarray(w)
  logits = np.where(subset, np.asarray(logits, np.float64), -np.inf)
  np.testing.assert_allclose(out["logits"], logits, rtol=1e-6)
  assert subset[out["logits"].argmax(1)].all()
  results = ev.run(None)["imagenet_r"]
  for metric, value in metrics_lib.classification_metrics(
      logits, labels).items():
    assert results[metric] == pytest.approx(value), metric
  row = next(r for r in ev.rows(ev.run(None)) if r["shift"] == "imagenet_r")
  assert row["protocol"]["class_subset_size"] == 200
  _LABELS["imagenet_r"] = np.arange(12)  # label 0 (tench) is not in ImageNet-R
  with pytest.raises(pipeline_lib.DataError, match="outside its class subset"):
    ev.run(None)


def test_missing_tfds_data(mocked):
  del mocked
  _MISSING.add("cifar10_1")
  _, pipe = _tfds_pipeline(tfds_name="cifar10")
  with pytest.raises(tfds_input.DatasetNotPreparedError, match="tfds build"):
    ood_suite.OODSuiteEvaluator(pipeline=pipe, predict_fn=_predict,
                                num_classes=10, shifts=("cifar10_1",))
  ev = ood_suite.OODSuiteEvaluator(pipeline=pipe, predict_fn=_predict,
                                   num_classes=10,
                                   shifts=("cifar10_[1]", "svhn_cropped"))
  assert [s.name for s in ev.shifts] == ["svhn_cropped"]
  assert "not prepared" in ev.skipped["cifar10_1"]
  assert "causal_shapes" in ood_suite.OODSuiteEvaluator(
      pipeline=pipe, predict_fn=_predict, num_classes=10,
      shifts=("interventional", "svhn_cropped")).skipped["scale_out"]
