"""OccludedVideo: procedural video of textured shapes that occlude each other.

The embedded dataset of the amodal-segmentation capability (specs/amodal.md).
Every example is a short video of `num_objects` textured shapes on a static
textured background, generated in pure JAX from a seed (on the devices,
inside `jax.jit`, like `crl.data.causal_shapes`).

Generative model (per video; every object has its own independent draws)::

    shape      ~ U(shapes)                       signed-distance shapes of
                                                 crl.data.shapes
    radius s   ~ U(scale)                        fraction of the frame width
    depth      := object index                   object k is drawn over j < k
    centre     c(t) = c_mid + v tau + a tau^2/2  tau = t - (T - 1) / 2, with
                                                 |c_mid - 0.5| <= spread, so
                                                 the objects cross each other
    speed |v|  ~ U(speed)                        frame widths per frame
    rotation   theta(t) = theta_0 + omega tau    omega ~ U(-1, 1) rotation_speed
    deformation  s_x = s (1 + d sin(phi + nu t)), s_y = s (1 - d sin(...))
                                                 d ~ U(0, deformation)
    texture    ~ U(textures), in object coordinates (it moves with the object)
    colour     hues spread around the circle (objects are distinguishable)

Each object is an affine image of its shape, `x = c(t) + A(t) u` with
`A(t) = R(theta(t)) diag(s_x(t), s_y(t))`, so the motion between two frames
is the affine map `x' = c(t') + A(t') A(t)^-1 (x - c(t))` and the optical
flow is exact (no estimation): `flow_fwd[t](x) = x' - x` for `t' = t + 1` and
`flow_bwd[t]` for `t' = t - 1`, in pixels, channel 0 along the width
(columns, x) and channel 1 along the height (rows, y). The scene flow at a
pixel is the flow of whatever is visible there (0 on the static background);
the last frame's forward flow (and the first frame's backward flow) follow
the same motion one frame further.

Masks (float 0/1; pixel centres inside the shape):

* `amodal[k, t]`: object k rendered alone (its full extent);
* `visible[k, t]`: the pixels where object k is in front (amodal minus the
  amodal masks of the objects in front of it and minus the chewing gum);
* `occluder[k, t]`: the union of the visible masks of everything else (the
  other objects and the gum): the pixels where object k could be hidden.

So `visible = amodal * (1 - occluder)`: amodal and visible agree wherever
nothing occludes.

Chewing gum (intervention 'gum', or probability `gum_probability` in
training): an opaque grey square fixed in the coordinates of one random
object rides with it in front of everything, so the part of that object
under it is never visible in the video (only a type prior can fill it).

Distributions (`eval_splits()`): 'test' (the training distribution, held-out
stream), 'gum' (the same with the gum on one object) and 'shifted', the
target distribution of test-time adaptation: other shapes
(`shifted_shapes`), speeds, rotation speeds, deformations, object textures
and backgrounds. 'shifted+gum' is also accepted.

Determinism: the key of a video is
`fold_in(fold_in(fold_in(key(seed), SPLIT_ID[split]), bits), index)`, with
`bits` the intervention bit set, so every video is a pure function of
(seed, split, intervention, index).

Construction: `OccludedVideo(**config)`; an unknown key raises a
`TypeError` naming it; bad values raise a `ValueError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crl import config_lib
from crl.data import procedural
from crl.data import occluded_render as render
from crl.data import shapes as shape_lib

Array = jax.Array

SPLIT_IDS = {"train": 1, "validation": 2, "test": 3}
# Stable bits: never renumber, only append.
INTERVENTION_BITS = {"shifted": 0, "gum": 1}
INTERVENTIONS = tuple(INTERVENTION_BITS)
OBJECT_TEXTURES = ("flat", "stripes", "checker", "dots")
BACKGROUNDS = ("grey_stripes", "colour_gradient")
# What a model may see: everything but the amodal ground truth.
OBSERVED_KEYS = ("frames", "visible", "occluder", "flow_fwd", "flow_bwd")
BATCH_KEYS = OBSERVED_KEYS + ("amodal",)

_GUM_RGB = (0.82, 0.82, 0.78)
_NUM_DRAWS = 26


def _range(name: str, r: Any) -> tuple[float, float]:
  if not (isinstance(r, tuple) and len(r) == 2 and r[0] <= r[1]):
    raise ValueError(f"OccludedVideo: {name} must be a (low, high) pair with "
                     f"low <= high, got {r!r}.")
  return r


@dataclasses.dataclass(frozen=True, init=False)
class OccludedVideo(procedural.InterventionSplits):
  """Procedural occluded-object video (see the module docstring).

  Frozen and hashable (a static `jax.jit` argument).

  Attributes:
    resolution: frame height and width, pixels.
    num_frames: frames per video, T.
    num_objects: tracked objects per video, K (depth order = index).
    seed: the dataset's own seed.
    eval_examples: videos per eval split.
    shapes, shifted_shapes: shape names (`crl.data.shapes`) of the
      training and of the shifted distribution.
    scale, shifted_scale: object radius range, fraction of the frame width.
    speed, shifted_speed: speed range, frame widths per frame.
    acceleration: largest |acceleration|, frame widths per frame^2.
    rotation_speed, shifted_rotation_speed: largest |angular speed|, degrees
      per frame.
    deformation, shifted_deformation: largest relative anisotropic
      stretch `d` (`s_x = s (1 + d sin)`, `s_y = s (1 - d sin)`).
    textures, shifted_textures: object textures (`OBJECT_TEXTURES`).
    spread, shifted_spread: largest distance of an object's mid-video
      centre from the frame centre (small: the objects cross each other).
    gum_probability: probability of a chewing gum in a video of the
      training distribution (the 'gum' intervention sets it to 1).
    gum_size: half side of the gum square, object units (radius about 1).
    gum_offset: distance of the gum's centre from the object centre, object
      units.
  """

  resolution: int = 64
  num_frames: int = 8
  num_objects: int = 3
  seed: int = 0
  eval_examples: int = 256
  shapes: tuple[str, ...] = ("circle", "square", "triangle", "heart",
                             "capsule", "star")
  shifted_shapes: tuple[str, ...] = ("hexagon", "semicircle", "cross",
                                     "crescent", "arrow", "l_shape")
  scale: tuple[float, float] = (0.13, 0.18)
  shifted_scale: tuple[float, float] = (0.12, 0.17)
  speed: tuple[float, float] = (0.008, 0.022)
  shifted_speed: tuple[float, float] = (0.02, 0.035)
  acceleration: float = 0.002
  rotation_speed: float = 5.0
  shifted_rotation_speed: float = 10.0
  deformation: float = 0.08
  shifted_deformation: float = 0.15
  textures: tuple[str, ...] = ("flat", "stripes")
  shifted_textures: tuple[str, ...] = ("checker", "dots")
  spread: float = 0.16
  shifted_spread: float = 0.16
  gum_probability: float = 0.0
  gum_size: float = 0.42
  gum_offset: float = 0.6

  def __init__(self, **kwargs: Any):
    config_lib.init_fields(self, kwargs)
    self._validate()

  def _validate(self) -> None:
    def bad(what: str) -> ValueError:
      return ValueError(f"OccludedVideo: {what}.")
    if int(self.resolution) != self.resolution or self.resolution < 16:
      raise bad(f"resolution must be an integer >= 16, got {self.resolution}")
    if self.num_frames < 3:
      raise bad(f"num_frames must be >= 3 (first and last frames have one "
                f"temporal neighbour), got {self.num_frames}")
    if not 1 <= self.num_objects <= 8:
      raise bad(f"num_objects must be in [1, 8], got {self.num_objects}")
    if self.eval_examples < 1:
      raise bad(f"eval_examples must be >= 1, got {self.eval_examples}")
    for name in ("shapes", "shifted_shapes"):
      names = getattr(self, name)
      unknown = [s for s in names if s not in shape_lib.SDFS]
      if not names or unknown:
        raise bad(f"{name} must be a non-empty tuple of shape names from "
                  f"{', '.join(shape_lib.SDFS)}; unknown: {unknown}")
    for name in ("textures", "shifted_textures"):
      names = getattr(self, name)
      unknown = [s for s in names if s not in OBJECT_TEXTURES]
      if not names or unknown:
        raise bad(f"{name} must be a non-empty tuple from {OBJECT_TEXTURES}; "
                  f"unknown: {unknown}")
    for name in ("scale", "shifted_scale", "speed", "shifted_speed"):
      lo, _ = _range(name, getattr(self, name))
      if lo < 0:
        raise bad(f"{name} must be non-negative")
    for name in ("scale", "shifted_scale"):
      lo, hi = getattr(self, name)
      if not (0.02 <= lo and hi <= 0.4):
        raise bad(f"{name} must lie in [0.02, 0.4], got {getattr(self, name)}")
    if not 0. <= self.gum_probability <= 1.:
      raise bad(f"gum_probability must be in [0, 1], got "
                f"{self.gum_probability}")
    for name in ("deformation", "shifted_deformation"):
      if not 0. <= getattr(self, name) < 0.5:
        raise bad(f"{name} must be in [0, 0.5), got {getattr(self, name)}")
    for name in ("spread", "shifted_spread"):
      if not 0. <= getattr(self, name) <= 0.4:
        raise bad(f"{name} must be in [0, 0.4], got {getattr(self, name)}")

  # Interface -----------------------------------------------------------------

  batch_keys = BATCH_KEYS
  input_key = "frames"

  @property
  def all_shapes(self) -> tuple[str, ...]:
    """`shapes + shifted_shapes`: the index space of the 'shape' output."""
    return tuple(self.shapes) + tuple(self.shifted_shapes)

  @property
  def input_shape(self) -> tuple[int, ...]:
    return (self.num_frames, self.resolution, self.resolution, 3)

  @property
  def mask_shape(self) -> tuple[int, ...]:
    """Per-example shape of 'visible', 'amodal' and 'occluder'."""
    return (self.num_objects, self.num_frames, self.resolution,
            self.resolution)

  def describe(self, name: str) -> str:
    parts = []
    for n in self.parse_intervention(name):
      parts.append({
          "shifted": (f"do(shapes := {self.shifted_shapes}, speed ~ "
                      f"U{self.shifted_speed}, rotation speed <= "
                      f"{self.shifted_rotation_speed:g} deg/frame, deformation"
                      f" <= {self.shifted_deformation:g}, textures := "
                      f"{self.shifted_textures}, coloured backgrounds): the "
                      "target distribution of test-time adaptation"),
          "gum": ("do(gum := 1): an opaque square rides with one object, so "
                  "part of it is never visible"),
      }[n])
    return "; ".join(parts)

  def eval_splits(self) -> dict[str, str]:
    return {"test": "held-out videos of the training distribution",
            "gum": self.describe("gum"),
            "shifted": self.describe("shifted")}

  def parse_intervention(self, intervention: str) -> tuple[str, ...]:
    """'a+b' -> ('a', 'b') in table order; raises on unknown names."""
    return procedural.split_interventions(intervention, INTERVENTIONS)

  def encode(self, split: str, intervention: str | None = None) -> np.ndarray:
    """`(split id, intervention bits)` as int32 `[2]` (data, not static)."""
    if split not in SPLIT_IDS:
      raise ValueError(f"Unknown split {split!r}; known splits: "
                       f"{', '.join(SPLIT_IDS)}.")
    names = () if intervention is None else self.parse_intervention(
        intervention)
    bits = sum(1 << INTERVENTION_BITS[n] for n in names)
    return np.array([SPLIT_IDS[split], bits], np.int32)

  def eval_code(self, name: str) -> np.ndarray:
    return self.encode("test", self._eval_intervention(name))

  def sample_encoded(self, code: Array, indices: Array) -> dict[str, Array]:
    """Videos `indices` of the distribution `code` (pure, jit-friendly).

    Args:
      code: int32 `[2]` from `encode` or `eval_code` (may be traced).
      indices: int32 `[batch]`.

    Returns:
      With `B` videos, `K` objects, `T` frames, `R` the resolution:
      'frames' f32[B, T, R, R, 3] in [0, 1]; 'visible', 'amodal', 'occluder'
      f32[B, K, T, R, R] in {0, 1}; 'flow_fwd', 'flow_bwd' f32[B, T, R, R, 2]
      (pixels; (x, y) = (column, row)); 'gum' f32[B, T, R, R] (the gum's
      mask); 'shape' i32[B, K] (index into `all_shapes`).
    """
    code = jnp.asarray(code, jnp.int32)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed),
                                                code[0]), code[1])
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
    # The distribution is one per batch: render only its shapes and
    # textures (a branch per distribution, chosen at run time).
    branch = lambda shifted: lambda: jax.vmap(
        lambda k: self._video(code[1], k, shifted))(keys)
    shifted = (code[1] >> INTERVENTION_BITS["shifted"]) & 1 == 1
    return jax.lax.cond(shifted, branch(True), branch(False))

  # Generator -----------------------------------------------------------------

  def _factors(self, bits: Array, key: Array, shifted: bool
               ) -> dict[str, Array]:
    """Per-object factors `[K]` (and per-video ones) of one video.

    All the video's randomness is one uniform draw `[_NUM_DRAWS, K]` (one
    random-bit generator call keeps the compiled generator small).
    `shifted` (static) picks the distribution's parameters; 'shape' and
    'texture' index that distribution's own tuples.
    """
    num_k = self.num_objects
    draws = jax.random.uniform(key, (_NUM_DRAWS, num_k))
    u = lambda i: draws[i]
    sel = lambda a, b: b if shifted else a
    lerp = lambda x, r0, r1: sel(r0, r1)[0] + x * (sel(r0, r1)[1] -
                                                   sel(r0, r1)[0])
    pick = lambda x, n: jnp.minimum(jnp.floor(x * n), n - 1).astype(jnp.int32)
    f = {}
    f["shape"] = pick(u(0), len(sel(self.shapes, self.shifted_shapes)))
    f["scale"] = lerp(u(1), self.scale, self.shifted_scale)
    radius = sel(self.spread, self.shifted_spread) * jnp.sqrt(u(2))
    angle = 2. * jnp.pi * u(3)
    f["centre"] = 0.5 + radius[:, None] * jnp.stack(
        [jnp.cos(angle), jnp.sin(angle)], -1)
    speed = lerp(u(4), self.speed, self.shifted_speed)
    heading = 2. * jnp.pi * u(5)
    f["velocity"] = speed[:, None] * jnp.stack(
        [jnp.cos(heading), jnp.sin(heading)], -1)
    f["acceleration"] = self.acceleration * (
        2. * jnp.stack([u(6), u(7)], -1) - 1.)
    f["theta"] = 2. * jnp.pi * u(8)
    f["omega"] = jnp.deg2rad(sel(self.rotation_speed,
                                 self.shifted_rotation_speed)) * (2. * u(9) - 1.)
    f["deform"] = sel(self.deformation, self.shifted_deformation) * u(10)
    f["deform_phase"] = 2. * jnp.pi * u(11)
    f["deform_freq"] = 0.3 + 0.5 * u(12)
    f["texture"] = pick(u(13), len(sel(self.textures, self.shifted_textures)))
    f["tex_freq"] = 1.2 + 1.0 * u(14)
    f["tex_phase"] = jnp.stack([u(15), u(16)], -1)
    f["hue"] = jnp.mod(draws[17, 0] + jnp.arange(num_k) / num_k +
                       0.1 * u(18), 1.)
    per_video = draws[19:, 0]  # the first object's column: per-video draws
    gum_bit = (bits >> INTERVENTION_BITS["gum"]) & 1 == 1
    f["gum_on"] = gum_bit | (per_video[0] < self.gum_probability)
    f["gum_object"] = pick(per_video[1], num_k)
    gum_angle = 2. * jnp.pi * per_video[2]
    f["gum_centre"] = self.gum_offset * jnp.stack(
        [jnp.cos(gum_angle), jnp.sin(gum_angle)])
    f["bg"] = per_video[3:7]
    return f


  def _video(self, bits: Array, key: Array, shifted: bool
             ) -> dict[str, Array]:
    """One video (vmapped over the batch); see `sample_encoded`."""
    f = self._factors(bits, key, shifted)
    shapes = self.shifted_shapes if shifted else self.shapes
    textures = self.shifted_textures if shifted else self.textures
    num_t, res = self.num_frames, self.resolution
    t = jnp.arange(-1, num_t + 1, dtype=jnp.float32)  # one extra each side
    centre, a, a_inv = render.affine(f, t, self.num_frames)  # [K, T+2, 2(, 2)]
    grid = render.grid(self.resolution)                      # [R, R, 2]
    frames_c, frames_a_inv = centre[:, 1:-1], a_inv[:, 1:-1]
    rel = grid[None, None] - frames_c[:, :, None, None]  # [K, T, R, R, 2]
    u = jnp.einsum("ktab,ktijb->ktija", frames_a_inv, rel)
    amodal = (render.sdf(f["shape"], u, shapes) < 0.).astype(jnp.float32)

    # The gum: a square fixed in the coordinates of object g, in front.
    u_gum = u[f["gum_object"]] - f["gum_centre"]       # [T, R, R, 2]
    gum = (jnp.max(jnp.abs(u_gum), -1) < self.gum_size) & f["gum_on"]
    gum = gum.astype(jnp.float32)

    # Painter's order: object k is covered by every j > k and by the gum.
    in_front = jnp.flip(jnp.cumsum(jnp.flip(amodal, 0), 0), 0) - amodal
    visible = amodal * (in_front == 0) * (1. - gum)
    others = jnp.sum(visible, 0, keepdims=True) - visible + gum[None]
    occluder = (others > 0).astype(jnp.float32)

    # Exact flow: x' = c(t') + A(t') A(t)^-1 (x - c(t)), per object.
    def flow(offset):
      m = jnp.einsum("ktab,ktbc->ktac", a[:, 1 + offset:num_t + 1 + offset],
                     frames_a_inv)
      moved = centre[:, 1 + offset:num_t + 1 + offset, None, None] + jnp.einsum(
          "ktab,ktijb->ktija", m, rel)
      per_object = (moved - grid) * res               # [K, T, R, R, 2]
      scene = jnp.einsum("ktij,ktijc->tijc", visible, per_object)
      return scene + gum[..., None] * per_object[f["gum_object"]]

    # Colours: distinct hues (HSV is linear in the value, so the texture
    # scales the full-value colour), textured in object coordinates.
    base = shape_lib.hsv_to_rgb(f["hue"], 0.75, 1.)
    value = 0.72 + 0.28 * render.texture(f, u, textures)  # [K, T, R, R]
    colour = value[..., None] * base[:, None, None, None]
    background = render.background(f, grid, shifted)
    gum_rgb = jnp.asarray(_GUM_RGB, jnp.float32)
    frames = (background[None] * (1. - jnp.sum(visible, 0) - gum)[..., None] +
              jnp.einsum("ktij,ktijc->tijc", visible, colour) +
              gum[..., None] * gum_rgb)
    return {"frames": jnp.clip(frames, 0., 1.).astype(jnp.float32),
            "visible": visible, "amodal": amodal, "occluder": occluder,
            "flow_fwd": flow(+1), "flow_bwd": flow(-1), "gum": gum,
            "shape": (f["shape"] + (len(self.shapes) if shifted else 0)
                      ).astype(jnp.int32)}



def occlusion_rate(visible: Array, amodal: Array) -> Array:
  """`1 - |V| / |A|` over the last two axes (0 where the object is absent)."""
  v = jnp.sum(visible, (-2, -1))
  a = jnp.sum(amodal, (-2, -1))
  return jnp.where(a > 0, 1. - v / jnp.maximum(a, 1.), 0.)
