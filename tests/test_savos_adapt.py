"""Per-video test-time adaptation of SaVos (crl.trainers.savos_adapt) and its
protocol (crl.trainers.savos_tta)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crl import config_lib
from crl.trainers import savos_adapt
from crl.trainers import savos_config
from crl.trainers import savos_losses
from crl.trainers import savos_task
from crl.trainers import savos_tta
from tests import helpers


def test_per_video_miou_and_paired_gain_by_hand():
  # One video, 2 objects x 4 frames; crl's protocol drops each track's first
  # and last frame and keeps occlusion rates in [0.1, 0.7].
  iou = np.asarray([[0.9, 0.2, 0.5, 0.9], [0.9, 0.6, 0.3, 0.9]])
  rate = np.asarray([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.05, 0.5]])
  stats = {"iou_occluded": iou[None, None], "occlusion_rate": rate[None, None],
           "present": np.ones((1, 1, 2, 4), bool)}
  # Frame 1: (0.2 + 0.6) / 2; frame 2: object 0 only (0.5); then the mean
  # over frames (not over object-frames: 0.433).
  np.testing.assert_allclose(
      savos_tta.per_video(stats, "iou_occluded", 0.1, 0.7), [[0.45]])
  stats["occlusion_rate"] = np.full((1, 1, 2, 4), 0.9)
  assert np.isnan(savos_tta.per_video(stats, "iou_occluded", 0.1, 0.7)[0, 0])

  before = np.asarray([0.2, 0.4, np.nan, 0.5, 0.3])
  out = savos_tta.paired_gain(before, before + 0.1)
  np.testing.assert_allclose(out["gain"], 0.1)
  np.testing.assert_allclose(out["interval"], [0.1, 0.1])   # no spread
  assert out["videos"] == 4 and out["improved"] == 4
  after = before + np.asarray([0.3, -0.1, 0., 0.2, -0.2])
  out = savos_tta.paired_gain(before, after)
  np.testing.assert_allclose(out["gain"], 0.05)
  low, high = out["interval"]
  assert -0.2 <= low < 0.05 < high <= 0.3 and out["improved"] == 2
  assert savos_tta.paired_gain([np.nan], [0.1])["gain"] is None


@pytest.fixture(scope="module")
def tiny_task():
  config = config_lib.load_config(os.path.join(helpers.ROOT,
                                               "configs/savos.py:tiny"))
  task = savos_task.SavosTask(config)
  params = task.init_params(jax.random.PRNGKey(0))
  return config, task, params


def test_vmapped_adaptation_equals_adapting_each_video_alone(tiny_task):
  """2 videos, 2 steps in 2 chunks of 1: each copy's parameters are what
  plain `optax.adam` on that video's own self-supervised loss gives, and
  each copy is scored on its own video."""
  config, task, params = tiny_task
  lr = 1e-2
  adapter = savos_adapt.VideoAdapter(task.model,
                                     savos_config.loss_kwargs(config),
                                     task.pipeline.sharding)
  batch = next(task.pipeline.eval_batches("shifted"))
  batch = {k: v[:2] for k, v in batch.items()}
  state = adapter.start(params, 2)
  # Step 0: the unadapted model's scores.
  stats0 = jax.tree.map(np.asarray, adapter.score(state, batch)[0])
  ref0 = jax.tree.map(np.asarray, task.evaluator._stats_fn(params, batch)[0])
  np.testing.assert_allclose(stats0["iou_full"], ref0["iou_full"], atol=1e-6)
  for _ in range(2):
    state = adapter.advance(state, batch, lr, 1)

  tx = optax.adam(lr)

  # One compiled reference step (op-by-op Adam and a second compile of the
  # gradient for the updated parameters cost 3x the time of this program).
  @jax.jit
  def adam_step(p, s, video):
    g = jax.grad(lambda p: savos_losses.self_supervised_loss(
        task.model.apply({"params": p}, video, train=True),
        **savos_config.loss_kwargs(config))[0])(p)
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s

  def alone(video):
    p, s = params, tx.init(params)
    for _ in range(2):
      p, s = adam_step(p, s, video)
    return p

  observed = {k: batch[k] for k in savos_adapt.OBSERVED_KEYS}
  for v in range(2):
    ref = alone({k: x[v:v + 1] for k, x in observed.items()})
    mine = jax.tree.map(lambda x: x[v], state["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5,
                                                         rtol=1e-4),
                 mine, ref)
    moved = max(float(jnp.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(mine), jax.tree.leaves(params)))
    assert moved > 1e-3
    # Copy v is scored on video v.
    stats = jax.tree.map(np.asarray, adapter.score(state, batch)[0])
    ref_stats = jax.tree.map(np.asarray,
                             task.evaluator._stats_fn(ref, batch)[0])
    np.testing.assert_allclose(stats["iou_full"][v], ref_stats["iou_full"][v],
                               atol=1e-4)
  # The two videos adapted differently.
  assert max(float(jnp.abs(a[0] - a[1]).max())
             for a in jax.tree.leaves(state["params"])) > 1e-4
  assert "amodal" not in savos_adapt.OBSERVED_KEYS


def test_bad_tta_configs_fail_before_compiling(tiny_task):
  config, _, _ = tiny_task
  for key, value, match in (("steps", (1, 2), "tta.steps"),
                            ("learning_rates", (0.,), "learning_rates"),
                            ("split", "gumm", "tta.split"),
                            ("examples", -1, "tta.examples"),
                            ("reference_splits", ("tset",),
                             "tta.reference_splits")):
    c = config.copy_and_resolve_references()
    c.unlock()
    c.tta[key] = value
    with pytest.raises(config_lib.ConfigError, match=match):
      savos_config.check_config(c)
  c = config.copy_and_resolve_references()
  c.unlock()
  c.tta.intervention = "shiftd"
  with pytest.raises(config_lib.ConfigError, match="tta.intervention"):
    savos_config.check_dataset_names(c, savos_config.build_dataset(c))
  with pytest.raises(ValueError, match="increasing"):
    savos_adapt.check_steps((3, 1))


def test_readme_renders_the_curve_and_the_gain(tmp_path):
  from crl.reports import readme  # pylint: disable=g-import-not-at-top
  curve = {"steps": [0, 4], "occluded_miou": [0.5, 0.52],
           "full_miou": [0.7, 0.69]}
  none = {"gain": 0., "interval": [0., 0.], "videos": 64, "improved": 0}
  gains = {"occluded": [none, {"gain": 0.02, "interval": [0.005, 0.031],
                               "videos": 64, "improved": 40}],
           "full": [none, {"gain": -0.01, "interval": [-0.02, 0.001],
                           "videos": 64, "improved": 20}]}
  out = {"tta": {"validation": {"0.001": curve},
                 "chosen": {"learning_rate": 1e-3, "steps": 4,
                            "by": "occluded_miou on 16 held-out videos"},
                 "splits": {"shifted": {"videos": 64, "curve": curve,
                                        "gains": gains}}},
         "occlusion": {"test": {"occluded_px_per_object_frame": 40.5}}}
  (tmp_path / "savos_tta").mkdir()
  (tmp_path / "savos_tta" / "results.json").write_text(json.dumps(out))
  (tmp_path / "savos_tta" / "run.json").write_text(json.dumps(dict(
      command="python -m crl.main", date="d", machine="m", load="l",
      wall="w")))
  text = readme.savos_tta(tmp_path)
  assert "| validation, lr 0.001 | occluded | .500 | .520 |" in text
  assert "| shifted (64) | full | .700 | .690 |" in text
  assert "| split | mIoU | 4 steps (chosen) |" in text
  assert "| shifted | occluded | +.020 [+.005, +.031] |" in text
  assert "| shifted | full | -.010 [-.020, +.001] |" in text
  assert "learning rate 0.001, 4 steps" in text and "test 40.5" in text
