"""Per-video test-time adaptation of SaVos: many videos in one program.

`VideoAdapter` adapts every video of a batch on its own, all at once: each
video gets its own copy of the starting parameters and its own Adam state,
stacked on a leading axis `[B, ...]`, and `jax.vmap` maps one update over
the copies, each with the self-supervised loss of its own video (observed
masks, flows and frames only; the amodal masks are not an input). A
Python loop over chunks of steps (`steps`: e.g. 0, 5, 10, 20, 40) advances
all copies (one compiled vmapped step, called once per step) and scores
each copy's amodal prediction on its own video after each chunk, so a
whole curve of mIoU against adaptation steps comes out of two compiled
functions (step, score), compiled once for every batch, learning rate and
chunk length.

The protocol around it (choosing steps and learning rate on held-out
videos, the curve, the gain with its interval) is `crl.trainers.savos_tta`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crl.data import occluded_video
from crl.evaluators import amodal as amodal_eval
from crl.evaluators import amodal_metrics
from crl.evaluators.common import gather
from crl.models import savos as savos_lib
from crl.trainers import savos_losses

OBSERVED_KEYS = occluded_video.OBSERVED_KEYS


def check_steps(steps: Sequence[int]) -> tuple[int, ...]:
  """`steps` as ints; a ValueError unless they increase from >= 0."""
  steps = tuple(int(s) for s in steps)
  if not steps or steps[0] < 0 or any(b <= a for a, b in zip(steps,
                                                             steps[1:])):
    raise ValueError(f"TTA steps must be increasing and >= 0, got {steps}.")
  return steps


def _one_video(video: dict[str, jax.Array]) -> dict[str, jax.Array]:
  return jax.tree.map(lambda x: x[None], video)


class VideoAdapter:
  """Adapts each video of a batch from the same parameters, in one program.

  Args:
    model: the SaVos module.
    loss_kwargs: keyword arguments of `savos_losses.self_supervised_loss`.
    sharding: the video batches' sharding (leading axis over the data
      axis); the stacked copies are laid out the same way (one layout for
      every call, so nothing recompiles).
    threshold: amodal probability threshold of the composite.
  """

  def __init__(self, model: Any, loss_kwargs: dict,
               sharding: jax.sharding.Sharding, threshold: float = 0.5):
    self.model = model
    self.loss_kwargs = dict(loss_kwargs)
    self.threshold = threshold
    self._adam = optax.scale_by_adam()
    self._start = jax.jit(self._start_fn, static_argnums=1,
                          out_shardings=sharding)
    self._step = jax.jit(self._step_fn, donate_argnums=0,
                         out_shardings=sharding)
    self._score = jax.jit(self._score_fn)

  # The compiled pieces --------------------------------------------------------

  def loss(self, params: Any, video: dict[str, jax.Array]) -> jax.Array:
    """The self-supervised loss of ONE video (no batch axis)."""
    out = self.model.apply({"params": params}, _one_video(video), train=True)
    return savos_losses.self_supervised_loss(out, **self.loss_kwargs)[0]

  def update(self, params: Any, adam: Any, video: dict[str, jax.Array],
             learning_rate: jax.Array) -> tuple[Any, Any]:
    """One Adam step of one video's copy: `optax.adam(learning_rate)`."""
    grads = jax.grad(self.loss)(params, video)
    direction, adam = self._adam.update(grads, adam, params)
    return jax.tree.map(lambda p, d: p - learning_rate * d, params,
                        direction), adam

  def _start_fn(self, params: Any, num_videos: int) -> dict[str, Any]:
    stacked = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (num_videos,) + x.shape), params)
    return {"params": stacked, "adam": jax.vmap(self._adam.init)(stacked)}

  def _step_fn(self, state: dict[str, Any], observed: dict[str, jax.Array],
               learning_rate: jax.Array) -> dict[str, Any]:
    params, adam = jax.vmap(self.update, in_axes=(0, 0, 0, None))(
        state["params"], state["adam"], observed, learning_rate)
    return {"params": params, "adam": adam}

  def predict(self, params: Any, video: dict[str, jax.Array]) -> jax.Array:
    """ONE video's amodal probabilities in the frames, `[K, T, H, W]`."""
    out = self.model.apply({"params": params}, _one_video(video), train=False)
    h, w = video["visible"].shape[-2:]
    return savos_lib.to_frames(out["amodal"], out["boxes"], h, w)[0]

  def _score_fn(self, stacked: Any, batch: dict[str, jax.Array]
                ) -> tuple[dict[str, jax.Array], jax.Array]:
    observed = {k: batch[k] for k in OBSERVED_KEYS}
    probs = jax.vmap(self.predict)(stacked, observed)       # [B, K, T, H, W]
    truth = amodal_eval.ground_truth(batch)
    pred = amodal_metrics.composite(batch["visible"], batch["occluder"],
                                    probs, self.threshold)
    return amodal_metrics.object_frame_stats(
        pred, truth["amodal"], truth["visible"], truth["occluder"]), probs

  # Host side --------------------------------------------------------------------

  def start(self, params: Any, num_videos: int) -> dict[str, Any]:
    """`num_videos` stacked copies of `params` and fresh Adam states."""
    return self._start(params, num_videos)

  def advance(self, state: dict[str, Any], batch: dict[str, jax.Array],
              learning_rate: float, num_steps: int) -> dict[str, Any]:
    """`num_steps` updates of every copy on its own video of `batch` (the
    state passed in is consumed). One compiled step called `num_steps`
    times: on the CPU a step inside `lax.fori_loop`/`scan` ran 6x slower
    (8.9 s against 1.4 s for 8 videos of `configs/savos.py:reduced`)."""
    observed = {k: batch[k] for k in OBSERVED_KEYS}
    lr = jnp.float32(learning_rate)
    for _ in range(num_steps):
      state = self._step(state, observed, lr)
    return state

  def score(self, state: dict[str, Any], batch: dict[str, jax.Array]
            ) -> tuple[dict[str, jax.Array], jax.Array]:
    """`(object_frame_stats [B, K, T], probabilities [B, K, T, H, W])` of
    each copy's prediction on its own video."""
    return self._score(state["params"], batch)

  def curve_stats(self, params: Any, batch: dict[str, jax.Array],
                  learning_rate: float, steps: Sequence[int]
                  ) -> dict[str, np.ndarray]:
    """Host `object_frame_stats` `[S, B, K, T]` after each of `steps`
    adaptation steps (the real videos of `batch` only)."""
    steps = check_steps(steps)
    real = gather(batch["mask"]) > 0
    state = self.start(params, int(batch["visible"].shape[0]))
    rows, done = [], 0
    for n in steps:
      if n > done:
        state = self.advance(state, batch, learning_rate, n - done)
        done = n
      stats = jax.tree.map(gather, self.score(state, batch)[0])
      rows.append({k: v[real] for k, v in stats.items()})
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
