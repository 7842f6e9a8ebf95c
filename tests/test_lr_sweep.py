"""The equal-effort learning-rate sweep (crl.trainers.lr_sweep)."""

import hashlib
import json
import os

import numpy as np
import pytest

from crl import config_lib
from crl.data import multi_domain
from crl.trainers import lr_sweep
from tests import helpers


def _hashes(ds, split, n):
  images = np.asarray(ds.sample(split, np.arange(n))["image"])
  return {hashlib.sha1(im.tobytes()).hexdigest() for im in images}


@pytest.mark.parametrize("ds", [
    multi_domain.MultiDomainShapes(domain="photo", resolution=8),
    multi_domain.PretrainSource(resolution=8)])
def test_validation_split_is_disjoint_from_train_and_test(ds):
  train, val, test = (_hashes(ds, s, 64) for s in ("train", "validation",
                                                    "test"))
  assert len(train) == len(val) == len(test) == 64  # no repeats either
  assert not train & val and not val & test and not train & test


def test_log_grid_and_bad_grids():
  assert lr_sweep.log_grid(1e-3, 1e-1, 3) == [1e-3, 1e-2, 1e-1]
  with pytest.raises(config_lib.ConfigError, match="0 < low <= high"):
    lr_sweep.log_grid(0., 1., 3)
  with pytest.raises(config_lib.ConfigError, match="non-empty list"):
    lr_sweep.check(helpers.load_with("configs/sweep.py:tiny",
                                     {"sweep.grid": ()}))


def test_pretrained_candidate_needs_its_directory():
  c = helpers.load_with("configs/sweep.py:domain", {})
  with pytest.raises(config_lib.ConfigError, match="pretrained_dir"):
    lr_sweep.check(c)
  c = helpers.load_with("configs/sweep.py:domain",
                        {"pretrained_dir": "/nonexistent/runs"})
  with pytest.raises(config_lib.ConfigError,
                     match="'/nonexistent/runs/nac' does not exist"):
    lr_sweep.check(c)


def test_selection_takes_the_best_validation_accuracy(tmp_path, monkeypatch):
  """Hand case: accuracies per lr; the first maximum (smaller lr) wins."""
  c = helpers.load_with("configs/sweep.py:tiny",
                        {"sweep.grid": (1e-4, 1e-3, 1e-2, 1e-1)})
  scores = {1e-4: .2, 1e-3: .7, 1e-2: .7, 1e-1: .1}
  monkeypatch.setattr(lr_sweep, "_train", lambda member, d: (
      None, member.optimizer.base_learning_rate))
  monkeypatch.setattr(lr_sweep, "validation_accuracy",
                      lambda task, lr, n: scores[lr])
  record = lr_sweep.sweep(c, str(tmp_path), "vit")
  assert record["validation_accuracy"] == [.2, .7, .7, .1]
  assert record["chosen_learning_rate"] == 1e-3
  with open(tmp_path / "vit" / "sweep.json") as f:
    assert json.load(f) == record


def test_tiny_sweep_end_to_end(tmp_path):
  c = helpers.load_with("configs/sweep.py:tiny", {})
  out = lr_sweep.train_and_evaluate(c, str(tmp_path))
  with open(tmp_path / "vit" / "sweep.json") as f:
    record = json.load(f)
  assert record["grid"] == [1e-3, 1e-2]
  acc = record["validation_accuracy"]
  assert len(acc) == 2 and all(0. <= a <= 1. for a in acc)
  assert record["chosen_learning_rate"] == record["grid"][int(np.argmax(acc))]
  for i in range(2):
    assert os.path.isdir(tmp_path / "vit" / f"lr_{i}" / "checkpoints")
  rows = out["candidates"]["vit"]["accuracy"]
  assert set(rows) == {"test", "sketch", "cartoon", "painting"}
  assert rows["test"]["n"] == 2 and 0. <= rows["test"]["mean"] <= 1.
  # seed 0 is the sweep's seed: its run at the chosen lr is reused
  assert not os.path.exists(tmp_path / "vit" / "seed_0")
  assert os.path.isdir(tmp_path / "vit" / "seed_1" / "checkpoints")
  assert lr_sweep.load_results(str(tmp_path)) == json.loads(json.dumps(out))


def test_welch_interval_matches_scipy():
  from scipy import stats
  a, b = [.31, .28, .35], [.22, .30, .19, .25]
  out = lr_sweep.welch_interval(a, b)
  ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(.95)
  assert out["difference"] == pytest.approx(np.mean(a) - np.mean(b))
  assert (out["low"], out["high"]) == pytest.approx((ref.low, ref.high))
  flat = lr_sweep.welch_interval([.5, .5], [.25, .25])
  assert flat["difference"] == .25 and flat["half_width"] == 0.
  with pytest.raises(ValueError, match=">= 2 values"):
    lr_sweep.welch_interval([.5], [.2, .3])


def test_contrasts_name_candidates_and_get_differences():
  c = helpers.load_with("configs/sweep.py:shapes", {})
  assert tuple(c.contrasts) == ("nac-perceiver",)
  acc = {m: {"accuracy": {s: {"per_seed": v} for s in (
      "test", "scale_out", "hue_independent")}} for m, v in (
          ("nac", [.6, .7, .8]), ("perceiver", [.5, .5, .6]))}
  acc["nac"]["accuracy"]["scale_out"] = {"per_seed": [.2, .3, .4]}
  d = lr_sweep.differences(c, acc)["nac-perceiver"]
  assert d["test"]["difference"] == pytest.approx(.7 - .5333333333)
  # per seed the mean of the OOD splits: nac .4, .5, .6; perceiver as before
  assert d["ood_mean"] == pytest.approx(lr_sweep.welch_interval(
      [.4, .5, .6], [.5, .5, .6]))
  bad = helpers.load_with("configs/sweep.py:shapes",
                          {"contrasts": ("nac-vit",)})
  with pytest.raises(config_lib.ConfigError, match="'nac-vit'"):
    lr_sweep.check(bad)


def test_sweep_renderer_states_the_welch_difference(tmp_path):
  from crl.reports import readme
  c = helpers.load_with("configs/sweep.py:shapes", {})
  cands = {m: {"sweep": {"validation_accuracy": [.5, .6],
                         "chosen_learning_rate": 1e-2},
               "accuracy": {s: {"per_seed": v, "mean": float(np.mean(v)),
                                "half_width": 0.} for s in ("test", "a", "b")}}
           for m, v in (("nac", [.6, .7, .8]), ("perceiver", [.4, .5, .6]))}
  results = {"grid": [1e-3, 1e-2], "seeds": [0, 1, 2], "candidates": cands,
             "differences": lr_sweep.differences(c, cands)}
  (tmp_path / "sweep_shapes").mkdir()
  (tmp_path / "sweep_shapes" / "results.json").write_text(json.dumps(results))
  (tmp_path / "sweep_shapes" / "command.txt").write_text("python -m x\n")
  out = readme.sweep_shapes(tmp_path)
  # difference .2, Welch half width t(4) * sqrt(.01/3 + .01/3) = .2267
  assert ("nac − perceiver, 95% Welch interval over the seeds: ID test "
          "+.200 [−.027, +.427]") in out
  assert "the seeds resolve no difference on the OOD splits" in out
  assert "a +.025 advantage (NAC's claim) is inside the interval" in out
