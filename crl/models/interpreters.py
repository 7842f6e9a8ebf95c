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
  `new_model, new_params = extend_capacity(model, params, num_new, key)`,
  then train with `optax.chain(tx, freeze_updates(trainable_mask(
  new_params, new_model.num_frozen_functions)))`.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from crl.models import kernel as kernel_lib
from crl.models import layers

NORMALIZATION_EPS = 1e-6
MODLIN_MODES = ("plain_scale", "one_plus")
EXTENSION_INITS = ("random", "mirror")
FUNCTION_PARAMS = ("function_signatures", "function_codes")


def compatibility(distance: jax.Array, sigma: jax.Array | float,
                  tau: Optional[float], keep: Optional[jax.Array] = None,
                  eps: float = NORMALIZATION_EPS
                  ) -> tuple[jax.Array, jax.Array]:
  """Truncated, normalised function-token compatibility.

  `C~ = exp(-d / sigma) * [d <= tau] * keep` (straight-through truncation:
  the gradient is that of the untruncated kernel), then
  `C = C~ / (eps + max(sum_u C~, exp(-tau / sigma)))` over the function axis.
  A pair exactly at `d = tau` is kept.

  Args:
    distance: `[..., functions, tokens]` cosine distances in [0, 2].
    sigma: bandwidth (scalar, > 0).
    tau: truncation; None: none.
    keep: optional float mask (function dropout), broadcastable to
      `distance`, 1 where a pair is kept.
    eps: the normaliser's epsilon.

  Returns:
    `C` shaped like `distance` (sums to `S / (eps + S)` ~ 1 over functions
    where a function is compatible, exactly 0 where none is) and the bool
    truncation link (True where `d <= tau`).
  """
  kern = kernel_lib.signature_kernel(distance, sigma, tau)
  k = kern["kernel"]
  if keep is not None:
    k = k * keep
  total = jnp.sum(k, axis=-2, keepdims=True)
  floor = jax.lax.stop_gradient(
      jnp.exp(-(2.0 if tau is None else tau) / jnp.asarray(sigma)))
  return k / (eps + jnp.where(total >= floor, total, floor)), kern["link"]


class TypeInference(nn.Module):
  """Token types `t = MLP(LN(x))`: [LN, Dense, GELU] x (depth - 1), Dense.

  Attributes:
    features: type channels d_sig.
    hidden: hidden channels.
    depth: number of Dense layers (>= 1).
  """
  features: int
  hidden: int
  depth: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`[..., d_model]` -> `[..., d_sig]` (not normalised)."""
    h = nn.LayerNorm(name="norm")(x)
    for i in range(self.depth - 1):
      h = nn.gelu(nn.Dense(self.hidden, name=f"fc{i + 1}")(h),
                  approximate=False)
    return nn.Dense(self.features, name=f"fc{self.depth}")(h)


def relative_index(grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Relative row and column offsets between the grid's tokens.

  Args:
    grid: `(rows, cols)` of the patch grid.

  Returns:
    Two int arrays `[P, P]` (P = rows * cols, row-major) indexing tables of
    `2 * rows - 1` and `2 * cols - 1` entries.
  """
  rows, cols = grid
  r, c = np.divmod(np.arange(rows * cols), cols)
  return (r[None, :] - r[:, None] + rows - 1,
          c[None, :] - c[:, None] + cols - 1)


class FunctionPod(nn.Module):
  """One iteration of a script: type inference, routing, ModAttn + ModMLP.

  Shaped for `nn.scan` over iterations: `(x, consts) -> (x, outputs)` with
  the parameters broadcast (shared by all iterations).

  Attributes:
    d_model: token channels D.
    d_code: code channels.
    d_sig: type / signature channels.
    type_hidden: hidden channels of the type MLP.
    type_depth: Dense layers of the type MLP.
    num_heads: attention heads.
    head_dim: query/key channels per head.
    mlp_hidden: hidden channels of the ModMLP.
    modlin_mode: 'plain_scale' (W (x * g LN(W_c c)) + b) or 'one_plus'.
    modlin_gain_init: initial gain g.
    kernel_tau: truncation (None: none).
    function_dropout: probability of dropping a (function, token) pair.
    relative_positions: add the relative positional bias to the logits.
    num_cls_tokens: leading tokens without a grid position.
    grid: `(rows, cols)` of the patch grid.
    train: training mode (function dropout).
  """
  d_model: int
  d_code: int
  d_sig: int
  type_hidden: int
  type_depth: int
  num_heads: int
  head_dim: int
  mlp_hidden: int
  modlin_mode: str
  modlin_gain_init: float
  kernel_tau: Optional[float]
  function_dropout: float
  relative_positions: bool
  num_cls_tokens: int
  grid: tuple[int, int]
  train: bool

  def _modlin(self, in_features: int, features: int, use_bias: bool,
              name: str) -> layers.ModFC:
    return layers.ModFC(in_features, features, self.d_code, self.modlin_mode,
                        self.modlin_gain_init, use_bias, name=name)

  def _position_bias(self, codes: jax.Array) -> jax.Array:
    """Relative positional logits `[U, H, T, T]`, zero on class tokens."""
    rows, cols = self.grid
    heads = self.num_heads
    init = nn.initializers.normal(0.02)
    row_table = self.param("relative_row_bias", init, (2 * rows - 1, heads))
    col_table = self.param("relative_col_bias", init, (2 * cols - 1, heads))
    function_offset = nn.Dense(heads, use_bias=False,
                               name="relative_function_bias")(codes)  # [U, H]
    r_idx, c_idx = relative_index(self.grid)
    bias = row_table[r_idx] + col_table[c_idx]  # [P, P, H]
    bias = (jnp.transpose(bias, (2, 0, 1))[None]
            + function_offset[:, :, None, None])  # [U, H, P, P]
    n = self.num_cls_tokens
    return jnp.pad(bias, ((0, 0), (0, 0), (n, 0), (n, 0)))

  @nn.compact
  def __call__(self, x: jax.Array, signatures: jax.Array, codes: jax.Array,
               sigma: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs the pod once.

    Args:
      x: tokens `[batch, tokens, d_model]`.
      signatures: `[functions, d_sig]`.
      codes: `[functions, d_code]`.
      sigma: kernel bandwidth (scalar).

    Returns:
      New tokens `[batch, tokens, d_model]` and a dict with 'compatibility'
      `[batch, functions, tokens]`, 'truncated' and 'uncovered' (fractions).
    """
    b, t, d = x.shape
    u = signatures.shape[0]
    heads, dim = self.num_heads, self.head_dim

    # ---- Routing: types, distances, compatibilities [B, U, T].
    types = TypeInference(self.d_sig, self.type_hidden, self.type_depth,
                          name="type_inference")(x)
    distance = kernel_lib.cosine_distance(
        signatures, types.reshape(b * t, self.d_sig))
    distance = jnp.transpose(distance.reshape(u, b, t), (1, 0, 2))
    keep = None
    if self.train and self.function_dropout > 0.0:
      keep = jax.random.bernoulli(self.make_rng("dropout"),
                                  1.0 - self.function_dropout,
                                  distance.shape).astype(x.dtype)
    sigma = jnp.asarray(sigma, x.dtype)
    compat, link = compatibility(distance, sigma, self.kernel_tau, keep)
    c = jnp.transpose(compat, (0, 2, 1))[..., None]  # [B, T, U, 1]

    # ---- ModAttn: per-function attention among tokens, [B, T, U, D].
    # (ModFC broadcasts the codes' scales `[U, in]` against `[..., U, in]`;
    # a batched per-function matmul measured 4x slower on CPU.)
    xn = nn.LayerNorm(name="attention_norm")(x)
    xn = jnp.broadcast_to(xn[:, :, None, :], (b, t, u, d))
    q = self._modlin(d, heads * dim, False, "query")(xn, codes)
    k = self._modlin(d, heads * dim, False, "key")(xn, codes)
    v = self._modlin(d, d, True, "value")(xn, codes)
    q = q.reshape(b, t, u, heads, dim)
    k = k.reshape(b, t, u, heads, dim)
    v = v.reshape(b, t, u, heads, d // heads)
    logits = jnp.einsum("bruhc,bsuhc->buhrs", q, k) / math.sqrt(dim)
    if self.relative_positions:
      logits = logits + self._position_bias(codes)[None]
    weights = layers.softmax(logits)
    weights = (weights * compat[:, :, None, :, None]
               * compat[:, :, None, None, :])
    weights = weights / (jnp.sum(weights, axis=-1, keepdims=True)
                         + NORMALIZATION_EPS)
    out = jnp.einsum("buhrs,bsuhc->bruhc", weights, v).reshape(b, t, u, d)
    out = self._modlin(d, d, True, "attention_out")(out, codes)
    h = x[:, :, None, :] + c * out

    # ---- ModMLP, gated by the compatibility.
    m = nn.LayerNorm(name="mlp_norm")(h)
    m = nn.gelu(self._modlin(d, self.mlp_hidden, True, "mlp_fc1")(m, codes),
                approximate=False)
    m = self._modlin(self.mlp_hidden, d, True, "mlp_fc2")(m, codes)
    h = h + c * m

    # ---- Mix the functions' outputs back; uncovered tokens pass through.
    # The pass-through weight is a stop-gradient: the gradient with respect
    # to C is the published one (whose mixing has no pass-through), so a
    # token that no function takes still learns whether it should be taken.
    coverage = jax.lax.stop_gradient(jnp.sum(c, axis=2))  # [B, T, 1]
    x = (jnp.einsum("btu,btuc->btc", c[..., 0], h)
         + (1.0 - coverage) * x).astype(x.dtype)  # scan carry dtype
    covered = jnp.any(compat > 0.0, axis=1)  # [B, T]
    stats = {
        "compatibility": compat,
        "truncated": 1.0 - jnp.mean(link.astype(jnp.float32)),
        "uncovered": 1.0 - jnp.mean(covered.astype(jnp.float32)),
    }
    return x, stats


def freeze_rows(p: jax.Array, num_frozen: int, all_rows: bool) -> jax.Array:
  """`p` with no gradient to its first `num_frozen` rows (all if `all_rows`).

  Args:
    p: `[functions, channels]`.
    num_frozen: leading rows to freeze.
    all_rows: freeze every row.

  Returns:
    `p` (same values).
  """
  if all_rows:
    return jax.lax.stop_gradient(p)
  if num_frozen == 0:
    return p
  return jnp.concatenate([jax.lax.stop_gradient(p[:num_frozen]),
                          p[num_frozen:]], axis=0)


class Script(nn.Module):
  """A function pod iterated `num_iterations` times with shared weights.

  Owns the functions' signatures and codes; the first `num_frozen_functions`
  rows receive no gradient (capacity extension).

  Attributes:
    num_functions: functions U.
    num_iterations: iterations of the pod.
    num_frozen_functions: leading functions whose signature and code rows
      get no gradient.
    freeze_signatures: no gradient to any signature (fixed signatures).
    freeze_codes: no gradient to any code.
    kernel_sigma: bandwidth (initial value when learned).
    learn_sigma: learn the bandwidth (parameter 'kernel_log_sigma').
    pod: keyword arguments of `FunctionPod` (a tuple of pairs).
    remat: recompute each iteration's activations in the backward pass
      instead of storing them for every iteration.
  """
  num_functions: int
  num_iterations: int
  num_frozen_functions: int
  freeze_signatures: bool
  freeze_codes: bool
  kernel_sigma: float
  learn_sigma: bool
  pod: tuple[tuple[str, Any], ...]
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`[batch, tokens, d_model]` -> same, and per-iteration statistics."""
    pod = dict(self.pod)
    init = nn.initializers.normal(1.0)
    signatures = self.param("function_signatures", init,
                            (self.num_functions, pod["d_sig"]))
    codes = self.param("function_codes", init,
                       (self.num_functions, pod["d_code"]))

    signatures = freeze_rows(signatures, self.num_frozen_functions,
                             self.freeze_signatures)
    codes = freeze_rows(codes, self.num_frozen_functions, self.freeze_codes)
    if self.learn_sigma:
      sigma = jnp.exp(self.param(
          "kernel_log_sigma",
          nn.initializers.constant(math.log(self.kernel_sigma)), ()))
    else:
      sigma = jnp.asarray(self.kernel_sigma, jnp.float32)

    pod_cls = (nn.remat(FunctionPod, prevent_cse=False) if self.remat
               else FunctionPod)
    scanned = nn.scan(
        pod_cls, variable_broadcast="params",
        split_rngs={"params": False, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
        length=self.num_iterations)
    return scanned(name="pod", **pod)(x, signatures, codes, sigma)


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
    if isinstance(train, jax.core.Tracer):
      raise ValueError(
          "NeuralInterpreter: `train` must be a Python bool, not a traced "
          "value; jit with functools.partial(model.init, train=False) or "
          "jax.jit(..., static_argnames='train').")
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


def _is_function_param(path: Sequence[Any]) -> bool:
  name = jax.tree_util.keystr(tuple(path))
  return any(f"['{p}']" in name for p in FUNCTION_PARAMS) and "script" in name


def extend_capacity(model: NeuralInterpreter, params: Any, num_new: int,
                    key: jax.Array, *, init: str = "random"
                    ) -> tuple[NeuralInterpreter, Any]:
  """Adds `num_new` functions to every script of a trained model.

  The new model has `num_functions + num_new` functions and
  `num_frozen_functions = num_functions` (the old functions' signatures and
  codes get no gradient). Every parameter is copied; the signature and code
  tables of each script get `num_new` new rows: N(0, 1) draws ('random', the
  initialisation of fresh functions) or copies of randomly chosen old rows
  ('mirror'). With `freeze_signatures=True` (fixed signatures, the digits
  preset) the new signatures keep their draws and the new codes learn; use
  `new_model.clone(freeze_signatures=False)` to learn new signatures too.

  Args:
    model: the trained model.
    params: its parameters (the 'params' collection).
    num_new: functions to add (>= 1).
    key: PRNG key for the new rows.
    init: 'random' or 'mirror'.

  Returns:
    `(new_model, new_params)`.
  """
  if not isinstance(num_new, (int, np.integer)) or num_new < 1:
    raise ValueError(f"extend_capacity: num_new must be an integer >= 1, got "
                     f"{num_new!r}.")
  if init not in EXTENSION_INITS:
    raise ValueError(f"extend_capacity: init must be one of "
                     f"{EXTENSION_INITS}, got {init!r}.")
  old = model.num_functions
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, len(leaves))
  new_leaves = []
  for (path, leaf), k in zip(leaves, keys):
    if _is_function_param(path):
      if leaf.shape[0] != old:
        raise ValueError(f"extend_capacity: {jax.tree_util.keystr(path)} has "
                         f"{leaf.shape[0]} rows, expected num_functions="
                         f"{old}.")
      if init == "random":
        rows = jax.random.normal(k, (num_new,) + leaf.shape[1:], leaf.dtype)
      else:
        rows = leaf[jax.random.randint(k, (num_new,), 0, old)]
      leaf = jnp.concatenate([leaf, rows], axis=0)
    new_leaves.append(leaf)
  new_model = model.clone(num_functions=old + num_new,
                          num_frozen_functions=old)
  return new_model, jax.tree_util.tree_unflatten(treedef, new_leaves)


def trainable_mask(params: Any, num_frozen_functions: int,
                   also_train: Sequence[str] = ()) -> Any:
  """Which parameter entries train after a capacity extension.

  Args:
    params: the (extended) parameters.
    num_frozen_functions: leading function rows that stay fixed.
    also_train: names of top-level parameters or submodules that train in
      full (e.g. ('classifier', 'head_norm') for a new task).

  Returns:
    A pytree like `params` of bool arrays of the same shapes: True exactly on
    the rows `>= num_frozen_functions` of every script's
    'function_signatures' and 'function_codes', and on every entry of the
    leaves under `also_train`.
  """
  def mask(path, leaf):
    if path and getattr(path[0], "key", None) in also_train:
      return jnp.ones(leaf.shape, bool)
    if _is_function_param(path):
      rows = jnp.arange(leaf.shape[0]) >= num_frozen_functions
      return jnp.broadcast_to(rows.reshape((-1,) + (1,) * (leaf.ndim - 1)),
                              leaf.shape)
    return jnp.zeros(leaf.shape, bool)

  return jax.tree_util.tree_map_with_path(mask, params)


def freeze_updates(mask: Any) -> optax.GradientTransformation:
  """Zeroes the updates where `mask` is False (chain it last).

  Chained after the optimizer (`optax.chain(tx, freeze_updates(mask))`) it
  also cancels weight decay on frozen entries, so they stay bit-identical.
  """
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda g, m: jnp.where(m, g, 0.0), updates,
                        mask), state

  return optax.GradientTransformation(init_fn, update_fn)
