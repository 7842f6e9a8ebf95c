"""Bad data: one clear message, before compiling (the CLI's bad inputs,
missing TFDS datasets included: test_bad_inputs_table)."""

import numpy as np
import pytest

from crl.data import pipeline


def _batch(**changes):
  batch = {"image": np.random.default_rng(0).random((4, 8, 8, 3),
                                                    dtype=np.float32),
           "label": np.array([0, 1, 2, 3], np.int32)}
  batch.update(changes)
  return batch


@pytest.mark.parametrize("changes,message", [
    ({"image": np.zeros((4, 8, 9, 3), np.float32)},
     r"images have shape \(8, 9, 3\) per example, expected \(8, 8, 3\)"),
    ({"image": np.zeros((4, 8, 8, 3), np.uint8)},
     "images have dtype uint8, expected a float dtype"),
    ({"label": np.array([0, 1, 2, 10], np.int32)},
     r"labels range over \[0, 10\], expected \[0, 9\]"),
    ({"label": np.array([0.0, 1.0, 2.0, 3.0], np.float32)},
     "labels have dtype float32, expected int"),
    ({"label": np.array([0, 1], np.int32)},
     r"labels have shape \(2,\), expected \(4,\)"),
    ({"image": np.where(np.arange(4)[:, None, None, None] == 2, np.nan,
                        np.zeros((4, 8, 8, 3), np.float32))},
     r"1 example\(s\) of .image. contain NaN or Inf"),
])
def test_check_batch_names_the_problem(changes, message):
  with pytest.raises(pipeline.DataError, match=message) as e:
    pipeline.check_batch(_batch(**changes), (8, 8, 3), 10, "batch of step 1")
  assert str(e.value).startswith("batch of step 1:")


def test_a_good_batch_passes_and_padding_labels_are_ignored():
  pipeline.check_batch(_batch(), (8, 8, 3), 10, "x")
  padded = _batch(label=np.array([0, 1, 2, 99], np.int32),
                  mask=np.array([1, 1, 1, 0], np.float32))
  pipeline.check_batch(padded, (8, 8, 3), 10, "x")
