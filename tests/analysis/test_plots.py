"""The suite's plots write valid PNGs and reject mismatched inputs."""

import os

from matplotlib import image as mpimg
import numpy as np
import pytest

from crl.reports import plots
from crl.evaluators import metrics

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, returned):
  assert returned == os.fspath(path)
  with open(path, "rb") as f:
    assert f.read(8) == _PNG_MAGIC
  pixels = mpimg.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
  assert pixels.std() > 0  # Something was drawn.


def test_id_ood_scatter(tmp_path):
  rng = np.random.default_rng(0)
  ida = rng.uniform(0.5, 0.99, 8)
  path = tmp_path / "sub" / "scatter.png"
  out = plots.id_ood_scatter({"hue": ida, "scale": ida}, {
      "hue": ida - 0.3, "scale": np.r_[ida[:-1] ** 2, 1.0]}, path,
                             title="ID vs OOD", dpi=40)
  _assert_png(path, out)
  single = tmp_path / "single.png"
  _assert_png(single, plots.id_ood_scatter([0.7], [0.5], single,
                                           probit_scale=False, dpi=40))
  with pytest.raises(ValueError, match="'hue' has 8 ID and 7 OOD"):
    plots.id_ood_scatter({"hue": ida}, {"hue": ida[:-1]}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="same shifts"):
    plots.id_ood_scatter({"hue": ida}, {"scale": ida}, tmp_path / "x.png")
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    plots.id_ood_scatter([50.0, 60.0], [0.4, 0.5], tmp_path / "x.png")
  assert not (tmp_path / "x.png").exists()


def test_reliability_diagram(tmp_path):
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(200, 4)) * 2
  labels = rng.integers(0, 4, 200)
  path = tmp_path / "rel.png"
  out = plots.reliability_diagram(
      {"id": metrics.reliability(logits, labels, num_bins=10),
       "ood": metrics.reliability(logits[:50], labels[:50], num_bins=15)},
      path, dpi=40)
  _assert_png(path, out)
  single = tmp_path / "one.png"
  _assert_png(single, plots.reliability_diagram(
      metrics.reliability(logits, labels), str(single), dpi=40))
  bad = metrics.reliability(logits, labels, num_bins=10)
  bad["accuracy"] = bad["accuracy"][:-1]
  with pytest.raises(ValueError, match="len\\(edges\\) - 1 = 10"):
    plots.reliability_diagram(bad, tmp_path / "x.png")
  with pytest.raises(ValueError, match="lacks \\['edges'\\]"):
    plots.reliability_diagram({"id": {"count": [1], "confidence": [1],
                                      "accuracy": [1]}}, tmp_path / "x.png")


def test_accuracy_vs_severity(tmp_path):
  path = tmp_path / "sev.png"
  out = plots.accuracy_vs_severity(
      {"nac": [0.9, 0.8, 0.7, 0.6, 0.5], "vit": [0.9, 0.7, 0.5, 0.4, 0.3]},
      path, clean_accuracy={"nac": 0.95}, dpi=40)
  _assert_png(path, out)
  with pytest.raises(ValueError, match="different numbers of severities"):
    plots.accuracy_vs_severity({"a": [0.5, 0.4], "b": [0.5]},
                               tmp_path / "x.png")
  with pytest.raises(ValueError, match="one value per severity"):
    plots.accuracy_vs_severity({"a": [0.5, 0.4]}, tmp_path / "x.png",
                               severities=[1, 3, 5])
  with pytest.raises(ValueError, match="unknown curves \\['c'\\]"):
    plots.accuracy_vs_severity({"a": [0.5]}, tmp_path / "x.png",
                               clean_accuracy={"c": 0.9})
