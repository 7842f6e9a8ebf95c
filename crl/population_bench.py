"""`python -m crl.bench --population`: members trained together vs alone.

For each model (default sizes: configs/nac.py, configs/vit.py), side by side
in one process on the same random batches: `members` members in one
jitted population step (`crl.population.make_population_step`), once per
step layout (`vmap`, `vmap_grads`, `per_member`; crl.population_step), and
the same members one at a time with the single-run step
(`crl.train_step.make_train_step`). Reports members x examples per second of
each, the best layout's ratio to one at a time (`<model> population
speedup: N.NNx`), XLA's peak memory of each compiled step (arguments +
outputs + temporaries - aliased) and its FLOPs (XLA's cost analysis); with
`profile_dir`, a `jax.profiler` trace of one call of each way there and its
summary (`trace_summary`: wall, op time by class, top ops) in the row.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from crl import optim
from crl import population
from crl import population_step
from crl import train_step

MODELS = {"nac": "configs/nac.py", "vit": "configs/vit.py"}


def _median_s(fn, steps: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _op_class(name: str) -> str:
  """The class of an XLA:CPU thunk by its HLO name."""
  if name.startswith(("ynn_fusion", "xnn_fusion", "dot", "convolution")):
    return "matmul/conv"
  if "transpose" in name or name.startswith("copy"):
    return "copy/transpose"
  if "concatenate" in name or "dynamic-update-slice" in name:
    return "concatenate/update-slice"
  return "other (elementwise, reduce)"


def trace_summary(trace_dir: str, top: int = 6) -> dict[str, Any]:
  """Summary of a `jax.profiler.trace(trace_dir, create_perfetto_trace=True)`
  of XLA:CPU steps: the wall time from the first op to the end of the last,
  op time (summed over threads) per thread and per class (`_op_class`),
  the op executions and the `top` ops (HLO names, numbers dropped) by
  time. Op events are the trace's complete events naming an `hlo_op`."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**",
                                       "perfetto_trace.json.gz"),
                          recursive=True))[-1]
  with gzip.open(path) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  ops = [e for e in events
         if e.get("ph") == "X" and "hlo_op" in e.get("args", {})]
  threads, classes, names = (collections.Counter() for _ in range(3))
  for e in ops:
    ms = e["dur"] / 1e3
    threads[e["tid"]] += ms
    classes[_op_class(e["name"])] += ms
    names[re.sub(r"\.\d+$", "", e["name"])] += ms
  start = min(e["ts"] for e in ops)
  end = max(e["ts"] + e["dur"] for e in ops)
  return {"wall_ms": (end - start) / 1e3, "op_ms": sum(classes.values()),
          "op_executions": len(ops),
          "thread_busy_ms": sorted(threads.values(), reverse=True),
          "classes_ms": dict(classes.most_common()),
          "top_ops_ms": dict(names.most_common(top))}


def _gflop(compiled: Any) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan"))) / 1e9


def _profile(fn: Callable[[], Any], trace_dir: str) -> dict[str, Any]:
  jax.block_until_ready(fn())
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    jax.block_until_ready(fn())
  return trace_summary(trace_dir)


def measure(name: str, members: int, batch_size: int, steps: int,
            load_config: Callable[..., Any], memory_mib: Callable[[Any], float],
            layouts: tuple[str, ...] = population_step.LAYOUTS,
            profile_dir: str | None = None) -> dict[str, Any]:
  """One row: throughput alone and with each step layout
  (`crl.population_step.LAYOUTS`), the best layout's ratio to alone (and
  every layout's), peak memory, GFLOP per call and, with `profile_dir`, a
  trace of one call of each (`<profile_dir>/<name>_<way>`) and its
  `trace_summary` under "profile".

  `load_config` and `memory_mib` are `crl.bench`'s (passed in: `crl.bench`
  runs as `__main__`).
  """
  from crl.trainers import classification  # pylint: disable=g-import-not-at-top
  config = load_config(MODELS[name], {})
  task = classification.ClassificationTask(config)
  tx, schedule = optim.make_optimizer(config.optimizer, batch_size, 1000)
  key = jax.random.PRNGKey(0)
  params = jax.jit(task.init_params)(key)
  state = train_step.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params))
  batch = {task.input_key: jax.random.uniform(
      key, (batch_size, *task.input_shape)),
           "label": jax.random.randint(key, (batch_size,), 0,
                                       task.num_classes)}

  single = jax.jit(train_step.make_train_step(task, tx, schedule, 0),
                   donate_argnums=(0,)).lower(state, batch).compile()
  states = [jax.tree.map(jnp.copy, state) for _ in range(members)]

  def alone():
    out = None
    for i in range(members):
      states[i], metrics = single(states[i], batch)
      out = metrics["loss"]
    return out

  alone_s = _median_s(alone, steps)
  profiles = {}
  if profile_dir:
    profiles["alone"] = _profile(alone, os.path.join(profile_dir,
                                                     f"{name}_alone"))

  def stack(x):
    return jnp.stack([x] * members)
  hp = population.member_hparams(config)
  hp["trainable"] = population.trainable_mask(params, "all")
  hp = jax.tree.map(lambda x: stack(jnp.asarray(x)), hp)
  pop_batch = jax.tree.map(stack, batch)
  rates, peaks, gflops = {}, {}, {}
  for layout in layouts:
    pop_state = [jax.tree.map(stack, state)]
    failed = [jnp.zeros((members,), jnp.int32)]
    together = jax.jit(population.make_population_step(
        task, config.optimizer, layout=layout), donate_argnums=(0, 2)).lower(
            pop_state[0], hp, failed[0], pop_batch).compile()

    def pop(together=together, pop_state=pop_state, failed=failed):
      pop_state[0], failed[0], metrics = together(pop_state[0], hp, failed[0],
                                                  pop_batch)
      return metrics["loss"]

    rates[layout] = members * batch_size / _median_s(pop, steps)
    peaks[layout] = memory_mib(together)
    gflops[layout] = _gflop(together)
    if profile_dir:
      profiles[layout] = _profile(pop, os.path.join(profile_dir,
                                                    f"{name}_{layout}"))
    del together, pop_state
  alone_rate = members * batch_size / alone_s
  best = max(rates, key=rates.get)
  return {"model": name, "members": members, "batch_size": batch_size,
          "alone_member_examples_per_s": alone_rate,
          "together_member_examples_per_s": rates[best],
          "together_layout": best,
          "speedup": rates[best] / alone_rate,
          "alone_peak_mib": memory_mib(single),
          "together_peak_mib": peaks[best],
          "alone_gflop": members * _gflop(single),
          "layouts": {k: {"member_examples_per_s": rates[k],
                          "speedup": rates[k] / alone_rate,
                          "peak_mib": peaks[k], "gflop": gflops[k]}
                      for k in layouts},
          **({"profile": profiles} if profiles else {})}


def format_row(r: dict[str, Any]) -> str:
  """The row as printed: every layout, then the line the issue asks for."""
  layouts = "".join(
      f"\n  layout {k}: {v['member_examples_per_s']:.1f} member x examples/s "
      f"({v['speedup']:.2f}x), peak {v['peak_mib']:.0f} MiB"
      + (f", {v['gflop']:.1f} GFLOP (alone {r['alone_gflop']:.1f})"
         if "gflop" in v else "")
      for k, v in r.get("layouts", {}).items())
  for way, p in r.get("profile", {}).items():
    layouts += (f"\n  profile {way}: wall {p['wall_ms']:.0f} ms, op time "
                f"{p['op_ms']:.0f} ms in {p['op_executions']} ops; " +
                ", ".join(f"{k} {100 * v / p['op_ms']:.0f}%"
                          for k, v in p["classes_ms"].items()))
  return (f"{r['model']}: {r['members']} members x batch {r['batch_size']}: "
          f"alone {r['alone_member_examples_per_s']:.1f}, together "
          f"{r['together_member_examples_per_s']:.1f} member x examples/s; "
          f"peak memory alone {r['alone_peak_mib']:.0f} MiB (one member), "
          f"together {r['together_peak_mib']:.0f} MiB ({r['together_layout']})"
          f"{layouts}\n"
          f"{r['model']} population speedup: {r['speedup']:.2f}x")
