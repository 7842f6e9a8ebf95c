"""The documented data path, for real: prepare a TFDS dataset, train on it.

The builder lives in a package module (as every TFDS catalog dataset does),
which is the code path that needs `importlib_resources` (see setup.py).
Nothing is downloaded: the examples are generated here.
"""

import numpy as np
import tensorflow_datasets as tfds

from crl import config_lib
from crl import registry
from crl.trainers import classification
from tests import helpers


class CrlTinyTfdsShapes(tfds.core.GeneratorBasedBuilder):
  """16x16 RGB noise images in 3 classes; 64 train and 32 test examples."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(16, 16, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, 64),
            "test": self._generate_examples(1, 32)}

  def _generate_examples(self, seed, n):
    rng = np.random.default_rng(seed)
    for i in range(n):
      image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
      image[..., i % 3] = 255  # the class is the saturated channel
      yield i, {"image": image, "label": i % 3}


def test_prepare_a_local_tfds_dataset_and_train_on_it(tmp_path):
  data_dir = str(tmp_path / "tfds")
  builder = CrlTinyTfdsShapes(data_dir=data_dir)
  builder.download_and_prepare()
  assert builder.info.splits["train"].num_examples == 64
  config = helpers.tiny_config(
      num_steps=3, log_every_steps=1, batch_size=8, eval_batch_size=8,
      evals={}, **{"checkpoint.async_save": False, "checkpoint.every_steps": 3,
                   "final_eval.splits": "test"})
  config.unlock()
  config.data = config_lib.component_config(
      registry.DATASETS, "tfds", tfds_name="crl_tiny_tfds_shapes",
      data_dir=data_dir, shuffle_buffer=16)
  config.lock()
  out = classification.train_and_evaluate(config, str(tmp_path / "run"))
  assert out["step"] == 3 and out["dataset"] == "tfds"
  assert out["results"]["test"]["num_examples"] == 32
  assert np.isfinite(out["results"]["test"]["nll"])
