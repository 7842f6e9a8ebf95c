"""The SaVos trainer's configuration: checks, and what it builds.

Checks a configs/savos.py config and its dataset's names before anything is
compiled (`check_config`, `check_dataset_names`: one `ConfigError` line
naming the key), and builds from it the dataset, the input noise, the
public-code evaluation protocols and the evaluator, and the configs of the
derived runs (upper bound, adaptation).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from crl import config_lib
from crl import registry
from crl import train
from crl.data import occluded_video
from crl.data import tracker_noise
from crl.evaluators import amodal as amodal_eval
from crl.evaluators import amodal_official
from crl.trainers import savos_losses

ALL_KEYS = occluded_video.BATCH_KEYS


def build_dataset(config: ml_collections.ConfigDict) -> Any:
  """`config.data`'s dataset; a `ConfigError` unless it is a procedural
  video dataset with every key SaVos needs."""
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



def official_protocols(config: ml_collections.ConfigDict
                       ) -> dict[str, amodal_official.OfficialProtocol]:
  """`{prefix: OfficialProtocol}` of the enabled `config.eval.official*`
  sections (e.g. 'official': the public code's filters scaled to the
  frames, 'official_px': its pixel sizes unscaled)."""
  out = {}
  for name in sorted(config.eval.keys()):
    section = config.eval[name]
    if not name.startswith("official") or not section.get("enabled", False):
      continue
    fields = {k: v for k, v in section.items() if k != "enabled"}
    known = amodal_official.OfficialProtocol._fields
    unknown = set(fields) - set(known)
    if unknown:
      raise config_lib.ConfigError(
          f"config.eval.{name} has unknown key(s) {sorted(unknown)}; known: "
          f"enabled, {', '.join(known)}.")
    out[name] = amodal_official.OfficialProtocol(**fields)
  return out


def make_evaluator(config: ml_collections.ConfigDict, pipeline: Any,
                   model: Any) -> amodal_eval.AmodalEvaluator:
  """The amodal evaluator of `config.eval` over `pipeline`'s splits."""
  protocols = official_protocols(config)
  try:
    return amodal_eval.AmodalEvaluator(
        pipeline=pipeline, model=model, splits=config.eval.splits,
        min_occlusion=config.eval.min_occlusion,
        max_occlusion=config.eval.max_occlusion,
        threshold=config.eval.threshold, protocols=protocols)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.eval: {e}") from e


def loss_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config.loss` as keyword arguments of
  `savos_losses.self_supervised_loss`."""
  return dict(consistency_weight=config.loss.consistency_weight,
              photometric_weight=config.loss.photometric_weight,
              normalization=config.loss.get("normalization", "mean"))


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
  official_protocols(config)
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
    unknown = [n for n in tta.get("reference_splits", ())
               if n not in config.eval.splits]
    if unknown:
      raise config_lib.ConfigError(
          f"config.tta.reference_splits has {unknown}, not in "
          f"config.eval.splits {tuple(config.eval.splits)}.")
    for key in ("examples", "validation_examples"):
      value = tta.get(key, 0)
      if not isinstance(value, int) or value < (key != "examples"):
        raise config_lib.ConfigError(
            f"config.tta.{key} must be an integer >= "
            f"{int(key != 'examples')}, got {value!r}.")
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

