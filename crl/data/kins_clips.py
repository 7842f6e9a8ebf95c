"""KINS-Video-Car from local files as a SaVos training and evaluation dataset.

`KinsClips(root=DIR, ...)` reads KINS-Video-Car with
`crl.data.kins_video.KinsVideoCar` (KINS JSON, the KITTI devkit's mapping
files and the KITTI raw frames) and serves it through `FishbowlClips`'s
clip store and interface, so the SaVos trainer (`configs/savos.py:kins`)
trains and scores on it unchanged. Paths are relative to `root` unless
absolute:

* `train_json`, `test_json`: KINS annotations of the two splits (KINS
  ships them as `instances_train.json` / `instances_val.json`);
* `mapping`, `rand`: the devkit's `train_mapping.txt` and `train_rand.txt`;
* `raw`: KITTI raw, `<date>/<drive>/image_02/data/<frame>.png`;
* `flow`: optical flow, which KINS does not have (estimate it, e.g. with
  RAFT): `<date>/<drive>/forward/<frame>.flo` (frame t -> t + 1) and
  `backward/<frame>.flo` (t -> t - 1), Middlebury `.flo`, named like the
  raw frames; the last frame's forward and the first frame's backward flow
  may be missing (the neighbouring flow is repeated, as for FISHBOWL).

A video is one drive from its first to its last annotated frame; masks exist
on annotated frames only (elsewhere the tracks are empty, and the evaluator
counts only object-frames with an amodal mask). Clips, object selection and
resizing are `FishbowlClips`'s. KINS has no interventions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from crl import config_lib
from crl.data import fishbowl_clips
from crl.data import kins_video
from crl.data import mask_formats

SPLITS = ("train", "test")


@dataclasses.dataclass(init=False, eq=False)
class KinsClips(fishbowl_clips.FishbowlClips):
  """KINS-Video-Car clips from `root` (see the module docstring).

  Attributes (besides `FishbowlClips`'s num_frames, num_objects,
  resolution, width, max_videos: here drives per split):
    root: the directory the relative paths below are in.
    train_json, test_json, mapping, rand, raw, flow: see the module
      docstring.
  """
  train_json: str = "instances_train.json"
  test_json: str = "instances_val.json"
  mapping: str = "train_mapping.txt"
  rand: str = "train_rand.txt"
  raw: str = "raw"
  flow: str = "flow"

  def __init__(self, **kwargs: Any):  # pylint: disable=super-init-not-called
    config_lib.init_fields(self, kwargs)
    if not self.root:
      raise ValueError("root is empty; set --config.data.root=DIR, a "
                       "directory with the KINS JSON, the KITTI devkit "
                       "mapping files, raw/ and flow/")
    for name in ("num_frames", "num_objects", "max_videos"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    flow_root = self._path(self.flow)
    if not os.path.isdir(flow_root):
      raise ValueError(
          f"KINS has no optical flow and {flow_root} does not exist: set "
          "--config.data.flow=DIR holding <date>/<drive>/forward/<frame>.flo "
          "and backward/<frame>.flo for every raw frame (e.g. from RAFT)")
    per_split = {}
    for split in SPLITS:
      json_path = self._path(getattr(self, f"{split}_json"))
      try:
        reader = kins_video.KinsVideoCar(
            json_path, self._path(self.mapping), self._path(self.rand),
            self._path(self.raw))
        clips = []
        for drive in reader.drives()[:self.max_videos]:
          video = reader.video(drive)
          if len(video["frame_ids"]) < int(self.num_frames):
            continue
          video.update(self._flows(drive, video["frame_ids"]))
          clips += self._clips(self._resized(video))
      except (kins_video.KinsError, mask_formats.MaskFormatError) as e:
        raise ValueError(str(e)) from e
      if not clips:
        raise ValueError(f"{json_path}: no drive has {self.num_frames} "
                         "frames between its first and last annotation")
      per_split[split] = clips
    self._store(per_split)

  def _path(self, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(self.root, path)

  def _flows(self, drive: str, frame_ids: np.ndarray
             ) -> dict[str, np.ndarray]:
    """'flow_fwd', 'flow_bwd' `[T, H, W, 2]` of the drive's frames."""
    out = {}
    for key, sub, boundary in (("flow_fwd", "forward", len(frame_ids) - 1),
                               ("flow_bwd", "backward", 0)):
      directory = os.path.join(self._path(self.flow), drive, sub)
      flows = {}
      for t, frame in enumerate(frame_ids):
        path = os.path.join(directory, f"{int(frame):010d}.flo")
        if os.path.exists(path):
          flows[t] = mask_formats.read_flo(path)
        elif t != boundary:
          raise ValueError(f"{path} is missing (KINS flows: one .flo per "
                           "raw frame, named like the frame)")
      if boundary not in flows:
        flows[boundary] = flows[boundary - 1 if boundary else 1]
      out[key] = np.stack([flows[t] for t in range(len(frame_ids))])
    return out

  def eval_splits(self) -> dict[str, str]:
    """{'test': description}."""
    return {"test": "KINS-Video-Car clips of the KINS test annotations"}

  def parse_intervention(self, intervention: str) -> tuple[str, ...]:
    """Always raises: KINS has no interventions."""
    raise ValueError(f"KINS-Video-Car has no interventions (got "
                     f"{intervention!r}); disable adapt and tta.")
