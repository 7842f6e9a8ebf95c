"""KINS-Video-Car: KINS JSON, KITTI devkit mapping files and raw frames,
written here in those formats and read back as tracked videos."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from crl.data import kins_video
from crl.data import mask_formats as mf

H, W = 10, 24
DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"


def _rect(x0, y0, x1, y1):
  return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_rasterize_polygons_by_hand():
  m = kins_video.rasterize_polygons(_rect(1, 1, 5, 3), 6, 8)
  expected = np.zeros((6, 8), bool)
  expected[1:3, 1:5] = True                      # centres 1.5..4.5, 1.5..2.5
  np.testing.assert_array_equal(m, expected)
  tri = kins_video.rasterize_polygons([[0, 0, 4, 0, 0, 4]], 4, 4)
  assert tri.sum() == 6 and tri[0, 0] and not tri[3, 3]


def test_match_tracks_at_visible_iou():
  a = np.zeros((4, 4), bool)
  a[:2, :2] = True
  b = np.zeros((4, 4), bool)
  b[:2, :3] = True                                # IoU(a, b) = 4 / 6
  c = np.zeros((4, 4), bool)
  c[3, 3] = True
  assert kins_video.match_tracks([[a, c], [c, b]]) == [[0, 1], [1, 0]]
  assert kins_video.match_tracks([[a], [b]], min_iou=0.7) == [[0], [1]]


def _write_kins(root):
  raw = os.path.join(root, "raw", DRIVE, "image_02", "data")
  os.makedirs(raw)
  rs = np.random.RandomState(0)
  frames = (rs.rand(4, H, W, 3) * 255).astype(np.uint8)
  for i in range(4):
    Image.fromarray(frames[i]).save(os.path.join(raw, f"{10 + i:010d}.png"))
  with open(os.path.join(root, "train_mapping.txt"), "w") as f:
    f.write(f"2011_09_26 {DRIVE.split('/')[1]} 0000000012\n"
            f"2011_09_26 {DRIVE.split('/')[1]} 0000000010\n")
  with open(os.path.join(root, "train_rand.txt"), "w") as f:
    f.write("2,1\n")                 # image 0 -> line 2 (frame 10), 1 -> 1
  moved = np.zeros((H, W), bool)
  moved[2:6, 3:9] = True
  anns = [
      # frame 10: car A, car B, a pedestrian (ignored)
      dict(image_id=0, category_id=4, i_segm=_rect(2, 2, 8, 6),
           a_segm=_rect(2, 2, 9, 6)),
      dict(image_id=0, category_id=4, i_segm=_rect(12, 2, 16, 6),
           a_segm=_rect(12, 2, 16, 6)),
      dict(image_id=0, category_id=2, i_segm=_rect(0, 0, 2, 2),
           a_segm=_rect(0, 0, 2, 2)),
      # frame 12: car C (new), car A moved by one pixel (amodal as RLE)
      dict(image_id=1, category_id=4, i_segm=_rect(18, 5, 22, 9),
           a_segm=_rect(18, 4, 22, 9)),
      dict(image_id=1, category_id=4, i_segm=_rect(3, 2, 9, 6),
           a_segm=[mf.rle_encode(moved) | {"counts": mf.rle_encode(
               moved)["counts"].decode()}]),
  ]
  coco = {"images": [{"id": 0, "file_name": "000000.png", "height": H,
                      "width": W},
                     {"id": 1, "file_name": "000001.png", "height": H,
                      "width": W}],
          "categories": [{"id": 2, "name": "pedestrian"},
                         {"id": 4, "name": "car"}],
          "annotations": anns}
  with open(os.path.join(root, "instances.json"), "w") as f:
    json.dump(coco, f)
  return frames


def _reader(root):
  return kins_video.KinsVideoCar(
      os.path.join(root, "instances.json"),
      os.path.join(root, "train_mapping.txt"),
      os.path.join(root, "train_rand.txt"), os.path.join(root, "raw"))


def test_kins_video_car_tracks_and_padding(tmp_path):
  frames = _write_kins(str(tmp_path))
  reader = _reader(str(tmp_path))
  assert reader.drives() == [DRIVE]
  v = reader.video(DRIVE)
  # From the first to the last annotated frame (raw frame 13 is not read).
  np.testing.assert_allclose(v["frames"], frames[:3] / 255., atol=1e-6)
  np.testing.assert_array_equal(v["frame_ids"], [10, 11, 12])
  np.testing.assert_array_equal(v["annotated"], [1, 0, 1])
  # Tracks: A (frames 10, 12), B (10), C (12); nothing on frame 11.
  np.testing.assert_array_equal(v["present"],
                                [[1, 0, 1], [1, 0, 0], [0, 0, 1]])
  assert v["visible"][0, 0].sum() == 6 * 4 and v["visible"][0, 2, 2, 8]
  assert v["amodal"][0, 0].sum() == 7 * 4 and v["amodal"][0, 2].sum() == 24
  assert not v["visible"][:, 1].any()
  # Each car's occluder is the other cars' visible masks in that frame.
  np.testing.assert_array_equal(v["occluder"][0, 0], v["visible"][1, 0])
  np.testing.assert_array_equal(v["occluder"][2, 2], v["visible"][0, 2])
  assert not v["occluder"][1, 2].any()           # B absent: no occluder


def test_kins_errors_name_what_is_missing(tmp_path):
  with pytest.raises(kins_video.KinsError, match="does not exist"):
    _reader(str(tmp_path))
  _write_kins(str(tmp_path))
  os.remove(os.path.join(str(tmp_path), "raw", DRIVE, "image_02", "data",
                         "0000000011.png"))
  with pytest.raises(kins_video.KinsError, match=r"raw frames \[11\]"):
    _reader(str(tmp_path)).video(DRIVE)
