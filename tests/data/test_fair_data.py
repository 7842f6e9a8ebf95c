"""Fairness datasets: the causal model's paths, stratification, splits, TFDS.

FairTabular and FairShapes are checked on samples large enough for the
causal effects to stand far above sampling noise; CelebA through
`tfds.testing.mock_data` (examples generated from the feature spec, no
files, no download).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import config_lib
from crl import registry
from crl.data import causal_shapes
from crl.data import fair_tabular
from crl.data.fair_shapes import FairShapes
from crl.data.fair_tabular import FairTabular
from crl.data.pipeline import InputPipeline
from crl.evaluators import fairness as fair_eval
from crl import runtime


def test_stratified_groups_every_window_has_the_proportions():
  p = (0.6, 0.4)
  s = np.asarray(fair_tabular.stratified_groups(jnp.arange(20_000), p))
  np.testing.assert_array_equal(
      s, fair_tabular.stratified_groups_np(np.arange(20_000), p))
  assert abs(s.mean() - 0.4) < 1e-3
  for n in (16, 64, 256):
    windows = np.lib.stride_tricks.sliding_window_view(s, n)[::7]
    ones = windows.sum(1)
    assert np.all(np.abs(ones - 0.4 * n) < 3.), (n, ones.min(), ones.max())
  three = np.asarray(fair_tabular.stratified_groups(jnp.arange(6000),
                                                    (0.5, 0.3, 0.2)))
  np.testing.assert_allclose(np.bincount(three) / 6000, (0.5, 0.3, 0.2),
                             atol=2e-3)


@pytest.fixture(scope="module")
def tabular():
  ds = FairTabular(eval_examples=100)
  return ds, {k: np.asarray(v) for k, v in
              ds.sample("train", np.arange(20_000)).items()}


def test_tabular_interface_and_determinism(tabular):
  ds, big = tabular
  assert ds.num_classes == 2 and ds.num_groups == 2
  assert ds.input_shape == (6 + 8 + 24,)
  assert ds.batch_keys == ("features", "label", "group")
  assert set(ds.eval_splits()) == {"validation", "test"}
  assert ds.num_examples("test") == 100 and ds.num_examples("train") is None
  again = ds.sample("train", np.arange(10, 20))
  for k in ("features", "label", "group"):
    np.testing.assert_array_equal(np.asarray(again[k]), big[k][10:20])
  assert big["features"].dtype == np.float32 and big["label"].dtype == np.int32
  val = np.asarray(ds.sample("validation", np.arange(10))["features"])
  test = np.asarray(ds.sample("test", np.arange(10))["features"])
  assert not np.allclose(val, test) and not np.allclose(val, big["features"][:10])
  other = FairTabular(seed=1).sample("train", np.arange(10))["features"]
  assert not np.allclose(np.asarray(other), big["features"][:10])


def test_tabular_causal_paths_follow_the_strengths(tabular):
  ds, big = tabular
  x, y, s, u = big["features"], big["label"], big["group"], big["latent"]
  # s -> u -> y: the positive rates differ; u shifts by latent_shift.
  assert y[s == 1].mean() - y[s == 0].mean() > 0.2
  assert abs(u[s == 1].mean() - u[s == 0].mean() - ds.latent_shift) < 0.05
  # Proxies: shift of +-proxy_strength between the groups, alternating sign.
  proxies = x[:, 6:14]
  shift = proxies[s == 1].mean(0) - proxies[s == 0].mean(0)
  np.testing.assert_allclose(shift, [1., -1.] * 4, atol=0.07)
  # Informative features measure u; noise features are independent of s, y.
  assert np.corrcoef(x[:, 0], u)[0, 1] > 0.7
  noise = x[:, 14:]
  assert np.abs(noise[s == 1].mean(0) - noise[s == 0].mean(0)).max() < 0.07
  # Only the direct paths: s -> y and s -> x; no proxies, no s -> u.
  direct = FairTabular(latent_shift=0., proxy_strength=0., label_shift=2.,
                       feature_shift=1., include_attribute=True)
  d = {k: np.asarray(v) for k, v in direct.sample(
      "train", np.arange(20_000)).items()}
  g, x = d["group"], d["features"]
  assert abs(d["latent"][g == 1].mean() - d["latent"][g == 0].mean()) < 0.05
  assert np.abs(x[g == 1, 6:14].mean(0) - x[g == 0, 6:14].mean(0)).max() < 0.07
  assert d["label"][g == 1].mean() - d["label"][g == 0].mean() > 0.15
  assert abs(x[g == 1, 0].mean() - x[g == 0, 0].mean() - 1.) < 0.07
  np.testing.assert_array_equal(x[:, -1], g)


def test_weak_proxy_variant_leaves_the_probe_headroom():
  # configs/two_heads.py:weak_proxy: a linear probe on the raw inputs reads
  # the attribute far below 1 (with the default proxies: above .9), so a
  # network's probe accuracy can rise under the penalty.
  from tests import helpers  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  weak = config_lib.build(registry.DATASETS, config_lib.load_config(
      os.path.join(helpers.ROOT, "configs/two_heads.py:weak_proxy")).data)
  assert weak.proxy_strength < FairTabular().proxy_strength
  accuracy = {}
  for name, ds in (("weak", weak), ("default", FairTabular())):
    fit = ds.sample("train", np.arange(6000))
    test = ds.sample("test", np.arange(3000))
    accuracy[name] = fair_eval.probe_accuracy(
        fit["features"], fit["group"], test["features"], test["group"])
  majority = fair_eval.majority_rate(np.asarray(test["group"]))
  assert majority + 0.05 < accuracy["weak"] < 0.75, accuracy
  assert accuracy["default"] > 0.9, accuracy
  # The study's training-split probe reads the training stream's start.
  ds = FairTabular(eval_examples=8)
  np.testing.assert_array_equal(ds.eval_code(fair_tabular.TRAIN_SAMPLE),
                                ds.encode("train"))
  assert ds.num_examples(fair_tabular.TRAIN_SAMPLE) == 8
  assert fair_tabular.TRAIN_SAMPLE not in ds.eval_splits()


def test_tabular_multi_group_and_errors():
  ds = FairTabular(num_groups=3, group_proportions=None)
  out = ds.sample("test", np.arange(3000))
  np.testing.assert_allclose(np.bincount(np.asarray(out["group"])) / 3000,
                             [1 / 3] * 3, atol=2e-3)
  with pytest.raises(ValueError, match="group_proportions"):
    FairTabular(group_proportions=(0.5, 0.6))
  with pytest.raises(ValueError, match="num_groups"):
    FairTabular(num_groups=1)
  with pytest.raises(TypeError, match="unknown config key"):
    FairTabular(num_group=2)
  with pytest.raises(ValueError, match="Unknown eval split"):
    ds.eval_code("train")


def test_pipeline_serves_stratified_tabular_batches():
  config = config_lib.component_config(registry.DATASETS, "fair_tabular",
                                       eval_examples=50)
  ds = config_lib.build(registry.DATASETS, config)
  pipe = InputPipeline(ds, runtime.make_mesh(), 64, 32)
  batches = list(itertools.islice(pipe.train_batches(0), 3))
  for b in batches:
    assert sorted(b) == ["features", "group", "label"]
    assert b["features"].shape == (64, ds.num_features)
    assert abs(int(np.asarray(b["group"]).sum()) - 0.4 * 64) <= 2
  evals = list(pipe.eval_batches("validation"))
  assert [int(np.asarray(b["mask"]).sum()) for b in evals] == [32, 18]
  assert all("group" in b for b in evals)


def test_fair_shapes_show_the_attribute_and_the_target():
  ds = FairShapes(resolution=16, proxy_strength=1.0, label_noise=0.25)
  assert ds.image_shape == (16, 16, 3) and ds.num_groups == 2
  out = ds.sample("train", np.arange(500))
  image = np.asarray(out["image"])
  assert image.shape == (500, 16, 16, 3) and image.dtype == np.float32
  assert 0. <= image.min() and image.max() <= 1.
  f = {k: np.asarray(v) for k, v in out["factors"].items()}
  label, y, s = np.asarray(out["label"]), f["y"], np.asarray(out["group"])
  index = causal_shapes.SHAPES.index
  assert set(f["shape"][y == 1]) == {index("star"), index("cross")}
  assert set(f["shape"][y == 0]) == {index("circle"), index("square")}
  assert 0.19 < np.mean(label != y) < 0.31              # label noise
  # With proxy_strength 1 the background hue band is the group.
  np.testing.assert_array_equal((f["bg_hue"] >= 0.5).astype(int), s)
  assert y[s == 1].mean() - y[s == 0].mean() > 0.2      # s -> y
  assert abs(s.mean() - 0.4) < 0.006                    # stratified
  with pytest.raises(ValueError, match="positive_shapes"):
    FairShapes(positive_shapes=("blob",))


# CelebA (mocked TFDS) ---------------------------------------------------------

N = 20


@pytest.fixture(scope="module")
def celeba():
  tfds = pytest.importorskip("tensorflow_datasets")
  from crl.data.celeba import CelebAFairness  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=N,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    yield CelebAFairness


def _take(it, n):
  return list(itertools.islice(it, n))


def _key(image):
  return np.round(image * 255).astype(np.uint8).tobytes()


def test_celeba_batches_are_stratified_resumable_and_consistent(celeba):
  ds = celeba(resolution=16, shuffle_buffer=64, augment=False)
  assert ds.num_classes == 2 and ds.num_groups == 2
  assert ds.image_shape == (16, 16, 3)
  assert set(ds.eval_splits()) == {"validation", "test"}
  counts = ds.group_counts("train")
  assert counts.sum() == N and (counts > 0).all()
  proportions = ds.train_proportions()
  batches = _take(ds.train_numpy(0, 8, 0, 1), 6)       # 2.4 passes of N
  for step, b in enumerate(batches):
    assert b["image"].shape == (8, 16, 16, 3) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["group"].dtype == np.int32
    np.testing.assert_array_equal(b["group"], fair_tabular.stratified_groups_np(
        np.arange(step * 8, step * 8 + 8), proportions))
  # Resume at step 4 (inside the second pass of both groups).
  for a, b in zip(_take(ds.train_numpy(4, 8, 0, 1), 2), batches[4:6]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Of two processes, the second takes the second half of each global batch.
  share = _take(ds.train_numpy(1, 4, 1, 2), 2)
  for step in range(2):
    for k in ("image", "label", "group"):
      np.testing.assert_array_equal(share[step][k], batches[1 + step][k][4:])


def test_celeba_labels_match_records_and_eval_covers_once(celeba):
  ds = celeba(resolution=16, eval_split_names=("train", "test"),
              augment=False, shuffle_buffer=64)
  evals = list(ds.eval_numpy("train", 8, 0, 1))
  assert [int(b["mask"].sum()) for b in evals] == [8, 8, 4]
  truth = {}
  for b in evals:
    for im, y, s, m in zip(b["image"], b["label"], b["group"], b["mask"]):
      if m:
        truth[_key(im)] = (int(y), int(s))
  assert len(truth) == N
  seen = set()
  for b in _take(ds.train_numpy(0, 10, 0, 1), 2):
    for im, y, s in zip(b["image"], b["label"], b["group"]):
      assert truth[_key(im)] == (int(y), int(s))
      seen.add(_key(im))
  assert len(seen) > N // 2
  multi = celeba(resolution=16, group_key="Male,Young")
  assert multi.num_groups == 4
  b = next(multi.eval_numpy("test", 20, 0, 1))
  assert set(b["group"].tolist()) <= {0, 1, 2, 3}
  with pytest.raises(ValueError, match="also a protected"):
    celeba(group_key="Smiling")


def test_celeba_batches_reach_the_fairness_evaluator(celeba):
  ds = celeba(resolution=16, shuffle_buffer=64)
  pipe = InputPipeline(ds, runtime.make_mesh(), 8, 8)
  batch = next(pipe.train_batches(0))
  assert sorted(batch) == ["group", "image", "label"]
  assert batch["group"].shape == (8,) and batch["group"].dtype == jnp.int32

  def predict(params, batch):  # a fixed "model": brightness decides
    z = jnp.mean(batch["image"], axis=(1, 2, 3)) - params
    return jnp.stack([-z, z], axis=-1)

  def features(params, batch):
    del params
    return jnp.mean(batch["image"], axis=(1, 2))

  ev = fair_eval.FairnessEvaluator(
      pipeline=pipe, predict_fn=jax.jit(predict), num_classes=2,
      splits="all", features_fn=jax.jit(features))
  results = ev.run(jnp.float32(0.5))
  assert results["test"]["num_examples"] == N
  assert 0. <= results["test"]["probe_accuracy"] <= 1.
  # The evaluator saw each record's own attribute values.
  ref = next(ds.eval_numpy("test", N, 0, 1))
  want = fair_eval.fairness_metrics(
      ref["image"].mean(axis=(1, 2, 3)) - 0.5, ref["label"], ref["group"])
  for key in ("accuracy", "dp_difference", "eo_difference"):
    assert results["test"][key] == pytest.approx(want[key]), key


def test_celeba_split_examples_and_the_train_sample(celeba):
  ds = celeba(resolution=16, eval_split_names=("train", "test"),
              augment=False, shuffle_buffer=64, split_examples=5)
  assert ds.num_examples("test") == 5 and ds.num_examples("train") == 5
  assert ds.group_counts("train").sum() == 5
  first = next(ds.eval_numpy("train", 8, 0, 1))
  sample = next(ds.eval_numpy(fair_tabular.TRAIN_SAMPLE, 8, 0, 1))
  assert int(sample["mask"].sum()) == 5
  for k in first:
    np.testing.assert_array_equal(first[k], sample[k])
  # Training draws only from the subsample, and from all of it.
  kept = {_key(im) for im in first["image"][:5]}
  seen = {_key(im) for b in _take(ds.train_numpy(0, 5, 0, 1), 6)
          for im in b["image"]}
  assert seen == kept
  # The full split is larger (N records).
  full = celeba(resolution=16, eval_split_names=("train",))
  assert full.num_examples(fair_tabular.TRAIN_SAMPLE) == N
  with pytest.raises(ValueError, match="split_examples"):
    celeba(split_examples=0)
