"""The OOD suite end to end: the trainer that `crl.main
--config=configs/ood_suite.py:tiny` runs (`config.trainer`).

One run trains the three tiny members and writes the report; a second run
reuses every checkpoint and reproduces the same numbers; one trained member
is then evaluated alone (`--config.checkpoint`). Both runs are in the test's
process (a `crl.main` process would add its start-up and compile the
evaluation programs a second time); reuse across processes is tested with
the job array (tests/test_population_array.py).
"""

import contextlib
import csv
import io
import json
import os

import jax
import numpy as np
import pytest

from crl import checkpointing
from crl import config_lib
from crl import registry
from crl.trainers import ood_suite
from tests import helpers

SPEC = os.path.join(helpers.ROOT, "configs/ood_suite.py:tiny")
MEMBERS = {"vit_s0", "vit_hue", "perceiver_s0"}


def _checkpoints(workdir):
  out = {}
  for member in MEMBERS:
    d = os.path.join(workdir, "models", member, "checkpoints")
    out[member] = {s: os.stat(os.path.join(d, s)).st_mtime_ns
                   for s in os.listdir(d)}
  return out


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ood_suite") / "run")
  config = config_lib.load_config(SPEC)
  console = io.StringIO()
  with contextlib.redirect_stdout(console):  # what crl.main runs
    registry.TRAINERS.get(config.trainer)(config, workdir)
  return workdir, console.getvalue()


def _csv(workdir):
  with open(os.path.join(workdir, "results.csv")) as f:
    return list(csv.reader(f))


def test_results_files_and_plots(suite):
  workdir, first = suite
  rows = _csv(workdir)
  assert rows[0] == ["model", "shift", "kind", "metric", "value"]
  body = rows[1:]
  assert {r[0] for r in body} == MEMBERS
  assert {r[2] for r in body} == {"id", "interventional", "corruption",
                                  "semantic"}
  metrics = {r[3] for r in body}
  assert {"accuracy", "top5_accuracy", "nll", "brier", "ece", "auroc_msp",
          "aupr_in_energy", "aupr_out_entropy", "fpr95_max_logit",
          "effective_robustness", "mce", "ce"} <= metrics
  with open(os.path.join(workdir, "results.json")) as f:
    report = json.load(f)
  assert len(report["rows"]) == len(body)
  ece = next(r for r in report["rows"] if r["shift"] == "corruption/contrast/4"
             and r["metric"] == "ece")
  assert ece["protocol"]["ece_bins"] == 15
  assert ece["protocol"]["severity"] == 4
  assert ece["protocol"]["examples"] == 64
  population = report["population"]
  entry = population["shifts"]["hue_independent"]
  assert set(entry["accuracy_correlation"]) == {
      "pearson", "kendall", "pearson_probit", "kendall_probit"}
  assert set(entry["effective_robustness"]) == MEMBERS
  assert set(entry["ece_correlation"]) == {"pearson", "kendall"}
  assert population["baseline"] == "vit_s0"
  assert population["corruption_errors"]["corruption"]["models"]["vit_s0"][
      "mce"] == pytest.approx(1.0)
  assert set(population["id_agreement"]["vit_s0"]) == MEMBERS
  for path in [["id_vs_ood_interventional.png"], ["id_vs_ood_corruption.png"],
               ["accuracy_vs_severity_corruption.png"]] + [
                   ["reliability", f"{m}.png"] for m in MEMBERS]:
    with open(os.path.join(workdir, "plots", *path), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
  assert "OOD suite: 3 model(s), 13 shifts" in first
  for member in MEMBERS:
    assert os.path.exists(os.path.join(workdir, "models", member,
                                       "config.json"))


def test_a_second_run_reuses_every_checkpoint(suite, capsys):
  workdir, _ = suite
  before, numbers = _checkpoints(workdir), _csv(workdir)
  # In this process (not the one that trained): only restores and evaluates.
  out = ood_suite.train_and_evaluate(config_lib.load_config(SPEC), workdir)
  assert all(m["reused"] and m["step"] == 10 for m in out["members"].values())
  assert _checkpoints(workdir) == before
  assert _csv(workdir) == numbers  # the same numbers again
  assert "Every model came from an existing checkpoint" in (
      capsys.readouterr().out)


def test_one_checkpoint_and_user_errors(suite, tmp_path):
  workdir, _ = suite
  config = config_lib.load_config(SPEC)
  config.unlock()
  config.checkpoint = os.path.join(workdir, "models", "vit_s0")
  out = ood_suite.train_and_evaluate(config, str(tmp_path / "one"))
  assert out["mode"] == "checkpoint"
  assert "need a population" in out["population"]["note"]
  assert {r["model"] for r in out["rows"]} == {"vit_s0"}
  with open(os.path.join(workdir, "results.json")) as f:
    population = json.load(f)["rows"]
  same = {(r["shift"], r["metric"]): r["value"] for r in population
          if r["model"] == "vit_s0"}
  for r in out["rows"]:
    assert r["value"] == pytest.approx(same[(r["shift"], r["metric"])])
  assert os.path.exists(tmp_path / "one" / "plots" / "reliability" /
                        "vit_s0.png")

  config.checkpoint = str(tmp_path)
  with pytest.raises(checkpointing.CheckpointError, match="no config.json"):
    ood_suite.train_and_evaluate(config, str(tmp_path / "bad"))
  config.checkpoint = None
  config.members.vit_s0.num_steps = 11
  with pytest.raises(checkpointing.CheckpointError, match="num_steps"):
    ood_suite.train_and_evaluate(config, workdir)
  config.members.vit_s0.num_steps = 10
  for key, value, message in (("baseline", "nac_s0", "not a member"),
                              ("shifts", ("hue_indep",), "Unknown shift"),
                              ("shifts", ("cifar10_1",), "TFDS 'cifar10'")):
    bad = config_lib.load_config(SPEC)
    bad.unlock()
    bad[key] = value
    with pytest.raises(config_lib.ConfigError, match=message):
      ood_suite.train_and_evaluate(bad, str(tmp_path / "err"))


def test_the_default_population_builds_without_compiling():
  config = config_lib.load_config(os.path.join(helpers.ROOT,
                                               "configs/ood_suite.py"))
  names = ood_suite._check(config)  # pylint: disable=protected-access
  assert len(names) >= 12
  families = set()
  for name in names:
    member = ood_suite.member_config(config, name)
    assert member.data.eval_examples == 500 and member.eval_batch_size == 500
    families.add(ood_suite.AugmentedClassificationTask(member).model
                 .__class__.__name__)
  assert families == {"NAC", "PerceiverIO", "ViT", "NeuralInterpreter"}


def test_augmentations():
  images = jax.random.uniform(jax.random.PRNGKey(0), (16, 32, 32, 3))
  key = jax.random.PRNGKey(1)
  for ops in (("flip",), ("crop",), ("hue",), ("flip", "crop", "hue")):
    out = np.asarray(ood_suite.augment(images, key, ops))
    assert out.shape == images.shape and 0. <= out.min() and out.max() <= 1.
    np.testing.assert_array_equal(out, ood_suite.augment(images, key, ops))
    assert not np.allclose(out, images), ops
  flipped = np.asarray(ood_suite.augment(images, key, ("flip",)))
  same = np.all(flipped == np.asarray(images), axis=(1, 2, 3))
  mirrored = np.all(flipped == np.asarray(images)[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | mirrored) and same.any() and mirrored.any()
  grey = jax.numpy.full((4, 32, 32, 3), 0.5)  # no chroma: hue has no effect
  np.testing.assert_allclose(ood_suite.augment(grey, key, ("hue",)), grey,
                             atol=1e-5)
  with pytest.raises(config_lib.ConfigError, match="Unknown augmentation"):
    ood_suite.AugmentedClassificationTask(_with_augment(("rotate",)))


def _with_augment(ops):
  config = helpers.tiny_config()
  config.unlock()
  config.augment = ops
  return config
