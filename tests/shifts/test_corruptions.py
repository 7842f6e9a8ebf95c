"""JAX corruptions against the imagecorruptions package (the reference).

Every type and severity is compared with imagecorruptions 1.1.2 on the same
images. Deterministic types: pixel values. Random types whose draws can be
replayed (the reference's `np.random` is swapped for one that returns our
standard draws): pixel values given the same draws. All random types with
their JAX draws: statistics of the change against the reference with
NumPy's draws, and monotonicity in severity where the reference is
monotone. The reference functions are called directly (not through
`imagecorruptions.corrupt`, which truncates to uint8), so they return the
unrounded float result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from crl.shifts import corruptions as C
from crl.shifts import corruptions_bench
from crl.shifts.corruptions import _noise_blur, _random

DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast",
                 "pixelate", "jpeg_compression", "gaussian_blur", "saturate")
REPLAYED = ("gaussian_noise", "glass_blur", "motion_blur", "snow", "fog",
            "elastic_transform", "speckle_noise", "spatter")
STATISTICAL = ("shot_noise", "impulse_noise", "frost")
RANDOM = REPLAYED + STATISTICAL
SEVERITIES = (1, 2, 3, 4, 5)


def _synthetic_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
  """uint8 `[n, h, w, 3]`: gradients, a hard-edged disk, texture, clipping."""
  rng = np.random.RandomState(seed)
  yy, xx = np.mgrid[:h, :w] / max(h, w)
  out = []
  for i in range(n):
    f = rng.uniform(2, 8, 3)
    phase = rng.uniform(0, 6, 3)
    img = np.stack([0.5 + 0.45 * np.sin(f[0] * xx + phase[0]),
                    0.5 + 0.45 * np.cos(f[1] * yy + phase[1]),
                    0.5 + 0.45 * np.sin(f[2] * (xx + yy) + phase[2])], -1)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r = rng.uniform(0.1, 0.3)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0, 1, 3)
    img = img + rng.uniform(-0.08, 0.08, img.shape)
    if i % 4 == 3:  # Saturated regions exercise the clipping.
      img = img * 1.6 - 0.3
    out.append(np.clip(img, 0, 1))
  return np.round(np.stack(out) * 255).astype(np.uint8)


IMAGES = _synthetic_images(8, 32, 32, seed=0)
IMAGES_64 = _synthetic_images(2, 45, 64, seed=1)


class _Replay:
  """Stands in for `np.random` inside imagecorruptions, returning the given
  standard draws mapped as NumPy maps them (low + (high - low) * U, loc +
  scale * Z; randint as low + floor(U * (high - low)))."""

  def __init__(self, normal=(), uniform=(), randint_rows=None):
    self._normal = list(normal)
    self._uniform = list(uniform)
    self._rows = randint_rows
    self._row = 0

  def normal(self, loc=0.0, scale=1.0, size=None):
    del size
    return loc + scale * self._normal.pop(0)

  def uniform(self, low=0.0, high=1.0, size=None):
    del size
    return low + (high - low) * self._uniform.pop(0)

  def randint(self, low, high=None, size=None):
    del size
    if high is None:
      low, high = 0, low
    u = self._rows[self._row]
    self._row += 1
    return low + np.floor(u * (high - low)).astype(np.int64)


def _replay_draws(name: str, severity: int, batch: int, h: int, w: int,
                  seed: int):
  """(our noise pytree, per-example reference replay factory)."""
  rng = np.random.RandomState(seed)
  if name in ("gaussian_noise", "speckle_noise"):
    z = rng.randn(batch, h, w, 3)
    return {"normal": z}, lambda b: _Replay(normal=[z[b]])
  if name == "motion_blur":
    u = rng.rand(batch)
    return {"uniform": u}, lambda b: _Replay(uniform=[u[b]])
  if name == "snow":
    z, u = rng.randn(batch, h, w), rng.rand(batch)
    return ({"normal": z, "uniform": u},
            lambda b: _Replay(normal=[z[b]], uniform=[u[b]]))
  if name == "spatter":
    z = rng.randn(batch, h, w)
    return {"normal": z}, lambda b: _Replay(normal=[z[b]])
  if name == "elastic_transform":
    u = rng.rand(batch, 2, h, w)
    return {"uniform": u}, lambda b: _Replay(uniform=[u[b, 0], u[b, 1]])
  if name == "fog":
    n = 1 << (max(h, w) - 1).bit_length()
    u = rng.rand(batch, n * n - 1)

    def factory(b):
      draws, start, m = [], 0, 1
      while m < n:
        for _ in range(3):
          draws.append(u[b, start:start + m * m].reshape(m, m))
          start += m * m
        m *= 2
      return _Replay(uniform=draws)
    return {"uniform": u}, factory
  if name == "glass_blur":
    d = C.SEVERITY_PARAMS[name][severity - 1]["max_delta"]
    u = rng.rand(batch, 3 * h, w, 2)  # [pass * row, step, (dx, dy)]
    return ({"uniform": u},
            lambda b: _Replay(randint_rows=u[b, :, :w - 2 * d].reshape(-1, 2)))
  raise ValueError(name)


def _reference(name, severity, images_u8, replay=None):
  """imagecorruptions' float output in [0, 1] for each image."""
  out = []
  for b, image in enumerate(images_u8):
    with corruptions_bench.patched_imagecorruptions(
        replay(b) if replay else None) as ic:
      y = ic.corruption_dict[name](Image.fromarray(image), severity)
    out.append(np.asarray(y, np.float64) / 255.0)
  return np.stack(out)


def _ours_with_noise(name, severity, images_u8, noise):
  noise = jax.tree.map(  # Replayed NumPy draws -> float32, JAX draws as is.
      lambda a: jnp.asarray(a, jnp.float32) if isinstance(a, np.ndarray)
      else a, noise)
  x = jnp.asarray(images_u8, jnp.float32) / 255.0
  return np.asarray(C.corrupt_with_noise(x, name, severity, noise), np.float64)


def _assert_pixels_match(ours, ref, name, severity, atol=1e-4):
  """All but a tiny fraction of values agree to `atol` (float32 vs float64:
  a value on an 8-bit rounding boundary may land one level apart).

  glass_blur truncates its first blur to 8 bits; on flat and saturated
  regions the float64 reference is within 1e-5 of an integer and truncates
  either way, below float32 resolution, so up to 5% of its values may be
  up to one level (1/255) apart.
  """
  d = np.abs(ours - ref)
  if name == "glass_blur":
    assert np.mean(d > atol) < 0.05 and d.max() <= 1.0001 / 255, (
        severity, float(np.mean(d > atol)), float(d.max()))
    return
  assert np.mean(d > atol) < 2e-3, (name, severity, float(np.mean(d > atol)),
                                    float(d.max()))
  assert d.max() < 0.1, (name, severity, float(d.max()))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_types_match_reference_pixels(name):
  x = jnp.asarray(IMAGES, jnp.float32) / 255.0
  for severity in SEVERITIES:
    ours = np.asarray(C.corrupt(x, name, severity, jax.random.key(0)))
    ref = _reference(name, severity, IMAGES)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    _assert_pixels_match(ours, ref, name, severity)


@pytest.mark.parametrize("name", REPLAYED)
def test_random_types_match_reference_pixels_given_the_same_draws(name):
  batch, h, w = IMAGES.shape[:3]
  for severity in SEVERITIES:
    noise, replay = _replay_draws(name, severity, batch, h, w, seed=severity)
    ours = _ours_with_noise(name, severity, IMAGES, noise)
    ref = _reference(name, severity, IMAGES, replay)
    _assert_pixels_match(ours, ref, name, severity)


# Types whose maths depends on the image size (per-pixel ones do not).
SIZE_DEPENDENT = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
                  "snow", "frost", "fog", "elastic_transform", "pixelate",
                  "jpeg_compression", "gaussian_blur", "spatter")


@pytest.mark.parametrize("name", SIZE_DEPENDENT)
def test_non_square_64px(name):
  """Any size >= 32: 45 x 64 (odd, not a multiple of 16 in height)."""
  batch, h, w = IMAGES_64.shape[:3]
  severity = 1 + C.CORRUPTIONS.index(name) % 5
  if name in STATISTICAL:
    x = jnp.asarray(IMAGES_64, jnp.float32) / 255.0
    out = np.asarray(C.corrupt(x, name, severity, jax.random.key(1)))
    assert out.shape == x.shape and np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1 and not np.allclose(out, x)
    return
  if name in REPLAYED:
    noise, replay = _replay_draws(name, severity, batch, h, w, seed=7)
  else:
    noise, replay = C.draw_noise(jax.random.key(0), name, batch, h, w), None
  ours = _ours_with_noise(name, severity, IMAGES_64, noise)
  ref = _reference(name, severity, IMAGES_64, replay)
  _assert_pixels_match(ours, ref, name, severity)


def _change_stats(y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
  """Per-image statistics of the change, each `[batch]`."""
  d = (y - x).reshape(len(x), -1)
  yf, xf = y.reshape(len(x), -1), x.reshape(len(x), -1)
  yc, xc = yf - yf.mean(1, keepdims=True), xf - xf.mean(1, keepdims=True)
  corr = (yc * xc).sum(1) / np.sqrt((yc ** 2).sum(1) * (xc ** 2).sum(1) + 1e-12)
  return {"mad": np.abs(d).mean(1), "mean": d.mean(1), "std": d.std(1),
          "corr": corr}


_REPEATS = 2  # 16 examples per type and severity.
# Absolute slack on top of 4 standard errors of the mean paired difference.
_SLACK = {"mad": 0.003, "mean": 0.003, "std": 0.003, "corr": 0.01}
# frost's texture is procedural (not the reference's photographs): its
# change statistics are compared within relative bands instead.
_FROST_BANDS = {"mad": 0.15, "mean": 0.15, "std": 0.25, "corr": 0.06}


@pytest.fixture(scope="module")
def random_stats():
  """{name: {severity: (ours, reference)}} per-image change statistics.

  Ours: our draws (`draw_noise`, what `corrupt` uses). Reference: NumPy's
  seeded draws, except frost's choice of photograph, which is replayed from
  our draw so that both sides use the same colour style per image.
  """
  batch, h, w = IMAGES.shape[:3]
  x = np.concatenate([IMAGES] * _REPEATS).astype(np.float64) / 255.0
  result = {}
  for name in RANDOM:
    result[name] = {}
    for severity in SEVERITIES:
      ours, ref = [], []
      for r in range(_REPEATS):
        key = jax.random.key(100 * severity + r)
        noise = C.draw_noise(key, name, batch, h, w)
        ours.append(_ours_with_noise(name, severity, IMAGES, noise))
        np.random.seed(10 * severity + r)
        replay = None
        if name == "frost":
          styles = np.asarray(noise["style"], np.float64)
          crops = np.random.rand(batch, 2)
          replay = lambda b, st=styles, cr=crops: _Replay(
              randint_rows=[st[b], cr[b, 0], cr[b, 1]])
        ref.append(_reference(name, severity, IMAGES, replay))
      result[name][severity] = (_change_stats(np.concatenate(ours), x),
                                _change_stats(np.concatenate(ref), x))
  return result


@pytest.mark.parametrize("name", RANDOM)
def test_random_types_match_reference_statistics(name, random_stats):
  """Paired over images: |mean(ours - ref)| <= 4 standard errors + slack.

  (With 16 images this catches e.g. a 10% error in gaussian_noise's sigma.)
  """
  for severity in SEVERITIES:
    ours, ref = random_stats[name][severity]
    for key in _SLACK:
      diff = ours[key] - ref[key]
      if name == "frost":
        tol = _FROST_BANDS[key] * (abs(ref[key].mean()) if key != "corr"
                                   else 1.0)
      else:
        tol = 4 * diff.std(ddof=1) / np.sqrt(len(diff)) + _SLACK[key]
      assert abs(diff.mean()) <= tol, (name, severity, key, ours[key].mean(),
                                       ref[key].mean(), tol)


@pytest.mark.parametrize("name", ["frost", "fog"])
def test_frost_and_fog_severity_1_statistics_on_many_images(name):
  """Issue 18 reported ~0.02 differences at severity 1 (frost's mean, fog's
  standard deviation). The parameter tables, frost's rescale and crop and
  fog's map size and normalisation are the reference's (fog's pixels match
  given the same draws); on 192 images the differences are a few 1e-3, so
  a 0.02 bias would be > 5 standard errors here."""
  n, size = 192, 32
  images = _synthetic_images(n, size, size, seed=11)
  x = images.astype(np.float64) / 255.0
  noise = C.draw_noise(jax.random.key(2024), name, n, size, size)
  ours = _change_stats(_ours_with_noise(name, 1, images, noise), x)
  np.random.seed(2024)
  replay = None
  if name == "frost":  # Same photograph style per image on both sides.
    styles, crops = np.asarray(noise["style"], np.float64), np.random.rand(
        n, 2)
    replay = lambda b: _Replay(randint_rows=[styles[b], crops[b, 0],
                                             crops[b, 1]])
  ref = _change_stats(_reference(name, 1, images, replay), x)
  for key in ("mean", "std", "mad"):
    diff = ours[key] - ref[key]
    tol = 3.5 * diff.std(ddof=1) / np.sqrt(n) + 0.003
    assert abs(diff.mean()) <= min(tol, 0.01), (name, key, diff.mean(), tol)


@pytest.mark.parametrize("name", RANDOM)
def test_change_grows_with_severity_where_the_reference_does(name,
                                                             random_stats):
  """Where the reference's mean |change| clearly grows from one severity to
  the next (by more than 4 standard errors, paired over images), ours grows
  too."""
  for s in range(1, 5):
    ours0, ref0 = random_stats[name][s]
    ours1, ref1 = random_stats[name][s + 1]
    grow = ref1["mad"] - ref0["mad"]
    if grow.mean() > 4 * grow.std(ddof=1) / np.sqrt(len(grow)):
      assert ours1["mad"].mean() > ours0["mad"].mean(), (name, s)


def test_hash_generator_draws_uniform_independent_values():
  """The corruptions' generator (`_random`): uniform words, U[0, 1) and
  N(0, 1) marginals, no correlation between neighbouring values or between
  keys, and a different stream for every key."""
  keys = jax.random.split(jax.random.key(0), 64)
  draw = lambda fn: np.asarray(jax.vmap(lambda k: fn(k, (32, 32, 3)))(keys))
  u, z, b = draw(_random.uniform), draw(_random.normal), draw(_random.bits)
  assert u.min() >= 0 and u.max() < 1 and b.dtype == np.uint32
  assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
  assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
  assert np.abs(z).max() < 5.5
  freq = ((b.ravel()[:, None] >> np.arange(32, dtype=np.uint32)) & 1).mean(0)
  assert np.abs(freq - 0.5).max() < 5 * 0.5 / np.sqrt(b.size)
  flat = u.reshape(len(keys), -1)
  bound = 5 / np.sqrt(flat.size)
  assert abs(np.corrcoef(flat[:, :-1].ravel(), flat[:, 1:].ravel())[0, 1]) < bound
  assert abs(np.corrcoef(flat[:-1].ravel(), flat[1:].ravel())[0, 1]) < bound
  # Pairs of neighbours fill a 16 x 16 grid evenly (chi-square), which
  # linear (Weyl, LCG-like) sequences with uncorrelated neighbours do not.
  for lag in (1, 3, 96):
    cells = (np.floor(flat[:, :-lag] * 16) * 16
             + np.floor(flat[:, lag:] * 16)).astype(int).ravel()
    counts = np.bincount(cells, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4, lag
  again = np.asarray(_random.uniform(keys[3], (32, 32, 3)))
  np.testing.assert_array_equal(again, u[3])
  folded = np.asarray(_random.uniform(jax.random.fold_in(keys[3], 1),
                                      (32, 32, 3)))
  assert np.mean(folded == u[3]) < 1e-3


def test_poisson_sampler_matches_the_poisson_distribution():
  lams = np.asarray([0.3, 4.0, 25.0, 60.0], np.float32)
  k = np.arange(int(lams.max() + 8 * np.sqrt(lams.max()) + 10))
  u = jax.random.uniform(jax.random.key(0), (len(lams), 20000))
  counts = np.asarray(jax.jit(_noise_blur.poisson_inverse_cdf,
                               static_argnums=2)(
      u, jnp.broadcast_to(lams[:, None], u.shape), len(k)))
  for lam, c in zip(lams, counts):
    observed = (c[:, None] <= k[None, :]).mean(axis=0)
    assert np.abs(observed - stats.poisson.cdf(k, lam)).max() < 0.015, lam


@pytest.mark.parametrize("h,w", [(32, 32), (45, 64), (100, 130)])
def test_pixelate_is_bit_exact_with_the_reference_8bit_path(h, w):
  """imagecorruptions' PIL uint8 BOX + NEAREST, on noise (every rounding
  case) and smooth images, dense (<= 96 px) and sparse-tap paths."""
  rng = np.random.RandomState(h)
  images = np.stack([
      rng.randint(0, 256, (h, w, 3)),
      np.clip(128 + np.cumsum(rng.randint(-3, 4, (h, w, 3)), axis=1), 0,
              255)]).astype(np.uint8)
  x = jnp.asarray(images, jnp.float32) / 255.0
  for severity in SEVERITIES:
    with corruptions_bench.patched_imagecorruptions() as ic:
      ref = np.stack([np.asarray(ic.corruptions.pixelate(
          Image.fromarray(im), severity)) for im in images])
    for quantize in (False, True):
      levels = np.asarray(C.corrupt(x, "pixelate", severity,
                                    jax.random.key(0), quantize=quantize),
                          np.float64) * 255
      # Multiples of 1/255 up to float32's k / 255 (XLA divides by
      # multiplying with the reciprocal: 1 ulp), and the reference's levels.
      assert np.abs(levels - np.round(levels)).max() < 1e-4
      np.testing.assert_array_equal(np.round(levels), ref)


def test_quantize_truncates_like_the_reference_corrupt():
  """`quantize=True` against imagecorruptions.corrupt's uint8 output."""
  x = jnp.asarray(IMAGES, jnp.float32) / 255.0
  for name in ("contrast", "jpeg_compression", "pixelate"):
    with corruptions_bench.patched_imagecorruptions() as ic:
      ref = np.stack([ic.corrupt(im, corruption_name=name, severity=3)
                      for im in IMAGES])
    ours = np.asarray(C.corrupt(x, name, 3, jax.random.key(0),
                                quantize=True)) * 255
    assert np.abs(ours - np.round(ours)).max() < 1e-3
    d = np.abs(np.round(ours) - ref)
    # A float32 value within ~1e-5 of a level may truncate the other way.
    assert d.max() <= 1 and np.mean(d > 0) < 2e-3, (name, np.mean(d > 0))
  assert float(C.quantize_8bit(jnp.float32(100 / 255)) * 255) == 100.0
  assert float(C.quantize_8bit(jnp.float32(100.9 / 255)) * 255) == 100.0


def test_large_image_code_paths():
  """Paths taken only above the tested sizes: pixelate's sparse taps (> 96
  px) and glass_blur's row-by-row draws (> 64k draws per image)."""
  from crl.shifts.corruptions import _digital, _ops  # pylint: disable=g-import-not-at-top
  dense = _digital.pixelate_matrices(150)
  idx, wts = _digital._pixelate_taps(150)  # pylint: disable=protected-access
  line = np.random.RandomState(0).randint(0, 256, (150, 2)).astype(np.int32)
  for s in range(5):
    np.testing.assert_array_equal(
        _ops.apply_sparse_rows(jnp.asarray(line), idx[s], wts[s], axis=0),
        dense[s].astype(np.int64) @ line)
  key = jax.random.key(3)
  by_row = lambda r: _random.uniform(jax.random.fold_in(key, r), (32, 2))
  table = jnp.stack([by_row(r) for r in range(3 * 32)])
  index = lambda u: _noise_blur.glass_source_index(
      32, 32, jnp.int32(2), jnp.int32(3), u)
  np.testing.assert_array_equal(jax.jit(lambda: index(by_row))(),
                                jax.jit(index)(table))
  assert set(_noise_blur._glass_draw(key, 200, 200)) == {"key"}  # pylint: disable=protected-access


def test_api_tables():
  assert C.CORRUPTIONS == (
      "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
      "glass_blur", "motion_blur", "zoom_blur", "snow", "frost", "fog",
      "brightness", "contrast", "elastic_transform", "pixelate",
      "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter",
      "saturate")
  assert C.names("noise") == ("gaussian_noise", "shot_noise", "impulse_noise")
  assert C.names("extra") == ("speckle_noise", "gaussian_blur", "spatter",
                              "saturate")
  assert [len(C.names(k)) for k in ("blur", "weather", "digital")] == [4, 4, 4]
  p = C.SEVERITY_PARAMS
  assert [d["sigma"] for d in p["gaussian_noise"]] == [.08, .12, .18, .26, .38]
  assert [d["c"] for d in p["contrast"]] == [.4, .3, .2, .1, .05]
  assert [d["delta"] for d in p["brightness"]] == [.1, .2, .3, .4, .5]
  assert [d["factor"] for d in p["pixelate"]] == [.6, .5, .4, .3, .25]
  assert [d["quality"] for d in p["jpeg_compression"]] == [25, 18, 15, 10, 7]
  for name in C.CORRUPTIONS:
    assert len(p[name]) == 5
    text = C.describe(name)
    assert text.endswith(".") and text.count(". ") == 0, name


def test_bad_inputs_fail_with_clear_errors():
  x = jnp.zeros((2, 32, 32, 3))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="known corruptions: gaussian_noise"):
    C.corrupt(x, "gaussian", 1, key)
  with pytest.raises(ValueError, match=">= 32"):
    C.corrupt(jnp.zeros((2, 31, 40, 3)), "contrast", 1, key)
  with pytest.raises(ValueError, match="batch, height, width, 3"):
    C.corrupt(jnp.zeros((32, 32, 3)), "contrast", 1, key)
  for severity in (0, 6):
    with pytest.raises(ValueError, match="1..5"):
      C.corrupt(x, "contrast", severity, key)
  with pytest.raises(ValueError, match="kind"):
    C.names("color")


def test_one_compilation_serves_every_severity_and_runs_under_jit():
  x = jnp.asarray(IMAGES, jnp.float32) / 255.0
  fn = jax.jit(lambda x, s, k: C.corrupt(x, "gaussian_noise", s, k))
  outs = [fn(x, jnp.int32(s), jax.random.key(0)) for s in SEVERITIES]
  assert fn._cache_size() == 1  # pylint: disable=protected-access
  change = [float(jnp.abs(o - x).mean()) for o in outs]
  assert change == sorted(change) and change[0] < change[-1]
  before = C._corrupt_with_noise._cache_size()  # pylint: disable=protected-access
  for s in SEVERITIES:
    C.corrupt(x, "contrast", s, jax.random.key(0))
  after = C._corrupt_with_noise._cache_size()  # pylint: disable=protected-access
  assert after - before <= 1


def test_deterministic_from_key_and_different_per_example():
  same = IMAGES.copy()
  same[1] = same[0]  # Same batch shape as elsewhere: no new compilation.
  x = jnp.asarray(same, jnp.float32) / 255.0
  for name in ("gaussian_noise", "motion_blur"):
    a = np.asarray(C.corrupt(x, name, 3, jax.random.key(5)))
    b = np.asarray(C.corrupt(x, name, 3, jax.random.key(5)))
    c = np.asarray(C.corrupt(x, name, 3, jax.random.key(6)))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a[0], a[1])  # Same image, own draws.
    noise = C.draw_noise(jax.random.key(5), name, *x.shape[:3])
    np.testing.assert_array_equal(a, C.corrupt_with_noise(x, name, 3, noise))


def test_bench_table_format():
  result = {"resolution": 32, "severity": 3, "batch_size": 8, "device": "cpu",
            "per_type": {"contrast": {"ours_images_per_s": 1000.0,
                                      "reference_images_per_s": 10.0,
                                      "ratio": 100.0}},
            "overall": {"ours_images_per_s": 1000.0,
                        "reference_images_per_s": 10.0, "ratio": 100.0}}
  table = corruptions_bench.format_table(result)
  assert "contrast" in table and "100.0x" in table and "overall" in table
