"""Tracker-like observation noise: boundary flips, missed frames, flow noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.data import tracker_noise as tn


def _video(b=2, k=2, t=3, h=12):
  vis = np.zeros((b, k, t, h, h), np.float32)
  vis[:, 0, :, 2:6, 2:6] = 1.
  vis[:, 1, :, 5:10, 5:10] = 1.
  vis[:, 0] *= 1. - vis[:, 1]
  others = np.clip(vis.sum(1, keepdims=True) - vis, 0., 1.)
  gum = np.zeros_like(vis)
  gum[:, :, :, 0:2, 10:12] = 1.                    # an extra occluder
  flow = np.ones((b, t, h, h, 2), np.float32)
  return {"visible": jnp.asarray(vis),
          "occluder": jnp.asarray(np.maximum(others, gum)),
          "flow_fwd": jnp.asarray(flow), "flow_bwd": jnp.asarray(-flow),
          "frames": jnp.zeros((b, t, h, h, 3))}


def _keys(seed=0, b=2):
  return tn.video_keys(seed, jnp.asarray([3, 0]), jnp.arange(b))


def test_boundary_of_a_square_by_hand():
  m = np.zeros((8, 8), np.float32)
  m[2:6, 2:6] = 1.
  edge = np.asarray(tn.boundary(jnp.asarray(m)))
  expected = np.zeros((8, 8))
  expected[1:7, 1:7] = 1.                          # 6x6 dilation
  expected[3:5, 3:5] = 0.                          # minus the 2x2 erosion
  np.testing.assert_array_equal(edge, expected)


def test_no_noise_is_the_identity():
  video = _video()
  out = tn.perturb(tn.TrackerNoise(), video, _keys())
  for k, v in video.items():
    np.testing.assert_array_equal(out[k], v)


def test_boundary_flips_only_near_edges_and_are_seeded():
  video = _video()
  noise = tn.TrackerNoise(boundary_flip=0.5)
  fn = jax.jit(lambda v, k: tn.perturb(noise, v, k))
  out = fn(video, _keys())
  changed = np.asarray(out["visible"]) != np.asarray(video["visible"])
  edge = np.asarray(tn.boundary(video["visible"])) > 0.5
  assert changed.any() and not (changed & ~edge).any()
  frac = changed.sum() / edge.sum()
  assert 0.35 < frac < 0.65, frac
  again = fn(video, _keys())
  np.testing.assert_array_equal(again["visible"], out["visible"])
  other = fn(video, _keys(seed=1))
  assert np.any(np.asarray(other["visible"]) != np.asarray(out["visible"]))
  # All flips: exactly the mask XOR its boundary.
  full = tn.perturb(tn.TrackerNoise(boundary_flip=1.), video, _keys())
  np.testing.assert_array_equal(
      np.asarray(full["visible"]),
      np.logical_xor(np.asarray(video["visible"]) > 0.5, edge))


def test_missed_frames_and_occluders_follow_the_perturbed_masks():
  video = _video()
  out = tn.perturb(tn.TrackerNoise(missed_frames=1.), video, _keys())
  assert not np.asarray(out["visible"]).any()
  # Only the gum (not part of any object's visible mask) still occludes.
  occ = np.asarray(out["occluder"])
  assert occ[..., 0:2, 10:12].all() and occ.sum() == occ[..., 0:2,
                                                          10:12].sum()
  half = tn.perturb(tn.TrackerNoise(missed_frames=0.5), _video(b=64),
                    _keys(b=64))
  lost = ~np.asarray(half["visible"]).any((-2, -1))
  assert 0.35 < lost.mean() < 0.65
  # Object 0's occluder is object 1's perturbed mask (and the gum).
  vis = np.asarray(half["visible"])
  np.testing.assert_array_equal(
      np.asarray(half["occluder"])[:, 0],
      np.maximum(vis[:, 1], np.asarray(_video(b=64)["occluder"])[:, 0] *
                 (1. - np.asarray(_video(b=64)["visible"])[:, 1])))


def test_flow_noise_is_smooth_with_the_requested_scale():
  video = _video(b=8, h=32)
  out = tn.perturb(tn.TrackerNoise(flow_noise=2., flow_noise_cell=8),
                   video, _keys(b=8))
  err = np.asarray(out["flow_fwd"]) - np.asarray(video["flow_fwd"])
  assert 1. < err.std() < 2.5
  # Smooth: neighbouring pixels differ far less than the error itself.
  assert np.abs(np.diff(err, axis=2)).mean() < 0.3 * np.abs(err).mean()
  bwd = np.asarray(out["flow_bwd"]) - np.asarray(video["flow_bwd"])
  assert np.abs(bwd - err).mean() > 0.5          # independent errors
  np.testing.assert_array_equal(out["visible"], video["visible"])


def test_bad_noise_settings_fail_with_one_line():
  with pytest.raises(ValueError, match="boundary_flip"):
    tn.TrackerNoise(boundary_flip=1.5)
  with pytest.raises(ValueError, match="flow_noise"):
    tn.TrackerNoise(flow_noise=-1.)
  with pytest.raises(ValueError, match="unknown key"):
    tn.from_config({"blur": 1.})
