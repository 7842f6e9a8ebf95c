"""Corruption throughput: our jitted JAX corruptions vs imagecorruptions.

`measure()` times both implementations on the same images in the same
process, per corruption type and overall, and reports the ratio. The
reference (`imagecorruptions`, a test dependency) runs one image at a time as
it is meant to be used; ours runs on whole batches after compilation. Run
from `python -m crl.bench` or directly:

    python -m crl.shifts.corruptions_bench --resolution=32

`patched_imagecorruptions()` makes imagecorruptions 1.1.2 run with NumPy 2
and current scikit-image (it is also what the tests use).
"""

from __future__ import annotations

import contextlib
import time
import types
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crl.shifts import corruptions


class _NumpyShim(types.SimpleNamespace):
  """The `np` seen by imagecorruptions: NumPy plus `float_`, and optionally
  another `np.random` (the tests replay draws through it)."""

  def __init__(self, random: Any = None):
    super().__init__()
    self._random = random

  def __getattr__(self, name: str) -> Any:
    if name == "float_":  # Removed in NumPy 2; fog's plasma_fractal uses it.
      return np.float64
    if name == "random" and self._random is not None:
      return self._random
    return getattr(np, name)


@contextlib.contextmanager
def patched_imagecorruptions(random: Any = None) -> Iterator[types.ModuleType]:
  """Yields the imagecorruptions package, patched to run on NumPy 2.

  imagecorruptions 1.1.2 uses `np.float_` (fog) and scikit-image's removed
  `gaussian(..., multichannel=True)` (gaussian_blur, glass_blur); inside this
  context its module sees a NumPy shim and a `gaussian` that maps
  `multichannel=True` to `channel_axis=-1`. Nothing global is modified.

  Args:
    random: replaces `np.random` inside imagecorruptions if given.
  """
  try:
    import imagecorruptions  # pylint: disable=g-import-not-at-top
    from imagecorruptions import corruptions as ic  # pylint: disable=g-import-not-at-top,line-too-long
  except ImportError as e:
    raise ImportError(
        "The corruption reference needs `pip install imagecorruptions` "
        "(with opencv-python-headless, scikit-image, setuptools<81), e.g. "
        "`pip install -e .[test]`.") from e
  gaussian = ic.gaussian

  def gaussian_compat(*args, multichannel=None, **kwargs):
    if multichannel:
      kwargs["channel_axis"] = -1
    return gaussian(*args, **kwargs)

  old = ic.np, ic.gaussian
  ic.np, ic.gaussian = _NumpyShim(random), gaussian_compat
  try:
    yield imagecorruptions
  finally:
    ic.np, ic.gaussian = old


def bench_images(resolution: int, batch_size: int) -> np.ndarray:
  """`[batch, resolution, resolution, 3]` float32 causal-shapes images."""
  from crl.data.causal_shapes import CausalShapes  # pylint: disable=g-import-not-at-top
  ds = CausalShapes(resolution=resolution)
  images = ds.sample("test", jnp.arange(batch_size))["image"]
  return np.asarray(images, np.float32)


def _best_of(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def measure(resolution: int = 32, batch_size: int = 256, repeats: int = 3,
            severity: int = 3, names: Sequence[str] | None = None,
            reference_images: int = 32) -> dict[str, Any]:
  """Images per second of ours and of imagecorruptions, per type.

  Ours: `corrupt` jitted (severity traced), compiled and warmed up first,
  timed on `batch_size` images with `block_until_ready`, best of `repeats`.
  Reference: `imagecorruptions.corrupt` (uint8 HWC, one image per call) on
  the first `reference_images` of the same images, best of `repeats`
  passes.

  Returns:
    `{'device', 'resolution', 'batch_size', 'severity', 'per_type': {name:
    {'ours_images_per_s', 'reference_images_per_s', 'ratio'}}, 'overall':
    {...}, 'common15': {...}}`; the overall rows are images per second for
    one corrupted copy of every type (total images / total time).
  """
  names = tuple(names or corruptions.CORRUPTIONS)
  images = bench_images(resolution, batch_size)
  images_u8 = np.round(images[:reference_images] * 255).astype(np.uint8)
  x = jax.device_put(jnp.asarray(images))
  fn = jax.jit(corruptions.corrupt, static_argnames=("name",))
  sev = jnp.asarray(severity, jnp.int32)
  per_type = {}
  with patched_imagecorruptions() as ic:
    for i, name in enumerate(names):
      key = jax.random.key(i)
      fn(x, name, sev, key).block_until_ready()
      ours = _best_of(lambda: fn(x, name, sev, key).block_until_ready(),
                      repeats)
      np.random.seed(0)
      ref = _best_of(lambda: [ic.corrupt(im, severity, name)
                              for im in images_u8], repeats)
      per_type[name] = {
          "ours_images_per_s": batch_size / ours,
          "reference_images_per_s": len(images_u8) / ref,
          "ratio": (batch_size / ours) / (len(images_u8) / ref),
      }

  def overall(subset):
    ours = sum(1 / per_type[n]["ours_images_per_s"] for n in subset)
    ref = sum(1 / per_type[n]["reference_images_per_s"] for n in subset)
    return {"ours_images_per_s": len(subset) / ours,
            "reference_images_per_s": len(subset) / ref,
            "ratio": ref / ours}

  result = {
      "device": str(jax.devices()[0].device_kind),
      "resolution": resolution,
      "batch_size": batch_size,
      "severity": severity,
      "per_type": per_type,
      "overall": overall(names),
  }
  common = [n for n in names if n in corruptions.CORRUPTIONS[:15]]
  if common:
    result["common15"] = overall(common)
  return result


def format_table(result: dict[str, Any]) -> str:
  """A plain-text table of `measure()`'s result."""
  lines = [f"corruptions at {result['resolution']} px, severity "
           f"{result['severity']}, batch {result['batch_size']}, "
           f"{result['device']}",
           f"{'type':18s} {'ours img/s':>12s} {'ref img/s':>10s} "
           f"{'ratio':>8s}"]
  rows = list(result["per_type"].items())
  rows += [(k, result[k]) for k in ("common15", "overall") if k in result]
  for name, r in rows:
    lines.append(f"{name:18s} {r['ours_images_per_s']:12.0f} "
                 f"{r['reference_images_per_s']:10.1f} {r['ratio']:8.1f}x")
  return "\n".join(lines)


def main() -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--resolution", type=int, default=32)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--severity", type=int, default=3)
  parser.add_argument("--names", default="")
  args = parser.parse_args()
  result = measure(args.resolution, args.batch_size, args.repeats,
                   args.severity, args.names.split(",") if args.names
                   else None)
  print(format_table(result))


if __name__ == "__main__":
  main()
