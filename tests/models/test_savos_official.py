"""SaVos's options matching the public code: the bottleneck mask decoder,
the full-resolution flow residual and the official loss normalisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.models import savos
from crl.models import savos_layers as sl
from crl.models import savos_nets as nets
from crl.trainers import savos_losses as losses
from tests.models import test_savos as base

P = base.P
OFFICIAL = dict(base.TINY, mask_decoder="bottleneck", flow_decoder="full",
                bottleneck=16, input_features=8)


@pytest.fixture(scope="module")
def official():
  model = savos.SaVos(**OFFICIAL)
  params = jax.jit(lambda k: savos.init_params(model, k, base._video()))(
      jax.random.PRNGKey(0))

  def loss(p, v):
    out = model.apply({"params": p}, v)
    return losses.self_supervised_loss(out, normalization="official")[0], out

  grad_fn = jax.jit(jax.grad(loss, has_aux=True))
  return model, params, lambda p, v: grad_fn(p, v)[::-1]


def test_official_model_shapes_init_and_gradients(official):
  model, params, fn = official
  ref = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                          base._video())["params"])
  assert jax.tree.structure(ref) == jax.tree.structure(params)
  # No skips: the mask decoder has its own input encoder and a bottleneck.
  assert {"bottleneck", "input_vector"} <= set(params["mask_decoder"])
  assert "bottleneck" in params["flow_decoder"]
  out, g = fn(params, base._video())
  assert out["amodal"].shape == (1, 2, 4, P, P)
  assert out["flow_fwd"].shape == (1, 2, 4, P, P, 2)
  # The flow residual starts at zero (output layer zero-initialised).
  b = sl.base_flow(out["patches"]["flow_fwd"], out["patches"]["visible"])
  np.testing.assert_allclose(out["flow_fwd"], b, atol=1e-6)
  for name, sub in jax.tree.map(np.asarray, g).items():
    leaves = jax.tree.leaves(sub)
    assert all(np.all(np.isfinite(x)) for x in leaves), name
    assert sum(np.abs(x).sum() for x in leaves) > 0., name


def test_full_flow_residual_is_unbounded_and_full_resolution():
  """A residual layer with a big output bias: the bounded decoder clips it
  at max_flow_residual, the full one passes it and varies per pixel."""
  state = jnp.ones((2, 8))
  flow = jnp.asarray(np.random.RandomState(0).randn(2, P, P, 2), jnp.float32)
  dec = nets.BottleneckDecoder((8,), 2, 4, 8, 16)
  bounded = nets.FlowDecoder(4, 2.0)
  shift = lambda path, x: x + 50. if "out" in jax.tree_util.keystr(
      path) and "bias" in jax.tree_util.keystr(path) else x

  @jax.jit
  def both(key):
    params = jax.tree_util.tree_map_with_path(
        shift, dec.init(key, state, flow))
    bp = jax.tree_util.tree_map_with_path(
        shift, bounded.init(key, state, flow, flow[..., 0]))
    return (dec.apply(params, state, flow),
            bounded.apply(bp, state, flow, flow[..., 0]))

  out, clipped = map(np.asarray, both(jax.random.PRNGKey(1)))
  assert out.shape == (2, P, P, 2) and out.min() > 10.
  # Full resolution: neighbouring pixels of a 4x4 block differ.
  assert np.abs(np.diff(out[:, :4, :4], axis=2)).max() > 1e-4
  assert clipped.min() > 1.9 and np.abs(clipped).max() <= 2.0 + 1e-6


def test_unknown_decoder_names_fail_at_construction():
  with pytest.raises(ValueError, match="mask_decoder"):
    savos.SaVos(mask_decoder="unet")
  with pytest.raises(ValueError, match="flow_decoder"):
    savos.SaVos(flow_decoder="raft")
  with pytest.raises(ValueError, match="normalization"):
    losses.reconstruction_loss(jnp.zeros((3, 2, 2)), jnp.zeros((3, 2, 2)),
                               jnp.zeros((3, 2, 2)), "sum")


def test_official_reconstruction_sums_pixels_and_drops_end_frames():
  t = 4
  vis = np.stack([base._square(left=3 + i) for i in range(t)])[None]
  occ = np.zeros_like(vis)
  occ[..., 5:11, 7:10] = 1.
  pred = np.full_like(vis, 0.3)
  pred[:, 0] = 0.9      # end frames: ignored by the official normalisation
  pred[:, -1] = 0.01
  value = losses.reconstruction_loss(jnp.asarray(pred), jnp.asarray(vis),
                                     jnp.asarray(occ), "official")
  bce = -(vis * np.log(pred) + (1 - vis) * np.log(1 - pred)) * (1 - occ)
  expected = (bce[0, 1].sum() + bce[0, 2].sum()) / 2.
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_official_consistency_is_time_cumulative():
  """Zero flow (warping is the identity): pair i of T - 1 pairs counts
  T - 1 - i times forward and i + 1 times backward (its own time order)."""
  t = 4
  masks = np.stack([base._square(side=4 + 2 * i) for i in range(t)])[None]
  zero = jnp.zeros((1, t, P, P, 2))
  d = [1. - float(losses.soft_iou(masks[0, i], masks[0, i + 1]))
       for i in range(t - 1)]
  assert len(set(np.round(d, 6))) == 3
  value = losses.consistency_loss(jnp.asarray(masks), zero, zero, "official")
  expected = (3 * d[0] + 2 * d[1] + d[2]) + (d[0] + 2 * d[1] + 3 * d[2])
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  mean = losses.consistency_loss(jnp.asarray(masks), zero, zero, "mean")
  np.testing.assert_allclose(mean, np.mean(d), rtol=1e-5)


def test_official_photometric_sums_pixels_per_pair():
  t = 3
  levels = np.asarray([0.1, 0.4, 0.5], np.float32)
  frames = np.broadcast_to(levels[:, None, None, None], (t, P, P, 3))[None]
  vis = np.zeros((1, t, P, P), np.float32)
  vis[..., 2:14, 2:14] = 1.
  zero = jnp.zeros((1, t, P, P, 2))
  value = losses.photometric_loss(jnp.asarray(frames), jnp.asarray(vis), zero,
                                  zero, "official")
  per_pair = 3 * 144 * np.abs(np.diff(levels))
  np.testing.assert_allclose(value, 2 * per_pair.mean(), rtol=1e-5)


def test_frame_boxes_follow_each_frame_at_the_patch_aspect():
  vis = np.zeros((1, 3, 20, 40), np.float32)
  vis[0, 0, 4:8, 10:14] = 1.          # 4 x 4 -> 6 high, 12 wide (aspect 2)
  vis[0, 1, 2:4, 20:36] = 1.          # 2 x 16 -> 24 wide, 12 high
  boxes = np.asarray(sl.frame_boxes(jnp.asarray(vis), 1.5, 2., 2.))
  np.testing.assert_allclose(boxes[0, 0], [12., 6., 12., 6.])
  np.testing.assert_allclose(boxes[0, 1], [28., 3., 24., 12.])
  # Frame 2 shows nothing: the box of the union of the visible masks
  # (rows 2..8, columns 10..36: 26 wide -> 39 x 19.5).
  np.testing.assert_allclose(boxes[0, 2], [23., 5., 39., 19.5])


def test_crop_rect_then_paste_rect_is_the_identity_at_unit_scale():
  rs = np.random.RandomState(0)
  image = jnp.asarray(rs.rand(12, 20, 2).astype(np.float32))
  box = jnp.asarray([10., 6., 8., 4.])             # 8 wide, 4 high
  patch = sl.crop_rect(image, box, 4, 8)
  np.testing.assert_allclose(patch, image[4:8, 6:14], atol=1e-6)
  back = np.asarray(sl.paste_rect(patch, box, 12, 20))
  np.testing.assert_allclose(back[4:8, 6:14], image[4:8, 6:14], atol=1e-6)
  assert np.all(back[:4] == 0.) and np.all(back[:, 14:] == 0.)


FRAME = dict(OFFICIAL, boxes="frame", patch_width=32)


def test_frame_box_model_outputs_frames_and_never_sees_the_frame():
  model = savos.SaVos(**FRAME)
  video = base._video()
  params = jax.jit(lambda k: savos.init_params(model, k, video))(
      jax.random.PRNGKey(0))
  # One compilation: the loss's gradients and the outputs.
  fn = jax.jit(jax.grad(lambda p, v: (lambda out: (
      losses.self_supervised_loss(out, normalization="official")[0], out))(
          model.apply({"params": p}, v)), has_aux=True))
  grads, out = fn(params, video)
  assert out["boxes"].shape == (1, 2, 4, 4)
  assert out["amodal"].shape == (1, 2, 4, 24, 24)     # frame-sized
  assert out["patches"]["frames"].shape == (1, 2, 4, 24, 24, 3)
  frames = savos.to_frames(out["amodal"], out["boxes"], 24, 24)
  np.testing.assert_array_equal(frames, out["amodal"])
  np.testing.assert_array_equal(
      savos.to_model_space(video["visible"], out["boxes"], 16),
      video["visible"])
  # Frame 1's prediction is carried from frames 0 and 2 only.
  changed = dict(video)
  changed["frames"] = video["frames"].at[:, 1].set(0.3)
  changed["visible"] = video["visible"].at[:, 0, 1, 5:8, 6:9].set(0.)
  changed["flow_fwd"] = video["flow_fwd"].at[:, 1].add(0.7)
  other = fn(params, changed)[1]
  np.testing.assert_allclose(out["amodal"][:, :, 1], other["amodal"][:, :, 1],
                             atol=1e-6)
  assert np.abs(np.asarray(out["amodal"][:, :, 2] -
                           other["amodal"][:, :, 2])).max() > 1e-4
  # The losses run on the frame-space outputs and train every part.
  for name, sub in jax.tree.map(np.asarray, grads).items():
    assert sum(np.abs(x).sum() for x in jax.tree.leaves(sub)) > 0., name


def test_non_square_patches_need_frame_boxes():
  with pytest.raises(ValueError, match="patch_width"):
    savos.SaVos(patch_width=64)
  with pytest.raises(ValueError, match="boxes"):
    savos.SaVos(boxes="video")
