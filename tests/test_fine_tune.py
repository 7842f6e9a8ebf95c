"""Fine-tuning regimes: seeded few-shot subsets of the training stream."""

import types

import ml_collections
import numpy as np
import pytest

from crl import config_lib
from crl.data import multi_domain
from crl.trainers import fine_tune


def _task():
  ds = multi_domain.MultiDomainShapes(domain="sketch", eval_examples=8)
  return types.SimpleNamespace(dataset=ds, num_classes=ds.num_classes,
                               name="multi_domain",
                               pipeline=types.SimpleNamespace(procedural=True))


def test_few_shot_keeps_n_per_class_seeded():
  task = _task()
  idx = fine_tune.few_shot_indices(task, 2, seed=0)
  labels = np.asarray(task.dataset.sample("train", idx)["label"])
  assert np.bincount(labels, minlength=10).tolist() == [2] * 10
  assert len(set(idx.tolist())) == 20
  np.testing.assert_array_equal(idx, fine_tune.few_shot_indices(task, 2, 0))
  assert set(idx.tolist()) != set(fine_tune.few_shot_indices(task, 2, 1)
                                  .tolist())


def test_too_few_examples_per_class_is_one_line(monkeypatch):
  monkeypatch.setattr(fine_tune, "POOL_FACTOR", 1)  # pool = n x classes
  with pytest.raises(config_lib.ConfigError, match="few_shot=3: class"):
    fine_tune.few_shot_indices(_task(), 3, seed=0)


def test_which_members_need_the_engine():
  plain = ml_collections.ConfigDict(dict(trainable="all", few_shot=0,
                                         lp_steps=0))
  assert not fine_tune.needs_engine(plain)
  for key, value in (("trainable", "head"), ("few_shot", 10),
                     ("lp_steps", 5)):
    changed = plain.copy_and_resolve_references()
    changed[key] = value
    assert fine_tune.needs_engine(changed)
