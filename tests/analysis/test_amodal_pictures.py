"""The SaVos strips: a PNG with a colour key for every mask colour."""

import os

from matplotlib import image as mpimg
import numpy as np

from crl.reports import amodal_pictures


def test_strip_has_a_colour_key(tmp_path):
  t, h, w = 3, 12, 12
  frames = np.full((t, h, w, 3), 0.5, np.float32)
  amodal = np.zeros((t, h, w), np.float32)
  amodal[:, 3:9, 3:9] = 1
  occluder = np.zeros_like(amodal)
  occluder[:, :, 6:] = 1
  path = amodal_pictures.write_strip(
      frames, amodal * (1 - occluder), amodal * 0.9, amodal,
      tmp_path / "s" / "strip.png", occluder=occluder, title="x", dpi=40)
  assert os.path.exists(path) and mpimg.imread(path).shape[0] > 50
  labels = [h.get_label() for h in amodal_pictures.legend_handles(True)]
  assert labels == ["visible mask", "predicted amodal mask",
                    "ground-truth amodal mask", "occluder outline (white)"]
  colours = [tuple(h.get_facecolor()[:3]) for h in
             amodal_pictures.legend_handles(False)]
  assert colours == [amodal_pictures.VISIBLE_RGB,
                     amodal_pictures.PREDICTED_RGB, amodal_pictures.TRUTH_RGB]
