"""The causal-shapes generator: purity, mechanisms, interventions, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.data import causal_shapes as cs

N = 512


@pytest.fixture(scope="module")
def ds():
  return cs.CausalShapes()


@pytest.fixture(scope="module")
def sample(ds):
  fn = jax.jit(ds.sample_encoded)

  def run(split, intervention=None, n=N, start=0):
    out = fn(ds.encode(split, intervention), jnp.arange(start, start + n))
    return jax.tree.map(np.asarray, out)
  return run


@pytest.fixture(scope="module")
def factors(ds):
  """Like `sample` without images: XLA drops the renderer, so it is fast."""
  fn = jax.jit(lambda code, idx: {
      k: v for k, v in ds.sample_encoded(code, idx).items() if k != "image"})

  def run(split, intervention=None, n=N, start=0):
    out = fn(ds.encode(split, intervention), jnp.arange(start, start + n))
    return jax.tree.map(np.asarray, out)
  return run


def test_images_are_pure_functions_of_the_index(ds, sample):
  a = sample("train", n=64)
  b = sample("train", n=64)
  np.testing.assert_array_equal(a["image"], b["image"])
  # Example i does not depend on the batch it is drawn in.
  shifted = sample("train", n=32, start=16)
  np.testing.assert_array_equal(shifted["image"], a["image"][16:48])
  # The public `sample` API gives the same pixels.
  direct = ds.sample("train", jnp.arange(64))
  np.testing.assert_array_equal(np.asarray(direct["image"]), a["image"])
  assert not np.array_equal(a["image"][0], a["image"][1])


def test_splits_are_disjoint_streams(sample):
  train, test = sample("train", n=32), sample("test", n=32)
  val = sample("validation", n=32)
  assert not np.any(np.all(train["image"] == test["image"], axis=(1, 2, 3)))
  assert not np.any(np.all(val["image"] == test["image"], axis=(1, 2, 3)))


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_shapes_range_dtype_and_antialiasing(resolution):
  ds = cs.CausalShapes(resolution=resolution)
  out = ds.sample("train", jnp.arange(16))
  image = np.asarray(out["image"])
  assert image.shape == (16, resolution, resolution, 3)
  assert image.dtype == np.float32 and out["label"].dtype == jnp.int32
  assert image.min() >= 0.0 and image.max() <= 1.0
  assert ds.image_shape == (resolution, resolution, 3)
  # Anti-aliased edges: an object mask rendered on a flat background has
  # pixels strictly between background and foreground.
  flat = cs.CausalShapes(resolution=resolution)
  f = {k: np.asarray(v) for k, v in out["factors"].items()}
  f["background"] = np.zeros_like(f["background"])  # flat texture
  aux = {"freq": jnp.full(16, 4.), "phase": jnp.zeros((16, 3)),
         "noise": jnp.zeros(16, jnp.uint32)}
  img = np.asarray(flat._render({k: jnp.asarray(v) for k, v in f.items()},  # pylint: disable=protected-access
                                aux))
  bg = img[:, 0, 0]  # corner: background (objects stay inside the frame)
  dist = np.abs(img - bg[:, None, None]).sum(-1)
  fg = dist.max(axis=(1, 2))
  partial = (dist > 0.05 * fg[:, None, None]) & (dist < 0.95 * fg[:, None,
                                                                   None])
  assert partial.sum(axis=(1, 2)).min() > 0


def test_labels_balanced_and_hue_follows_the_label_in_training(ds, factors):
  out = factors("train", n=4000)
  f = out["factors"]
  counts = np.bincount(out["label"], minlength=10)
  assert counts.min() > 300 and counts.max() < 500
  np.testing.assert_array_equal(f["shape"], out["label"])
  p_own = np.mean(f["hue_band"] == out["label"])
  expected = ds.hue_correlation + (1 - ds.hue_correlation) / 10
  assert abs(p_own - expected) < 0.02
  assert not np.any(f["hue_band"] == cs.HELD_OUT_HUE_BAND)
  # The excluded (shape, hue band) pairs never occur in training.
  excluded = (out["label"] + cs.COMBINATION_OFFSET) % cs.NUM_TRAIN_HUE_BANDS
  assert not np.any(f["hue_band"] == excluded)
  assert np.all((f["background"] < len(cs.TRAIN_TEXTURES)))
  lo, hi = ds.train_scale
  assert f["scale"].min() >= lo and f["scale"].max() <= hi
  assert np.abs(f["rotation"]).max() <= 30.0


def test_each_intervention_changes_its_mechanism(ds, factors):
  base = factors("test")
  out = {n: factors("test", n) for n in ds.interventions}
  f = {n: o["factors"] for n, o in out.items()}
  p_own = np.mean(f["hue_independent"]["hue_band"] ==
                  out["hue_independent"]["label"])
  assert p_own < 0.15  # about 1/10 instead of about 0.91
  assert np.all(f["unseen_hue"]["hue_band"] == cs.HELD_OUT_HUE_BAND)
  s = f["scale_out"]["scale"]
  lo, hi = ds.train_scale
  assert np.all((s < lo) | (s > hi))
  assert 0.3 < np.mean(s < lo) < 0.7
  pos = np.stack([f["border_position"]["pos_x"],
                  f["border_position"]["pos_y"]], -1)
  edge = np.minimum(pos, 1 - pos).min(-1)
  assert np.all(edge < f["border_position"]["scale"])  # partly cut
  assert np.all(f["unseen_background"]["background"] >=
                len(cs.TRAIN_TEXTURES))
  assert np.abs(f["unseen_rotation"]["rotation"]).min() >= 60.0
  comb = out["unseen_combination"]
  excluded = (comb["label"] + cs.COMBINATION_OFFSET) % cs.NUM_TRAIN_HUE_BANDS
  np.testing.assert_array_equal(f["unseen_combination"]["hue_band"], excluded)
  novel = out["novel_classes"]["label"]
  assert novel.min() == 10 and novel.max() == 13
  # Everything an intervention does not touch keeps its training law.
  for name in ("unseen_background", "scale_out", "unseen_rotation"):
    assert abs(np.mean(f[name]["hue_band"] == out[name]["label"]) -
               np.mean(base["factors"]["hue_band"] == base["label"])) < 0.06


def test_combinations(ds, sample):
  out = sample("test", "hue_independent+unseen_background", n=256)
  assert np.all(out["factors"]["background"] >= len(cs.TRAIN_TEXTURES))
  assert np.mean(out["factors"]["hue_band"] == out["label"]) < 0.2
  # Order does not matter: the same distribution and the same examples.
  again = sample("test", "unseen_background+hue_independent", n=256)
  np.testing.assert_array_equal(again["image"], out["image"])
  with pytest.raises(ValueError, match="both replace the hue mechanism"):
    ds.encode("test", "unseen_hue+hue_independent")


def test_eval_splits_and_descriptions(ds):
  splits = ds.eval_splits()
  assert list(splits)[0] == "test" and set(ds.interventions) <= set(splits)
  assert "outside the training label space" in splits["novel_classes"]
  assert all(d.startswith("do(") for n, d in splits.items() if n != "test")
  assert ds.num_examples("unseen_hue") == ds.eval_examples


def test_clear_errors():
  with pytest.raises(TypeError, match=r"unknown config key\(s\) \['hue_corr'\]"):
    cs.CausalShapes(hue_corr=0.5)
  with pytest.raises(ValueError, match="hue_correlation must be in"):
    cs.CausalShapes(hue_correlation=1.5)
  ds = cs.CausalShapes()
  with pytest.raises(ValueError, match="Unknown intervention.*known"):
    ds.encode("test", "unseen_hew")
  with pytest.raises(ValueError, match="Unknown split 'trian'"):
    ds.encode("trian", None)
  with pytest.raises(ValueError, match="Unknown eval split 'tset'"):
    ds.eval_code("tset")
