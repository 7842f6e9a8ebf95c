"""FISHBOWL from local files as a SaVos training and evaluation dataset.

`FishbowlClips(root=DIR, ...)` reads the public SaVos code's FISHBOWL layout
(`crl.data.fishbowl`: `DIR/train_data`, `DIR/val_data`, `DIR/test_data`)
and serves it through the same interface as the procedural
`crl.data.occluded_video.OccludedVideo` (`sample_encoded(code, indices)`,
`encode`, `eval_code`, `eval_splits`, `input_shape`, `mask_shape`), so the
SaVos trainer (`configs/savos.py:fishbowl`) trains and scores on it
unchanged:

* each video is cut into consecutive, non-overlapping clips of
  `num_frames` frames (a shorter remainder is dropped); at most
  `max_videos` videos per split are read (in sorted order);
* a clip keeps its `num_objects` objects of largest visible area (summed
  over the clip); fewer objects, and frames where a track is absent, are
  padded with empty masks (the evaluator counts only object-frames with an
  amodal mask);
* with `resolution` > 0, frames are resized to that height (bilinear; the
  width keeps the aspect unless `width` > 0), masks by nearest neighbour,
  flows bilinearly with their vectors scaled by the same factors.

Every clip is held in memory (`[N, T, H, W, 3]` frames, `[N, K, T, H, W]`
masks, `[N, T, H, W, 2]` flows, float32), so size `max_videos` and
`resolution` to the machine. The training stream visits the training clips
in a fixed shuffled order (index `i` -> `(i * a) mod N` with `a` coprime to
`N`), the eval splits in order. FISHBOWL has no interventions: adaptation
to a shifted distribution is not available on it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl import config_lib
from crl.data import fishbowl
from crl.data import occluded_video

SPLIT_DIRS = {"train": "train_data", "validation": "val_data",
              "test": "test_data"}
BATCH_KEYS = occluded_video.BATCH_KEYS


@dataclasses.dataclass(init=False, eq=False)
class FishbowlClips:
  """FISHBOWL clips from `root` (see the module docstring).

  Attributes:
    root: the directory holding `train_data/` and `test_data/` (and
      optionally `val_data/`).
    num_frames: frames per clip.
    num_objects: objects per clip (padded with empty tracks).
    resolution: frame height after resizing (0: as stored, 320).
    width: frame width after resizing (0: keep the aspect).
    max_videos: videos read per split, at most.
  """
  root: str = ""
  num_frames: int = 8
  num_objects: int = 3
  resolution: int = 0
  width: int = 0
  max_videos: int = 64

  batch_keys = BATCH_KEYS
  input_key = "frames"

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    if not self.root:
      raise ValueError("root is empty; set --config.data.root=DIR, a "
                       "FISHBOWL directory with train_data/ and test_data/")
    for name in ("num_frames", "num_objects", "max_videos"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    missing = [d for s, d in SPLIT_DIRS.items() if s != "validation" and
               not os.path.isdir(os.path.join(self.root, d))]
    if missing:
      raise ValueError(f"{self.root} has no {', '.join(missing)} "
                       "directory (expected the FISHBOWL layout of the "
                       "public SaVos code)")
    per_split = {}
    for split, directory in SPLIT_DIRS.items():
      path = os.path.join(self.root, directory)
      if not os.path.isdir(path):
        continue
      clips = self._read_split(path)
      if not clips:
        raise ValueError(f"{path}: no video has {self.num_frames} frames")
      per_split[split] = clips
    self._store(per_split)

  def _store(self, per_split: dict[str, list[dict[str, np.ndarray]]]
             ) -> None:
    """Holds every split's clips (`_clips` dicts) as device arrays."""
    parts, self._ranges = [], {}
    for split, clips in per_split.items():
      self._ranges[split] = (len(parts), len(clips))
      parts += clips
    self._arrays = {k: jnp.asarray(np.stack([c[k] for c in parts]))
                    for k in BATCH_KEYS}
    self._frame_size = tuple(self._arrays["frames"].shape[2:4])

  # Reading -------------------------------------------------------------------

  def _read_split(self, path: str) -> list[dict[str, np.ndarray]]:
    try:
      reader = fishbowl.FishbowlVideos(path)
      clips = []
      for video_id in reader.video_ids()[:self.max_videos]:
        clips += self._clips(self._resized(reader.video(video_id)))
    except fishbowl.FishbowlError as e:
      raise ValueError(str(e)) from e
    return clips

  def _resized(self, video: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`video` at `resolution` px high (unchanged when 0)."""
    h, w = video["frames"].shape[1:3]
    if not self.resolution or (self.resolution == h and
                               self.width in (0, w)):
      return video
    new_h = int(self.resolution)
    new_w = int(self.width) or max(1, round(w * new_h / h))
    out = dict(video)
    t = video["frames"].shape[0]
    out["frames"] = np.asarray(jax.image.resize(
        video["frames"], (t, new_h, new_w, 3), "linear"))
    for k in ("visible", "amodal", "occluder"):
      out[k] = np.asarray(jax.image.resize(
          video[k], video[k].shape[:2] + (new_h, new_w), "nearest"))
    scale = np.asarray([new_w / w, new_h / h], np.float32)  # (x, y)
    for k in ("flow_fwd", "flow_bwd"):
      out[k] = np.asarray(jax.image.resize(
          video[k], (t, new_h, new_w, 2), "linear")) * scale
    return out

  def _clips(self, video: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Consecutive clips of `num_frames` frames with `num_objects` tracks."""
    t = video["frames"].shape[0]
    n, k = int(self.num_frames), int(self.num_objects)
    out = []
    for start in range(0, t - n + 1, n):
      window = slice(start, start + n)
      area = video["visible"][:, window].sum((1, 2, 3))
      chosen = [i for i in np.argsort(-area, kind="stable")[:k]
                if video["amodal"][i, window].any()]
      clip = {key: video[key][window].astype(np.float32)
              for key in ("frames", "flow_fwd", "flow_bwd")}
      for key in ("visible", "amodal", "occluder"):
        masks = np.zeros((k, n) + video[key].shape[2:], np.float32)
        masks[:len(chosen)] = video[key][chosen, window]
        clip[key] = masks
      out.append(clip)
    return out

  # Interface (as crl.data.occluded_video.OccludedVideo) ----------------------

  @property
  def input_shape(self) -> tuple[int, ...]:
    return (int(self.num_frames),) + self._frame_size + (3,)

  @property
  def mask_shape(self) -> tuple[int, ...]:
    """Per-example shape of 'visible', 'amodal' and 'occluder'."""
    return (int(self.num_objects), int(self.num_frames)) + self._frame_size

  def eval_splits(self) -> dict[str, str]:
    """`{split: description}` of the eval splits present ('test', and
    'validation' when `val_data/` exists)."""
    names = {"test": "FISHBOWL test_data clips",
             "validation": "FISHBOWL val_data clips"}
    return {s: d for s, d in names.items() if s in self._ranges}

  def parse_intervention(self, intervention: str) -> tuple[str, ...]:
    """Always raises: FISHBOWL has no interventions."""
    raise ValueError(f"FISHBOWL has no interventions (got "
                     f"{intervention!r}); disable adapt and tta.")

  def num_examples(self, split_name: str) -> int:
    """Clips of `split_name` ('train' or an eval split)."""
    return self._range(split_name)[1]

  def encode(self, split: str, intervention: str | None) -> np.ndarray:
    """`(first clip, clips, stride)` of `split` as int32 `[3]`."""
    if intervention is not None:
      self.parse_intervention(intervention)
    offset, count = self._range(split)
    return np.array([offset, count, _coprime_stride(count) if
                     split == "train" else 1], np.int32)

  def eval_code(self, name: str) -> np.ndarray:
    """`encode(name, None)` for an eval split (a `ValueError` otherwise)."""
    if name not in self.eval_splits():
      raise ValueError(f"Unknown eval split {name!r}; known eval splits: "
                       f"{', '.join(self.eval_splits())}.")
    return self.encode(name, None)

  def sample_encoded(self, code: jax.Array, indices: jax.Array
                     ) -> dict[str, jax.Array]:
    """Clips `indices` (modulo the split's size) of the split `code`
    (pure, jit-friendly): the keys and shapes of `OccludedVideo`'s."""
    code = jnp.asarray(code, jnp.int32)
    idx = code[0] + (jnp.asarray(indices, jnp.int32) * code[2]) % code[1]
    return {k: jnp.take(v, idx, axis=0) for k, v in self._arrays.items()}

  def _range(self, split: str) -> tuple[int, int]:
    if split not in self._ranges:
      raise ValueError(f"Unknown split {split!r}; {self.root} has: "
                       f"{', '.join(self._ranges)}.")
    return self._ranges[split]


def _coprime_stride(n: int) -> int:
  """A stride coprime with `n` near `0.618 n` (a fixed shuffled order)."""
  a = max(1, int(round(0.618 * n)))
  while math.gcd(a, n) != 1:
    a += 1
  return a
