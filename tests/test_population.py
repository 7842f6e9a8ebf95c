"""The population engine (crl.population): equivalence with single runs,
divergence isolation, resume, the (member, data) mesh.

Equivalence is bitwise on CPU: gradients are vmapped (bitwise equal to the
single run's), the optimizer update is applied per member (the default on
CPU, `population_step.default_layout`), and hyperparameters every member
shares are constants as in the single run. The mesh test uses the
accelerators' `vmap` layout (members batched, one compiled program whatever
the member count, padding included): across meshes the reductions are split
differently, so those agree to `ATOL`.
"""

import os

import jax
import numpy as np
import pytest

from crl import config_lib
from crl import population
from crl import train
from crl.trainers import ood_suite
from tests import helpers

ATOL = 1e-6
SUITE = os.path.join(helpers.ROOT, "configs/ood_suite.py:tiny")


def _member_configs(spec, specs):
  """Member configs built like the suite's (tiny data, fast compile)."""
  suite = config_lib.load_config(SUITE)
  suite.unlock()
  out = {}
  for name, kw in specs.items():
    suite.members[name] = ood_suite_member(spec, **kw)
  for name in specs:
    c = ood_suite.member_config(suite, name)
    c.tensorboard = False
    out[name] = c
  return out


def ood_suite_member(spec, lr=None, trainable=None, **kw):
  c = config_lib.load_config_module(
      os.path.join(helpers.ROOT, "configs/ood_suite.py")).member(spec, **kw)
  if lr is not None:
    c.optimizer.base_learning_rate = lr
  if trainable is not None:
    c.trainable = trainable
  return c


def _members(configs, root):
  return [population.Member(
      n, c, ood_suite.AugmentedClassificationTask(c),
      os.path.join(root, "models", n),
      task_data={"augment": ood_suite.augment_flags(tuple(c.augment))})
          for n, c in configs.items()]


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("spec,accum", [("vit:tiny", 2), ("nac:tiny", 1)])
def test_member_matches_single_run_and_resumes(spec, accum, tmp_path):
  # ViT with gradient accumulation (2 micro-batches) in both runs.
  configs = _member_configs(spec, {
      "a": dict(seed=0, num_steps=4),
      "b": dict(seed=1, num_steps=3, lr=2e-3, augment=("hue", "flip"))})
  for c in configs.values():
    c.grad_accum_steps = accum
  members = _members(configs, str(tmp_path))
  if spec == "vit:tiny":  # resume once (the second call's step: from the cache)
    stopped = population.train_population(members, str(tmp_path / "pop"),
                                          stop_at=2)
    assert stopped == {"step": 2, "preempted": True}
  out = population.train_population(members, str(tmp_path / "pop"))
  assert out["failed"] == {} and out["step"] == 4
  assert _max_diff(out["members"]["a"]["params"],
                   out["members"]["b"]["params"]) > 1e-3
  c = configs["b"]  # other seed, learning rate, length, augmentations
  alone = train.run(c, str(tmp_path / "alone"),
                    ood_suite.AugmentedClassificationTask(c))
  got = out["members"]["b"]
  assert got["step"] == alone["step"] == c.num_steps
  assert _max_diff(got["params"], alone["params"]) == 0  # bitwise
  assert got["results"]["test"] == alone["results"]["test"]
  # The member's directory is a normal run directory.
  params, step = train.restore_trained(c, members[1].workdir,
                                       members[1].task)
  assert step == c.num_steps
  assert _max_diff(params, got["params"]) == 0


def test_diverging_member_is_frozen_and_others_continue(tmp_path):
  configs = _member_configs("vit:tiny", {
      "ok": dict(seed=0, num_steps=3),
      "bad": dict(seed=1, num_steps=3, lr=1e38),
      "head": dict(seed=2, num_steps=3, lr=1e-2, trainable="head")})
  members = _members(configs, str(tmp_path))
  pretrained = members[2].task.init_params(jax.random.PRNGKey(7))
  members[2].init_params = pretrained
  members[0].train_indices = np.arange(8)  # few-shot: 8 examples
  # The vmap layout: one compile for the three members; freezing and the
  # trainable mask are the same per-member functions in every layout, and
  # batched members are where a NaN could leak into the others.
  out = population.train_population(members, str(tmp_path / "pop"),
                                    final_eval=False, layout="vmap")
  assert set(out["failed"]) == {"bad"}
  assert 1 <= out["failed"]["bad"] <= 3
  assert set(out["members"]) == {"ok", "head"}
  assert out["members"]["ok"]["step"] == 3
  assert all(np.all(np.isfinite(x)) for x in
             jax.tree.leaves(out["members"]["ok"]["params"]))
  assert os.path.exists(os.path.join(members[1].workdir, "failed.json"))
  assert not os.path.exists(os.path.join(members[1].workdir, "checkpoints"))
  # Head-only from given initial parameters (as from a pretrained run):
  # everything but the head keeps exactly those values.
  got = out["members"]["head"]["params"]
  for top in got:
    moved = _max_diff(got[top], pretrained[top])
    assert (moved > 0) == (top in population.HEAD_PARAMS), (top, moved)


def test_subset_batches_cycle_the_given_examples():
  (config,) = _member_configs("vit:tiny", {"a": dict(seed=0,
                                                     num_steps=2)}).values()
  task = ood_suite.AugmentedClassificationTask(config)
  full = next(task.train_batches(0))            # examples 0 .. B-1
  subset = [5, 2, 9]
  batch = next(population.subset_batches(task, subset, 0))
  b = config.batch_size
  want = [subset[i % 3] for i in range(b)]
  np.testing.assert_array_equal(batch["label"], np.asarray(full["label"])[want])
  np.testing.assert_allclose(batch["image"], np.asarray(full["image"])[want],
                             atol=1e-6)
  second = next(population.subset_batches(task, subset, 1))
  want = [subset[(b + i) % 3] for i in range(b)]
  np.testing.assert_array_equal(second["label"],
                                np.asarray(full["label"])[want])


def test_bad_populations_fail_with_one_line(tmp_path):
  configs = _member_configs("vit:tiny", {"a": dict(seed=0, num_steps=2)})
  members = _members(configs, str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match="more than once"):
    population.train_population(members * 2, str(tmp_path / "pop"))
  other = _member_configs("nac:tiny", {"n": dict(seed=0, num_steps=2)})
  with pytest.raises(config_lib.ConfigError, match="differ in more than"):
    population.train_population(members + _members(other, str(tmp_path)),
                                str(tmp_path / "pop"))
  no_flags = population.Member("x", configs["a"].copy_and_resolve_references(),
                               members[0].task, str(tmp_path / "x"))
  no_flags.config.augment = ("hue",)
  with pytest.raises(config_lib.ConfigError, match="task_data"):
    population.train_population([no_flags], str(tmp_path / "pop"))


def test_several_processes_are_refused_before_anything_is_written(
    tmp_path, monkeypatch):
  configs = _member_configs("vit:tiny", {"a": dict(seed=0, num_steps=2)})
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(config_lib.ConfigError, match="task_index=i"):
    population.train_population(_members(configs, str(tmp_path)),
                                str(tmp_path / "pop"))
  assert not os.path.exists(tmp_path / "pop")


_MESH_SCRIPT = r"""
import os, sys, tempfile
import jax, numpy as np
sys.path.insert(0, os.getcwd())
from tests import test_population as t
from crl import population
configs = t._member_configs("vit:tiny", {
    f"m{i}": dict(seed=i, num_steps=2, lr=1e-2 * (i + 1)) for i in range(2)})
outs = {}
for shape in [(1, 1), (2, 2), (4, 1)]:
  root = tempfile.mkdtemp()
  devices = np.asarray(jax.devices()[:shape[0] * shape[1]])
  mesh = jax.sharding.Mesh(devices.reshape(shape), ("member", "data"))
  out = population.train_population(t._members(configs, root),
                                    os.path.join(root, "pop"), mesh=mesh,
                                    final_eval=False, layout="vmap")
  outs[shape] = {n: v["params"] for n, v in out["members"].items()}
for shape in [(2, 2), (4, 1)]:
  for n in configs:
    d = t._max_diff(outs[shape][n], outs[(1, 1)][n])
    assert d < t.ATOL, (shape, n, d)
print("MESH OK")
"""


def test_mesh_2x2_and_4x1_match_one_device():
  # Two members: on 4 x 1 the population is padded with inactive copies.
  proc = helpers.run_python(_MESH_SCRIPT, devices=4, timeout=600)
  assert "MESH OK" in proc.stdout, proc.stderr[-3000:]
