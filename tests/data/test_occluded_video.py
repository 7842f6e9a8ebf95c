"""OccludedVideo: masks, exact flow, chewing gum, shift, determinism."""

import jax.numpy as jnp
import numpy as np
import pytest

from crl.data import occluded_video as ov

# Few shapes: the generator compiles one SDF per shape.
KW = dict(resolution=32, num_frames=4, num_objects=3,
          shapes=("circle", "square", "triangle"),
          shifted_shapes=("hexagon", "cross"), eval_examples=4)
INDICES = jnp.arange(6)


@pytest.fixture(scope="module")
def ds():
  return ov.OccludedVideo(**KW)


@pytest.fixture(scope="module")
def videos(ds):
  """One compiled generator, three distributions (the code is data)."""
  return {name: {k: np.asarray(v) for k, v in ds.sample(
      "test", INDICES,
      intervention=None if name == "test" else name).items()}
          for name in ("test", "gum", "shifted")}


def test_shapes_and_ranges(ds, videos):
  v = videos["test"]
  n, k, t, r = len(INDICES), 3, 4, 32
  assert v["frames"].shape == (n, t, r, r, 3) == (n,) + ds.input_shape
  for key in ("visible", "amodal", "occluder"):
    assert v[key].shape == (n, k, t, r, r) == (n,) + ds.mask_shape
    assert set(np.unique(v[key])) <= {0., 1.}
  assert v["flow_fwd"].shape == v["flow_bwd"].shape == (n, t, r, r, 2)
  assert 0. <= v["frames"].min() and v["frames"].max() <= 1.
  assert v["shape"].shape == (n, k)


@pytest.mark.parametrize("split", ["test", "gum", "shifted"])
def test_amodal_equals_visible_where_nothing_occludes(videos, split):
  v = videos[split]
  vis, amo, occ = v["visible"], v["amodal"], v["occluder"]
  np.testing.assert_array_equal(amo * (1. - occ), vis)
  assert np.all(vis <= amo)
  assert not np.any(vis * occ)
  # Visible masks of different objects never overlap, and the occluder of
  # object k is everything visible but k (objects and gum).
  assert np.all(vis.sum(1) + v["gum"][:, None].sum(1) <= 1.)
  others = vis.sum(1, keepdims=True) - vis + v["gum"][:, None]
  np.testing.assert_array_equal(occ, (others > 0).astype(np.float32))


def test_occlusions_happen(videos):
  """Depth order: the front object is never covered by another object, the
  others are sometimes (the generator makes objects cross)."""
  v = videos["test"]
  rate = np.asarray(ov.occlusion_rate(v["visible"], v["amodal"]))
  assert np.all(rate[:, -1] == 0.)                      # front object
  assert np.mean(rate[:, :-1] > 0.1) > 0.2
  assert np.all(v["amodal"].sum((-2, -1)) > 0)          # objects in frame


def _bilinear(field, x, y):
  """NumPy bilinear sampling of `field` `[H, W, C]` at `(x, y)` `[n]`
  (all points inside)."""
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  fx, fy = (x - x0)[:, None], (y - y0)[:, None]
  return ((1 - fx) * (1 - fy) * field[y0, x0] + fx * (1 - fy) *
          field[y0, x0 + 1] + (1 - fx) * fy * field[y0 + 1, x0] +
          fx * fy * field[y0 + 1, x0 + 1])


def _dilate(mask):
  out = mask.copy()
  for dy in (-1, 0, 1):
    for dx in (-1, 0, 1):
      out |= np.roll(np.roll(mask, dy, 0), dx, 1)
  return out


@pytest.mark.parametrize("split", ["test", "shifted"])
def test_flow_moves_each_mask_onto_its_next_position(videos, split):
  v = videos[split]
  res = KW["resolution"]
  hits, hits_still, cycle_errors = [], [], []
  for i in range(len(INDICES)):
    for k in range(3):
      for t in range(KW["num_frames"] - 1):
        vis = v["visible"][i, k, t] > 0
        rows, cols = np.nonzero(vis)
        flow = v["flow_fwd"][i, t][rows, cols]
        x, y = cols + flow[:, 0], rows + flow[:, 1]
        # Every visible pixel of frame t lands on the object in frame t + 1
        # (nearest pixel, up to one pixel of rasterisation).
        target = _dilate(v["amodal"][i, k, t + 1] > 0)
        xi = np.clip(np.round(x).astype(int), 0, res - 1)
        yi = np.clip(np.round(y).astype(int), 0, res - 1)
        hits.append(target[yi, xi])
        still = v["amodal"][i, k, t + 1][rows, cols] > 0
        hits_still.append(still)
        # Exactness: where frame t + 1 shows the object all around the
        # landing point, its backward flow (affine there, so bilinear
        # interpolation is exact) brings the point back.
        nxt = v["visible"][i, k, t + 1] > 0
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        inside = (x0 >= 0) & (y0 >= 0) & (x0 < res - 1) & (y0 < res - 1)
        x0c, y0c = np.clip(x0, 0, res - 2), np.clip(y0, 0, res - 2)
        inside &= (nxt[y0c, x0c] & nxt[y0c + 1, x0c] & nxt[y0c, x0c + 1] &
                   nxt[y0c + 1, x0c + 1])
        if inside.any():
          back = _bilinear(v["flow_bwd"][i, t + 1], x[inside], y[inside])
          cycle_errors.append(np.abs(np.stack(
              [x[inside] + back[:, 0] - cols[inside],
               y[inside] + back[:, 1] - rows[inside]], 1)).max())
  hits = np.concatenate(hits)
  assert hits.size > 500 and hits.mean() > 0.995, hits.mean()
  assert len(cycle_errors) > 20 and max(cycle_errors) < 1e-3, max(
      cycle_errors)
  # Without the flow the masks do not line up as well (the objects move).
  assert np.concatenate(hits_still).mean() < 0.97


def test_flow_is_zero_on_the_static_background(videos):
  v = videos["test"]
  background = (v["visible"].sum(1) + v["gum"]) == 0     # [N, T, R, R]
  assert np.all(v["flow_fwd"][background] == 0.)
  assert np.abs(v["flow_fwd"][~background]).max() > 0.1


def test_chewing_gum_rides_with_one_object(videos):
  g, plain = videos["gum"], videos["test"]
  assert plain["gum"].sum() == 0
  assert np.all(g["gum"].sum((-2, -1)) > 0)              # every frame
  # The gum covers part of exactly one object's amodal mask in most frames
  # (it is fixed in that object's coordinates).
  covered = (g["amodal"] * g["gum"][:, None]).sum((-2, -1)) > 0  # [N, K, T]
  owner = covered.sum(-1).argmax(-1)
  assert np.mean(covered[np.arange(len(INDICES)), owner]) > 0.9


def test_shifted_distribution_uses_other_shapes(ds, videos):
  assert np.all(videos["test"]["shape"] < len(ds.shapes))
  assert np.all(videos["shifted"]["shape"] >= len(ds.shapes))
  assert ds.all_shapes[len(ds.shapes):] == ds.shifted_shapes


def test_pure_function_of_seed_split_and_index(ds, videos):
  again = ds.sample("test", INDICES)
  np.testing.assert_array_equal(np.asarray(again["frames"]),
                                videos["test"]["frames"])
  train = ds.sample("train", INDICES)
  assert not np.array_equal(np.asarray(train["frames"]),
                            videos["test"]["frames"])
  # Example i does not depend on the other indices of the batch.
  one = ds.sample("test", INDICES[::-1])
  np.testing.assert_array_equal(np.asarray(one["amodal"])[::-1],
                                videos["test"]["amodal"])


def test_interface_and_errors(ds):
  assert set(ds.eval_splits()) == {"test", "gum", "shifted"}
  assert ds.num_examples("shifted") == 4 and ds.num_examples("train") is None
  np.testing.assert_array_equal(ds.encode("train", "shifted+gum"), [1, 3])
  assert set(ov.OBSERVED_KEYS) | {"amodal"} == set(ds.batch_keys)
  assert "amodal" not in ov.OBSERVED_KEYS
  with pytest.raises(ValueError, match="Unknown eval split"):
    ds.num_examples("rain")
  with pytest.raises(ValueError, match="unknown.*'blob'"):
    ov.OccludedVideo(shapes=("circle", "blob"))
  with pytest.raises(ValueError, match="num_frames"):
    ov.OccludedVideo(num_frames=2)
  with pytest.raises(TypeError, match="unknown config key"):
    ov.OccludedVideo(frames=8)
