"""The official PyTorch NAC (github mweiss17/NeuralAttentiveCircuits) in crl.

- `model_kwargs_from_official(config)`: crl `NAC` keyword arguments from the
  official `NeuralCompiler(**config)` keyword dict (as in the reference
  fixtures' `config_json`), official behaviour selected everywhere. Only the
  options that crl can reproduce are accepted; any other value, or a missing
  key whose official default is not known here, fails with one line naming
  the key, its value and what is supported.
- `params_from_official(weights, model)` (in
  `crl.models.nac_official_weights`): crl's parameter tree from the
  official `named_parameters()` arrays (numpy, PyTorch layouts: Linear/ModFC
  weights `(out, in)`, convs `(out, in/groups, kh, kw)`), with an optional
  `w/` prefix (as stored in the fixtures) and the `b/` kernel-bandwidth
  buffers. Fails with one line naming the missing, unexpected and
  mis-shaped keys.

Two official parameters have no effect on the output and are dropped:
`latent_graphs.0.input_latents.signatures_` (input latents never send) and
`output_tokenizer.confidence_scorer.bias` (shifts every output latent's
confidence equally; cancels in the softmax). The official kernel normalises
the log-kernel by a logsumexp along the senders before the attention softmax;
that constant cancels in the softmax, so crl omits it (float rounding only).

Input: the official model takes NCHW images normalised as `(x - 0.5) / 0.25`;
crl's NAC takes NHWC images in [0, 1] and applies the same normalisation.
"""

from __future__ import annotations

from typing import Any, Mapping

# Official options crl reproduces only at these values: key path -> value.
_REQUIRED = {
    "input_tokenizer_type": "ConvNeXtImageTokenizer",
    "input_tokenizer_kwargs.capacity_preset": "femto",
    "input_tokenizer_kwargs.num_stages": 1,
    "latent_graph_type": "LatentGraph",
    "output_tokenizer_type": "OutputLatentPooling",
    "output_tokenizer_kwargs.softmax_type": "vanilla",
    "latent_graph_kwargs.code_noise_scale": None,
    "latent_graph_kwargs.disable_input_mediator_communication": True,
    "latent_graph_kwargs.enable_input_output_communication": False,
    "latent_graph_kwargs.use_input_states_as_mediator_states": True,
    "latent_graph_kwargs.share_propagator_weights": False,
    "latent_graph_kwargs.layer_scale_initial_value": None,
    "latent_graph_kwargs.mod_fc_cls": "ModFC",
    "latent_graph_kwargs.mod_fc_kwargs.learnable_scale_gain": True,
    "latent_graph_kwargs.latent_seeder_kwargs.use_code_as_mean_state": True,
    "latent_graph_kwargs.latent_seeder_kwargs.use_state_noise": False,
    "latent_graph_kwargs.read_in_kwargs.include_residual_in_read_in_attention":
        True,
    "latent_graph_kwargs.read_in_kwargs.read_in_layer_scale_initial_value":
        None,
    "latent_graph_kwargs.read_out_kwargs.pre_output_layernorm": False,
    "latent_graph_kwargs.read_out_kwargs.use_head": False,
    "latent_graph_kwargs.read_out_kwargs.latent_attention_kwargs"
    ".share_layernorm": False,
}
_KERNEL_KEYS = ("latent_graph_kwargs.propagator_kwargs.latent_attention_kwargs",
                "latent_graph_kwargs.read_out_kwargs.latent_attention_kwargs")
_EVAL_GRAPH = {"no_sample": "soft", "threshold": "threshold",
               "sample": "sample"}
_MISSING = object()


def _get(config: Mapping[str, Any], path: str, default: Any = _MISSING):
  value = config
  for part in path.split("."):
    if not isinstance(value, Mapping) or part not in value:
      if default is _MISSING:
        raise ValueError(f"official NAC config: {path} is missing.")
      return default
    value = value[part]
  return value


def _unsupported(path: str, value: Any, expected: str) -> ValueError:
  return ValueError(f"official NAC config: {path}={value!r} is not supported "
                    f"by crl's NAC; expected {expected}.")


def model_kwargs_from_official(config: Mapping[str, Any]) -> dict[str, Any]:
  """crl `NAC` kwargs equivalent to an official `NeuralCompiler` config.

  Args:
    config: the official keyword dict (e.g. `json.loads(npz['config_json'])`).

  Returns:
    Keyword arguments of `NAC` (official behaviour: no head norm, LayerNorm
    eps 1e-5, per-attention graph sampling, clamped truncation, official
    init). The graph prior (used at init only) is the Barabasi-Albert graph
    of the official config with crl's seed.

  Raises:
    ValueError: an option crl cannot reproduce (one line naming it).
  """
  for path, expected in _REQUIRED.items():
    value = _get(config, path, expected if path.endswith(
        ("share_layernorm", "pre_output_layernorm")) else _MISSING)
    if value != expected:
      raise _unsupported(path, value, repr(expected))
  lg = _get(config, "latent_graph_kwargs")
  state = _get(config, "state_dim")
  if _get(config, "input_dim") != 3:
    raise _unsupported("input_dim", config["input_dim"], "3 (RGB)")
  tok = _get(config, "input_tokenizer_kwargs")
  repr_dim = tok.get("repr_dim", state)
  grid = _get(config, "input_tokenizer_kwargs.positional_grid_kwargs")
  if list(grid.get("grid_size", [])) != [8, 8]:
    raise _unsupported("input_tokenizer_kwargs.positional_grid_kwargs"
                       ".grid_size", grid.get("grid_size"), "[8, 8]")

  # Kernel: crl has one set of kernel options for propagators and read-out.
  kernels = [_get(config, f"{k}.kernel_kwargs") for k in _KERNEL_KEYS]
  for path in _KERNEL_KEYS:
    if _get(config, f"{path}.kernel_type") != "DotProductKernel":
      raise _unsupported(f"{path}.kernel_type",
                         _get(config, f"{path}.kernel_type"),
                         "'DotProductKernel'")
    if not _get(config, f"{path}.mask_attn_scores_with_affinities"):
      raise _unsupported(f"{path}.mask_attn_scores_with_affinities", False,
                         "True")
  # The official `Kernel` defaults.
  defaults = {"initial_bandwidth": 1.0,
              "stochastic_eval_behaviour": "no_sample",
              "learnable_bandwidth": True, "stochastic_kernel": False,
              "stochastic_sampling_temperature": 1.0, "truncation": None}
  kernel = {**defaults, **kernels[0]}
  if {**defaults, **kernels[1]} != kernel:
    raise _unsupported(f"{_KERNEL_KEYS[1]}.kernel_kwargs", kernels[1],
                       f"the propagators' kernel_kwargs {kernels[0]!r}")
  if kernel["stochastic_eval_behaviour"] not in _EVAL_GRAPH:
    raise _unsupported("kernel_kwargs.stochastic_eval_behaviour",
                       kernel["stochastic_eval_behaviour"],
                       f"one of {sorted(_EVAL_GRAPH)}")

  # Modules.
  n_med = _get(lg, "num_mediator_latents")
  shared_inputs = bool(lg.get("disable_input_latents", False))
  if shared_inputs and not lg.get("use_mediator_codes_to_obtain_input_states"):
    raise _unsupported("latent_graph_kwargs.use_mediator_codes_to_obtain_"
                       "input_states", False, "True with disable_input_latents")
  med = _get(lg, "mediator_latent_kwargs")
  if med.get("graph_preset") != "barabasi-albert":
    raise _unsupported("mediator_latent_kwargs.graph_preset",
                       med.get("graph_preset"), "'barabasi-albert'")
  prior = dict(med.get("graph_generator_kwargs", {}))
  if prior.get("n", n_med) != n_med:
    raise _unsupported("mediator_latent_kwargs.graph_generator_kwargs.n",
                       prior["n"], f"num_mediator_latents={n_med}")
  mod_fc = _get(lg, "mod_fc_kwargs")
  read_in, read_out = _get(lg, "read_in_kwargs"), _get(lg, "read_out_kwargs")
  heads = _get(lg, "num_heads")
  # Values that must agree across blocks; a block that leaves one out gets
  # the others' value.
  blocks = (read_in, read_out, _get(lg, "propagator_kwargs"))
  geglu = {bool(k["ffn_kwargs"]["use_geglu"]) for k in blocks
           if "use_geglu" in k.get("ffn_kwargs", {})}
  geglu |= {bool(lg["use_geglu"])} if "use_geglu" in lg else set()
  if len(geglu) != 1:
    raise _unsupported("latent_graph_kwargs...ffn_kwargs.use_geglu",
                       sorted(geglu), "the same value in every block")
  qkv = {bool(v) for v in (
      lg.get("qkv_bias_in_attention"),
      read_in.get("read_in_attention_kwargs", {}).get("qkv_bias"),
      *(_get(config, f"{k}.qkv_bias", None) for k in _KERNEL_KEYS))
         if v is not None} or {False}
  if len(qkv) != 1:
    raise _unsupported("latent_graph_kwargs...qkv_bias", sorted(qkv),
                       "the same value in read-in, propagators and read-out")
  return dict(
      num_classes=_get(config, "output_dim"),
      tokenizer="convnext", patch_size=4, stem_channels=repr_dim // 4,
      tokenizer_blocks=(1,), pos_grid_channels=grid["dim"],
      d_state=state, d_code=_get(lg, "code_dim"),
      d_sig=_get(lg, "signature_dim"),
      num_input_modules=n_med if shared_inputs else _get(
          lg, "num_input_latents"),
      num_mediator_modules=n_med,
      num_output_modules=_get(lg, "num_output_latents"),
      inputs_are_mediators=True, separate_input_codes=not shared_inputs,
      initial_state="code", state_noise=False, per_layer_codes=False,
      num_layers=_get(lg, "num_iterations"), num_heads=heads,
      head_dim=_get(lg, "head_dim"),
      read_in_heads=read_in.get("num_heads", heads),
      read_out_heads=read_out.get("num_heads", heads),
      shared_read_in_projection=bool(read_in.get(
          "read_in_attention_kwargs", {}).get("share_key_value_projectors",
                                              False)),
      modfc_mode="one_plus" if mod_fc.get("add_one_to_scale") else
      "plain_scale", modfc_gain_init=float(mod_fc.get("scale_gain", 1.0)),
      ffn="geglu" if geglu.pop() else "gelu",
      ffn_hidden=int(round(_get(lg, "ffn_capacity_factor") * state)),
      layer_scale_init=None, drop_path=float(lg.get("path_drop_prob", 0.0)),
      qkv_bias=qkv.pop(), readout="pooled",
      kernel_tau=kernel["truncation"],
      kernel_sigma=float(kernel["initial_bandwidth"]),
      learn_sigma=bool(kernel["learnable_bandwidth"]),
      stochastic_kernel=bool(kernel["stochastic_kernel"]),
      kernel_temperature=float(kernel["stochastic_sampling_temperature"]),
      eval_graph=_EVAL_GRAPH[kernel["stochastic_eval_behaviour"]],
      complete_graph=False, graph_prior="barabasi_albert",
      graph_prior_kwargs=(("m", int(prior.get("m", 2))),),
      graph_regularizer=None,
      head_norm=False,
      shared_propagator_norm=bool(_get(
          config, f"{_KERNEL_KEYS[0]}.share_layernorm", False)),
      read_out_residual=bool(read_out.get(
          "include_residual_in_latent_attention", True)),
      graph_sampling="per_attention", truncation="clamp",
      init_scheme="official", layer_norm_eps=1e-5)
