"""KINS-Video-Car from local files: KITTI raw video with KINS amodal masks.

KINS annotates amodal and visible ("inmodal") masks on the KITTI object
benchmark's images, each a frame of a KITTI raw drive. This reader turns
them into tracked videos the way the public SaVos code's KINS-Video-Car
does:

* the KITTI devkit's `train_mapping.txt` (`<date> <drive> <frame>` per
  line) and `train_rand.txt` (comma-separated 1-based line numbers, one per
  object-benchmark image) map KINS image `000123.png` to its raw frame
  `<raw_root>/<date>/<drive>/image_02/data/<frame>.png`;
* a video is one drive, from its first to its last annotated frame (all the
  raw frames in between are read; masks exist on annotated frames only,
  flagged by 'annotated');
* cars ('car' in the JSON's categories) of consecutive annotated frames are
  matched greedily at visible-mask IoU >= `match_iou` (0.5); an unmatched
  car starts a new track. Tracks of different lengths are padded with empty
  masks ('present' False).

KINS JSON: COCO-like, 'images' (`id`, `file_name`, `height`, `width`),
'categories' (`id`, `name`), 'annotations' (`image_id`, `category_id`,
`a_segm` amodal and `i_segm` visible masks as polygon lists
`[[x0, y0, x1, y1, ...], ...]` or COCO RLE dicts). Polygons are rasterised
at pixel centres (even-odd rule).

`KinsVideoCar(json_path, mapping_path, rand_path, raw_root).video(drive)`
returns 'frames' `[T, H, W, 3]`, 'visible', 'amodal', 'occluder'
`[K, T, H, W]` (the occluder: the other cars' visible masks), 'present'
`[K, T]`, 'annotated' `[T]` and 'frame_ids' `[T]`. Flows are not part of
KINS; estimate them with a flow network and read them with
`crl.data.mask_formats.read_flo`.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import numpy as np

from crl.data import fishbowl
from crl.data import mask_formats


class KinsError(ValueError):
  """Missing or malformed KINS / KITTI files."""


def rasterize_polygons(polygons: Any, height: int, width: int) -> np.ndarray:
  """bool `[height, width]`: pixel centres inside any polygon (even-odd)."""
  out = np.zeros((height, width), bool)
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
  for poly in polygons:
    pts = np.asarray(poly, np.float64).reshape(-1, 2)
    if len(pts) < 3:
      continue
    inside = np.zeros((height, width), bool)
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1):
      if b == d:
        continue
      crosses = (ys >= min(b, d)) & (ys < max(b, d))
      x_at = a + (ys - b) * (c - a) / (d - b)
      inside ^= crosses & (xs < x_at)
    out |= inside
  return out


def decode_segm(segm: Any, height: int, width: int) -> np.ndarray:
  """A KINS mask (polygons or RLE) as bool `[height, width]`."""
  if isinstance(segm, dict) or (isinstance(segm, list) and segm and
                                isinstance(segm[0], dict)):
    return mask_formats.rle_decode(segm)
  return rasterize_polygons(segm, height, width)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
  union = np.logical_or(a, b).sum()
  return float(np.logical_and(a, b).sum() / union) if union else 0.


def match_tracks(frames: list[list[np.ndarray]],
                 min_iou: float = 0.5) -> list[list[int]]:
  """Track ids of each frame's objects: greedy matching (highest IoU first)
  of consecutive frames' visible masks at IoU >= `min_iou`."""
  ids: list[list[int]] = []
  next_id = 0
  for f, masks in enumerate(frames):
    current = [-1] * len(masks)
    if f and frames[f - 1]:
      pairs = sorted(((mask_iou(p, m), i, j)
                      for i, p in enumerate(frames[f - 1])
                      for j, m in enumerate(masks)), reverse=True)
      used = set()
      for value, i, j in pairs:
        if value >= min_iou and i not in used and current[j] < 0:
          current[j] = ids[f - 1][i]
          used.add(i)
    for j in range(len(masks)):
      if current[j] < 0:
        current[j], next_id = next_id, next_id + 1
    ids.append(current)
  return ids


class KinsVideoCar:
  """Reader of KINS-Video-Car (see the module docstring)."""

  def __init__(self, json_path: str, mapping_path: str, rand_path: str,
               raw_root: str, match_iou: float = 0.5):
    for path in (json_path, mapping_path, rand_path):
      if not os.path.exists(path):
        raise KinsError(f"{path} does not exist.")
    self.raw_root, self.match_iou = raw_root, match_iou
    with open(json_path) as f:
      coco = json.load(f)
    try:
      cars = {c["id"] for c in coco["categories"] if c["name"] == "car"}
      images = {im["id"]: im for im in coco["images"]}
      annotations = coco["annotations"]
    except (KeyError, TypeError) as e:
      raise KinsError(f"{json_path}: expected COCO-like 'images', "
                      f"'categories' and 'annotations' ({e!r}).") from e
    with open(mapping_path) as f:
      mapping = [line.split() for line in f if line.strip()]
    with open(rand_path) as f:
      rand = [int(x) for x in f.read().replace("\n", ",").split(",")
              if x.strip()]
    by_image = collections.defaultdict(list)
    for ann in annotations:
      if ann.get("category_id") in cars:
        by_image[ann["image_id"]].append(ann)
    # drive -> {raw frame index: (image, annotations)}
    self._drives: dict[str, dict[int, Any]] = collections.defaultdict(dict)
    for image_id, image in images.items():
      index = int(os.path.splitext(os.path.basename(image["file_name"]))[0])
      if index >= len(rand) or not 1 <= rand[index] <= len(mapping):
        raise KinsError(f"{rand_path}: no raw frame for KINS image "
                        f"{image['file_name']} (index {index}).")
      line = mapping[rand[index] - 1]
      if len(line) != 3:
        raise KinsError(f"{mapping_path}: line {rand[index]} is not "
                        f"'<date> <drive> <frame>': {line}.")
      date, drive, frame = line
      self._drives[f"{date}/{drive}"][int(frame)] = (image,
                                                    by_image[image_id])

  def drives(self) -> list[str]:
    return sorted(self._drives)

  def video(self, drive: str) -> dict[str, np.ndarray]:
    if drive not in self._drives:
      raise KinsError(f"Unknown drive {drive!r}; known: "
                      f"{', '.join(self.drives()[:5])}...")
    annotated = self._drives[drive]
    first, last = min(annotated), max(annotated)
    frame_dir = os.path.join(self.raw_root, drive, "image_02", "data")
    names = {int(os.path.splitext(n)[0]): n
             for n in (os.listdir(frame_dir) if os.path.isdir(frame_dir)
                       else ())}
    missing = [i for i in range(first, last + 1) if i not in names]
    if missing:
      raise KinsError(f"{frame_dir}: raw frames {missing[:5]} missing "
                      f"(need {first}..{last}).")
    frames = fishbowl.read_frames_list(
        [os.path.join(frame_dir, names[i]) for i in range(first, last + 1)])
    t, h, w = frames.shape[:3]
    steps = sorted(annotated)
    per_frame_vis, per_frame_amodal = [], []
    for s in steps:
      image, anns = annotated[s]
      if (image["height"], image["width"]) != (h, w):
        raise KinsError(f"KINS image {image['file_name']} is "
                        f"{image['height']}x{image['width']}; raw frames "
                        f"are {h}x{w}.")
      per_frame_vis.append([decode_segm(a["i_segm"], h, w) for a in anns])
      per_frame_amodal.append([decode_segm(a["a_segm"], h, w) for a in anns])
    ids = match_tracks(per_frame_vis, self.match_iou)
    k = 1 + max((i for row in ids for i in row), default=-1)
    visible = np.zeros((k, t, h, w), np.float32)
    amodal = np.zeros_like(visible)
    present = np.zeros((k, t), bool)
    for s, row, vis, amo in zip(steps, ids, per_frame_vis, per_frame_amodal):
      for track, v, a in zip(row, vis, amo):
        visible[track, s - first], amodal[track, s - first] = v, a
        present[track, s - first] = True
    others = np.clip(visible.sum(0, keepdims=True) - visible, 0., 1.)
    is_annotated = np.zeros(t, bool)
    is_annotated[[s - first for s in steps]] = True
    return {"frames": frames, "visible": visible, "amodal": amodal,
            "occluder": others * present[..., None, None],
            "present": present, "annotated": is_annotated,
            "frame_ids": np.arange(first, last + 1)}
