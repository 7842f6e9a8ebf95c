"""The shift registry: names, kinds, selections, what each shift needs."""

import dataclasses
import os

import pytest

from crl import registry as crl_registry
from crl.data import causal_shapes
from crl.shifts import corruptions
from crl.shifts import natural
from crl.shifts import registry


def test_every_intervention_and_corruption_is_registered_with_its_kind():
  for name in causal_shapes.INTERVENTIONS:
    shift = registry.get(name)
    assert shift.name == name and shift.intervention == name
    expected = "semantic" if name == "novel_classes" else "interventional"
    assert shift.kind == expected, name
    assert shift.description == causal_shapes.CausalShapes().describe(name)
  corruption_names = registry.names("corruption")
  assert len(corruption_names) == 19 * 5
  for name in corruptions.names():
    for severity in range(1, 6):
      shift = registry.get(f"corruption/{name}/{severity}")
      assert (shift.kind, shift.corruption, shift.severity, shift.family) == (
          "corruption", name, severity, "corruption")
      assert f"Severity {severity}" in shift.description
  for name in ("cifar10_1", "imagenet_v2", "imagenet_r", "imagenet_a",
               "imagenet_sketch", "cifar10_corrupted/glass_blur/2",
               "imagenet2012_corrupted/fog/5"):
    assert registry.get(name).kind == "natural", name
  for name in ("novel_classes", "svhn_cropped", "cifar100"):
    assert registry.get(name).kind == "semantic", name


def test_kinds_partition_the_names_and_every_entry_is_complete():
  every = registry.names()
  assert len(every) == len(set(every))
  by_kind = [n for kind in registry.KINDS for n in registry.names(kind)]
  assert sorted(by_kind) == sorted(every)
  for name in every:
    shift = registry.get(name)
    assert shift.name == name
    assert shift.kind in registry.KINDS
    assert shift.description and shift.needs and shift.source
    assert shift.protocol()["name"] == name
    assert None not in shift.protocol().values()


def test_combinations():
  combos = [n for n in registry.names("interventional") if "+" in n]
  assert "hue_independent+unseen_background" in combos
  assert ("hue_independent+scale_out+border_position+unseen_background+"
          "unseen_rotation") in combos
  # Any valid combination resolves, in the generator's canonical order.
  shift = registry.get("unseen_background+novel_classes")
  assert shift.kind == "semantic"
  assert registry.get("novel_classes+unseen_background") == shift
  assert registry.get("unseen_rotation+scale_out").name == (
      "scale_out+unseen_rotation")
  with pytest.raises(registry.UnknownShiftError, match="both replace the hue"):
    registry.get("hue_independent+unseen_hue")


def test_unknown_names_list_the_known_ones():
  with pytest.raises(registry.UnknownShiftError) as e:
    registry.get("hue_dependent")
  message = str(e.value)
  for known in ("hue_independent", "corruption/<name>/<1-5>", "contrast",
                "cifar10_1", "imagenet_r", "svhn_cropped", "'all'"):
    assert known in message
  assert isinstance(e.value, crl_registry.UnknownNameError)  # one line, exit 2
  with pytest.raises(registry.UnknownShiftError, match="severity 1-5"):
    registry.get("corruption/contrast/6")
  with pytest.raises(registry.UnknownShiftError, match="known kinds"):
    registry.names("adversarial")
  with pytest.raises(registry.UnknownShiftError, match="matches no shift"):
    registry.resolve("corruption/*/9")


def test_resolve_all_kinds_globs_and_names():
  assert [s.name for s in registry.resolve("all")] == registry.names()
  assert [s.name for s in registry.resolve("semantic")] == [
      "novel_classes", "svhn_cropped", "cifar100"]
  third = registry.resolve("corruption/*/3")
  assert [s.corruption for s in third] == list(corruptions.names())
  picked = registry.resolve("hue_independent, corruption/contrast/*,"
                            "hue_independent")
  assert [s.name for s in picked] == ["hue_independent"] + [
      f"corruption/contrast/{i}" for i in range(1, 6)]
  explicit = dict((s.name, e) for s, e in registry.select(
      ("interventional", "unseen_hue")))
  assert explicit["unseen_hue"] and not explicit["scale_out"]


class _TFDSLike:
  image_shape = (32, 32, 3)

  def __init__(self, tfds_name="cifar10:3.0.2"):
    self.tfds_name = tfds_name

  def eval_numpy(self):
    pass


def test_what_each_shift_needs():
  shapes = causal_shapes.CausalShapes()
  small = causal_shapes.CausalShapes(resolution=16)
  tfds_like = _TFDSLike()
  assert registry.applies_to(registry.get("scale_out"), shapes) is None
  assert "causal_shapes" in registry.applies_to(registry.get("scale_out"),
                                                tfds_like)
  contrast = registry.get("corruption/contrast/1")
  assert registry.applies_to(contrast, shapes) is None
  assert registry.applies_to(contrast, tfds_like) is None
  assert "at least 32x32" in registry.applies_to(contrast, small)
  assert registry.applies_to(registry.get("cifar10_1"), tfds_like) is None
  assert "imagenet2012" in registry.applies_to(registry.get("imagenet_r"),
                                               tfds_like)
  assert "TFDS 'cifar10'" in registry.applies_to(registry.get("cifar10_1"),
                                                 shapes)


def test_domain_pairs_apply_to_the_other_domains_only():
  real, sketch = (registry.get(f"domainnet/{d}") for d in ("real", "sketch"))
  assert real.kind == sketch.kind == "natural"
  assert sketch.tfds_name == "domainnet/sketch" and sketch.tfds_split == "test"
  run = _TFDSLike("domainnet/real:2.0.1")
  assert registry.applies_to(sketch, run) is None
  assert "own data" in registry.applies_to(real, run)
  assert "domainnet" in registry.applies_to(sketch, _TFDSLike())
  assert "cifar10" in registry.applies_to(registry.get("cifar10_1"), run)
  assert "domainnet/<domain>" in registry.known_names_text()


def test_tfds_names_of_the_corrupted_copies():
  assert registry.get("cifar10_corrupted/glass_blur/2").tfds_name == (
      "cifar10_corrupted/frosted_glass_blur_2")
  assert registry.get("cifar10_corrupted/elastic_transform/1").tfds_name == (
      "cifar10_corrupted/elastic_1")
  assert registry.get("imagenet2012_corrupted/glass_blur/3").tfds_name == (
      "imagenet2012_corrupted/glass_blur_3")
  assert registry.get("imagenet2012_corrupted/fog/1").tfds_split == (
      "validation")


def test_class_subsets_are_200_imagenet_wnids():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(tfds.__file__)
  with open(os.path.join(root, "datasets", "imagenet2012", "labels.txt")) as f:
    imagenet = f.read().split()
  assert len(imagenet) == 1000
  for name, wnids in natural.CLASS_SUBSETS.items():
    assert len(wnids) == len(set(wnids)) == 200, name
    assert list(wnids) == sorted(wnids), name
    assert set(wnids) <= set(imagenet), name
  assert set(natural.IMAGENET_R_WNIDS) != set(natural.IMAGENET_A_WNIDS)
  assert registry.get("imagenet_r").class_subset == "imagenet_r"
  assert registry.get("imagenet_a").class_subset == "imagenet_a"
  assert registry.get("imagenet_v2").class_subset is None


def test_the_package_exposes_the_registry():
  from crl import shifts  # pylint: disable=g-import-not-at-top
  assert shifts.names() == registry.names()
  assert shifts.get("scale_out") is registry.get("scale_out")
  assert shifts.resolve("semantic") == registry.resolve("semantic")


def test_register_a_user_shift():
  shift = dataclasses.replace(registry.get("cifar10_1"), name="my_cifar10_1",
                              tfds_name="cifar10_1/v4")
  registry.register(shift)
  try:
    assert registry.get("my_cifar10_1") == shift
    assert "my_cifar10_1" in registry.names("natural")
    with pytest.raises(ValueError, match="already registered"):
      registry.register(dataclasses.replace(shift, description="other"))
  finally:
    registry._SHIFTS.pop("my_cifar10_1")  # pylint: disable=protected-access
