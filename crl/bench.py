"""Performance harness: `python -m crl.bench`.

For each model at its `:bench` size (NAC-S/32 and the baselines matched to
it) on 32x32 images, measured side by side in one process:

  params         parameter count;
  gflop/ex       FLOPs per example of the compiled train step (forward,
                 backward and optimizer), from XLA's cost analysis, and of
                 the inference call;
  train ex/s     examples per second of the jitted, donated train step
                 (`crl.train_step.make_train_step`, the one training uses);
  infer ex/s     examples per second of the jitted eval forward pass;
  compile s      lowering + compilation time of the train step;
  peak MiB       XLA's memory analysis of the compiled train step
                 (arguments + outputs + temporaries - aliased);
  MFU            achieved train FLOP/s divided by the FLOP/s of a large
                 dense float32 matmul measured in the same process.

With --transfer: images/s of the device augmentations (standard,
RandAugment, AugMix) and of FGSM / PGD-10 on the ViT `:bench` model
(`crl.bench_transfer`).

Also reported: Neural Interpreters without rematerialised iterations (its
`:bench` config uses `remat`), the NAC step with and without the
code-conditioned read-in, the NAC/Perceiver IO time-per-example ratio, and
(with --corruptions) the throughput of the JAX corruptions against the
`imagecorruptions` package.
Ratios are the numbers to quote: absolute times on shared machines are noisy.

Examples:
  python -m crl.bench                       # every model, prints + bench.json
  python -m crl.bench --models=nac,perceiver_io --steps=5
  python -m crl.bench --corruptions --out=/tmp/bench.json
  python -m crl.bench --population          # 8 members together vs alone
                                            # (crl.population_bench)
  python -m crl.bench --models= --transfer  # augmentations and attacks only
"""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from crl import config_lib
from crl import optim
from crl import train_step
from crl import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (config spec, model overrides)
MODELS = {
    "nac": ("configs/nac.py:bench", {}),
    "nac_shared_read_in": ("configs/nac.py:bench",
                           {"shared_read_in_projection": True}),
    "perceiver_io": ("configs/perceiver.py:bench", {}),
    "nac_as_perceiver": ("configs/perceiver.py:nac_ablation_bench", {}),
    "vit": ("configs/vit.py:bench", {}),
    "interpreters": ("configs/interpreters.py:bench", {}),
    "interpreters_no_remat": ("configs/interpreters.py:bench",
                              {"remat": False}),
}

_MODELS = flags.DEFINE_list("models", list(MODELS),
                            f"Models to measure; known: {', '.join(MODELS)}.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch per step.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per measurement.")
_OUT = flags.DEFINE_string("out", "bench.json", "JSON output path.")
_POPULATION = flags.DEFINE_bool(
    "population", False, "Only the population bench: --members members of "
    "default-size NAC and ViT trained together vs one at a time.")
_MEMBERS = flags.DEFINE_integer("members", 8, "Members (--population).")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", "", "With --population: a jax.profiler trace of one step "
    "of each way in this folder, summarised in the report.")
_CORRUPTIONS = flags.DEFINE_bool(
    "corruptions", False, "Also measure the corruptions against "
    "imagecorruptions (needs the [test] extra).")
_DEVICE = flags.DEFINE_bool(
    "device", False, "Run the accelerator check instead (crl/bench_device.py: "
    "NAC-S/32, Tiny-ImageNet NAC, Perceiver IO, ViT; float32 and bfloat16).")
_CORRUPTION_BATCH = flags.DEFINE_integer("corruption_batch", 256,
                                         "Images per corruption call.")
_TRANSFER = flags.DEFINE_bool(
    "transfer", False, "Also measure the augmentations and the adversarial "
    "attacks of the transfer study (images/s).")


def _time(fn, *args, steps: int) -> float:
  """Median seconds of `fn(*args)` over `steps` calls (after one warm-up)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _flops(compiled: Any) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _memory_mib(compiled: Any) -> float:
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  total = (m.argument_size_in_bytes + m.output_size_in_bytes +
           m.temp_size_in_bytes - m.alias_size_in_bytes)
  return total / 2**20


def matmul_flops_per_s(n: int = 2048, steps: int = 10) -> float:
  """FLOP/s of an `n x n` float32 matmul: this machine's dense peak."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  fn = jax.jit(jnp.matmul)
  return 2.0 * n**3 / _time(fn, a, b, steps=steps)


def load_model_config(spec: str, overrides: dict[str, Any]):
  """The config file `spec` (relative to the repository) with `overrides`
  of its model and fully optimised compilation."""
  config = config_lib.load_config(os.path.join(ROOT, spec))
  config.unlock()
  for k, v in overrides.items():
    config.model[k] = v
  config.xla_fast_compile = False
  config.lock()
  return config


def measure_model(name: str, batch_size: int, steps: int,
                  peak: float) -> dict[str, Any]:
  """The row of one model (see the module docstring)."""
  from crl.trainers import classification  # pylint: disable=g-import-not-at-top
  spec, overrides = MODELS[name]
  config = load_model_config(spec, overrides)
  task = classification.ClassificationTask(config)
  tx, schedule = optim.make_optimizer(config.optimizer, batch_size, 1000)
  key = jax.random.PRNGKey(0)
  params = jax.jit(task.init_params)(key)
  state = train_step.TrainState(step=jnp.zeros((), jnp.int32),
                                params=params, opt_state=tx.init(params))
  shape = task.input_shape
  batch = {task.input_key: jax.random.uniform(key, (batch_size, *shape)),
           "label": jax.random.randint(key, (batch_size,), 0,
                                       task.num_classes)}
  step_fn = jax.jit(train_step.make_train_step(task, tx, schedule, 0),
                    donate_argnums=(0,))
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  train_flops = _flops(compiled) / batch_size
  memory = _memory_mib(compiled)

  holder = [state]

  def one_step():
    holder[0], metrics = compiled(holder[0], batch)
    return metrics["loss"]

  train_s = _time(one_step, steps=steps)
  infer = jax.jit(lambda p, x: task.model.apply({"params": p}, x,
                                                train=False)[0])
  infer_compiled = infer.lower(holder[0].params, batch[task.input_key]
                               ).compile()
  infer_flops = _flops(infer_compiled) / batch_size
  infer_s = _time(infer_compiled, holder[0].params, batch[task.input_key],
                  steps=steps)
  n_params = sum(x.size for x in jax.tree.leaves(holder[0].params))
  train_ex_s = batch_size / train_s
  return {
      "model": name, "config": spec, "overrides": overrides,
      "params": int(n_params), "batch_size": batch_size,
      "train_gflop_per_example": train_flops / 1e9,
      "infer_gflop_per_example": infer_flops / 1e9,
      "train_examples_per_s": train_ex_s,
      "infer_examples_per_s": batch_size / infer_s,
      "train_ms_per_example": 1e3 * train_s / batch_size,
      "compile_s": compile_s, "peak_memory_mib": memory,
      "mfu": train_flops * train_ex_s / peak,
  }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """The console table of `run`'s rows, one model a line."""
  cols = [("model", "model", 22, "{}"), ("params", "params", 11, "{:,}"),
          ("train_gflop_per_example", "GFLOP/ex", 10, "{:.3f}"),
          ("infer_gflop_per_example", "inf GFLOP", 10, "{:.3f}"),
          ("train_examples_per_s", "train ex/s", 11, "{:.0f}"),
          ("infer_examples_per_s", "infer ex/s", 11, "{:.0f}"),
          ("compile_s", "compile s", 10, "{:.1f}"),
          ("peak_memory_mib", "peak MiB", 9, "{:.0f}"),
          ("mfu", "MFU", 8, "{:.1%}")]

  def cell(text, width, first):
    return text.ljust(width) if first else text.rjust(width)

  head = "".join(cell(h, w, i == 0) for i, (_, h, w, _) in enumerate(cols))
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append("".join(cell(fmt.format(r[c]), w, i == 0)
                         for i, (c, _, w, fmt) in enumerate(cols)))
  return "\n".join(lines)


def ratios(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
  """Time-per-example ratios between models measured in the same
  process (`nac_over_perceiver_io_time_per_example`, ...)."""
  by = {r["model"]: r for r in rows}
  out = {}
  if "nac" in by and "perceiver_io" in by:
    out["nac_over_perceiver_io_time_per_example"] = (
        by["nac"]["train_ms_per_example"] /
        by["perceiver_io"]["train_ms_per_example"])
  if "nac_shared_read_in" in by and "perceiver_io" in by:
    out["nac_shared_read_in_over_perceiver_io_time_per_example"] = (
        by["nac_shared_read_in"]["train_ms_per_example"] /
        by["perceiver_io"]["train_ms_per_example"])
  if "nac" in by and "nac_shared_read_in" in by:
    out["code_conditioned_over_shared_read_in_time"] = (
        by["nac"]["train_ms_per_example"] /
        by["nac_shared_read_in"]["train_ms_per_example"])
  return out


def run(models: Sequence[str], batch_size: int, steps: int,
        corruptions: bool = False, corruption_batch: int = 256,
        transfer: bool = False) -> dict[str, Any]:
  """Measures `models` (names of `MODELS`) side by side: parameters,
  FLOPs, train and inference throughput, compile time, peak memory; with
  `corruptions`/`transfer`, those benchmarks too."""
  unknown = [m for m in models if m not in MODELS]
  if unknown:
    raise config_lib.ConfigError(f"unknown bench model(s) {unknown}; known: "
                                 f"{', '.join(MODELS)}.")
  peak = matmul_flops_per_s()
  logging.info("Dense matmul peak: %.1f GFLOP/s", peak / 1e9)
  rows = []
  for name in models:
    logging.info("Measuring %s ...", name)
    rows.append(measure_model(name, batch_size, steps, peak))
  out = {
      "machine": {"platform": platform.platform(),
                  "processor": platform.processor() or platform.machine(),
                  "cpu_count": os.cpu_count(),
                  "devices": [str(d) for d in jax.devices()],
                  "jax": jax.__version__},
      "matmul_gflop_per_s": peak / 1e9,
      "models": rows, "ratios": ratios(rows),
  }
  if corruptions:
    from crl.shifts import corruptions_bench  # pylint: disable=g-import-not-at-top
    out["corruptions"] = corruptions_bench.measure(batch_size=corruption_batch)
  if transfer:
    from crl import bench_transfer as transfer_bench  # pylint: disable=g-import-not-at-top
    out["transfer"] = transfer_bench.measure(
        load_model_config(transfer_bench.MODEL_SPEC, {}), batch_size, steps)
  out["peak_rss_mib"] = resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss / 1024
  return out


def main(argv: Sequence[str]) -> None:
  """The `python -m crl.bench` program: runs the harness, prints the
  table and writes the JSON report to `--out`."""
  del argv
  if _DEVICE.value:
    from crl import bench_device  # pylint: disable=g-import-not-at-top
    out = bench_device.run(_STEPS.value)
    print(f"\n{out['device_kind']} ({out['platform']})\n")
    print(bench_device.format_table(out["rows"]))
    workdir_lib.write_json_atomic(_OUT.value, out)
    return
  if _POPULATION.value:
    from crl import population_bench  # pylint: disable=g-import-not-at-top
    rows = []
    for name in population_bench.MODELS:
      rows.append(population_bench.measure(
          name, _MEMBERS.value, _BATCH.value, _STEPS.value,
          load_config=load_model_config, memory_mib=_memory_mib,
          profile_dir=_PROFILE_DIR.value or None))
      print(population_bench.format_row(rows[-1]), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {rss:.0f} MiB")
    workdir_lib.write_json_atomic(
        _OUT.value, {"population": rows, "peak_rss_mib": rss})
    return
  out = run(_MODELS.value, _BATCH.value, _STEPS.value, _CORRUPTIONS.value,
            _CORRUPTION_BATCH.value, _TRANSFER.value)
  print(f"\nDense matmul: {out['matmul_gflop_per_s']:.1f} GFLOP/s on "
        f"{out['machine']['devices'][0]} ({out['machine']['cpu_count']} "
        f"cores)\n")
  print(format_table(out["models"]))
  for k, v in out["ratios"].items():
    print(f"{k}: {v:.2f}")
  if "corruptions" in out:
    from crl.shifts import corruptions_bench  # pylint: disable=g-import-not-at-top
    print("\nCorruptions (images/s, ours vs imagecorruptions):")
    print(corruptions_bench.format_table(out["corruptions"]))
  if "transfer" in out:
    from crl import bench_transfer as transfer_bench  # pylint: disable=g-import-not-at-top
    print("\nAugmentations and attacks (images/s):")
    print(transfer_bench.format_table(out["transfer"]))
  workdir_lib.write_json_atomic(_OUT.value, out)
  print(f"\nWrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
