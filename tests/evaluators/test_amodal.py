"""Amodal metrics, the per-frame protocol and the baselines, by hand."""

import numpy as np
import pytest
from scipy import optimize

from crl.evaluators import amodal
from crl.evaluators import amodal_metrics
from crl.evaluators import amodal_official


def _box(shape, top, left, h, w):
  m = np.zeros(shape, np.float32)
  m[top:top + h, left:left + w] = 1.
  return m


def test_composite_uses_the_prediction_only_under_the_occluder():
  visible = _box((6, 6), 1, 1, 2, 2)
  occluder = _box((6, 6), 0, 3, 6, 3)
  prob = np.full((6, 6), 0.9, np.float32)      # "everything is the object"
  prob[:, 5] = 0.2
  out = np.asarray(amodal_metrics.composite(visible, occluder, prob))
  expected = visible.copy()
  expected[:, 3:5] = 1.                         # occluded and prob > 0.5
  np.testing.assert_array_equal(out, expected)


def test_iou_full_and_restricted_to_a_region():
  pred = _box((4, 4), 0, 0, 2, 2)               # 4 pixels
  target = _box((4, 4), 0, 1, 2, 2)             # 4 pixels, 2 shared
  np.testing.assert_allclose(amodal_metrics.iou(pred, target),
                             (2 + 1e-6) / (6 + 1e-6), rtol=1e-6)
  region = _box((4, 4), 0, 0, 4, 1)             # column 0 only
  np.testing.assert_allclose(amodal_metrics.iou(pred, target, region),
                             1e-6 / (2 + 1e-6), rtol=1e-5)
  empty = np.zeros((4, 4), np.float32)
  np.testing.assert_allclose(amodal_metrics.iou(empty, empty), 1.)
  batch = np.stack([pred, target])
  np.testing.assert_allclose(amodal_metrics.iou(batch, batch), [1., 1.])


def test_object_frame_stats_of_a_hand_built_occlusion():
  amodal_mask = _box((8, 8), 2, 2, 4, 4)        # 16 pixels
  occluder = _box((8, 8), 0, 4, 8, 4)           # hides the right half
  visible = amodal_mask * (1. - occluder)       # 8 pixels
  pred = amodal_metrics.composite(visible, occluder, visible)  # visible baseline
  stats = amodal_metrics.object_frame_stats(pred, amodal_mask, visible, occluder)
  np.testing.assert_allclose(stats["occlusion_rate"], 0.5)
  np.testing.assert_allclose(stats["iou_full"], (8 + 1e-6) / (16 + 1e-6))
  np.testing.assert_allclose(stats["iou_occluded"], 1e-6 / (8 + 1e-6),
                             rtol=1e-4)
  assert bool(stats["present"])
  perfect = amodal_metrics.composite(visible, occluder, amodal_mask)
  stats = amodal_metrics.object_frame_stats(perfect, amodal_mask, visible, occluder)
  np.testing.assert_allclose(stats["iou_occluded"], 1.)


def test_per_frame_protocol_by_hand():
  # 1 video, 2 objects, 5 frames.
  values = np.array([[[0.1, 0.2, 0.3, 0.4, 0.5],
                      [0.9, 0.8, 0.7, 0.6, 0.5]]])
  rate = np.array([[[0.5, 0.5, 0.05, 0.3, 0.5],
                    [0.2, 0.8, 0.2, 0.7, 0.4]]])
  present = np.ones_like(values, bool)
  # Frames 0 and 4 are the tracks' ends; frame 1 keeps object 0 (object 1
  # is 0.8 occluded), frame 2 keeps object 1 (object 0 only 0.05), frame 3
  # keeps both (0.7 is inclusive): mean(0.2, 0.7, mean(0.4, 0.6)).
  value, frames = amodal_metrics.per_frame_miou(values, rate, present)
  assert frames == 3
  np.testing.assert_allclose(value, np.mean([0.2, 0.7, 0.5]))
  # Without dropping the ends, frames 0 and 4 count too (both objects).
  value, frames = amodal_metrics.per_frame_miou(values, rate, present,
                                        drop_ends=False)
  assert frames == 5
  np.testing.assert_allclose(value, np.mean([0.5, 0.2, 0.7, 0.5, 0.5]))
  # The mean over frames of per-frame means differs from the object mean.
  plain, count = amodal_metrics.object_frame_miou(values, present)
  assert count == 10 and plain == pytest.approx(0.5)


def test_track_ends_follow_presence():
  values = np.full((1, 1, 6), 0.5)
  values[0, 0, 2] = 1.
  rate = np.full((1, 1, 6), 0.3)
  present = np.array([[[False, True, True, True, False, False]]])
  value, frames = amodal_metrics.per_frame_miou(values, rate, present)
  assert frames == 1 and value == pytest.approx(1.)   # only frame 2 left
  value, frames = amodal_metrics.per_frame_miou(values, rate, ~present | present,
                                        min_rate=0.5)
  assert frames == 0 and np.isnan(value)
  summary = amodal_metrics.summarize({"iou_full": values, "iou_occluded": values,
                              "occlusion_rate": rate + 0.5,
                              "present": present})
  assert summary["full_miou"] is None and summary["num_frames"] == 0
  assert summary["full_miou_all"] == pytest.approx(2. / 3.)


def test_convex_hull_of_hand_built_masks():
  l_shape = np.zeros((7, 7), np.float32)
  l_shape[1:6, 1] = 1.
  l_shape[5, 1:6] = 1.
  hull = amodal.convex_hull_mask(l_shape)
  # The triangle (1,1), (5,1), (5,5) in (row, col): pixels with col <= row.
  rows, cols = np.mgrid[:7, :7]
  expected = ((rows >= 1) & (rows <= 5) & (cols >= 1) &
              (cols - 1 <= rows - 1)).astype(np.float32)
  np.testing.assert_array_equal(hull, expected)
  ring = _box((8, 8), 1, 1, 6, 6) - _box((8, 8), 2, 2, 4, 4)
  np.testing.assert_array_equal(amodal.convex_hull_mask(ring),
                                _box((8, 8), 1, 1, 6, 6))
  line = _box((5, 5), 2, 0, 1, 5)               # collinear: itself
  np.testing.assert_array_equal(amodal.convex_hull_mask(line), line)
  two = _box((5, 5), 1, 1, 1, 2)
  np.testing.assert_array_equal(amodal.convex_hull_mask(two), two)
  batch = amodal.convex_hull_masks(np.stack([[ring, 0. * ring]]))
  assert batch.shape == (1, 2, 8, 8)
  np.testing.assert_array_equal(batch[0, 0], _box((8, 8), 1, 1, 6, 6))
  assert batch[0, 1].sum() == 0


def test_convex_hull_matches_a_brute_force_reference():
  rs = np.random.RandomState(0)
  for _ in range(3):
    mask = (rs.rand(8, 8) < 0.15).astype(np.float32)
    if mask.sum() < 3:
      continue
    hull = amodal.convex_hull_mask(mask)
    # Reference: a pixel centre is in the hull iff it is a convex
    # combination of the mask's pixel centres (checked by linear programming
    # through scipy.optimize).
    pts = np.argwhere(mask > 0).astype(float)
    for (r, c), value in np.ndenumerate(hull):
      res = optimize.linprog(
          np.zeros(len(pts)), A_eq=np.vstack([pts.T, np.ones(len(pts))]),
          b_eq=[r, c, 1.], bounds=(0, None), method="highs")
      assert bool(res.status == 0) == bool(value), (r, c)


def test_baselines_on_a_hand_built_occlusion():
  amodal_mask = _box((8, 8), 2, 2, 4, 4)
  occluder = _box((8, 8), 0, 3, 8, 2)           # a vertical bar, 2 wide
  visible = amodal_mask * (1. - occluder)       # two 4x1 / 4x1 pieces
  for name, expect_occluded in (("visible", 0.), ("convex_hull", 1.)):
    guess = amodal.baseline_predictions(name, visible)
    pred = amodal_metrics.composite(visible, occluder, guess)
    stats = amodal_metrics.object_frame_stats(pred, amodal_mask, visible, occluder)
    np.testing.assert_allclose(stats["iou_occluded"], expect_occluded,
                               atol=1e-5)
  with pytest.raises(ValueError, match="Unknown baseline"):
    amodal.baseline_predictions("oracle", visible)


def test_format_table():
  table = amodal_metrics.format_table({"test": {"savos": {
      "full_miou": 0.9, "occluded_miou": 0.5, "full_miou_all": None,
      "occluded_miou_all": 0.25}}})
  assert "savos" in table and "0.5000" in table and "-" in table


def test_box_geometry_by_hand():
  masks = np.stack([_box((10, 12), 2, 3, 4, 5), np.zeros((10, 12))])
  geo = {k: np.asarray(v) for k, v in amodal_metrics.box_geometry(masks).items()}
  np.testing.assert_array_equal(geo["height"], [4, 0])
  np.testing.assert_array_equal(geo["width"], [5, 0])
  # rows 2..5 of 10, columns 3..7 of 12: 2 from the top edge.
  np.testing.assert_array_equal(geo["border"], [2, -1])


def _official_tracks():
  """1 video, 4 tracks of 14 frames on 64x64 frames, occlusion 0.5 (an
  8-px-wide occluder over the left half of a 16x16 amodal box) except
  where noted; IoU values are set by hand per track."""
  t, size = 14, 64
  amodal_m = np.zeros((4, t, size, size), np.float32)
  occluder = np.zeros_like(amodal_m)
  amodal_m[:, :, 20:36, 20:36] = 1.
  occluder[:, :, 20:36, 20:28] = 1.
  amodal_m[1, :, 2:18, 20:36] = 1.                  # track 1: near the top
  amodal_m[1, :, 18:36] = 0.
  occluder[1, :, 2:18, 20:28] = 1.
  amodal_m[2, 11:] = 0.                             # track 2: 11 frames
  occluder[3, :7, 20:36, 20:31] = 1.                # track 3: visible 16x5
  occluder[3, 7:, 20:36, 20:22] = 1.                # then occlusion 0.125
  visible = amodal_m * (1. - occluder)
  return amodal_m, visible, occluder


def test_official_protocol_filters_hand_built_tracks():
  amodal_m, visible, occluder = _official_tracks()
  pred = amodal_metrics.composite(visible, occluder, amodal_m)   # perfect
  stats = {k: np.asarray(v)[None] for k, v in amodal_metrics.object_frame_stats(
      pred, amodal_m, visible, occluder).items()}
  # Per-track IoUs (constant over time) to see which tracks are kept.
  stats["iou_full"] = np.broadcast_to(
      np.asarray([0.9, 0.1, 0.2, 0.3])[None, :, None], (1, 4, 14))
  # Pixel sizes for these small boxes (amodal 16x16, visible 16x8).
  protocol = amodal_official.OfficialProtocol(min_amodal_side=12, min_visible_side=6)
  assert not amodal_official.OfficialProtocol().keep(stats).any()   # 20x20, 8x8
  keep = protocol.keep(stats)
  # Track 1 is 2 px from the border; track 2 is present in 11 > 10 frames;
  # track 3's visible box is 16 x 5 in frames 0..6 (occlusion 11/16).
  assert keep[0, 0].all() and not keep[0, 1].any()
  assert keep[0, 2, :11].all() and not keep[0, 2, 11:].any()
  assert not keep[0, 3, :7].any() and keep[0, 3, 7:].all()
  out = amodal_metrics.summarize(stats, protocols={"official": protocol})
  # Frames 1..12 without ends; frame f keeps track 0 (0.9), track 2 while
  # f < 10 (its last present frame 10 is dropped), track 3 for f >= 7
  # (occlusion 2/16 = 0.125 is inside (0.1, 0.7)).
  frame_means = []
  for f in range(1, 13):
    vals = [0.9] + ([0.2] if f < 10 else []) + ([0.3] if f >= 7 else [])
    frame_means.append(np.mean(vals))
  np.testing.assert_allclose(out["official_full_miou"], np.mean(frame_means))
  assert out["official_num_frames"] == 12
  np.testing.assert_allclose(out["official_occluded_miou"], 1.)
  # A track of 10 frames is not "longer than 10 frames".
  short = dict(stats, present=stats["present"].copy())
  short["present"][0, 2, 10] = False
  assert not protocol.keep(short)[0, 2].any()


def test_official_protocol_counts_what_each_filter_removes():
  amodal_m, visible, occluder = _official_tracks()
  stats = {k: np.asarray(v)[None] for k, v in amodal_metrics.object_frame_stats(
      visible, amodal_m, visible, occluder).items()}
  protocol = amodal_official.OfficialProtocol(min_amodal_side=12,
                                              min_visible_side=6)
  out = protocol.removed(stats)
  # 14 + 14 + 11 + 14 object-frames; track 1 is near the border, track 3's
  # visible box is 5 px wide in its first 7 frames; every occlusion rate
  # (0.5, 11/16, 0.125) is inside (0.1, 0.7).
  assert out["present"] == {"object_frames": 53, "tracks": 4}
  assert out["border"] == {"object_frames": 14, "tracks": 1}
  assert out["visible_size"] == {"object_frames": 7, "tracks": 0}
  for name in ("amodal_size", "track_length", "occlusion"):
    assert out[name] == {"object_frames": 0, "tracks": 0}, name
  assert out["kept"] == {"object_frames": 32, "tracks": 3}
  # Track 2 (11 frames) is not longer than 11 frames.
  longer = protocol._replace(min_track_frames=11).removed(stats)
  assert longer["track_length"] == {"object_frames": 11, "tracks": 1}
  assert longer["kept"] == {"object_frames": 21, "tracks": 2}


def test_official_protocol_occlusion_bounds_are_exclusive():
  values = np.full((1, 1, 5), 0.5)
  present = np.ones((1, 1, 5), bool)
  rate = np.asarray([[[0.3, 0.1, 0.7, 0.3, 0.3]]])
  inclusive = amodal_metrics.per_frame_miou(values, rate, present)[1]
  exclusive = amodal_metrics.per_frame_miou(values, rate, present, exclusive=True)[1]
  assert (inclusive, exclusive) == (3, 1)


def test_format_table_shows_official_columns_when_present():
  row = {"full_miou": 0.9, "occluded_miou": 0.5, "full_miou_all": 0.8,
         "occluded_miou_all": 0.4, "official_full_miou": 0.7,
         "official_occluded_miou": None}
  table = amodal_metrics.format_table({"test": {"savos": row}})
  assert "official_full_miou" in table and "0.7000" in table
