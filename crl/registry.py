"""Name -> component lookups with lazy imports.

Every pluggable component (model, dataset, evaluator, trainer) is chosen by a
string in the config. Entries are "module:attribute" paths so that importing
the registry never imports TensorFlow or a model family the run does not use.
An unknown name fails with the list of known names.
"""

from __future__ import annotations

import importlib
from typing import Any


class UnknownNameError(ValueError):
  """Raised when a config names a component that is not registered."""


class Registry:
  """A small name -> lazily imported object table."""

  def __init__(self, kind: str, entries: dict[str, str]):
    self.kind = kind
    self._entries = dict(entries)

  def names(self) -> list[str]:
    return sorted(self._entries)

  def register(self, name: str, target: str) -> None:
    """Adds `name` -> "module:attribute" (for user extensions)."""
    if name in self._entries and self._entries[name] != target:
      raise ValueError(f"{self.kind} {name!r} is already registered as "
                       f"{self._entries[name]!r}.")
    self._entries[name] = target

  def get(self, name: str) -> Any:
    if name not in self._entries:
      raise UnknownNameError(
          f"Unknown {self.kind} {name!r}; known {self.kind}s: "
          f"{', '.join(self.names())}.")
    module_name, _, attribute = self._entries[name].partition(":")
    return getattr(importlib.import_module(module_name), attribute)

  def __contains__(self, name: str) -> bool:
    return name in self._entries


MODELS = Registry("model", {
    "nac": "crl.models.nac:NAC",
    "perceiver_io": "crl.models.perceiver:PerceiverIO",
    "vit": "crl.models.vit:ViT",
    "resnet": "crl.models.resnet:ResNet",
    "interpreters": "crl.models.interpreters:NeuralInterpreter",
    "mlp": "crl.models.mlp:MLP",
    "cnn": "crl.models.cnn:ConvNet",
    "two_heads": "crl.models.two_heads:TwoHeads",
    "savos": "crl.models.savos:SaVos",
})

DATASETS = Registry("dataset", {
    "causal_shapes": "crl.data.causal_shapes:CausalShapes",
    "tfds": "crl.data.tfds_input:TFDSImageClassification",
    "fair_tabular": "crl.data.fair_tabular:FairTabular",
    "fair_shapes": "crl.data.fair_shapes:FairShapes",
    "celeba": "crl.data.celeba:CelebAFairness",
    "fairface": "crl.data.fairface:FairFace",
    "occluded_video": "crl.data.occluded_video:OccludedVideo",
    "fishbowl": "crl.data.fishbowl_clips:FishbowlClips",
    "kins_video": "crl.data.kins_clips:KinsClips",
    "multi_domain": "crl.data.multi_domain:MultiDomainShapes",
    "pretrain_source": "crl.data.multi_domain:PretrainSource",
    "domain_folder": "crl.data.domain_folder:DomainFolder",
    "image_folder": "crl.data.image_folder:ImageFolder",
})

EVALUATORS = Registry("evaluator", {
    "classification": "crl.evaluators.classification:ClassificationEvaluator",
    "fairness": "crl.evaluators.fairness:FairnessEvaluator",
    "ood_suite": "crl.evaluators.ood_suite:OODSuiteEvaluator",
    "adversarial": "crl.evaluators.adversarial:AdversarialEvaluator",
})

TRAINERS = Registry("trainer", {
    "classification": "crl.trainers.classification:train_and_evaluate",
    "augmented_classification": "crl.trainers.augmented:train_and_evaluate",
    "fair_classification": "crl.trainers.fairness:train_and_evaluate",
    "two_heads": "crl.trainers.two_heads:train_and_evaluate",
    "savos": "crl.trainers.savos:train_and_evaluate",
    "ood_suite": "crl.trainers.ood_suite:train_and_evaluate",
    "transfer": "crl.trainers.transfer:train_and_evaluate",
    "lr_sweep": "crl.trainers.lr_sweep:train_and_evaluate",
})
