"""The public SaVos code's test-set protocol, and what its filters remove.

`OfficialProtocol` keeps the object-frames that the public code's FISHBOWL
test set keeps (amodal box over 20 x 20 px and at least 16 px from the
border, visible box over 8 x 8 px, tracks longer than 10 frames, occlusion
rate strictly inside (0.1, 0.7), first and last frame dropped);
`crl.evaluators.amodal_metrics.summarize` scores under it, and
`removed(stats)` counts the object-frames and tracks each filter removes
on its own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

FILTERS = ("amodal_size", "border", "visible_size", "track_length",
           "occlusion")


class OfficialProtocol(NamedTuple):
  """The public SaVos code's test-set filters (pixels and frames).

  An object-frame is kept when its amodal box is over `min_amodal_side`
  px on both sides and at least `min_border` px from every frame edge, its
  visible box is over `min_visible_side` px on both sides, its track is
  present in more than `min_track_frames` frames, and its occlusion rate is
  strictly inside `(min_occlusion, max_occlusion)`; each track's first and
  last frame are dropped. The defaults are the public code's (320x480
  FISHBOWL frames); configs scale the pixel sizes to smaller frames.
  """
  min_amodal_side: float = 20
  min_border: float = 16
  min_visible_side: float = 8
  min_track_frames: int = 10
  min_occlusion: float = 0.1
  max_occlusion: float = 0.7

  def keep(self, stats: dict[str, np.ndarray]) -> np.ndarray:
    """`[V, K, T]` bool: the object-frames passing the size, border and
    track-length filters (occlusion is applied by `per_frame_miou`)."""
    masks = self.filter_masks(stats)
    return np.logical_and.reduce([masks[n] for n in FILTERS
                                  if n != "occlusion"])

  def filter_masks(self, stats: dict[str, Any]) -> dict[str, np.ndarray]:
    """`{filter: [V, K, T] bool}`: the present object-frames each filter of
    `FILTERS` keeps on its own."""
    s = {k: np.asarray(v) for k, v in stats.items()}
    present = s["present"].astype(bool)
    rate = s["occlusion_rate"]
    long_tracks = present.sum(-1, keepdims=True) > self.min_track_frames
    return {
        "amodal_size": present & (s["amodal_height"] > self.min_amodal_side)
                       & (s["amodal_width"] > self.min_amodal_side),
        "border": present & (s["amodal_border"] >= self.min_border),
        "visible_size": present & (s["visible_height"] >
                                   self.min_visible_side)
                        & (s["visible_width"] > self.min_visible_side),
        "track_length": present & long_tracks,
        "occlusion": present & (rate > self.min_occlusion)
                     & (rate < self.max_occlusion),
    }

  def removed(self, stats: dict[str, Any]) -> dict[str, Any]:
    """What each filter removes on its own from `object_frame_stats` arrays
    `[V, K, T]`: `{filter: {'object_frames', 'tracks'}}` (a track is removed
    when no present frame of it passes), plus 'present' (object-frames and
    tracks before filtering) and 'kept' (after every filter; the dropped
    first and last frames not counted)."""
    present = np.asarray(stats["present"]).astype(bool)
    tracks = present.any(-1)
    out: dict[str, Any] = {"present": {"object_frames": int(present.sum()),
                                       "tracks": int(tracks.sum())}}
    masks = self.filter_masks(stats)
    for name in FILTERS:
      kept = masks[name]
      out[name] = {"object_frames": int((present & ~kept).sum()),
                   "tracks": int((tracks & ~kept.any(-1)).sum())}
    every = np.logical_and.reduce([masks[n] for n in FILTERS])
    out["kept"] = {"object_frames": int(every.sum()),
                   "tracks": int(every.any(-1).sum())}
    return out

  def describe(self) -> str:
    return (f"official: amodal box > {self.min_amodal_side:g} px a side and "
            f">= {self.min_border:g} px from the border, visible box > "
            f"{self.min_visible_side:g} px a side, tracks of > "
            f"{self.min_track_frames} frames, occlusion rate in "
            f"({self.min_occlusion:g}, {self.max_occlusion:g}) exclusive, "
            "first and last frame dropped, mean over objects then frames")

