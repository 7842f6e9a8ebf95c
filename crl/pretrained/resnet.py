"""timm `.safetensors` ResNets (resnet18/26/34/50) -> crl's ResNet.

timm names (torch state dict): 'conv1', 'bn1', 'layer{1..4}.{j}.conv{k}' and
'.bn{k}', the shortcut 'layer{s}.{j}.downsample.0' (conv) and '.1' (BN),
'fc'. crl's `ResNet` (crl/models/resnet.py): 'stem_conv', 'stem_norm/bn',
'stage{s}_block{j}/conv{k}', '.../norm{k}/bn', '.../downsample_conv',
'.../downsample_norm/bn', 'classifier'; BatchNorm running statistics go to
the `batch_stats` collection ('mean', 'var'). Conv kernels OIHW -> HWIO,
Linear `[out, in]` -> `[in, out]`; `num_batches_tracked` is dropped.

Only plain ResNets: the 'D' variants' average-pool shortcut and deep stem
(resnet50d) have other keys and fail with them named. timm's ImageNet
weights expect the model's `pixel_mean=(0.485, 0.456, 0.406)`,
`pixel_std=(0.229, 0.224, 0.225)`.
"""

from __future__ import annotations

import numpy as np

from crl.pretrained.keys import check_keys, num_blocks

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _expected(arrays: dict[str, np.ndarray]) -> set[str]:
  expected = {"conv1.weight", "fc.weight", "fc.bias"}
  expected |= {f"bn1.{n}" for n in _BN}
  for stage in range(1, 5):
    blocks = num_blocks(arrays, rf"layer{stage}\.(\d+)\.")
    if blocks == 0:
      expected.add(f"layer{stage}.0.*")
    for j in range(blocks):
      b = f"layer{stage}.{j}."
      convs = 3 if f"{b}conv3.weight" in arrays else 2
      for k in range(1, convs + 1):
        expected.add(f"{b}conv{k}.weight")
        expected |= {f"{b}bn{k}.{n}" for n in _BN}
      if f"{b}downsample.0.weight" in arrays:
        expected.add(f"{b}downsample.0.weight")
        expected |= {f"{b}downsample.1.{n}" for n in _BN}
  return expected


def from_timm(arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
  """`(params, model_state)` of crl's ResNet from a timm ResNet state dict.

  Raises:
    keys.LayoutError: keys missing or unexpected (named).
  """
  expected = _expected(arrays)
  # num_batches_tracked is optional (some exporters drop it).
  optional = {k for k in expected if k.endswith("num_batches_tracked")}
  check_keys(arrays, expected - optional, optional, "timm ResNet "
             "(.safetensors)")

  def conv(src):
    return {"kernel": arrays[f"{src}.weight"].transpose(2, 3, 1, 0)}

  def bn(src):
    return ({"bn": {"scale": arrays[f"{src}.weight"],
                    "bias": arrays[f"{src}.bias"]}},
            {"bn": {"mean": arrays[f"{src}.running_mean"],
                    "var": arrays[f"{src}.running_var"]}})

  params = {"stem_conv": conv("conv1")}
  params["stem_norm"], stats = bn("bn1")
  stats = {"stem_norm": stats}
  for stage in range(1, 5):
    for j in range(num_blocks(arrays, rf"layer{stage}\.(\d+)\.")):
      src, dst = f"layer{stage}.{j}", f"stage{stage}_block{j}"
      convs = 3 if f"{src}.conv3.weight" in arrays else 2
      names = [(f"conv{k}", f"bn{k}", f"conv{k}", f"norm{k}")
               for k in range(1, convs + 1)]
      if f"{src}.downsample.0.weight" in arrays:
        names.append(("downsample.0", "downsample.1", "downsample_conv",
                      "downsample_norm"))
      params[dst], stats[dst] = {}, {}
      for c_src, n_src, c_dst, n_dst in names:
        params[dst][c_dst] = conv(f"{src}.{c_src}")
        params[dst][n_dst], stats[dst][n_dst] = bn(f"{src}.{n_src}")
  params["classifier"] = {"kernel": arrays["fc.weight"].T,
                          "bias": arrays["fc.bias"]}
  return params, {"batch_stats": stats}
