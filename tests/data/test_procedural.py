"""The procedural-dataset base: one `sample()` signature for every generator."""

import jax.numpy as jnp
import numpy as np
import pytest

from crl.data import causal_shapes
from crl.data import fair_shapes
from crl.data import fair_tabular
from crl.data import multi_domain
from crl.data import occluded_video
from crl.data import procedural

DATASETS = {
    "causal_shapes": lambda: causal_shapes.CausalShapes(resolution=8),
    "occluded_video": lambda: occluded_video.OccludedVideo(
        resolution=8, num_frames=2, num_objects=2),
    "fair_shapes": lambda: fair_shapes.FairShapes(resolution=8),
    "fair_tabular": fair_tabular.FairTabular,
    "multi_domain": lambda: multi_domain.MultiDomainShapes(resolution=8),
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_sample_is_sample_encoded_of_the_split(name):
  ds = DATASETS[name]()
  assert isinstance(ds, procedural.ProceduralDataset)
  idx = np.array([3, 0, 7])
  out = ds.sample("validation", idx)
  direct = ds.sample_encoded(ds.encode("validation"), jnp.asarray(idx))
  for key in direct:
    np.testing.assert_array_equal(np.asarray(out[key]),
                                  np.asarray(direct[key]), err_msg=key)
  first = next(k for k in direct if k != "factors")
  assert np.asarray(out[first]).shape[0] == 3


def test_intervention_is_a_keyword_and_eval_batch_reads_the_split():
  ds = DATASETS["causal_shapes"]()
  idx = jnp.arange(4)
  shifted = ds.sample("test", idx, intervention="unseen_hue")
  plain = ds.sample("test", idx)
  assert not np.array_equal(np.asarray(shifted["image"]),
                            np.asarray(plain["image"]))
  np.testing.assert_array_equal(
      np.asarray(ds.eval_batch("unseen_hue", idx)["image"]),
      np.asarray(shifted["image"]))


@pytest.mark.parametrize("bad", [np.zeros((2, 2), np.int32),
                                 np.array([0.5, 1.5])])
def test_bad_indices_fail_with_one_line(bad):
  with pytest.raises(ValueError, match="integer \\[batch\\] array"):
    DATASETS["fair_tabular"]().sample("train", bad)


def test_fairness_data_defines_no_interventions():
  with pytest.raises(ValueError, match="defines no interventions"):
    DATASETS["fair_tabular"]().sample("train", np.arange(2),
                                      intervention="unseen_hue")
