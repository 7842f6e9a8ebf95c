"""The explicit two-headed model of "Are Two Heads the Same as One?".

  h        = backbone(x).aux['features']   [batch, D]   any registered model
  logits   = classifier(h)                 [batch, num_classes]   target head
  g_logits = group_classifier(h)           [batch, num_groups]    attribute head

Trained with `(1 - w) CE(logits, y) + w * loss(g_logits, s)`
(`crl.trainers.fairness.TwoHeadsTask`). For a binary target and a binary
attribute the margins `z1 = logits[:, 1] - logits[:, 0]` and
`z2 = g_logits[:, 1] - g_logits[:, 0]` are both linear in `h`, so the merged
rule `yhat = 1[z1 + b z2 + c > 0]` is itself one linear head on `h`:
`merged_head` builds it and `export_params` gives parameters of the plain
backbone model with that head as its 'classifier', i.e. a single network of
the backbone's architecture.

Call (as every classifier; `train` is a Python bool):
  `logits, aux = model.apply(variables, x, train=bool, rngs={...})`
`aux` holds the backbone's entries ('features', 'reg_loss', ...) and
  'group_logits': `[batch, num_groups]`.

Parameters: 'backbone' (the backbone's own tree; its 'classifier' is unused
in training and replaced on export), 'classifier', 'group_classifier'.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl import registry


def _pairs(kwargs: Any) -> tuple[tuple[str, Any], ...]:
  """A mapping (or pairs) as sorted pairs, nested mappings too (hashable)."""
  if kwargs is None:
    return ()
  items = kwargs.items() if hasattr(kwargs, "items") else kwargs
  out = []
  for k, v in items:
    if isinstance(v, Mapping) or hasattr(v, "items"):
      v = _pairs(v)
    elif isinstance(v, list):
      v = tuple(v)
    out.append((str(k), v))
  return tuple(sorted(out))


class TwoHeads(nn.Module):
  """A backbone with a target head and a protected-attribute head.

  Attributes:
    num_classes: target classes (2 for the merge).
    num_groups: values of the protected attribute (2 for the merge).
    backbone: registered model name whose `aux['features']` is shared.
    backbone_kwargs: the backbone's fields (a dict or `((key, value), ...)`);
      `num_classes` is set from this module.
  """
  num_classes: int = 2
  num_groups: int = 2
  backbone: str = "mlp"
  backbone_kwargs: Any = ()

  def __post_init__(self):
    object.__setattr__(self, "backbone_kwargs", _pairs(self.backbone_kwargs))
    if self.backbone == "two_heads" or self.backbone not in registry.MODELS:
      raise ValueError(f"TwoHeads.backbone must be a registered model other "
                       f"than 'two_heads', got {self.backbone!r}; known: "
                       f"{', '.join(registry.MODELS.names())}.")
    for field in ("num_classes", "num_groups"):
      value = getattr(self, field)
      if not isinstance(value, (int, np.integer)) or value < 2:
        raise ValueError(f"TwoHeads.{field} must be an integer >= 2, got "
                         f"{value!r}.")
    if "num_classes" in dict(self.backbone_kwargs):
      raise ValueError("TwoHeads.backbone_kwargs must not set num_classes "
                       "(it comes from TwoHeads.num_classes).")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *,
               train: bool) -> tuple[jax.Array, dict[str, Any]]:
    """Both heads on the backbone's features.

    Args:
      x: the backbone's input (`[batch, ...]`).
      train: training mode (passed to the backbone).

    Returns:
      Target `logits` `[batch, num_classes]` and `aux` with 'features'
      `[batch, D]`, 'group_logits' `[batch, num_groups]`, 'reg_loss'.
    """
    _, aux = backbone_model(self, name="backbone")(x, train=train)
    if "features" not in aux:
      raise ValueError(f"TwoHeads: backbone {self.backbone!r} returns no "
                       "aux['features'].")
    features = aux["features"]
    logits = nn.Dense(self.num_classes, name="classifier")(features)
    group_logits = nn.Dense(self.num_groups, name="group_classifier")(features)
    aux = {**aux, "group_logits": group_logits.astype(jnp.float32),
           "reg_loss": jnp.asarray(aux.get("reg_loss", 0.), jnp.float32)}
    return logits.astype(jnp.float32), aux


def backbone_model(model: TwoHeads, **overrides: Any) -> nn.Module:
  """The backbone module of `model` (unbound outside `TwoHeads.__call__`):
  the architecture of the exported single-head network."""
  cls = registry.MODELS.get(model.backbone)
  kwargs = {**dict(model.backbone_kwargs), "num_classes": model.num_classes,
            **overrides}
  return cls(**kwargs)


def merged_head(params: Mapping[str, Any], b: float,
                c: float) -> dict[str, np.ndarray]:
  """The single linear head whose margin is `z1 + b z2 + c`.

  Args:
    params: a `TwoHeads` parameter tree (binary target and attribute).
    b: weight of the attribute margin `z2`.
    c: offset.

  Returns:
    `{'kernel': [D, 2], 'bias': [2]}` for a Dense 'classifier' with
    `logit_1 - logit_0 = z1 + b z2 + c` and `logit_0` that of the target head.
  """
  target = jax.device_get(params["classifier"])
  group = jax.device_get(params["group_classifier"])
  kernel = np.array(target["kernel"], np.float64)
  bias = np.array(target["bias"], np.float64)
  if kernel.shape[-1] != 2 or group["kernel"].shape[-1] != 2:
    raise ValueError("merged_head needs a binary target and a binary "
                     f"attribute, got heads with {kernel.shape[-1]} and "
                     f"{group['kernel'].shape[-1]} outputs.")
  g_kernel = np.asarray(group["kernel"], np.float64)
  g_bias = np.asarray(group["bias"], np.float64)
  kernel[:, 1] += b * (g_kernel[:, 1] - g_kernel[:, 0])
  bias[1] += b * (g_bias[1] - g_bias[0]) + c
  dtype = np.asarray(target["kernel"]).dtype
  return {"kernel": kernel.astype(dtype), "bias": bias.astype(dtype)}


def export_params(params: Mapping[str, Any], b: float, c: float) -> Any:
  """Parameters of the backbone model alone, with the merged 'classifier'.

  `backbone_model(two_heads).apply({'params': export_params(p, b, c)}, x,
  train=False)` gives logits whose margin is `z1 + b z2 + c`.
  """
  backbone = dict(jax.device_get(params["backbone"]))
  if "classifier" not in backbone:
    raise ValueError("export_params: the backbone has no 'classifier' head "
                     "to replace.")
  backbone["classifier"] = merged_head(params, b, c)
  return backbone


# Merge search ----------------------------------------------------------------


def _sorted_cells(margin: np.ndarray, y: np.ndarray, s: np.ndarray
                  ) -> dict[tuple[int, int], np.ndarray]:
  """The sorted margins of each (group, label) cell."""
  return {(g, l): np.sort(margin[(s == g) & (y == l)])
          for g in (0, 1) for l in (0, 1)}


def _counts_above(cells, thresholds: np.ndarray
                  ) -> dict[tuple[int, int], np.ndarray]:
  """`#{margin > -c}` per cell for every offset c: `[len(thresholds)]`."""
  return {k: len(v) - np.searchsorted(v, -thresholds, side="right")
          for k, v in cells.items()}


def rule_metrics(margin: np.ndarray, y: np.ndarray, s: np.ndarray,
                 offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Accuracy and signed DDP of `1[margin + c > 0]` for every offset c.

  Args:
    margin: `[n]` margins.
    y: `[n]` labels in {0, 1}.
    s: `[n]` attribute in {0, 1}, both present.
    offsets: `[k]` offsets c.

  Returns:
    `(accuracy [k], ddp [k])`, ddp = `P(yhat=1|s=1) - P(yhat=1|s=0)`.
  """
  cells = _sorted_cells(margin, y, s)
  above = _counts_above(cells, np.asarray(offsets, np.float64))
  n = len(margin)
  n_group = {g: len(cells[g, 0]) + len(cells[g, 1]) for g in (0, 1)}
  correct = (above[0, 1] + above[1, 1] + (len(cells[0, 0]) - above[0, 0]) +
             (len(cells[1, 0]) - above[1, 0]))
  rate = {g: (above[g, 0] + above[g, 1]) / n_group[g] for g in (0, 1)}
  return correct / n, rate[1] - rate[0]


def _check_binary_inputs(z1, z2, y, s):
  arrays = [np.asarray(a) for a in (z1, z2, y, s)]
  if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
    raise ValueError("merge_search: z1, z2, y, s must be 1-D arrays of one "
                     f"length, got shapes {[a.shape for a in arrays]}.")
  if set(np.unique(arrays[3]).tolist()) != {0, 1}:
    raise ValueError("merge_search needs a binary attribute with both groups "
                     f"present, got values {np.unique(arrays[3])[:5]}.")
  return ([a.astype(np.float64) for a in arrays[:2]] +
          [a.astype(np.int64) for a in arrays[2:]])


def best_offset(margin: np.ndarray, y: np.ndarray, s: np.ndarray,
                eps: float) -> tuple[float, float, float, float] | None:
  """The offset c of best accuracy for `1[margin + c > 0]` with |DDP| <= eps.

  Exact: every distinct split of the sorted margins is tried (c halfway
  between consecutive distinct margins, or beyond the extremes).

  Returns:
    `(key, c, accuracy, ddp)` with `key = accuracy - 1e-9 |ddp|` (ties go to
    the smallest |DDP|), or None if no offset is feasible.
  """
  u = np.unique(margin)
  offsets = np.r_[1. - u[0], -(u[:-1] + u[1:]) / 2., -u[-1] - 1.]
  acc, ddp = rule_metrics(margin, y, s, offsets)
  ok = np.abs(ddp) <= eps + 1e-12
  if not ok.any():
    return None
  key = np.where(ok, acc - 1e-9 * np.abs(ddp), -np.inf)
  j = int(np.argmax(key))
  return float(key[j]), float(offsets[j]), float(acc[j]), float(ddp[j])


def merge_search(z1: np.ndarray, z2: np.ndarray, y: np.ndarray, s: np.ndarray,
                 eps: float, grid_size: int = 41, rounds: int = 4,
                 b_range: float = 4.0) -> dict[str, float] | None:
  """The merged rule `1[z1 + b z2 + c > 0]` of best accuracy with |DDP| <= eps.

  b on a grid of `grid_size` points over `[-b_range, b_range]` (in units of
  `std(z1) / std(z2)`), refined `rounds - 1` times around the best b (to
  +-1 step of the previous grid); for every b the best offset c is found
  exactly (`best_offset`). The grid holds b = 0 (odd `grid_size`), the
  target head alone. Ties go to the smallest |DDP|.

  Args:
    z1: `[n]` target margins (validation split).
    z2: `[n]` attribute margins.
    y: `[n]` labels in {0, 1}.
    s: `[n]` attribute in {0, 1}.
    eps: the parity slack.
    grid_size, rounds, b_range: the search over b.

  Returns:
    `{'b', 'c', 'accuracy', 'ddp'}` on the given data, or None if no point
    satisfies the constraint (never for eps >= 0 with a feasible constant
    rule, which every b has: all-negative predictions have DDP 0).
  """
  z1, z2, y, s = _check_binary_inputs(z1, z2, y, s)
  sd1 = float(np.std(z1)) or 1.
  sd2 = float(np.std(z2)) or 1.
  a, g = z1 / sd1, z2 / sd2
  lo, hi = -b_range, b_range
  best = None
  for _ in range(rounds):
    bs = np.linspace(lo, hi, grid_size)
    for b in bs:
      found = best_offset(a + b * g, y, s, eps)
      if found is not None and (best is None or found[0] > best[0]):
        best = (found[0], float(b)) + found[1:]
    if best is None:
      return None
    step = (hi - lo) / (grid_size - 1)
    lo, hi = best[1] - step, best[1] + step
  _, b, c, acc, ddp = best
  return {"b": b * sd1 / sd2, "c": c * sd1, "accuracy": acc, "ddp": ddp}
