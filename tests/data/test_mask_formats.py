"""COCO RLE and Middlebury .flo, by hand and round trips; FISHBOWL files in
the public layout, written here and read back."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from crl.data import fishbowl
from crl.data import mask_formats as mf


def test_rle_by_hand():
  # Column-major [0, 1, 1, 1]: one zero then three ones.
  mask = np.asarray([[0, 1], [1, 1]])
  assert mf.rle_counts(mask) == [1, 3]
  assert mf.rle_string([1, 3]) == b"13"
  # 40 needs two 5-bit groups; the 4th count is coded as 100 - 40 = 60.
  assert mf.rle_string([5, 40, 3, 100]) == b"5X13l1"
  assert mf.rle_string_counts(b"5X13l1") == [5, 40, 3, 100]
  # A negative difference (2 - 10 = -8) in one group with the sign bit.
  assert mf.rle_string([1, 10, 1, 2]) == b"1:1H"
  assert mf.rle_string_counts("1:1H") == [1, 10, 1, 2]
  # A mask starting with ones has a zero-length first run.
  assert mf.rle_counts(np.ones((2, 2))) == [0, 4]


def test_rle_round_trips_and_decodes_uncompressed_counts():
  rs = np.random.RandomState(0)
  for shape in ((1, 1), (5, 7), (32, 48), (320, 480)):
    mask = rs.rand(*shape) < 0.3
    mask[:shape[0] // 2, :shape[1] // 3] = True      # long runs too
    rle = mf.rle_encode(mask)
    assert rle["size"] == list(shape)
    np.testing.assert_array_equal(mf.rle_decode(rle), mask)
    np.testing.assert_array_equal(mf.rle_decode([rle]), mask)
    plain = {"size": list(shape), "counts": mf.rle_counts(mask)}
    np.testing.assert_array_equal(mf.rle_decode(plain), mask)
  with pytest.raises(mf.MaskFormatError, match="sum to"):
    mf.rle_decode({"size": [2, 2], "counts": [1, 2]})
  with pytest.raises(mf.MaskFormatError, match="ends inside"):
    mf.rle_string_counts(b"X")


def test_flo_by_bytes_and_round_trip(tmp_path):
  flow = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2) - 3.5
  path = tmp_path / "a.flo"
  mf.write_flo(path, flow)
  data = path.read_bytes()
  assert np.frombuffer(data[:4], "<f4")[0] == np.float32(202021.25)
  assert list(np.frombuffer(data[4:12], "<i4")) == [3, 2]   # width, height
  assert len(data) == 12 + 4 * 12
  # Row-major (u, v) pairs: pixel (row 0, col 1) is bytes 20..28.
  np.testing.assert_array_equal(np.frombuffer(data[20:28], "<f4"), flow[0, 1])
  np.testing.assert_array_equal(mf.read_flo(path), flow)
  bad = tmp_path / "b.flo"
  assert data[:4] == b"PIEH"                      # the magic's bytes
  bad.write_bytes(b"PIEX" + data[4:])
  with pytest.raises(mf.MaskFormatError, match="magic"):
    mf.read_flo(bad)
  short = tmp_path / "c.flo"
  short.write_bytes(data[:-4])
  with pytest.raises(mf.MaskFormatError, match="bytes"):
    mf.read_flo(short)


def write_fishbowl(root, t=4, h=12, w=16, kind="test"):
  """A FISHBOWL split `<root>/<kind>_data` of one video: object 0 in all
  frames, object 1 in frames 1..2 only (a shorter track), object 1 in front
  of object 0."""
  data_dir = os.path.join(root, f"{kind}_data")
  frames_dir = os.path.join(data_dir, f"{kind}_frames", "7")
  os.makedirs(frames_dir)
  rs = np.random.RandomState(0)
  frames = (rs.rand(t, h, w, 3) * 255).astype(np.uint8)
  for i in range(t):
    Image.fromarray(frames[i]).save(os.path.join(frames_dir, f"{i:05d}.png"))
  flows = {}
  for d, sign in (("flow", 1.), ("flow_reverse", -1.)):
    fdir = os.path.join(data_dir, f"{kind}_{d}", fishbowl.FLOW_DIR, "7")
    os.makedirs(fdir)
    flows[d] = sign * rs.rand(t - 1, h, w, 2).astype(np.float32)
    for i in range(t - 1):
      mf.write_flo(os.path.join(fdir, f"{i:05d}.flo"), flows[d][i])
  amodal = np.zeros((2, t, h, w), bool)
  for i in range(t):
    amodal[0, i, 2:8, 2 + i:8 + i] = True
  amodal[1, 1:3, 4:10, 6:12] = True
  visible = amodal.copy()
  visible[0] &= ~amodal[1]
  summary = {}
  for k, steps in ((0, range(t)), (1, (1, 2))):
    summary[f"7_{k}"] = {s: {
        "VM": [mf.rle_encode(visible[k, s])],
        "FM": [mf.rle_encode(amodal[k, s])],
        "loss_mask_weight": [mf.rle_encode(~(amodal[1 - k, s] if k == 0
                                              else np.zeros((h, w), bool)))],
        "VM_bx": [0, 0, 0, 0], "FM_bx": [0, 0, 0, 0]} for s in steps}
  with open(os.path.join(data_dir, f"{kind}_data.pkl"), "wb") as f:
    pickle.dump(summary, f)
  return data_dir, frames, flows, visible, amodal


def test_fishbowl_reads_the_public_layout(tmp_path):
  data_dir, frames, flows, visible, amodal = write_fishbowl(str(tmp_path))
  reader = fishbowl.FishbowlVideos(data_dir)
  assert reader.video_ids() == ["7"]
  v = reader.video("7")
  np.testing.assert_allclose(v["frames"], frames / 255., atol=1e-6)
  np.testing.assert_array_equal(v["visible"], visible)
  np.testing.assert_array_equal(v["amodal"], amodal)
  np.testing.assert_array_equal(v["present"],
                                [[1, 1, 1, 1], [0, 1, 1, 0]])
  # Object 0's occluder is object 1 where it is present; padded frames of
  # the short track are empty.
  np.testing.assert_array_equal(v["occluder"][0], amodal[1])
  assert not v["visible"][1, [0, 3]].any()
  # 3 flows for 4 frames: the last forward / first backward one repeated.
  np.testing.assert_array_equal(v["flow_fwd"][:3], flows["flow"])
  np.testing.assert_array_equal(v["flow_fwd"][3], flows["flow"][2])
  np.testing.assert_array_equal(v["flow_bwd"][1:], flows["flow_reverse"])
  np.testing.assert_array_equal(v["flow_bwd"][0], flows["flow_reverse"][0])


def test_fishbowl_errors_name_the_file(tmp_path):
  with pytest.raises(fishbowl.FishbowlError, match="test_data.pkl"):
    fishbowl.FishbowlVideos(str(tmp_path / "test_data"))
  data_dir, *_ = write_fishbowl(str(tmp_path))
  fdir = os.path.join(data_dir, "test_flow", fishbowl.FLOW_DIR, "7")
  os.remove(os.path.join(fdir, "00002.flo"))
  with pytest.raises(fishbowl.FishbowlError, match="2 .flo files"):
    fishbowl.FishbowlVideos(data_dir).video("7")
