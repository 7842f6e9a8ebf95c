"""FISHBOWL clips for the SaVos trainer (crl.data.fishbowl_clips), on files
in the public layout written by tests.data.test_mask_formats."""

import numpy as np
import pytest

from crl.data import fishbowl
from crl.data import fishbowl_clips
from tests.data.test_mask_formats import write_fishbowl


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("fishbowl"))
  for kind in ("train", "test"):
    write_fishbowl(path, kind=kind)
  return path


def test_clips_carry_the_files_masks_and_flows(root):
  ds = fishbowl_clips.FishbowlClips(root=root, num_frames=4, num_objects=3)
  video = fishbowl.FishbowlVideos(f"{root}/test_data").video("7")
  assert ds.input_shape == (4, 12, 16, 3) and ds.mask_shape == (3, 4, 12, 16)
  assert set(ds.eval_splits()) == {"test"}
  assert ds.num_examples("train") == ds.num_examples("test") == 1
  out = {k: np.asarray(v) for k, v in ds.sample_encoded(
      ds.eval_code("test"), np.array([0], np.int32)).items()}
  assert set(out) == set(fishbowl_clips.BATCH_KEYS)
  for k in ("frames", "flow_fwd", "flow_bwd"):
    np.testing.assert_array_equal(out[k][0], video[k])
  # Object 0 has the larger visible area; the third track is padding.
  for k in ("visible", "amodal", "occluder"):
    np.testing.assert_array_equal(out[k][0, :2], video[k])
    assert not out[k][0, 2].any()


def test_shorter_clips_keep_only_the_objects_they_show(root):
  ds = fishbowl_clips.FishbowlClips(root=root, num_frames=2, num_objects=2)
  video = fishbowl.FishbowlVideos(f"{root}/test_data").video("7")
  assert ds.num_examples("test") == 2
  code = ds.eval_code("test")
  second = {k: np.asarray(v)[0] for k, v in ds.sample_encoded(
      code, np.array([1], np.int32)).items()}
  np.testing.assert_array_equal(second["frames"], video["frames"][2:4])
  # Frames 2..3: object 1 is present in frame 2 only.
  np.testing.assert_array_equal(second["amodal"], video["amodal"][:, 2:4])
  # Indices wrap around the split; the training split is a different range.
  wrapped = np.asarray(ds.sample_encoded(code, np.array([3], np.int32))[
      "frames"])[0]
  np.testing.assert_array_equal(wrapped, second["frames"])
  train = ds.encode("train", None)
  assert train[1] == 2 and train[0] != code[0]


def test_resizing_scales_frames_masks_and_flows(root):
  ds = fishbowl_clips.FishbowlClips(root=root, num_frames=4, num_objects=2,
                                    resolution=24)
  video = fishbowl.FishbowlVideos(f"{root}/test_data").video("7")
  assert ds.input_shape == (4, 24, 32, 3)
  out = {k: np.asarray(v)[0] for k, v in ds.sample_encoded(
      ds.eval_code("test"), np.array([0], np.int32)).items()}
  # Twice the size: each mask pixel becomes a 2x2 block, flow vectors
  # double.
  np.testing.assert_array_equal(out["amodal"][:, :, ::2, ::2],
                                video["amodal"])
  assert out["amodal"].sum() == 4 * video["amodal"].sum()
  np.testing.assert_allclose(out["flow_fwd"].mean(),
                             2. * video["flow_fwd"].mean(), rtol=1e-5)


def test_bad_roots_fail_with_one_clear_message(tmp_path):
  with pytest.raises(ValueError, match="config.data.root"):
    fishbowl_clips.FishbowlClips(root="")
  with pytest.raises(ValueError, match="train_data"):
    fishbowl_clips.FishbowlClips(root=str(tmp_path))
  write_fishbowl(str(tmp_path), kind="train")
  write_fishbowl(str(tmp_path), kind="test")
  with pytest.raises(ValueError, match="no video has 8 frames"):
    fishbowl_clips.FishbowlClips(root=str(tmp_path), num_frames=8)
  ds = fishbowl_clips.FishbowlClips(root=str(tmp_path), num_frames=4)
  with pytest.raises(ValueError, match="no interventions"):
    ds.encode("train", "shifted")
  with pytest.raises(ValueError, match="known eval splits: test"):
    ds.eval_code("validation")
