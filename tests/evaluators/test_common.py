"""`crl.evaluators.common`: one pass over a split, padding removed."""

import jax.numpy as jnp
import numpy as np
import pytest

from crl.evaluators import common


class _Pipeline:
  """Two batches of 3 over 5 real examples (the last row is padding)."""

  def eval_batches(self, split):
    if split == "empty":
      return
    x = jnp.arange(6.).reshape(6, 1)
    label = jnp.array([0, 1, 2, 0, 1, 9])
    group = jnp.array([1, 1, 0, 0, 1, 7])
    mask = jnp.array([1, 1, 1, 1, 1, 0])
    for i in (0, 3):
      yield {"x": x[i:i + 3], "label": label[i:i + 3],
             "group": group[i:i + 3], "mask": mask[i:i + 3]}


def test_collect_drops_padding_and_returns_the_keys():
  out = common.collect(_Pipeline(), lambda p, b: b["x"] * p, 2.0, "test")
  assert set(out) == {"output", "label"}
  np.testing.assert_array_equal(out["output"][:, 0], [0., 2., 4., 6., 8.])
  np.testing.assert_array_equal(out["label"], [0, 1, 2, 0, 1])
  out = common.collect(_Pipeline(), lambda p, b: {"a": b["x"][:, 0]}, None,
                       "test", keys=("label", "group"))
  assert set(out) == {"a", "label", "group"}
  np.testing.assert_array_equal(out["group"], [1, 1, 0, 0, 1])


def test_collect_refuses_an_empty_split():
  with pytest.raises(ValueError, match="'empty' is empty"):
    common.collect(_Pipeline(), lambda p, b: b["x"], None, "empty")
