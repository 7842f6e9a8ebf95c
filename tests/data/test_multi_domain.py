"""Multi-domain shapes, the pretraining source and their `domain` shifts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import registry
from crl.data import multi_domain as md
from crl.shifts import registry as shift_registry


@pytest.fixture(scope="module")
def photo():
  return md.MultiDomainShapes(domain="photo", resolution=16, eval_examples=8)


def test_domains_share_labels_differ_in_pixels(photo):
  idx = jnp.arange(8)
  out = {d: photo.sample("test", idx,
                        intervention=None if d == "photo" else d)
         for d in md.DOMAINS}
  for d, o in out.items():
    chex.assert_shape(o["image"], (8, 16, 16, 3))
    assert float(o["image"].min()) >= 0. and float(o["image"].max()) <= 1.
    assert np.all(np.asarray(o["factors"]["domain"]) == md.DOMAINS.index(d))
    assert np.all(np.asarray(o["label"]) < photo.num_classes)
  # Sketches are grey; the others are coloured.
  sketch = np.asarray(out["sketch"]["image"])
  np.testing.assert_allclose(sketch[..., 0], sketch[..., 2], atol=1e-6)
  for d in ("photo", "cartoon", "painting"):
    img = np.asarray(out[d]["image"])
    assert np.abs(img[..., 0] - img[..., 2]).max() > 0.1, d
  # Each domain looks different on average.
  means = {d: np.asarray(o["image"]).mean() for d, o in out.items()}
  assert means["sketch"] > means["photo"] + 0.2


def test_deterministic_and_split_streams_disjoint(photo):
  # One index shape throughout: one compile per dataset.
  a = photo.sample("train", jnp.array([0, 5, 9]))
  b = photo.sample("train", jnp.array([9, 0, 5]))
  np.testing.assert_array_equal(np.asarray(a["image"]),
                                np.asarray(b["image"])[[1, 2, 0]])
  t = photo.sample("test", jnp.array([0, 5, 9]))
  assert not np.allclose(np.asarray(t["image"][0]), np.asarray(a["image"][0]))
  other_seed = md.MultiDomainShapes(domain="photo", resolution=16, seed=1)
  c = other_seed.sample("train", jnp.array([0, 5, 9]))
  assert not np.allclose(np.asarray(c["image"][0]), np.asarray(a["image"][0]))


def test_eval_splits_are_the_other_domains(photo):
  assert list(photo.eval_splits()) == ["test", "sketch", "cartoon",
                                       "painting"]
  assert photo.num_examples("sketch") == 8
  np.testing.assert_array_equal(photo.eval_code("cartoon"), [3, 2])
  with pytest.raises(ValueError, match="Unknown eval split 'photo'"):
    photo.eval_code("photo")
  with pytest.raises(ValueError, match="unknown domain 'clipart'.*photo"):
    md.MultiDomainShapes(domain="clipart")


def test_pretrain_source_classes_and_mixture():
  src = md.PretrainSource(resolution=16)
  assert src.num_classes == 14 == len(md.cs.ALL_SHAPES)
  out = src.sample("train", jnp.arange(256))
  f = {k: np.asarray(v) for k, v in out["factors"].items()}
  np.testing.assert_array_equal(np.asarray(out["label"]), f["shape"])
  assert set(np.unique(f["domain"])) == set(range(len(md.DOMAINS)))
  assert set(np.unique(f["pattern"])) == set(range(len(md.PATTERNS)))
  assert np.all(np.abs(f["rotation"]) <= 90.)
  assert list(src.eval_splits()) == ["test"]
  with pytest.raises(ValueError, match="num_shapes_source and classes"):
    md.PretrainSource(num_classes=10)
  with pytest.raises(ValueError, match="unknown classes 'hue'"):
    md.PretrainSource(classes="hue")
  both = md.PretrainSource(resolution=16, classes="shape_pattern")
  assert both.num_classes == 70 == len(md.PATTERNS) * 14
  out = both.sample("train", jnp.arange(256))
  f = {k: np.asarray(v) for k, v in out["factors"].items()}
  np.testing.assert_array_equal(np.asarray(out["label"]),
                                f["shape"] * len(md.PATTERNS) + f["pattern"])
  assert len(np.unique(out["label"])) > 50
  small = md.PretrainSource(num_shapes_source=4, classes="shape_pattern")
  assert small.num_classes == 20


def test_registered_dataset_and_domain_shifts(photo):
  assert registry.DATASETS.get("multi_domain") is md.MultiDomainShapes
  assert registry.DATASETS.get("pretrain_source") is md.PretrainSource
  names = shift_registry.names("domain")
  assert names == [f"domain/{d}" for d in md.DOMAINS]
  reasons = {n: shift_registry.applies_to(shift_registry.get(n), photo)
             for n in names}
  assert reasons["domain/photo"] is not None        # its own domain
  assert all(reasons[f"domain/{d}"] is None for d in md.DOMAINS[1:])
  from crl.data import causal_shapes  # pylint: disable=g-import-not-at-top
  assert "multi-domain" in shift_registry.applies_to(
      shift_registry.get("domain/sketch"), causal_shapes.CausalShapes())
  # Any folder domain name is a valid shift name.
  assert shift_registry.get("domain/art_painting").kind == "domain"


def test_ood_suite_evaluates_the_domain_pairs():
  from crl import runtime  # pylint: disable=g-import-not-at-top
  from crl.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from crl.evaluators import ood_suite  # pylint: disable=g-import-not-at-top
  ds = md.MultiDomainShapes(domain="cartoon", resolution=8, num_classes=3,
                            eval_examples=16)
  pipe = pipeline_lib.InputPipeline(ds, runtime.make_mesh(), 8, 8)
  w = jnp.asarray(np.random.default_rng(0).normal(size=(8 * 8 * 3, 3)),
                  jnp.float32)
  predict_fn = jax.jit(lambda p, b: b["image"].reshape(
      b["image"].shape[0], -1) @ p)
  ev = ood_suite.OODSuiteEvaluator(pipeline=pipe, predict_fn=predict_fn,
                                   num_classes=3, shifts="domain")
  assert ev.names == ["test", "domain/photo", "domain/sketch",
                      "domain/painting"]
  assert ev.skipped == {"domain/cartoon": "'cartoon' is the run's own "
                                          "(in-distribution) domain"}
  results = ev.run(w)
  for name in ev.names:
    assert results[name]["num_examples"] == 16
    assert 0. <= results[name]["accuracy"] <= 1.
  # Each pair's examples are that domain's: sketch images are grey.
  sketch = next(iter(ev.batches("domain/sketch")))["image"]
  np.testing.assert_allclose(np.asarray(sketch[..., 0]),
                             np.asarray(sketch[..., 1]), atol=1e-6)
  assert ev.kinds["domain/sketch"] == "domain"
