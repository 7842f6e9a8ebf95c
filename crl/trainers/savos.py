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

4. test-time adaptation on each scored video itself, all videos of a batch
   in one compiled program (`crl.trainers.savos_adapt`), steps and learning
   rate chosen on held-out shifted videos, with the curve against steps and
   the gain's interval (`crl.trainers.savos_tta`, `config.tta`);

then scores SaVos, the upper bound, the baselines (visible mask, convex hull)
and the adapted models (`crl.evaluators.amodal`) under crl's protocol and
the public code's ('official*': with what each of its filters removes),
writes `workdir/results.json` (`{"results": {split: {method: metrics}},
"table", "timing_s", ...}`; each run's own results.json has the same
`results` format, and every one is written atomically by
`crl.workdir.write_json_atomic`), prints the table, and draws pictures of
the first test videos into `workdir/pictures/` (`crl.reports.
amodal_pictures`).

The task is `crl.trainers.savos_task`, the config checks and builders
`crl.trainers.savos_config`. One input pipeline (`crl.trainers.
savos_pipeline`, one compiled generator) and one evaluator (one compiled
scoring function) serve all the runs.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections

from crl import config_lib
from crl import registry
from crl import runtime
from crl import train
from crl import workdir as workdir_lib
from crl.evaluators import amodal_metrics
from crl.models import precision
from crl.reports import amodal_pictures
from crl.trainers import savos_adapt
from crl.trainers import savos_config
from crl.trainers import savos_pipeline
from crl.trainers import savos_tta
from crl.trainers.savos_task import SavosTask


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
  savos_config.check_config(config)
  runtime.setup_fast_compile(config)
  t_start = time.time()
  timing: dict[str, float] = {}
  mesh = runtime.make_mesh()
  dataset = savos_config.build_dataset(config)
  savos_config.check_dataset_names(config, dataset)
  pipeline = savos_pipeline.VideoPipeline(
      dataset, mesh, config.batch_size, config.eval_batch_size,
      noise=savos_config.input_noise(config))
  model = precision.with_compute_dtype(
      config_lib.build(registry.MODELS, config.model),
      config.get("compute_dtype", "float32"))
  evaluator = savos_config.make_evaluator(config, pipeline, model)
  shared = dict(pipeline=pipeline, evaluator=evaluator)
  splits = tuple(config.eval.splits)

  with _timed(timing, "savos"):
    out = train.run(config, workdir, SavosTask(config, **shared), stop_at)
  if out.get("preempted"):
    return out
  savos_params = out.pop("params")
  results = {s: dict(r) for s, r in out["results"].items()}

  if config.supervised.enabled:
    sup_config = savos_config.derived_config(config, num_steps=config.supervised.num_steps)
    with _timed(timing, "supervised"):
      sup = train.run(sup_config, os.path.join(workdir, "supervised"),
                      SavosTask(sup_config, mode="supervised", **shared))
    if sup.get("preempted"):
      return sup
    for s, r in sup["results"].items():
      results[s].update(r)

  adapt_split = config.adapt.split
  if config.adapt.enabled:
    adapt_config = savos_config.derived_config(
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
    results[adapt_split].update(adapted["results"][adapt_split])

  tta = None
  tta_config = config.get("tta")
  if tta_config is not None and tta_config.enabled:
    adapter = savos_adapt.VideoAdapter(
        model, savos_config.loss_kwargs(config), pipeline.sharding,
        evaluator.threshold)
    with _timed(timing, "tta"):
      tta = savos_tta.run_tta(
          adapter=adapter, params=savos_params, pipeline=pipeline,
          evaluator=evaluator, split=tta_config.split,
          intervention=tta_config.intervention,
          validation_examples=tta_config.validation_examples,
          examples=tta_config.get("examples", 0),
          learning_rates=tuple(tta_config.learning_rates),
          steps=tuple(tta_config.steps),
          reference_splits=tuple(tta_config.get("reference_splits", ())))
    if not tta_config.get("examples", 0):
      # Every video scored: the adapted model joins the split's table.
      for s, row in tta["splits"].items():
        results[s]["savos_tta"] = row["metrics"]

  with _timed(timing, "baselines"):
    for s in splits:
      results[s].update(evaluator.baseline_metrics(s))
    occlusion = {s: savos_tta.occlusion_stats(pipeline, s) for s in splits}

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

  table = amodal_metrics.format_table(results)
  summary = {
      "step": out["step"],
      "model": "savos",
      "dataset": config.data.name,
      "descriptions": evaluator.descriptions,
      "protocol": (f"per frame: occlusion rate in [{config.eval.min_occlusion}"
                   f", {config.eval.max_occlusion}], first and last frame of "
                   "each track dropped, mean over objects then frames; "
                   "'_all': plain mean over object-frames"),
      "official_protocols": {p: protocol.describe() for p, protocol
                             in evaluator.protocols.items()},
      "official_filters_removed": {s: evaluator.removed(s) for s in splits},
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
    workdir_lib.write_json_atomic(os.path.join(workdir, "results.json"),
                                  summary)
    print(f"\nAmodal segmentation (mIoU), {config.data.name}:\n{table}\n"
          f"time: {timing}\n", flush=True)
  logging.info("SaVos done in %.1fs.", timing["total"])
  return {**summary, "params": savos_params}

