"""CausalShapes: images generated procedurally from an explicit causal model.

Every image is a coloured shape on a textured background, rendered with
signed distance functions (anti-aliased, at any resolution) in pure JAX. The
generator is a structural causal model; test distributions are the same model
under interventions `do(...)` on one or more mechanisms.

Causal graph (an arrow is "is a direct cause of"; every node also has its own
independent exogenous noise, drawn from the example's key)::

    label Y ~ U{0, ..., num_classes - 1}
    shape S := SHAPES[Y]                         (Y -> S; S is what defines Y)
    hue H | Y, S                                 (Y -> H: spurious; S -> H: the
                                                  excluded (shape, hue band) pairs)
    saturation, value ~ independent              (foreground appearance)
    scale Z ~ U(train_scale)
    position P | Z                               (Z -> P: object fully in frame)
    rotation R ~ U(train_rotation)
    background B = (texture T, colour C) ~ independent
    image X := render(S, H, saturation, value, Z, P, R, B)

Hue mechanism in training. The hue circle is cut into 12 bands of 30 degrees;
band 11 (330-360 degrees) is held out of training, bands 0-10 are the training
hues. Class `y` owns band `y` and never appears with band `(y + 5) % 11` (its
excluded combination). With probability `hue_correlation` the hue is uniform
in the class band, otherwise uniform over the class's 10 allowed training
bands, so P(band == y | Y = y) = hue_correlation + (1 - hue_correlation) / 10.

Contrast guarantee: the foreground has value (HSV) >= 0.85 and saturation
>= 0.6; backgrounds have value <= 0.45, so the shape always stands out and is
recognisable from its outline alone.

Interventions (names for `sample(..., intervention=...)`, joined with '+' to
combine those that touch different mechanisms; see `describe()`):

* `hue_independent`: do(H ~ U(allowed training bands)), i.e.
  hue_correlation := 0 on the training support.
* `unseen_hue`: do(H ~ U(held-out band 11)).
* `scale_out`: do(Z ~ U(small_scale) or U(large_scale), 1/2 each).
* `border_position`: do(P := centre within `border_depth` x Z of an image
  edge), so the object is partly cut.
* `unseen_background`: do(B ~ unseen textures (gradient, noise, rings) with
  saturated colours); training textures are flat, stripes, checker, dots with
  greyish colours.
* `unseen_rotation`: do(R ~ +-U(unseen_rotation)), outside the training range.
* `unseen_combination`: do(H ~ U(band (Y + 5) % 11)): exactly the (shape, hue
  band) pairs excluded from training.
* `novel_classes`: do(Y ~ U{K, ..., K + 3}, S := NOVEL_SHAPES[Y - K]) with
  K = num_classes: shapes never seen in training, labels outside [0, K); their
  hue is uniform over the training bands (they own no band).

Determinism: the key of an example is
`fold_in(fold_in(fold_in(key(seed), SPLIT_ID[split]), mask), index)` where
`mask` is the bit set of the interventions (bit `INTERVENTION_BITS[name]`, 0
for none): a stable table, so every example is a pure function of (seed,
split, intervention, index) and 'train', 'validation', 'test' are disjoint
streams.

Construction: `CausalShapes(**config)`. Unknown keys raise a `TypeError` that
names them and lists the valid keys; bad values raise a `ValueError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl import config_lib
from crl.data import procedural
from crl.data import shapes as shape_lib

Array = jax.Array

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "heart",
          "crescent", "arrow", "capsule")
NOVEL_SHAPES = ("hexagon", "semicircle", "hourglass", "l_shape")
NUM_HUE_BANDS = 12
HELD_OUT_HUE_BAND = 11
NUM_TRAIN_HUE_BANDS = 11
COMBINATION_OFFSET = 5
TRAIN_TEXTURES = ("flat", "vertical_stripes", "checker", "dots")
UNSEEN_TEXTURES = ("gradient", "noise", "rings")
TEXTURES = TRAIN_TEXTURES + UNSEEN_TEXTURES

SPLIT_IDS = {"train": 1, "validation": 2, "test": 3}
# name -> (bit in the intervention mask, mechanisms it replaces). Stable: never
# renumber, only append.
INTERVENTION_BITS = {
    "hue_independent": (0, frozenset({"hue"})),
    "unseen_hue": (1, frozenset({"hue"})),
    "scale_out": (2, frozenset({"scale"})),
    "border_position": (3, frozenset({"position"})),
    "unseen_background": (4, frozenset({"background"})),
    "unseen_rotation": (5, frozenset({"rotation"})),
    "unseen_combination": (6, frozenset({"hue", "shape"})),
    "novel_classes": (7, frozenset({"label", "shape"})),
}
INTERVENTIONS = tuple(INTERVENTION_BITS)
ALL_SHAPES = SHAPES + NOVEL_SHAPES


@dataclasses.dataclass(frozen=True, init=False)
class CausalShapes(procedural.InterventionSplits):
  """Procedural shapes dataset with named interventions.

  Frozen and hashable, so it can be a static argument of `jax.jit`. Built with
  `CausalShapes(**kwargs)`; an unknown key raises a `TypeError` naming it and
  listing the valid keys.

  Attributes:
    resolution: height and width of the square images, in pixels.
    num_classes: training classes K (at most 10); labels are 0..K-1, shape k
      is SHAPES[k].
    hue_correlation: probability that the hue comes from the class's band in
      the training distribution (strength of the spurious correlation).
    seed: the dataset's own seed (independent of the model seed).
    eval_examples: size of each finite eval split (and of 'validation').
    train_scale: range of the object radius, as a fraction of the image width.
    small_scale, large_scale: the two ranges of `scale_out`.
    train_rotation: range of rotations in training, degrees.
    unseen_rotation: range of |rotation| under `unseen_rotation`, degrees.
    border_depth: under `border_position` the centre lies at a distance of
      U(border_depth) x radius from one image edge (so it is partly cut).
    num_novel_classes: shapes of `novel_classes` (at most 4).
  """

  resolution: int = 32
  num_classes: int = 10
  hue_correlation: float = 0.9
  seed: int = 0
  eval_examples: int = 2000
  train_scale: tuple[float, float] = (0.22, 0.32)
  small_scale: tuple[float, float] = (0.12, 0.16)
  large_scale: tuple[float, float] = (0.38, 0.46)
  train_rotation: tuple[float, float] = (-30.0, 30.0)
  unseen_rotation: tuple[float, float] = (60.0, 180.0)
  border_depth: tuple[float, float] = (0.05, 0.5)
  num_novel_classes: int = 4

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    self._validate()

  def _validate(self) -> None:
    def bad(what: str) -> ValueError:
      return ValueError(f"CausalShapes: {what}.")
    if int(self.resolution) != self.resolution or self.resolution < 8:
      raise bad(f"resolution must be an integer >= 8, got {self.resolution}")
    if not 2 <= self.num_classes <= len(SHAPES):
      raise bad(f"num_classes must be in [2, {len(SHAPES)}], got "
                f"{self.num_classes}")
    if not 0. <= self.hue_correlation <= 1.:
      raise bad(f"hue_correlation must be in [0, 1], got "
                f"{self.hue_correlation}")
    if self.eval_examples < 1:
      raise bad(f"eval_examples must be >= 1, got {self.eval_examples}")
    if not 1 <= self.num_novel_classes <= len(NOVEL_SHAPES):
      raise bad(f"num_novel_classes must be in [1, {len(NOVEL_SHAPES)}], got "
                f"{self.num_novel_classes}")
    for name in ("train_scale", "small_scale", "large_scale", "train_rotation",
                 "unseen_rotation", "border_depth"):
      r = getattr(self, name)
      if not (isinstance(r, tuple) and len(r) == 2 and r[0] <= r[1]):
        raise bad(f"{name} must be a (low, high) pair with low <= high, "
                  f"got {r!r}")
    lo, hi = self.train_scale
    if not (0. < lo and hi <= 0.5 and self.small_scale[1] <= lo and
            self.large_scale[0] >= hi and 0. < self.small_scale[0]):
      raise bad("scales must satisfy 0 < small_scale < train_scale <= 0.5 "
                f"and large_scale >= train_scale, got small {self.small_scale}"
                f", train {self.train_scale}, large {self.large_scale}")
    a, b = self.train_rotation
    if self.unseen_rotation[0] < max(abs(a), abs(b)):
      raise bad(f"unseen_rotation {self.unseen_rotation} must lie outside "
                f"train_rotation {self.train_rotation}")

  # Interface -----------------------------------------------------------------

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.resolution, self.resolution, 3)

  @property
  def interventions(self) -> tuple[str, ...]:
    return INTERVENTIONS

  def describe(self, name: str) -> str:
    """The `do(...)` statement of an intervention (or a '+' combination)."""
    names = self.parse_intervention(name)
    return "; ".join(self._describe_one(n) for n in names)

  def _describe_one(self, name: str) -> str:
    band = f"[{HELD_OUT_HUE_BAND * 30}, {NUM_HUE_BANDS * 30}) degrees"
    rot = self.unseen_rotation
    return {
        "hue_independent": (
            "do(hue ~ U(training hue bands allowed for the shape)): hue "
            "independent of the label (hue_correlation := 0), training "
            "support"),
        "unseen_hue": f"do(hue ~ U(held-out band {band})): hues never seen in "
                      "training",
        "scale_out": (
            f"do(scale ~ U{self.small_scale} or U{self.large_scale}): object "
            f"radii outside the training range {self.train_scale}"),
        "border_position": (
            f"do(position := centre within U{self.border_depth} x radius of an"
            " image edge): objects at the borders, partly cut"),
        "unseen_background": (
            f"do(background ~ textures {UNSEEN_TEXTURES} in saturated "
            f"colours): never in training ({TRAIN_TEXTURES}, greyish)"),
        "unseen_rotation": (
            f"do(rotation ~ +-U({rot[0]:g}, {rot[1]:g}) degrees): outside the "
            f"training range {self.train_rotation}"),
        "unseen_combination": (
            f"do(hue ~ U(band (label + {COMBINATION_OFFSET}) % "
            f"{NUM_TRAIN_HUE_BANDS})): shape x hue pairs excluded from "
            "training"),
        "novel_classes": (
            f"do(shape ~ U{NOVEL_SHAPES[:self.num_novel_classes]}): classes "
            "never seen in training; labels "
            f"{self.num_classes}..{self.num_classes + self.num_novel_classes - 1}"
            " lie outside the training label space"),
    }[name]

  def eval_splits(self) -> dict[str, str]:
    """Eval split name -> description: 'test' and one per intervention."""
    splits = {"test": "held-out in-distribution split (no intervention)"}
    splits.update({name: self.describe(name) for name in INTERVENTIONS})
    return splits

  split_hint = " (or interventions combined with '+')"

  def parse_intervention(self, intervention: str) -> tuple[str, ...]:
    """'a+b' -> ('a', 'b') in table order; raises on unknown or conflicting."""
    names = procedural.split_interventions(intervention, INTERVENTIONS)
    seen: dict[str, str] = {}
    for n in names:
      for mechanism in INTERVENTION_BITS[n][1]:
        if mechanism in seen:
          raise ValueError(
              f"Interventions {seen[mechanism]!r} and {n!r} in "
              f"{intervention!r} both replace the {mechanism} mechanism "
              "and cannot be combined.")
        seen[mechanism] = n
    return names

  def encode(self, split: str, intervention: str | None = None) -> np.ndarray:
    """`(split id, intervention bit mask)` as int32 `[2]`.

    The distribution is *data* to the generator, not a static argument: one
    compiled `sample_encoded` serves every split and intervention.
    """
    if split not in SPLIT_IDS:
      raise ValueError(f"Unknown split {split!r}; known splits: "
                       f"{', '.join(SPLIT_IDS)}.")
    names = () if intervention is None else self.parse_intervention(
        intervention)
    mask = sum(1 << INTERVENTION_BITS[n][0] for n in names)
    return np.array([SPLIT_IDS[split], mask], np.int32)

  def eval_code(self, name: str) -> np.ndarray:
    """`encode` of eval split `name` (see `eval_splits()`)."""
    return self.encode("test", self._eval_intervention(name))

  def sample_encoded(self, code: Array, indices: Array) -> dict[str, Any]:
    """Examples `indices` of the distribution `code`; pure, jit-friendly.

    Args:
      code: int32 `[2]` `(split id, intervention bit mask)` from `encode` or
        `eval_code` (may be traced).
      indices: int32 `[batch]` example indices.

    Returns:
      `{'image': f32[batch, height, width, 3] in [0, 1], 'label': i32[batch],
      'factors': {name: [batch]}}`.
    """
    code = jnp.asarray(code, jnp.int32)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed),
                                                code[0]), code[1])
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    factors, aux = jax.vmap(self._factors, in_axes=(None, 0))(code[1], keys)
    image = self._render(factors, aux)
    return {"image": image.astype(jnp.float32), "label": factors["label"],
            "factors": factors}

  # Mechanisms ----------------------------------------------------------------

  def _factors(self, mask: Array, key: Array
               ) -> tuple[dict[str, Array], dict[str, Array]]:
    """One example's (factors, texture parameters) from its key (vmapped).

    `mask` is the (possibly traced) intervention bit mask: every mechanism is
    computed and the intervened one selected, so nothing here is static.
    """
    on = lambda n: (mask >> INTERVENTION_BITS[n][0]) & 1 == 1
    k = jax.random.split(key, 20)
    u = lambda i, lo=0., hi=1.: jax.random.uniform(k[i], (), jnp.float32, lo,
                                                   hi)
    num_k = self.num_classes
    novel = on("novel_classes")
    f = {}
    j = jax.random.randint(k[0], (), 0, self.num_novel_classes)
    y = jax.random.randint(k[0], (), 0, num_k)
    f["label"] = jnp.where(novel, num_k + j, y)
    f["shape"] = jnp.where(novel, len(SHAPES) + j, y)
    y = f["label"]
    excluded = (y + COMBINATION_OFFSET) % NUM_TRAIN_HUE_BANDS
    j = jax.random.randint(k[1], (), 0, NUM_TRAIN_HUE_BANDS - 1)
    allowed = j + (j >= excluded)            # uniform over the allowed bands
    # Novel shapes own no band: uniform over all training bands.
    allowed = jnp.where(novel, jax.random.randint(k[1], (), 0,
                                                  NUM_TRAIN_HUE_BANDS), allowed)
    band = jnp.where(u(2) < self.hue_correlation, y, allowed)
    band = jnp.where(on("hue_independent") | novel, allowed, band)
    band = jnp.where(on("unseen_combination"), excluded, band)
    band = jnp.where(on("unseen_hue"), HELD_OUT_HUE_BAND, band)
    f["hue_band"] = band.astype(jnp.int32)
    f["hue"] = (band + u(3)) / NUM_HUE_BANDS
    f["saturation"], f["value"] = u(4, 0.6, 1.), u(5, 0.85, 1.)
    small, large = u(6, *self.small_scale), u(6, *self.large_scale)
    f["scale"] = jnp.where(on("scale_out"),
                           jnp.where(u(7) < 0.5, small, large),
                           u(6, *self.train_scale))
    f["rotation"] = jnp.where(
        on("unseen_rotation"),
        jnp.where(u(9) < 0.5, -1., 1.) * u(8, *self.unseen_rotation),
        u(8, *self.train_rotation))
    z = f["scale"]
    depth = u(10, *self.border_depth) * z
    along = u(11, 0.15, 0.85)
    side = jax.random.randint(k[12], (), 0, 4)
    near = jnp.where(side % 2 == 0, depth, 1. - depth)
    margin = jnp.maximum(0.5 - z - 0.5 / self.resolution, 0.)
    border = on("border_position")
    f["pos_x"] = jnp.where(border, jnp.where(side < 2, near, along),
                           u(10, 0.5 - margin, 0.5 + margin))
    f["pos_y"] = jnp.where(border, jnp.where(side < 2, along, near),
                           u(11, 0.5 - margin, 0.5 + margin))
    unseen_bg = on("unseen_background")
    f["background"] = jnp.where(
        unseen_bg,
        len(TRAIN_TEXTURES) + jax.random.randint(k[13], (), 0,
                                                 len(UNSEEN_TEXTURES)),
        jax.random.randint(k[13], (), 0, len(TRAIN_TEXTURES)))
    f["bg_saturation"] = jnp.where(unseen_bg, u(14, 0.6, 1.), u(14, 0., 0.25))
    f["bg_hue"], f["bg_value"] = u(15), u(16, 0.12, 0.3)
    f["label"] = f["label"].astype(jnp.int32)
    f["shape"] = f["shape"].astype(jnp.int32)
    f["background"] = f["background"].astype(jnp.int32)
    # Texture nuisance parameters (not causal factors of interest).
    aux = {"freq": u(17, 3., 6.), "phase": jax.random.uniform(k[18], (3,)),
           "noise": jax.random.bits(k[19], (), jnp.uint32)}
    return f, aux

  def _render(self, f, aux) -> Array:
    """Renders `[batch, height, width, 3]` images from `[batch]` factors."""
    res = self.resolution
    c = (jnp.arange(res, dtype=jnp.float32) + 0.5) / res
    u, v = c[None, None, :], c[None, :, None]       # [1, 1, W], [1, H, 1]
    e = lambda a: a[:, None, None]
    # Object frame: translate, rotate by -rotation, scale to object units, y up.
    theta = jnp.deg2rad(e(f["rotation"]))
    dx, dy = u - e(f["pos_x"]), e(f["pos_y"]) - v
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    x = (cos * dx + sin * dy) / e(f["scale"])
    y = (-sin * dx + cos * dy) / e(f["scale"])
    sdf = None
    for i, shape in enumerate(SHAPES + NOVEL_SHAPES):
      if (i < len(SHAPES) and i >= self.num_classes) or (
          i >= len(SHAPES) + self.num_novel_classes):
        continue  # never drawn by this dataset
      d = shape_lib.SDFS[shape](x, y)
      sdf = d if sdf is None else jnp.where(e(f["shape"]) == i, d, sdf)
    # Coverage of each pixel from the distance in pixels: anti-aliased edges.
    alpha = jnp.clip(0.5 - sdf * e(f["scale"]) * res, 0., 1.)[..., None]
    fg = shape_lib.hsv_to_rgb(f["hue"], f["saturation"],
                              f["value"])[:, None, None]
    texture = self._texture(f, aux, u, v)
    bg = shape_lib.hsv_to_rgb(e(f["bg_hue"]), e(f["bg_saturation"]),
                              e(f["bg_value"]) * (0.5 + texture))
    return jnp.clip(alpha * fg + (1. - alpha) * bg, 0., 1.)

  def _texture(self, f, aux, u, v) -> Array:
    """Background pattern t in [0, 1], `[batch, height, width]`."""
    res = self.resolution
    e = lambda a: a[:, None, None]
    freq, ph = e(aux["freq"]), aux["phase"][:, :, None, None]
    two_pi = 2. * jnp.pi
    angle = two_pi * ph[:, 0]
    gradient = jnp.clip(0.5 + 0.9 * (jnp.cos(angle) * (u - 0.5) +
                                     jnp.sin(angle) * (v - 0.5)), 0., 1.)
    rows = jnp.arange(res, dtype=jnp.uint32)[None, :, None]
    cols = jnp.arange(res, dtype=jnp.uint32)[None, None, :]
    noise = shape_lib.hash_uniform(rows * jnp.uint32(res) + cols,
                                   e(aux["noise"]))
    rings = 0.5 + 0.5 * jnp.sin(
        two_pi * freq * shape_lib.length(u - ph[:, 1], v - ph[:, 2]))
    flat = jnp.full_like(u * v, 0.5)
    stripes = 0.5 + 0.5 * jnp.sin(two_pi * (freq * u + ph[:, 0]))
    checker = 0.5 + 0.5 * jnp.tanh(4. * jnp.sin(two_pi * (freq * u + ph[:, 0]))
                                   * jnp.sin(two_pi * (freq * v + ph[:, 1])))
    cu, cv = jnp.mod(freq * u + ph[:, 0], 1.), jnp.mod(freq * v + ph[:, 1], 1.)
    dist_px = (shape_lib.length(cu - 0.5, cv - 0.5) - 0.28) * res / freq
    dots = jnp.clip(0.5 - dist_px, 0., 1.)
    # Indexed as TEXTURES: the training textures, then the unseen ones.
    options = (flat, stripes, checker, dots, gradient, noise, rings)
    first = 0
    t = None
    for i, option in enumerate(options):
      option = jnp.broadcast_to(option, (f["background"].shape[0], res, res))
      t = option if t is None else jnp.where(e(f["background"]) == first + i,
                                             option, t)
    return t
