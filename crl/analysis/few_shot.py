"""Few-shot adaptation of a trained classifier to classes it never saw.

N-way k-shot episodes are drawn from a pool of labelled examples of held-out
classes (causal shapes' `novel_classes` split by default, or any split of a
dataset such as a locally prepared TFDS one). For each episode a fresh
linear head (zero-initialised) is put on the model's penultimate features
(`aux['features']`) and adapted on the k support examples per class with
Adam, updating

  'head':  the new head only (the trained model is frozen);
  'codes': the new head and the code vectors, parameters named 'codes' or
           '*_codes' (NAC's mediator and output codes, Neural Interpreters'
           function codes; not ModFC's code projections); models without
           codes (Perceiver IO, ViT) are skipped;
  'all':   the new head and every parameter;

then scored on `queries` other examples per class. The report is the mean
query accuracy over episodes with a 95% interval (1.96 standard errors).
The model runs in eval mode (no dropout, no graph sampling) so that
adaptation is deterministic given the episode.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from absl import logging
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from crl import train_step
from crl.evaluators import common as eval_common

MODES = ("head", "codes", "all")


def collect_pool(pipeline: Any, split: str, input_key: str = "image",
                 max_examples: int | None = None) -> dict[str, np.ndarray]:
  """The examples of one eval split as host arrays `{'x', 'y'}`, labels
  renumbered 0..C-1 in order of first appearance of each sorted class."""
  xs, ys = [], []
  count = 0
  for batch in pipeline.eval_batches(split):
    mask = eval_common.gather(batch["mask"]) > 0
    xs.append(eval_common.gather(batch[input_key])[mask])
    ys.append(eval_common.gather(batch["label"])[mask])
    count += int(mask.sum())
    if max_examples is not None and count >= max_examples:
      break
  x, y = np.concatenate(xs), np.concatenate(ys)
  classes, y = np.unique(y, return_inverse=True)
  if len(classes) < 2:
    raise ValueError(f"split {split!r} has {len(classes)} class(es); "
                     "few-shot episodes need at least 2.")
  return {"x": x, "y": y.astype(np.int32), "classes": classes}


def sample_episode(labels: np.ndarray, ways: int, shots: int, queries: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray,
                                                      np.ndarray, np.ndarray]:
  """Indices and episode labels `(support, support_y, query, query_y)`.

  Classes are drawn without replacement, then `shots + queries` distinct
  examples of each; episode labels are 0..ways-1.
  """
  classes = np.unique(labels)
  if ways > len(classes):
    raise ValueError(f"{ways}-way episodes need {ways} classes; the pool "
                     f"has {len(classes)}.")
  chosen = rng.choice(classes, ways, replace=False)
  support, query = [], []
  for c in chosen:
    members = np.flatnonzero(labels == c)
    if len(members) < shots + queries:
      raise ValueError(f"class {c} has {len(members)} examples; "
                       f"{shots} shots + {queries} queries are needed.")
    pick = rng.choice(members, shots + queries, replace=False)
    support.append(pick[:shots])
    query.append(pick[shots:])
  s_y = np.repeat(np.arange(ways), shots).astype(np.int32)
  q_y = np.repeat(np.arange(ways), queries).astype(np.int32)
  return np.concatenate(support), s_y, np.concatenate(query), q_y


def is_code(path: Sequence[str]) -> bool:
  """Whether a flattened parameter path names code vectors: a leaf called
  'codes' or '*_codes' (NAC's mediator/output codes, Neural Interpreters'
  function codes); not the code projections of ModFC layers, which are
  weights shared by all modules."""
  leaf = path[-1].lower()
  return leaf == "codes" or leaf.endswith("_codes")


def has_codes(params: Any) -> bool:
  """Whether `params` holds module codes (a NAC), which few-shot can
  adapt alone."""
  return any(is_code(p) for p in traverse_util.flatten_dict(params))


def _trainable(params: Any, mode: str) -> dict[tuple[str, ...], bool]:
  """Flattened parameter path -> whether it adapts."""
  def keep(path):
    if mode == "all":
      return True
    if mode == "codes":
      return is_code(path)
    return False
  return {path: keep(path)
          for path in traverse_util.flatten_dict(params)}


# Learning rate of the adapted model parameters relative to the new head's:
# codes are few and N(0, 1)-scaled; all weights move little or features break.
MODEL_LR_FACTOR = {"head": 0.0, "codes": 0.1, "all": 0.01}


def make_adapter(model: Any, params: Any, mode: str, ways: int,
                 steps: int, learning_rate: float):
  """A jitted `(params, support_x, support_y, query_x, query_y) -> accuracy`
  over a batch of episodes.

  Shapes: support_x `[episodes, ways * shots, ...]`, support_y
  `[episodes, ways * shots]`, query_x `[episodes, ways * queries, ...]`,
  query_y `[episodes, ways * queries]`; returns `[episodes]` accuracies.
  Episodes adapt independently (each its own head, and for 'codes'/'all'
  its own copy of the adapted parameters). 'head' and 'codes' are
  vectorised over episodes (the shared weights stay unbatched, so small
  support sets do not leave the machine idle); 'all' runs the episodes one
  after another in the same call."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  trainable = _trainable(params, mode)

  def features(p, x):
    return model.apply(train_step.model_variables(p), x,
                       train=False)[1]["features"]

  def logits_fn(p, head, x):
    f = features(p, x)
    return f @ head["kernel"] + head["bias"]

  def adapt(p, sx, sy, qx, qy):
    dim = jax.eval_shape(features, p, sx).shape[-1]
    head = {"kernel": jnp.zeros((dim, ways)), "bias": jnp.zeros((ways,))}
    tx = optax.adam(learning_rate)
    if mode == "head":
      fixed = jax.lax.stop_gradient(features(p, sx))

      def loss(h):
        return optax.softmax_cross_entropy_with_integer_labels(
            fixed @ h["kernel"] + h["bias"], sy).mean()

      def body(carry, _):
        h, opt = carry
        g = jax.grad(loss)(h)
        upd, opt = tx.update(g, opt, h)
        return (optax.apply_updates(h, upd), opt), None

      (head, _), _ = jax.lax.scan(body, (head, tx.init(head)), None, steps)
    else:
      # Only the adapted parameters are carried (one copy per episode under
      # vmap); the frozen ones stay shared, so 'codes' runs the model's
      # matmuls with unbatched weights.
      flat = traverse_util.flatten_dict(p)
      adapted = {k: v for k, v in flat.items() if trainable[k]}
      frozen = {k: v for k, v in flat.items() if not trainable[k]}
      merge = lambda a: traverse_util.unflatten_dict({**frozen, **a})
      tx_model = optax.adam(learning_rate * MODEL_LR_FACTOR[mode])

      def loss(both):
        return optax.softmax_cross_entropy_with_integer_labels(
            logits_fn(merge(both["model"]), both["head"], sx), sy).mean()

      def body(carry, _):
        both, opt = carry
        g = jax.grad(loss)(both)
        upd_h, opt_h = tx.update(g["head"], opt[0], both["head"])
        upd_m, opt_m = tx_model.update(g["model"], opt[1], both["model"])
        both = {"head": optax.apply_updates(both["head"], upd_h),
                "model": optax.apply_updates(both["model"], upd_m)}
        return (both, (opt_h, opt_m)), None

      both = {"model": adapted, "head": head}
      opt = (tx.init(head), tx_model.init(adapted))
      (both, _), _ = jax.lax.scan(body, (both, opt), None, steps)
      p, head = merge(both["model"]), both["head"]
    pred = jnp.argmax(logits_fn(p, head, qx), -1)
    return jnp.mean(pred == qy)

  if mode == "all":
    # Every weight adapts: vectorised, each matmul would get per-episode
    # weights, which measured 4x slower per episode on CPU than one episode
    # after another (46 s vs 11.6 s, NAC default, 5-shot).
    return jax.jit(lambda p, *episodes: jax.lax.map(
        lambda e: adapt(p, *e), episodes))
  return jax.jit(jax.vmap(adapt, in_axes=(None, 0, 0, 0, 0)))


def evaluate(model: Any, params: Any, pool: dict[str, np.ndarray], *,
             shots: Sequence[int] = (1, 5, 10), modes: Sequence[str] = MODES,
             ways: int | None = None, queries: int = 15, episodes: int = 30,
             steps: int = 50, learning_rate: float = 1e-2,
             seed: int = 0, episode_batch: int = 10) -> list[dict[str, Any]]:
  """Mean episode accuracy with a 95% interval, per (mode, shots).

  Args:
    model: a classifier following the model call convention.
    params: its trained parameters (never modified).
    pool: `collect_pool` output.
    shots: k values.
    modes: names from `MODES` ('codes' is skipped for models without codes).
    ways: N (default: every class of the pool, at most 5).
    queries: query examples per class.
    episodes: episodes per (mode, shots); the same episodes for every mode.
    steps: Adam steps of adaptation.
    learning_rate: Adam learning rate of the head; the model's adapted
      parameters use `MODEL_LR_FACTOR[mode]` times it.
    seed: episode sampling seed.
    episode_batch: episodes per jitted call ('head' and 'codes' vectorise
      them: that many copies of the adapted parameters and their Adam
      state).

  Returns:
    Rows: mode, ways, shots, episodes, accuracy (mean), ci95 (half-width),
    std.
  """
  ways = ways or min(5, len(pool["classes"]))
  rows = []
  for mode in modes:
    if mode == "codes" and not has_codes(params):
      continue
    adapt = make_adapter(model, params, mode, ways, steps, learning_rate)
    for k in shots:
      t0 = time.time()
      rng = np.random.default_rng([seed, k])
      drawn = [sample_episode(pool["y"], ways, k, queries, rng)
               for _ in range(episodes)]
      accs = []
      for start in range(0, episodes, episode_batch):
        chunk = drawn[start:start + episode_batch]
        s, sy, q, qy = (np.stack(a) for a in zip(*chunk))
        accs += np.asarray(adapt(params, pool["x"][s], sy, pool["x"][q],
                                 qy)).tolist()
      accs = np.asarray(accs)
      logging.info("few-shot %s %d-way %d-shot: %.3f over %d episodes (%.0fs)",
                   mode, ways, k, accs.mean(), episodes, time.time() - t0)
      std = float(accs.std(ddof=1)) if len(accs) > 1 else 0.0
      rows.append({"mode": mode, "ways": ways, "shots": k,
                   "episodes": episodes, "accuracy": float(accs.mean()),
                   "ci95": 1.96 * std / np.sqrt(len(accs)), "std": std})
  return rows


def format_rows(rows: Sequence[dict[str, Any]], name: str = "") -> str:
  """A text table; rows with a 'workdir' are named by its last folder (two
  runs of one model class, e.g. NAC and NAC-as-Perceiver, stay apart)."""
  lines = [f"{'run':<20}{'mode':<7}{'N-way':>6}{'k':>4}{'accuracy':>16}"]
  for r in rows:
    run = (os.path.basename(os.path.normpath(r["workdir"])) if "workdir" in r
           else r.get("model", name))
    lines.append(f"{run:<20}{r['mode']:<7}{r['ways']:>6}{r['shots']:>4}"
                 f"{100 * r['accuracy']:>9.1f} ± {100 * r['ci95']:.1f}")
  return "\n".join(lines)

