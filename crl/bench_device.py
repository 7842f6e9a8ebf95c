"""Device check: `python -m crl.bench --device` on whatever accelerator is here.

For NAC-S/32 (`configs/nac.py:bench`), the Tiny-ImageNet-scale NAC
(`configs/nac.py:tiny_imagenet`) and Perceiver IO and ViT at the size
matched to NAC-S/32 (`:bench`), each in float32 and bfloat16
(`config.compute_dtype`), on synthetic batches (no dataset is read):

  params        parameter count;
  GFLOP/ex      FLOPs per example of the compiled train step (XLA's cost
                analysis: forward, backward, optimizer);
  train ex/s    examples per second of the jitted, donated train step
                (`crl.train_step.make_train_step`, the one training uses);
  MFU           GFLOP/ex x ex/s / the chip's peak for that dtype
                (`PEAK_TFLOPS`; NaN on an unknown chip such as a CPU);
  peak GiB      `device.memory_stats()['peak_bytes_in_use']` after the row
                (a process high-water mark: rows run smallest first), or
                XLA's memory analysis of the step where the device keeps no
                stats (CPU);
  compile s     lowering + compilation of the train step.

Not run in CI (minutes on an accelerator); a CPU smoke test checks the
output format with `:tiny` configs. Results go to stdout and `--out` JSON.

  python -m crl.bench --device [--steps=20] [--out=device.json]
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from crl import config_lib
from crl import optim
from crl import train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense peak TFLOP/s per chip by `device_kind` substring (first match wins),
# for the arithmetic XLA uses at default precision: float32 matmuls run on
# TF32 tensor cores on NVIDIA (A100 and later) and as one bfloat16 pass on
# TPU. Vendor datasheets, dense (no sparsity), SXM parts unless named.
PEAK_TFLOPS = (
    ("H100 PCIe", {"float32": 378.0, "bfloat16": 756.0}),
    ("H100", {"float32": 494.7, "bfloat16": 989.4}),
    ("H200", {"float32": 494.7, "bfloat16": 989.4}),
    ("A100", {"float32": 156.0, "bfloat16": 312.0}),
    ("TPU v4", {"float32": 275.0, "bfloat16": 275.0}),
    ("TPU v5 lite", {"float32": 197.0, "bfloat16": 197.0}),
    ("TPU v5e", {"float32": 197.0, "bfloat16": 197.0}),
)

# row name -> (config spec, global batch). Smallest first (peak memory).
ROWS = {
    "vit_s32": ("configs/vit.py:bench", 256),
    "perceiver_io_s32": ("configs/perceiver.py:bench", 256),
    "nac_s32": ("configs/nac.py:bench", 256),
    "nac_tiny_imagenet": ("configs/nac.py:tiny_imagenet", 64),
}
DTYPES = ("float32", "bfloat16")

# TFDS datasets of the paper-scale configs: classes (read without the data).
TFDS_CLASSES = {"tiny_imagenet": 200, "imagenet2012": 1000, "cifar10": 10,
                "cifar100": 100}


def peak_flops(device_kind: str, dtype: str) -> float:
  """The chip's dense peak FLOP/s for `dtype`; NaN when unknown."""
  for key, peaks in PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return peaks[dtype] * 1e12
  return float("nan")


def model_input(config: ml_collections.ConfigDict) -> tuple[int, tuple]:
  """`(num_classes, per-example input shape)` of `config`'s data, without
  reading a TFDS dataset."""
  from crl.trainers import classification  # pylint: disable=g-import-not-at-top
  if config.data.name == "tfds":
    if config.data.tfds_name not in TFDS_CLASSES:
      raise config_lib.ConfigError(
          f"bench_device: unknown class count of TFDS "
          f"{config.data.tfds_name!r}; known: {', '.join(TFDS_CLASSES)}.")
    size = config.data.resolution or 32
    return TFDS_CLASSES[config.data.tfds_name], (size, size, 3)
  dataset = classification.build_dataset(config)
  return dataset.num_classes, classification.input_spec(dataset)[1]


def synthetic_task(config: ml_collections.ConfigDict) -> Any:
  """A `ClassificationTask` of `config`'s model with no dataset or pipeline
  (for benchmarks and compile checks on synthetic batches)."""
  from crl.trainers import classification  # pylint: disable=g-import-not-at-top
  num_classes, shape = model_input(config)
  task = classification.ClassificationTask.__new__(
      classification.ClassificationTask)
  task.config = config
  task.num_classes = num_classes
  task.model = classification.build_model(config, num_classes)
  task.input_key, task.input_shape = "image", tuple(shape)
  task.label_smoothing = config.loss.label_smoothing
  return task


def abstract_step(config: ml_collections.ConfigDict, batch_size: int
                  ) -> tuple[Any, Any, Any, Any]:
  """`(jitted train step, task, abstract state, abstract batch)`: shapes
  only, nothing allocated (for `.lower(state, batch)`)."""
  task = synthetic_task(config)
  tx, schedule = optim.make_optimizer(config.optimizer, batch_size, 1000)

  def init_state(key):
    params = task.init_params(key)
    return train_step.TrainState(step=jnp.zeros((), jnp.int32),
                                 params=params, opt_state=tx.init(params),
                                 model_state=task.init_model_state(key))

  state = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  batch = {"image": jax.ShapeDtypeStruct((batch_size, *task.input_shape),
                                         jnp.float32),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  step = jax.jit(train_step.make_train_step(task, tx, schedule, config.seed),
                 donate_argnums=(0,))
  return step, task, (init_state, state), batch


def flops(compiled: Any) -> float:
  """FLOPs of a compiled computation (XLA's cost analysis); NaN if absent."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _config(spec: str, compute_dtype: str) -> ml_collections.ConfigDict:
  config = config_lib.load_config(os.path.join(ROOT, spec))
  config.unlock()
  config.compute_dtype = compute_dtype
  config.xla_fast_compile = False
  config.lock()
  return config


def _peak_memory_gib(compiled: Any) -> float:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**30
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  return (m.argument_size_in_bytes + m.output_size_in_bytes
          + m.temp_size_in_bytes - m.alias_size_in_bytes) / 2**30


def measure(name: str, spec: str, batch_size: int, compute_dtype: str,
            steps: int) -> dict[str, Any]:
  """One row (module docstring) of `spec` in `compute_dtype`."""
  config = _config(spec, compute_dtype)
  step, task, (init_state, _), batch_spec = abstract_step(config, batch_size)
  key = jax.random.PRNGKey(0)
  state = jax.jit(init_state)(key)
  batch = {"image": jax.random.uniform(key, batch_spec["image"].shape),
           "label": jax.random.randint(key, (batch_size,), 0,
                                       task.num_classes)}
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  holder = [state]

  def one_step():
    holder[0], metrics = compiled(holder[0], batch)
    return metrics["loss"]

  jax.block_until_ready(one_step())  # warm-up
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(one_step())
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  flop_ex = flops(compiled) / batch_size
  ex_s = batch_size / step_s
  device = jax.devices()[0]
  return {
      "row": name, "config": spec, "compute_dtype": compute_dtype,
      "batch_size": batch_size,
      "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
      "train_gflop_per_example": flop_ex / 1e9,
      "train_examples_per_s": ex_s,
      "mfu": flop_ex * ex_s / peak_flops(device.device_kind, compute_dtype),
      "peak_memory_gib": _peak_memory_gib(compiled),
      "compile_s": compile_s,
  }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """The console table of `run`'s rows, one configuration a line."""
  cols = [("row", "row", 20, "{}"), ("compute_dtype", "dtype", 10, "{}"),
          ("batch_size", "batch", 6, "{}"), ("params", "params", 12, "{:,}"),
          ("train_gflop_per_example", "GFLOP/ex", 10, "{:.3f}"),
          ("train_examples_per_s", "train ex/s", 11, "{:.0f}"),
          ("mfu", "MFU", 8, "{:.1%}"),
          ("peak_memory_gib", "peak GiB", 9, "{:.2f}"),
          ("compile_s", "compile s", 10, "{:.1f}")]
  head = "".join(h.ljust(w) if i == 0 else h.rjust(w)
                 for i, (_, h, w, _) in enumerate(cols))
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append("".join(
        fmt.format(r[c]).ljust(w) if i == 0 else fmt.format(r[c]).rjust(w)
        for i, (c, _, w, fmt) in enumerate(cols)))
  return "\n".join(lines)


def run(steps: int, rows: dict[str, tuple[str, int]] | None = None
        ) -> dict[str, Any]:
  """Every row in both dtypes; `{'device', 'device_kind', 'rows'}`."""
  device = jax.devices()[0]
  out = []
  for name, (spec, batch_size) in (rows or ROWS).items():
    for dtype in DTYPES:
      out.append(measure(name, spec, batch_size, dtype, steps))
      print(format_table(out[-1:]).splitlines()[-1], flush=True)
  return {"device": str(device), "device_kind": device.device_kind,
          "platform": device.platform, "jax": jax.__version__,
          "peak_tflops": {d: peak_flops(device.device_kind, d) / 1e12
                          for d in DTYPES},
          "rows": out}
