"""Throughput of the device augmentations and of the adversarial attacks.

`python -m crl.bench --transfer` adds these rows (images per second, the
median of timed calls after one compile-and-warm-up call, one process):

  augment/<policy>     `crl.data.augment.make(policy)` on a batch of
                       32x32x3 images, jitted;
  attack/<name>        `crl.evaluators.adversarial.make_attack` on the
                       model of `configs/vit.py:bench` (untrained weights:
                       the cost does not depend on them): FGSM, PGD-10
                       (CE) and APGD-10 (DLR) at eps = 1/255.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl import train_step
from crl.data import augment
from crl.evaluators import adversarial
from crl.trainers import classification

RESOLUTION = 32
MODEL_SPEC = "configs/vit.py:bench"  # the attacked model (bench.py loads it)
POLICIES = ("standard", "randaugment", "augmix")
EPS = 1. / 255.
# row name -> `adversarial.Attack` fields (eps = EPS)
ATTACKS = (("fgsm", {"name": "fgsm"}),
           ("pgd10_ce", {"name": "pgd", "steps": 10}),
           ("apgd10_dlr", {"name": "apgd", "steps": 10, "loss": "dlr"}))


def _images_per_s(fn, args, batch: int, steps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return batch / float(np.median(times))


def measure(model_config: Any, batch_size: int = 64, steps: int = 5
            ) -> list[dict[str, Any]]:
  """Rows `{name, batch_size, images_per_s}`; `model_config` is a run
  config whose model classifies 32x32 images (e.g. configs/vit.py:bench)."""
  key = jax.random.key(0)
  images = jax.random.uniform(key, (batch_size, RESOLUTION, RESOLUTION, 3))
  rows = []
  for policy in POLICIES:
    fn = jax.jit(augment.make(policy))
    rows.append({"name": f"augment/{policy}", "batch_size": batch_size,
                 "images_per_s": _images_per_s(fn, (images, key), batch_size,
                                               steps)})
  task = classification.ClassificationTask(model_config)
  params = jax.jit(task.init_params)(key)
  state = task.init_model_state(key)
  if state:  # BatchNorm statistics: evaluated as a trained run would be
    params = train_step.StatefulParams(params, state)
  labels = jax.random.randint(key, (batch_size,), 0, task.num_classes)

  def apply_fn(p, x):
    return task.model.apply(train_step.model_variables(p), x, train=False,
                            rngs={"sample": jax.random.key(1),
                                  "dropout": jax.random.key(2)})[0]

  attacks = {name: adversarial.Attack(eps=EPS, **fields)
             for name, fields in ATTACKS}
  for name, attack in attacks.items():
    fn = adversarial.make_attack(apply_fn, attack)
    rows.append({"name": f"attack/{name}", "batch_size": batch_size,
                 "model": model_config.model.name,
                 "images_per_s": _images_per_s(
                     fn, (params, images, labels, key), batch_size, steps)})
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  """The rows as a text table: what, batch, images/s."""
  lines = [f"{'what':<22}{'batch':>7}{'images/s':>12}", "-" * 41]
  lines += [f"{r['name']:<22}{r['batch_size']:>7}{r['images_per_s']:>12.1f}"
            for r in rows]
  return "\n".join(lines)
