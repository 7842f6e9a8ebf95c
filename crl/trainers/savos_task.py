"""SaVos as a `crl.train_step.Task`: the self-supervised model or its upper bound.

`SavosTask` trains SaVos on the visible masks only (the batches its loss
sees carry no amodal mask) or, in 'supervised' mode, the same model on the
amodal ground truth (the upper bound); `crl.train.run` drives it
(checkpoints, exact resume, metrics), and its final evaluation scores it
with the shared `AmodalEvaluator`.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from crl import config_lib
from crl import registry
from crl import runtime
from crl.data import occluded_video
from crl.evaluators import amodal as amodal_eval
from crl.evaluators import amodal_metrics
from crl.models import precision
from crl.models import savos as savos_lib
from crl.trainers import savos_config
from crl.trainers import savos_losses
from crl.trainers import savos_pipeline

MODES = ("self_supervised", "supervised")
OBSERVED_KEYS = occluded_video.OBSERVED_KEYS
ALL_KEYS = occluded_video.BATCH_KEYS


class _Periodic:
  """The evaluator's model-only scores on a few splits (periodic evals)."""

  def __init__(self, evaluator: amodal_eval.AmodalEvaluator,
               splits: Sequence[str]):
    self.evaluator, self.splits = evaluator, tuple(splits)

  def run(self, params: Any) -> dict[str, dict[str, float]]:
    return {s: self.evaluator.model_metrics(params, s) for s in self.splits}


class SavosTask:
  """SaVos on `OccludedVideo` for `crl.train.run` (see `train_step.Task`).

  Args:
    config: the experiment config (configs/savos.py).
    mode: 'self_supervised' (the SaVos losses; the batches carry no amodal
      masks) or 'supervised' (BCE on the amodal ground truth).
    train_intervention: the training stream's distribution (None: the
      training distribution; 'shifted' for test-time adaptation).
    init_from: start from these parameters instead of a fresh init.
    final_splits: the splits scored at the end (default `config.eval.splits`).
    method: the name of the results (default: 'savos' or 'supervised').
    pipeline, evaluator: shared instances (built when None).
    mesh: the device mesh (default `runtime.make_mesh()`).
  """

  def __init__(self, config: ml_collections.ConfigDict, *,
               mode: str = "self_supervised",
               train_intervention: str | None = None,
               init_from: Any = None,
               final_splits: Sequence[str] | None = None,
               method: str | None = None,
               pipeline: savos_pipeline.VideoPipeline | None = None,
               evaluator: amodal_eval.AmodalEvaluator | None = None,
               mesh: jax.sharding.Mesh | None = None):
    if mode not in MODES:
      raise config_lib.ConfigError(f"SaVos mode {mode!r} is not one of "
                                   f"{MODES}.")
    self.config = config
    self.mode = mode
    self.method = method or ("savos" if mode == "self_supervised"
                             else "supervised")
    self.train_intervention = train_intervention
    self._init_from = init_from
    self.model = precision.with_compute_dtype(
      config_lib.build(registry.MODELS, config.model),
      config.get("compute_dtype", "float32"))
    if pipeline is None:
      dataset = savos_config.build_dataset(config)
      pipeline = savos_pipeline.VideoPipeline(
          dataset, mesh or runtime.make_mesh(), config.batch_size,
          config.eval_batch_size, noise=savos_config.input_noise(config))
    self.pipeline = pipeline
    self.dataset = pipeline.dataset
    if train_intervention is not None:
      self.dataset.parse_intervention(train_intervention)
    self.batch_sharding = pipeline.sharding
    self.evaluator = evaluator or savos_config.make_evaluator(
        config, pipeline, self.model)
    self.final_splits = tuple(final_splits or config.eval.splits)
    # The structural guarantee: self-supervised batches have no 'amodal'.
    self.train_keys = OBSERVED_KEYS if mode == "self_supervised" else ALL_KEYS
    self.progress_keys = (("loss", "recon", "consistency", "learning_rate")
                          if mode == "self_supervised"
                          else ("loss", "learning_rate"))
    stream = train_intervention or "training distribution"
    self.name = f"savos ({mode}) on {config.data.name} [{stream}]"

  # Training ------------------------------------------------------------------

  def init_params(self, key: jax.Array) -> Any:
    if self._init_from is not None:
      return jax.tree.map(jnp.asarray, self._init_from)
    ds = self.dataset
    dummy = {"frames": jnp.zeros((1,) + ds.input_shape, jnp.float32),
             "flow_fwd": jnp.zeros((1,) + ds.input_shape[:-1] + (2,)),
             "flow_bwd": jnp.zeros((1,) + ds.input_shape[:-1] + (2,)),
             "visible": jnp.zeros((1,) + ds.mask_shape, jnp.float32),
             "occluder": jnp.zeros((1,) + ds.mask_shape, jnp.float32)}
    return savos_lib.init_params(self.model, key, dummy)

  def loss(self, params: Any, batch: dict[str, jax.Array],
           rngs: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, Any]]:
    observed = {k: batch[k] for k in OBSERVED_KEYS}
    out = self.model.apply({"params": params}, observed, train=True,
                           rngs=rngs)
    if self.mode == "self_supervised":
      return savos_losses.self_supervised_loss(
          out, **savos_config.loss_kwargs(self.config))
    target = savos_lib.to_model_space(batch["amodal"], out["boxes"],
                                      self.model.patch_size)
    return savos_losses.supervised_loss(out, target)

  def train_batches(self, start_step: int) -> Iterator[dict[str, jax.Array]]:
    return self.pipeline.train_batches(start_step, self.train_intervention,
                                       self.train_keys)

  def check_batch(self, batch: dict[str, jax.Array], where: str) -> None:
    savos_pipeline.check_video_batch(batch, self.dataset, where,
                                     self.train_keys)

  # Evaluation ----------------------------------------------------------------

  def evaluators(self) -> dict[str, tuple[Any, int]]:
    every = self.config.eval.every_steps
    if not every:
      return {}
    return {"amodal": (_Periodic(self.evaluator,
                                 self.config.eval.periodic_splits), every)}

  def final_evaluation(self, params: Any, step: int) -> dict[str, Any]:
    """Scores `params` on `final_splits`: `{'results': {split: {method:
    metrics}}, ...}`, the format of the study's results.json."""
    results = {s: {self.method: self.evaluator.model_metrics(params, s)}
               for s in self.final_splits}
    if jax.process_index() == 0:
      table = amodal_metrics.format_table(results)
      print(f"\n{self.method} at step {step}:\n{table}\n", flush=True)
    return {"model": "savos", "mode": self.mode, "method": self.method,
            "train_distribution": self.train_intervention or "train",
            "results": results}

