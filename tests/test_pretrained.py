"""`--config.init_from`: weight files converted to crl's trees match an
independent numpy forward pass (tests/reference_nets.py) on random weights
of exactly the files' layouts; run directories initialise the backbone;
bad sources fail with one line naming the problem."""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors import numpy as st_numpy

from crl import pretrained
from crl import registry
from crl.models.resnet import ResNet
from crl.models.vit import ViT
from crl.pretrained import resnet as resnet_conv
from crl.pretrained import vit as vit_conv
from tests import reference_nets as ref

D, HEADS, DEPTH, MLP, PATCH, CLASSES = 16, 2, 2, 32, 4, 5
VIT = dict(num_classes=CLASSES, patch_size=PATCH, d_model=D, num_layers=DEPTH,
           num_heads=HEADS, mlp_hidden=MLP, qkv_bias=True)
TOL = dict(rtol=1e-5, atol=1e-5)


def _n(rng, *shape, scale=1.0):
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def timm_vit_file(rng, grid=4):
  w = {"patch_embed.proj.weight": _n(rng, D, 3, PATCH, PATCH,
                                     scale=1 / np.sqrt(3 * PATCH**2)),
       "patch_embed.proj.bias": _n(rng, D, scale=0.1),
       "cls_token": _n(rng, 1, 1, D, scale=0.5),
       "pos_embed": _n(rng, 1, grid * grid + 1, D, scale=0.5),
       "norm.weight": 1 + _n(rng, D, scale=0.1), "norm.bias": _n(rng, D,
                                                                 scale=0.1),
       "head.weight": _n(rng, CLASSES, D, scale=1 / np.sqrt(D)),
       "head.bias": _n(rng, CLASSES, scale=0.1)}
  for i in range(DEPTH):
    p = f"blocks.{i}."
    for norm in ("norm1", "norm2"):
      w[f"{p}{norm}.weight"] = 1 + _n(rng, D, scale=0.1)
      w[f"{p}{norm}.bias"] = _n(rng, D, scale=0.1)
    for name, (o, i_) in (("attn.qkv", (3 * D, D)), ("attn.proj", (D, D)),
                          ("mlp.fc1", (MLP, D)), ("mlp.fc2", (D, MLP))):
      w[f"{p}{name}.weight"] = _n(rng, o, i_, scale=1 / np.sqrt(i_))
      w[f"{p}{name}.bias"] = _n(rng, o, scale=0.1)
  return w


def big_vision_file(rng, grid=4):
  hd = D // HEADS
  w = {"embedding/kernel": _n(rng, PATCH, PATCH, 3, D,
                              scale=1 / np.sqrt(3 * PATCH**2)),
       "embedding/bias": _n(rng, D, scale=0.1),
       "cls": _n(rng, 1, 1, D, scale=0.5),
       "Transformer/posembed_input/pos_embedding": _n(rng, 1, grid**2 + 1, D,
                                                      scale=0.5),
       "Transformer/encoder_norm/scale": 1 + _n(rng, D, scale=0.1),
       "Transformer/encoder_norm/bias": _n(rng, D, scale=0.1),
       "head/kernel": _n(rng, D, CLASSES, scale=1 / np.sqrt(D)),
       "head/bias": _n(rng, CLASSES, scale=0.1)}
  for i in range(DEPTH):
    p = f"Transformer/encoderblock_{i}/"
    for norm in ("LayerNorm_0", "LayerNorm_2"):
      w[f"{p}{norm}/scale"] = 1 + _n(rng, D, scale=0.1)
      w[f"{p}{norm}/bias"] = _n(rng, D, scale=0.1)
    m = p + "MultiHeadDotProductAttention_1/"
    for name in ("query", "key", "value"):
      w[f"{m}{name}/kernel"] = _n(rng, D, HEADS, hd, scale=1 / np.sqrt(D))
      w[f"{m}{name}/bias"] = _n(rng, HEADS, hd, scale=0.1)
    w[f"{m}out/kernel"] = _n(rng, HEADS, hd, D, scale=1 / np.sqrt(D))
    w[f"{m}out/bias"] = _n(rng, D, scale=0.1)
    for name, (i_, o) in (("Dense_0", (D, MLP)), ("Dense_1", (MLP, D))):
      w[f"{p}MlpBlock_3/{name}/kernel"] = _n(rng, i_, o,
                                             scale=1 / np.sqrt(i_))
      w[f"{p}MlpBlock_3/{name}/bias"] = _n(rng, o, scale=0.1)
  return w


def timm_resnet_file(rng, blocks, bottleneck, width=4, classes=CLASSES):
  w = {}

  def conv(name, o, i, k):
    w[f"{name}.weight"] = _n(rng, o, i, k, k, scale=np.sqrt(2 / (i * k * k)))

  def bn(name, c):
    w[f"{name}.weight"] = 1 + _n(rng, c, scale=0.1)
    w[f"{name}.bias"] = _n(rng, c, scale=0.1)
    w[f"{name}.running_mean"] = _n(rng, c, scale=0.1)
    w[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    w[f"{name}.num_batches_tracked"] = np.array(10, np.int64)

  conv("conv1", width, 3, 7)
  bn("bn1", width)
  inplanes = width
  for s, n in enumerate(blocks):
    planes = width * 2**s
    out = planes * (4 if bottleneck else 1)
    for j in range(n):
      p = f"layer{s + 1}.{j}."
      if bottleneck:
        conv(p + "conv1", planes, inplanes, 1)
        conv(p + "conv2", planes, planes, 3)
        conv(p + "conv3", out, planes, 1)
        for k, c in ((1, planes), (2, planes), (3, out)):
          bn(f"{p}bn{k}", c)
      else:
        conv(p + "conv1", planes, inplanes, 3)
        conv(p + "conv2", planes, planes, 3)
        bn(p + "bn1", planes)
        bn(p + "bn2", planes)
      if (s > 0 and j == 0) or inplanes != out:
        conv(p + "downsample.0", out, inplanes, 1)
        bn(p + "downsample.1", out)
      inplanes = out
  w["fc.weight"] = _n(rng, classes, inplanes, scale=1 / np.sqrt(inplanes))
  w["fc.bias"] = _n(rng, classes, scale=0.1)
  return w


def _images(size, batch=3, seed=1):
  return np.random.default_rng(seed).random((batch, size, size, 3),
                                            dtype=np.float32)


# Converted forward passes against the numpy references ----------------------


def test_timm_vit_matches_the_reference(tmp_path):
  path = str(tmp_path / "vit.safetensors")
  st_numpy.save_file(timm_vit_file(np.random.default_rng(0)), path)
  w = st_numpy.load_file(path)
  params = vit_conv.from_timm(w)
  x = _images(16)
  logits, _ = ViT(**VIT).apply({"params": params}, x, train=False)
  np.testing.assert_allclose(logits, ref.timm_vit(w, x, HEADS), **TOL)


def _linen_names(key):
  """big_vision's linen layout: per-type layer numbers, pos_embedding at the
  top level, under 'params/'."""
  for old, new in (("MultiHeadDotProductAttention_1",
                    "MultiHeadDotProductAttention_0"),
                   ("LayerNorm_2", "LayerNorm_1"), ("MlpBlock_3", "MlpBlock_0"),
                   ("Transformer/posembed_input/", "")):
    key = key.replace(old, new)
  return "params/" + key


@pytest.mark.parametrize("rename", [lambda k: "opt/target/" + k,
                                    _linen_names])
def test_big_vision_vit_matches_the_reference(tmp_path, rename):
  w = big_vision_file(np.random.default_rng(1))
  path = str(tmp_path / "vit.npz")
  np.savez(path, **{rename(k): v for k, v in w.items()})
  with np.load(path) as f:
    params = vit_conv.from_big_vision({k: f[k] for k in f.files})
  x = _images(16)
  logits, _ = ViT(**VIT, gelu_approximate=True).apply({"params": params}, x,
                                                      train=False)
  np.testing.assert_allclose(logits, ref.big_vision_vit(w, x), **TOL)


@pytest.mark.parametrize("depth,blocks,bottleneck", [
    (18, (2, 2, 2, 2), False), (26, (2, 2, 2, 2), True)])
def test_timm_resnet_matches_the_reference(tmp_path, depth, blocks,
                                           bottleneck):
  path = str(tmp_path / "resnet.safetensors")
  st_numpy.save_file(timm_resnet_file(np.random.default_rng(2), blocks,
                                      bottleneck), path)
  w = st_numpy.load_file(path)
  params, state = resnet_conv.from_timm(w)
  model = ResNet(num_classes=CLASSES, depth=depth, width=4,
                 pixel_mean=resnet_conv.IMAGENET_MEAN,
                 pixel_std=resnet_conv.IMAGENET_STD)
  x = _images(32)
  logits, _ = model.apply({"params": params, **state}, x, train=False)
  np.testing.assert_allclose(
      logits, ref.timm_resnet(w, x, resnet_conv.IMAGENET_MEAN,
                              resnet_conv.IMAGENET_STD), **TOL)


# pretrained.load: heads, resizing, bad sources -------------------------------


class _ModelTask:
  """The part of a Task that `pretrained.load` uses."""

  def __init__(self, model, size):
    self.model, self.size = model, size

  def _variables(self, key):
    return self.model.init(key, jnp.zeros((1, self.size, self.size, 3)),
                           train=False)

  def init_params(self, key):
    return self._variables(key)["params"]

  def init_model_state(self, key):
    return {k: v for k, v in self._variables(key).items() if k != "params"}


def _config(init_from, name, **model):
  return ml_collections.ConfigDict(
      {"init_from": str(init_from), "model": {"name": name, **model}})


def test_load_drops_the_head_and_resamples_position_embeddings(tmp_path):
  path = tmp_path / "vit.safetensors"
  w = timm_vit_file(np.random.default_rng(3))
  st_numpy.save_file(w, str(path))
  # A 24 px target (6x6 patches) with 3 classes from a 16 px, 5-class file.
  model = ViT(**{**VIT, "num_classes": 3})
  init = pretrained.load(_config(path, "vit"), _ModelTask(model, 24))
  assert init.head == ("classifier",)
  assert not any(k.startswith("classifier") for k in init.params)
  pos = w["pos_embed"][0]
  resized = ref.bilinear_resize(pos[1:].reshape(4, 4, D), 6, 6)
  np.testing.assert_allclose(init.params["position_embedding"],
                             np.concatenate([pos[:1], resized.reshape(36, D)]),
                             rtol=1e-6, atol=1e-6)
  # The backbone with the resampled embedding computes the reference's
  # features on 24 px images (the reference with the resampled pos_embed).
  fresh = model.init(jax.random.key(0), jnp.zeros((1, 24, 24, 3)),
                     train=False)["params"]
  params, _ = init.apply(fresh, {})
  x = _images(24)
  _, aux = model.apply({"params": params}, x, train=False)
  w_24 = dict(w, pos_embed=init.params["position_embedding"][None],
              **{"head.weight": np.eye(D, dtype=np.float32),
                 "head.bias": np.zeros(D, np.float32)})
  np.testing.assert_allclose(aux["features"], ref.timm_vit(w_24, x, HEADS),
                             **TOL)
  np.testing.assert_array_equal(params["classifier"]["kernel"],
                                fresh["classifier"]["kernel"])


def test_load_resnet_file_sets_batch_statistics(tmp_path):
  path = tmp_path / "r.safetensors"
  w = timm_resnet_file(np.random.default_rng(4), (1, 1, 1, 1), False)
  st_numpy.save_file(w, str(path))
  model = ResNet(num_classes=7, depth=10, width=4)
  init = pretrained.load(_config(path, "resnet"), _ModelTask(model, 32))
  np.testing.assert_array_equal(
      init.model_state["batch_stats/stage2_block0/downsample_norm/bn/var"],
      w["layer2.0.downsample.1.running_var"])
  np.testing.assert_array_equal(
      init.params["stage1_block0/conv2/kernel"],
      w["layer1.0.conv2.weight"].transpose(2, 3, 1, 0))


@pytest.mark.parametrize("make,name,suffix,model,message", [
    (lambda r: timm_resnet_file(r, (1, 1, 1, 1), False), "x", ".safetensors",
     "vit", r"is not a timm ViT \(.safetensors\) file: missing 8 key\(s\): "
     r"blocks.0.\*, head.bias, head.weight, norm.bias, norm.weight, "
     r"patch_embed.proj.bias and 2 more; unexpected 74 key\(s\): bn1.bias"),
    (timm_vit_file, "x", ".npz", "vit",
     r"not a big_vision ViT \(.npz\) file: missing"),
    (timm_vit_file, "x", ".pt", "vit",
     r"no converter for a .pt file and model 'vit'; known: .npz for model "
     "'vit', .safetensors for model 'vit', .safetensors for model 'resnet'"),
    (timm_vit_file, "x", ".safetensors", "nac", "no converter for a "
     ".safetensors file and model 'nac'"),
])
def test_files_of_another_layout_fail_in_one_line(tmp_path, make, name,
                                                  suffix, model, message):
  path = str(tmp_path / (name + suffix))
  w = make(np.random.default_rng(0))
  if suffix == ".npz":
    np.savez(path, **w)
  else:
    st_numpy.save_file(w, path)
  target = ViT(**VIT) if model == "vit" else None
  with pytest.raises(pretrained.PretrainedError, match=message) as e:
    pretrained.load(_config(path, model), _ModelTask(target, 16))
  assert "\n" not in str(e.value)


def test_a_file_of_another_size_names_the_arrays(tmp_path):
  path = tmp_path / "vit.safetensors"
  st_numpy.save_file(timm_vit_file(np.random.default_rng(0)), str(path))
  model = ViT(**{**VIT, "num_layers": 3, "qkv_bias": False})
  with pytest.raises(pretrained.PretrainedError) as e:
    pretrained.load(_config(path, "vit"), _ModelTask(model, 16))
  message = str(e.value)
  assert "\n" not in message
  assert "does not fit config.model ('vit')" in message
  assert ("21 array(s) differ; not in the source: block2_attention/exit/bias "
          "(16,), block2_attention/exit/kernel (16, 16), "
          "block2_attention/key/kernel (16, 16), "
          "block2_attention/query/kernel (16, 16) and 11 more; not in the "
          "model: block0_attention/key/bias (16,), block0_attention/query/bias"
          " (16,), block0_attention/value/bias (16,), "
          "block1_attention/key/bias (16,) and 2 more; expected") in message
  with pytest.raises(pretrained.PretrainedError, match="does not exist"):
    pretrained.load(_config(tmp_path / "nope.npz", "vit"),
                    _ModelTask(model, 16))


def test_every_registered_classifier_names_its_head():
  from crl.pretrained import families  # pylint: disable=g-import-not-at-top
  classifiers = set(registry.MODELS.names()) - {"savos", "two_heads"}
  assert classifiers <= set(families.HEADS)
