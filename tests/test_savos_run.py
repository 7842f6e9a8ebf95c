"""SaVos end to end (configs/savos.py:tiny) and the trainer's guarantees."""

import contextlib
import io
import json
import os

import jax
import numpy as np
import pytest

from crl import config_lib
from crl import registry
from crl import runtime
from crl.data import occluded_video
from crl.trainers import savos as savos_study
from crl.trainers import savos_config
from crl.trainers import savos_task
from tests import helpers
from tests.data.test_mask_formats import write_fishbowl

TINY = "configs/savos.py:tiny"
METHODS = {"savos", "supervised", "visible", "convex_hull"}


def test_main_end_to_end_writes_results_and_pictures(tmp_path):
  # The trainer `crl.main --config=configs/savos.py:tiny` runs, in this
  # process (a crl.main process would add ~6 CPU-s of start-up; the command
  # line itself is tested with other trainers, e.g. tests/test_train.py).
  workdir = str(tmp_path / "run")
  config = config_lib.load_config(os.path.join(helpers.ROOT, TINY))
  console = io.StringIO()
  with contextlib.redirect_stdout(console):
    registry.TRAINERS.get(config.trainer)(config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    out = json.load(f)
  results = out["results"]
  assert set(results) == {"test", "gum", "shifted"}
  for split, methods in results.items():
    expected = METHODS | ({"savos_adapted", "savos_tta"} if split == "shifted"
                          else set())
    assert set(methods) == expected, split
    for method, row in methods.items():
      for metric in ("full_miou_all", "occluded_miou_all"):
        assert 0. <= row[metric] <= 1., (split, method, metric)
      assert {"full_miou", "occluded_miou", "num_frames",
              "official_full_miou", "official_num_frames"} <= set(row)
  # Identical composites outside the occluder: every method sees the same
  # visible pixels, so the visible baseline never predicts an occluded pixel.
  assert results["test"]["visible"]["occluded_miou_all"] < 1.
  for sub in ("supervised", "adapt"):
    assert os.path.exists(os.path.join(workdir, sub, "results.json")), sub
  assert out["step"] == 3 and set(out["timing_s"]) >= {"savos", "supervised",
                                                        "adapt", "total"}
  pictures = out["pictures"]
  assert any(p.endswith(".png") for p in pictures)
  assert any(p.endswith(".gif") for p in pictures)
  for p in pictures:
    assert os.path.getsize(os.path.join(workdir, p)) > 0
  assert ("convex_hull" in console.getvalue() and
          "savos_adapted" in console.getvalue())
  assert set(out["official_protocols"]) == {"official", "official_px"}
  removed = out["official_filters_removed"]["test"]["official"]
  assert removed["present"]["tracks"] >= removed["kept"]["tracks"]
  tta = out["tta"]
  shifted = tta["splits"]["shifted"]
  assert shifted["curve"]["steps"] == [0, 1, 2] and shifted["videos"] == 8
  assert len(shifted["curve"]["occluded_miou_all"]) == 3
  assert tta["chosen"]["learning_rate"] == 1e-3
  assert set(shifted["gain"]) == {"occluded", "full"}
  # Step 0 is SaVos itself, scored on the same videos.
  assert shifted["curve"]["full_miou"][0] == pytest.approx(
      results["shifted"]["savos"]["full_miou"], abs=1e-6)
  assert set(out["occlusion"]) == {"test", "gum", "shifted"}
  assert out["occlusion"]["test"]["occluded_px_per_object_frame"] > 0.


def test_self_supervised_batches_carry_no_amodal_masks():
  """Structural: the self-supervised task trains on batches without the
  amodal ground truth (its loss cannot read it); the upper bound's have it.
  Abstract evaluation only (nothing is compiled)."""
  config = config_lib.load_config(os.path.join(helpers.ROOT, TINY))
  ssl = savos_task.SavosTask(config)
  sup = savos_task.SavosTask(config, mode="supervised",
                             pipeline=ssl.pipeline, evaluator=ssl.evaluator)
  assert "amodal" not in ssl.train_keys
  assert set(ssl.train_keys) == set(occluded_video.OBSERVED_KEYS)
  batch = jax.eval_shape(lambda: next(ssl.train_batches(0)))
  assert set(batch) == set(occluded_video.OBSERVED_KEYS)
  sup_batch = jax.eval_shape(lambda: next(sup.train_batches(0)))
  assert set(sup_batch) == set(occluded_video.BATCH_KEYS)
  assert sup_batch["amodal"].shape == (4,) + ssl.dataset.mask_shape
  # Each loss runs on its own task's batch: the self-supervised one without
  # any amodal mask.
  params = jax.eval_shape(ssl.init_params, jax.random.PRNGKey(0))
  rngs = runtime.step_rngs(0, 0)
  loss, metrics = jax.eval_shape(ssl.loss, params, batch, rngs)
  assert loss.shape == () and {"recon", "consistency"} <= set(metrics)
  loss, metrics = jax.eval_shape(sup.loss, params, sup_batch, rngs)
  assert loss.shape == () and set(metrics) == {"supervised_bce"}


def test_official_variant_builds_and_its_losses_evaluate():
  """configs/savos.py:official_tiny (abstract evaluation only)."""
  config = config_lib.load_config(os.path.join(
      helpers.ROOT, "configs/savos.py:official_tiny"))
  savos_config.check_config(config)
  ssl = savos_task.SavosTask(config)
  sup = savos_task.SavosTask(config, mode="supervised",
                             pipeline=ssl.pipeline, evaluator=ssl.evaluator)
  assert ssl.model.boxes == "frame" and ssl.model.patch_shape == (8, 16)
  params = jax.eval_shape(ssl.init_params, jax.random.PRNGKey(0))
  rngs = runtime.step_rngs(0, 0)
  batch = jax.eval_shape(lambda: next(sup.train_batches(0)))
  for task in (ssl, sup):
    keys = {k: batch[k] for k in task.train_keys}
    loss, _ = jax.eval_shape(task.loss, params, keys, rngs)
    assert loss.shape == ()


def test_bad_configs_fail_before_anything_is_compiled():
  config = config_lib.load_config(os.path.join(helpers.ROOT, TINY))
  dataset = savos_config.build_dataset(config)

  def edited(**values):
    c = config.copy_and_resolve_references()
    c.unlock()
    for key, value in values.items():
      section, leaf = key.split(".")
      c[section][leaf] = value
    return c

  with pytest.raises(config_lib.ConfigError, match="adapt.split"):
    savos_config.check_config(edited(**{"adapt.split": "gum",
                                      "eval.splits": ("test",)}))
  with pytest.raises(config_lib.ConfigError, match="unknown split.*'tset'"):
    savos_config.check_dataset_names(edited(**{"pictures.splits": ("tset",)}),
                                   dataset)
  with pytest.raises(config_lib.ConfigError, match="adapt.intervention"):
    savos_config.check_dataset_names(
        edited(**{"adapt.intervention": "shiftd"}), dataset)
  with pytest.raises(config_lib.ConfigError, match="supervised.num_steps"):
    savos_config.check_config(edited(**{"supervised.num_steps": 0}))
  with pytest.raises(config_lib.ConfigError, match="mode"):
    savos_task.SavosTask(config, mode="semi")
  with pytest.raises(config_lib.ConfigError, match="inputs.*unknown"):
    savos_config.check_config(edited(**{"inputs.blur": 1.}))
  with pytest.raises(config_lib.ConfigError, match="missed_frames"):
    savos_config.check_config(edited(**{"inputs.missed_frames": 2.}))
  with pytest.raises(config_lib.ConfigError, match="normalization"):
    savos_config.check_config(edited(**{"loss.normalization": "sum"}))
  with pytest.raises(config_lib.ConfigError, match="eval.official"):
    savos_config.check_config(edited(**{"eval.official": {"enabled": True,
                                                        "size": 3}}))


def test_noisy_inputs_train_on_perturbed_and_score_on_exact_masks():
  config = config_lib.load_config(os.path.join(helpers.ROOT,
                                               "configs/savos.py:noisy_tiny"))
  task = savos_task.SavosTask(config)
  assert task.pipeline.noise.enabled
  train_batch = next(task.train_batches(0))
  assert set(train_batch) == set(occluded_video.OBSERVED_KEYS)
  batch = next(task.pipeline.eval_batches("test"))
  assert {"gt_visible", "gt_occluder"} <= set(batch)
  vis, gt = np.asarray(batch["visible"]), np.asarray(batch["gt_visible"])
  assert np.any(vis != gt)
  # Outside the edges of the exact masks, only missed frames change them.
  amodal = np.asarray(batch["amodal"])
  np.testing.assert_array_equal(gt, amodal * (1. - np.asarray(
      batch["gt_occluder"])))


@pytest.mark.slow
def test_fishbowl_files_train_and_score(tmp_path):
  """configs/savos.py:fishbowl_tiny on FISHBOWL files in the public layout
  (the loader tests' writer): SaVos trains and is scored on the clips with
  the baselines (the upper bound is left out to keep the test short; no
  adaptation: FISHBOWL has no shifted split). About 4 minutes on the
  loaded 2-core machine (load average 15)."""
  for kind in ("train", "test"):
    write_fishbowl(str(tmp_path / "fishbowl"), kind=kind)
  config = helpers.load_with("configs/savos.py:fishbowl_tiny", {
      "data.root": str(tmp_path / "fishbowl"), "pictures.num_videos": 0,
      "supervised.enabled": False})
  out = savos_study.train_and_evaluate(config, str(tmp_path / "run"))
  assert out["step"] == 3 and set(out["results"]) == {"test"}
  row = out["results"]["test"]
  assert {"savos", "visible", "convex_hull"} == set(row)
  # One clip of 2 tracks x 4 frames, all present (object 1 only in 2).
  assert row["savos"]["num_object_frames"] == 6
  assert 0. <= row["savos"]["full_miou_all"] <= 1.
  with open(tmp_path / "run" / "results.json") as f:
    assert json.load(f)["results"]["test"].keys() == row.keys()


def test_fishbowl_without_a_root_names_the_flag(tmp_path):
  config = config_lib.load_config(os.path.join(helpers.ROOT,
                                               "configs/savos.py:fishbowl"))
  with pytest.raises(config_lib.ConfigError, match="--config.data.root=DIR"):
    savos_config.build_dataset(config)
  missing = helpers.load_with("configs/savos.py:fishbowl",
                              {"data.root": str(tmp_path)})
  with pytest.raises(config_lib.ConfigError, match="train_data, test_data"):
    savos_config.build_dataset(missing)
