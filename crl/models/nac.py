"""Neural Attentive Circuits (NAC), Rahaman et al., NeurIPS 2022.

A set of modules, each with a signature (where it sits in the graph) and a
code (which function it computes). Input modules read the image tokens through
their own code-conditioned projections; mediator modules exchange messages
along a sparse graph derived from the signatures (sampled per example during
training when the kernel is stochastic); output modules read the mediators
and produce the logits. See specs/nac.md.

Defaults are NAC-S/32: `NAC(num_classes=10)`.

Call (`train` is a Python bool: jit with `static_argnames='train'` or
`functools.partial(model.init, train=False)`):
  `logits, aux = model.apply(variables, images, train=bool,
                             rngs={'dropout': k1, 'sample': k2})`
with images float32 `[batch, height, width, 3]` in [0, 1]. The 'sample'
stream drives graph sampling and initial-state noise, 'dropout' drives
DropPath. With `train=False`, `eval_graph` 'soft'/'threshold' and no noise,
no rng is needed.

`aux` holds
  'graph': the mediator graph actually used, `[batch, U, W]` when sampled per
    example, else `[U, W]` (all ones for `complete_graph`);
  'kernel': the truncated kernel K `[U, W]`;
  'reg_loss': `graph_reg_weight * L_graph` (0.0 without regulariser);
  'readout_weights': `[batch, num_output_modules]` pooling weights (one-hot on
    module 0 for the 'single' read-out);
  'readout_graph': the output-to-mediator graph (same conventions as 'graph');
  'read_in_attention': `[batch, heads, input modules, tokens]`;
  'features': `[batch, d_state]` the pooled representation fed to the final
    Dense 'classifier' (probes and few-shot heads read it).
Here U = mediators, W = senders: the mediators, preceded by the input modules
when `inputs_are_mediators=False`.

With `mutable=['intermediates']`, `apply` also returns the sown states
'tokens' `[batch, tokens, C_tok]`, 'input_states' (after the read-in and its
FFN), 'mediator_states' (after the last propagator) and 'output_states'
(after the read-out and its FFN, before 'head_norm'), each `[batch, modules,
d_state]` and wrapped in a 1-tuple.

The module is one idea that reads best whole (its fields and its forward
pass); its hyperparameter checks are in `crl.models.nac_checks`, its
initial-state seeder in `crl.models.nac_seeder`.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crl.models import attention
from crl.models import graph_priors
from crl.models import kernel as kernel_lib
from crl.models import layers
from crl.models import nac_checks
from crl.models import tokenizer as tokenizer_lib
from crl.models.nac_seeder import StateSeeder


class NAC(nn.Module):
  """Neural Attentive Circuits image classifier.

  All fields are hyperparameters (config keys); defaults give NAC-S/32.

  Attributes:
    num_classes: output classes.
    tokenizer: 'convnext' (stem + ConvNeXt stages) or 'patch'.
    patch_size: stem / patch stride in pixels.
    stem_channels: channels after the stem (doubled by each further stage).
    tokenizer_blocks: ConvNeXt blocks per stage, one entry per stage (every
      stage after the first halves the grid); an integer n means n stages of
      one block each.
    pos_grid_channels: channels of the learned positional grid.
    d_state: module state channels.
    d_code: module code channels.
    d_sig: signature channels.
    num_input_modules: input modules (read the tokens).
    num_mediator_modules: mediator modules (the processors).
    num_output_modules: output modules (read the mediators).
    inputs_are_mediators: the input modules double as mediators (then
      num_input_modules must equal num_mediator_modules).
    initial_state: 'code' (state = code; needs d_code == d_state) or 'dense'
      (state = Dense(LN(code))).
    state_noise: learned Gaussian noise on initial states in training.
    per_layer_codes: one mediator code per propagator layer.
    num_layers: propagator layers (weights not shared).
    num_heads: heads in the propagators.
    head_dim: channels per head; None: d_state // heads.
    read_in_heads: heads in the read-in.
    read_out_heads: heads in the read-out.
    shared_read_in_projection: one Dense key/value projection of the tokens
      for all input modules (fast) instead of code-conditioned ones.
    fold_read_in: compute the code-conditioned read-in in the folded form
      (mathematically equal, much cheaper; see `attention.ReadInAttention`).
    modfc_mode: 'one_plus' (scale 1 + g LN(W_c c)), 'plain_scale'
      (g LN(W_c c)) or 'dense' (no modulation; Perceiver-like ablation).
    modfc_gain_init: initial ModFC gain g.
    ffn: 'geglu' or 'gelu'.
    ffn_hidden: hidden channels of the feed-forward blocks.
    layer_scale_init: LayerScale init; None for no LayerScale.
    drop_path: stochastic depth rate.
    qkv_bias: bias in query/key/value projections.
    readout: 'pooled' (confidence-weighted output modules) or 'single'
      (output module 0).
    kernel_tau: kernel truncation (pairs with d > tau are cut); None: none.
    kernel_sigma: kernel bandwidth (initial value when learned).
    learn_sigma: learn the bandwidth (parameter 'kernel_log_sigma').
    stochastic_kernel: sample a relaxed Bernoulli graph per example in
      training (and at eval when eval_graph == 'sample').
    kernel_temperature: relaxation temperature T.
    eval_graph: graph at eval for the stochastic kernel: 'soft' (K),
      'threshold' (K > 0.5) or 'sample'. Without the stochastic kernel, K is
      used in training and eval.
    complete_graph: no kernel mask at all (NAC-as-Perceiver ablation).
    graph_prior: None (random signatures) or a name from
      `graph_priors.known_graph_priors()`; fits the mediator signatures.
    graph_prior_kwargs: the prior's keywords (dict or ((key, value), ...)),
      e.g. (('m', 2), ('seed', 0)); empty: the prior's defaults
      (barabasi_albert: m=2, seed=0, as in NAC-S/32).
    prior_fit_steps: Adam steps of the signature fit.
    prior_fit_margin: hinge margin around tau in the fit.
    freeze_signatures: signatures receive no gradient.
    graph_regularizer: None, 'hinge' (repulsion) or 'graphon' (match the
      graph prior's adjacency; needs graph_prior).
    graph_reg_weight: lambda of the regulariser.
    hinge_threshold: h of the hinge repulsion.

  Options that select the official PyTorch code's behaviour (crl's default
  first; `configs/nac.py:official_s32` selects the official one everywhere,
  `crl.models.nac_official` ports official weights):
    head_norm: LayerNorm on the output-module states before the pooling
      (True). The official `OutputLatentPooling` has none (False). Default
      True: the pooled features that the classifier, probes and few-shot
      heads read stay on one scale whatever the read-out's residual stream.
    separate_input_codes: with inputs_are_mediators, False reads in with the
      mediator codes; True gives the input modules their own codes
      ('input_codes', official input latents) whose read-in states seed the
      mediators (official `use_input_states_as_mediator_states`). Default
      False: the spec's "input modules double as mediators", fewer
      parameters, and existing runs.
    shared_propagator_norm: one LayerNorm for receivers and senders in the
      propagators (official `share_layernorm=True`) instead of two (False).
      Default False (existing runs; the read-out always has two, as in the
      official code).
    read_out_residual: the read-out adds the output modules' states back
      (True); the official read-out has no residual (False). Default True:
      the output module's own code then stays in its state.
    graph_sampling: 'per_forward' samples one graph per example per forward
      pass, shared by all propagators (and one for the read-out); the
      official code draws a fresh graph in every attention call
      ('per_attention'). Default 'per_forward': it is what the paper
      describes (the graph is decided before the forward pass, the same at
      every layer) and is what the 'graph' aux shows. With 'per_attention',
      aux 'graph' is the first propagator's graph.
    truncation: 'straight_through' (truncated pairs exactly masked, gradient
      of the untruncated kernel) or 'clamp' (official: samples clamped to
      [eps, 1 - eps], truncated pairs not exactly masked in training, zero
      gradient), see `kernel`. Default 'straight_through': the sampled
      graph is exactly as sparse as the kernel says (no attention weight
      leaks to truncated pairs), and the kernel keeps the straight-through
      gradient that the spec asks for. (It reaches the signatures through
      the 'graphon' regulariser and the aux kernel only: a truncated pair's
      attention weight is exactly 0, so its gradient through the attention
      is 0 as well; with 'clamp' there is no gradient path at all.)
    init_scheme: 'crl' (lecun-normal ModFC, flax defaults) or 'official'
      (kaiming-uniform ModFC, truncated-normal ConvNeXt), see
      `layers.INIT_SCHEMES`. Default 'crl': the default config's measured
      accuracy was obtained with it.
    layer_norm_eps: epsilon of every LayerNorm outside the tokenizer (and of
      ModFC's scale norm): 1e-6 (flax's default) or 1e-5 (torch's, official).
      The tokenizer's LayerNorms use 1e-6 in both. Default 1e-6 (existing
      runs; on the crl_default fixture the switch moves the output-module
      states by at most 6.5e-6).
  """
  num_classes: int = 10
  tokenizer: str = "convnext"
  patch_size: int = 4
  stem_channels: int = 32
  tokenizer_blocks: Tuple[int, ...] = (1,)
  pos_grid_channels: int = 64
  d_state: int = 128
  d_code: int = 128
  d_sig: int = 64
  num_input_modules: int = 64
  num_mediator_modules: int = 64
  num_output_modules: int = 8
  inputs_are_mediators: bool = True
  initial_state: str = "code"
  state_noise: bool = False
  per_layer_codes: bool = False
  num_layers: int = 4
  num_heads: int = 4
  head_dim: Optional[int] = 32
  read_in_heads: int = 4
  read_out_heads: int = 4
  shared_read_in_projection: bool = False
  fold_read_in: bool = True
  modfc_mode: str = "one_plus"
  modfc_gain_init: float = 0.1
  ffn: str = "geglu"
  ffn_hidden: int = 256
  layer_scale_init: Optional[float] = None
  drop_path: float = 0.0
  qkv_bias: bool = False
  readout: str = "pooled"
  kernel_tau: Optional[float] = 0.9
  kernel_sigma: float = 1.0
  learn_sigma: bool = False
  stochastic_kernel: bool = True
  kernel_temperature: float = 0.5
  eval_graph: str = "soft"
  complete_graph: bool = False
  graph_prior: Optional[str] = "barabasi_albert"
  graph_prior_kwargs: Any = ()
  prior_fit_steps: int = 1000
  prior_fit_margin: float = 0.05
  freeze_signatures: bool = False
  graph_regularizer: Optional[str] = None
  graph_reg_weight: float = 0.1
  hinge_threshold: float = 0.4
  head_norm: bool = True
  separate_input_codes: bool = False
  shared_propagator_norm: bool = False
  read_out_residual: bool = True
  graph_sampling: str = "per_forward"
  truncation: str = "straight_through"
  init_scheme: str = "crl"
  layer_norm_eps: float = 1e-6

  def __post_init__(self):
    # Store the prior's keywords as a sorted tuple of pairs so the module
    # stays hashable whether a dict, a ConfigDict or pairs were given.
    kwargs = graph_priors.kwargs_dict(self.graph_prior_kwargs)
    object.__setattr__(self, "graph_prior_kwargs",
                       tuple(sorted(kwargs.items())))
    self._validate()
    super().__post_init__()
  def _validate(self) -> None:
    """Raises ValueError naming the offending field."""
    nac_checks.validate(self)

  def _sow(self, name: str, value: jax.Array) -> None:
    """Records a state for `apply(..., mutable=['intermediates'])` (not in
    `init`'s variables)."""
    if not self.is_initializing():
      self.sow("intermediates", name, value)

  def _head_dim(self, heads: int) -> int:
    return self.head_dim if self.head_dim is not None else self.d_state // heads

  def _prior_adjacency(self) -> np.ndarray:
    return graph_priors.target_adjacency(
        self.graph_prior, self.num_mediator_modules, self.graph_prior_kwargs)

  def _graph_mode(self, train: bool) -> str:
    if not self.stochastic_kernel:
      return "soft"
    return "sample" if train else self.eval_graph

  def _graph(self, kern: dict[str, jax.Array], mode: str,
             batch_size: int) -> dict[str, Any]:
    """The graph dict used for attention (None masks for the complete graph)."""
    if self.complete_graph:
      return {"graph": jnp.ones(kern["kernel"].shape, jnp.float32),
              "log_graph": None, "link": None}
    key = self.make_rng("sample") if mode == "sample" else None
    return kernel_lib.make_graph(kern, mode, key=key, batch_size=batch_size,
                                 temperature=self.kernel_temperature,
                                 truncation=self.truncation)

  @nn.compact
  def __call__(self, images: jax.Array, *,
               train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Classifies images.

    Args:
      images: float32 `[batch, height, width, 3]` in [0, 1].
      train: training mode (graph sampling, state noise, DropPath).

    Returns:
      `logits` `[batch, num_classes]` and the `aux` dict (module docstring).
    """
    layers.check_train_flag("NAC", train)
    deterministic = not train
    x = layers.standardize_images(images)
    batch = x.shape[0]
    tokens = tokenizer_lib.ImageTokenizer(
        self.tokenizer, self.patch_size, self.stem_channels,
        tokenizer_lib.tokenizer_blocks("NAC", self.tokenizer_blocks),
        self.pos_grid_channels,
        init_scheme=self.init_scheme,
        name="tokenizer")(x)
    self._sow("tokens", tokens)

    # ---- Modules: signatures and codes.
    n_in, n_med, n_out = (self.num_input_modules, self.num_mediator_modules,
                          self.num_output_modules)
    if self.graph_prior is not None:
      adjacency = self._prior_adjacency()

      def mediator_signature_init(key, shape):
        return graph_priors.fit_signatures(
            key, adjacency, shape[1], tau=self.kernel_tau,
            steps=self.prior_fit_steps, margin=self.prior_fit_margin)
    else:
      mediator_signature_init = nn.initializers.normal(1.0)
    code_init = nn.initializers.normal(1.0)
    sig_init = nn.initializers.normal(1.0)
    med_sig = self.param("mediator_signatures", mediator_signature_init,
                         (n_med, self.d_sig))
    code_shape = ((self.num_layers, n_med, self.d_code) if self.per_layer_codes
                  else (n_med, self.d_code))
    med_codes = self.param("mediator_codes", code_init, code_shape)
    out_sig = self.param("output_signatures", sig_init, (n_out, self.d_sig))
    out_codes = self.param("output_codes", code_init, (n_out, self.d_code))
    if not self.inputs_are_mediators:
      in_sig = self.param("input_signatures", sig_init, (n_in, self.d_sig))
    if not self.inputs_are_mediators or self.separate_input_codes:
      in_codes = self.param("input_codes", code_init, (n_in, self.d_code))
    if self.freeze_signatures:
      med_sig = jax.lax.stop_gradient(med_sig)
      out_sig = jax.lax.stop_gradient(out_sig)
      if not self.inputs_are_mediators:
        in_sig = jax.lax.stop_gradient(in_sig)

    def mediator_codes(layer):
      return med_codes[layer] if self.per_layer_codes else med_codes

    # ---- Kernels and graphs (independent of token content).
    if self.learn_sigma:
      sigma = jnp.exp(self.param(
          "kernel_log_sigma",
          nn.initializers.constant(math.log(self.kernel_sigma)), ()))
    else:
      sigma = self.kernel_sigma
    sender_sig = (med_sig if self.inputs_are_mediators
                  else jnp.concatenate([in_sig, med_sig], axis=0))
    straight_through = self.truncation == "straight_through"
    kern = kernel_lib.signature_kernel(
        kernel_lib.cosine_distance(med_sig, sender_sig), sigma, self.kernel_tau,
        straight_through)
    readout_kern = kernel_lib.signature_kernel(
        kernel_lib.cosine_distance(out_sig, med_sig), sigma, self.kernel_tau,
        straight_through)
    mode = self._graph_mode(train)
    graph = self._graph(kern, mode, batch)
    readout_graph = self._graph(readout_kern, mode, batch)
    # 'per_attention': a fresh graph for every propagator after the first.
    fresh_graphs = (mode == "sample" and not self.complete_graph
                    and self.graph_sampling == "per_attention")

    common = dict(modfc_mode=self.modfc_mode,
                  modfc_gain_init=self.modfc_gain_init,
                  layer_scale_init=self.layer_scale_init,
                  norm_eps=self.layer_norm_eps, init_scheme=self.init_scheme)
    ffn = lambda name: layers.ModFeedForward(  # pylint: disable=g-long-lambda
        self.d_state, self.ffn_hidden, self.d_code, self.ffn,
        drop_path=self.drop_path, name=name, **common)
    seeder = StateSeeder(self.d_state, self.initial_state, self.state_noise,
                         name="state_seeder")

    # ---- Read-in: input modules query the tokens.
    read_in_codes = (mediator_codes(0) if self.inputs_are_mediators
                     and not self.separate_input_codes else in_codes)
    h_in = seeder(read_in_codes, batch, train=train)
    h_in, read_in_attention = attention.ReadInAttention(
        self.d_state, self.d_code, self.read_in_heads,
        self._head_dim(self.read_in_heads), qkv_bias=self.qkv_bias,
        shared_projection=self.shared_read_in_projection,
        fold=self.fold_read_in, name="read_in", **common)(
            h_in, read_in_codes, tokens, deterministic=deterministic)
    h_in = ffn("read_in_ffn")(h_in, read_in_codes, deterministic=deterministic)
    self._sow("input_states", h_in)

    # ---- Propagators: mediators exchange messages along the graph.
    h_med = (h_in if self.inputs_are_mediators
             else seeder(mediator_codes(0), batch, train=train))
    for layer in range(self.num_layers):
      codes = mediator_codes(layer)
      if self.inputs_are_mediators:
        senders, sender_codes = h_med, codes
      else:
        senders = jnp.concatenate([h_in, h_med], axis=1)
        sender_codes = jnp.concatenate([in_codes, codes], axis=0)
      layer_graph = (self._graph(kern, mode, batch)
                     if fresh_graphs and layer > 0 else graph)
      h_med, _ = attention.ModAttention(
          self.d_state, self.d_code, self.num_heads,
          self._head_dim(self.num_heads), qkv_bias=self.qkv_bias,
          drop_path=self.drop_path, shared_norm=self.shared_propagator_norm,
          name=f"propagator{layer}", **common)(
              h_med, codes, senders, sender_codes, layer_graph["log_graph"],
              layer_graph["link"], deterministic=deterministic)
      h_med = ffn(f"propagator{layer}_ffn")(h_med, codes,
                                            deterministic=deterministic)
    self._sow("mediator_states", h_med)

    # ---- Read-out: output modules attend to the mediators.
    h_out = seeder(out_codes, batch, train=train)
    h_out, _ = attention.ModAttention(
        self.d_state, self.d_code, self.read_out_heads,
        self._head_dim(self.read_out_heads), qkv_bias=self.qkv_bias,
        drop_path=self.drop_path, residual=self.read_out_residual,
        name="read_out", **common)(
            h_out, out_codes, h_med, mediator_codes(self.num_layers - 1),
            readout_graph["log_graph"], readout_graph["link"],
            deterministic=deterministic)
    h_out = ffn("read_out_ffn")(h_out, out_codes, deterministic=deterministic)
    self._sow("output_states", h_out)
    if self.head_norm:
      h_out = nn.LayerNorm(epsilon=self.layer_norm_eps, name="head_norm")(h_out)
    if self.readout == "pooled":
      confidence = nn.Dense(1, use_bias=False, name="confidence")(h_out)[..., 0]
      readout_weights = layers.softmax(confidence)
      pooled = jnp.einsum("bu,buc->bc", readout_weights, h_out)
    else:
      readout_weights = jnp.broadcast_to(
          jax.nn.one_hot(0, n_out, dtype=h_out.dtype), (batch, n_out))
      pooled = h_out[:, 0]
    logits = nn.Dense(self.num_classes, name="classifier")(pooled)

    # ---- Graph regulariser on the mediator signatures.
    reg_loss = jnp.zeros((), jnp.float32)
    if self.graph_regularizer is not None:
      med_distance = kernel_lib.cosine_distance(med_sig, med_sig)
      if self.graph_regularizer == "hinge":
        l_graph = graph_priors.hinge_repulsion(med_distance,
                                               self.hinge_threshold)
      else:
        med_kernel = kernel_lib.signature_kernel(med_distance, sigma,
                                                 self.kernel_tau)["kernel"]
        target = self._prior_adjacency().astype(np.float32) + np.eye(
            n_med, dtype=np.float32)
        l_graph = graph_priors.graphon_loss(med_kernel, jnp.asarray(target))
      reg_loss = self.graph_reg_weight * l_graph

    aux = {
        "graph": graph["graph"],
        "kernel": kern["kernel"],
        "reg_loss": reg_loss,
        "readout_weights": readout_weights,
        "readout_graph": readout_graph["graph"],
        "read_in_attention": read_in_attention,
        "features": pooled,
    }
    return logits.astype(jnp.float32), aux

