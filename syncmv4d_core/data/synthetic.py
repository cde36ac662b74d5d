"""Procedural multi-view hand-object-interaction scenes with exact ground truth.

A scene is a tool-action-target triplet (e.g. ``("pour", "bottle", "bowl")`` -> "pour the
bottle into the bowl") acted out by an articulated right hand (palm, five three-segment
fingers, forearm in a sleeve) on a textured table (z = 0, world z up, metres), filmed by a
TACO-like rig of 12 calibrated cameras in left / center / right clusters of four. The hand
approaches the tool with an open hand, closes its fingers around it and then moves it as the
action dictates, so the text determines the motion. Everything is rendered with the numpy
splatting renderer in ``render.py``.

Ground truth: ``num_points`` surface points on the hand (palm and fingers, not the forearm)
and on the objects (never the table) with labels HAND / TOOL / TARGET and their world
positions in every frame, plus per-view depth.

Held-out split: ``HELDOUT`` names an action and object kinds that training never sees (the
paper holds out e.g. hammer and measure); ``split_of(meta)`` says "test" for any triplet that
uses one of them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.spatial.transform import Rotation

from ..cameras import CLUSTERS, Camera
from ..limits import (MAX_FRAMES, MAX_SCENES, TEMPORAL_COMPRESSION, check_fps, check_image_size, check_int,
                      check_num_frames, check_points)
from ..scene import HAND, TARGET, TOOL, Scene
from .render import (
    SurfaceSamples, Table, render_views, sample_box, sample_capsule, sample_cylinder, sample_disk, sample_ellipsoid,
    sample_spacing, solid_texture,
)

logger = logging.getLogger(__name__)

FPS = 8.0  # the paper's frame rate after down-sampling TACO's 30 fps


@dataclass
class SynthConfig:
    """Generator settings.

    Attributes:
        num_frames: frames per clip, 4n + 1 (the Wan VAE's temporal compression).
        height, width: image size in pixels.
        num_points: tracked surface points K.
        fps: frame rate stored with the clip (the acted motion always spans the whole clip).
        spacing_px: surface-sample spacing as a fraction of the nearest pixel footprint (< 1
            keeps surfaces hole-free).
    """

    num_frames: int = 9
    height: int = 64
    width: int = 64
    num_points: int = 1600
    fps: float = FPS
    spacing_px: float = 1.0

    def __post_init__(self) -> None:
        # bounds first (limits.py), so nothing is allocated for an absurd size
        check_num_frames(self.num_frames, TEMPORAL_COMPRESSION, MAX_FRAMES, min_frames=5)
        check_image_size(self.height, self.width)
        if self.height < 8 or self.width < 8:
            raise ValueError(f"image size must be at least 8x8 pixels, got {self.width}x{self.height}")
        check_points(self.num_points)
        check_fps(self.fps)
        if not 0 < self.spacing_px <= 1.5:
            raise ValueError(f"spacing_px must be in (0, 1.5], got {self.spacing_px}")


# ====================================================================== vocabulary
# action -> (text template, tools, targets); targets () means the action has no target.
ACTIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "lift": ("lift the {tool}", ("cup", "bottle", "can", "box", "ball"), ()),
    "rotate": ("rotate the {tool}", ("cup", "bottle", "can", "box"), ()),
    "shake": ("shake the {tool}", ("bottle", "can", "box", "ball"), ()),
    "push": ("push the {tool} toward the {target}", ("box", "cup", "can", "ball"), ("bowl", "plate", "tray", "board", "bread")),
    "pour": ("pour the {tool} into the {target}", ("cup", "bottle", "can"), ("bowl", "cup")),
    "place": ("place the {tool} on the {target}", ("box", "ball", "can", "cup"), ("plate", "tray", "board")),
    "stir": ("stir the {target} with the {tool}", ("spoon",), ("bowl", "cup")),
    "cut": ("cut the {target} with the {tool}", ("knife",), ("bread",)),
    "hit": ("hit the {target} with the {tool}", ("hammer", "spoon"), ("board", "tray", "bowl")),
    "brush": ("brush the {target} with the {tool}", ("brush",), ("plate", "board", "tray")),
    "measure": ("measure the {target} with the {tool}", ("ruler",), ("board", "tray", "bread")),
}

# Never in the training split (like the paper's held-out hammer / measure test set).
HELDOUT = {"actions": frozenset({"measure"}), "tools": frozenset({"hammer", "can"}), "targets": frozenset({"tray"})}
SPLITS = ("train", "test")


def split_of(meta: dict) -> str:
    """``"test"`` if the scene's action, tool or target is held out, else ``"train"``.

    Args:
        meta: a scene's meta with keys ``action``, ``tool`` and ``target`` (target may be None).
    """
    missing = [k for k in ("action", "tool") if k not in meta]
    if missing:
        raise ValueError(f"scene meta lacks {missing}: cannot decide its split (meta keys: {sorted(meta)})")
    held = (meta["action"] in HELDOUT["actions"] or meta["tool"] in HELDOUT["tools"]
            or meta.get("target") in HELDOUT["targets"])
    return "test" if held else "train"


def describe(action: str, tool: str, target: str | None) -> str:
    """The task text of a triplet, e.g. ``describe("pour", "bottle", "bowl")`` -> "pour the bottle into the bowl"."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {sorted(ACTIONS)}")
    return ACTIONS[action][0].format(tool=tool, target=target)


def sample_triplet(rng: np.random.Generator, split: str | None = None) -> tuple[str, str, str | None]:
    """A random (action, tool, target) from the vocabulary, restricted to ``split`` if given."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    names = sorted(ACTIONS)
    for _ in range(1000):
        action = names[rng.integers(len(names))]
        _, tools, targets = ACTIONS[action]
        tool = tools[rng.integers(len(tools))]
        target = targets[rng.integers(len(targets))] if targets else None
        if split is None or split_of({"action": action, "tool": tool, "target": target}) == split:
            return action, tool, target
    raise RuntimeError(f"no triplet of split {split!r} found in the vocabulary")


# ====================================================================== objects
SKIN_TONES = np.array([[0.93, 0.76, 0.64], [0.85, 0.64, 0.50], [0.72, 0.52, 0.38], [0.55, 0.38, 0.27], [0.40, 0.27, 0.19]])
PALETTE = np.array([
    [0.85, 0.20, 0.18], [0.15, 0.45, 0.80], [0.20, 0.65, 0.30], [0.95, 0.75, 0.15], [0.55, 0.30, 0.70],
    [0.95, 0.50, 0.15], [0.10, 0.65, 0.70], [0.90, 0.90, 0.88], [0.25, 0.25, 0.28], [0.80, 0.45, 0.55],
])
PATTERNS = ("plain", "stripes", "checker", "dots")

Shape = tuple[Callable[[float], tuple[np.ndarray, np.ndarray]], tuple[float, float, float], dict]


@dataclass
class ObjectModel:
    """A rigid object in its own frame (z up, resting on z = 0).

    Attributes:
        kind: object kind, e.g. "bottle".
        shapes: primitives as (sampler(spacing) -> (points, normals), offset (3,), texture kwargs).
        top: height of the top surface, metres.
        radius: horizontal bounding radius around the origin, metres.
        grasp: "side" (wrap around a vertical body), "top" (palm on top) or "handle" (wrap a
            handle lying along x).
        grasp_point: (3,) object-frame point the palm centres on (side: on the axis).
        grasp_radius: radius the palm rests at from ``grasp_point`` and the fingers wrap.
        tip: (3,) the working end (bottle mouth, spoon bowl, blade edge, hammer face, bristles).
        work_rotvec: (3,) object-frame rotation vector into the working pose (e.g. spoon tilted
            down for stirring, hammer head turned down).
    """

    kind: str
    shapes: list[Shape]
    top: float
    radius: float
    grasp: str
    grasp_point: np.ndarray
    grasp_radius: float
    tip: np.ndarray = field(default_factory=lambda: np.zeros(3))
    work_rotvec: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def surface(self, spacing: float, part: int) -> SurfaceSamples:
        """Surface samples (object frame) with spacing ``spacing`` metres, tagged with ``part``."""
        points, normals, colors = [], [], []
        for sampler, offset, texture in self.shapes:
            p, n = sampler(spacing)
            p = p + np.asarray(offset)
            points.append(p)
            normals.append(n)
            colors.append(solid_texture(p, **texture))
        points = np.concatenate(points).astype(np.float32)
        return SurfaceSamples(points, np.concatenate(normals).astype(np.float32), np.concatenate(colors),
                              np.full(len(points), part, np.int32))


def _texture(rng: np.random.Generator, pattern: str | None = None, base: np.ndarray | None = None) -> dict:
    i, j = rng.choice(len(PALETTE), size=2, replace=False)
    return {"base": PALETTE[i] if base is None else np.asarray(base), "accent": PALETTE[j],
            "pattern": pattern or PATTERNS[rng.integers(len(PATTERNS))], "scale": float(rng.uniform(0.012, 0.03)),
            "seed": int(rng.integers(1 << 30))}


def _plain(color, rng: np.random.Generator) -> dict:
    return {"base": np.asarray(color), "accent": np.asarray(color), "pattern": "plain", "scale": 0.01, "seed": int(rng.integers(1 << 30))}


def make_object(kind: str, rng: np.random.Generator) -> ObjectModel:
    """A randomised object of ``kind`` (sizes in metres, colours and textures from ``rng``)."""
    u = rng.uniform
    wood = np.array([0.62, 0.45, 0.28]) * u(0.8, 1.1)
    metal = np.array([0.72, 0.73, 0.76])
    if kind == "cup":
        r, h = u(0.035, 0.045), u(0.08, 0.11)
        return ObjectModel(kind, [
            (lambda s: sample_cylinder(r, h, s, top=False), (0, 0, 0), _texture(rng)),
            (lambda s: sample_disk(r * 0.93, s, h * 0.9, up=True), (0, 0, 0), _plain([0.25, 0.2, 0.18], rng)),
            (lambda s: sample_box((0.012, 0.02, h * 0.5), s), (-r - 0.006, 0, h * 0.5), _texture(rng, "plain")),
        ], h, r + 0.015, "side", np.array([0, 0, h * 0.45]), r, tip=np.array([0, 0, h]))
    if kind == "bottle":
        r, h = u(0.03, 0.038), u(0.13, 0.16)
        body = _texture(rng, "stripes")
        return ObjectModel(kind, [
            (lambda s: sample_cylinder(r, h, s, top=False), (0, 0, 0), body),
            (lambda s: sample_ellipsoid((r, r, 0.03), s), (0, 0, h), body),
            (lambda s: sample_cylinder(0.013, 0.05, s, top=False, bottom=False), (0, 0, h + 0.01), _texture(rng, "plain")),
            (lambda s: sample_cylinder(0.015, 0.015, s), (0, 0, h + 0.055), _texture(rng, "plain")),
        ], h + 0.07, r, "side", np.array([0, 0, h * 0.45]), r, tip=np.array([0, 0, h + 0.07]))
    if kind == "can":
        r, h = u(0.03, 0.035), u(0.1, 0.125)
        return ObjectModel(kind, [
            (lambda s: sample_cylinder(r, h, s, top=False), (0, 0, 0), _texture(rng, "stripes")),
            (lambda s: sample_disk(r, s, h, up=True), (0, 0, 0), _plain(metal, rng)),
        ], h, r, "side", np.array([0, 0, h * 0.5]), r, tip=np.array([0, 0, h]))
    if kind == "box":
        size = (u(0.06, 0.1), u(0.05, 0.08), u(0.04, 0.075))
        return ObjectModel(kind, [(lambda s: sample_box(size, s), (0, 0, size[2] / 2), _texture(rng))],
                           size[2], float(np.hypot(size[0], size[1]) / 2), "top", np.array([0, 0, size[2]]),
                           0.5 * max(size[0], size[1]), tip=np.array([0, 0, size[2]]))
    if kind == "ball":
        r = u(0.032, 0.045)
        return ObjectModel(kind, [(lambda s: sample_ellipsoid((r, r, r), s), (0, 0, r), _texture(rng, rng.choice(["dots", "checker"])))],
                           2 * r, r, "top", np.array([0, 0, 2 * r]), r, tip=np.array([0, 0, r]))
    if kind == "spoon":
        color = metal if rng.random() < 0.5 else wood
        return ObjectModel(kind, [
            (lambda s: sample_capsule(0.13, 0.006, 0.005, s), (-0.085, 0, 0.007), _plain(color, rng)),
            (lambda s: sample_ellipsoid((0.028, 0.017, 0.007), s), (0.07, 0, 0.008), _plain(color, rng)),
        ], 0.016, 0.1, "handle", np.array([-0.045, 0, 0.007]), 0.007, tip=np.array([0.07, 0, 0.004]),
            work_rotvec=np.array([0.0, 0.95, 0.0]))
    if kind == "knife":
        return ObjectModel(kind, [
            (lambda s: sample_box((0.1, 0.018, 0.022), s), (-0.05, 0, 0.011), _texture(rng, "plain")),
            (lambda s: sample_box((0.12, 0.003, 0.03), s), (0.06, 0, 0.015), _plain(metal, rng)),
        ], 0.03, 0.12, "handle", np.array([-0.05, 0, 0.011]), 0.012, tip=np.array([0.06, 0, 0.0]))
    if kind == "hammer":
        return ObjectModel(kind, [
            (lambda s: sample_capsule(0.22, 0.012, 0.011, s), (-0.11, 0, 0.018), _plain(wood, rng)),
            (lambda s: sample_box((0.035, 0.1, 0.035), s), (0.12, 0, 0.018), _plain([0.3, 0.3, 0.32], rng)),
        ], 0.036, 0.14, "handle", np.array([-0.06, 0, 0.018]), 0.012, tip=np.array([0.12, -0.05, 0.018]),
            work_rotvec=np.array([np.pi / 2, 0.0, 0.0]))
    if kind == "brush":
        return ObjectModel(kind, [
            (lambda s: sample_capsule(0.13, 0.008, 0.008, s), (-0.09, 0, 0.027), _texture(rng, "plain")),
            (lambda s: sample_box((0.065, 0.035, 0.014), s), (0.07, 0, 0.029), _texture(rng, "plain")),
            (lambda s: sample_box((0.06, 0.03, 0.022), s), (0.07, 0, 0.011), _plain([0.9, 0.85, 0.7], rng)),
        ], 0.036, 0.11, "handle", np.array([-0.05, 0, 0.027]), 0.008, tip=np.array([0.07, 0, 0.0]))
    if kind == "ruler":
        return ObjectModel(kind, [(lambda s: sample_box((0.25, 0.035, 0.004), s), (0, 0, 0.002),
                                   {**_texture(rng, "checker"), "scale": 0.01})],
                           0.004, 0.13, "handle", np.array([-0.07, 0, 0.002]), 0.006, tip=np.array([0.0, 0, 0.0]))
    if kind == "bowl":
        r, h = u(0.06, 0.08), u(0.04, 0.055)
        return ObjectModel(kind, [
            (lambda s: sample_ellipsoid((r, r, h), s, z_max=0.0), (0, 0, h), _texture(rng)),
            (lambda s: _inside(sample_ellipsoid((r * 0.93, r * 0.93, h * 0.9), s, z_max=0.0)), (0, 0, h), _texture(rng, "plain")),
        ], h, r, "side", np.array([0, 0, h * 0.7]), r, tip=np.array([0, 0, h]))
    if kind == "plate":
        r = u(0.08, 0.1)
        return ObjectModel(kind, [(lambda s: sample_cylinder(r, 0.012, s), (0, 0, 0), _texture(rng, rng.choice(["plain", "dots"])))],
                           0.012, r, "top", np.array([0, 0, 0.012]), r)
    if kind in ("tray", "board"):
        size = (u(0.2, 0.26), u(0.14, 0.18), 0.02 if kind == "tray" else 0.015)
        tex = _texture(rng, "checker") if kind == "tray" else {**_plain(wood, rng), "pattern": "stripes", "accent": wood * 0.8, "scale": 0.004}
        return ObjectModel(kind, [(lambda s: sample_box(size, s), (0, 0, size[2] / 2), tex)], size[2],
                           float(np.hypot(size[0], size[1]) / 2), "top", np.array([0, 0, size[2]]), size[0] / 2)
    if kind == "bread":
        a, b, c = u(0.06, 0.08), u(0.035, 0.045), u(0.025, 0.035)
        return ObjectModel(kind, [(lambda s: sample_ellipsoid((a, b, c), s, exponent=3.0), (0, 0, c),
                                   {**_plain([0.72, 0.48, 0.22], rng), "pattern": "dots", "accent": np.array([0.85, 0.7, 0.45])})],
                           2 * c, a, "top", np.array([0, 0, 2 * c]), b)
    raise ValueError(f"unknown object kind {kind!r}")


def _inside(surface: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The same points with flipped normals (an inner surface seen from inside)."""
    return surface[0], -surface[1]


# ====================================================================== hand
# Right hand in its own frame: x along the fingers, y towards the thumb, z out of the back of
# the hand (the palm faces -z); origin at the wrist. Sizes of an adult hand, metres.
PALM_SEMI_AXES = (0.047, 0.042, 0.014)
PALM_CENTER = np.array([0.047, 0.0, 0.0])
# (base position, base rotation as (yaw about z, roll about x) in degrees, segment lengths, radii at the joints)
FINGERS = (
    ((0.088, 0.029, 0.0), (6.0, 0.0), (0.040, 0.025, 0.020), (0.0095, 0.0088, 0.0080, 0.0072)),   # index
    ((0.092, 0.010, 0.0), (0.0, 0.0), (0.045, 0.028, 0.021), (0.0098, 0.0090, 0.0082, 0.0074)),   # middle
    ((0.088, -0.009, 0.0), (-5.0, 0.0), (0.042, 0.026, 0.020), (0.0092, 0.0085, 0.0078, 0.0070)),  # ring
    ((0.080, -0.027, 0.0), (-12.0, 0.0), (0.033, 0.020, 0.018), (0.0082, 0.0075, 0.0068, 0.0062)),  # little
    ((0.022, 0.032, -0.008), (55.0, -55.0), (0.040, 0.032, 0.026), (0.0125, 0.0110, 0.0095, 0.0085)),  # thumb
)
FOREARM = (0.24, 0.028, 0.034)  # length, radius at the wrist, radius at the far end
OPEN_FLEX = np.array([0.12, 0.15, 0.1])  # joint flexion of a relaxed open hand, radians
MAX_FLEX = 1.55  # radians, a finger joint's limit

# Part indices of a scene: the two objects, then the hand (forearm, palm, 5 x 3 finger segments).
PART_TOOL, PART_TARGET, PART_FOREARM, PART_PALM = 0, 1, 2, 3
NUM_PARTS = 4 + 3 * len(FINGERS)
PART_LABELS = {PART_TOOL: TOOL, PART_TARGET: TARGET, **{p: HAND for p in range(PART_PALM, NUM_PARTS)}}


def _rot(axis: str, angle: float) -> np.ndarray:
    return Rotation.from_euler(axis, angle).as_matrix()


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def hand_surface(spacing: float, skin: np.ndarray, sleeve: np.ndarray, seed: int) -> SurfaceSamples:
    """Surface samples of the hand parts (each in its own part frame)."""
    items = []

    def add(surface, part, color, pattern="plain"):
        p, n = surface
        tex = solid_texture(p, color, color * 0.85, pattern, 0.01, seed + part)
        items.append(SurfaceSamples(p.astype(np.float32), n.astype(np.float32), tex, np.full(len(p), part, np.int32)))

    length, r0, r1 = FOREARM
    p, n = sample_capsule(length, r0, r1, spacing)
    add((p * [-1, 1, 1], n * [-1, 1, 1]), PART_FOREARM, sleeve, "stripes")
    p, n = sample_ellipsoid(PALM_SEMI_AXES, spacing, exponent=3.0)
    add((p + PALM_CENTER, n), PART_PALM, skin)
    for k, (_, _, lengths, radii) in enumerate(FINGERS):
        for j, seg in enumerate(lengths):
            add(sample_capsule(seg, radii[j], radii[j + 1], spacing), PART_PALM + 1 + 3 * k + j, skin)
    return SurfaceSamples.concat(items)


def hand_poses(wrist: np.ndarray, flex: np.ndarray) -> np.ndarray:
    """Forward kinematics of the hand.

    Args:
        wrist: (F, 4, 4) world-from-hand transforms.
        flex: (F, 5, 3) flexion per finger joint, radians (positive curls towards the palm).
    Returns:
        (F, NUM_PARTS - 2, 4, 4) world-from-part transforms of forearm, palm and finger segments.
    """
    F = wrist.shape[0]
    out = np.empty((F, NUM_PARTS - 2, 4, 4))
    out[:, 0] = wrist
    out[:, 1] = wrist
    for k, (base, (yaw, roll), lengths, _) in enumerate(FINGERS):
        base_T = _pose(_rot("z", np.deg2rad(yaw)) @ _rot("x", np.deg2rad(roll)), np.asarray(base))
        T = wrist @ base_T
        for j, seg in enumerate(lengths):
            T = T @ _pose_batch(Rotation.from_euler("y", flex[:, k, j, None]).as_matrix(), np.zeros((F, 3)))
            out[:, 2 + 3 * k + j] = T
            T = T @ _pose(np.eye(3), np.array([seg, 0.0, 0.0]))
    return out


def _pose_batch(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.tile(np.eye(4), (R.shape[0], 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    return T


def grasp_flex(wrap_radius: float) -> np.ndarray:
    """(5, 3) joint flexion (radians) that curls each finger around a body of ``wrap_radius`` metres."""
    flex = np.empty((len(FINGERS), 3))
    for k, (_, _, lengths, radii) in enumerate(FINGERS):
        flex[k] = np.minimum(np.asarray(lengths) / (wrap_radius + radii[0]), MAX_FLEX)
    flex[-1] = np.minimum(flex[-1] * 0.5, 0.8)  # the thumb closes less: it opposes rather than wraps
    return flex


# ====================================================================== scene layout
SHOULDER = np.array([-0.2, 0.55])  # the actor's right shoulder (x, y), metres: the hand reaches from +y
LOOK_AT = np.array([0.0, 0.0, 0.06])  # rig target, metres
WORKSPACE = 0.2  # metres of the workspace (around LOOK_AT) that fit the shorter image side
# (cluster, azimuth offset deg, elevation deg, distance m) of the 12 cameras; azimuth 0 looks
# from -y towards the actor, clusters sit at -60 / 0 / +60 degrees like TACO's arc.
RIG = tuple(
    (cluster, centre + d_az, el, dist)
    for cluster, centre in zip(CLUSTERS, (-60.0, 0.0, 60.0))
    for d_az, el, dist in ((-9.0, 32.0, 0.75), (9.0, 38.0, 0.95), (-6.0, 58.0, 0.85), (7.0, 52.0, 1.15))
)


def make_rig(rng: np.random.Generator, height: int, width: int) -> list[Camera]:
    """12 cameras on an arc (jittered a little per scene like a recalibrated rig), cam00..cam11."""
    cameras = []
    for i, (cluster, az, el, dist) in enumerate(RIG):
        az, el = np.deg2rad(az + rng.uniform(-3, 3)), np.deg2rad(el + rng.uniform(-3, 3))
        dist *= rng.uniform(0.95, 1.05)
        eye = LOOK_AT + dist * np.array([np.cos(el) * np.sin(az), -np.cos(el) * np.cos(az), np.sin(el)])
        target = LOOK_AT + rng.uniform(-0.015, 0.015, 3)
        # fit WORKSPACE metres at distance dist into half the shorter image side
        f = 0.5 * min(height, width) * dist / WORKSPACE
        fov_y = np.rad2deg(2 * np.arctan(0.5 * height / f))
        cameras.append(Camera.look_at(f"cam{i:02d}", eye, target, fov_y, width, height, cluster))
    return cameras


def make_table(rng: np.random.Generator) -> Table:
    if rng.random() < 0.5:
        base = np.array([0.66, 0.5, 0.34]) * rng.uniform(0.75, 1.15)
        return Table((0.0, 0.0), (1.2, 0.9), base, base * 0.78, "wood", float(rng.uniform(0.015, 0.03)),
                     np.array([0.12, 0.12, 0.14]), int(rng.integers(1 << 30)))
    base = rng.uniform(0.55, 0.9, 3)
    return Table((0.0, 0.0), (1.2, 0.9), base, rng.uniform(0.2, 0.6, 3), "cloth", float(rng.uniform(0.04, 0.08)),
                 np.array([0.12, 0.12, 0.14]), int(rng.integers(1 << 30)))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def hand_grasp_pose(obj: ObjectModel, obj_pose: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """(4, 4) world-from-hand pose that grasps ``obj`` (at world pose ``obj_pose``).

    ``reach`` is the horizontal unit direction the fingers point in (away from the actor).
    """
    z_w = np.array([0.0, 0.0, 1.0])
    R_o = obj_pose[:3, :3]
    centre = obj_pose[:3, :3] @ obj.grasp_point + obj_pose[:3, 3]
    if obj.grasp == "side":
        x_h = reach
        z_h = np.cross(reach, z_w)  # back of the hand faces sideways, thumb up
        contact = centre + obj.grasp_radius * z_h
    elif obj.grasp == "handle":  # palm on top of the handle, fingers across it
        across = _unit(np.cross(z_w, R_o[:, 0]))
        x_h = across if across @ reach > 0 else -across
        z_h = z_w
        contact = centre + obj.grasp_radius * z_w
    else:  # "top": palm flat on the top surface
        x_h = reach
        z_h = z_w
        contact = centre
    y_h = np.cross(z_h, x_h)
    R = np.stack([x_h, y_h, z_h], axis=1)
    c = PALM_SEMI_AXES[2]
    return _pose(R, contact - PALM_CENTER[0] * x_h + (c + 0.002) * z_h)


@dataclass
class _Context:
    """World-frame quantities the action planners read (metres)."""

    tool: ObjectModel
    tool_pose: np.ndarray
    target: ObjectModel | None
    target_pose: np.ndarray | None
    direction: np.ndarray  # horizontal unit vector from the tool to the target (or away from the actor)
    rng: np.random.Generator

    def world(self, local: np.ndarray) -> np.ndarray:
        return self.tool_pose[:3, :3] @ local + self.tool_pose[:3, 3]

    @property
    def work_rotvec(self) -> np.ndarray:
        return self.tool_pose[:3, :3] @ self.tool.work_rotvec

    @property
    def target_top(self) -> np.ndarray:
        return self.target_pose[:3, 3] + [0.0, 0.0, self.target.top]


# A key pose of the tool: (progress u in [0, 1], object-frame anchor point, its world position,
# world rotation vector applied on top of the initial orientation).
Key = tuple[float, np.ndarray, np.ndarray, np.ndarray]
ZERO = np.zeros(3)
UP = np.array([0.0, 0.0, 1.0])
ORIGIN = np.zeros(3)


def _plan(action: str, c: _Context) -> list[Key]:
    """Key poses of the tool for ``action`` (the text's verb decides the motion)."""
    u = c.rng.uniform
    start = [(0.0, ORIGIN, c.world(ORIGIN), ZERO)]
    side = np.cross(UP, c.direction)
    if action == "lift":
        drift = np.append(u(-0.03, 0.03, 2), u(0.12, 0.18))
        return start + [(0.6, ORIGIN, c.world(ORIGIN) + drift * [0.5, 0.5, 0.8], ZERO), (1.0, ORIGIN, c.world(ORIGIN) + drift, ZERO)]
    if action == "rotate":
        turn = UP * u(1.0, 1.5) * c.rng.choice([-1, 1])
        up = c.world(ORIGIN) + UP * 0.04
        return start + [(0.25, ORIGIN, up, ZERO), (0.75, ORIGIN, up, turn), (1.0, ORIGIN, c.world(ORIGIN), turn)]
    if action == "shake":
        up = c.world(ORIGIN) + UP * u(0.1, 0.14)
        keys = start + [(0.3, ORIGIN, up, ZERO)]
        for i, uk in enumerate(np.linspace(0.4, 0.9, 6)):
            s = 1 if i % 2 == 0 else -1
            keys.append((uk, ORIGIN, up + s * 0.04 * side, s * 0.3 * c.direction))
        return keys + [(1.0, ORIGIN, up, ZERO)]
    if action == "push":
        gap = c.tool.radius + c.target.radius + 0.015
        dist = np.linalg.norm((c.target_pose[:3, 3] - c.tool_pose[:3, 3])[:2])
        return start + [(1.0, ORIGIN, c.world(ORIGIN) + c.direction * max(dist - gap, 0.03), ZERO)]
    if action == "pour":
        tilt = np.cross(UP, c.direction)  # rotating about this axis tips the top towards the target
        over = c.target_top - c.direction * c.target.radius * 0.3  # the mouth goes above this point
        return start + [(0.45, c.tool.tip, over + UP * (c.tool.top + 0.03), tilt * 0.3),
                        (0.75, c.tool.tip, over + UP * (0.5 * c.tool.top + 0.05), tilt * 1.1),
                        (1.0, c.tool.tip, over + UP * 0.08, tilt * 1.9)]
    if action == "place":
        on = c.target_top + np.append(u(-0.02, 0.02, 2), 0.0)
        return start + [(0.3, ORIGIN, c.world(ORIGIN) + UP * 0.1, ZERO), (0.75, ORIGIN, on + UP * 0.07, ZERO), (1.0, ORIGIN, on, ZERO)]
    if action in ("stir", "cut", "hit", "brush", "measure"):
        work = c.work_rotvec
        keys = start + [(0.3, c.tool.tip, c.world(c.tool.tip) + UP * 0.1, work * 0.5),
                        (0.5, c.tool.tip, c.target_top + UP * 0.05, work)]
        cycle = np.linspace(0.58, 1.0, 7)
        for i, uk in enumerate(cycle):
            if action == "stir":  # circles inside the container
                phi = 2 * np.pi * i / 4
                q = c.target_top + 0.3 * c.target.radius * np.array([np.cos(phi), np.sin(phi), 0.0]) - UP * 0.015
            elif action == "cut":  # sawing back and forth along the blade while sinking in
                along = c.tool_pose[:3, 0]
                q = c.target_top + (0.03 if i % 2 == 0 else -0.03) * along - UP * 0.005 * i
            elif action == "hit":  # strike down and rebound
                q = c.target_top + UP * (0.004 if i % 2 == 0 else 0.08)
            elif action == "brush":  # sweep across the surface
                q = c.target_top + (0.045 if i % 2 == 0 else -0.045) * side + UP * 0.002
            else:  # measure: lay the ruler on the target and slide it along
                q = c.target_top + c.tool_pose[:3, 0] * 0.06 * i / len(cycle) + UP * 0.002
            keys.append((uk, c.tool.tip, q, work))
        return keys
    raise ValueError(f"unknown action {action!r}")


def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _tool_track(keys: list[Key], c: _Context, u: np.ndarray) -> np.ndarray:
    """(T, 4, 4) tool poses at progress values ``u`` (T,), interpolating the key poses.

    Each key fixes the grasp point's position and the rotation; both are interpolated with
    monotone cubic (PCHIP) curves, so the hand holding the grasp point moves smoothly.
    """
    R0 = c.tool_pose[:3, :3]
    g = c.tool.grasp_point
    us, grips, rotvecs = [], [], []
    for uk, anchor, q, rotvec in keys:
        R = Rotation.from_rotvec(rotvec).as_matrix() @ R0
        us.append(uk)
        grips.append(q + R @ (g - anchor))  # where the grasp point is when ``anchor`` sits at ``q``
        rotvecs.append(rotvec)
    us = np.asarray(us)
    grip = PchipInterpolator(us, np.asarray(grips), axis=0)(u)
    rot = Rotation.from_rotvec(PchipInterpolator(us, np.asarray(rotvecs), axis=0)(u)).as_matrix() @ R0
    out = np.tile(np.eye(4), (len(u), 1, 1))
    out[:, :3, :3] = rot
    out[:, :3, 3] = grip - rot @ g
    return out


# Phases of a clip as fractions of its duration: reach until APPROACH_END, fingers close during
# CLOSE, the action runs from ACT_START to the end.
APPROACH_END, CLOSE, ACT_START = 0.3, (0.22, 0.38), 0.4


def _layout(rng: np.random.Generator, tool: ObjectModel, target: ObjectModel | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """World poses of tool and target on the table and the tool-to-target direction."""
    beta = rng.uniform(np.deg2rad(-160), np.deg2rad(-20))  # the target lies away from the actor
    direction = np.array([np.cos(beta), np.sin(beta), 0.0])
    if target is None:
        p_tool = np.append(rng.uniform(-0.05, 0.05, 2), 0.0)
        target_pose = None
    else:
        dist = tool.radius + target.radius + rng.uniform(0.05, 0.1)
        p_tool = np.append(rng.uniform(-0.03, 0.03, 2), 0.0) - direction * dist / 2
        target_pose = _pose(_rot("z", rng.uniform(-np.pi, np.pi)), p_tool + direction * dist)
    if tool.grasp == "handle":  # the working end points roughly towards the target
        yaw = beta + rng.uniform(-0.35, 0.35)
    else:
        yaw = rng.uniform(-np.pi, np.pi)
    return _pose(_rot("z", yaw), p_tool), target_pose, direction


def check_triplet(action: str, tool: str, target: str | None) -> None:
    """Raise ValueError unless (action, tool, target) is in the vocabulary ``ACTIONS``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {sorted(ACTIONS)}")
    _, tools, targets = ACTIONS[action]
    if tool not in tools:
        raise ValueError(f"action {action!r} takes a tool in {tools}, got {tool!r}")
    if (target is None) != (not targets) or (target is not None and target not in targets):
        raise ValueError(f"action {action!r} takes a target in {targets or (None,)}, got {target!r}")


def generate_scene(seed: int, config: SynthConfig | None = None, split: str | None = None,
                   triplet: tuple[str, str, str | None] | None = None) -> Scene:
    """One procedural scene, fully determined by ``seed``, ``config`` and the optional choices.

    Args:
        seed: random seed (non-negative int).
        config: generator settings (defaults: 9 frames, 64x64, 1600 points).
        split: draw only "train" or only "test" triplets (``HELDOUT``), or None for any.
        triplet: force (action, tool, target) instead of drawing one (``split`` is then unused).
    Returns:
        A Scene with 12 cameras (V = 12), videos (V, F, H, W, 3), depth (V, F, H, W) metres,
        tracks_world (F, K, 3) metres, labels (K,) and meta {seed, action, tool, target, split}.
    """
    config = config or SynthConfig()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    layout_seq, look_seq, track_seq = np.random.SeedSequence(int(seed)).spawn(3)
    rng = np.random.default_rng(layout_seq)
    action, tool_kind, target_kind = sample_triplet(rng, split)
    if triplet is not None:
        check_triplet(*triplet)
        action, tool_kind, target_kind = triplet
    tool = make_object(tool_kind, rng)
    target = make_object(target_kind, rng) if target_kind else None
    tool_pose, target_pose, direction = _layout(rng, tool, target)
    ctx = _Context(tool, tool_pose, target, target_pose, direction, rng)

    # 1. Time line: progress s in [0, 1] over the clip's frames.
    F = config.num_frames
    s = np.linspace(0.0, 1.0, F)
    act = (s - ACT_START) / (1 - ACT_START)
    tool_poses = _tool_track(_plan(action, ctx), ctx, np.clip(act, 0.0, 1.0))  # (F, 4, 4)

    # 2. Hand: reach from the actor's side to the grasp, close the fingers, then move with the tool.
    reach = _unit(np.append(-SHOULDER + rng.uniform(-0.15, 0.15, 2), 0.0) * [1, 1, 0])
    grasp = hand_grasp_pose(tool, tool_pose, reach)
    pre = grasp.copy()
    pre[:3, 3] += grasp[:3, 2] * 0.05  # 5 cm back along the back of the hand
    start = _pose(Rotation.from_rotvec(rng.uniform(-0.4, 0.4, 3)).as_matrix() @ grasp[:3, :3],
                  grasp[:3, 3] + np.append(SHOULDER - grasp[:3, 3][:2], 0.0) * 0.45 + UP * rng.uniform(0.12, 0.2))
    keys_s = np.array([0.0, APPROACH_END, ACT_START])
    keys_p = np.stack([start[:3, 3], pre[:3, 3], grasp[:3, 3]])
    keys_r = np.stack([Rotation.from_matrix(grasp[:3, :3].T @ T[:3, :3]).as_rotvec() for T in (start, pre, grasp)])
    wrist = np.tile(np.eye(4), (F, 1, 1))
    wrist[:, :3, 3] = PchipInterpolator(keys_s, keys_p, axis=0)(np.minimum(s, ACT_START))
    wrist[:, :3, :3] = grasp[:3, :3] @ Rotation.from_rotvec(PchipInterpolator(keys_s, keys_r, axis=0)(np.minimum(s, ACT_START))).as_matrix()
    holding = s >= ACT_START
    wrist[holding] = tool_poses[holding] @ np.linalg.inv(tool_pose) @ grasp
    closure = _smooth((s - CLOSE[0]) / (CLOSE[1] - CLOSE[0]))[:, None, None]
    flex = OPEN_FLEX + closure * (grasp_flex(tool.grasp_radius) - OPEN_FLEX)  # (F, 5, 3)

    poses = np.empty((F, NUM_PARTS, 4, 4))
    poses[:, PART_TOOL] = tool_poses
    poses[:, PART_TARGET] = target_pose if target is not None else np.eye(4)
    poses[:, PART_FOREARM:] = hand_poses(wrist, flex)

    # 3. Appearance and cameras.
    look = np.random.default_rng(look_seq)
    cameras = make_rig(look, config.height, config.width)
    table = make_table(look)
    skin = SKIN_TONES[look.integers(len(SKIN_TONES))] * look.uniform(0.95, 1.05)
    sleeve = PALETTE[look.integers(len(PALETTE))]
    light = _unit(np.array([*look.uniform(-0.5, 0.5, 2), 1.0]))
    spacing = sample_spacing(cameras, LOOK_AT, reach=0.2, fraction=config.spacing_px)

    def surfaces(spacing: float) -> SurfaceSamples:
        items = [tool.surface(spacing, PART_TOOL), hand_surface(spacing, skin, sleeve, int(seed) % (1 << 20))]
        if target is not None:
            items.insert(1, target.surface(spacing, PART_TARGET))
        return SurfaceSamples.concat(items)

    videos, depth = render_views(cameras, surfaces(spacing), poses, table, light)

    # 4. Ground-truth tracks: resolution-independent surface samples, hand / tool / target shares.
    tracks_world, labels = _sample_tracks(surfaces(TRACK_SPACING), poses, config.num_points, np.random.default_rng(track_seq))
    meta = {"generator": "syncmv4d.synthetic/1", "seed": int(seed), "action": action, "tool": tool_kind,
            "target": target_kind}
    meta["split"] = split_of(meta)
    return Scene(cameras, videos, tracks_world, labels, describe(action, tool_kind, target_kind), config.fps,
                 depth=depth, meta=meta)


TRACK_SPACING = 0.003  # metres between candidate track points (independent of the image size)
LABEL_SHARE = {HAND: 0.45, TOOL: 0.35, TARGET: 0.2}  # fraction of the K tracks per label (renormalised)


def _sample_tracks(surface: SurfaceSamples, poses: np.ndarray, K: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """K tracked points (F, K, 3) float32 metres and their labels (K,) uint8."""
    part_label = np.array([PART_LABELS.get(p, 0) for p in range(NUM_PARTS)], np.uint8)
    labels = part_label[surface.part]
    present = [lab for lab in LABEL_SHARE if np.any(labels == lab)]
    shares = np.array([LABEL_SHARE[lab] for lab in present])
    counts = np.floor(shares / shares.sum() * K).astype(int)
    counts[0] += K - counts.sum()
    chosen = []
    for lab, n in zip(present, counts):
        pool = np.flatnonzero(labels == lab)
        chosen.append(rng.choice(pool, size=n, replace=n > len(pool)))
    chosen = np.concatenate(chosen)
    points, _ = surface.select(chosen).transformed(poses)
    return points.astype(np.float32), labels[chosen]


def scene_seed(seed: int, index: int) -> int:
    """The generator seed of scene ``index`` in a set written with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def other_actions(triplet: tuple[str, str, str | None], split: str | None = None) -> list[tuple[str, str, str | None]]:
    """The triplets that act on the same tool with another action of the vocabulary (and of
    ``split`` if given), keeping the target where the action takes it (else its first one of
    the split), in ``ACTIONS`` order; e.g. ``("lift", "cup", None)`` -> rotate, push, pour,
    place the cup."""
    _, tool, target = triplet
    found = []
    for action, (_, tools, targets) in ACTIONS.items():
        if action == triplet[0] or tool not in tools:
            continue
        options = [target] if target in targets else list(targets) or [None]
        options = [t for t in options
                   if split is None or split_of({"action": action, "tool": tool, "target": t}) == split]
        if options:
            found.append((action, tool, options[0]))
    return found


def _acted_layouts(seed: int, config: SynthConfig, split: str | None, actions_per_layout: int) -> Iterator[Scene]:
    """Endless scenes of ``write_scenes``: layout i (``scene_seed(seed, i)``) with its drawn
    triplet, then with up to ``actions_per_layout - 1`` of its ``other_actions``."""
    for layout in itertools.count():
        layout_seed = scene_seed(seed, layout)
        scene = generate_scene(layout_seed, config, split)
        yield scene
        drawn = (scene.meta["action"], scene.meta["tool"], scene.meta["target"])
        for triplet in other_actions(drawn, split)[:actions_per_layout - 1]:
            yield generate_scene(layout_seed, config, triplet=triplet)


def write_scenes(out: str | Path, num_scenes: int, seed: int = 0, config: SynthConfig | None = None,
                 progress: bool = False, split: str | None = None, workers: int = 4,
                 actions_per_layout: int = 1) -> list[Path]:
    """Generate ``num_scenes`` scenes and save them as ``out/scene_00000`` ...

    Args:
        out: output directory.
        num_scenes: number of scenes.
        seed: set seed; layout i uses ``scene_seed(seed, i)`` (stored in its meta).
        config: generator settings.
        progress: show a tqdm progress bar.
        split: "train" / "test" to draw only triplets of that split (``HELDOUT``), None for all.
        workers: threads that encode and write finished scenes while the next ones render.
        actions_per_layout: each layout (objects, placement, look) is acted out by its drawn
            triplet and then by up to ``actions_per_layout - 1`` of its ``other_actions``, as
            consecutive scenes: groups whose references look alike and whose motions differ only
            as their task texts do (1: every scene its own layout).
    Returns:
        The scene directories, in order.
    """
    check_int(num_scenes, "num_scenes", 1, MAX_SCENES)
    check_int(actions_per_layout, "actions_per_layout", 1, len(ACTIONS))
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    config = config or SynthConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"scene_{i:05d}" for i in range(num_scenes)]
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = []
        scenes = itertools.islice(_acted_layouts(seed, config, split, actions_per_layout), num_scenes)
        for path, scene in zip(paths, tqdm(scenes, total=num_scenes, desc="synth", unit="scene", disable=not progress)):
            pending.append(pool.submit(scene.save, path))
            while len(pending) > 2 * workers:  # bound the memory held by scenes waiting to be written
                pending.pop(0).result()
        for job in pending:
            job.result()
    logger.info("wrote %d scenes to %s", num_scenes, out)
    return paths
