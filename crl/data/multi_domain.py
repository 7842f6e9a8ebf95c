"""Multi-domain shapes (PACS-style targets) and the pretraining source.

The same classes rendered in four domains, from an explicit generator on the
shape library of `crl.data.causal_shapes`:

    label Y ~ U{0..K-1}; shape S := ALL_SHAPES[Y]
    pattern P ~ U{PATTERNS} (nuisance here; part of the class in the source)
    hue, scale, rotation, position, background ~ independent nuisances
    domain D (fixed per dataset; mixed in the source)
    image X := render_D(S, P, nuisances)

Domains (`DOMAINS`), what `render_D` draws:

* `photo`: shaded, textured object (a light direction, a surface pattern,
  pixel grain) on a textured, greyish background;
* `sketch`: grey pencil outline with a wobbly stroke and hatching where the
  pattern is dark, on white paper; no colour;
* `cartoon`: flat saturated two-tone fill, thick black outline, flat pastel
  background;
* `painting`: brush strokes modulate hue and value, ragged soft edges, a
  stroked warm background.

`MultiDomainShapes(domain='photo')` is an ID dataset whose eval splits are
`test` (its own domain, held out) and the other domains' test streams (the
`domain/<name>` shifts of `crl.shifts.registry`, kind `domain`).
`PretrainSource` is the broad source task (what ImageNet is for the
transfer study's targets): every shape of the library (14 classes against
the targets' 10; `classes='shape_pattern'`: shape x pattern, 70 classes,
label = shape * 5 + pattern), every domain mixed in (uniform per example),
the surface pattern a nuisance, hue over the whole circle, rotations over
180 degrees (twice the targets'), wider scales. The 70-class task was not
learnable at this resolution within a CPU budget: a small ViT stayed at
chance (loss ln 70) for 400 steps at peak lr 5e-4, and a pixel linear
probe (6000 images) read the pattern at chance (.207 against .20) in every
domain; the sketch domain draws patterns only as faint hatching, so shape
x pattern is partly not identifiable from the image.

Determinism: example `i` of split `s` in domain `d` uses the key
`fold_in(fold_in(fold_in(key(seed), SPLIT_IDS[s]), d + 1), i)` (`d + 1 = 0`
for the mixed source), so every example is a pure function of (seed,
split, domain, index). The distribution is data (`encode`), so one compiled
generator serves every domain, as in causal shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl import config_lib
from crl.data import causal_shapes as cs
from crl.data import procedural
from crl.data import shapes as shape_lib

Array = jax.Array

DOMAINS = ("photo", "sketch", "cartoon", "painting")
PATTERNS = ("solid", "stripes", "dots", "checker", "rings")
SPLIT_IDS = cs.SPLIT_IDS
MIXED = -1  # the domain code of the source's mixture
CLASS_SCHEMES = ("shape", "shape_pattern")  # the source's labels


def _len(x, y):
  return jnp.sqrt(x * x + y * y)


@dataclasses.dataclass(frozen=True, init=False)
class MultiDomainShapes(procedural.InterventionSplits):
  """Shapes in one of `DOMAINS`; the other domains are its OOD splits.

  Attributes:
    resolution: image height and width in pixels.
    num_classes: shapes (classes) 0..K-1 of `causal_shapes.ALL_SHAPES`
      (at most 14).
    domain: the in-distribution domain.
    seed: the dataset's own seed.
    eval_examples: size of each eval split (and of 'validation').
    scale: range of the object radius (fraction of the width).
    rotation: range of rotations (degrees).
  """

  resolution: int = 32
  num_classes: int = 10
  domain: str = "photo"
  seed: int = 0
  eval_examples: int = 1000
  scale: tuple[float, float] = (0.24, 0.36)
  rotation: tuple[float, float] = (-45., 45.)

  DOMAIN_CHOICES = DOMAINS  # not a field (no annotation)

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    self._validate()

  def _validate(self) -> None:
    name = type(self).__name__
    if int(self.resolution) != self.resolution or self.resolution < 8:
      raise ValueError(f"{name}: resolution must be an integer >= 8, got "
                       f"{self.resolution}.")
    if not 2 <= self.num_shapes <= len(cs.ALL_SHAPES):
      raise ValueError(f"{name}: the number of shapes must be in [2, "
                       f"{len(cs.ALL_SHAPES)}], got {self.num_shapes}.")
    if self.domain not in self.DOMAIN_CHOICES:
      raise ValueError(f"{name}: unknown domain {self.domain!r}; known "
                       f"domains: {', '.join(DOMAINS)}.")
    if self.eval_examples < 1:
      raise ValueError(f"{name}: eval_examples must be >= 1.")
    for field in ("scale", "rotation"):
      r = getattr(self, field)
      if not (isinstance(r, tuple) and len(r) == 2 and r[0] <= r[1]):
        raise ValueError(f"{name}: {field} must be a (low, high) pair, got "
                         f"{r!r}.")
    if not (0. < self.scale[0] and self.scale[1] <= 0.5):
      raise ValueError(f"{name}: scale must lie in (0, 0.5], got "
                       f"{self.scale}.")

  @property
  def num_shapes(self) -> int:
    return self.num_classes

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.resolution, self.resolution, 3)

  @property
  def domains(self) -> tuple[str, ...]:
    return DOMAINS

  # Splits ----------------------------------------------------------------------

  def eval_splits(self) -> dict[str, str]:
    splits = {"test": f"held-out {self.domain} images (in-distribution)"}
    splits.update({d: f"the same classes drawn as {d} (domain shift)"
                   for d in DOMAINS if d != self.domain})
    return splits

  def parse_intervention(self, name: str) -> tuple[str, ...]:
    if name not in DOMAINS or name == self.domain:
      raise ValueError(f"{name!r} is not another domain of this "
                       f"{self.domain} dataset; domains: {', '.join(DOMAINS)}")
    return (name,)

  def _domain_code(self, domain: str | None) -> int:
    domain = self.domain if domain is None else domain
    return MIXED if domain == "mixed" else DOMAINS.index(domain)

  def encode(self, split: str, intervention: str | None = None) -> np.ndarray:
    """`(split id, domain index)` as int32 `[2]` (domain -1: mixed)."""
    if split not in SPLIT_IDS:
      raise ValueError(f"Unknown split {split!r}; known splits: "
                       f"{', '.join(SPLIT_IDS)}.")
    if intervention is not None:
      self.parse_intervention(intervention)
    return np.array([SPLIT_IDS[split], self._domain_code(intervention)],
                    np.int32)

  def eval_code(self, name: str) -> np.ndarray:
    return self.encode("test", self._eval_intervention(name))

  def sample_encoded(self, code: Array, indices: Array) -> dict[str, Any]:
    """Pure JAX: `{'image': f32[B, H, W, 3], 'label': i32[B], 'factors'}`."""
    return _sample_impl(self, code, indices)

  # Mechanisms ------------------------------------------------------------------

  def label_of(self, shape: Array, pattern: Array) -> Array:
    del pattern
    return shape

  def _factors(self, domain: Array, key: Array) -> dict[str, Array]:
    k = jax.random.split(key, 16)
    u = lambda i, lo=0., hi=1.: jax.random.uniform(k[i], (), jnp.float32, lo,
                                                   hi)
    f = {"shape": jax.random.randint(k[0], (), 0, self.num_shapes),
         "pattern": jax.random.randint(k[1], (), 0, len(PATTERNS)),
         "domain": jnp.where(domain == MIXED,
                             jax.random.randint(k[2], (), 0, len(DOMAINS)),
                             domain),
         "hue": u(3), "scale": u(4, *self.scale),
         "rotation": u(5, *self.rotation),
         "bg_hue": u(8), "bg_texture": jax.random.randint(
             k[9], (), 0, len(cs.TEXTURES)),
         "light": u(10, 0., 2. * jnp.pi), "stroke_angle": u(11, 0., jnp.pi),
         "phase": u(12), "freq": u(13, 3., 6.),
         "noise": jax.random.bits(k[14], (), jnp.uint32),
         "line": u(15, 0.8, 1.6)}
    margin = jnp.maximum(0.5 - f["scale"] - 0.5 / self.resolution, 0.)
    f["pos_x"] = u(6, 0.5 - margin, 0.5 + margin)
    f["pos_y"] = u(7, 0.5 - margin, 0.5 + margin)
    f["label"] = self.label_of(f["shape"], f["pattern"]).astype(jnp.int32)
    return f

  def _render(self, f: dict[str, Array]) -> Array:
    """`[B, H, W, 3]` images from `[B]` factors, every domain then a select."""
    res = self.resolution
    c = (jnp.arange(res, dtype=jnp.float32) + 0.5) / res
    u, v = c[None, None, :], c[None, :, None]
    e = lambda a: a[:, None, None]
    theta = jnp.deg2rad(e(f["rotation"]))
    dx, dy = u - e(f["pos_x"]), e(f["pos_y"]) - v
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    z = e(f["scale"])
    x = (cos * dx + sin * dy) / z
    y = (-sin * dx + cos * dy) / z
    sdf = None
    for i, name in enumerate(cs.ALL_SHAPES[:self.num_shapes]):
      d = shape_lib.SDFS[name](x, y)
      sdf = d if sdf is None else jnp.where(e(f["shape"]) == i, d, sdf)
    d_px = sdf * z * res                               # signed pixels
    pattern = _pattern(f, x, y)
    grain = shape_lib.hash_uniform(
        jnp.arange(res * res, dtype=jnp.uint32).reshape(1, res, res),
        e(f["noise"]))
    styles = (_photo(f, d_px, pattern, grain, u, v, x, y, res),
              _sketch(f, d_px, pattern, grain, x, y),
              _cartoon(f, d_px, pattern),
              _painting(f, d_px, pattern, grain, u, v))
    out = styles[0]
    for i, img in enumerate(styles[1:], start=1):
      out = jnp.where((f["domain"] == i)[:, None, None, None], img, out)
    return jnp.clip(out, 0., 1.)


def _pattern(f, x, y) -> Array:
  """Surface pattern t in [0, 1] in object coordinates, `[B, H, W]`."""
  e = lambda a: a[:, None, None]
  two_pi = 2. * jnp.pi
  ph = e(f["phase"])
  # Coarse (about one period per object radius), so that a pattern stays
  # visible on the smallest objects at 32 px.
  stripes = 0.5 + 0.5 * jnp.tanh(3. * jnp.sin(two_pi * (1.2 * x + ph)))
  cu, cv = jnp.mod(1.4 * x + ph, 1.), jnp.mod(1.4 * y + ph, 1.)
  dots = (_len(cu - 0.5, cv - 0.5) < 0.3).astype(jnp.float32)
  checker = 0.5 + 0.5 * jnp.tanh(4. * jnp.sin(two_pi * (1. * x + ph)) *
                                 jnp.sin(two_pi * (1. * y + ph)))
  rings = 0.5 + 0.5 * jnp.tanh(3. * jnp.sin(two_pi * 1.5 * _len(x, y)))
  options = (jnp.zeros_like(x), stripes, dots, checker, rings)
  t = options[0]
  for i, opt in enumerate(options[1:], start=1):
    t = jnp.where(e(f["pattern"]) == i, opt, t)
  return t


def _coverage(d_px, softness=1.):
  return jnp.clip(0.5 - d_px / softness, 0., 1.)[..., None]


def _photo(f, d_px, pattern, grain, u, v, x, y, res):
  e = lambda a: a[:, None, None]
  light = e(f["light"])
  shade = 0.5 + 0.5 * jnp.clip(-(jnp.cos(light) * x + jnp.sin(light) * y) /
                               1.2, -1., 1.)
  value = (0.55 + 0.4 * shade) * (1. - 0.6 * pattern) + 0.06 * (grain - 0.5)
  fg = shape_lib.hsv_to_rgb(e(f["hue"]), 0.7, jnp.clip(value, 0., 1.))
  two_pi = 2. * jnp.pi
  texture = jnp.where(
      e(f["bg_texture"]) % 3 == 0, grain,
      jnp.where(e(f["bg_texture"]) % 3 == 1,
                0.5 + 0.5 * jnp.sin(two_pi * e(f["freq"]) * (u + 0.3 * v)),
                0.5 + 0.5 * jnp.sin(two_pi * e(f["freq"]) * _len(u - .3,
                                                                 v - .6))))
  bg = shape_lib.hsv_to_rgb(e(f["bg_hue"]), 0.2, 0.25 + 0.25 * texture +
                            0.08 * (grain - 0.5))
  del res
  a = _coverage(d_px)
  return a * fg + (1. - a) * bg


def _sketch(f, d_px, pattern, grain, x, y):
  e = lambda a: a[:, None, None]
  angle = jnp.arctan2(y, x)
  wobble = 0.5 * jnp.sin(5. * angle + 6.28 * e(f["phase"]))
  line = e(f["line"])
  ink = jnp.clip(line / 2. + 0.5 - jnp.abs(d_px + wobble), 0., 1.)
  hatch = (pattern > 0.5) & (d_px < 0.)
  hatch_lines = 0.5 + 0.5 * jnp.sin(2. * jnp.pi * 3. * (x + y))
  ink = jnp.maximum(ink, jnp.where(hatch, 0.55 * (hatch_lines > 0.6), 0.))
  paper = 0.93 + 0.05 * (grain - 0.5)
  gray = paper * (1. - ink) + 0.18 * ink
  return jnp.repeat(gray[..., None], 3, axis=-1)


def _cartoon(f, d_px, pattern):
  e = lambda a: a[:, None, None]
  value = jnp.where(pattern > 0.5, 1.0, 0.55)
  fg = shape_lib.hsv_to_rgb(e(f["hue"]), 0.9, value)
  bg = shape_lib.hsv_to_rgb(e(f["bg_hue"]), 0.22, jnp.full_like(value, 0.97))
  a = _coverage(d_px)
  outline = jnp.clip(2. - jnp.abs(d_px + 0.5), 0., 1.)[..., None]
  return (a * fg + (1. - a) * bg) * (1. - outline)


def _painting(f, d_px, pattern, grain, u, v):
  e = lambda a: a[:, None, None]
  a = e(f["stroke_angle"])
  along = jnp.cos(a) * u + jnp.sin(a) * v
  across = -jnp.sin(a) * u + jnp.cos(a) * v
  strokes = 0.5 + 0.5 * jnp.sin(2. * jnp.pi * (9. * across + 1.2 * jnp.sin(
      2. * jnp.pi * 2. * along + 6.28 * e(f["phase"]))))
  hue = e(f["hue"]) + 0.05 * (strokes - 0.5) + 0.02 * (grain - 0.5)
  fg = shape_lib.hsv_to_rgb(jnp.mod(hue, 1.), 0.6, 0.7 + 0.2 * strokes -
                            0.4 * pattern)
  bg = shape_lib.hsv_to_rgb(
      jnp.mod(0.08 + 0.1 * e(f["bg_hue"]) + 0.04 * strokes, 1.), 0.45,
      0.5 + 0.3 * strokes)
  ragged = _coverage(d_px + 1.5 * (strokes - 0.5), softness=2.5)
  return ragged * fg + (1. - ragged) * bg


@dataclasses.dataclass(frozen=True, init=False)
class PretrainSource(MultiDomainShapes):
  """The pretraining source: shape x pattern classes, every domain mixed.

  Attributes (beyond `MultiDomainShapes`'):
    num_shapes_source: shapes used (14: all of `causal_shapes.ALL_SHAPES`).
    classes: 'shape' (`num_classes` = `num_shapes_source`; the pattern is a
      nuisance) or 'shape_pattern' (`num_shapes_source * len(PATTERNS)`).
  """

  num_shapes_source: int = len(cs.ALL_SHAPES)
  classes: str = "shape"
  domain: str = "mixed"
  scale: tuple[float, float] = (0.22, 0.42)
  rotation: tuple[float, float] = (-90., 90.)
  eval_examples: int = 2000
  num_classes: int = 0  # derived; a config may not set it

  DOMAIN_CHOICES = ("mixed",)

  def __init__(self, **kwargs: Any):
    if kwargs.get("num_classes", 0):
      raise ValueError("PretrainSource: num_classes follows from "
                       "num_shapes_source and classes; set those.")
    if kwargs.get("classes", "shape") not in CLASS_SCHEMES:
      raise ValueError(f"PretrainSource: unknown classes "
                       f"{kwargs['classes']!r}; expected one of "
                       f"{', '.join(CLASS_SCHEMES)}.")
    if kwargs.get("domain", "mixed") != "mixed":
      raise ValueError("PretrainSource mixes every domain; domain must be "
                       "'mixed'.")
    config_lib.init_fields(self, kwargs)
    object.__setattr__(self, "num_classes", int(self.num_shapes_source) * (
        len(PATTERNS) if self.classes == "shape_pattern" else 1))
    self._validate()

  @property
  def num_shapes(self) -> int:
    return int(self.num_shapes_source)

  def eval_splits(self) -> dict[str, str]:
    return {"test": "held-out source images (every domain mixed)"}

  def parse_intervention(self, name: str) -> tuple[str, ...]:
    raise ValueError(f"the pretraining source has only the 'test' eval "
                     f"split, got {name!r}")

  def label_of(self, shape: Array, pattern: Array) -> Array:
    if self.classes == "shape":
      return shape
    return shape * len(PATTERNS) + pattern


def _sample_impl(ds: MultiDomainShapes, code: Array,
                 indices: Array) -> dict[str, Any]:
  code = jnp.asarray(code, jnp.int32)
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(ds.seed),
                                              code[0]), code[1] + 1)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
  factors = jax.vmap(ds._factors, in_axes=(None, 0))(code[1], keys)  # pylint: disable=protected-access
  image = ds._render(factors)  # pylint: disable=protected-access
  return {"image": image.astype(jnp.float32), "label": factors["label"],
          "factors": factors}

