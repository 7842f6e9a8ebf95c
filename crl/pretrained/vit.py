"""big_vision / AugReg `.npz` and timm `.safetensors` ViTs -> crl's ViT.

crl's `ViT` (crl/models/vit.py) names: 'patch_embedding' (Conv, HWIO),
'cls_token' `[1, D]`, 'position_embedding' `[1 + T, D]`,
'block{i}_attention/{receiver_norm, sender_norm, query, key, value, exit}'
(self-attention: both norms get the file's one pre-attention LayerNorm),
'block{i}_mlp/{norm, fc1, fc2}', 'encoder_norm', 'classifier'.

Input scaling: crl feeds `u = (x - 0.5) / 0.25` to the patch embedding; a
file's model expects `z_c = (x_c - mean_c) / std_c` (big_vision and AugReg:
mean = std = 0.5, i.e. [-1, 1]). Since `z_c = a_c u_c + b_c` with
`a_c = 0.25 / std_c`, `b_c = (0.5 - mean_c) / std_c` and the patch
convolution is linear without padding, the converter folds it exactly into
the patch kernel (`K * a`) and bias (`+ sum K b`).

Not covered: the ViTs' `pre_logits` layer (original ViT i21k files), and
DeiT's distillation token; such files fail with their keys named.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from crl.models import layers
from crl.pretrained.keys import check_keys, num_blocks

AUGREG_MEAN = (0.5, 0.5, 0.5)
AUGREG_STD = (0.5, 0.5, 0.5)


def fold_input_scaling(kernel: np.ndarray, bias: np.ndarray,
                       mean: Sequence[float], std: Sequence[float]
                       ) -> tuple[np.ndarray, np.ndarray]:
  """The HWIO patch kernel and bias that give on crl's standardised images
  what `kernel`, `bias` give on `(x - mean) / std` (module docstring)."""
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  a = float(layers.IMAGE_STD) / std
  b = (float(layers.IMAGE_MEAN) - mean) / std
  new_kernel = kernel * a[None, None, :, None]
  new_bias = bias + np.einsum("hwio,i->o", kernel.astype(np.float64), b)
  return new_kernel.astype(kernel.dtype), new_bias.astype(bias.dtype)


def _block_tree(norm1, qkv, out, norm2, fc1, fc2) -> tuple[dict, dict]:
  """The crl attention and MLP subtrees of one block from `(scale, bias)`
  norms and `(kernel [in, out], bias)` dense layers; qkv is three of them."""
  def norm(p):
    return {"scale": p[0], "bias": p[1]}

  def dense(p):
    return {"kernel": p[0], "bias": p[1]}

  attention = {"receiver_norm": norm(norm1), "sender_norm": norm(norm1),
               "query": dense(qkv[0]), "key": dense(qkv[1]),
               "value": dense(qkv[2]), "exit": dense(out)}
  mlp = {"norm": norm(norm2), "fc1": dense(fc1), "fc2": dense(fc2)}
  return attention, mlp


def _assemble(embed_kernel, embed_bias, cls, pos, blocks, final_norm, head,
              mean, std) -> dict:
  kernel, bias = fold_input_scaling(embed_kernel, embed_bias, mean, std)
  params = {"patch_embedding": {"kernel": kernel, "bias": bias},
            "position_embedding": pos.reshape(pos.shape[-2:])}
  if cls is not None:
    params["cls_token"] = cls.reshape(1, -1)
  for i, (attention, mlp) in enumerate(blocks):
    params[f"block{i}_attention"] = attention
    params[f"block{i}_mlp"] = mlp
  params["encoder_norm"] = {"scale": final_norm[0], "bias": final_norm[1]}
  params["classifier"] = {"kernel": head[0], "bias": head[1]}
  return params


def from_big_vision(arrays: dict[str, np.ndarray],
                    mean: Sequence[float] = AUGREG_MEAN,
                    std: Sequence[float] = AUGREG_STD) -> dict:
  """crl ViT params from a big_vision / AugReg `.npz` (flat '/' keys).

  Accepts the `opt/target/` and `params/` prefixes, the position embedding
  under `Transformer/posembed_input/` or at the top level, and both block
  numberings (pre-linen `LayerNorm_0, MultiHeadDotProductAttention_1,
  LayerNorm_2, MlpBlock_3`; linen `LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0`).

  Raises:
    keys.LayoutError: keys missing or unexpected (named).
  """
  for prefix in ("opt/target/", "params/"):
    if arrays and all(k.startswith(prefix) for k in arrays):
      arrays = {k[len(prefix):]: v for k, v in arrays.items()}
  depth = num_blocks(arrays, r"Transformer/encoderblock_(\d+)/")
  old = any("MultiHeadDotProductAttention_1" in k for k in arrays)
  ln1, mha, ln2, mlp = (("LayerNorm_0", "MultiHeadDotProductAttention_1",
                         "LayerNorm_2", "MlpBlock_3") if old else
                        ("LayerNorm_0", "MultiHeadDotProductAttention_0",
                         "LayerNorm_1", "MlpBlock_0"))
  pos_key = ("pos_embedding" if "pos_embedding" in arrays
             else "Transformer/posembed_input/pos_embedding")
  expected = {"embedding/kernel", "embedding/bias", pos_key,
              "Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias",
              "head/kernel", "head/bias"}
  optional = {"cls"}
  for i in range(depth):
    b = f"Transformer/encoderblock_{i}/"
    for name in (ln1, ln2):
      expected |= {f"{b}{name}/scale", f"{b}{name}/bias"}
    for name in ("query", "key", "value", "out"):
      expected |= {f"{b}{mha}/{name}/kernel", f"{b}{mha}/{name}/bias"}
    for name in ("Dense_0", "Dense_1"):
      expected |= {f"{b}{mlp}/{name}/kernel", f"{b}{mlp}/{name}/bias"}
  if depth == 0:
    expected.add("Transformer/encoderblock_0/*")
  check_keys(arrays, expected, optional, "big_vision ViT (.npz)")

  get = arrays.__getitem__
  blocks = []
  for i in range(depth):
    b = f"Transformer/encoderblock_{i}/"
    qkv = []
    for name in ("query", "key", "value"):
      kernel = get(f"{b}{mha}/{name}/kernel")  # [D, heads, head_dim]
      qkv.append((kernel.reshape(kernel.shape[0], -1),
                  get(f"{b}{mha}/{name}/bias").reshape(-1)))
    out = get(f"{b}{mha}/out/kernel")  # [heads, head_dim, D]
    blocks.append(_block_tree(
        (get(f"{b}{ln1}/scale"), get(f"{b}{ln1}/bias")), qkv,
        (out.reshape(-1, out.shape[-1]), get(f"{b}{mha}/out/bias")),
        (get(f"{b}{ln2}/scale"), get(f"{b}{ln2}/bias")),
        (get(f"{b}{mlp}/Dense_0/kernel"), get(f"{b}{mlp}/Dense_0/bias")),
        (get(f"{b}{mlp}/Dense_1/kernel"), get(f"{b}{mlp}/Dense_1/bias"))))
  return _assemble(
      get("embedding/kernel"), get("embedding/bias"),
      arrays.get("cls"), get(pos_key), blocks,
      (get("Transformer/encoder_norm/scale"),
       get("Transformer/encoder_norm/bias")),
      (get("head/kernel"), get("head/bias")), mean, std)


def from_timm(arrays: dict[str, np.ndarray],
              mean: Sequence[float] = AUGREG_MEAN,
              std: Sequence[float] = AUGREG_STD) -> dict:
  """crl ViT params from a timm `VisionTransformer` state dict (torch
  layouts: Linear weights `[out, in]`, conv OIHW, fused `qkv` in q, k, v
  order; `cls_token` absent for global-average-pool models).

  Raises:
    keys.LayoutError: keys missing or unexpected (named).
  """
  depth = num_blocks(arrays, r"blocks\.(\d+)\.")
  expected = {"patch_embed.proj.weight", "patch_embed.proj.bias",
              "pos_embed", "norm.weight", "norm.bias", "head.weight",
              "head.bias"}
  for i in range(depth):
    b = f"blocks.{i}."
    for name in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1",
                 "mlp.fc2"):
      expected |= {f"{b}{name}.weight", f"{b}{name}.bias"}
  if depth == 0:
    expected.add("blocks.0.*")
  check_keys(arrays, expected, {"cls_token"}, "timm ViT (.safetensors)")

  get = arrays.__getitem__

  def dense(k):
    return get(f"{k}.weight").T, get(f"{k}.bias")

  def norm(k):
    return get(f"{k}.weight"), get(f"{k}.bias")

  blocks = []
  for i in range(depth):
    b = f"blocks.{i}."
    qkv_w = get(f"{b}attn.qkv.weight")  # [3 D, D]
    qkv_b = get(f"{b}attn.qkv.bias")
    d = qkv_w.shape[1]
    qkv = [(qkv_w[j * d:(j + 1) * d].T, qkv_b[j * d:(j + 1) * d])
           for j in range(3)]
    blocks.append(_block_tree(norm(f"{b}norm1"), qkv, dense(f"{b}attn.proj"),
                              norm(f"{b}norm2"), dense(f"{b}mlp.fc1"),
                              dense(f"{b}mlp.fc2")))
  return _assemble(
      get("patch_embed.proj.weight").transpose(2, 3, 1, 0),
      get("patch_embed.proj.bias"), arrays.get("cls_token"),
      get("pos_embed"), blocks, norm("norm"), dense("head"), mean, std)
