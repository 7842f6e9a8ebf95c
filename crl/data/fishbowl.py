"""FISHBOWL videos from local files, in the layout of the public SaVos code.

`data_dir` is `<root>/<kind>_data` (kind: train, val or test) with

* `<kind>_data.pkl`: a dict `'<video id>_<object id>' -> {frame index: {
  'VM': visible mask, 'FM': full (amodal) mask, 'loss_mask_weight': 1 where
  the object is not covered by another one, ...}}` (frames of a track are
  consecutive); masks are COCO RLE (a dict, or a list of one dict);
* `<kind>_frames/<video id>/*.png|jpg`: the frames (320 x 480, 128 per
  video), sorted by name;
* `<kind>_flow/inference/run.epoch-0-flow-field/<video id>/*.flo` and
  `<kind>_flow_reverse/...`: forward (frame t -> t + 1) and backward flows,
  Middlebury `.flo`, one fewer than frames: the last forward flow is
  repeated (and the first backward one), as the public code does.

`FishbowlVideos(data_dir).video(video_id)` returns one video in the batch
format of `crl.data.occluded_video` (without the batch axis): 'frames'
`[T, H, W, 3]` in [0, 1], 'visible', 'amodal', 'occluder' `[K, T, H, W]`,
'flow_fwd', 'flow_bwd' `[T, H, W, 2]`, plus 'present' `[K, T]` (False on
the padded frames of tracks shorter than the video: their masks are empty)
and 'object_ids' `[K]`. The occluder is `1 - loss_mask_weight` where the
object is present. Files are read lazily; a missing or malformed file
raises a `FishbowlError` naming it.
"""

from __future__ import annotations

import collections
import os
import pickle
from typing import Any

import numpy as np
from PIL import Image

from crl.data import mask_formats

FLOW_DIR = os.path.join("inference", "run.epoch-0-flow-field")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class FishbowlError(ValueError):
  """Missing or malformed FISHBOWL files."""


def read_frames(directory: str) -> np.ndarray:
  """Sorted images of `directory` as float32 `[T, H, W, 3]` in [0, 1]."""
  if not os.path.isdir(directory):
    raise FishbowlError(f"Frame directory {directory} does not exist.")
  names = sorted(n for n in os.listdir(directory)
                 if n.lower().endswith(IMAGE_EXTENSIONS))
  if not names:
    raise FishbowlError(f"{directory} holds no {IMAGE_EXTENSIONS} frames.")
  return read_frames_list([os.path.join(directory, n) for n in names])


def read_frames_list(paths: list[str]) -> np.ndarray:
  """Images `paths` as float32 `[T, H, W, 3]` in [0, 1] (equal sizes)."""
  frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
  shapes = {f.shape for f in frames}
  if len(shapes) != 1:
    raise FishbowlError(f"Frames of different sizes {shapes}: "
                        f"{os.path.dirname(paths[0])}.")
  return np.stack(frames).astype(np.float32) / 255.


def read_flows(directory: str, num_frames: int, forward: bool) -> np.ndarray:
  """`.flo` files of `directory` `[T, H, W, 2]`, padded to `num_frames` by
  repeating the last (forward) or first (backward) flow."""
  if not os.path.isdir(directory):
    raise FishbowlError(f"Flow directory {directory} does not exist.")
  names = sorted(n for n in os.listdir(directory) if n.endswith(".flo"))
  if len(names) not in (num_frames - 1, num_frames):
    raise FishbowlError(f"{directory}: {len(names)} .flo files for "
                        f"{num_frames} frames; expected {num_frames - 1}.")
  try:
    flows = [mask_formats.read_flo(os.path.join(directory, n)) for n in names]
  except mask_formats.MaskFormatError as e:
    raise FishbowlError(str(e)) from e
  if len(flows) < num_frames:
    flows = flows + flows[-1:] if forward else flows[:1] + flows
  return np.stack(flows)


class FishbowlVideos:
  """Lazy reader of one FISHBOWL split (see the module docstring)."""

  def __init__(self, data_dir: str):
    self.data_dir = data_dir
    self.kind = os.path.basename(os.path.normpath(data_dir)).split("_")[0]
    path = os.path.join(data_dir, f"{self.kind}_data.pkl")
    if not os.path.exists(path):
      raise FishbowlError(f"{path} does not exist (expected the FISHBOWL "
                          f"annotation pickle of {data_dir}).")
    with open(path, "rb") as f:
      summary = pickle.load(f)
    if not isinstance(summary, dict):
      raise FishbowlError(f"{path}: expected a dict of tracks, got "
                          f"{type(summary).__name__}.")
    self._tracks: dict[str, dict[str, Any]] = collections.defaultdict(dict)
    for key, track in summary.items():
      video, _, obj = str(key).partition("_")
      if not obj or not isinstance(track, dict):
        raise FishbowlError(f"{path}: track key {key!r} is not "
                            "'<video>_<object>' with a dict of frames.")
      self._tracks[video][obj] = track

  def video_ids(self) -> list[str]:
    return sorted(self._tracks)

  def video(self, video_id: str) -> dict[str, np.ndarray]:
    if video_id not in self._tracks:
      raise FishbowlError(f"Unknown video {video_id!r}; known: "
                          f"{', '.join(self.video_ids()[:10])}...")
    frames = read_frames(os.path.join(self.data_dir, f"{self.kind}_frames",
                                      video_id))
    t, h, w = frames.shape[:3]
    flow_root = lambda d: os.path.join(self.data_dir, f"{self.kind}_{d}",
                                       FLOW_DIR, video_id)
    flow_fwd = read_flows(flow_root("flow"), t, forward=True)
    flow_bwd = read_flows(flow_root("flow_reverse"), t, forward=False)
    if flow_fwd.shape[1:3] != (h, w) or flow_bwd.shape[1:3] != (h, w):
      raise FishbowlError(f"Video {video_id}: flows of {flow_fwd.shape[1:3]} "
                          f"for frames of {(h, w)}.")
    objects = sorted(self._tracks[video_id], key=lambda o: (len(o), o))
    k = len(objects)
    visible = np.zeros((k, t, h, w), np.float32)
    amodal = np.zeros_like(visible)
    occluder = np.zeros_like(visible)
    present = np.zeros((k, t), bool)
    for i, obj in enumerate(objects):
      for step, ann in self._tracks[video_id][obj].items():
        step = int(step)
        if not 0 <= step < t:
          raise FishbowlError(f"Video {video_id} object {obj}: frame {step} "
                              f"outside the {t} frames.")
        try:
          vm = mask_formats.rle_decode(ann["VM"])
          fm = mask_formats.rle_decode(ann["FM"])
          free = mask_formats.rle_decode(ann["loss_mask_weight"])
        except (KeyError, mask_formats.MaskFormatError) as e:
          raise FishbowlError(f"Video {video_id} object {obj} frame {step}: "
                              f"{e!r} (expected RLE 'VM', 'FM' and "
                              "'loss_mask_weight').") from e
        if vm.shape != (h, w) or fm.shape != (h, w) or free.shape != (h, w):
          raise FishbowlError(f"Video {video_id} object {obj} frame {step}: "
                              f"masks of {vm.shape} for frames of {(h, w)}.")
        visible[i, step], amodal[i, step] = vm, fm
        occluder[i, step] = 1. - free
        present[i, step] = True
    return {"frames": frames, "visible": visible, "amodal": amodal,
            "occluder": occluder, "flow_fwd": flow_fwd, "flow_bwd": flow_bwd,
            "present": present, "object_ids": np.asarray(objects)}
