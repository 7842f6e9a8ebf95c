"""ResNet (He et al., CVPR 2016), the transfer-learning study's backbone.

  stem    = 'imagenet': Conv7x7/2 (pad 3), norm, ReLU, MaxPool3x3/2 (pad 1)
            'small':    Conv3x3/1 (pad 1), norm, ReLU      (32 px images)
  stages  = 4 stages of `blocks` blocks, channels width * (1, 2, 4, 8)
            (x4 at the output of a bottleneck block); stride 2 in the
            first block of stages 2-4
  logits  = classifier(mean_hw(stages(stem(standardize(images)))))

Blocks, as in timm's `resnet.py` (ResNet v1.5: the stride sits in the 3x3):
  basic       conv3x3/s, norm, ReLU, conv3x3, norm, + shortcut, ReLU
  bottleneck  conv1x1, norm, ReLU, conv3x3/s, norm, ReLU, conv1x1 (x4),
              norm, + shortcut, ReLU
  shortcut    identity, or conv1x1/s + norm when the shape changes.
Depths: 10 = basic (1, 1, 1, 1), 18 = basic (2, 2, 2, 2),
34 = basic (3, 4, 6, 3), 26 = bottleneck (2, 2, 2, 2), 50 = bottleneck (3, 4, 6, 3). Padding is
explicit and symmetric (PyTorch's), so timm weights give timm's outputs.

Norms: 'batch' (BatchNorm, eps 1e-5; its running mean and variance live in
the `batch_stats` collection, updated when `train=True` and used when
`train=False`) or 'group' (GroupNorm with gcd(num_groups, channels) groups;
no state).

Call (`train` is a Python bool):
  eval:  `logits, aux = model.apply(variables, images, train=False)`
  train: `(logits, aux), {'batch_stats': new} = model.apply(
             variables, images, train=True, mutable=['batch_stats'])`
         (BatchNorm only; GroupNorm models are called like eval)
with images float32 `[batch, height, width, 3]` in [0, 1], standardised as
`(images - pixel_mean) / pixel_std` (timm's ImageNet weights expect
mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).

`aux` holds 'features' `[batch, channels]` (the pooled representation fed
to the Dense 'classifier') and 'reg_loss' 0.0.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl.models.layers import check_train_flag

# depth -> (block kind, blocks per stage)
DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),  # a small layout for tests and tiny runs
    18: ("basic", (2, 2, 2, 2)),
    26: ("bottleneck", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
NORMS = ("batch", "group")
STEMS = ("imagenet", "small")
EXPANSION = {"basic": 1, "bottleneck": 4}
BN_EPS = 1e-5


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False, name=name)


class _Norm(nn.Module):
  """BatchNorm or GroupNorm of `[batch, height, width, channels]`."""
  kind: str
  num_groups: int
  momentum: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.kind == "batch":
      return nn.BatchNorm(use_running_average=not train,
                          momentum=self.momentum, epsilon=BN_EPS,
                          name="bn")(x)
    return nn.GroupNorm(num_groups=math.gcd(self.num_groups, x.shape[-1]),
                        epsilon=BN_EPS, name="gn")(x)


class _Block(nn.Module):
  """One residual block (`basic` or `bottleneck`); see the module docstring."""
  kind: str
  features: int  # channels of the 3x3 convs; output is x EXPANSION[kind]
  stride: int
  norm_kind: str
  num_groups: int
  bn_momentum: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    out_features = self.features * EXPANSION[self.kind]

    def norm(name):
      return _Norm(self.norm_kind, self.num_groups, self.bn_momentum,
                   name=name)

    if self.kind == "basic":
      h = nn.relu(norm("norm1")(_conv(self.features, 3, self.stride,
                                      "conv1")(x), train=train))
      h = norm("norm2")(_conv(self.features, 3, 1, "conv2")(h), train=train)
    else:
      h = nn.relu(norm("norm1")(_conv(self.features, 1, 1, "conv1")(x),
                                train=train))
      h = nn.relu(norm("norm2")(_conv(self.features, 3, self.stride,
                                      "conv2")(h), train=train))
      h = norm("norm3")(_conv(out_features, 1, 1, "conv3")(h), train=train)
    if self.stride != 1 or x.shape[-1] != out_features:
      x = norm("downsample_norm")(
          _conv(out_features, 1, self.stride, "downsample_conv")(x),
          train=train)
    return nn.relu(x + h)


class ResNet(nn.Module):
  """ResNet image classifier.

  Attributes:
    num_classes: output classes.
    depth: 10, 18, 26, 34 or 50 (see `DEPTHS`).
    width: channels of the stem and of the first stage's 3x3 convs (64 in
      the standard ResNets).
    norm: 'batch' or 'group'.
    num_groups: GroupNorm groups (gcd with the channels is used).
    bn_momentum: BatchNorm running-average momentum (flax convention:
      `new = momentum * old + (1 - momentum) * batch`; PyTorch's 0.1 is 0.9).
    stem: 'imagenet' (7x7/2 conv and max pool) or 'small' (3x3/1 conv).
    pixel_mean: per-channel mean subtracted from the [0, 1] images.
    pixel_std: per-channel std the images are divided by.
  """
  num_classes: int = 10
  depth: int = 18
  width: int = 64
  norm: str = "batch"
  num_groups: int = 32
  bn_momentum: float = 0.9
  stem: str = "imagenet"
  pixel_mean: Sequence[float] = (0.5, 0.5, 0.5)
  pixel_std: Sequence[float] = (0.25, 0.25, 0.25)

  def __post_init__(self):
    self._validate()
    super().__post_init__()

  def _validate(self) -> None:
    """Raises ValueError naming the offending field."""
    if self.depth not in DEPTHS:
      raise ValueError(f"ResNet.depth must be one of {sorted(DEPTHS)}, got "
                       f"{self.depth!r}.")
    for field, options in (("norm", NORMS), ("stem", STEMS)):
      if getattr(self, field) not in options:
        raise ValueError(f"ResNet.{field} must be one of {options}, got "
                         f"{getattr(self, field)!r}.")
    for field in ("num_classes", "width", "num_groups"):
      value = getattr(self, field)
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"ResNet.{field} must be an integer >= 1, got "
                         f"{value!r}.")
    for field in ("pixel_mean", "pixel_std"):
      value = tuple(getattr(self, field))
      if len(value) != 3:
        raise ValueError(f"ResNet.{field} must have 3 values (RGB), got "
                         f"{value!r}.")
    if min(self.pixel_std) <= 0:
      raise ValueError(f"ResNet.pixel_std must be positive, got "
                       f"{tuple(self.pixel_std)!r}.")
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(f"ResNet.bn_momentum must be in [0, 1), got "
                       f"{self.bn_momentum!r}.")

  @property
  def has_state(self) -> bool:
    """True when the model carries `batch_stats` (BatchNorm)."""
    return self.norm == "batch"

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Classifies images.

    Args:
      images: float32 `[batch, height, width, 3]` in [0, 1].
      train: training mode (BatchNorm uses and updates batch statistics).

    Returns:
      `logits` `[batch, num_classes]` and the `aux` dict (module docstring).
    """
    check_train_flag("ResNet", train)
    kind, blocks = DEPTHS[self.depth]
    def norm(name):
      return _Norm(self.norm, self.num_groups, self.bn_momentum, name=name)

    x = ((jnp.asarray(images, jnp.float32) - jnp.asarray(self.pixel_mean)) /
         jnp.asarray(self.pixel_std))
    if self.stem == "imagenet":
      x = _conv(self.width, 7, 2, "stem_conv")(x)
      x = nn.relu(norm("stem_norm")(x, train=train))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = _conv(self.width, 3, 1, "stem_conv")(x)
      x = nn.relu(norm("stem_norm")(x, train=train))
    for stage, num_blocks in enumerate(blocks):
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = _Block(kind, self.width * 2**stage, stride, self.norm,
                   self.num_groups, self.bn_momentum,
                   name=f"stage{stage + 1}_block{block}")(x, train=train)
    features = jnp.mean(x, axis=(1, 2))  # [B, C]
    logits = nn.Dense(self.num_classes, name="classifier")(features)
    aux = {"features": features, "reg_loss": jnp.zeros((), jnp.float32)}
    return logits.astype(jnp.float32), aux
