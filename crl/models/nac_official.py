"""The official PyTorch NAC (github mweiss17/NeuralAttentiveCircuits) in crl.

- `model_kwargs_from_official(config)`: crl `NAC` keyword arguments from the
  official `NeuralCompiler(**config)` keyword dict (as in the reference
  fixtures' `config_json`), official behaviour selected everywhere. Only the
  options that crl can reproduce are accepted; any other value, or a missing
  key whose official default is not known here, fails with one line naming
  the key, its value and what is supported.
- `params_from_official(weights, model)`: crl's parameter tree from the
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

import functools
from typing import Any, Callable, Mapping

import flax
import jax
import numpy as np

from crl.models.nac import NAC

_LG = "latent_graphs.0."

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


# ---- Weights.

Transform = Callable[[np.ndarray], np.ndarray]
_T = np.transpose  # Linear (out, in) -> Dense kernel (in, out).


def _conv(w: np.ndarray) -> np.ndarray:
  """(out, in/groups, kh, kw) -> flax (kh, kw, in/groups, out)."""
  return np.transpose(w, (2, 3, 1, 0))


def _grid(w: np.ndarray) -> np.ndarray:
  """(C, H, W) -> (H, W, C)."""
  return np.transpose(w, (1, 2, 0))


def _same(w: np.ndarray) -> np.ndarray:
  return w


def _mapping(model: NAC) -> dict[str, tuple[tuple[str, ...], Transform]]:
  """Official parameter name -> (crl parameter path, transform)."""
  m: dict[str, tuple[tuple[str, ...], Transform]] = {}

  def add(name, path, fn=_same):
    m[name] = (tuple(path.split("/")), fn)

  def dense(off, crl, bias=True):
    add(f"{off}.weight", f"{crl}/kernel", _T)
    if bias:
      add(f"{off}.bias", f"{crl}/bias")

  def norm(off, crl):
    add(f"{off}.weight", f"{crl}/scale")
    add(f"{off}.bias", f"{crl}/bias")

  def modfc(off, crl, bias):
    add(f"{off}.native_weight", f"{crl}/kernel", _T)
    if bias:
      add(f"{off}.native_bias", f"{crl}/bias")
    add(f"{off}.scale.weight", f"{crl}/code_proj", _T)
    add(f"{off}.scale_gain", f"{crl}/gain")

  def ffn(off, crl):
    norm(f"{off}.layernorm", f"{crl}/norm")
    modfc(f"{off}.ffn.0", f"{crl}/fc1", True)
    modfc(f"{off}.ffn.2", f"{crl}/fc2", True)

  def attention(off, crl, shared_norm):
    norm(f"{off}.receiver_layernorm", f"{crl}/receiver_norm")
    if not shared_norm:
      norm(f"{off}.sender_layernorm", f"{crl}/sender_norm")
    for part in ("query", "key", "value"):
      modfc(f"{off}.{part}_compiler", f"{crl}/{part}", model.qkv_bias)
    modfc(f"{off}.exit_layer", f"{crl}/exit", True)

  tok = "input_tokenizer.backbone."
  add(f"{tok}downsample_layers.0.0.weight", "tokenizer/stem/kernel", _conv)
  add(f"{tok}downsample_layers.0.0.bias", "tokenizer/stem/bias")
  norm(f"{tok}downsample_layers.0.1", "tokenizer/stem_norm")
  blocks = model._tokenizer_blocks()  # pylint: disable=protected-access
  for stage, depth in enumerate(blocks):
    if stage > 0:
      norm(f"{tok}downsample_layers.{stage}.0",
           f"tokenizer/downsample{stage}_norm")
      add(f"{tok}downsample_layers.{stage}.1.weight",
          f"tokenizer/downsample{stage}/kernel", _conv)
      add(f"{tok}downsample_layers.{stage}.1.bias",
          f"tokenizer/downsample{stage}/bias")
    for i in range(depth):
      off, crl = f"{tok}stages.{stage}.{i}", f"tokenizer/stage{stage}_block{i}"
      add(f"{off}.gamma", f"{crl}/layer_scale/scale")
      add(f"{off}.dwconv.weight", f"{crl}/depthwise/kernel", _conv)
      add(f"{off}.dwconv.bias", f"{crl}/depthwise/bias")
      norm(f"{off}.norm", f"{crl}/norm")
      dense(f"{off}.pwconv1", f"{crl}/fc1")
      dense(f"{off}.pwconv2", f"{crl}/fc2")
  add("input_tokenizer.positional_grid.grid", "tokenizer/positional_grid",
      _grid)

  add(f"{_LG}mediator_latents.codes_", "mediator_codes")
  add(f"{_LG}mediator_latents.signatures_", "mediator_signatures")
  add(f"{_LG}output_latents.codes_", "output_codes")
  add(f"{_LG}output_latents.signatures_", "output_signatures")
  if model.separate_input_codes:
    add(f"{_LG}input_latents.codes_", "input_codes")

  ri = f"{_LG}read_in.read_in_attention"
  norm(f"{ri}.receiver_layernorm", "read_in/receiver_norm")
  norm(f"{ri}.sender_layernorm", "read_in/token_norm")
  modfc(f"{ri}.query_compiler", "read_in/query", model.qkv_bias)
  for part in ("key", "value"):
    if model.shared_read_in_projection:
      dense(f"{ri}.{part}_compiler.lin", f"read_in/{part}", model.qkv_bias)
    else:
      modfc(f"{ri}.{part}_compiler", f"read_in/{part}", model.qkv_bias)
  modfc(f"{ri}.exit_layer", "read_in/exit", True)
  ffn(f"{_LG}read_in.ffn", "read_in_ffn")
  for layer in range(model.num_layers):
    off = f"{_LG}propagators.{layer}"
    attention(f"{off}.latent_attention", f"propagator{layer}",
              model.shared_propagator_norm)
    ffn(f"{off}.ffn", f"propagator{layer}_ffn")
  attention(f"{_LG}read_out.latent_attention", "read_out", False)
  ffn(f"{_LG}read_out.ffn", "read_out_ffn")
  dense("output_tokenizer.confidence_scorer", "confidence", bias=False)
  dense("output_tokenizer.to_logits", "classifier")
  return m


def _ignored(model: NAC) -> set[str]:
  """Official parameters without effect on the output (module docstring)."""
  ignored = {"output_tokenizer.confidence_scorer.bias"}
  if model.separate_input_codes:
    ignored.add(f"{_LG}input_latents.signatures_")
  return ignored


def _param_shapes(model: NAC) -> dict[tuple[str, ...], tuple[int, ...]]:
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
  shapes = jax.eval_shape(
      functools.partial(model.init, train=False),
      {"params": jax.random.key(0)}, images)["params"]
  flat = flax.traverse_util.flatten_dict(shapes)
  return {k: tuple(v.shape) for k, v in flat.items()}


def params_from_official(weights: Mapping[str, Any],
                         model: NAC) -> dict[str, Any]:
  """crl parameters of `model` from official PyTorch parameter arrays.

  Args:
    weights: official parameter name -> array (`model.named_parameters()`
      names, optionally prefixed `w/`; `b/...kernel.bandwidth` buffers are
      checked against `model.kernel_sigma`, other `b/` or non-prefixed
      non-parameter keys of the fixtures are not allowed here).
    model: the crl NAC the weights are for, e.g.
      `NAC(**model_kwargs_from_official(config))`.

  Returns:
    The `params` collection (nested dict of float32 numpy arrays).

  Raises:
    ValueError: one line listing missing, unexpected and mis-shaped keys.
  """
  if model.learn_sigma or model.complete_graph or model.readout != "pooled":
    raise ValueError("params_from_official: the crl NAC must have "
                     "learn_sigma=False, complete_graph=False and "
                     "readout='pooled' (as the official configs), got "
                     f"learn_sigma={model.learn_sigma}, complete_graph="
                     f"{model.complete_graph}, readout={model.readout!r}.")
  official: dict[str, np.ndarray] = {}
  problems: list[str] = []
  for key, value in weights.items():
    if key.startswith("b/"):
      if not key.endswith(".kernel.bandwidth"):
        problems.append(f"unexpected buffer {key}")
      elif not np.allclose(np.asarray(value), model.kernel_sigma):
        problems.append(f"{key}={float(np.asarray(value))} but the model's "
                        f"kernel_sigma={model.kernel_sigma}")
      continue
    official[key[2:] if key.startswith("w/") else key] = np.asarray(value)
  mapping = _mapping(model)
  shapes = _param_shapes(model)
  ignored = _ignored(model)
  missing = sorted(set(mapping) - set(official))
  unexpected = sorted(set(official) - set(mapping) - ignored)
  uncovered = sorted("/".join(p) for p in set(shapes) - {
      path for path, _ in mapping.values()})
  params: dict[tuple[str, ...], np.ndarray] = {}
  misshaped = []
  for name, (path, fn) in mapping.items():
    if name not in official:
      continue
    value = fn(official[name]).astype(np.float32)
    if path not in shapes or value.shape != shapes[path]:
      misshaped.append(f"{name} {official[name].shape} (crl {'/'.join(path)} "
                       f"{shapes.get(path)})")
      continue
    params[path] = value
  for label, items in (("missing", missing), ("unexpected", unexpected),
                       ("mis-shaped", misshaped),
                       ("crl parameters without an official source",
                        uncovered)):
    if items:
      problems.append(f"{label}: {', '.join(items)}")
  if problems:
    raise ValueError("official NAC weights do not fit this crl NAC: "
                     + "; ".join(problems) + ".")
  return flax.traverse_util.unflatten_dict(params)
