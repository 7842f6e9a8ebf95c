"""configs/pretrain.py: variants, the source dataset, bad names."""

import os

import pytest

from crl import config_lib
from crl import registry
from tests import helpers


def _load(variant):
  return config_lib.load_config(
      os.path.join(helpers.ROOT, f"configs/pretrain.py:{variant}"))


@pytest.mark.parametrize("variant,model", [("tiny", "vit"), ("vit", "vit"),
                                           ("nac_tiny", "nac"),
                                           ("perceiver_tiny", "perceiver_io"),
                                           ("nac_small", "nac"),
                                           ("perceiver_small", "perceiver_io"),
                                           ("vit_small", "vit"),
                                           ("resnet_small", "resnet")])
def test_variants_pretrain_on_the_source(variant, model):
  c = _load(variant)
  assert c.model.name == model and c.data.name == "pretrain_source"
  ds = config_lib.build(registry.DATASETS, c.data)
  assert ds.num_classes == 14


def test_bad_variant_and_bad_data_are_one_line_errors():
  with pytest.raises(ValueError, match="Unknown variant 'huge'.*known"):
    _load("huge")
  with pytest.raises(ValueError, match="Unknown variant 'interpreters_small'"):
    _load("interpreters_small")
  c = _load("tiny")
  c.unlock()
  c.data = config_lib.component_config(registry.DATASETS, "multi_domain",
                                       domain="clipart")
  with pytest.raises(config_lib.ConfigError, match="unknown domain 'clipart'"):
    config_lib.build(registry.DATASETS, c.data)
