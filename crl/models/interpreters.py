"""Neural Interpreters (Gondal, Rahaman et al., NeurIPS 2021), a NAC baseline.

Tokens are routed to *functions* by type, layer by layer and per input:

  tokens = [cls; PatchEmbed(images) + positions]           [B, T, D]
  program = num_scripts scripts (weights not shared); a script runs one
    function pod num_iterations times (weights shared):
      t_i   = TypeMLP(LN(x_i)) on the unit sphere           [B, T, d_sig]
      d_ui  = 1 - cos(s_u, t_i)                             [B, U, T]
      C~_ui = exp(-d_ui / sigma) * [d_ui <= tau]             (straight-through)
      C_ui  = C~_ui / (eps + sum_u C~_ui)                    (over functions)
      per function u (code c_u), with ModLin(x; c) = W (x * LN(W_c c)) + b:
        a_ui = x_i + C_ui * ModAttn_u(LN(x))_i               (attention among
               tokens; weights a_urs * C_ur * C_us renormalised over s)
        y_ui = a_ui + C_ui * ModMLP_u(LN(a_ui))
      x_i <- sum_u C_ui y_ui + (1 - sum_u C_ui) x_i
  logits = classifier(LN(cls))

Everything is recomputed per input and per iteration (dynamic routing). The
function signatures `s_u` ('function_signatures', d_sig) and codes `c_u`
('function_codes', d_code) are parameters of each script.

NaN safety (a community reimplementation failed from NaNs in the masked
kernel). Truncated pairs are exact zeros (never log 0 or inf - inf); the
normaliser `eps + max(sum_u C~_ui, K_min)` with `K_min = exp(-tau / sigma)`
(a stop-gradient) equals the published `eps + sum_u C~_ui` whenever some
function is compatible (every untruncated value is >= K_min), and bounds the
Jacobian where every function is truncated for a token (the published form
gives 1 / eps = 1e6 there). Such a token gets `C_ui = 0` for all u and passes
through unchanged (the `(1 - sum_u C_ui) x_i` term, with a stop-gradient
weight; the published code zeroes it), while its straight-through gradient
(the published one) still reaches types and signatures.
The attention renormalisation has `eps` in its denominator and its rows are
gated by `C_ur` afterwards, so cut rows contribute exactly zero.

Deviations from the published code (github nasimrahaman/neural-interpreter,
digits preset), all deliberate:
- query/key width is num_heads x head_dim (the code's query/key projections
  are num_heads x (num_heads x head_dim) wide); values and the post-attention
  ModLin are d_model wide as in the code;
- learned absolute positions are added to the patch tokens (the digits
  preset uses only the relative positional bias, which is the option
  `relative_positions`, 'sep_sum' mode with per-function offsets, here
  parameterised directly as per-head tables);
- ModLin is `layers.ModFC` in 'plain_scale' mode: an extra learnable scalar
  gain (init 1) multiplies the scale;
- the bandwidth is learned as log sigma (always positive);
- function dropout drops (example, function, token) pairs before the
  normalisation (the code multiplies per-(example, function) outputs after
  mixing and rescales at eval; here eval needs no rescaling);
- no vector quantisation of types (off in the digits preset) and no
  function "output signatures" (detached and unused by the forward pass).

Call (`train` is a Python bool):
  `logits, aux = model.apply(variables, images, train=bool,
                             rngs={'dropout': k})`
with images float32 `[batch, height, width, 3]` in [0, 1]; 'dropout' drives
function dropout (needed only with `train=True` and `function_dropout > 0`).

`aux` holds
  'features': `[batch, d_model]` the normalised class token(s) fed to the
    final Dense 'classifier';
  'reg_loss': 0.0 (no regulariser);
  'compatibility': `[scripts, iterations, batch, functions, tokens]` C_ui
    (tokens: the class tokens first, then the patches in row-major order);
  'truncated_fraction': scalar, the fraction of (example, function, token)
    pairs cut by the truncation, over all scripts and iterations;
  'uncovered_fraction': scalar, the fraction of (example, token) pairs with
    no compatible function (after function dropout), which pass through.

Capacity extension (after training, add functions and train only those):
  `crl.models.interpreter_capacity`. The blocks are in
  `crl.models.interpreter_blocks`.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl.models import layers
from crl.models.interpreter_blocks import Script

MODLIN_MODES = ("plain_scale", "one_plus")


class NeuralInterpreter(nn.Module):
  """Neural Interpreter image classifier.

  Defaults follow the digits preset of the published code (32 px images,
  4 px patches, d 192, code 192, types 24, 5 functions, 8 iterations, 1
  script, 4 heads x 32, truncation 1.42, learned bandwidth init 1, fixed
  signatures, relative positional bias): 487,577 parameters with 10
  classes at 32 px.

  Attributes:
    num_classes: output classes.
    patch_size: patch size and stride in pixels.
    d_model: token channels D.
    d_code: function code channels.
    d_sig: type / signature channels.
    type_hidden: hidden channels of the type MLP; None: d_model.
    type_depth: Dense layers of the type MLP.
    num_functions: functions per script U.
    num_iterations: iterations of each script's function pod.
    num_scripts: scripts (weights not shared between scripts).
    num_heads: attention heads.
    head_dim: query/key channels per head (values: d_model / num_heads).
    mlp_hidden: hidden channels of the ModMLP; None: d_model.
    num_cls_tokens: learned class tokens (features: their normalised mean).
    modlin_mode: 'plain_scale' (W (x * g LN(W_c c)) + b, the paper's ModLin)
      or 'one_plus' (W (x * (1 + g LN(W_c c))) + b).
    modlin_gain_init: initial ModLin gain g.
    kernel_tau: truncation of the compatibility kernel (None: none).
    kernel_sigma: bandwidth (initial value when learned).
    learn_sigma: learn the bandwidth (one per script).
    freeze_signatures: signatures receive no gradient (fixed signatures).
    freeze_codes: codes receive no gradient.
    num_frozen_functions: the first k functions' signatures and codes
      receive no gradient (capacity extension; see `extend_capacity`).
    function_dropout: probability of dropping a (function, token) pair
      before the normalisation, in training.
    relative_positions: relative positional bias in the attention logits.
    remat: rematerialise every iteration in the backward pass (activation
      memory of one iteration per script instead of all of them, for about
      one more forward pass of compute).
  """
  num_classes: int = 10
  patch_size: int = 4
  d_model: int = 192
  d_code: int = 192
  d_sig: int = 24
  type_hidden: Optional[int] = None
  type_depth: int = 2
  num_functions: int = 5
  num_iterations: int = 8
  num_scripts: int = 1
  num_heads: int = 4
  head_dim: int = 32
  mlp_hidden: Optional[int] = None
  num_cls_tokens: int = 1
  modlin_mode: str = "plain_scale"
  modlin_gain_init: float = 1.0
  kernel_tau: Optional[float] = 1.4202567871309753
  kernel_sigma: float = 1.0
  learn_sigma: bool = True
  freeze_signatures: bool = True
  freeze_codes: bool = False
  num_frozen_functions: int = 0
  function_dropout: float = 0.0
  relative_positions: bool = True
  remat: bool = False

  def __post_init__(self):
    self._validate()
    super().__post_init__()

  def _validate(self) -> None:
    """Raises ValueError naming the offending field."""
    def integer(field, minimum):
      value = getattr(self, field)
      if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"NeuralInterpreter.{field} must be an integer >= "
                         f"{minimum}, got {value!r}.")

    for field in ("num_classes", "patch_size", "d_model", "d_code", "d_sig",
                  "type_depth", "num_functions", "num_iterations",
                  "num_scripts", "num_heads", "head_dim", "num_cls_tokens"):
      integer(field, 1)
    integer("num_frozen_functions", 0)
    for field in ("type_hidden", "mlp_hidden"):
      if getattr(self, field) is not None:
        integer(field, 1)
    if self.modlin_mode not in MODLIN_MODES:
      raise ValueError(f"NeuralInterpreter.modlin_mode must be one of "
                       f"{MODLIN_MODES}, got {self.modlin_mode!r}.")
    if self.d_model % self.num_heads:
      raise ValueError(
          f"NeuralInterpreter.d_model={self.d_model} must be divisible by "
          f"num_heads={self.num_heads} (values are split over heads).")
    if self.num_frozen_functions > self.num_functions:
      raise ValueError(
          f"NeuralInterpreter.num_frozen_functions="
          f"{self.num_frozen_functions} must be <= num_functions="
          f"{self.num_functions}.")
    if self.kernel_tau is not None and not 0.0 < self.kernel_tau <= 2.0:
      raise ValueError(f"NeuralInterpreter.kernel_tau must be None or in "
                       f"(0, 2], got {self.kernel_tau}.")
    if self.kernel_sigma <= 0.0:
      raise ValueError(f"NeuralInterpreter.kernel_sigma must be > 0, got "
                       f"{self.kernel_sigma}.")
    if not 0.0 <= self.function_dropout < 1.0:
      raise ValueError(f"NeuralInterpreter.function_dropout must be in "
                       f"[0, 1), got {self.function_dropout}.")

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Classifies images.

    Args:
      images: float32 `[batch, height, width, 3]` in [0, 1]; height and width
        divisible by `patch_size`.
      train: training mode (function dropout).

    Returns:
      `logits` `[batch, num_classes]` and the `aux` dict (module docstring).
    """
    layers.check_train_flag("NeuralInterpreter", train)
    height, width = images.shape[1:3]
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f"NeuralInterpreter: image size {height}x{width} must "
                       f"be divisible by patch_size={p}.")
    d = self.d_model
    x = layers.standardize_images(images)
    batch = x.shape[0]
    x = nn.Conv(d, (p, p), strides=(p, p), padding="VALID",
                name="patch_embedding")(x)
    grid = (x.shape[1], x.shape[2])
    x = x.reshape(batch, -1, d)  # [B, P, D], row-major patches
    x = x + self.param("position_embedding", nn.initializers.normal(0.02),
                       x.shape[1:])
    n_cls = self.num_cls_tokens
    cls = self.param("cls_tokens", nn.initializers.normal(0.02), (n_cls, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, n_cls, d)), x], axis=1)

    pod = (("d_model", d), ("d_code", self.d_code), ("d_sig", self.d_sig),
           ("type_hidden", self.type_hidden or d),
           ("type_depth", self.type_depth), ("num_heads", self.num_heads),
           ("head_dim", self.head_dim), ("mlp_hidden", self.mlp_hidden or d),
           ("modlin_mode", self.modlin_mode),
           ("modlin_gain_init", self.modlin_gain_init),
           ("kernel_tau", self.kernel_tau),
           ("function_dropout", self.function_dropout),
           ("relative_positions", self.relative_positions),
           ("num_cls_tokens", n_cls), ("grid", grid), ("train", train))
    compat, truncated, uncovered = [], [], []
    for s in range(self.num_scripts):
      x, stats = Script(
          self.num_functions, self.num_iterations, self.num_frozen_functions,
          self.freeze_signatures, self.freeze_codes, self.kernel_sigma,
          self.learn_sigma, pod, self.remat, name=f"script{s}")(x)
      compat.append(stats["compatibility"])
      truncated.append(stats["truncated"])
      uncovered.append(stats["uncovered"])

    features = jnp.mean(nn.LayerNorm(name="head_norm")(x[:, :n_cls]), axis=1)
    logits = nn.Dense(self.num_classes, name="classifier")(features)
    aux = {
        "features": features,
        "reg_loss": jnp.zeros((), jnp.float32),
        "compatibility": jnp.stack(compat),
        "truncated_fraction": jnp.mean(jnp.stack(truncated)),
        "uncovered_fraction": jnp.mean(jnp.stack(uncovered)),
    }
    return logits.astype(jnp.float32), aux


# Capacity extension --------------------------------------------------------
