"""The OOD suite's member augmentations, as names or as per-member flags.

A member's `augment` is a tuple of `AUGMENTATIONS`: `flip` (horizontal,
p = 1/2), `crop` (pad 4 px by edge replication, random crop back), `hue`
(rotation of the chroma plane in YIQ by a uniform angle: decorrelates hue
from the label, the spurious cue of causal shapes), and the policies of
`crl.data.augment` (`standard`, `randaugment`, `augmix`, applied after
those). In a population the same choice is data: one flag per name
(`augment_flags`), traced, every op computed and the flags selecting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crl.data import augment as augment_lib

AUGMENTATIONS = ("flip", "crop", "hue", "standard", "randaugment", "augmix")
_POLICIES = ("standard", "randaugment", "augmix")  # crl.data.augment
CROP_PAD = 4


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                 [0.211, -0.523, 0.312]], np.float32)


def augment_flags(ops: tuple[str, ...]) -> np.ndarray:
  """`ops` as one bool per entry of `AUGMENTATIONS` (a population's data)."""
  return np.array([a in ops for a in AUGMENTATIONS])


def augment(images: jax.Array, key: jax.Array,
            ops: tuple[str, ...] | jax.Array) -> jax.Array:
  """Random `ops` on `[batch, height, width, 3]` images.

  `ops` is a tuple of names of `AUGMENTATIONS`, or a bool array with one
  flag per name (`augment_flags`; may be traced: then every op is computed
  and the flags select, which gives the same values as the tuple).
  """
  b, h, w, _ = images.shape
  keys = jax.random.split(key, 4)
  if isinstance(ops, tuple):
    use = {a: (True if a in ops else None) for a in AUGMENTATIONS}
  else:
    use = dict(zip(AUGMENTATIONS, ops))

  def pick(op, new, old):
    return new if use[op] is True else jnp.where(use[op], new, old)

  if use["crop"] is not None:
    padded = jnp.pad(images, ((0, 0), (CROP_PAD, CROP_PAD),
                              (CROP_PAD, CROP_PAD), (0, 0)), mode="edge")
    offsets = jax.random.randint(keys[0], (b, 2), 0, 2 * CROP_PAD + 1)
    images = pick("crop", jax.vmap(lambda x, o: jax.lax.dynamic_slice(
        x, (o[0], o[1], 0), (h, w, 3)))(padded, offsets), images)
  if use["flip"] is not None:
    flip = jax.random.bernoulli(keys[1], 0.5, (b, 1, 1, 1))
    images = pick("flip", jnp.where(flip, images[:, :, ::-1], images),
                  images)
  if use["hue"] is not None:
    theta = jax.random.uniform(keys[2], (b,), minval=0., maxval=2 * jnp.pi)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    one, zero = jnp.ones_like(cos), jnp.zeros_like(cos)
    rot = jnp.stack([jnp.stack([one, zero, zero], -1),
                     jnp.stack([zero, cos, -sin], -1),
                     jnp.stack([zero, sin, cos], -1)], -2)   # [b, 3, 3]
    yiq, rgb = jnp.asarray(_YIQ), jnp.asarray(np.linalg.inv(_YIQ))
    m = jnp.einsum("ij,bjk,kl->bil", rgb, rot, yiq)
    images = pick("hue", jnp.clip(jnp.einsum("bij,bhwj->bhwi", m, images),
                                  0., 1.), images)
  for i, policy in enumerate(_POLICIES):
    if use[policy] is not None:
      images = pick(policy, augment_lib.apply(
          policy, images, jax.random.fold_in(keys[3], i)), images)
  return images
