"""`--config.init_from`: a fresh run starts from another run's or a file's
backbone.

`init_from` is one of
  * a run directory (anything `python -m crl.main` wrote): the parameters
    (and BatchNorm statistics) of its newest readable checkpoint; the run
    must be of the same model (`config.json`'s `model.name`);
  * a big_vision / AugReg ViT `.npz` (model 'vit'; `crl.pretrained.vit`);
  * a timm-style `.safetensors` of a ViT (model 'vit') or a ResNet (model
    'resnet'; `crl.pretrained.resnet`).
Every array of the target model but its head (`families.HEADS`, re-created
for the target's classes) must come from the source with the same shape,
except those a family resamples (a ViT's position embedding when the image
size differs, `families.ADAPTERS`); otherwise `PretrainedError` names the
arrays that do not fit, before anything is compiled or written.

It applies only when a run starts fresh: a run that resumes keeps its own
checkpoint (`crl.train.run`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from absl import logging
from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

from crl import checkpointing
from crl.pretrained import families
from crl.pretrained import keys as keys_lib

CONVERTERS = {  # (model name, file suffix) -> layout name
    ("vit", ".npz"): "big_vision ViT",
    ("vit", ".safetensors"): "timm ViT",
    ("resnet", ".safetensors"): "timm ResNet",
}


class PretrainedError(checkpointing.CheckpointError):
  """`init_from` cannot initialise this model (exit code 2 from crl.main)."""


@dataclasses.dataclass(frozen=True)
class Init:
  """What `load` read: backbone arrays by flat path (`a/b/c`), already in
  the target's shapes and dtypes."""
  source: str
  params: dict[str, np.ndarray]
  model_state: dict[str, np.ndarray]
  head: tuple[str, ...]

  def apply(self, params: Any, model_state: Any) -> tuple[Any, Any]:
    """`(params, model_state)` of a fresh model with the backbone replaced."""
    return _overlay(params, self.params), _overlay(model_state,
                                                   self.model_state)


def _flat(tree: Any) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def _overlay(tree: Any, flat: dict[str, np.ndarray]) -> Any:
  if not flat:
    return tree
  out = _flat(tree)
  out.update(flat)
  return traverse_util.unflatten_dict(out, sep="/")


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a finished checkpoint (the run would resume);
  reads the directory only (creates nothing)."""
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def load(config: Any, task: Any) -> Init:
  """Reads `config.init_from` and fits it to `task`'s model.

  Args:
    config: the run's config (`init_from`, `model.name`).
    task: the run's task (`init_params`, optional `init_model_state`),
      traced with `jax.eval_shape` only.

  Raises:
    PretrainedError: the path is missing, of an unknown kind or layout, of
      another model, or arrays do not fit (one line naming them).
  """
  path = os.path.expanduser(str(config.init_from))
  model = config.model.name
  where = f"config.init_from={path!r}"
  if model not in families.HEADS:
    raise PretrainedError(
        f"{where}: model {model!r} names no head; add its head function to "
        "crl.pretrained.families.HEADS (known: "
        f"{', '.join(sorted(families.HEADS))}).")
  if os.path.isdir(path):
    params, state = _from_run(path, model, where)
  elif not os.path.exists(path):
    raise PretrainedError(
        f"{where} does not exist; expected a run directory or a weights file "
        "(.npz, .safetensors).")
  else:
    params, state = _from_file(path, model, config.model, where)
  key = jax.random.PRNGKey(0)
  want_params = jax.eval_shape(task.init_params, key)
  want_state = (jax.eval_shape(task.init_model_state, key)
                if hasattr(task, "init_model_state") else {})
  head = tuple(families.HEADS[model](want_params))
  return Init(path, _fit(model, want_params, params, head, where),
              _fit(model, want_state, state, (), where), head)


def _from_run(run_dir: str, model: str, where: str) -> tuple[Any, Any]:
  """`(params, model_state)` of the newest readable checkpoint of a run."""
  config_path = os.path.join(run_dir, "config.json")
  if not os.path.exists(config_path) or not has_checkpoint(run_dir):
    raise PretrainedError(
        f"{where} is a directory without a config.json and checkpoints; "
        "expected a run directory written by python -m crl.main (or a "
        "weights file).")
  with open(config_path) as f:
    source_model = json.load(f).get("model", {}).get("name")
  if source_model != model:
    raise PretrainedError(
        f"{where} is a run of model {source_model!r} but config.model.name "
        f"is {model!r}; expected a run of the same model.")
  directory = os.path.join(run_dir, "checkpoints")
  reader = ocp.CheckpointManager(
      directory, item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  metadata = None
  try:
    for step in sorted(reader.all_steps(), reverse=True):
      try:
        metadata = reader.item_metadata(step)
        break
      except Exception:  # pylint: disable=broad-except
        logging.warning("init_from: cannot read the metadata of step %d in "
                        "%s; trying the previous one.", step, directory)
  finally:
    reader.close()
  if metadata is None:
    raise PretrainedError(f"{where}: none of the checkpoints in {directory} "
                          "can be read.")
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype,
                                     sharding=sharding),
      getattr(metadata, "tree", metadata))
  # keep: never delete anything from a run we only read.
  ckpt = checkpointing.Checkpointer(directory, 0, keep=2**31 - 1,
                                    async_save=False)
  try:
    tree, step = ckpt.restore_latest(abstract)
  finally:
    ckpt.close()
  logging.info("init_from: step %d of %s.", step, run_dir)
  return (jax.device_get(tree["params"]),
          jax.device_get(tree.get("model_state", {})))


def _read_arrays(path: str, suffix: str, where: str) -> dict[str, np.ndarray]:
  try:
    if suffix == ".npz":
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
    from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
    return dict(st_numpy.load_file(path))
  except Exception as e:  # pylint: disable=broad-except
    raise PretrainedError(f"{where} cannot be read as {suffix} "
                          f"({type(e).__name__}: {e}).") from None


def _from_file(path: str, model: str, model_config: Any,
               where: str) -> tuple[Any, Any]:
  """`(params, model_state)` converted from a weights file."""
  suffix = os.path.splitext(path)[1].lower()
  layout = CONVERTERS.get((model, suffix))
  if layout is None:
    known = ", ".join(f"{s} for model {m!r}" for m, s in CONVERTERS)
    raise PretrainedError(
        f"{where}: no converter for a {suffix or 'suffix-less'} file and "
        f"model {model!r}; known: {known}.")
  arrays = _read_arrays(path, suffix, where)
  # pylint: disable=g-import-not-at-top
  from crl.pretrained import resnet as resnet_lib
  from crl.pretrained import vit as vit_lib
  try:
    if layout == "big_vision ViT":
      if not model_config.get("gelu_approximate", False):
        logging.warning("init_from: big_vision ViTs use the tanh-approximate "
                        "GELU; set --config.model.gelu_approximate=True to "
                        "compute exactly what the file's model computed.")
      return vit_lib.from_big_vision(arrays), {}
    if layout == "timm ViT":
      return vit_lib.from_timm(arrays), {}
    mean = tuple(model_config.get("pixel_mean", resnet_lib.IMAGENET_MEAN))
    if not np.allclose(mean, resnet_lib.IMAGENET_MEAN):
      logging.warning(
          "init_from: timm's ImageNet ResNets expect pixel_mean=%s, "
          "pixel_std=%s; config.model has %s, %s.", resnet_lib.IMAGENET_MEAN,
          resnet_lib.IMAGENET_STD, mean,
          tuple(model_config.get("pixel_std", ())))
    return resnet_lib.from_timm(arrays)
  except keys_lib.LayoutError as e:
    raise PretrainedError(f"{where} is {e}.") from None


def _listing(items: list[str], limit: int = 4) -> str:
  more = f" and {len(items) - limit} more" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more


def _fit(model: str, want: Any, have: Any, head: tuple[str, ...],
         where: str) -> dict[str, np.ndarray]:
  """The source's arrays for every non-head leaf of `want` (flat paths).

  Raises:
    PretrainedError: naming the arrays that are missing, extra or of
      another shape.
  """
  adapters = families.ADAPTERS.get(model, {})
  want = {k: v for k, v in _flat(want).items()
          if k.split("/")[0] not in head}
  have = {k: v for k, v in _flat(have).items()
          if k.split("/")[0] not in head}
  out, missing, shapes = {}, [], []
  for k in sorted(want):
    shape = tuple(want[k].shape)
    if k not in have:
      missing.append(f"{k} {shape}")
      continue
    value = np.asarray(have[k])
    if value.shape != shape and k in adapters:
      try:
        value = adapters[k](value, shape)
      except ValueError as e:
        shapes.append(f"{k} ({e})")
        continue
    if value.shape != shape:
      shapes.append(f"{k} model {shape} vs source {value.shape}")
      continue
    out[k] = value.astype(want[k].dtype)
  extra = [f"{k} {tuple(np.shape(have[k]))}"
           for k in sorted(set(have) - set(want))]
  if missing or extra or shapes:
    parts = [f"{title}: {_listing(items)}" for title, items in (
        ("other shapes", shapes), ("not in the source", missing),
        ("not in the model", extra)) if items]
    raise PretrainedError(
        f"{where} does not fit config.model ({model!r}): "
        f"{len(missing) + len(extra) + len(shapes)} array(s) differ; "
        f"{'; '.join(parts)}; expected the same model config but the head "
        f"({', '.join(head) or 'none'}), which is re-created.")
  return out
