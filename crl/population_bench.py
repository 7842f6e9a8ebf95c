"""`python -m crl.bench --population`: members trained together vs alone.

For each model (default sizes: configs/nac.py, configs/vit.py), side by side
in one process on the same random batches: `members` members in one
jitted population step (`crl.population.make_population_step`), once per
step layout (`vmap`, `vmap_grads`, `per_member`; crl.population_step), and
the same members one at a time with the single-run step
(`crl.train_step.make_train_step`). Reports members x examples per second of
each, the best layout's ratio to one at a time (`<model> population
speedup: N.NNx`) and XLA's peak memory of each compiled step (arguments +
outputs + temporaries - aliased).
"""

from __future__ import annotations

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


def measure(name: str, members: int, batch_size: int, steps: int,
            load_config: Callable[..., Any], memory_mib: Callable[[Any], float],
            layouts: tuple[str, ...] = population_step.LAYOUTS
            ) -> dict[str, Any]:
  """One row: throughput alone and with each step layout
  (`crl.population_step.LAYOUTS`), the best layout's ratio to alone (and
  every layout's) and peak memory.

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

  def stack(x):
    return jnp.stack([x] * members)
  hp = population.member_hparams(config)
  hp["trainable"] = population.trainable_mask(params, "all")
  hp = jax.tree.map(lambda x: stack(jnp.asarray(x)), hp)
  pop_batch = jax.tree.map(stack, batch)
  rates, peaks = {}, {}
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
          "layouts": {k: {"member_examples_per_s": rates[k],
                          "speedup": rates[k] / alone_rate,
                          "peak_mib": peaks[k]} for k in layouts}}


def format_row(r: dict[str, Any]) -> str:
  """The row as printed: every layout, then the line the issue asks for."""
  layouts = "".join(
      f"\n  layout {k}: {v['member_examples_per_s']:.1f} member x examples/s "
      f"({v['speedup']:.2f}x), peak {v['peak_mib']:.0f} MiB"
      for k, v in r.get("layouts", {}).items())
  return (f"{r['model']}: {r['members']} members x batch {r['batch_size']}: "
          f"alone {r['alone_member_examples_per_s']:.1f}, together "
          f"{r['together_member_examples_per_s']:.1f} member x examples/s; "
          f"peak memory alone {r['alone_peak_mib']:.0f} MiB (one member), "
          f"together {r['together_peak_mib']:.0f} MiB ({r['together_layout']})"
          f"{layouts}\n"
          f"{r['model']} population speedup: {r['speedup']:.2f}x")
