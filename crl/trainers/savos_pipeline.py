"""SaVos's input pipeline: one compiled video generator for every stream.

`VideoPipeline` serves the SaVos trainer (crl.trainers.savos): training
streams of any distribution, eval splits and held-out streams, optionally
with tracker-like observation noise (crl.data.tracker_noise);
`check_video_batch` validates a batch before anything is compiled.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crl import preemption
from crl import runtime
from crl.data import occluded_video
from crl.data import pipeline as pipeline_lib
from crl.data import tracker_noise

ALL_KEYS = occluded_video.BATCH_KEYS


class VideoPipeline(pipeline_lib.InputPipeline):
  """`InputPipeline` with one compiled generator for every stream.

  The generator takes the distribution code and the example indices as
  arguments, so the training stream of any distribution (`intervention`:
  SaVos, the upper bound, the adaptation stream) and the eval splits share
  it (one compilation when `batch_size == eval_batch_size`). Training
  batches keep only the requested keys.
  """

  def __init__(self, dataset: Any, mesh: jax.sharding.Mesh, global_batch: int,
               eval_batch: int, data_axis: str = runtime.DATA_AXIS,
               noise: tracker_noise.TrackerNoise = tracker_noise.TrackerNoise()):
    super().__init__(dataset, mesh, global_batch, eval_batch, data_axis)
    self.noise = noise
    self._generate = jax.jit(self._generate_fn, out_shardings=self.sharding)

  def _generate_fn(self, code: jax.Array,
                   indices: jax.Array) -> dict[str, jax.Array]:
    """A batch; with tracker noise, the observed masks and flows are
    perturbed and the exact masks kept as 'gt_visible', 'gt_occluder'
    (for scoring only)."""
    out = self.dataset.sample_encoded(code, indices)
    out = {k: out[k] for k in ALL_KEYS}
    if self.noise.enabled:
      clean = {"gt_visible": out["visible"], "gt_occluder": out["occluder"]}
      out = tracker_noise.perturb(
          self.noise, out, tracker_noise.video_keys(self.noise.seed, code,
                                                    indices))
      out.update(clean)
    return out

  def train_batches(self, start_step: int, intervention: str | None = None,
                    keys: Sequence[str] = ALL_KEYS
                    ) -> Iterator[dict[str, jax.Array]]:
    """Batches of steps `start_step + 1, ...` with only `keys`.

    Args:
      start_step: the last completed step.
      intervention: None (the training distribution) or a dataset
        intervention ('shifted', 'gum').
      keys: the keys kept in every batch.
    """
    code = np.asarray(self.dataset.encode("train", intervention))
    keys = tuple(keys)
    indices = lambda step: (step * self.global_batch + np.arange(
        self.global_batch)).astype(np.int32)
    step = start_step
    nxt = self._generate(code, indices(step))
    while True:
      # Dispatch the next batch's generation before this one is consumed.
      current, nxt = nxt, self._generate(code, indices(step + 1))
      step += 1
      yield {k: current[k] for k in keys}

  def eval_batches(self, name: str, num: int | None = None
                   ) -> Iterator[dict[str, jax.Array]]:
    """One padded pass over eval split `name` (with 'mask'); its first
    `num` videos only when given."""
    total = self.dataset.num_examples(name)
    return self._padded(np.asarray(self.dataset.eval_code(name)),
                        total if num is None else min(num, total))

  def batches(self, split: str, intervention: str | None,
              num: int) -> Iterator[dict[str, jax.Array]]:
    """One padded pass over the first `num` videos of a stream (with
    'mask'); e.g. ('validation', 'shifted'): held-out shifted videos."""
    return self._padded(np.asarray(self.dataset.encode(split, intervention)),
                        num)

  def _padded(self, code: np.ndarray,
              num: int) -> Iterator[dict[str, jax.Array]]:
    for start in range(0, num, self.eval_batch):
      idx = start + np.arange(self.eval_batch)
      batch = self._generate(code, np.minimum(idx, num - 1).astype(np.int32))
      mask = jax.device_put((idx < num).astype(np.float32), self.sharding)
      preemption.check("while evaluating videos")
      yield {**batch, "mask": mask}


def check_video_batch(batch: dict[str, Any], dataset: Any, where: str,
                      keys: Sequence[str]) -> None:
  """Raises a `DataError` naming `where` for a malformed video batch."""
  if set(batch) != set(keys):
    raise pipeline_lib.DataError(
        f"{where}: a batch needs exactly the keys {sorted(keys)}, got "
        f"{sorted(batch)}.")
  b = batch["frames"].shape[0]
  expected = {"frames": dataset.input_shape,
              "flow_fwd": dataset.input_shape[:-1] + (2,),
              "flow_bwd": dataset.input_shape[:-1] + (2,)}
  for k in ("visible", "occluder", "amodal"):
    expected[k] = dataset.mask_shape
  for k in keys:
    shape = tuple(batch[k].shape)
    if shape != (b,) + tuple(expected[k]):
      raise pipeline_lib.DataError(
          f"{where}: {k!r} has shape {shape}, expected "
          f"{(b,) + tuple(expected[k])}.")
    if not jnp.issubdtype(batch[k].dtype, jnp.floating):
      raise pipeline_lib.DataError(f"{where}: {k!r} has dtype "
                                   f"{batch[k].dtype}, expected a float dtype.")
  frames = batch["frames"]
  if frames.is_fully_addressable and not np.all(
      np.isfinite(np.asarray(jax.device_get(frames)))):
    raise pipeline_lib.DataError(f"{where}: frames contain NaN or Inf.")


