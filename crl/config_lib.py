"""Config helpers: component sections built from the component's own fields.

A config section for a registered component (a model, a dataset) lists every
constructor field with its default, so that every hyperparameter is visible
in `config.json` and overridable from the command line
(`--config.model.num_layers=2`), while a mistyped key fails at start-up
(configs are locked by `config_flags`).
"""

from __future__ import annotations

import dataclasses
import difflib

from typing import Any

import ml_collections
from ml_collections import config_dict

from crl import registry as registry_lib


class ConfigError(ValueError):
  """A config that cannot run; the message says what and what is expected."""


def nearest_keys(unknown: list[str], known) -> str:
  """'; did you mean X?' for the known keys closest to the unknown ones."""
  close = []
  for key in unknown:
    close += [k for k in difflib.get_close_matches(key, list(known), n=3,
                                                   cutoff=0.6)
              if k not in close]
  return f"; did you mean {' or '.join(close)}?" if close else "."


_PLACEHOLDER_TYPES = (("bool", bool), ("int", int), ("float", float),
                      ("str", str), ("tuple", tuple), ("dict", dict))


def _placeholder_for(annotation: Any) -> Any:
  """A typed `None` placeholder so that `None` defaults stay overridable."""
  text = annotation if isinstance(annotation, str) else repr(annotation)
  for name, type_ in _PLACEHOLDER_TYPES:
    if name in text:
      return config_dict.placeholder(type_)
  return None


def _fields(cls: type) -> dict[str, dataclasses.Field]:
  if not dataclasses.is_dataclass(cls):
    raise TypeError(f"{cls!r} is not a dataclass; cannot derive a config.")
  skip = {"parent", "name"}  # flax.linen.Module bookkeeping fields.
  return {f.name: f for f in dataclasses.fields(cls)
          if f.init and f.name not in skip}


def _default(field: dataclasses.Field) -> Any:
  if field.default is not dataclasses.MISSING:
    return field.default
  if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
    return field.default_factory()  # type: ignore[misc]
  return dataclasses.MISSING


def init_fields(obj: Any, kwargs: dict[str, Any]) -> None:
  """`__init__` body of a frozen, config-built dataclass (`init=False`).

  Sets every field from `kwargs` or its default, lists as tuples (hashable,
  so the object can be a static jit argument); an unknown key raises a
  `TypeError` that names it and lists the valid keys.
  """
  fields = {f.name: f for f in dataclasses.fields(obj)}
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise TypeError(
        f"{type(obj).__name__} got unknown config key(s) {unknown}"
        f"{nearest_keys(unknown, fields)} Valid keys: {', '.join(fields)}.")
  for name, field in fields.items():
    value = kwargs.get(name, _default(field))
    if isinstance(value, list):
      value = tuple(value)
    object.__setattr__(obj, name, value)


def component_config(registry: registry_lib.Registry, name: str,
                     **overrides: Any) -> ml_collections.ConfigDict:
  """A ConfigDict with `name` and every constructor field of the component.

  Fields without a default (e.g. a model's `num_classes`, filled in by the
  trainer from the dataset) are left out unless given in `overrides`.

  Args:
    registry: where `name` is looked up.
    name: the registered component name.
    **overrides: values that replace the defaults.

  Returns:
    A ConfigDict `{name: ..., field: default_or_override, ...}`.
  """
  cls = registry.get(name)
  fields = _fields(cls)
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"{registry.kind} {name!r} has no field(s) {unknown}"
                      f"{nearest_keys(unknown, fields)} Known fields: "
                      f"{', '.join(sorted(fields))}.")
  values: dict[str, Any] = {"name": name}
  for field_name, field in fields.items():
    value = overrides.get(field_name, _default(field))
    if value is dataclasses.MISSING:
      continue
    if value is None:
      value = _placeholder_for(field.type)
    elif isinstance(value, dict):
      value = ml_collections.ConfigDict(value)
    values[field_name] = value
  return ml_collections.ConfigDict(values)


def component_kwargs(section: ml_collections.ConfigDict) -> dict[str, Any]:
  """Constructor kwargs of a component section (everything but `name`)."""
  kwargs = {}
  for key, value in section.items():
    if key == "name":
      continue
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    if isinstance(value, list):
      value = tuple(value)
    if isinstance(value, dict):
      # Hashable for flax dataclass fields: a sorted tuple of pairs.
      value = tuple(sorted(value.items()))
    kwargs[key] = value
  return kwargs


def build(registry: registry_lib.Registry, section: ml_collections.ConfigDict,
          **extra: Any) -> Any:
  """Constructs the component named by `section.name` with its fields.

  Raises:
    ConfigError: the name is unknown, or a field is unknown or invalid.
  """
  if "name" not in section:
    raise ConfigError(f"The {registry.kind} config section has no `name`; "
                      f"known {registry.kind}s: {', '.join(registry.names())}.")
  try:
    cls = registry.get(section.name)
  except registry_lib.UnknownNameError as e:
    raise ConfigError(str(e)) from None
  kwargs = component_kwargs(section)
  kwargs.update(extra)
  if dataclasses.is_dataclass(cls):
    known = _fields(cls)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
      raise ConfigError(
          f"config.{registry.kind} ({section.name!r}) has unknown key(s) "
          f"{unknown}{nearest_keys(unknown, known)} Known keys: "
          f"{', '.join(sorted(known))}.")
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.{registry.kind} ({section.name!r}): {e}") from e


def to_plain(value: Any) -> Any:
  """ConfigDicts, tuples and placeholders as JSON-friendly Python values."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: to_plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_plain(v) for v in value]
  if isinstance(value, config_dict.FieldReference):
    return to_plain(value.get())
  return value


def with_component_defaults(registry: registry_lib.Registry,
                            section: Any) -> Any:
  """A plain component section (as read from a run's config.json) with the
  defaults of the fields it lacks.

  A config written before a field was added to the component then compares
  equal to today's config that keeps that field's default. Sections that are
  not dicts or name no registered component are returned unchanged.
  """
  if not isinstance(section, dict) or not isinstance(section.get("name"),
                                                     str):
    return section
  try:
    defaults = to_plain(component_config(registry, section["name"]))
  except registry_lib.UnknownNameError:
    return section
  return {**defaults, **section}


def from_plain(value: Any) -> Any:
  """The inverse of `to_plain` for JSON: lists back to the tuples configs use."""
  if isinstance(value, dict):
    return {k: from_plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(from_plain(v) for v in value)
  return value


def load_config_module(path: str) -> Any:
  """The config file at `path` as a module (its `get_config` and helpers);
  the one loader of config files by path (configs that build on others use
  it too)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  module_spec = importlib.util.spec_from_file_location("_crl_config", path)
  if module_spec is None or module_spec.loader is None:
    raise ConfigError(f"Cannot load config file {path!r}.")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config(spec: str, lock: bool = True) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` as `config_flags` does (for notebooks).

  Args:
    spec: a config file path, optionally followed by `:variant`.
    lock: lock the config (as `config_flags` does); False for a config
      that another config builds on.

  Returns:
    The ConfigDict returned by the file's `get_config(arg)`.
  """
  path, _, arg = spec.partition(":")
  config = load_config_module(path).get_config(arg or None)
  if lock:
    config.lock()
  return config
