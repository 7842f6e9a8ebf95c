"""The transfer study: config checks, the default grid, a small run end to end."""

import csv
import json
import os

import numpy as np
import pytest

from crl import config_lib
from crl.evaluators import transfer_analysis
from crl.trainers import transfer
from tests import helpers

SPEC = os.path.join(helpers.ROOT, "configs/transfer.py:tiny")


def _config(spec=SPEC):
  c = config_lib.load_config(spec)
  c.unlock()
  return c


def test_the_default_grid_is_the_study():
  c = _config(os.path.join(helpers.ROOT, "configs/transfer.py"))
  transfer.check(c)
  grid = transfer.members(c, "/nonexistent")
  assert len(grid) >= 48
  factors = [f for _, f in grid.values()]
  levels = {k: {f[k] for f in factors} for k in transfer.FACTORS}
  assert levels["target"] == {"photo", "sketch", "cartoon", "painting"}
  assert levels["architecture"] == {"nac", "perceiver", "vit", "resnet"}
  assert levels["pretrained"] == {"true", "false"}
  assert levels["strategy"] == {"full", "head", "lp_ft"}
  assert levels["regime"] == {"all", "fewshot100", "fewshot10"}
  assert levels["augmentation"] == {"none", "standard", "randaugment",
                                    "augmix"}
  assert levels["learning_rate"] == {"1"} and levels["steps"] == {"200"}
  for target in levels["target"]:  # every target: 3 other domains as OOD
    assert sum(f["target"] == target for f in factors) == 12
  pairs = len(levels["target"]) * (len(levels["target"]) - 1)
  corruption_types = [s for s in c.shifts if s.startswith("corruption/")]
  assert pairs == 12 and pairs + 4 * len(corruption_types) >= 24
  lr = c.models.vit.optimizer.base_learning_rate
  for name, (cfg, f) in grid.items():
    assert name.startswith(f"{f['target']}_{f['architecture']}_")
    assert cfg.few_shot == transfer.REGIMES[f["regime"]]
    if f["architecture"] != "vit":
      continue
    if f["strategy"] == "head":
      assert cfg.trainable == "head" and cfg.lp_steps == 0
      assert cfg.optimizer.base_learning_rate == pytest.approx(3 * lr)
    if f["strategy"] == "lp_ft":
      assert cfg.trainable == "all" and cfg.lp_steps == 100
      assert cfg.num_steps == 100
      assert cfg.lp_learning_rate == pytest.approx(3 * lr)
      assert cfg.optimizer.base_learning_rate == pytest.approx(0.3 * lr)
    if f["pretrained"] == "true":
      assert cfg.init_from.endswith("pretrain/vit")


def test_a_cells_members_do_not_depend_on_the_other_cells():
  c = _config(os.path.join(helpers.ROOT, "configs/transfer.py"))
  full = transfer.members(c, "/w")
  c.grid.architectures = ("resnet", "vit")
  c.grid.domains = ("sketch",)
  part = transfer.members(c, "/w")
  assert len(part) == 2 * c.grid.per_cell
  assert set(part) <= set(full)


def test_learning_rate_and_steps_are_member_choices():
  c = _config(os.path.join(helpers.ROOT, "configs/transfer.py"))
  c.grid.update(domains=("photo",), architectures=("vit",),
                pretrained=(True,), strategies=("full",), regimes=("all",),
                augmentations=("none",), per_cell=0, lr_scales=(0.5, 2.0),
                steps=(100, 400))
  transfer.check(c)
  grid = transfer.members(c, "/w")
  lr = c.models.vit.optimizer.base_learning_rate
  assert len(grid) == 4
  for name, (cfg, f) in grid.items():
    scale, steps = float(f["learning_rate"]), int(f["steps"])
    assert name == f"photo_vit_pt_full_all_none_s0_lr{scale:g}_{steps}steps"
    assert cfg.optimizer.base_learning_rate == pytest.approx(scale * lr)
    assert cfg.num_steps == steps
  # One level: not in the names, which stay those of the default grid.
  c.grid.update(lr_scales=(1.0,), steps=(200,))
  assert list(transfer.members(c, "/w")) == ["photo_vit_pt_full_all_none_s0"]


@pytest.mark.parametrize("key,value", [("lr_scales", (0.5, -1.0)),
                                       ("lr_scales", (2.0, 2.0)),
                                       ("steps", (100, 1)),
                                       ("steps", (100, 2.5))])
def test_bad_learning_rates_and_steps_are_one_line(key, value):
  c = _config()
  c.grid[key] = value
  with pytest.raises(config_lib.ConfigError, match=f"config.grid.{key}="):
    transfer.check(c)


def test_analysis_of_several_targets():
  """Pairs are (target, shift); a pair's population is its target's."""
  c = _config()
  factors = {f"{t}_{i}": {"target": t, "architecture": "vit",
                          "pretrained": "true", "strategy": "full",
                          "regime": "all", "augmentation": "none",
                          "seed": str(i)}
             for t in ("photo", "sketch") for i in range(4)}
  rng = np.random.default_rng(0)
  rows = []
  for n, f in factors.items():
    other = "sketch" if f["target"] == "photo" else "photo"
    for shift, kind, metric in (
        ("test", "id", "accuracy"), ("test", "id", "nll"),
        ("test", "id", "ece"), ("test", "id", "brier"),
        ("test", "id", "pgd_accuracy/eps=1/255"),
        (f"domain/{other}", "domain", "accuracy"),
        ("corruption/contrast/5", "corruption", "accuracy"),
        ("mean_corruption", "corruption", "accuracy")):
      rows.append({"model": n, "shift": shift, "kind": kind,
                   "metric": metric, "value": float(rng.uniform(.2, .9))})
  out = transfer.analyse(c, rows, factors, "pgd_accuracy/eps=1/255")
  assert set(out["pairs"]) == {"photo->domain/sketch",
                               "sketch->domain/photo",
                               "photo->corruption/contrast/5",
                               "sketch->corruption/contrast/5"}
  value = {(r["model"], r["shift"], r["metric"]): r["value"] for r in rows}
  photo = [n for n in factors if n.startswith("photo")]
  want = transfer_analysis.spearman(
      [value[(n, "test", "accuracy")] for n in photo],
      [value[(n, "domain/sketch", "accuracy")] for n in photo])
  got = out["proxies"]["by_pair"]["photo->domain/sketch"]["id_accuracy"]
  assert got["spearman"] == pytest.approx(want)
  assert out["best_proxies"]["domain"]["pairs"] == 2
  by_kind = transfer.ood_per_kind(
      rows, factors, list(factors),
      {p: (v["target"], v["shift"], v["kind"])
       for p, v in out["pairs"].items()})
  assert by_kind["domain"][0] == value[("photo_0", "domain/sketch",
                                        "accuracy")]
  assert "target=sketch" in out["factors"]["domain"]["ood"]
  # The mean corruption accuracy contains a corruption pair's own accuracy:
  # a proxy for domain shifts, not for corruptions.
  assert "mean_corruption_accuracy" in out["proxies"]["by_kind"]["domain"]
  assert "mean_corruption_accuracy" not in out["proxies"]["by_kind"][
      "corruption"]
  assert "mean_corruption_accuracy" not in out["proxies"]["by_pair"][
      "photo->corruption/contrast/5"]
  assert out["excluded_proxies"]["corruption"] == ["mean_corruption_accuracy"]


@pytest.mark.parametrize("key,value,message", [
    ("strategies", ("full", "lp_ft_typo"), "unknown strategy"),
    ("regimes", ("few_shot_1000",), "unknown regime"),
    ("architectures", ("vit", "mlp"), "unknown architecture"),
    ("augmentations", ("autoaugment",), "unknown augmentation"),
])
def test_bad_grid_names_are_one_line(key, value, message, tmp_path):
  c = _config()
  c.grid[key] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    transfer.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_unknown_domain_exits_2_writing_nothing(tmp_path):
  workdir = tmp_path / "run"
  proc = helpers.run_main("--config=configs/transfer.py:tiny",
                          f"--workdir={workdir}",
                          "--config.data.domain=watercolour", timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("crl: error")]
  assert len(lines) == 1 and "watercolour" in lines[0], proc.stderr[-2000:]
  assert not os.path.exists(workdir)


@pytest.mark.slow
def test_a_small_study_end_to_end(tmp_path):
  c = _config()
  c.grid.domains = ("photo",)
  c.grid.architectures = ("vit",)  # one pretraining, one step program
  c.grid.pretrained = (True,)
  c.grid.strategies = ("lp_ft",)  # its probe phase trains the head only
  c.grid.regimes = ("fewshot10", "fewshot100")
  c.grid.augmentations = ("none",)
  c.grid.per_cell = 0
  c.shifts = ("domain/sketch", "corruption/contrast/5")
  c.data.eval_examples = 16
  c.eval_batch_size = 16
  c.adversarial.max_examples = 8
  c.plots = True
  workdir = str(tmp_path / "run")
  out = transfer.train_and_evaluate(c, workdir)
  names = {f"photo_vit_pt_lp_ft_{r}_none_s0"
           for r in ("fewshot10", "fewshot100")}
  assert set(out["members"]) == names
  assert os.path.exists(os.path.join(workdir, "pretrain", "vit",
                                     "config.json"))
  lp_phase = os.path.join(transfer.target_dir(workdir, "photo"), "models",
                          "photo_vit_pt_lp_ft_fewshot10_none_s0", "lp_phase")
  with open(os.path.join(lp_phase, "config.json")) as f:
    probe = json.load(f)
  assert probe["trainable"] == "head" and probe["num_steps"] == 2
  with open(os.path.join(workdir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["model", "shift", "kind", "metric", "value",
                           *transfer.FACTORS]
  metrics = {(r["model"], r["shift"], r["metric"]) for r in rows}
  for n in names:
    for shift, metric in (("test", "accuracy"), ("test", "ece"),
                          ("test", "pgd_accuracy/eps=1/255"),
                          ("mean_corruption", "accuracy"),
                          ("domain/sketch", "accuracy")):
      assert (n, shift, metric) in metrics
  strat = {r["model"]: r["strategy"] for r in rows if r["model"] in names}
  assert set(strat.values()) == {"lp_ft"}
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  assert set(res["proxies"]["by_kind"]) == {"corruption", "domain"}
  domain = res["proxies"]["by_pair"]["photo->domain/sketch"]
  assert set(domain) == set(transfer.QUANTITIES)
  assert "pearson_low" in domain["id_accuracy"]
  fit = res["factors"]["domain"]["ood"]
  # Two members cannot fit the factor model; the analysis says so in place
  # (the fit itself: tests/evaluators/test_transfer_analysis.py).
  assert "got 2 members" in fit["error"]
  assert "plots/transfer/proxies_by_kind.png" in res["plots"]
  assert os.path.exists(os.path.join(workdir, "plots", "transfer",
                                     "id_vs_ood_domain_by_regime.png"))
  assert set(res["analysed_members"]) == names
  # Robust accuracy never exceeds clean accuracy.
  value = {(r["model"], r["metric"]): float(r["value"]) for r in rows
           if r["shift"] == "test"}
  for n in names:
    assert value[(n, "pgd_accuracy/eps=1/255")] <= value[(n, "accuracy")]
