"""SaVos: sampling, warping, crops, the model's wiring and the losses."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.models import savos
from crl.models import savos_layers as sl
from crl.trainers import savos_losses as losses

P = 16


def _square(size=P, top=5, left=4, side=6):
  m = np.zeros((size, size), np.float32)
  m[top:top + side, left:left + side] = 1.
  return m


# Sampling and warping -----------------------------------------------------------


def test_warp_by_integer_flow_shifts_the_image():
  img = np.random.RandomState(0).rand(P, P, 2).astype(np.float32)
  flow = np.zeros((P, P, 2), np.float32)
  flow[..., 0], flow[..., 1] = 2., -1.       # 2 right, 1 up
  out = np.asarray(jax.jit(sl.warp)(img, flow))
  np.testing.assert_allclose(out[:P - 1, 2:], img[1:, :P - 2], atol=1e-6)
  assert np.all(out[:, :2] == 0.) and np.all(out[P - 1] == 0.)  # zero fill


def test_warp_interpolates_bilinearly_and_batches():
  img = np.zeros((2, 3, 4, 4, 1), np.float32)
  img[..., 1, 1, 0], img[..., 1, 2, 0] = 1., 3.
  flow = np.zeros((2, 3, 4, 4, 2), np.float32)
  flow[..., 0] = 0.25                         # sample a quarter pixel left
  out = np.asarray(jax.jit(sl.warp)(img, flow))
  assert out.shape == img.shape
  np.testing.assert_allclose(out[0, 0, 1, :, 0], [0., 0.75, 1. * 0.25 + 3. *
                                                  0.75, 3. * 0.25], atol=1e-6)


def test_warp_gradient_reaches_the_flow():
  img = jnp.asarray(_square()[..., None])
  def f(dx):
    flow = jnp.zeros((P, P, 2)).at[..., 0].set(dx)
    return jnp.sum(sl.warp(img, flow) * jnp.asarray(_square(left=5)[..., None]))
  g = jax.jit(jax.grad(f))(0.3)
  assert np.isfinite(g) and g > 0   # moving right increases the overlap


def test_warp_rejects_mismatched_flow():
  with pytest.raises(ValueError, match="does not match"):
    sl.warp(jnp.zeros((4, 4, 1)), jnp.zeros((4, 5, 2)))


# Boxes, crops, base flow -----------------------------------------------------------


def test_track_boxes():
  vis = np.zeros((2, 3, 20, 20), np.float32)
  vis[0, 0, 2:6, 4:8] = 1.    # union over time: rows 2..9, cols 4..11
  vis[0, 2, 6:10, 8:12] = 1.
  boxes = np.asarray(jax.jit(sl.track_boxes, static_argnums=(1, 2))(
      vis, 1.5, 4.))
  np.testing.assert_allclose(boxes[0], [8., 6., 12.])
  np.testing.assert_allclose(boxes[1], [10., 10., 10.])   # never visible


def test_crop_then_paste_is_the_identity_at_unit_scale():
  frames = np.zeros((2, 24, 24, 1), np.float32)
  frames[:, 6:14, 9:15] = 1.
  frames[1, 10, 12] = 0.5
  box = jnp.asarray([12., 10., float(P)])     # centre (x, y), side = P
  patch, back = jax.jit(lambda f, b: (sl.crop(f, b, P), sl.paste(
      sl.crop(f, b, P), b, 24, 24)))(frames, box)
  assert patch.shape == (2, P, P, 1)
  np.testing.assert_allclose(np.asarray(patch), frames[:, 2:18, 4:20],
                             atol=1e-6)
  back = np.asarray(back)
  np.testing.assert_allclose(back[:, 2:18, 4:20], frames[:, 2:18, 4:20],
                             atol=1e-6)
  assert np.all(back[:, :2] == 0.)


def test_crop_tracks_rescales_flows():
  b, k, t, h = 1, 2, 2, 32
  frames = jnp.ones((b, t, h, h, 3))
  flow = jnp.ones((b, t, h, h, 2)) * 3.
  masks = {"visible": jnp.ones((b, k, t, h, h))}
  boxes = jnp.asarray([[[16., 16., 32.], [16., 16., 8.]]])
  out = jax.jit(lambda f, m, fl, b: sl.crop_tracks(f, m, {"flow_fwd": fl}, b,
                                                   16))(frames, masks, flow,
                                                        boxes)
  assert out["frames"].shape == (1, 2, 2, 16, 16, 3)
  assert out["visible"].shape == (1, 2, 2, 16, 16)
  np.testing.assert_allclose(out["flow_fwd"][0, 0, :, 4:12, 4:12], 1.5)
  np.testing.assert_allclose(out["flow_fwd"][0, 1], 6.)


def test_base_flow_is_observed_inside_and_mean_outside():
  vis = _square()
  flow = np.zeros((P, P, 2), np.float32)
  flow[..., 0] = np.arange(P)[None, :]          # varies along x
  out = np.asarray(jax.jit(sl.base_flow)(flow, vis))
  inside = vis > 0
  np.testing.assert_allclose(out[inside], flow[inside])
  np.testing.assert_allclose(out[~inside][:, 0], flow[inside][:, 0].mean(),
                             rtol=1e-5)


# The model -------------------------------------------------------------------------

TINY = dict(patch_size=16, encoder_channels=(8,), decoder_channels=(8,),
            decoder_output_channels=2, features=8, hidden=8, flow_channels=4)


def _video(b=1, k=2, t=4, h=24, seed=0):
  rs = np.random.RandomState(seed)
  vis = np.zeros((b, k, t, h, h), np.float32)
  for ti in range(t):
    vis[:, 0, ti, 4:12, 4 + ti:12 + ti] = 1.
    vis[:, 1, ti, 12:20, 10:18] = 1.
  vis[:, 0] *= 1. - vis[:, 1]
  occ = np.clip(vis.sum(1, keepdims=True) - vis, 0., 1.)
  flow = np.zeros((b, t, h, h, 2), np.float32)
  flow[..., 0] = vis[:, 0, ..., None][..., 0]
  return {"frames": jnp.asarray(rs.rand(b, t, h, h, 3).astype(np.float32)),
          "visible": jnp.asarray(vis), "occluder": jnp.asarray(occ),
          "flow_fwd": jnp.asarray(flow), "flow_bwd": jnp.asarray(-flow)}


@pytest.fixture(scope="module")
def model_and_params():
  model = savos.SaVos(**TINY)
  params = jax.jit(lambda k: savos.init_params(model, k, _video()))(
      jax.random.PRNGKey(0))
  return model, params


@pytest.fixture(scope="module")
def apply_fn(model_and_params):
  """`(params, video) -> (outputs, gradients of the self-supervised loss)`:
  one compilation for every model test."""
  model, _ = model_and_params

  def loss(p, v):
    out = model.apply({"params": p}, v)
    return losses.self_supervised_loss(out)[0], out

  grad_fn = jax.jit(jax.grad(loss, has_aux=True))
  return lambda p, v: grad_fn(p, v)[::-1]


def test_output_shapes_and_ranges(model_and_params, apply_fn):
  _, params = model_and_params
  out, _ = apply_fn(params, _video())
  b, k, t = 1, 2, 4
  for name in ("amodal", "forward", "backward", "fusion", "current_fwd"):
    assert out[name].shape == (b, k, t, P, P), name
  assert out["flow_fwd"].shape == (b, k, t, P, P, 2)
  assert out["patches"]["frames"].shape == (b, k, t, P, P, 3)
  assert out["boxes"].shape == (b, k, 3)
  a = np.asarray(out["amodal"])
  assert np.all((a >= 0.) & (a <= 1.))
  fusion = np.asarray(out["fusion"])
  assert np.all(fusion[:, :, 0] == 0.) and np.all(fusion[:, :, -1] == 1.)
  # The end frames have one direction: the first only the backward one.
  np.testing.assert_allclose(a[:, :, 0], np.asarray(out["backward"])[:, :, 0])
  np.testing.assert_allclose(a[:, :, -1], np.asarray(out["forward"])[:, :, -1])
  # The flow decoder starts at zero: the corrected flow is the base flow.
  base = sl.base_flow(out["patches"]["flow_fwd"], out["patches"]["visible"])
  np.testing.assert_allclose(out["flow_fwd"], base, atol=1e-6)


def test_prediction_for_a_frame_never_sees_that_frame(model_and_params,
                                                      apply_fn):
  """The amodal mask of frame t is carried over from frames t - 1 and
  t + 1: changing frame t's inputs (inside the track's box) changes the
  predictions of the other frames but not its own."""
  _, params = model_and_params
  video = _video()
  # Perturb frame 1 (pixels, flow, and a visible mask within the union box).
  changed = dict(video)
  changed["frames"] = video["frames"].at[:, 1].set(0.3)
  changed["visible"] = video["visible"].at[:, 0, 1, 5:8, 6:9].set(0.)
  changed["flow_fwd"] = video["flow_fwd"].at[:, 1].add(0.7)
  a, _ = apply_fn(params, video)
  b, _ = apply_fn(params, changed)
  np.testing.assert_array_equal(a["boxes"], b["boxes"])
  np.testing.assert_allclose(a["amodal"][:, :, 1], b["amodal"][:, :, 1],
                             atol=1e-6)
  assert np.abs(np.asarray(a["amodal"][:, :, 2] - b["amodal"][:, :, 2])
                ).max() > 1e-4


def test_init_params_matches_model_init(model_and_params):
  model, params = model_and_params
  ref = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                          _video())["params"])
  assert jax.tree.structure(ref) == jax.tree.structure(params)
  jax.tree.map(lambda r, p: (r.shape == p.shape) or pytest.fail(str(r)), ref,
               params)
  assert np.all(np.asarray(params["flow_decoder"]["out"]["kernel"]) == 0.)
  assert np.all(np.asarray(params["encoder"]["norm"]["scale"]) == 1.)
  kernel = np.asarray(params["encoder"]["embed"]["kernel"])
  assert abs(kernel.std() * np.sqrt(kernel.shape[0]) - 1.) < 0.1


def test_bad_sizes_fail_at_construction():
  with pytest.raises(ValueError, match="divisible"):
    savos.SaVos(patch_size=20, patch_stride=4, encoder_channels=(8, 8))
  with pytest.raises(ValueError, match="one entry"):
    savos.SaVos(decoder_channels=(8,), encoder_channels=(8, 8))


def test_self_supervised_gradients_reach_every_part(model_and_params,
                                                   apply_fn):
  _, params = model_and_params
  _, g = apply_fn(params, _video())
  g = jax.tree.map(np.asarray, g)
  for name, sub in g.items():
    leaves = jax.tree.leaves(sub)
    assert all(np.all(np.isfinite(x)) for x in leaves), name
    assert sum(np.abs(x).sum() for x in leaves) > 0., name
  # The flow residual is trained (photometric and reconstruction terms
  # reach it through the warp) although it starts at zero.
  assert np.abs(g["flow_decoder"]["out"]["kernel"]).sum() > 0.


# Losses on hand-built cases ------------------------------------------------------


def test_self_supervised_losses_take_no_amodal_ground_truth():
  """Structural: the self-supervised objective is a function of the model
  output (whose 'patches' are cropped observations) and of observed masks,
  flows and frames only."""
  observed = {"pred", "visible", "occluder", "frames", "flow_fwd", "flow_bwd",
              "normalization"}
  for fn in (losses.reconstruction_loss, losses.consistency_loss,
             losses.photometric_loss):
    assert set(inspect.signature(fn).parameters) <= observed, fn
  signature = inspect.signature(losses.self_supervised_loss).parameters
  assert list(signature) == ["outputs", "consistency_weight",
                             "photometric_weight", "normalization"]
  assert "amodal" not in inspect.signature(savos.SaVos.__call__).parameters


def test_reconstruction_loss_ignores_occluded_pixels():
  vis = jnp.asarray(_square())[None]
  occ = jnp.zeros((1, P, P)).at[:, 5:11, 7:10].set(1.)   # covers part
  pred = jnp.full((1, P, P), 0.3)
  fn = jax.jit(jax.value_and_grad(losses.reconstruction_loss))
  value, grad = fn(pred, vis, occ)
  g = np.asarray(grad)
  assert np.all(g[np.asarray(occ) > 0] == 0.)            # no gradient there
  assert np.all(g[np.asarray(occ) == 0] != 0.)
  # The value is the mean BCE over the unoccluded pixels.
  w = 1. - np.asarray(occ)
  bce = -(np.asarray(vis) * np.log(0.3) + (1 - np.asarray(vis)) * np.log(0.7))
  np.testing.assert_allclose(value, (w * bce).sum() / w.sum(), rtol=1e-5)
  # Any prediction under the occluder costs the same.
  other = pred.at[:, 5:11, 7:10].set(0.99)
  np.testing.assert_allclose(fn(other, vis, occ)[0], value, rtol=1e-6)


def test_soft_iou_and_bce():
  a = np.asarray([[1., 1.], [0., 0.]], np.float32)
  b = np.asarray([[1., 0.], [0., 0.]], np.float32)
  fn = jax.jit(lambda a, b, p: (losses.soft_iou(a, b), losses.soft_iou(a, a),
                                losses.bce(p, jnp.ones_like(p))))
  iou_ab, iou_aa, bce = fn(a, b, np.asarray([0.8, 0.], np.float32))
  np.testing.assert_allclose(iou_ab, 0.5, rtol=1e-6)
  np.testing.assert_allclose(iou_aa, 1., rtol=1e-6)
  np.testing.assert_allclose(bce[0], -np.log(0.8), rtol=1e-6)
  assert np.isfinite(bce[1])


def _moving_square(t=3, dx=1):
  masks = np.stack([_square(left=3 + dx * i) for i in range(t)])[None]
  flow = np.zeros((1, t, P, P, 2), np.float32)
  flow[..., 0] = dx
  return jnp.asarray(masks), jnp.asarray(flow), jnp.asarray(-flow)


def test_consistency_loss_with_detached_flow():
  masks, fwd, bwd = _moving_square()
  fn = jax.jit(jax.value_and_grad(losses.consistency_loss, argnums=(0, 1)))
  assert float(fn(masks, fwd, bwd)[0]) < 1e-6
  assert float(fn(masks, 0. * fwd, 0. * bwd)[0]) > 0.1
  _, (g_mask, g_flow) = fn(masks, fwd * 0.5, bwd)
  assert np.abs(np.asarray(g_flow)).sum() == 0.
  assert np.abs(np.asarray(g_mask)).sum() > 0.


def test_photometric_loss_trains_the_flow():
  masks, fwd, bwd = _moving_square()
  texture = np.random.RandomState(1).rand(P, P + 4, 3).astype(np.float32)
  frames = jnp.asarray(np.stack([texture[:, 4 - i:4 - i + P]
                                 for i in range(3)])[None])
  fn = jax.jit(jax.value_and_grad(losses.photometric_loss, argnums=2))
  assert float(fn(frames, masks, fwd, bwd)[0]) < 1e-5
  assert float(fn(frames, masks, 0. * fwd, 0. * bwd)[0]) > 0.05
  g = fn(frames, masks, fwd * 0.5, bwd)[1]
  assert np.abs(np.asarray(g)).sum() > 0.


def test_supervised_loss():
  pred = np.full((1, 2, P, P), 0.25, np.float32)
  target = np.zeros((1, 2, P, P), np.float32)
  target[..., :4, :] = 1.
  value, metrics = jax.jit(lambda p, t: losses.supervised_loss(
      {"amodal": p}, t))(pred, target)
  expected = (-np.log(0.25) * 4 + -np.log(0.75) * (P - 4)) / P
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert metrics["supervised_bce"] == value
