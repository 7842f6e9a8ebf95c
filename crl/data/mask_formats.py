"""File formats of real amodal-video data: COCO RLE masks, Middlebury flow.

* COCO run-length encoding (as pycocotools, written here so that nothing
  compiled is needed): a binary mask `[H, W]` read in column-major order as
  alternating run lengths starting with a run of zeros; `{'size': [H, W],
  'counts': ...}` with `counts` a list of ints (uncompressed) or the
  compact string (each count, from the fourth on as the difference from
  the count two before, in 5-bit groups, least significant first, bit 0x20
  = more groups follow, bit 0x10 of the last group = negative, plus 48).
  `rle_encode` / `rle_decode` / `rle_string` / `rle_counts`.
* Middlebury `.flo`: little-endian float32 magic 202021.25, int32 width,
  int32 height, then `height x width x 2` float32 (u, v) row-major.
  `read_flo` / `write_flo`.

Every malformed input raises a `MaskFormatError` naming the file or field
and what was expected.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

FLO_MAGIC = 202021.25


class MaskFormatError(ValueError):
  """A malformed RLE mask or .flo file."""


# COCO RLE ------------------------------------------------------------------


def rle_counts(mask: np.ndarray) -> list[int]:
  """Run lengths of a binary `[H, W]` mask (column-major, zeros first)."""
  flat = np.asarray(mask, bool).ravel(order="F")
  change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  bounds = np.concatenate([[0], change, [flat.size]])
  counts = np.diff(bounds).tolist()
  if flat.size and flat[0]:
    counts = [0] + counts
  return [int(c) for c in counts]


def rle_string(counts: list[int]) -> bytes:
  """The compact COCO string of run lengths."""
  out = bytearray()
  for i, count in enumerate(counts):
    x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
    more = True
    while more:
      c = x & 0x1F
      x >>= 5
      more = (x != -1) if (c & 0x10) else (x != 0)
      if more:
        c |= 0x20
      out.append(c + 48)
  return bytes(out)


def rle_string_counts(s: bytes | str) -> list[int]:
  """Inverse of `rle_string`."""
  data = s.encode("ascii") if isinstance(s, str) else bytes(s)
  counts: list[int] = []
  p = 0
  while p < len(data):
    x, k, more = 0, 0, True
    while more:
      if p >= len(data):
        raise MaskFormatError("RLE counts string ends inside a count.")
      c = data[p] - 48
      if not 0 <= c < 64:
        raise MaskFormatError(f"RLE counts string has an invalid character "
                              f"{chr(data[p])!r} at {p}.")
      x |= (c & 0x1F) << (5 * k)
      more = bool(c & 0x20)
      p += 1
      k += 1
      if not more and (c & 0x10):
        x |= -1 << (5 * k)
    if len(counts) > 2:
      x += counts[-2]
    counts.append(x)
  return counts


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
  """`{'size': [H, W], 'counts': bytes}` of a binary mask `[H, W]`."""
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise MaskFormatError(f"rle_encode needs a [H, W] mask, got shape "
                          f"{mask.shape}.")
  return {"size": [int(mask.shape[0]), int(mask.shape[1])],
          "counts": rle_string(rle_counts(mask))}


def rle_decode(rle: Any) -> np.ndarray:
  """A COCO RLE (dict, or a list of one dict as pycocotools' `decode`
  takes) -> bool `[H, W]`."""
  if isinstance(rle, (list, tuple)):
    if len(rle) != 1:
      raise MaskFormatError(f"Expected one RLE mask, got a list of "
                            f"{len(rle)}.")
    rle = rle[0]
  if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
    raise MaskFormatError("An RLE mask must be a dict with 'size' [H, W] and "
                          f"'counts'; got {type(rle).__name__}.")
  h, w = (int(v) for v in rle["size"])
  counts = rle["counts"]
  if isinstance(counts, (bytes, str)):
    counts = rle_string_counts(counts)
  counts = [int(c) for c in counts]
  if any(c < 0 for c in counts) or sum(counts) != h * w:
    raise MaskFormatError(f"RLE counts sum to {sum(counts)} (or are "
                          f"negative); expected {h} x {w} = {h * w} pixels.")
  values = np.arange(len(counts)) % 2 == 1
  flat = np.repeat(values, counts)
  return flat.reshape((w, h)).T


# Middlebury .flo -----------------------------------------------------------


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
  """Writes `[H, W, 2]` (u = along the width, v = along the height)."""
  flow = np.asarray(flow, np.float32)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise MaskFormatError(f"write_flo needs [H, W, 2], got {flow.shape}.")
  h, w = flow.shape[:2]
  with open(path, "wb") as f:
    f.write(np.asarray([FLO_MAGIC], "<f4").tobytes())
    f.write(np.asarray([w, h], "<i4").tobytes())
    f.write(flow.astype("<f4").tobytes())


def read_flo(path: str | os.PathLike) -> np.ndarray:
  """Reads a Middlebury `.flo` file as float32 `[H, W, 2]`."""
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < 12:
    raise MaskFormatError(f"{path}: too short for a .flo header (12 bytes).")
  magic = np.frombuffer(data[:4], "<f4")[0]
  if magic != np.float32(FLO_MAGIC):
    raise MaskFormatError(f"{path}: magic {magic!r} is not {FLO_MAGIC} (not "
                          "a Middlebury .flo file).")
  w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
  expected = 12 + 4 * 2 * w * h
  if w <= 0 or h <= 0 or len(data) != expected:
    raise MaskFormatError(f"{path}: {len(data)} bytes for a {w} x {h} flow; "
                          f"expected {expected}.")
  return np.frombuffer(data[12:], "<f4").reshape(h, w, 2).astype(np.float32)
