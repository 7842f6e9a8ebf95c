"""NAC's hyperparameter checks: the allowed choices and `validate(model)`.

`crl.models.nac.NAC` calls `validate` at construction, so a bad config fails
with one line naming the field before anything is compiled.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np

from crl.models import graph_priors
from crl.models import kernel as kernel_lib
from crl.models import layers
from crl.models import tokenizer as tokenizer_lib

READOUTS = ("pooled", "single")
GRAPH_SAMPLING = ("per_forward", "per_attention")
INITIAL_STATES = ("code", "dense")
GRAPH_REGULARIZERS = (None, "hinge", "graphon")


def validate(model: Any) -> None:
  """Raises ValueError naming the offending field of the NAC `model`."""
  def choice(field, options):
    value = getattr(model, field)
    if value not in options:
      raise ValueError(f"NAC.{field} must be one of {options}, got "
                       f"{value!r}.")

  def positive(field, allow_zero=False):
    value = getattr(model, field)
    if not isinstance(value, (int, np.integer)) or value < (
        0 if allow_zero else 1):
      raise ValueError(f"NAC.{field} must be an integer >= "
                       f"{0 if allow_zero else 1}, got {value!r}.")

  choice("tokenizer", tokenizer_lib.TOKENIZERS)
  choice("modfc_mode", layers.MODFC_MODES)
  choice("ffn", layers.FFN_KINDS)
  choice("readout", READOUTS)
  choice("initial_state", INITIAL_STATES)
  choice("eval_graph", kernel_lib.GRAPH_MODES)
  choice("graph_regularizer", GRAPH_REGULARIZERS)
  choice("graph_sampling", GRAPH_SAMPLING)
  choice("truncation", kernel_lib.TRUNCATIONS)
  choice("init_scheme", layers.INIT_SCHEMES)
  if not (isinstance(model.layer_norm_eps, (float, int))
          and model.layer_norm_eps > 0):
    raise ValueError(f"NAC.layer_norm_eps must be a number > 0, got "
                     f"{model.layer_norm_eps!r}.")
  if model.separate_input_codes and not model.inputs_are_mediators:
    raise ValueError("NAC.separate_input_codes=True needs "
                     "inputs_are_mediators=True (the input modules' states "
                     "seed the mediators), got inputs_are_mediators=False.")
  for field in ("num_classes", "patch_size", "stem_channels", "d_state",
                "d_code", "d_sig", "num_input_modules",
                "num_mediator_modules", "num_output_modules", "num_layers",
                "num_heads", "read_in_heads", "read_out_heads", "ffn_hidden",
                "prior_fit_steps"):
    positive(field)
  positive("pos_grid_channels", allow_zero=True)
  blocks = tokenizer_lib.tokenizer_blocks("NAC", model.tokenizer_blocks)
  if model.tokenizer == "convnext" and (
      len(blocks) < 1 or any(d < 0 for d in blocks)):
    raise ValueError("NAC.tokenizer_blocks must list >= 0 blocks for each of "
                     f"at least one stage, got {model.tokenizer_blocks!r}.")
  if model.head_dim is None:
    for field in ("num_heads", "read_in_heads", "read_out_heads"):
      if model.d_state % getattr(model, field):
        raise ValueError(
            f"NAC.d_state={model.d_state} must be divisible by NAC.{field}="
            f"{getattr(model, field)} when head_dim is None.")
  else:
    positive("head_dim")
  if model.initial_state == "code" and model.d_code != model.d_state:
    raise ValueError(f"NAC.d_code must equal d_state={model.d_state} when "
                     f"initial_state='code', got {model.d_code}.")
  if (model.inputs_are_mediators
      and model.num_input_modules != model.num_mediator_modules):
    raise ValueError(
        f"NAC.num_input_modules must equal num_mediator_modules="
        f"{model.num_mediator_modules} when inputs_are_mediators=True, got "
        f"{model.num_input_modules}.")
  if not 0.0 <= model.drop_path < 1.0:
    raise ValueError(f"NAC.drop_path must be in [0, 1), got "
                     f"{model.drop_path}.")
  if model.kernel_sigma <= 0.0:
    raise ValueError(f"NAC.kernel_sigma must be > 0, got "
                     f"{model.kernel_sigma}.")
  if model.kernel_temperature <= 0.0:
    raise ValueError(f"NAC.kernel_temperature must be > 0, got "
                     f"{model.kernel_temperature}.")
  if model.kernel_tau is not None and not 0.0 < model.kernel_tau <= 2.0:
    raise ValueError(f"NAC.kernel_tau must be None or in (0, 2], got "
                     f"{model.kernel_tau}.")
  if model.graph_prior is not None:
    if model.kernel_tau is None:
      raise ValueError("NAC.kernel_tau must be set (e.g. 0.9) when "
                       f"graph_prior={model.graph_prior!r}.")
    try:
      graph_priors.target_adjacency(model.graph_prior,
                                    model.num_mediator_modules,
                                    model.graph_prior_kwargs)
    except (ValueError, TypeError, nx.NetworkXError) as e:
      raise ValueError(f"NAC.graph_prior / graph_prior_kwargs: {e}") from e
  if model.graph_regularizer == "graphon" and model.graph_prior is None:
    raise ValueError("NAC.graph_prior must name the target graph when "
                     "graph_regularizer='graphon', got None.")
