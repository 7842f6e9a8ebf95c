"""The committed results files of documented runs, and their provenance.

`docs/results/<run>/` holds a run's small result files (results.json, ...)
and `run.json` (`command`, `date`, `machine`, `load`, `wall`) or a free-text
`command.txt`; the README renderers (`crl.reports.readme`,
`crl.reports.study_tables`) read them through `load` and `provenance`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"


def load(run: str, name: str = "results.json",
         root: pathlib.Path = RESULTS) -> Any:
  """The parsed JSON file `name` of committed run `run`, or None."""
  path = root / run / name
  return json.loads(path.read_text()) if path.exists() else None


def provenance(run: str, root: pathlib.Path = RESULTS) -> str:
  """One line: the command of `run`, when and where it ran, and its wall time
  (`run.json`; a run committed with a free-text `command.txt` instead gives
  its command and points to that file)."""
  meta = load(run, "run.json", root)
  if meta is None:
    text = root / run / "command.txt"
    if not text.exists():
      raise FileNotFoundError(f"{root / run / 'run.json'} is missing: every "
                              "committed run needs its command and date")
    lines = [l.strip().removeprefix("command:").strip()
             for l in text.read_text().strip().splitlines()]
    command = next((l for l in lines if l.startswith("python ")), lines[0])
    return (f"`{command}`; date, machine, load and wall time in "
            f"`docs/results/{run}/command.txt`.")
  return (f"`{meta['command']}`: {meta['wall']} wall, {meta['date']}, "
          f"{meta['machine']}, {meta['load']}.")


def table(header: list[str], rows: list[list[str]]) -> str:
  """A Markdown table."""
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def f3(x: float | None) -> str:
  """.834 (three decimals without the leading zero), '-' for None."""
  return "-" if x is None else f"{x:.3f}".replace("0.", ".", 1)
