"""A multilayer perceptron classifier, for tabular features (or small images).

  x        = features                        [batch, num_features]
          or flatten(standardize(images))    [batch, height * width * 3]
  h_i      = dropout(act(Dense_i(h_{i-1})))  i = 0 .. len(hidden) - 1
  logits   = classifier(h_last)              [batch, num_classes]

Call (`train` is a Python bool):
  `logits, aux = model.apply(variables, x, train=bool,
                             rngs={'dropout': k})`
'dropout' is needed only with `train=True` and `dropout > 0`.

`aux` holds
  'features': `[batch, hidden[-1]]` the penultimate representation (the input
    of the Dense 'classifier'; the input itself when `hidden` is empty);
  'reg_loss': 0.0 (no regulariser).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from crl.models import layers

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": jnp.tanh,
               "silu": nn.silu}


class MLP(nn.Module):
  """Dense layers with a nonlinearity, then a linear 'classifier'.

  Attributes:
    num_classes: output classes.
    hidden: widths of the hidden layers; the last is the feature dimension
      that probes read.
    activation: one of 'relu', 'gelu', 'tanh', 'silu'.
    dropout: dropout rate after every hidden layer (training only).
    layer_norm: LayerNorm before every activation.
  """
  num_classes: int = 2
  hidden: tuple[int, ...] = (64, 16)
  activation: str = "relu"
  dropout: float = 0.0
  layer_norm: bool = False

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"MLP.activation must be one of {tuple(ACTIVATIONS)}, "
                       f"got {self.activation!r}.")
    if not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise ValueError(f"MLP.num_classes must be an integer >= 1, got "
                       f"{self.num_classes!r}.")
    if not all(isinstance(h, int) and h >= 1 for h in tuple(self.hidden)):
      raise ValueError(f"MLP.hidden must be a tuple of integers >= 1, got "
                       f"{self.hidden!r}.")
    if not 0. <= self.dropout < 1.:
      raise ValueError(f"MLP.dropout must be in [0, 1), got {self.dropout}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *,
               train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Classifies `x`.

    Args:
      x: float32 `[batch, num_features]`, or images `[batch, height, width,
        3]` in [0, 1] (standardised, then flattened).
      train: training mode (dropout).

    Returns:
      `logits` `[batch, num_classes]` and the `aux` dict (module docstring).
    """
    if not isinstance(train, bool):
      raise TypeError(f"MLP: train must be a Python bool, got {train!r}.")
    if x.ndim == 4:
      x = layers.standardize_images(x)
    elif x.ndim != 2:
      raise ValueError(f"MLP: inputs must be [batch, features] or [batch, "
                       f"height, width, 3], got shape {x.shape}.")
    h = jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1)
    act = ACTIVATIONS[self.activation]
    for i, width in enumerate(self.hidden):
      h = nn.Dense(width, name=f"hidden{i}")(h)
      if self.layer_norm:
        h = nn.LayerNorm(name=f"norm{i}")(h)
      h = act(h)
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    logits = nn.Dense(self.num_classes, name="classifier")(h)
    aux = {"features": h, "reg_loss": jnp.zeros((), jnp.float32)}
    return logits, aux
