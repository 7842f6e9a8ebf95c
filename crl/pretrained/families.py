"""Per model family: which parameters are the head, and how a loaded array
is adapted to another input size.

The head is what `--config.init_from` never loads: it is re-created for the
target's classes. Every registered classifier ends in a Dense 'classifier';
what sits before it (e.g. 'head_norm', the normalisation of the pooled
features) belongs to the backbone and is loaded.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def classifier_head(params: Any) -> tuple[str, ...]:
  """The Dense 'classifier' that every registered classifier ends in: on
  ViT's class (or mean) token, ResNet's and the CNN's pooled features, NAC's
  pooled read-out (its 'confidence' pooling weights and 'head_norm' stay in
  the backbone), Perceiver IO's decoded output query, Neural Interpreters'
  class tokens, the MLP's last hidden layer."""
  del params
  return ("classifier",)


# model name (crl.registry.MODELS) -> `params -> top-level head names`. A
# model whose head is more than one Dense gets its own function here.
HEADS: dict[str, Callable[[Any], tuple[str, ...]]] = {
    name: classifier_head for name in (
        "vit", "resnet", "cnn", "nac", "perceiver_io", "interpreters", "mlp")
}


def resize_vit_position_embedding(pos: np.ndarray,
                                  shape: tuple[int, ...]) -> np.ndarray:
  """Resamples a ViT position embedding to another patch grid (bilinear).

  Args:
    pos: `[tokens, D]`, the class token's row first when `tokens` is a
      square plus one, then a square grid of patches in row-major order.
    shape: the target `(tokens', D)`; the class-token row (if any) is kept,
      the grid goes to `sqrt(tokens' - cls)` per side.

  Returns:
    `[tokens', D]`.

  Raises:
    ValueError: the grids are not square or the class token differs.
  """
  def split(n):
    side = int(round(np.sqrt(n)))
    if side * side == n:
      return 0, side
    side = int(round(np.sqrt(n - 1)))
    if side * side == n - 1:
      return 1, side
    raise ValueError(f"{n} position-embedding rows are neither a square grid "
                     "nor a square grid plus a class token")

  (cls_a, side_a), (cls_b, side_b) = split(pos.shape[0]), split(shape[0])
  if cls_a != cls_b or pos.shape[1] != shape[1]:
    raise ValueError(f"cannot resize a position embedding {pos.shape} to "
                     f"{tuple(shape)}")
  grid = pos[cls_a:].reshape(side_a, side_a, pos.shape[1])
  # Half-pixel centres without antialiasing: PyTorch's bilinear interpolate.
  grid = jax.image.resize(grid, (side_b, side_b, pos.shape[1]), "bilinear",
                          antialias=False)
  return np.concatenate([pos[:cls_a], np.asarray(grid).reshape(-1, shape[1])])


# model name -> {flat parameter path: `(array, target shape) -> array`}:
# the arrays that are resampled when the input size differs.
ADAPTERS: dict[str, dict[str, Callable[[np.ndarray, tuple[int, ...]],
                                       np.ndarray]]] = {
    "vit": {"position_embedding": resize_vit_position_embedding},
}
