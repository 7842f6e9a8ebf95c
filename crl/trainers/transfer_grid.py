"""The transfer study's members: config checks and the grid of choices.

A member is one fine-tuning of one architecture on one target domain, with
one choice per factor (`FACTORS`): pretrained or from scratch, a strategy
(`STRATEGIES`), a data regime (`REGIMES`), an augmentation (a name of
`config.augmentations`), a seed, a learning-rate multiplier
(`config.grid.lr_scales`, on top of the architecture's rate and the
strategy's `config.fine_tune.lr_scale`) and a number of fine-tuning steps
(`config.grid.steps`; empty: `config.fine_tune.num_steps`). A factor the
grid does not vary (one level) is not part of the member's name. `members`
lists them: for each target domain (`config.grid.domains`) and architecture
(a *cell*), either every combination of the other choices
(`config.grid.per_cell = 0`, the full factorial) or `per_cell` of them,
drawn from a permutation of the
combinations seeded by `config.grid.design_seed` and the architecture's
name, and taken in turn by the domains in their canonical order
(`multi_domain.DOMAINS`, else the sorted names), so that the targets
together cover `len(domains) * per_cell` different combinations of every
architecture. A cell's members depend only on its architecture and domain
names, not on which others the grid lists, so a run restricted to some
architectures or domains trains members that the full grid reuses.
"""

from __future__ import annotations

import itertools
import os
import zlib

import ml_collections
import numpy as np

from crl import config_lib
from crl.data import multi_domain

# strategy -> (config.trainable, fraction of the steps in the linear-probe
# phase of LP-FT, see crl.trainers.fine_tune)
STRATEGIES = {"full": ("all", 0.0), "head": ("head", 0.0),
              "lp_ft": ("all", 0.5)}
# regime -> examples per class (0: the target's whole training stream)
REGIMES = {"all": 0, "fewshot100": 100, "fewshot10": 10}
FACTORS = ("target", "architecture", "pretrained", "strategy", "regime",
           "augmentation", "seed", "learning_rate", "steps")


def _error(message: str) -> config_lib.ConfigError:
  return config_lib.ConfigError(message)


def domains(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The target domains: `config.grid.domains`, else `config.data.domain`."""
  return tuple(config.grid.get("domains") or (config.data.domain,))


def check(config: ml_collections.ConfigDict, known_augmentations) -> None:
  """Every config error of the study's grid, one line each (before any
  write); `known_augmentations`: the member augmentation names."""
  g = config.grid
  archs = list(config.models)
  for name, known, what in (
      (g.architectures, archs, "architecture"),
      (g.strategies, list(STRATEGIES), "strategy"),
      (g.regimes, list(REGIMES), "regime"),
      (g.augmentations, list(config.augmentations), "augmentation")):
    bad = [n for n in name if n not in known]
    if bad or not name:
      raise _error(f"config.grid: unknown {what}(s) {bad or '(none given)'}"
                   f"; known: {', '.join(known)}.")
  for a in config.augmentations.values():
    bad = [op for op in a if op not in known_augmentations]
    if bad:
      raise _error(f"config.augmentations: unknown operation(s) {bad}; "
                   f"known: {', '.join(known_augmentations)}.")
  if config.data.name == "multi_domain":
    bad = [d for d in dict.fromkeys(domains(config) + (config.data.domain,))
           if d not in multi_domain.DOMAINS]
    if bad:
      raise _error(f"config.grid.domains / config.data.domain: {bad} "
                   f"{'is not a domain' if len(bad) == 1 else 'are not domains'}"
                   f" of multi_domain; known: {', '.join(multi_domain.DOMAINS)}.")
  if len(set(domains(config))) != len(domains(config)):
    raise _error(f"config.grid.domains={domains(config)} repeats a domain.")
  if any(g.pretrained):
    files = config.get("init_files") or {}
    missing = [a for a in g.architectures
               if a not in config.pretrain and not files.get(a)]
    if missing:
      raise _error(f"config.pretrain has no config for architecture(s) "
                   f"{missing}, needed by pretrained members.")
  scale = config.fine_tune.lr_scale
  for s in list(g.strategies) + (["head"] if "lp_ft" in g.strategies else []):
    if s not in scale:
      raise _error(f"config.fine_tune.lr_scale has no entry for strategy "
                   f"{s!r}.")
  bad = [f for f in (config.analysis.get("factors") or ())
         if f not in FACTORS]
  if bad:
    raise _error(f"config.analysis.factors: unknown factor(s) {bad}; known: "
                 f"{', '.join(FACTORS)}.")
  for name, values, ok in (
      ("lr_scales", g.get("lr_scales") or (), lambda x: x > 0),
      ("steps", g.get("steps") or (), lambda x: int(x) == x and x >= 2)):
    try:
      good = all(ok(x) for x in values) and len(set(values)) == len(values)
    except TypeError:
      good = False
    if not good:
      raise _error(f"config.grid.{name}={tuple(values)!r}; expected distinct "
                   + ("positive multipliers." if name == "lr_scales" else
                      "integers >= 2 (an LP-FT member spends half in the "
                      "probe)."))
  per_cell = g.get("per_cell", 0)
  if not isinstance(per_cell, int) or per_cell < 0:
    raise _error(f"config.grid.per_cell={per_cell!r}; expected an integer "
                 ">= 0 (0: every combination).")


def lr_scales(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """The learning-rate multipliers of the grid (default `(1.0,)`)."""
  return tuple(float(x) for x in config.grid.get("lr_scales") or (1.0,))


def steps(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The fine-tuning step counts of the grid (default: the one of
  `config.fine_tune.num_steps`)."""
  return tuple(int(x) for x in config.grid.get("steps") or
               (config.fine_tune.num_steps,))


def _combinations(config: ml_collections.ConfigDict) -> list[tuple]:
  g = config.grid
  return list(itertools.product(g.pretrained, g.strategies, g.regimes,
                                g.augmentations, g.seeds, lr_scales(config),
                                steps(config)))


def _chosen(config: ml_collections.ConfigDict, arch: str,
            domain_index: int) -> list[tuple]:
  g = config.grid
  combos = _combinations(config)
  k = int(g.get("per_cell", 0) or 0)
  if not k:
    return combos
  order = np.random.default_rng(
      [int(g.get("design_seed", 0)), zlib.crc32(arch.encode())]
  ).permutation(len(combos))
  return [combos[order[(domain_index * k + r) % len(combos)]]
          for r in range(k)]


def _domain_order(config: ml_collections.ConfigDict) -> list[str]:
  """The canonical order of the target domains (see the module docstring)."""
  if config.data.name == "multi_domain":
    return list(multi_domain.DOMAINS)
  return sorted(domains(config))


def init_from(config: ml_collections.ConfigDict, workdir: str,
              arch: str) -> str:
  """`config.init_files.<arch>` (a weight file or run dir) if set, else the
  study's own pretraining run `WORKDIR/pretrain/<arch>`."""
  given = (config.get("init_files") or {}).get(arch)
  return str(given) if given else os.path.abspath(
      os.path.join(workdir, "pretrain", arch))


def member(config: ml_collections.ConfigDict, workdir: str, arch: str,
           pre: bool, strategy: str, regime: str, aug: str, seed: int,
           lr_scale: float = 1.0, num_steps: int | None = None
           ) -> ml_collections.ConfigDict:
  """One member's config (a classification config without `data`)."""
  c = config.models[arch].copy_and_resolve_references()
  c.seed = int(seed)
  c.num_steps = int(num_steps or config.fine_tune.num_steps)
  lr = c.optimizer.base_learning_rate * float(lr_scale)
  c.optimizer.base_learning_rate = lr * float(
      config.fine_tune.lr_scale[strategy])
  trainable, lp_fraction = STRATEGIES[strategy]
  lp_steps = int(round(lp_fraction * c.num_steps))
  with c.unlocked():
    c.trainable = trainable
    c.few_shot = REGIMES[regime]
    c.lp_steps = lp_steps
    c.lp_learning_rate = (lr * float(config.fine_tune.lr_scale["head"])
                          if lp_steps else 0.0)
  c.num_steps -= lp_steps  # LP-FT: the fine-tuning phase after the probe
  c.optimizer.warmup_steps = max(c.num_steps // 10, 1)
  c.log_every_steps = min(c.log_every_steps, c.num_steps)
  c.checkpoint.every_steps = c.num_steps
  c.augment = tuple(config.augmentations[aug])
  c.init_from = init_from(config, workdir, arch) if pre else ""
  return c


def members(config: ml_collections.ConfigDict, workdir: str
            ) -> dict[str, tuple[ml_collections.ConfigDict, dict[str, str]]]:
  """`{name: (member config, factors)}`, by target domain then
  architecture (see the module docstring)."""
  g = config.grid
  order = _domain_order(config)
  vary_lr, vary_steps = len(lr_scales(config)) > 1, len(steps(config)) > 1
  out = {}
  for target in domains(config):
    for arch in g.architectures:
      for pre, strategy, regime, aug, seed, lr, n in _chosen(
          config, arch, order.index(target)):
        name = (f"{target}_{arch}_{'pt' if pre else 'scratch'}_{strategy}_"
                f"{regime}_{aug}_s{seed}" + (f"_lr{lr:g}" if vary_lr else "")
                + (f"_{n}steps" if vary_steps else ""))
        out[name] = (member(config, workdir, arch, pre, strategy, regime,
                            aug, seed, lr, n), {
            "target": target, "architecture": arch,
            "pretrained": str(bool(pre)).lower(), "strategy": strategy,
            "regime": regime, "augmentation": aug, "seed": str(seed),
            "learning_rate": f"{lr:g}", "steps": str(n)})
  return out
