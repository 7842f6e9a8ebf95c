"""The shift registry: every (ID, OOD) pair of the suite, named and typed.

One table for the four kinds of specs/ood.md:

* `interventional`: `hue_independent`, ..., `unseen_combination` and
  combinations `a+b`: the causal-shapes test split under `do(...)`;
* `corruption`: `corruption/<name>/<severity>` (19 x 5): the ID test split
  corrupted on the device (`crl.shifts.corruptions`);
* `natural`: `cifar10_1`, `cifar10_corrupted/<name>/<severity>`,
  `imagenet_v2`, `imagenet_r`, `imagenet_a`, `imagenet_sketch`,
  `imagenet2012_corrupted/<name>/<severity>`, `domainnet/<domain>` (one
  DomainNet domain against the run's): a locally prepared TFDS dataset
  paired with the run's TFDS ID dataset (`crl.shifts.natural`);
* `semantic`: `novel_classes` (and combinations with it), `svhn_cropped`,
  `cifar100`: OOD detection of classes never seen in training, against the
  ID test split;
* `domain`: `domain/<name>`: the same classes in another domain of a
  multi-domain run (`crl.data.multi_domain`'s photo, sketch, cartoon,
  painting, registered; `get` also accepts any `domain/<name>` for the
  domains of a DomainBed folder, `crl.data.domain_folder`): that domain's
  test split, against the run's own domain.

Interventional names are those of `crl.data.causal_shapes` (its
`describe()` is the `do()` statement). The registered combinations are every
pair of interventions on different mechanisms among the seven covariate
ones, all four nuisance interventions at once, and those four with
`hue_independent`; `get()` also accepts any other valid '+' combination
(e.g. `novel_classes+unseen_background`, kind semantic), which
`CausalShapes.parse_intervention` checks.

A shift needs something of the run (`Shift.needs`, `applies_to`):
interventional and `novel_classes` shifts a causal-shapes dataset;
corruptions images of at least 32 x 32 px with 3 channels (any dataset);
natural pairs a TFDS run on their ID dataset and the OOD data prepared
locally (nothing is downloaded).

Selections (`resolve`): "all", a kind, glob patterns (`corruption/*/3`),
explicit names, or one comma-separated string of these. An unknown name
raises `UnknownShiftError` (a `crl.registry.UnknownNameError`, so
`crl.main` prints it as one line) listing the known names.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
from typing import Any, Iterable, Sequence

from crl import registry as registry_lib
from crl.data import causal_shapes
from crl.data import multi_domain
from crl.shifts import corruptions
from crl.shifts import natural

KINDS = ("interventional", "corruption", "natural", "semantic", "domain")
DOMAIN_PREFIX = "domain"
SEVERITIES = (1, 2, 3, 4, 5)
CORRUPTION_PREFIX = "corruption"
_COVARIATE_INTERVENTIONS = tuple(n for n in causal_shapes.INTERVENTIONS
                                 if n != "novel_classes")
_NUISANCE = ("scale_out", "border_position", "unseen_background",
             "unseen_rotation")


class UnknownShiftError(registry_lib.UnknownNameError):
  """A shift name (or pattern) that the registry does not know."""


@dataclasses.dataclass(frozen=True)
class Shift:
  """One registered (ID, OOD) pair.

  Attributes:
    name: the registry name (`hue_independent`, `corruption/fog/3`, ...).
    kind: one of `KINDS`.
    description: what the OOD distribution is.
    needs: what the run must have for this shift to apply.
    source: where the OOD examples come from: 'causal_shapes',
      'corruption' (the ID test split corrupted in JAX) or 'tfds'.
    intervention: the causal-shapes eval split (source 'causal_shapes').
    corruption: the corruption name (corruption shifts and corrupted TFDS
      copies).
    severity: 1..5 for corruptions.
    family: groups the corruption x severity grid whose mCE is reported
      ('corruption', 'cifar10_corrupted', 'imagenet2012_corrupted').
    tfds_name: the OOD TFDS dataset (source 'tfds').
    tfds_split: its split.
    id_dataset: the TFDS ID dataset it pairs with (source 'tfds').
    class_subset: logits kept for this shift (`natural.CLASS_SUBSETS` key).
    domain: the OOD domain (source 'domain': an eval split of the run's
      multi-domain dataset).
  """
  name: str
  kind: str
  description: str
  needs: str
  source: str
  intervention: str | None = None
  corruption: str | None = None
  severity: int | None = None
  family: str | None = None
  tfds_name: str | None = None
  tfds_split: str | None = None
  id_dataset: str | None = None
  class_subset: str | None = None
  domain: str | None = None

  def protocol(self) -> dict[str, Any]:
    """The fields that define the shift, for results files (no Nones)."""
    return {k: v for k, v in dataclasses.asdict(self).items()
            if v is not None}


_DEFAULT_SHAPES = causal_shapes.CausalShapes()
_NEEDS_SHAPES = "a causal_shapes dataset (crl.data.causal_shapes)"
_NEEDS_IMAGES = (f"images of at least {corruptions.MIN_SIZE}x"
                 f"{corruptions.MIN_SIZE} px with 3 channels (the ID test "
                 "split is corrupted)")


def _interventional(name: str) -> Shift:
  names = _DEFAULT_SHAPES.parse_intervention(name)  # ValueError if invalid
  canonical = "+".join(names)
  kind = "semantic" if "novel_classes" in names else "interventional"
  return Shift(name=canonical, kind=kind,
               description=_DEFAULT_SHAPES.describe(canonical),
               needs=_NEEDS_SHAPES, source="causal_shapes",
               intervention=canonical)


def _corruption(name: str, severity: int) -> Shift:
  return Shift(
      name=f"{CORRUPTION_PREFIX}/{name}/{severity}", kind="corruption",
      description=(f"{corruptions.describe(name)} Severity {severity} of 5; "
                   "applied in JAX to the ID test split."),
      needs=_NEEDS_IMAGES, source="corruption", corruption=name,
      severity=severity, family=CORRUPTION_PREFIX)


def _tfds_needs(id_dataset: str, tfds_name: str) -> str:
  return (f"a model trained on TFDS {id_dataset!r} and TFDS {tfds_name!r} "
          "prepared locally")


def _pair(name: str) -> Shift:
  kind, id_ds, tfds_name, split, subset, description = natural.PAIRS[name]
  return Shift(name=name, kind=kind, description=description,
               needs=_tfds_needs(id_ds, tfds_name), source="tfds",
               tfds_name=tfds_name, tfds_split=split, id_dataset=id_ds,
               class_subset=subset)


def _corrupted_copy(family: str, name: str, severity: int) -> Shift:
  id_ds, split, _ = natural.CORRUPTED[family]
  tfds_name = natural.corrupted_tfds_name(family, name, severity)
  return Shift(
      name=f"{family}/{name}/{severity}", kind="natural",
      description=(f"{id_ds} {split} images with {name} at severity "
                   f"{severity}, as published (Hendrycks & Dietterich 2019)"),
      needs=_tfds_needs(id_ds, tfds_name), source="tfds", corruption=name,
      severity=severity, family=family, tfds_name=tfds_name,
      tfds_split=split, id_dataset=id_ds)


def _domain(name: str) -> Shift:
  return Shift(
      name=f"{DOMAIN_PREFIX}/{name}", kind="domain",
      description=(f"the same classes in the {name} domain (its test split)"
                   ", against the run's own domain"),
      needs="a multi-domain dataset (multi_domain or domain_folder) with "
            f"a {name!r} domain other than its own",
      source="domain", domain=name)


def _combinations() -> list[str]:
  combos = []
  for a, b in itertools.combinations(_COVARIATE_INTERVENTIONS, 2):
    if not (causal_shapes.INTERVENTION_BITS[a][1] &
            causal_shapes.INTERVENTION_BITS[b][1]):
      combos.append(f"{a}+{b}")
  combos.append("+".join(_NUISANCE))
  combos.append("+".join(("hue_independent",) + _NUISANCE))
  return combos


def _build() -> dict[str, Shift]:
  table: dict[str, Shift] = {}
  for name in causal_shapes.INTERVENTIONS:
    table[name] = _interventional(name)
  for name in _combinations():
    shift = _interventional(name)
    table[shift.name] = shift
  for name in corruptions.names():
    for severity in SEVERITIES:
      shift = _corruption(name, severity)
      table[shift.name] = shift
  for name in natural.PAIRS:
    table[name] = _pair(name)
  for family in natural.CORRUPTED:
    for name in corruptions.names():
      for severity in SEVERITIES:
        shift = _corrupted_copy(family, name, severity)
        table[shift.name] = shift
  for name in multi_domain.DOMAINS:
    table[f"{DOMAIN_PREFIX}/{name}"] = _domain(name)
  return table


_SHIFTS: dict[str, Shift] = _build()


def names(kind: str | None = None) -> list[str]:
  """Registered shift names in table order, all or of one kind."""
  if kind is not None and kind not in KINDS:
    raise UnknownShiftError(f"Unknown shift kind {kind!r}; known kinds: "
                            f"{', '.join(KINDS)}.")
  return [n for n, s in _SHIFTS.items() if kind is None or s.kind == kind]


def known_names_text() -> str:
  """The known names, compactly (for error messages)."""
  interventional = names("interventional")
  singles = [n for n in interventional if "+" not in n]
  semantic = names("semantic")
  natural_names = [n for n in names("natural") if "/" not in n]
  return (
      f"interventional: {', '.join(singles)} and '+' combinations (e.g. "
      f"{interventional[len(singles)]}); corruption: "
      f"{CORRUPTION_PREFIX}/<name>/<1-5> with name in "
      f"{', '.join(corruptions.names())}; natural: "
      f"{', '.join(natural_names)}, "
      f"{', '.join(f'{f}/<name>/<1-5>' for f in natural.CORRUPTED)}, "
      f"domainnet/<domain> with domain in "
      f"{', '.join(natural.DOMAINNET_DOMAINS)}; "
      f"semantic: {', '.join(semantic)}; domain: {DOMAIN_PREFIX}/<domain> "
      f"(e.g. {', '.join(multi_domain.DOMAINS)}); or 'all', a kind "
      f"({', '.join(KINDS)}) or a glob pattern")


def get(name: str) -> Shift:
  """The shift called `name` (registered, or a valid '+' combination)."""
  if not isinstance(name, str) or not name.strip():
    raise UnknownShiftError(f"A shift name is a non-empty string, got "
                            f"{name!r}; known shifts: {known_names_text()}.")
  name = name.strip()
  if name in _SHIFTS:
    return _SHIFTS[name]
  if "+" in name:
    try:
      shift = _interventional(name)
    except ValueError as e:
      raise UnknownShiftError(f"Unknown shift {name!r}: {e}") from None
    return _SHIFTS.get(shift.name, shift)
  prefix, _, domain = name.partition("/")
  if prefix == DOMAIN_PREFIX and domain and "/" not in domain:
    return _domain(domain)
  hint = ""
  if name.startswith(f"{CORRUPTION_PREFIX}/"):
    hint = (f" (corruption shifts are {CORRUPTION_PREFIX}/<name>/<severity 1-"
            f"5>, name one of {', '.join(corruptions.names())})")
  raise UnknownShiftError(f"Unknown shift {name!r}{hint}; known shifts: "
                          f"{known_names_text()}.")


def register(shift: Shift) -> None:
  """Adds a user-defined shift (e.g. another TFDS pair)."""
  if shift.kind not in KINDS:
    raise ValueError(f"Shift kind must be one of {KINDS}, got {shift.kind!r}.")
  if shift.name in _SHIFTS and _SHIFTS[shift.name] != shift:
    raise ValueError(f"Shift {shift.name!r} is already registered.")
  _SHIFTS[shift.name] = shift


def _patterns(patterns: str | Iterable[str]) -> list[str]:
  if isinstance(patterns, str):
    patterns = [patterns]
  out = []
  for p in patterns:
    if not isinstance(p, str):
      raise UnknownShiftError(f"Shift selections are strings, got {p!r}.")
    out += [q.strip() for q in p.split(",") if q.strip()]
  if not out:
    raise UnknownShiftError("No shifts selected; name shifts or say 'all' "
                            f"(known: {known_names_text()}).")
  return out


def select(patterns: str | Iterable[str]) -> list[tuple[Shift, bool]]:
  """`[(shift, named explicitly)]` for a selection, in order, deduplicated.

  Explicit names are kept whatever they need (the caller raises if the run
  cannot evaluate them); shifts chosen by 'all', a kind or a glob pattern are
  candidates the caller may skip when they do not apply.
  """
  chosen: dict[str, tuple[Shift, bool]] = {}
  for p in _patterns(patterns):
    if p == "all":
      matched, explicit = list(_SHIFTS), False
    elif p in KINDS:
      matched, explicit = names(p), False
    elif any(c in p for c in "*?["):
      matched, explicit = fnmatch.filter(list(_SHIFTS), p), False
      if not matched:
        raise UnknownShiftError(f"The pattern {p!r} matches no shift; known "
                                f"shifts: {known_names_text()}.")
    else:
      shift = get(p)
      chosen[shift.name] = (shift, True)
      continue
    for name in matched:
      if name not in chosen:
        chosen[name] = (_SHIFTS[name], explicit)
  return list(chosen.values())


def resolve(patterns: str | Sequence[str]) -> list[Shift]:
  """The shifts of a selection ("all", kinds, globs, names), in order."""
  return [shift for shift, _ in select(patterns)]


def applies_to(shift: Shift, dataset: Any) -> str | None:
  """Why `shift` cannot be evaluated on `dataset`'s run, or None if it can.

  Checks what the shift needs of the run (not whether TFDS data is prepared;
  see `natural.ood_dataset`).
  """
  if shift.source == "causal_shapes":
    if not hasattr(dataset, "parse_intervention"):
      return (f"needs {_NEEDS_SHAPES}; this run's data is "
              f"{type(dataset).__name__}")
    try:
      dataset.parse_intervention(shift.intervention)
    except ValueError as e:
      return str(e)
    return None
  if shift.source == "corruption":
    shape = tuple(getattr(dataset, "input_shape", None) or
                  getattr(dataset, "image_shape", ()))
    if (getattr(dataset, "input_key", "image") != "image" or len(shape) != 3
        or shape[-1] != 3 or min(shape[:2]) < corruptions.MIN_SIZE):
      return f"needs {_NEEDS_IMAGES}; this run's inputs are {shape}"
    return None
  if shift.source == "tfds":
    return natural.applies_to(shift, dataset)
  if shift.source == "domain":
    domains = getattr(dataset, "domains", None)
    if domains is None:
      return (f"needs a multi-domain dataset; this run's data is "
              f"{type(dataset).__name__}")
    if shift.domain not in domains:
      return (f"domain {shift.domain!r} is not one of this run's domains "
              f"({', '.join(domains)})")
    if shift.domain == dataset.domain:
      return f"{shift.domain!r} is the run's own (in-distribution) domain"
    return None
  return f"unknown source {shift.source!r}"
