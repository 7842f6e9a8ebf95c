"""Building blocks shared by NAC, Perceiver IO, ViT and Neural Interpreters.

Conventions: `B` batch, `V` input tokens, `U` receiving modules, `W` sending
modules, `H` heads, `C` channels. Every block takes a keyword-only
`deterministic` flag; stochastic depth draws from the rng stream 'dropout'.

The module-conditioned linear layer (ModFC) is the core primitive: a weight
matrix `W` shared by all modules, modulated per module by its code `c_u`,
`y = W (x * scale(c_u)) + b`. That equals a per-module weight
`W diag(scale(c_u))` while storing only the code.

This module holds ModFC, the residual pieces (LayerScale, DropPath), the
feed-forward block and the image standardisation; attention between modules
is in `crl.models.attention`, the image tokenizer in `crl.models.tokenizer`.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGE_MEAN = 0.5
IMAGE_STD = 0.25

MODFC_MODES = ("one_plus", "plain_scale", "dense")
# 'crl': lecun-normal ModFC weights, flax defaults in the tokenizer.
# 'official': as the official PyTorch NAC: ModFC weight and code projection
# U(+-1/sqrt(fan_in)) (torch's kaiming_uniform(a=sqrt(5))), zero bias;
# ConvNeXt conv/linear weights timm's trunc_normal_(std=0.02) (cut at +-2
# absolute, i.e. +-100 std), zero bias.
INIT_SCHEMES = ("crl", "official")
FFN_KINDS = ("geglu", "gelu")

_SCALE_NORM_EPS = 1e-6


def check_train_flag(model_name: str, train) -> None:
  """Raises a clear ValueError when `train` is traced rather than a bool."""
  if isinstance(train, jax.core.Tracer):
    raise ValueError(
        f"{model_name}: `train` must be a Python bool, not a traced value; "
        "jit with functools.partial(model.init, train=False) or "
        "jax.jit(..., static_argnames='train').")


def standardize_images(images: jax.Array) -> jax.Array:
  """Maps images in [0, 1] to roughly zero mean and unit scale.

  Args:
    images: float `[batch, height, width, 3]` in [0, 1].

  Returns:
    `(images - 0.5) / 0.25`, same shape, float32.
  """
  return (jnp.asarray(images, jnp.float32) - IMAGE_MEAN) / IMAGE_STD


def _plain_layer_norm(x: jax.Array, eps: float = _SCALE_NORM_EPS) -> jax.Array:
  """Layer norm over the last axis without a learned scale or offset."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.var(x, axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def check_init(init: str) -> None:
  """Raises ValueError unless `init` is one of `INIT_SCHEMES`."""
  if init not in INIT_SCHEMES:
    raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}.")


def _linear_init(init: str):
  """Weight initialiser of ModFC kernels / code projections (`[in, out]`)."""
  check_init(init)
  if init == "official":
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
  return nn.initializers.lecun_normal()


class ModFC(nn.Module):
  """Module-conditioned linear layer: `y = W (x * scale(c)) + b`.

  `scale(c) = g * LN(W_c c)` ('plain_scale') or `1 + g * LN(W_c c)`
  ('one_plus'), where `LN` has no affine parameters and `g` is a learnable
  scalar gain. Mode 'dense' drops the modulation: a plain shared Dense layer
  (the NAC-as-Perceiver ablation).

  Parameters: 'kernel' `[in, out]`, 'bias' `[out]`, 'code_proj'
  `[code, in]` and the scalar 'gain'.

  Attributes:
    in_features: input channels.
    features: output channels.
    code_features: channels of the conditioning code.
    mode: 'one_plus', 'plain_scale' or 'dense'.
    gain_init: initial value of the gain `g`.
    use_bias: whether to add `b`.
    norm_eps: epsilon of the LayerNorm `LN` of the scale (1e-5 in the
      official NAC's `F.layer_norm`).
    init_scheme: weight initialisation scheme, see `INIT_SCHEMES`.
  """
  in_features: int
  features: int
  code_features: int
  mode: str = "one_plus"
  gain_init: float = 0.1
  use_bias: bool = True
  norm_eps: float = _SCALE_NORM_EPS
  init_scheme: str = "crl"

  def setup(self):
    if self.mode not in MODFC_MODES:
      raise ValueError(f"ModFC mode must be one of {MODFC_MODES}, got "
                       f"{self.mode!r}.")
    self.kernel = self.param("kernel", _linear_init(self.init_scheme),
                             (self.in_features, self.features))
    if self.use_bias:
      self.bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.mode != "dense":
      self.code_proj = self.param("code_proj", _linear_init(self.init_scheme),
                                  (self.code_features, self.in_features))
      self.gain = self.param("gain", nn.initializers.constant(self.gain_init),
                             ())

  def scale(self, codes: jax.Array) -> Optional[jax.Array]:
    """The per-module input scale.

    Args:
      codes: `[..., modules, code]`.

    Returns:
      `[..., modules, in]`, or None in 'dense' mode (scale 1).
    """
    if self.mode == "dense":
      return None
    s = self.gain * _plain_layer_norm(
        jnp.einsum("...c,ci->...i", codes, self.code_proj), self.norm_eps)
    return 1.0 + s if self.mode == "one_plus" else s

  def weights(self) -> tuple[jax.Array, Optional[jax.Array]]:
    """Returns `(W [in, out], b [out] or None)`."""
    return self.kernel, (self.bias if self.use_bias else None)

  def project(self, x: jax.Array) -> jax.Array:
    """Applies the shared `W x + b` to already-scaled inputs `[..., in]`."""
    y = jnp.einsum("...i,io->...o", x, self.kernel)
    return y + self.bias if self.use_bias else y

  def __call__(self, x: jax.Array, codes: jax.Array) -> jax.Array:
    """Applies the layer.

    Args:
      x: `[..., modules, in]`.
      codes: `[modules, code]` (broadcast against `x`).

    Returns:
      `[..., modules, out]`.
    """
    s = self.scale(codes)
    return self.project(x if s is None else x * s)


class LayerScale(nn.Module):
  """Per-channel learnable residual scale (`x * gamma`, gamma init small)."""
  init_value: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gamma = self.param("scale", nn.initializers.constant(self.init_value),
                       (x.shape[-1],))
    return x * gamma


class DropPath(nn.Module):
  """Stochastic depth: drops a residual branch per example.

  Uses the rng stream 'dropout'. Kept branches are scaled by `1 / (1 - rate)`.
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0.0)


def residual(x: jax.Array, branch: jax.Array,
              layer_scale_init: Optional[float], drop_path: float,
              deterministic: bool, name: str) -> jax.Array:
  """`x + DropPath(LayerScale(branch))`; call inside a compact method."""
  if layer_scale_init is not None:
    branch = LayerScale(layer_scale_init, name=f"{name}_layer_scale")(branch)
  if drop_path > 0.0:
    branch = DropPath(drop_path, name=f"{name}_drop_path")(
        branch, deterministic=deterministic)
  return x + branch


def softmax(logits: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax computed in float32, returned in the logits' dtype (mixed
  precision: `crl.models.precision`)."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=axis).astype(
      logits.dtype)


class ModFeedForward(nn.Module):
  """Pre-norm feed-forward block built from ModFC, with residual.

  'geglu': `ModFC(C -> 2 hidden)`, `a * gelu(gate)`, `ModFC(hidden -> C)`;
  'gelu': `ModFC(C -> hidden)`, gelu, `ModFC(hidden -> C)`.

  Attributes:
    features: state channels.
    hidden: hidden channels.
    code_features: code channels.
    kind: 'geglu' or 'gelu'.
    modfc_mode: see `ModFC`.
    modfc_gain_init: see `ModFC`.
    layer_scale_init: LayerScale init, None for no LayerScale.
    drop_path: stochastic depth rate.
    norm_eps: epsilon of the LayerNorm (and of ModFC's scale norm).
    init_scheme: weight initialisation scheme, see `INIT_SCHEMES`.
    gelu_approximate: tanh-approximate GELU instead of the exact (erf) one.
  """
  features: int
  hidden: int
  code_features: int
  kind: str = "geglu"
  modfc_mode: str = "one_plus"
  modfc_gain_init: float = 0.1
  layer_scale_init: Optional[float] = None
  drop_path: float = 0.0
  norm_eps: float = 1e-6
  init_scheme: str = "crl"
  gelu_approximate: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, codes: jax.Array, *,
               deterministic: bool) -> jax.Array:
    """Applies the block.

    Args:
      x: `[batch, modules, features]`.
      codes: `[modules, code]`.
      deterministic: disables DropPath.

    Returns:
      `[batch, modules, features]`.
    """
    if self.kind not in FFN_KINDS:
      raise ValueError(f"ffn must be one of {FFN_KINDS}, got {self.kind!r}.")

    def modfc(in_features, features, name):
      return ModFC(in_features, features, self.code_features, self.modfc_mode,
                   self.modfc_gain_init, True, self.norm_eps,
                   self.init_scheme,
                   name=name)

    h = nn.LayerNorm(epsilon=self.norm_eps, name="norm")(x)
    if self.kind == "geglu":
      h = modfc(self.features, 2 * self.hidden, "fc1")(h, codes)
      a, gate = jnp.split(h, 2, axis=-1)
      h = a * nn.gelu(gate, approximate=self.gelu_approximate)
    else:
      h = nn.gelu(modfc(self.features, self.hidden, "fc1")(h, codes),
                  approximate=self.gelu_approximate)
    h = modfc(self.hidden, self.features, "fc2")(h, codes)
    return residual(x, h, self.layer_scale_init, self.drop_path,
                    deterministic, "ffn")

