"""How the OOD suite trains its members: groups, and shares of a job array.

A *unit* of work is a group of members that share a model, data, batch size
and optimizer structure (`crl.population.group_key`), trained in one
program by `crl.population`, or a member with no partner (or every member
when `config.population.group` says so), trained alone by `crl.train.run`.
Units are listed in the order of `config.members`, so every process lists
the same units.

Job arrays (launch/slurm_population.sh): with `config.population.num_tasks =
N > 0`, the process with `config.population.task_index = i` trains units
`i, i + N, i + 2N, ...` into the shared workdir and evaluates nothing; the
evaluation is the plain suite command once the array is done (it reuses
every finished member and trains what is missing). A unit is safe to start
twice: its directory lock (`crl.workdir.WorkdirLock`) refuses a second live
trainer, a dead one's lock is taken over, and a finished member (its final
checkpoint) is never trained again.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections

from crl import config_lib
from crl import population
from crl import workdir as workdir_lib
from crl.data import member_augment
from crl.trainers import fine_tune

# Keys of the suite config that differ between the tasks of one array.
_PER_TASK_KEYS = ("task_index", "num_tasks")


GROUP_MODES = ("auto", "on", "off")


def grouping(mode: Any) -> bool:
  """Whether members are grouped: `population.group` is "on", "off" or
  "auto" (grouped on GPUs and TPUs in a single process; not on the CPU,
  where stacked members were measured slower than one at a time, see
  configs/ood_suite.py, nor under jax.distributed with several processes,
  where a population cannot run: `population.check_single_process`)."""
  if isinstance(mode, bool):
    return mode
  if mode not in GROUP_MODES:
    raise config_lib.ConfigError(
        f"config.population.group={mode!r}; expected one of "
        f"{', '.join(GROUP_MODES)}.")
  if mode == "auto":
    return jax.default_backend() != "cpu" and jax.process_count() == 1
  return mode == "on"


def trace_shared(config: ml_collections.ConfigDict) -> bool:
  """`config.population.trace_shared` (default False): see
  `crl.population.train_population`."""
  return bool((config.get("population") or {}).get("trace_shared", False))


def units(config: ml_collections.ConfigDict,
          members: dict[str, ml_collections.ConfigDict]
          ) -> list[tuple[str, list[str]]]:
  """`[(unit name, member names)]`: groups first seen first."""
  settings = config.get("population") or {}
  if not grouping(settings.get("group", "auto")):
    return [(n, [n]) for n in members]
  groups: dict[str, list[str]] = {}
  for name, member in members.items():
    groups.setdefault(population.group_key(member), []).append(name)
  out = []
  for group in groups.values():
    if len(group) == 1:
      logging.info("Member %s trains alone: no other member shares its "
                   "model, data, batch size and optimizer structure.",
                   group[0])
      out.append((group[0], group))
    else:
      out.append(("group_" + "+".join(group) if len(group) <= 4 else
                  f"group_{group[0]}_and_{len(group) - 1}_more", group))
  return out


def check_names(names: list[str]) -> None:
  """Member names become directory names: they must not collide."""
  seen: dict[str, str] = {}
  for name in names:
    if not name or os.sep in name or name.startswith((".", "group_")):
      raise config_lib.ConfigError(
          f"Member name {name!r} cannot name a run directory; use letters, "
          "digits and '_' (not starting with 'group_').")
    key = name.lower()
    if key in seen:
      raise config_lib.ConfigError(
          f"Member names {seen[key]!r} and {name!r} collide (directories "
          "differ only in case); rename one.")
    seen[key] = name


def array_share(config: ml_collections.ConfigDict, all_units: list[Any]
                ) -> list[Any] | None:
  """This array task's units, or None outside a job array."""
  settings = config.get("population") or {}
  n = settings.get("num_tasks", 0) or 0
  if not n:
    return None
  i = settings.get("task_index", 0)
  if not isinstance(i, int) or not 0 <= i < n:
    raise config_lib.ConfigError(
        f"config.population.task_index={i!r} is out of range for "
        f"num_tasks={n}; expected 0 <= task_index < {n}.")
  return all_units[i::n]


def check_workdir_config(config: ml_collections.ConfigDict,
                         workdir: str) -> None:
  """Refuses a suite workdir whose config.json came from another config."""

  def identity(plain):
    out = dict(plain)
    if isinstance(out.get("population"), dict):
      out["population"] = {k: v for k, v in out["population"].items()
                           if k not in _PER_TASK_KEYS}
    return out

  workdir_lib.check_run_identity(
      workdir, config_lib.to_plain(config), identity,
      holds="a population of another config", advice="Use a new --workdir.")


def init_params(member: ml_collections.ConfigDict, task: Any) -> Any:
  """`member.init_from`'s backbone over the member's fresh head (the key the
  population draws fresh members from), or None (see `crl.pretrained`)."""
  if not member.get("init_from"):
    return None
  from crl import pretrained  # pylint: disable=g-import-not-at-top
  init = pretrained.load(member, task)
  if init.model_state:
    raise pretrained.PretrainedError(
        f"config.init_from={member.init_from!r} carries model state (batch "
        "statistics), which a population does not hold; use GroupNorm or "
        "config.population.group=False.")
  key = jax.random.fold_in(jax.random.PRNGKey(member.seed),
                           population.INIT_SALT)
  return init.apply(task.init_params(key), {})[0]


def train_unit(config: ml_collections.ConfigDict, workdir: str,
               unit: tuple[str, list[str]],
               members: dict[str, ml_collections.ConfigDict],
               tasks: dict[str, Any], finished: Callable[[str], bool],
               train_alone: Callable[[str], Any]) -> dict[str, Any]:
  """Trains one unit; `{name: {"params", "step", "seconds", "group"} or
  {"failed_at_step", "group"}}` for members trained together (members
  trained alone come back from `train_alone(name)`, not here).

  Raises:
    population's or train.run's errors; `WorkdirBusyError` when another
    live process trains this unit.
  """
  name, group = unit
  if len(group) == 1:
    train_alone(group[0])
    return {}
  if all(finished(n) for n in group):
    return {}
  settings = config.get("population") or {}
  dirs = {n: os.path.join(workdir, "models", n) for n in group}
  logging.info("Training %d members together (%s): %s.", len(group),
               members[group[0]].model.name, ", ".join(group))
  t0 = time.time()
  result = population.train_population(
      [population.Member(n, members[n], tasks[n], dirs[n],
                         init_params(members[n], tasks[n]),
                         fine_tune.train_indices(members[n], tasks[n]),
                         task_data={"augment": member_augment.augment_flags(
                             tuple(members[n].get("augment", ()) or ()))})
       for n in group],
      os.path.join(workdir, "population", name),
      mesh=population.make_mesh(settings.get("member_devices") or None),
      checkpoint_every=min(members[n].checkpoint.every_steps for n in group),
      layout=settings.get("layout") or None,
      trace_shared=trace_shared(config))
  if result.get("preempted"):
    return {"preempted": result["step"]}
  seconds = (time.time() - t0) / len(group)
  out: dict[str, Any] = {}
  for n, step in result["failed"].items():
    out[n] = {"failed_at_step": step, "group": name}
  for n, r in result["members"].items():
    out[n] = {"params": r["params"], "step": r["step"], "seconds": seconds,
              "group": name}
  return out


def train_share(config, workdir, share, members, tasks, finished,
                train_alone) -> dict[str, Any]:
  """An array task: trains its units, skipping those another live task
  holds; evaluates nothing."""
  done, busy = [], []
  for unit in share:
    try:
      out = train_unit(config, workdir, unit, members, tasks, finished,
                       train_alone)
    except workdir_lib.WorkdirBusyError as e:
      logging.warning("Unit %s is being trained by another task (%s); "
                      "skipped.", unit[0], str(e).splitlines()[0])
      busy.append(unit[0])
      continue
    if "preempted" in out:
      return {"preempted": True, "step": out["preempted"]}
    done.append(unit[0])
  return {"array_task": config.population.task_index, "units": done,
          "busy": busy}
