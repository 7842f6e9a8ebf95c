"""Opening a TFDS builder, with one clear error when it cannot serve data.

`open_builder` (an unknown name fails with the close names),
`check_prepared` (data that is not prepared fails with how to prepare it:
data is never downloaded at run time). `crl.data.tfds_input` uses both; its
users catch the errors defined here (`tfds_input` names them too).
"""

from __future__ import annotations

import difflib

import tensorflow_datasets as tfds

from crl.data import pipeline


class DatasetNotPreparedError(pipeline.DataError, FileNotFoundError):
  """The TFDS dataset has no prepared data in `data_dir`."""


class UnknownDatasetError(pipeline.DataError):
  """No TFDS builder has this name."""


def open_builder(tfds_name: str, data_dir: str | None
                 ) -> tfds.core.DatasetBuilder:
  """`tfds.builder(tfds_name, data_dir=data_dir)`; UnknownDatasetError with
  the close names when there is no such dataset."""
  try:
    return tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    base = tfds_name.split(":")[0].split("/")[0]
    close = difflib.get_close_matches(base, tfds.list_builders(), n=5,
                                      cutoff=0.6)
    hint = (f"close names: {', '.join(close)}" if close else
            "see `tfds.list_builders()` or "
            "https://www.tensorflow.org/datasets/catalog")
    raise UnknownDatasetError(
        f"No TFDS dataset named {tfds_name!r}; {hint}.") from None


def check_prepared(builder: tfds.core.DatasetBuilder, tfds_name: str,
                   data_dir: str | None, train_split: str) -> None:
  """Raises DatasetNotPreparedError (how to prepare it) unless `builder`
  can read `train_split`."""
  if builder.is_prepared():
    return
  try:
    # Without prepared files this raises, unless TFDS is mocked
    # (`tfds.testing.mock_data`), which generates examples from the code.
    builder.as_dataset(split=train_split)
    return
  except Exception as e:  # pylint: disable=broad-except
    cause = e
  root = str(getattr(builder, "data_dir_root", None) or data_dir)
  name = tfds_name
  raise DatasetNotPreparedError(
      f"TFDS dataset {name!r} is not prepared in data_dir {root} (looked "
      f"for {str(builder.data_dir)}); data is never downloaded at run time. "
      f"Prepare it on a machine with internet: `tfds build {name} "
      f"--data_dir={root}` or `tfds.builder({name!r}, data_dir={root!r})"
      ".download_and_prepare()` (datasets with manual downloads, e.g. "
      "imagenet2012, need their archives in DATA_DIR/downloads/manual), "
      "then copy the data directory here and set config.data.data_dir."
  ) from cause
