"""Every config variant loads, and its model and dataset can be built."""

import glob
import os

import pytest

from crl import config_lib
from crl import train
from crl.trainers import classification
from tests import helpers

VARIANTS = ["", "tiny", "bench", "official_s32", "tfds", "tiny_imagenet",
            "imagenet"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_nac_variants_build(variant):
  spec = os.path.join(helpers.ROOT, "configs/nac.py")
  config = config_lib.load_config(f"{spec}:{variant}" if variant else spec)
  train.check_config(config)
  classification.build_dataset(config)  # TFDS builders load lazily
  num_classes = 10 if config.data.name == "causal_shapes" else 1000
  model = classification.build_model(config, num_classes)
  assert model.num_classes == num_classes
  for name, section in config.evals.items():
    assert section.type == "classification", name
  if config.data.name == "tfds":
    assert set(config.evals.test.splits) <= set(
        config.data.eval_split_names), "eval splits must be TFDS splits"


def test_every_config_has_a_docstring_with_command_runtime_and_result():
  for path in glob.glob(os.path.join(helpers.ROOT, "configs", "*.py")):
    text = open(path).read()
    doc = text.split('"""')[1]
    assert "python -m crl.main --config=configs/" in doc, path
    assert "Runtime" in doc and "Expected" in doc, path


def test_unknown_variant_is_a_clear_error():
  with pytest.raises(ValueError, match="Unknown variant 'huge'.*known"):
    config_lib.load_config(os.path.join(helpers.ROOT, "configs/nac.py:huge"))
