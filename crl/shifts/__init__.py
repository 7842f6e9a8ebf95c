"""Distribution shifts: interventions, corruptions (in JAX), natural pairs.

The shift registry (`crl.shifts.registry`) is also reachable from here:
`shifts.names(kind=None)`, `shifts.get(name)`, `shifts.resolve(patterns)`
(imported on first use, so that `crl.shifts.corruptions` stays light).
"""

_REGISTRY_NAMES = ("KINDS", "Shift", "UnknownShiftError", "applies_to", "get",
                   "names", "register", "resolve", "select")


def __getattr__(name):
  if name in _REGISTRY_NAMES:
    from crl.shifts import registry  # pylint: disable=g-import-not-at-top
    return getattr(registry, name)
  raise AttributeError(f"module 'crl.shifts' has no attribute {name!r}")
