"""The transfer study: config checks, the default grid, a small run end to end."""

import csv
import json
import os

import pytest

from crl import config_lib
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
  assert {f["architecture"] for f in factors} == {"nac", "perceiver", "vit",
                                                  "resnet"}
  assert {f["pretrained"] for f in factors} == {"true", "false"}
  cfg, f = grid["vit_pt_head_all_none_s0"]
  assert cfg.trainable == "head" and cfg.init_from.endswith("pretrain/vit")
  assert cfg.optimizer.base_learning_rate == pytest.approx(
      10 * c.models.vit.optimizer.base_learning_rate)
  assert f["strategy"] == "head"


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
  c.grid.pretrained = (True,)
  c.data.eval_examples = 16
  c.eval_batch_size = 16
  c.adversarial.max_examples = 8
  c.plots = True
  workdir = str(tmp_path / "run")
  out = transfer.train_and_evaluate(c, workdir)
  names = {"vit_pt_full_all_none_s0", "vit_pt_head_all_none_s0",
           "resnet_pt_full_all_none_s0", "resnet_pt_head_all_none_s0"}
  assert set(out["members"]) == names
  for arch in ("vit", "resnet"):
    assert os.path.exists(os.path.join(workdir, "pretrain", arch,
                                       "config.json"))
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
  assert strat["vit_pt_head_all_none_s0"] == "head"
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  assert set(res["proxies"]["by_kind"]) == {"corruption", "domain"}
  domain = res["proxies"]["by_pair"]["domain/sketch"]
  assert set(domain) == set(transfer.QUANTITIES)
  assert "pearson_low" in domain["id_accuracy"]
  fit = res["factors"]["domain"]["ood"]
  assert "architecture=vit" in fit and "strategy=head" in fit
  assert "plots/transfer/proxies_by_kind.png" in res["plots"]
  assert os.path.exists(os.path.join(workdir, "plots", "transfer",
                                     "id_vs_ood_domain_by_architecture.png"))
  assert set(res["analysed_members"]) == names
  # Robust accuracy never exceeds clean accuracy.
  value = {(r["model"], r["metric"]): float(r["value"]) for r in rows
           if r["shift"] == "test"}
  for n in names:
    assert value[(n, "pgd_accuracy/eps=1/255")] <= value[(n, "accuracy")]
