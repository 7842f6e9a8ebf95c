"""KINS-Video-Car clips for the SaVos trainer (crl.data.kins_clips), on KINS,
KITTI devkit, raw-frame and .flo files the tests write."""

import os

import numpy as np
import pytest

from crl import config_lib
from crl.data import kins_clips
from crl.data import mask_formats as mf
from crl.trainers import savos_config
from tests import helpers
from tests.data.test_kins_video import DRIVE, H, W, _write_kins


def _write_flows(root, frames=(10, 11, 12, 13), skip=()):
  flows = {}
  for sub, sign in (("forward", 1.), ("backward", -1.)):
    directory = os.path.join(root, "flow", DRIVE, sub)
    os.makedirs(directory, exist_ok=True)
    for f in frames:
      flow = np.full((H, W, 2), sign * (f - 9), np.float32)
      flows[sub, f] = flow
      if (sub, f) not in skip:
        mf.write_flo(os.path.join(directory, f"{f:010d}.flo"), flow)
  return flows


def _clips(root, **kwargs):
  return kins_clips.KinsClips(root=str(root), train_json="instances.json",
                              test_json="instances.json", num_frames=3,
                              num_objects=3, **kwargs)


def test_clips_with_flows_and_the_one_line_errors(tmp_path):
  frames = _write_kins(str(tmp_path))
  with pytest.raises(ValueError, match="no optical flow.*--config.data.flow"):
    _clips(tmp_path)
  # The drive spans the annotated frames 10..12; the last frame's forward
  # flow file is absent (the one before is repeated).
  flows = _write_flows(str(tmp_path), skip={("forward", 12)})
  data = _clips(tmp_path)
  assert data.input_shape == (3, H, W, 3) and data.mask_shape == (3, 3, H, W)
  assert data.num_examples("train") == data.num_examples("test") == 1
  clip = {k: np.asarray(v)[0] for k, v in
          data.sample_encoded(data.eval_code("test"), np.asarray([0])).items()}
  np.testing.assert_allclose(clip["frames"], frames[:3] / 255., atol=1e-6)
  np.testing.assert_array_equal(clip["flow_fwd"][:2],
                                [flows["forward", 10], flows["forward", 11]])
  np.testing.assert_array_equal(clip["flow_fwd"][2], flows["forward", 11])
  np.testing.assert_array_equal(clip["flow_bwd"][1], flows["backward", 11])
  # Masks on the annotated frames (10 and 12) only; 3 cars (A, B, C).
  present = clip["amodal"].sum((-2, -1)) > 0
  np.testing.assert_array_equal(present.any(0), [True, False, True])
  assert present.sum() == 4
  with pytest.raises(ValueError, match="no interventions"):
    data.parse_intervention("shifted")
  os.remove(os.path.join(tmp_path, "flow", DRIVE, "backward",
                         "0000000011.flo"))
  with pytest.raises(ValueError, match="0000000011.flo is missing"):
    _clips(tmp_path)


def test_kins_config_builds_its_dataset(tmp_path):
  _write_kins(str(tmp_path))
  _write_flows(str(tmp_path))
  config = helpers.load_with("configs/savos.py:kins_tiny", {
      "data.root": str(tmp_path), "data.train_json": "instances.json",
      "data.test_json": "instances.json"})
  savos_config.check_config(config)
  dataset = savos_config.build_dataset(config)
  savos_config.check_dataset_names(config, dataset)
  assert dataset.input_shape == (3, 16, 38, 3)
  empty = config_lib.load_config(os.path.join(helpers.ROOT,
                                              "configs/savos.py:kins"))
  with pytest.raises(config_lib.ConfigError, match="--config.data.root=DIR"):
    savos_config.build_dataset(empty)
