"""Flat weight-file keys: layout checks shared by the converters."""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np


class LayoutError(ValueError):
  """The file's keys are not those of the layout (the message names them)."""


def _listing(keys: list[str]) -> str:
  more = f" and {len(keys) - 6} more" if len(keys) > 6 else ""
  return ", ".join(keys[:6]) + more


def check_keys(arrays: dict[str, np.ndarray], expected: set[str],
               optional: set[str], layout: str) -> None:
  """Raises `LayoutError` naming the missing and unexpected keys."""
  missing = sorted(expected - set(arrays))
  unexpected = sorted(set(arrays) - expected - optional)
  parts = []
  if missing:
    parts.append(f"missing {len(missing)} key(s): {_listing(missing)}")
  if unexpected:
    parts.append(f"unexpected {len(unexpected)} key(s): "
                 f"{_listing(unexpected)}")
  if parts:
    raise LayoutError(f"not a {layout} file: {'; '.join(parts)}")


def num_blocks(keys: Iterable[str], pattern: str) -> int:
  """1 + the largest block index that `pattern`'s group 1 matches; 0 if
  none (a file without any block then fails `check_keys`)."""
  found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
  return max(found) + 1 if found else 0
