"""The SaVos trainer: self-supervised amodal masks, upper bound, adaptation.

`train_and_evaluate(config, workdir)` (`config.trainer = "savos"`) runs, each
through the generic loop `crl.train.run` (checkpoints, exact resume,
metrics):

1. SaVos, self-supervised, in `workdir`: the training batches carry only the
   observed keys (`occluded_video.OBSERVED_KEYS`: frames, visible and
   occluder masks, flows); the amodal ground truth is not even in the batch
   the loss sees;
2. the supervised upper bound (the same model trained on the amodal ground
   truth) in `workdir/supervised` (`config.supervised`);
3. test-time adaptation in `workdir/adapt` (`config.adapt`): the trained
   SaVos parameters fine-tuned with the same self-supervised loss on
   unlabeled videos of the shifted distribution (its training stream, so
   disjoint from the scored videos);

then scores SaVos, the upper bound, the baselines (visible mask, convex hull)
and the adapted model (`crl.evaluators.amodal`), writes
`workdir/results.json` (`{"results": {split: {method: metrics}}, "table",
"timing_s", ...}`), prints the table, and draws pictures of the first test
videos into `workdir/pictures/` (`crl.reports.amodal_pictures`).

One input pipeline (`crl.trainers.savos_pipeline`, one compiled generator) and
one evaluator (one compiled scoring function) serve all the runs.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from crl import config_lib
from crl import registry
from crl import runtime
from crl import train
from crl.reports import amodal_pictures
from crl.data import occluded_video
from crl.data import tracker_noise
from crl.evaluators import amodal as amodal_eval
from crl.models import precision
from crl.models import savos as savos_lib
from crl.trainers import savos_adapt
from crl.trainers import savos_pipeline
from crl.trainers import savos_losses

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
      dataset = build_dataset(config)
      pipeline = savos_pipeline.VideoPipeline(
          dataset, mesh or runtime.make_mesh(), config.batch_size,
          config.eval_batch_size, noise=input_noise(config))
    self.pipeline = pipeline
    self.dataset = pipeline.dataset
    if train_intervention is not None:
      self.dataset.parse_intervention(train_intervention)
    self.batch_sharding = pipeline.sharding
    self.evaluator = evaluator or make_evaluator(config, pipeline, self.model)
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
          out, consistency_weight=self.config.loss.consistency_weight,
          photometric_weight=self.config.loss.photometric_weight,
          normalization=self.config.loss.get("normalization", "mean"))
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
    results = {s: self.evaluator.model_metrics(params, s)
               for s in self.final_splits}
    if jax.process_index() == 0:
      table = amodal_eval.format_table(
          {s: {self.method: r} for s, r in results.items()})
      print(f"\n{self.method} at step {step}:\n{table}\n", flush=True)
    return {"model": "savos", "mode": self.mode, "method": self.method,
            "train_distribution": self.train_intervention or "train",
            "results": results}


def build_dataset(config: ml_collections.ConfigDict) -> Any:
  dataset = config_lib.build(registry.DATASETS, config.data)
  missing = [k for k in ALL_KEYS if k not in getattr(dataset, "batch_keys",
                                                     ())]
  if missing or not hasattr(dataset, "sample_encoded"):
    raise config_lib.ConfigError(
        f"The savos trainer needs a procedural video dataset with keys "
        f"{ALL_KEYS} (e.g. 'occluded_video'); {config.data.name!r} lacks "
        f"{missing or 'sample_encoded'}.")
  return dataset


def input_noise(config: ml_collections.ConfigDict
                ) -> tracker_noise.TrackerNoise:
  """`config.inputs` (tracker and flow noise) as a `TrackerNoise`."""
  try:
    return tracker_noise.from_config(config.get("inputs"))
  except (TypeError, ValueError) as e:
    raise config_lib.ConfigError(str(e)) from e


def official_protocol(config: ml_collections.ConfigDict
                      ) -> amodal_eval.OfficialProtocol | None:
  """`config.eval.official` as an `OfficialProtocol` (None when off)."""
  section = config.eval.get("official")
  if section is None or not section.get("enabled", False):
    return None
  fields = {k: v for k, v in section.items() if k != "enabled"}
  unknown = set(fields) - set(amodal_eval.OfficialProtocol._fields)
  if unknown:
    raise config_lib.ConfigError(
        f"config.eval.official has unknown key(s) {sorted(unknown)}; known: "
        f"enabled, {', '.join(amodal_eval.OfficialProtocol._fields)}.")
  return amodal_eval.OfficialProtocol(**fields)


def make_evaluator(config: ml_collections.ConfigDict, pipeline: Any,
                   model: Any) -> amodal_eval.AmodalEvaluator:
  official = official_protocol(config)
  try:
    return amodal_eval.AmodalEvaluator(
        pipeline=pipeline, model=model, splits=config.eval.splits,
        min_occlusion=config.eval.min_occlusion,
        max_occlusion=config.eval.max_occlusion,
        threshold=config.eval.threshold, official=official)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.eval: {e}") from e


def derived_config(config: ml_collections.ConfigDict, *, num_steps: int,
                   learning_rate: float | None = None,
                   warmup_steps: int | None = None
                   ) -> ml_collections.ConfigDict:
  """A copy of `config` with another length (and learning rate)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.num_steps = num_steps
  c.checkpoint.every_steps = min(c.checkpoint.every_steps, num_steps)
  if learning_rate is not None:
    c.optimizer.base_learning_rate = learning_rate
    c.optimizer.base_batch_size = c.batch_size
  if warmup_steps is not None:
    c.optimizer.warmup_steps = warmup_steps
  c.eval.every_steps = 0
  c.lock()
  return c


def check_config(config: ml_collections.ConfigDict) -> None:
  """SaVos-specific checks (before anything is compiled)."""
  train.check_config(config)
  for section in ("loss", "eval", "supervised", "adapt", "pictures"):
    if section not in config:
      raise config_lib.ConfigError(
          f"config.{section} is missing; see configs/savos.py.")
  input_noise(config)
  official_protocol(config)
  norm = config.loss.get("normalization", "mean")
  if norm not in savos_losses.NORMALIZATIONS:
    raise config_lib.ConfigError(
        f"config.loss.normalization={norm!r} is not one of "
        f"{savos_losses.NORMALIZATIONS}.")
  for key in ("supervised", "adapt"):
    steps = config[key].num_steps
    if config[key].enabled and (not isinstance(steps, int) or steps <= 0):
      raise config_lib.ConfigError(
          f"config.{key}.num_steps must be a positive integer, got {steps!r}.")
  if config.adapt.enabled and config.adapt.split not in config.eval.splits:
    raise config_lib.ConfigError(
        f"config.adapt.split={config.adapt.split!r} must be one of "
        f"config.eval.splits {tuple(config.eval.splits)} (SaVos is scored "
        "there before and after adaptation).")
  tta = config.get("tta")
  if tta is not None and tta.enabled:
    if tta.split not in config.eval.splits:
      raise config_lib.ConfigError(
          f"config.tta.split={tta.split!r} must be one of config.eval.splits "
          f"{tuple(config.eval.splits)}.")
    steps = tuple(tta.steps)
    if (not steps or steps[0] != 0 or
        any(b <= a for a, b in zip(steps, steps[1:]))):
      raise config_lib.ConfigError(
          f"config.tta.steps must increase from 0 (no adaptation), got "
          f"{steps}.")
    if not tta.learning_rates or min(tta.learning_rates) <= 0:
      raise config_lib.ConfigError(
          f"config.tta.learning_rates must be positive, got "
          f"{tuple(tta.learning_rates)}.")


def check_dataset_names(config: ml_collections.ConfigDict,
                        dataset: Any) -> None:
  """Split and intervention names of the config exist in the dataset."""
  known = dataset.eval_splits()
  for key, names in (("eval.splits", config.eval.splits),
                     ("eval.periodic_splits", config.eval.periodic_splits),
                     ("pictures.splits", config.pictures.splits)):
    unknown = [n for n in names if n not in known]
    if unknown:
      raise config_lib.ConfigError(
          f"config.{key} has unknown split(s) {unknown}; the dataset has: "
          f"{', '.join(known)}.")
  if config.adapt.enabled:
    try:
      dataset.parse_intervention(config.adapt.intervention)
    except ValueError as e:
      raise config_lib.ConfigError(f"config.adapt.intervention: {e}") from e
  tta = config.get("tta")
  if tta is not None and tta.enabled:
    try:
      dataset.parse_intervention(tta.intervention)
    except ValueError as e:
      raise config_lib.ConfigError(f"config.tta.intervention: {e}") from e


def _timed(timing: dict[str, float], name: str):
  class _Timer:
    def __enter__(self):
      self.t0 = time.time()

    def __exit__(self, *exc):
      timing[name] = round(time.time() - self.t0, 1)
  return _Timer()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_at: int | None = None) -> dict[str, Any]:
  """SaVos, its upper bound, the baselines and test-time adaptation.

  Args:
    config: configs/savos.py.
    workdir: the run directory (sub-runs in `supervised/` and `adapt/`);
      running again resumes each run from its checkpoints.
    stop_at: stop the SaVos run after this step, as if preempted.

  Returns:
    The contents of `workdir/results.json`, plus "params" (the SaVos
    parameters) and "step"; `{"step", "preempted": True}` when stopped.
  """
  check_config(config)
  runtime.setup_fast_compile(config)
  t_start = time.time()
  timing: dict[str, float] = {}
  mesh = runtime.make_mesh()
  dataset = build_dataset(config)
  check_dataset_names(config, dataset)
  pipeline = savos_pipeline.VideoPipeline(
      dataset, mesh, config.batch_size, config.eval_batch_size,
      noise=input_noise(config))
  model = precision.with_compute_dtype(
      config_lib.build(registry.MODELS, config.model),
      config.get("compute_dtype", "float32"))
  evaluator = make_evaluator(config, pipeline, model)
  shared = dict(pipeline=pipeline, evaluator=evaluator)
  splits = tuple(config.eval.splits)

  with _timed(timing, "savos"):
    out = train.run(config, workdir, SavosTask(config, **shared), stop_at)
  if out.get("preempted"):
    return out
  savos_params = out.pop("params")
  results = {s: {"savos": r} for s, r in out["results"].items()}

  if config.supervised.enabled:
    sup_config = derived_config(config, num_steps=config.supervised.num_steps)
    with _timed(timing, "supervised"):
      sup = train.run(sup_config, os.path.join(workdir, "supervised"),
                      SavosTask(sup_config, mode="supervised", **shared))
    if sup.get("preempted"):
      return sup
    for s, r in sup["results"].items():
      results[s]["supervised"] = r

  adapt_split = config.adapt.split
  if config.adapt.enabled:
    adapt_config = derived_config(
        config, num_steps=config.adapt.num_steps,
        learning_rate=config.adapt.learning_rate,
        warmup_steps=config.adapt.warmup_steps)
    task = SavosTask(adapt_config, train_intervention=config.adapt.intervention,
                     init_from=savos_params, final_splits=(adapt_split,),
                     method="savos_adapted", **shared)
    with _timed(timing, "adapt"):
      adapted = train.run(adapt_config, os.path.join(workdir, "adapt"), task)
    if adapted.get("preempted"):
      return adapted
    adapted.pop("params")
    results[adapt_split]["savos_adapted"] = adapted["results"][adapt_split]

  tta = None
  tta_config = config.get("tta")
  if tta_config is not None and tta_config.enabled:
    loss_kwargs = dict(
        consistency_weight=config.loss.consistency_weight,
        photometric_weight=config.loss.photometric_weight,
        normalization=config.loss.get("normalization", "mean"))
    with _timed(timing, "tta"):
      tta = savos_adapt.run_tta(
          model=model, params=savos_params, pipeline=pipeline,
          evaluator=evaluator, split=tta_config.split,
          intervention=tta_config.intervention,
          validation_examples=tta_config.validation_examples,
          learning_rates=tuple(tta_config.learning_rates),
          steps=tuple(tta_config.steps), loss_kwargs=loss_kwargs)
      results[tta_config.split]["savos_tta"] = tta.pop("metrics")

  with _timed(timing, "baselines"):
    for s in splits:
      results[s].update(evaluator.baseline_metrics(s))
    occlusion = {s: savos_adapt.occlusion_stats(pipeline, s) for s in splits}

  pictures = []
  with _timed(timing, "pictures"):
    if config.pictures.num_videos and jax.process_index() == 0:
      for s in config.pictures.splits:
        videos = evaluator.first_videos(savos_params, s,
                                        config.pictures.num_videos)
        pictures += amodal_pictures.write_videos(
            videos, os.path.join(workdir, "pictures"), s,
            threshold=config.eval.threshold)
  timing["total"] = round(time.time() - t_start, 1)

  table = amodal_eval.format_table(results)
  summary = {
      "step": out["step"],
      "model": "savos",
      "dataset": config.data.name,
      "descriptions": evaluator.descriptions,
      "protocol": (f"per frame: occlusion rate in [{config.eval.min_occlusion}"
                   f", {config.eval.max_occlusion}], first and last frame of "
                   "each track dropped, mean over objects then frames; "
                   "'_all': plain mean over object-frames"),
      "official_protocol": (evaluator.official.describe()
                            if evaluator.official else None),
      "adaptation": (f"{config.adapt.num_steps} self-supervised steps on the "
                     f"'{config.adapt.intervention}' training stream, scored "
                     f"on '{adapt_split}'" if config.adapt.enabled else None),
      "tta": tta,
      "occlusion": occlusion,
      "results": results,
      "table": table,
      "timing_s": timing,
      "pictures": [os.path.relpath(p, workdir) for p in pictures],
  }
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(summary, f, indent=2)
    print(f"\nAmodal segmentation (mIoU), {config.data.name}:\n{table}\n"
          f"time: {timing}\n", flush=True)
  logging.info("SaVos done in %.1fs.", timing["total"])
  return {**summary, "params": savos_params}
