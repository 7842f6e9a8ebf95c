"""The suite's member augmentations: names and traced flags agree."""

import jax
import numpy as np
import pytest

from crl.data import augment as augment_lib
from crl.data import member_augment


@pytest.mark.parametrize("ops", [("randaugment", "augmix"),
                                 ("flip", "standard")])
def test_flags_give_the_named_ops(ops):
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 3))
  key = jax.random.PRNGKey(1)
  named = np.asarray(member_augment.augment(images, key, ops))
  flags = member_augment.augment_flags(ops)
  traced = np.asarray(jax.jit(member_augment.augment)(images, key, flags))
  np.testing.assert_allclose(traced, named, atol=1e-5)  # jit vs eager
  assert named.shape == images.shape and not np.allclose(named, images)
  assert 0. <= named.min() and named.max() <= 1.


def test_a_policy_is_the_policy_of_crl_data_augment():
  images = jax.random.uniform(jax.random.PRNGKey(2), (3, 16, 16, 3))
  key = jax.random.PRNGKey(3)
  keys = jax.random.split(key, 4)
  index = member_augment._POLICIES.index("augmix")  # pylint: disable=protected-access
  want = augment_lib.apply("augmix", images,
                           jax.random.fold_in(keys[3], index))
  np.testing.assert_array_equal(
      member_augment.augment(images, key, ("augmix",)), want)
