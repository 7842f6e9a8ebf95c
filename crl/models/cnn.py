"""A small convolutional classifier trained from scratch (no pretrained init).

  x        = standardize(images)                      [batch, H, W, 3]
  h_i      = relu(GroupNorm(Conv3x3_i(h_{i-1})))      stride 2 from stage 1
  features = mean over H, W of h_last                 [batch, widths[-1]]
  logits   = classifier(features)                     [batch, num_classes]

Stage `i` has `widths[i]` channels; every stage after the first halves the
resolution (a 3x3 convolution with stride 2). GroupNorm, not BatchNorm: no
batch statistics to carry, so it is a pure function of its parameters.

Call (`train` is a Python bool, unused: no dropout):
  `logits, aux = model.apply(variables, images, train=bool)`
`aux`: 'features' `[batch, widths[-1]]` (the probes' input), 'reg_loss' 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from crl.models import layers


class ConvNet(nn.Module):
  """Convolutional stages, global average pooling, a linear 'classifier'.

  Attributes:
    num_classes: output classes.
    widths: channels of each stage (len >= 1).
    groups: GroupNorm groups (must divide every width).
  """
  num_classes: int = 2
  widths: tuple[int, ...] = (32, 64, 128, 256)
  groups: int = 8

  def __post_init__(self):
    widths = tuple(self.widths)
    if not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
      raise ValueError(f"ConvNet.widths must be a non-empty tuple of "
                       f"integers >= 1, got {self.widths!r}.")
    if any(w % self.groups for w in widths):
      raise ValueError(f"ConvNet.groups ({self.groups}) must divide every "
                       f"width, got widths {widths}.")
    if not isinstance(self.num_classes, int) or self.num_classes < 1:
      raise ValueError(f"ConvNet.num_classes must be an integer >= 1, got "
                       f"{self.num_classes!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Classifies `images` float32 `[batch, H, W, 3]` in [0, 1]."""
    if not isinstance(train, bool):
      raise TypeError(f"ConvNet: train must be a Python bool, got {train!r}.")
    if images.ndim != 4:
      raise ValueError(f"ConvNet: images must be [batch, H, W, C], got shape "
                       f"{images.shape}.")
    h = layers.standardize_images(images)
    for i, width in enumerate(self.widths):
      h = nn.Conv(width, (3, 3), strides=1 if i == 0 else 2,
                  name=f"conv_{i}")(h)
      h = nn.relu(nn.GroupNorm(num_groups=self.groups, name=f"norm_{i}")(h))
    features = jnp.einsum("bhwc->bc", h) / (h.shape[1] * h.shape[2])
    logits = nn.Dense(self.num_classes, name="classifier")(features)
    return logits.astype(jnp.float32), {
        "features": features.astype(jnp.float32),
        "reg_loss": jnp.zeros((), jnp.float32)}
