"""Independent numpy forward passes of pretrained-weight layouts, written
from the architectures' definitions and reading the files' own arrays (not
crl's trees): the oracles of tests/test_pretrained.py.

  timm ViT (timm/models/vision_transformer.py): Conv patch embedding (OIHW),
    [cls; patches] + pos_embed, pre-LN blocks x = x + proj(attn(norm1 x)),
    x = x + fc2(GELU_erf(fc1(norm2 x))) with fused qkv [3 D, D] split as
    (3, heads, head_dim), LayerNorm eps 1e-6, norm, head on the class token.
  big_vision ViT (big_vision/models/vit.py): the same with HWIO kernels,
    per-head query/key/value kernels [D, heads, head_dim], out kernel
    [heads, head_dim, D], tanh-approximate GELU (flax's nn.gelu), and inputs
    scaled to [-1, 1].
  timm ResNet (timm/models/resnet.py): Conv7x7/2 pad 3, BN, ReLU,
    MaxPool3x3/2 pad 1, BasicBlock or Bottleneck (stride in the 3x3),
    downsample conv1x1/s + BN, global average pool, fc; BN eps 1e-5 in eval
    mode (running statistics).
Images are `[batch, height, width, 3]` in [0, 1]; everything in float64.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import special


def layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def gelu_erf(x):
  return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) *
                                  (x + 0.044715 * x ** 3)))


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _patches(x, p):
  """`[B, H, W, C]` -> `[B, H/p, W/p, p, p, C]`."""
  b, h, w, c = x.shape
  return x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)


def _attention(q, k, v):
  """`[B, N, heads, hd]` each -> `[B, N, heads, hd]`."""
  scores = np.einsum("bnhk,bmhk->bhnm", q, k) / np.sqrt(q.shape[-1])
  return np.einsum("bhnm,bmhk->bnhk", softmax(scores), v)


def timm_vit(w, images, num_heads, mean=0.5, std=0.5):
  """Logits `[B, classes]` of a timm ViT state dict `w` (class token)."""
  w = {k: np.asarray(v, np.float64) for k, v in w.items()}
  z = (np.asarray(images, np.float64) - mean) / std
  proj = w["patch_embed.proj.weight"]  # [D, C, p, p]
  x = np.einsum("bijyxc,dcyx->bijd", _patches(z, proj.shape[-1]), proj)
  x = x + w["patch_embed.proj.bias"]
  b, d = x.shape[0], x.shape[-1]
  x = x.reshape(b, -1, d)
  x = np.concatenate([np.broadcast_to(w["cls_token"], (b, 1, d)), x], 1)
  x = x + w["pos_embed"]
  i = 0
  while f"blocks.{i}.norm1.weight" in w:
    p = f"blocks.{i}."
    h = layer_norm(x, w[p + "norm1.weight"], w[p + "norm1.bias"])
    qkv = h @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]
    qkv = qkv.reshape(b, -1, 3, num_heads, d // num_heads)
    a = _attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]).reshape(b, -1, d)
    x = x + a @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
    h = layer_norm(x, w[p + "norm2.weight"], w[p + "norm2.bias"])
    h = gelu_erf(h @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"])
    x = x + h @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
    i += 1
  x = layer_norm(x, w["norm.weight"], w["norm.bias"])
  return x[:, 0] @ w["head.weight"].T + w["head.bias"]


def big_vision_vit(w, images):
  """Logits of a big_vision ViT `.npz` dict `w` (pre-linen block names,
  position embedding under Transformer/posembed_input, class token)."""
  w = {k: np.asarray(v, np.float64) for k, v in w.items()}
  z = np.asarray(images, np.float64) * 2.0 - 1.0
  kernel = w["embedding/kernel"]  # [p, p, C, D]
  x = np.einsum("bijyxc,yxcd->bijd", _patches(z, kernel.shape[0]), kernel)
  x = x + w["embedding/bias"]
  b, d = x.shape[0], x.shape[-1]
  x = x.reshape(b, -1, d)
  x = np.concatenate([np.broadcast_to(w["cls"], (b, 1, d)), x], 1)
  x = x + w["Transformer/posembed_input/pos_embedding"]
  i = 0
  while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in w:
    p = f"Transformer/encoderblock_{i}/"
    m = p + "MultiHeadDotProductAttention_1/"
    h = layer_norm(x, w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"])
    q, k, v = (np.einsum("bnd,dhk->bnhk", h, w[m + f"{n}/kernel"]) +
               w[m + f"{n}/bias"] for n in ("query", "key", "value"))
    a = _attention(q, k, v)
    x = x + np.einsum("bnhk,hkd->bnd", a, w[m + "out/kernel"]) + w[
        m + "out/bias"]
    h = layer_norm(x, w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"])
    h = gelu_tanh(h @ w[p + "MlpBlock_3/Dense_0/kernel"] +
                  w[p + "MlpBlock_3/Dense_0/bias"])
    x = x + h @ w[p + "MlpBlock_3/Dense_1/kernel"] + w[
        p + "MlpBlock_3/Dense_1/bias"]
    i += 1
  x = layer_norm(x, w["Transformer/encoder_norm/scale"],
                 w["Transformer/encoder_norm/bias"])
  return x[:, 0] @ w["head/kernel"] + w["head/bias"]


def conv2d(x, weight, stride, pad):
  """PyTorch's Conv2d (no bias): `x [B, H, W, C]`, `weight [O, C, kh, kw]`,
  symmetric zero padding."""
  _, kh, kw = weight.shape[1:]
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  out = 0.0
  for i in range(kh):
    for j in range(kw):
      window = x[:, i:i + stride * (ho - 1) + 1:stride,
                 j:j + stride * (wo - 1) + 1:stride]
      out = out + np.einsum("bhwc,oc->bhwo", window, weight[:, :, i, j])
  return out


def batch_norm(x, w, prefix, eps=1e-5):
  return ((x - w[prefix + ".running_mean"]) /
          np.sqrt(w[prefix + ".running_var"] + eps) * w[prefix + ".weight"] +
          w[prefix + ".bias"])


def max_pool_3x3_s2(x):
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  ho, wo = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  return np.max([x[:, i:i + 2 * (ho - 1) + 1:2, j:j + 2 * (wo - 1) + 1:2]
                 for i in range(3) for j in range(3)], axis=0)


def timm_resnet(w, images, mean, std):
  """Logits of a timm ResNet state dict `w` (eval mode)."""
  w = {k: np.asarray(v, np.float64) for k, v in w.items()}
  relu = functools.partial(np.maximum, 0.0)
  x = (np.asarray(images, np.float64) - np.asarray(mean)) / np.asarray(std)
  x = relu(batch_norm(conv2d(x, w["conv1.weight"], 2, 3), w, "bn1"))
  x = max_pool_3x3_s2(x)
  for stage in range(1, 5):
    j = 0
    while f"layer{stage}.{j}.conv1.weight" in w:
      p = f"layer{stage}.{j}."
      stride = 2 if stage > 1 and j == 0 else 1
      if p + "conv3.weight" in w:  # Bottleneck
        h = relu(batch_norm(conv2d(x, w[p + "conv1.weight"], 1, 0), w,
                            p + "bn1"))
        h = relu(batch_norm(conv2d(h, w[p + "conv2.weight"], stride, 1), w,
                            p + "bn2"))
        h = batch_norm(conv2d(h, w[p + "conv3.weight"], 1, 0), w, p + "bn3")
      else:  # BasicBlock
        h = relu(batch_norm(conv2d(x, w[p + "conv1.weight"], stride, 1), w,
                            p + "bn1"))
        h = batch_norm(conv2d(h, w[p + "conv2.weight"], 1, 1), w, p + "bn2")
      if p + "downsample.0.weight" in w:
        x = batch_norm(conv2d(x, w[p + "downsample.0.weight"], stride, 0), w,
                       p + "downsample.1")
      x = relu(x + h)
      j += 1
  features = x.mean((1, 2))
  return features @ w["fc.weight"].T + w["fc.bias"]


def bilinear_resize(grid, out_h, out_w):
  """PyTorch's `interpolate(mode='bilinear', align_corners=False)` of
  `[H, W, C]` (half-pixel centres, edges clamped)."""
  def axis(n_in, n_out):
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo

  lo_h, hi_h, fh = axis(grid.shape[0], out_h)
  lo_w, hi_w, fw = axis(grid.shape[1], out_w)
  rows = (grid[lo_h] * (1 - fh)[:, None, None] +
          grid[hi_h] * fh[:, None, None])
  return (rows[:, lo_w] * (1 - fw)[None, :, None] +
          rows[:, hi_w] * fw[None, :, None])
