"""Per-video test-time adaptation of SaVos (crl.trainers.savos_adapt)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import config_lib
from crl.trainers import savos_config
from crl.trainers import savos_task
from crl.trainers import savos_adapt
from tests import helpers


def test_paired_gain_and_per_video_means_by_hand():
  per_video = np.asarray([[0.2, 0.4, np.nan, 0.5],
                          [0.3, 0.6, 0.9, 0.5]])
  out = savos_adapt.paired_gain(per_video, 1)
  diff = np.asarray([0.1, 0.2, 0.0])
  half = 1.96 * diff.std(ddof=1) / np.sqrt(3)
  np.testing.assert_allclose(out["gain"], 0.1)
  np.testing.assert_allclose(out["interval"], [0.1 - half, 0.1 + half])
  assert out["videos"] == 3
  stats = {"iou_occluded": np.asarray([[[[0.2, 0.8, 0.5]]]]),   # [S1,V1,K1,T3]
           "occlusion_rate": np.asarray([[[[0.3, 0.05, 0.5]]]]),
           "present": np.asarray([[[[True, True, True]]]])}
  np.testing.assert_allclose(
      savos_adapt.per_video_occluded(stats, 0.1, 0.7), [[0.35]])


@pytest.fixture(scope="module")
def tiny_task():
  config = config_lib.load_config(os.path.join(helpers.ROOT,
                                               "configs/savos.py:tiny"))
  task = savos_task.SavosTask(config)
  params = task.init_params(jax.random.PRNGKey(0))
  return config, task, params


def test_adaptation_is_per_video_and_step_zero_is_the_model(tiny_task):
  config, task, params = tiny_task
  fn = savos_adapt.make_adapt_fn(task.model, (0, 1), {})
  batch = next(task.pipeline.eval_batches("shifted"))
  stats, probs = jax.tree.map(np.asarray,
                              fn(params, batch, jnp.float32(1e-2)))
  for v in stats.values():
    assert v.shape == (2, 4, 2, 4)                      # [S, B, K, T]
  # Step 0 is the unadapted model's score.
  ref = jax.tree.map(np.asarray, task.evaluator._stats_fn(params, batch)[0])
  np.testing.assert_allclose(stats["iou_full"][0], ref["iou_full"],
                             atol=1e-6)
  # Adaptation changes the prediction.
  assert np.abs(probs[1] - probs[0]).max() > 1e-3
  # Each video adapts on its own: a batch of copies of video 0 gives
  # video 0's result for every entry.
  copies = {k: jnp.broadcast_to(v[:1], v.shape) for k, v in batch.items()}
  again = np.asarray(fn(params, copies, jnp.float32(1e-2))[1])
  np.testing.assert_allclose(again[1, 2], probs[1, 0], atol=1e-5)
  assert np.abs(again[1, 2] - probs[1, 1]).max() > 1e-3
  # The amodal masks are not an input of the adaptation: changing them
  # changes only the scores' reference, not the predictions.
  assert "amodal" not in savos_adapt.OBSERVED_KEYS


def test_bad_tta_configs_fail_before_compiling(tiny_task):
  config, _, _ = tiny_task
  for key, value, match in (("steps", (1, 2), "tta.steps"),
                            ("learning_rates", (0.,), "learning_rates"),
                            ("split", "gumm", "tta.split")):
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
    savos_adapt.make_adapt_fn(None, (3, 1), {})
