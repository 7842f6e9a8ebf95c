"""Pictures of amodal predictions: PNG strips and animated GIFs.

For one tracked object of a video, a strip has one column per frame and four
rows: the frame, the frame with the object's visible mask, with the
predicted amodal mask (thresholded) and with the ground-truth amodal mask;
the occluder region is outlined in the last two rows; a colour key under
the panels names the mask colours. `write_videos` zooms
into the object (`zoom_window`). The GIF shows the same
four panels side by side, one frame of the video per GIF frame.

Drawn on a `matplotlib.figure.Figure` with the Agg canvas (no pyplot, no
display), GIFs with Pillow. Every writer creates missing parent folders and
returns the path it wrote.
"""

from __future__ import annotations

import os
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
from PIL import Image

VISIBLE_RGB = (0.1, 0.9, 0.2)
PREDICTED_RGB = (1.0, 0.25, 0.1)
TRUTH_RGB = (0.2, 0.5, 1.0)
ROWS = ("frame", "visible", "predicted amodal", "ground-truth amodal")


def overlay(frame: np.ndarray, mask: np.ndarray,
            rgb: Sequence[float], alpha: float = 0.65) -> np.ndarray:
  """`frame` `[H, W, 3]`, dimmed, with `mask` `[H, W]` painted in `rgb`."""
  m = (np.asarray(mask) > 0.5)[..., None] * alpha
  return np.clip(0.6 * np.asarray(frame) * (1. - m) + np.asarray(rgb) * m,
                 0., 1.)


def zoom_window(masks: np.ndarray, margin: float = 0.3,
                min_size: int = 16) -> tuple[slice, slice]:
  """A square window (row slice, column slice) around the union of `masks`
  `[..., H, W]`, enlarged by `margin` on each side, inside the image."""
  union = np.asarray(masks).reshape((-1,) + masks.shape[-2:]).max(0) > 0.5
  height, width = union.shape
  if not union.any():
    return slice(0, height), slice(0, width)
  rows, cols = np.nonzero(union)
  side = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
  side = min(max(int(round(side * (1. + 2. * margin))), min_size),
             height, width)
  def window(lo, hi, n):
    start = int(round((lo + hi + 1) / 2. - side / 2.))
    start = min(max(start, 0), n - side)
    return slice(start, start + side)
  return (window(rows.min(), rows.max(), height),
          window(cols.min(), cols.max(), width))


def _outline(mask: np.ndarray) -> np.ndarray:
  """The boundary pixels of a binary mask."""
  m = np.asarray(mask) > 0.5
  inner = m.copy()
  inner[1:] &= m[:-1]
  inner[:-1] &= m[1:]
  inner[:, 1:] &= m[:, :-1]
  inner[:, :-1] &= m[:, 1:]
  return m & ~inner


def panels(frames: np.ndarray, visible: np.ndarray, prediction: np.ndarray,
           amodal: np.ndarray, occluder: np.ndarray | None = None,
           threshold: float = 0.5) -> np.ndarray:
  """The four panels of every frame, `[4, T, H, W, 3]` (see `ROWS`)."""
  frames = np.asarray(frames, np.float32)
  shapes = {a.shape for a in (visible, prediction, amodal)}
  if len(shapes) != 1 or frames.shape[:-1] != next(iter(shapes)):
    raise ValueError(
        f"frames {frames.shape} need masks of shape {frames.shape[:-1]}; got "
        f"visible {np.shape(visible)}, prediction {np.shape(prediction)}, "
        f"amodal {np.shape(amodal)}.")
  out = np.zeros((4,) + frames.shape, np.float32)
  for t in range(frames.shape[0]):
    f = frames[t]
    out[0, t] = f
    out[1, t] = overlay(f, visible[t], VISIBLE_RGB)
    out[2, t] = overlay(f, np.asarray(prediction[t]) > threshold,
                        PREDICTED_RGB)
    out[3, t] = overlay(f, amodal[t], TRUTH_RGB)
    if occluder is not None:
      edge = _outline(occluder[t])
      out[2:, t][:, edge] = 1.
  return out


def legend_handles(with_occluder: bool) -> list:
  """The strip's colour key: the three mask colours (and the occluder's
  white outline)."""
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  handles = [Patch(facecolor=VISIBLE_RGB, label="visible mask"),
             Patch(facecolor=PREDICTED_RGB,
                   label="predicted amodal mask"),
             Patch(facecolor=TRUTH_RGB, label="ground-truth amodal mask")]
  if with_occluder:
    handles.append(Patch(facecolor="white", edgecolor="0.4", linewidth=0.8,
                         label="occluder outline (white)"))
  return handles


def write_strip(frames: np.ndarray, visible: np.ndarray,
                prediction: np.ndarray, amodal: np.ndarray,
                path: str | os.PathLike, *, occluder: np.ndarray | None = None,
                title: str | None = None, threshold: float = 0.5,
                dpi: int = 100) -> str:
  """One object's PNG strip (rows `ROWS`, one column per frame).

  Args:
    frames: `[T, H, W, 3]` in [0, 1].
    visible, prediction, amodal: `[T, H, W]` (prediction: probabilities).
    path: the PNG to write.
    occluder: optional `[T, H, W]`; its outline is drawn on the last rows.
    title: figure title.
    threshold: prediction threshold.
    dpi: resolution.
  """
  grid = panels(frames, visible, prediction, amodal, occluder, threshold)
  rows, num_t = grid.shape[:2]
  legend_in = 0.45  # a band under the panels for the colour legend
  fig = Figure(figsize=(max(1.5 * num_t + 0.6, 5.5),
                        1.5 * rows + 0.5 + legend_in))
  for r in range(rows):
    for t in range(num_t):
      ax = fig.add_subplot(rows, num_t, r * num_t + t + 1)
      ax.imshow(grid[r, t], interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(f"t={t}", fontsize=8)
      if t == 0:
        ax.set_ylabel(ROWS[r], fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.legend(handles=legend_handles(occluder is not None),
             loc="lower center", ncol=4, fontsize=7, frameon=False)
  height = fig.get_figheight()
  fig.subplots_adjust(left=0.05, right=0.99, bottom=legend_in / height,
                      top=1. - 0.45 / height, wspace=0.05, hspace=0.05)
  path = os.fspath(path)
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  FigureCanvasAgg(fig)
  fig.savefig(path, format="png", dpi=dpi)
  return path


def write_gif(frames: np.ndarray, visible: np.ndarray, prediction: np.ndarray,
              amodal: np.ndarray, path: str | os.PathLike, *,
              occluder: np.ndarray | None = None, scale: int = 4,
              frame_ms: int = 300, threshold: float = 0.5) -> str:
  """The four panels side by side, one GIF frame per video frame."""
  grid = panels(frames, visible, prediction, amodal, occluder, threshold)
  images = []
  for t in range(grid.shape[1]):
    row = np.concatenate([np.pad(p[t], ((2, 2), (2, 2), (0, 0)),
                                 constant_values=1.) for p in grid], 1)
    row = np.repeat(np.repeat(row, scale, 0), scale, 1)
    images.append(Image.fromarray((row * 255).round().astype(np.uint8)))
  path = os.fspath(path)
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                 duration=frame_ms, loop=0)
  return path


def most_occluded(visible: np.ndarray, amodal: np.ndarray) -> int:
  """The object index `k` of `[K, T, H, W]` masks with the highest mean
  occlusion rate over the frames where it is present."""
  v = np.asarray(visible).sum((-2, -1))
  a = np.asarray(amodal).sum((-2, -1))
  rate = np.where(a > 0, 1. - v / np.maximum(a, 1.), 0.)
  return int(np.argmax(rate.mean(-1)))


def write_videos(videos: dict[str, np.ndarray], directory: str | os.PathLike,
                 prefix: str, threshold: float = 0.5) -> list[str]:
  """Strip and GIF of the most occluded object of every video.

  Args:
    videos: 'frames' `[V, T, H, W, 3]`, 'visible', 'occluder', 'amodal' and
      'prediction' `[V, K, T, H, W]` (e.g. `AmodalEvaluator.first_videos`).
    directory: output folder.
    prefix: file name prefix (e.g. the split).
    threshold: prediction threshold.

  Returns:
    The paths written (`{prefix}_video{i}_object{k}.png` and `.gif`).
  """
  paths = []
  for i in range(videos["frames"].shape[0]):
    k = most_occluded(videos["visible"][i], videos["amodal"][i])
    rows, cols = zoom_window(np.concatenate(
        [videos["amodal"][i, k], videos["prediction"][i, k] > threshold]))
    crop = lambda x: np.asarray(x)[:, rows, cols]
    parts = dict(frames=crop(videos["frames"][i]),
                 visible=crop(videos["visible"][i, k]),
                 prediction=crop(videos["prediction"][i, k]),
                 amodal=crop(videos["amodal"][i, k]),
                 occluder=crop(videos["occluder"][i, k]),
                 threshold=threshold)
    stem = os.path.join(os.fspath(directory), f"{prefix}_video{i}_object{k}")
    paths.append(write_strip(**parts, path=stem + ".png",
                             title=f"{prefix}: video {i}, object {k} (zoomed;"
                             " occluder outlined)"))
    paths.append(write_gif(**parts, path=stem + ".gif"))
  return paths
