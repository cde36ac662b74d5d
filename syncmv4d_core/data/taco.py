"""Reader for a local TACO download: multi-view clips with MANO + object-vertex 4D tracks.

TACO layout read here (``root`` = the download's top directory; see docs/taco.md)::

    Allocentric_RGB_Videos/<triplet>/<seq>/<SN>.mp4      12 cameras, 4096x3000, 30 fps
    Allocentric_Camera_Parameters/<triplet>/<seq>/calibration.json
        {SN: {"K": 3x3, "R": 3x3, "T": 3, "imgSize": [width, height]}}, x_cam = R X + T, metres
    Hand_Poses/<triplet>/<seq>/{left,right}_hand.pkl          {frame: {"hand_pose": (48,), "hand_trans": (3,)}}
    Hand_Poses/<triplet>/<seq>/{left,right}_hand_shape.pkl    {"hand_shape": (10,)}
    Object_Poses/<triplet>/<seq>/tool_<id>.npy, target_<id>.npy   (N, 4, 4) model-to-world, metres
    Object_Models/<id>_cm.obj                                     vertices in centimetres

Units (checked against TACO's own loader and example calibration): hand_trans, object-pose
translations and calibration T are metres; object models are centimetres
(``TacoConfig.object_model_scale = 0.01``); MANO's own unit is metres (TACO's loader goes
through millimetres and back). Triplet folders are named ``(action, tool, target)``.

Each sequence becomes clips of ``num_frames`` frames resampled from 30 to 8 fps. Per clip:

* tracks: hand (both MANO hands) and object vertices are voxel-downsampled at the clip's
  frame 0 to exactly ``num_points`` vertices (one vertex per voxel, the voxel size is the
  largest that still leaves ``num_points`` occupied voxels); the same vertex ids are followed
  through the clip. Labels HAND / TOOL / TARGET.
* views: all 12 cameras, each cropped to the projected tracks' bounding box (plus a margin,
  widened to the output aspect, clamped to the image; constant over the clip) and resized to
  ``height x width``; the intrinsics follow through ``Camera.crop`` then ``Camera.resize``.
* clusters: cameras are ordered by azimuth around the workspace centre (the point closest to
  all optical axes, azimuth about ``TacoConfig.up``), starting after the largest azimuth gap
  and going counter-clockwise seen from above, i.e. from left to right for a viewer standing
  among the cameras and facing the workspace; the ordered list is cut into three contiguous
  thirds: left, center, right.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import cv2
import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

from ..cameras import CLUSTERS, Camera
from ..fileio import atomic_write_json, load_pickle
from ..limits import MAX_FRAMES, TEMPORAL_COMPRESSION, check_fps, check_image_size, check_num_frames, check_points
from ..scene import HAND, TARGET, TOOL, Scene, read_json
from .mano import ManoModel

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "syncmv4d-taco-manifest/1"
SPLITS = ("train", "val", "test")
HAND_SIDES = ("left", "right")
TEXT_TEMPLATE = "{action} the {target} with the {tool}"


@dataclass(frozen=True)
class TacoConfig:
    """Conversion settings.

    Attributes:
        height, width: output image size in pixels, multiples of 32 (the DiT's 16x VAE + 2x patch).
        num_frames: frames per clip at ``fps``, 4n + 1 (Wan's 4x temporal compression).
        num_points: tracked points K per frame.
        fps: output frame rate; ``source_fps``: TACO's capture rate.
        clip_stride: output frames between consecutive clip starts (None: ``num_frames``, no overlap).
        crop_margin: margin added on each side of the tracks' bounding box, as a fraction of its
            larger side.
        test_objects / test_actions: tool or target categories / actions whose sequences form the
            held-out test split (the paper holds out e.g. hammer and measure).
        val_fraction: share of the remaining sequences in the validation split (paper: 9:1).
        split_seed: seed of the deterministic train/val assignment.
        object_model_scale: OBJ units -> metres (TACO models are in centimetres).
        calibration_scale: calibration ``T`` units -> metres (TACO: metres).
        up: world up axis used for the camera azimuths (TACO's world is z-up).
        video_folder: folder holding the allocentric videos (e.g.
            ``Marker_Removed_Allocentric_RGB_Videos`` for the marker-removed release).
        object_models_dir: where the ``<id>_cm.obj`` files are (None: ``root/Object_Models``).
        skip_errors: log and skip a broken sequence (listed in the manifest) instead of stopping.
    """

    height: int = 480
    width: int = 704
    num_frames: int = 49
    num_points: int = 1600
    fps: float = 8.0
    source_fps: float = 30.0
    clip_stride: int | None = None
    crop_margin: float = 0.1
    test_objects: tuple[str, ...] = ("hammer",)
    test_actions: tuple[str, ...] = ("measure",)
    val_fraction: float = 0.1
    split_seed: int = 0
    object_model_scale: float = 0.01
    calibration_scale: float = 1.0
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    video_folder: str = "Allocentric_RGB_Videos"
    object_models_dir: str | None = None
    skip_errors: bool = False

    def __post_init__(self) -> None:
        check_image_size(self.height, self.width)
        for name in ("height", "width"):
            value = getattr(self, name)
            if value <= 0 or value % 32:
                raise ValueError(f"{name} must be a positive multiple of 32, got {value}")
        check_num_frames(self.num_frames, TEMPORAL_COMPRESSION, MAX_FRAMES)
        check_points(self.num_points)
        check_fps(self.fps)
        check_fps(self.source_fps, "source_fps")
        if not 0 < self.fps <= self.source_fps:
            raise ValueError(f"need 0 < fps <= source_fps, got fps={self.fps}, source_fps={self.source_fps}")
        if self.clip_stride is not None and self.clip_stride < 1:
            raise ValueError(f"clip_stride must be positive or None, got {self.clip_stride}")
        if self.crop_margin < 0:
            raise ValueError(f"crop_margin must be >= 0, got {self.crop_margin}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.object_model_scale <= 0 or self.calibration_scale <= 0:
            raise ValueError(f"unit scales must be positive, got object_model_scale={self.object_model_scale}, "
                             f"calibration_scale={self.calibration_scale}")
        if len(self.up) != 3 or np.linalg.norm(self.up) < 1e-9:
            raise ValueError(f"up must be a non-zero 3-vector, got {self.up}")


# ---------------------------------------------------------------------- sequences and text
@dataclass(frozen=True)
class TacoSequence:
    """One TACO sequence: ``root/<folder>/<triplet>/<name>``."""

    root: Path
    triplet: str
    name: str

    def folder(self, top: str) -> Path:
        return self.root / top / self.triplet / self.name

    @property
    def action(self) -> str:
        return parse_triplet(self.triplet)[0]

    @property
    def tool(self) -> str:
        return parse_triplet(self.triplet)[1]

    @property
    def target(self) -> str:
        return parse_triplet(self.triplet)[2]

    @property
    def text(self) -> str:
        return task_text(*parse_triplet(self.triplet))


def parse_triplet(triplet: str) -> tuple[str, str, str]:
    """``"(stir, spoon, bowl)"`` -> ``("stir", "spoon", "bowl")`` (action, tool, target); underscores -> spaces."""
    match = re.fullmatch(r"\(([^,()]+),([^,()]+),([^,()]+)\)", triplet.strip())
    if match is None:
        raise ValueError(f"triplet folder {triplet!r} is not of the form '(action, tool, target)'")
    action, tool, target = (part.strip().replace("_", " ") for part in match.groups())
    return action, tool, target


def task_text(action: str, tool: str, target: str) -> str:
    """The task sentence, ``TEXT_TEMPLATE``: ("stir", "spoon", "bowl") -> "stir the bowl with the spoon"."""
    return TEXT_TEMPLATE.format(action=action, tool=tool, target=target)


def list_sequences(root: str | Path, video_folder: str = "Allocentric_RGB_Videos") -> list[TacoSequence]:
    """All ``<triplet>/<sequence>`` folders under ``root/video_folder``, sorted by sequence name."""
    top = Path(root) / video_folder
    if not top.is_dir():
        raise FileNotFoundError(f"{top} not found: is {root} a TACO root (it needs {video_folder}/)?")
    sequences = [TacoSequence(Path(root), t.name, s.name)
                 for t in sorted(top.iterdir()) if t.is_dir() for s in sorted(t.iterdir()) if s.is_dir()]
    if not sequences:
        raise FileNotFoundError(f"{top} holds no <triplet>/<sequence> folders")
    return sorted(sequences, key=lambda s: (s.name, s.triplet))


def split_sequences(sequences: list[TacoSequence], config: TacoConfig) -> dict[str, str]:
    """Sequence name -> "train" / "val" / "test".

    Test: the tool or target is one of ``config.test_objects`` or the action one of
    ``config.test_actions``. The rest is ordered by a seeded hash of the sequence name and the
    first ``round(val_fraction * n)`` go to val, so the split depends only on the names and seed.
    """
    held_objects = {o.lower() for o in config.test_objects}
    held_actions = {a.lower() for a in config.test_actions}
    splits: dict[str, str] = {}
    rest = []
    for seq in sequences:
        action, tool, target = parse_triplet(seq.triplet)
        if action.lower() in held_actions or tool.lower() in held_objects or target.lower() in held_objects:
            splits[seq.name] = "test"
        else:
            rest.append(seq.name)
    rest.sort(key=lambda name: hashlib.sha256(f"{config.split_seed}:{name}".encode()).hexdigest())
    num_val = round(config.val_fraction * len(rest))
    for i, name in enumerate(rest):
        splits[name] = "val" if i < num_val else "train"
    return splits


# ---------------------------------------------------------------------- cameras
def workspace_centre(cameras: list[Camera]) -> np.ndarray:
    """(3,) metres: the least-squares point closest to all optical axes."""
    A, b = np.zeros((3, 3)), np.zeros(3)
    for cam in cameras:
        d = cam.world_T_cam[:3, 2]
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ cam.position
    return np.linalg.lstsq(A, b, rcond=None)[0]


def assign_clusters(cameras: list[Camera], up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> list[Camera]:
    """The cameras ordered left -> right with their ``cluster`` set (see the module docstring)."""
    if len(cameras) < len(CLUSTERS):
        raise ValueError(f"need at least {len(CLUSTERS)} cameras to form the clusters {CLUSTERS}, got {len(cameras)}")
    up_axis = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    e1 = np.cross(up_axis, [1.0, 0.0, 0.0] if abs(up_axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up_axis, e1)
    offsets = np.stack([c.position for c in cameras]) - workspace_centre(cameras)
    azimuth = np.arctan2(offsets @ e2, offsets @ e1)  # counter-clockwise about up
    order = np.argsort(azimuth)
    gaps = np.diff(np.concatenate([azimuth[order], azimuth[order[:1]] + 2 * np.pi]))
    order = np.roll(order, -(int(np.argmax(gaps)) + 1))  # start right after the largest gap
    out = []
    for cluster, group in zip(CLUSTERS, np.array_split(order, len(CLUSTERS))):
        out += [Camera(cameras[i].name, cameras[i].K, cameras[i].world_T_cam, cameras[i].width, cameras[i].height, cluster)
                for i in group]
    return out


def read_calibration(path: Path, config: TacoConfig) -> list[Camera]:
    """Cameras from a TACO ``calibration.json``, ordered and clustered by ``assign_clusters``."""
    data = read_json(path, "calibration file")
    cameras = []
    for sn in sorted(data):
        entry = data[sn]
        missing = [k for k in ("K", "R", "T", "imgSize") if k not in entry]
        if missing:
            raise ValueError(f"{path}: camera {sn} lacks {missing}")
        width, height = (int(v) for v in entry["imgSize"])
        T = np.asarray(entry["T"], dtype=np.float64).reshape(3) * config.calibration_scale
        try:
            cameras.append(Camera.from_taco(sn, np.asarray(entry["K"]), np.asarray(entry["R"]), T, width, height))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return assign_clusters(cameras, config.up)


def crop_box(uv: np.ndarray, depth: np.ndarray, camera: Camera, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """Pixel window ``(x0, y0, w, h)`` around the projected points with the output's aspect.

    Args:
        uv: (..., 2) projected points, pixels; depth: (...,) metres (points with depth <= 0 are ignored).
        camera: the camera that saw them (image bounds); width, height: output size (aspect only).
        margin: added on each side, fraction of the box's larger side.
    The box is widened to ``width / height``, shrunk (about its centre) if larger than the image
    and shifted inside it. With no point in front of the camera the whole image is used.
    """
    aspect = width / height
    W, H = camera.width, camera.height
    valid = (depth > 0) & np.isfinite(uv).all(axis=-1)
    if valid.any():
        # pixel-edge coordinates: pixel j spans [j, j + 1); points outside the image are clamped
        u = np.clip(uv[valid][:, 0] + 0.5, 0, W)
        v = np.clip(uv[valid][:, 1] + 0.5, 0, H)
        pad = margin * max(u.max() - u.min(), v.max() - v.min(), 1.0)
        cx, cy = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
        w, h = u.max() - u.min() + 2 * pad, v.max() - v.min() + 2 * pad
    else:
        logger.warning("camera %s: no tracked point in front of it, cropping the whole image", camera.name)
        cx, cy, w, h = W / 2, H / 2, W, H
    w, h = max(w, h * aspect), max(h, w / aspect)
    shrink = min(1.0, W / w, H / h)
    w_px = int(np.clip(round(w * shrink), 1, W))
    h_px = int(np.clip(round(h * shrink), 1, H))
    x0 = int(np.clip(round(cx - w_px / 2), 0, W - w_px))
    y0 = int(np.clip(round(cy - h_px / 2), 0, H - h_px))
    return x0, y0, w_px, h_px


# ---------------------------------------------------------------------- annotations
def _as_array(value) -> np.ndarray:
    """numpy array from a numpy / torch value (TACO's pickles hold torch tensors)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _safe_storage_from_bytes(data: bytes):
    """``torch.storage._load_from_bytes`` with ``weights_only=True`` (TACO's pickled tensors)."""
    import io

    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_tensor_v2(*args):
    import torch._utils

    return torch._utils._rebuild_tensor_v2(*args)


# TACO's pickles hold torch tensors: their two rebuild functions are the only extra globals allowed.
_TORCH_TENSOR_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
                         ("torch.storage", "_load_from_bytes"): _safe_storage_from_bytes}


def _load_pickle(path: Path):
    """A TACO annotation pickle, read with the allow-list unpickler (``fileio.load_pickle``): numpy
    arrays, torch tensors and plain containers only; ValueError naming the file and any refused class."""
    return load_pickle(path, extra=_TORCH_TENSOR_GLOBALS)


def read_hand(folder: Path, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hand's MANO parameters.

    Returns:
        pose (N, 48) axis-angle radians, trans (N, 3) metres, betas (10,). A missing shape file
        means the mean shape (zeros), as in TACO's own loader; it is logged.
    """
    pose_path = folder / f"{side}_hand.pkl"
    data = _load_pickle(pose_path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{pose_path}: expected a non-empty dict frame -> {{hand_pose, hand_trans}}")
    try:
        frames = [data[k] for k in sorted(data)]
        pose = np.stack([_as_array(f["hand_pose"]).reshape(-1) for f in frames])
        trans = np.stack([_as_array(f["hand_trans"]).reshape(3) for f in frames])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{pose_path}: every frame needs hand_pose (48,) and hand_trans (3,) ({exc!r})") from exc
    if pose.shape[1] != 48:
        raise ValueError(f"{pose_path}: hand_pose must hold 48 axis-angle values (use_pca=False), got {pose.shape[1]}")
    shape_path = folder / f"{side}_hand_shape.pkl"
    if shape_path.is_file():
        shape = _load_pickle(shape_path)
        if not isinstance(shape, dict) or "hand_shape" not in shape:
            raise ValueError(f"{shape_path}: expected a dict with 'hand_shape'")
        betas = _as_array(shape["hand_shape"]).reshape(-1)
    else:
        logger.warning("%s not found: using the mean hand shape (zeros)", shape_path)
        betas = np.zeros(10)
    return pose, trans, betas


def read_obj_vertices(path: Path, scale: float) -> np.ndarray:
    """(M, 3) vertex positions of a Wavefront OBJ, multiplied by ``scale`` (to metres)."""
    if not path.is_file():
        raise FileNotFoundError(f"object model {path} not found")
    vertices = []
    with path.open() as fh:
        for line in fh:
            if line.startswith("v "):
                try:
                    vertices.append([float(x) for x in line.split()[1:4]])
                except ValueError as exc:
                    raise ValueError(f"{path}: bad vertex line {line.strip()!r}") from exc
    if not vertices:
        raise ValueError(f"object model {path} has no vertices")
    return np.asarray(vertices, dtype=np.float64) * scale


def read_object_poses(folder: Path) -> dict[str, tuple[str, np.ndarray]]:
    """``{"tool": (id, poses), "target": (id, poses)}`` with poses (N, 4, 4) model-to-world, metres."""
    if not folder.is_dir():
        raise FileNotFoundError(f"object pose folder {folder} not found")
    out = {}
    for role in ("tool", "target"):
        files = sorted(folder.glob(f"{role}_*.npy"))
        if len(files) != 1:
            raise ValueError(f"{folder}: expected exactly one {role}_<id>.npy, found {[f.name for f in files]}")
        poses = np.load(files[0]).astype(np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise ValueError(f"{files[0]}: object poses must be (N, 4, 4), got {poses.shape}")
        out[role] = (files[0].stem[len(role) + 1:], poses)
    return out


def clip_source_frames(num_source: int, config: TacoConfig) -> np.ndarray:
    """(C, F) source-frame indices of every clip that fits in ``num_source`` frames.

    Output frame j of clip c is at time (c * stride + j) / fps and takes the source frame nearest
    to it: floor(t * source_fps + 0.5) (30 -> 8 fps: 0, 4, 8, 11, 15, 19, 23, 26, ...).
    """
    stride = config.clip_stride or config.num_frames
    ratio = config.source_fps / config.fps
    clips = []
    start = 0
    while True:
        idx = np.floor((start + np.arange(config.num_frames)) * ratio + 0.5).astype(np.int64)
        if idx[-1] >= num_source:
            break
        clips.append(idx)
        start += stride
    return np.asarray(clips, dtype=np.int64).reshape(len(clips), config.num_frames)


def voxel_subsample(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (k,) of ``points`` (M, 3): one point per voxel of the largest voxel size that still
    leaves at least k occupied voxels (found by bisection), the one nearest its voxel's mean;
    if more than k voxels are occupied, k of them are drawn with ``rng``."""
    lower = points.min(axis=0)
    extent = float(np.ptp(points, axis=0).max())

    def voxels(size: float) -> np.ndarray:
        return np.unique(np.floor((points - lower) / size).astype(np.int64), axis=0, return_inverse=True)[1].reshape(-1)

    lo, hi = max(extent, 1e-9) * 1e-7, max(extent, 1e-9) * 2.0
    if voxels(lo).max() + 1 < k:
        raise ValueError(f"only {voxels(lo).max() + 1} distinct point positions, fewer than the {k} points requested")
    for _ in range(40):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if voxels(mid).max() + 1 >= k else (lo, mid)
    inverse = voxels(lo)
    num_voxels = int(inverse.max()) + 1
    means = np.stack([np.bincount(inverse, points[:, c], num_voxels) for c in range(3)], axis=1)
    means /= np.bincount(inverse, minlength=num_voxels)[:, None]
    dist = np.linalg.norm(points - means[inverse], axis=1)
    order = np.lexsort((dist, inverse))  # by voxel, nearest first
    first = order[np.concatenate([[True], np.diff(inverse[order]) != 0])]  # (num_voxels,) one per voxel
    chosen = np.sort(rng.choice(num_voxels, size=k, replace=False))
    return np.sort(first[chosen])


# ---------------------------------------------------------------------- one sequence
def _stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def load_mano(mano_dir: str | Path) -> dict[str, ManoModel]:
    """``{"left": ..., "right": ...}`` from ``MANO_LEFT.pkl`` / ``MANO_RIGHT.pkl`` in ``mano_dir``."""
    mano_dir = Path(mano_dir)
    return {side: ManoModel.load(mano_dir / f"MANO_{side.upper()}.pkl") for side in HAND_SIDES}


def _iter_frames(path: Path) -> Iterator[np.ndarray]:
    """Decoded (H, W, 3) uint8 frames of a video; a clear error naming the file if it is unreadable."""
    try:
        yield from iio.imiter(path)
    except Exception as exc:  # imageio raises several unrelated types for broken files
        raise ValueError(f"cannot read video {path}: {exc}") from exc


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def sequence_scenes(seq: TacoSequence, mano: dict[str, ManoModel], config: TacoConfig) -> Iterator[tuple[int, Scene]]:
    """``(clip index, Scene)`` for every clip of a sequence (see the module docstring).

    All annotations are read and checked (frame counts, files) before any video is decoded; each
    video is decoded once, streaming, keeping only the cropped, resized clip frames.
    """
    # 1. Annotations and their frame counts
    cameras = read_calibration(seq.folder("Allocentric_Camera_Parameters") / "calibration.json", config)
    hand_folder = seq.folder("Hand_Poses")
    hands = {side: read_hand(hand_folder, side) for side in HAND_SIDES}
    objects = read_object_poses(seq.folder("Object_Poses"))
    models_dir = Path(config.object_models_dir) if config.object_models_dir else seq.root / "Object_Models"
    models = {role: read_obj_vertices(models_dir / f"{obj_id}_cm.obj", config.object_model_scale)
              for role, (obj_id, _) in objects.items()}
    counts = {str(hand_folder / f"{s}_hand.pkl"): len(hands[s][0]) for s in HAND_SIDES}
    counts.update({str(seq.folder("Object_Poses") / f"{r}_{i}.npy"): len(p) for r, (i, p) in objects.items()})
    num_source = len(hands["right"][0])
    if len(set(counts.values())) != 1:
        raise ValueError(f"sequence {seq.name}: mismatched frame counts {counts}")
    clips = clip_source_frames(num_source, config)
    if len(clips) == 0:
        logger.warning("sequence %s: %d frames at %g fps are too short for one clip of %d frames at %g fps",
                       seq.name, num_source, config.source_fps, config.num_frames, config.fps)
        return
    video_paths = {cam.name: seq.folder(config.video_folder) / f"{cam.name}.mp4" for cam in cameras}
    for path in video_paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"video {path} not found")

    # 2. Candidate vertices (N_used, M, 3) for the frames any clip uses, with labels (M,)
    used = np.unique(clips)
    parts, labels = [], []
    for side in HAND_SIDES:
        pose, trans, betas = hands[side]
        verts, _ = mano[side](pose[used], betas, trans[used])
        parts.append(verts)
        labels.append(np.full(verts.shape[1], HAND, np.uint8))
    for role, label in (("tool", TOOL), ("target", TARGET)):
        poses = objects[role][1][used]  # (N_used, 4, 4)
        parts.append(np.einsum("nab,mb->nma", poses[:, :3, :3], models[role]) + poses[:, None, :3, 3])
        labels.append(np.full(len(models[role]), label, np.uint8))
    candidates = np.concatenate(parts, axis=1)
    candidate_labels = np.concatenate(labels)

    # 3. Tracks and crop boxes per clip
    tracks, crops = [], []
    for c, frames in enumerate(clips):
        rows = np.searchsorted(used, frames)
        rng = np.random.default_rng(_stable_seed(f"{seq.name}:{c}"))
        ids = voxel_subsample(candidates[rows[0]], config.num_points, rng)
        tracks.append((candidates[rows][:, ids].astype(np.float32), candidate_labels[ids]))
        crops.append({})
        for cam in cameras:
            uv, depth = cam.project(tracks[-1][0])
            crops[-1][cam.name] = crop_box(uv, depth, cam, config.width, config.height, config.crop_margin)

    # 4. Stream every video once, keeping the clip frames (cropped + resized)
    wanted: dict[int, list[tuple[int, int]]] = {}  # source frame -> [(clip, output frame)]
    for c, frames in enumerate(clips):
        for j, f in enumerate(frames):
            wanted.setdefault(int(f), []).append((c, j))
    videos = np.zeros((len(clips), len(cameras), config.num_frames, config.height, config.width, 3), np.uint8)
    out_cameras: list[list[Camera]] = [[] for _ in clips]
    for v, cam in enumerate(cameras):
        path = video_paths[cam.name]
        count = 0
        for count, frame in enumerate(_iter_frames(path), start=1):
            if frame.shape[:2] != (cam.height, cam.width):
                raise ValueError(f"video {path} is {frame.shape[1]}x{frame.shape[0]} but its calibration "
                                 f"says {cam.width}x{cam.height}")
            for c, j in wanted.get(count - 1, ()):
                x0, y0, w, h = crops[c][cam.name]
                videos[c, v, j] = _resize(frame[y0:y0 + h, x0:x0 + w, :3], config.width, config.height)
        if count != num_source:
            raise ValueError(f"video {path} has {count} frames but the annotations of {seq.name} have {num_source}")
        for c in range(len(clips)):
            out_cameras[c].append(cam.crop(*crops[c][cam.name]).resize(config.width, config.height))

    # 5. Scenes
    action, tool, target = parse_triplet(seq.triplet)
    for c, frames in enumerate(clips):
        meta = {
            "source": "taco", "sequence": seq.name, "triplet": seq.triplet, "action": action, "tool": tool,
            "target": target, "tool_id": objects["tool"][0], "target_id": objects["target"][0], "clip": c,
            "source_fps": config.source_fps, "source_frames": frames.tolist(),
            "crops": {name: list(box) for name, box in crops[c].items()},
        }
        yield c, Scene(out_cameras[c], videos[c], tracks[c][0], tracks[c][1], seq.text, config.fps, meta=meta)


# ---------------------------------------------------------------------- whole data set
def convert_taco(
    root: str | Path,
    out: str | Path,
    mano_dir: str | Path,
    config: TacoConfig = TacoConfig(),
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Convert a local TACO download into scenes ``out/{train,val,test}/<sequence>_<clip>/``.

    Splits are decided over all sequences found (before ``limit``), so a sequence's split never
    depends on ``limit``. ``out/manifest.json`` (config, scenes, skipped sequences) is written
    last and atomically: a run that stops early leaves no manifest. Returns the manifest.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive or None, got {limit}")
    out = Path(out)
    sequences = list_sequences(root, config.video_folder)
    splits = split_sequences(sequences, config)
    mano = load_mano(mano_dir)
    todo = sequences if limit is None else sequences[:limit]
    records, skipped = [], []
    for seq in tqdm(todo, desc="TACO sequences", unit="seq", disable=not progress):
        split = splits[seq.name]
        try:
            for clip, scene in sequence_scenes(seq, mano, config):
                scene.meta["split"] = split
                name = f"{seq.name}_{clip:02d}"
                scene.save(out / split / name)
                records.append({"name": name, "path": f"{split}/{name}", "split": split, "sequence": seq.name,
                                "triplet": seq.triplet, "clip": clip, "text": scene.text})
        except (ValueError, FileNotFoundError) as exc:
            if not config.skip_errors:
                raise
            logger.error("skipping sequence %s: %s", seq.name, exc)
            skipped.append({"sequence": seq.name, "triplet": seq.triplet, "error": str(exc)})
    manifest = {
        "format": MANIFEST_FORMAT,
        "root": str(Path(root).resolve()),
        "config": json.loads(json.dumps(asdict(config))),  # tuples -> lists, as read back
        "sequence_splits": {s.name: splits[s.name] for s in todo},
        "scenes": records,
        "skipped": skipped,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
