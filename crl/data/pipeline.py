"""Global, sharded batches from any dataset, resumable at any step.

Two kinds of dataset sit behind one interface:

* procedural datasets are generated *on the devices*, inside `jax.jit` with
  the batch's `NamedSharding` as output sharding: every device renders only
  its own shard, nothing crosses the host, and batch `t` is a pure function of
  `t`. They provide `encode(split, intervention)` / `eval_code(name)` (the
  distribution as a small int array) and `sample_encoded(code, indices)` (a
  pure JAX function), so one compiled function serves every eval split;
* host datasets (`train_numpy` / `eval_numpy`, e.g. TFDS) produce each
  process's share of the global batch as NumPy, which a background thread
  assembles into global arrays with `jax.make_array_from_process_local_data`.

Batches are dicts `{'image': f32[B, H, W, C] in [0, 1], 'label': i32[B]}`, and
eval batches also carry `'mask'`: f32[B] (1 = real example, 0 = padding).
A dataset whose examples carry other keys (a protected attribute, video
frames and masks) lists them in `batch_keys`; the input need not be an image
(`input_key`, `input_shape`; e.g. tabular features).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crl import preemption


class DataError(ValueError):
  """A batch that does not match what the model expects."""


def check_batch(batch: dict[str, Any], image_shape: tuple[int, ...],
                num_classes: int | None, where: str,
                input_key: str = "image") -> None:
  """Checks one batch (host or device) and raises a `DataError` naming `where`.

  Labels may lie outside `[0, num_classes)` only in eval batches that the
  dataset declares as novel-class data; pass `num_classes=None` there.
  `image_shape` is the per-example shape of `batch[input_key]`.
  """
  if input_key not in batch or "label" not in batch:
    raise DataError(f"{where}: a batch needs keys {input_key!r} and 'label', "
                    f"got {sorted(batch)}.")
  image, label = batch[input_key], batch["label"]
  noun = "images" if input_key == "image" else f"inputs {input_key!r}"
  layout = " (height, width, channels)" if input_key == "image" else ""
  if tuple(image.shape[1:]) != tuple(image_shape):
    raise DataError(f"{where}: {noun} have shape {tuple(image.shape[1:])} per "
                    f"example, expected {tuple(image_shape)}{layout}.")
  if not jnp.issubdtype(image.dtype, jnp.floating):
    raise DataError(f"{where}: {noun} have dtype {image.dtype}, expected a "
                    "float dtype" + (" with values in [0, 1]."
                                     if input_key == "image" else "."))
  if label.ndim != 1 or label.shape[0] != image.shape[0]:
    raise DataError(f"{where}: labels have shape {tuple(label.shape)}, "
                    f"expected ({image.shape[0]},).")
  if not jnp.issubdtype(label.dtype, jnp.integer):
    raise DataError(f"{where}: labels have dtype {label.dtype}, expected int.")
  image_np = np.asarray(jax.device_get(image)) if _addressable(image) else None
  label_np = np.asarray(jax.device_get(label)) if _addressable(label) else None
  if image_np is not None and not np.all(np.isfinite(image_np)):
    bad = int(np.sum(~np.all(np.isfinite(image_np.reshape(len(image_np), -1)),
                             axis=1)))
    raise DataError(f"{where}: {bad} example(s) of {input_key!r} contain NaN "
                    "or Inf values.")
  if label_np is not None and num_classes is not None:
    mask = np.asarray(jax.device_get(batch["mask"])) if "mask" in batch else 1
    real = label_np[np.broadcast_to(mask, label_np.shape) > 0]
    if real.size and (real.min() < 0 or real.max() >= num_classes):
      raise DataError(f"{where}: labels range over [{real.min()}, "
                      f"{real.max()}], expected [0, {num_classes - 1}].")


def _addressable(x: Any) -> bool:
  return not isinstance(x, jax.Array) or x.is_fully_addressable


class InputPipeline:
  """Sharded train and eval batches for one dataset on one mesh.

  Attributes:
    dataset: the dataset object (procedural or host).
    global_batch: examples per training step over all processes.
    eval_batch: examples per evaluation step over all processes.
  """

  def __init__(self, dataset: Any, mesh: Mesh, global_batch: int,
               eval_batch: int, data_axis: str = "data"):
    self.dataset = dataset
    self.mesh = mesh
    self.global_batch = global_batch
    self.eval_batch = eval_batch
    self.sharding = NamedSharding(mesh, P(data_axis))
    self.procedural = hasattr(dataset, "sample_encoded")
    self.keys = tuple(getattr(dataset, "batch_keys", ("image", "label")))
    for what, size in (("batch_size", global_batch),
                       ("eval_batch_size", eval_batch)):
      if size % mesh.size:
        raise DataError(
            f"config.{what}={size} is not divisible by the {mesh.size} "
            f"devices of the mesh; use a multiple of {mesh.size}.")
      if size % jax.process_count():
        raise DataError(f"config.{what}={size} is not divisible by the "
                        f"{jax.process_count()} processes.")
    if self.procedural:
      self._train_code = jnp.asarray(dataset.encode("train", None))
      self._train_fn = jax.jit(self._train_indices_fn,
                               out_shardings=self.sharding)
      self._eval_fn = jax.jit(self._eval_indices_fn,
                              out_shardings=self.sharding)

  # Procedural datasets -------------------------------------------------------

  def _train_indices_fn(self, step: jax.Array) -> dict[str, jax.Array]:
    indices = (step * self.global_batch +
               jnp.arange(self.global_batch, dtype=jnp.int32))
    return self._select(self.dataset.sample_encoded(self._train_code, indices))

  def _select(self, out: dict[str, jax.Array]) -> dict[str, jax.Array]:
    batch = {k: out[k] for k in self.keys}
    if "label" in batch:
      batch["label"] = batch["label"].astype(jnp.int32)
    return batch

  def _eval_indices_fn(self, code: jax.Array, start: jax.Array,
                       num: jax.Array) -> dict[str, jax.Array]:
    idx = start + jnp.arange(self.eval_batch, dtype=jnp.int32)
    out = self.dataset.sample_encoded(code, jnp.minimum(idx, num - 1))
    return {**self._select(out), "mask": (idx < num).astype(jnp.float32)}

  # Both kinds ----------------------------------------------------------------

  def train_batches(self, start_step: int) -> Iterator[dict[str, jax.Array]]:
    """Batches for steps `start_step, start_step + 1, ...` (infinite).

    The batch of step `t` is the same whether or not the run was restarted.
    """
    if self.procedural:
      return self._procedural_train(start_step)
    local = self.global_batch // jax.process_count()
    host = self.dataset.train_numpy(start_step, local, jax.process_index(),
                                    jax.process_count())
    return _prefetch((self._to_global(b) for b in host), size=2)

  def _procedural_train(self, start_step):
    step = start_step
    nxt = self._train_fn(jnp.int32(step))
    while True:
      # Dispatch step + 1's generation before the consumer needs it, so the
      # generator runs ahead of the train step (dispatch is asynchronous).
      current, nxt = nxt, self._train_fn(jnp.int32(step + 1))
      step += 1
      yield current

  def eval_batches(self, name: str) -> Iterator[dict[str, jax.Array]]:
    """One pass over eval split `name`, padded; see the module docstring."""
    for batch in self._eval_batches(name):
      preemption.check(f"while evaluating split {name!r}")
      yield batch

  def _eval_batches(self, name: str) -> Iterator[dict[str, jax.Array]]:
    if self.procedural:
      num = self.dataset.num_examples(name)
      code = jnp.asarray(self.dataset.eval_code(name))
      for start in range(0, num, self.eval_batch):
        yield self._eval_fn(code, jnp.int32(start), jnp.int32(num))
      return
    local = self.eval_batch // jax.process_count()
    host = self.dataset.eval_numpy(name, local, jax.process_index(),
                                   jax.process_count())
    yield from _prefetch((self._to_global(b) for b in host), size=2)

  def _to_global(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.sharding,
                                                      np.asarray(v))
            for k, v in batch.items()}


_END = object()


def _prefetch(iterator: Iterator[Any], size: int) -> Iterator[Any]:
  """Runs `iterator` in a daemon thread, `size` items ahead of the consumer."""
  q: queue.Queue = queue.Queue(maxsize=size)

  def worker():
    try:
      for item in iterator:
        q.put(item)
    except BaseException as e:  # pylint: disable=broad-except
      q.put(e)
      return
    q.put(_END)

  threading.Thread(target=worker, daemon=True).start()
  while True:
    item = q.get()
    if item is _END:
      return
    if isinstance(item, BaseException):
      raise item
    yield item
