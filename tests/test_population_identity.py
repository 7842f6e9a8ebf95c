"""A population's directory and a study's finished member accept and refuse
the same config changes: both compare `crl.workdir.model_identity`."""

import os

import pytest

from crl import checkpointing
from crl import config_lib
from crl import population_io
from crl import workdir as workdir_lib
from crl.trainers import ood_suite
from tests import helpers

SUITE = os.path.join(helpers.ROOT, "configs/ood_suite.py:tiny")


def _verdicts(config, changed, tmp_path):
  """(population dir accepted, finished member accepted) for `changed`
  after `config` was trained there."""
  pop_dir, member_dir = tmp_path / "pop", tmp_path / "member"
  os.makedirs(member_dir / "checkpoints" / str(config.num_steps))
  os.makedirs(pop_dir)
  workdir_lib.write_json_atomic(str(pop_dir / "config.json"),
                                {"m": config_lib.to_plain(config)})
  workdir_lib.write_json_atomic(str(member_dir / "config.json"),
                                config_lib.to_plain(config))
  out = []
  for check in (lambda: population_io.check_population_dir(
      str(pop_dir), {"m": config_lib.to_plain(changed)}),
                lambda: ood_suite.finished_step(changed, str(member_dir))):
    try:
      check()
      out.append(True)
    except checkpointing.CheckpointError as e:
      assert "seed: 0 -> 1" in str(e), str(e)
      out.append(False)
  return tuple(out)


@pytest.mark.parametrize("key,value,accepted", [
    ("xla_fast_compile", None, True), ("log_every_steps", 7, True),
    ("seed", 1, False)])
def test_population_dir_and_finished_member_agree(key, value, accepted,
                                                  tmp_path):
  config = ood_suite.member_config(config_lib.load_config(SUITE), "vit_s0")
  changed = ood_suite.member_config(config_lib.load_config(SUITE), "vit_s0")
  assert config.seed == 0
  setattr(changed, key,
          (not config.get(key)) if value is None else value)
  assert _verdicts(config, changed, tmp_path) == (accepted, accepted)
