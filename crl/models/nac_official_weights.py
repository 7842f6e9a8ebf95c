"""The official PyTorch NAC's weights in crl: `params_from_official`.

`params_from_official(weights, model)`: crl's parameter tree from the official
`named_parameters()` arrays (the layouts, the two dropped parameters and the
input convention are in `crl.models.nac_official`, which converts the
config).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax
import jax
import numpy as np

from crl.models import tokenizer as tokenizer_lib
from crl.models.nac import NAC

_LG = "latent_graphs.0."

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
  blocks = tokenizer_lib.tokenizer_blocks("NAC", model.tokenizer_blocks)
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
