"""The procedural-dataset base: one `sample()` signature for every generator.

Each generator's own tests sample it through this signature (with
`intervention=` where it has interventions); these tests check the base on
the cheapest generator.
"""

import jax
import numpy as np
import pytest

from crl.data import causal_shapes
from crl.data import fair_shapes
from crl.data import fair_tabular
from crl.data import multi_domain
from crl.data import occluded_video
from crl.data import procedural


@pytest.mark.parametrize("cls", [
    causal_shapes.CausalShapes, occluded_video.OccludedVideo,
    fair_shapes.FairShapes, fair_tabular.FairTabular,
    multi_domain.MultiDomainShapes])
def test_every_procedural_dataset_derives_from_the_base(cls):
  assert issubclass(cls, procedural.ProceduralDataset)
  assert cls.sample is procedural.ProceduralDataset.sample


def test_sample_and_eval_batch_are_the_jitted_generator_of_the_split():
  ds = fair_tabular.FairTabular()
  idx = np.array([3, 0, 7])
  generator = jax.jit(ds.sample_encoded)
  val = ds.sample("validation", idx)
  expected = generator(ds.encode("validation"), idx)
  test = ds.eval_batch("test", idx)
  for key in expected:
    np.testing.assert_array_equal(np.asarray(val[key]),
                                  np.asarray(expected[key]), err_msg=key)
    np.testing.assert_array_equal(
        np.asarray(test[key]),
        np.asarray(generator(ds.encode("test"), idx)[key]), err_msg=key)
  assert not np.array_equal(np.asarray(val["features"]),
                            np.asarray(test["features"]))


@pytest.mark.parametrize("bad", [np.zeros((2, 2), np.int32),
                                 np.array([0.5, 1.5])])
def test_bad_indices_fail_with_one_line(bad):
  with pytest.raises(ValueError, match="integer \\[batch\\] array"):
    fair_tabular.FairTabular().sample("train", bad)


def test_an_intervention_the_dataset_lacks_fails_with_one_line():
  with pytest.raises(ValueError, match="defines no interventions"):
    fair_tabular.FairTabular().sample("train", np.arange(2),
                                      intervention="unseen_hue")
