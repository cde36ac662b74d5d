"""The one on-disk scene format, shared by synthetic data, TACO-derived data and generated results.

Layout of a scene directory::

    scene.json                 text, fps, num_frames, cameras (K, world_T_cam, size, cluster),
                               optional depth_ranges (V, 2) metres, free-form meta
    videos/<camera>.mp4        RGB video per camera, lossless H.264 (libx264rgb, crf 0)
    tracks.npz                 tracks_world (F, K, 3) float32 metres, labels (K,) uint8, optional
                               track_anchors (K, 3) float32 (view index, u0, v0 pixels): the identity
                               of generated tracks (see Scene.track_anchors), optional
                               label_confidence (K,) float32 in [0, 1] (generated labels)
    depth.npz                  optional: depth (V, F, H, W) float32 metres (0 = background)
    pseudo_videos/<camera>.mp4 optional: motion pseudo videos (generated results)

Writes are atomic at the directory level: everything goes to a temporary sibling directory
that replaces the target only when complete, so an interrupted save never leaves a half scene;
a save killed at any point is repaired by the next ``save`` or ``load`` (``Scene.save``).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from .cameras import Camera
from .fileio import new_temp_dir, repair_dir, replace_dir
from .limits import MAX_CAMERAS, check_fps, check_text

FORMAT = "syncmv4d-scene/1"

# Per-point labels (also the constants of the HOITracks message).
UNKNOWN, HAND, TOOL, TARGET = 0, 1, 2, 3
LABEL_NAMES = {UNKNOWN: "unknown", HAND: "hand", TOOL: "tool", TARGET: "target"}
LABEL_COLORS = {UNKNOWN: (0.6, 0.6, 0.6), HAND: (1.0, 0.23, 0.19), TOOL: (0.2, 0.78, 0.35), TARGET: (0.04, 0.52, 1.0)}
"""RGB in [0, 1] per label: previews, plots and RViz markers use this one table."""


def read_json(path: Path, what: str) -> dict:
    """A JSON file's content; FileNotFoundError / ValueError naming ``path`` (and ``what`` it is)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write (F, H, W, 3) uint8 RGB frames as lossless H.264 (reads back bit-exact)."""
    iio.imwrite(path, frames, fps=fps, codec="libx264rgb", pixelformat="bgr24",
                output_params=["-crf", "0", "-preset", "ultrafast"], macro_block_size=1)


def write_preview_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write (F, H, W, 3) uint8 RGB frames as a widely playable (lossy, yuv420p) mp4."""
    iio.imwrite(path, frames, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2)


def read_video(path: Path) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB frames of a video file; a clear error naming the file if unreadable."""
    try:
        return np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises several unrelated types for broken files
        raise ValueError(f"cannot read video {path}: {exc}") from exc


def _read_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file (no pickles); ValueError naming ``path`` if unreadable or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("not an .npz archive")
            missing = [k for k in required if k not in data.files]
            if missing:
                raise ValueError(f"missing arrays {missing} (has {data.files})")
            return {k: data[k] for k in required + optional if k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


@dataclass
class Scene:
    """A multi-view hand-object-interaction clip with its 4D point tracks.

    Attributes:
        cameras: V cameras (all the same image size).
        videos: (V, F, H, W, 3) uint8 RGB.
        tracks_world: (F, K, 3) float32 world-frame point positions, metres.
        labels: (K,) uint8 per-point label (UNKNOWN / HAND / TOOL / TARGET).
        text: the task text, e.g. "lift the cup".
        fps: frame rate.
        depth: optional (V, F, H, W) float32 rendered depth in metres (0 = no surface).
        pseudo_videos: optional (V, F, H, W, 3) uint8 motion pseudo videos.
        depth_ranges: optional (V, 2) float32 per-view (zmin, zmax) in metres.
        track_anchors: optional (K, 3) float32 identity of each track: (view index, u0, v0), the
            view it was anchored in and its frame-0 pixel there, or (-1, nan, nan) for a track that
            no view sees in frame 0. Generated scenes carry it (their
            tracks have no other identity); evaluation matches them to ground-truth tracks by it.
        label_confidence: optional (K,) float32 in [0, 1], the model's probability of each label.
        meta: free-form JSON-serialisable information (generator seed, action, split...).
    """

    cameras: list[Camera]
    videos: np.ndarray
    tracks_world: np.ndarray
    labels: np.ndarray
    text: str
    fps: float = 8.0
    depth: np.ndarray | None = None
    pseudo_videos: np.ndarray | None = None
    depth_ranges: np.ndarray | None = None
    track_anchors: np.ndarray | None = None
    label_confidence: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.videos = np.asarray(self.videos)
        self.tracks_world = np.asarray(self.tracks_world, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.uint8)
        self.fps = check_fps(self.fps, "fps")
        self.validate()

    @property
    def num_views(self) -> int:
        return len(self.cameras)

    @property
    def num_frames(self) -> int:
        return int(self.tracks_world.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.tracks_world.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.videos.shape[2]), int(self.videos.shape[3])

    def validate(self) -> None:
        """Raise ValueError if shapes, dtypes or camera sizes disagree."""
        V = len(self.cameras)
        if V == 0:
            raise ValueError("a scene needs at least one camera")
        if V > MAX_CAMERAS:
            raise ValueError(f"a scene has at most {MAX_CAMERAS} cameras, got {V}")
        check_text(self.text, "text")
        names = [c.name for c in self.cameras]
        if len(set(names)) != V:
            raise ValueError(f"camera names must be unique, got {names}")
        if self.videos.dtype != np.uint8 or self.videos.ndim != 5 or self.videos.shape[0] != V or self.videos.shape[-1] != 3:
            raise ValueError(f"videos must be (V={V}, F, H, W, 3) uint8, got {self.videos.shape} {self.videos.dtype}")
        F, H, W = self.videos.shape[1:4]
        if self.tracks_world.ndim != 3 or self.tracks_world.shape[0] != F or self.tracks_world.shape[2] != 3:
            raise ValueError(f"tracks_world must be (F={F}, K, 3), got {self.tracks_world.shape}")
        if self.labels.shape != (self.tracks_world.shape[1],):
            raise ValueError(f"labels must be (K={self.tracks_world.shape[1]},), got {self.labels.shape}")
        for cam in self.cameras:
            if (cam.height, cam.width) != (H, W):
                raise ValueError(f"camera {cam.name!r} is {cam.width}x{cam.height} but the videos are {W}x{H}")
        if self.depth is not None and self.depth.shape != (V, F, H, W):
            raise ValueError(f"depth must be (V, F, H, W) = {(V, F, H, W)}, got {self.depth.shape}")
        if self.pseudo_videos is not None and self.pseudo_videos.shape != self.videos.shape:
            raise ValueError(f"pseudo_videos must match videos {self.videos.shape}, got {self.pseudo_videos.shape}")
        if self.depth_ranges is not None and np.asarray(self.depth_ranges).shape != (V, 2):
            raise ValueError(f"depth_ranges must be (V={V}, 2), got {np.asarray(self.depth_ranges).shape}")
        if self.track_anchors is not None and np.asarray(self.track_anchors).shape != (self.num_points, 3):
            raise ValueError(f"track_anchors must be (K={self.num_points}, 3), got {np.asarray(self.track_anchors).shape}")
        if self.label_confidence is not None and np.asarray(self.label_confidence).shape != (self.num_points,):
            raise ValueError(f"label_confidence must be (K={self.num_points},), got "
                             f"{np.asarray(self.label_confidence).shape}")

    # ------------------------------------------------------------------ I/O
    def save(self, directory: str | Path) -> Path:
        """Write the scene to ``directory`` atomically (replacing an existing scene there).

        Everything is written to a temporary sibling ``.<name>.tmp<pid>.<token>`` first (created
        with the user's umask). An existing scene is then renamed to ``.<name>.old``, the new one
        renamed into place and the old one deleted. A process killed at any point leaves either
        the old or the new scene readable (``load`` restores ``.<name>.old`` if the scene itself
        is missing) and the next ``save`` removes every leftover (``fileio.repair_dir``). Errors while
        writing (e.g. a full disk) remove the temporary folder and raise ``OSError`` naming
        ``directory``.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        repair_dir(directory, clean=True)
        tmp = new_temp_dir(directory)
        try:
            self._write(tmp)
            replace_dir(tmp, directory)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, FileNotFoundError):
                raise OSError(f"cannot save scene {directory}: {exc}") from exc
            raise
        return directory

    def _write(self, tmp: Path) -> None:
        info = {
            "format": FORMAT,
            "text": self.text,
            "fps": float(self.fps),
            "num_frames": self.num_frames,
            "num_points": self.num_points,
            "cameras": [c.to_dict() for c in self.cameras],
            "labels_legend": {str(k): v for k, v in LABEL_NAMES.items()},
            "meta": self.meta,
        }
        if self.depth_ranges is not None:
            info["depth_ranges"] = np.asarray(self.depth_ranges, dtype=float).tolist()
        (tmp / "scene.json").write_text(json.dumps(info, indent=1))
        (tmp / "videos").mkdir()
        for cam, video in zip(self.cameras, self.videos):
            write_video(tmp / "videos" / f"{cam.name}.mp4", video, self.fps)
        if self.pseudo_videos is not None:
            (tmp / "pseudo_videos").mkdir()
            for cam, video in zip(self.cameras, self.pseudo_videos):
                write_video(tmp / "pseudo_videos" / f"{cam.name}.mp4", video, self.fps)
        arrays = {"tracks_world": self.tracks_world, "labels": self.labels}
        if self.track_anchors is not None:
            arrays["track_anchors"] = np.asarray(self.track_anchors, dtype=np.float32)
        if self.label_confidence is not None:
            arrays["label_confidence"] = np.asarray(self.label_confidence, dtype=np.float32)
        np.savez_compressed(tmp / "tracks.npz", **arrays)
        if self.depth is not None:
            np.savez_compressed(tmp / "depth.npz", depth=self.depth.astype(np.float32))

    @classmethod
    def load(cls, directory: str | Path, load_depth: bool = True) -> "Scene":
        """Read a scene written by ``save``; errors name the missing or broken file.

        A scene whose replacement was interrupted between ``save``'s two renames is restored from
        its ``.<name>.old`` sibling first (logged).
        """
        directory = Path(directory)
        repair_dir(directory, clean=False)
        info_path = directory / "scene.json"
        info = read_json(info_path, "not a syncmv4d scene directory:")
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            got = info.get("format") if isinstance(info, dict) else type(info).__name__
            raise ValueError(f"{info_path}: unknown format {got!r}, expected {FORMAT!r}")
        missing = [k for k in ("cameras", "text", "fps") if k not in info]
        if missing:
            raise ValueError(f"{info_path}: missing keys {missing}")
        if not isinstance(info["cameras"], list) or not info["cameras"]:
            raise ValueError(f"{info_path}: 'cameras' must be a non-empty list of cameras, got {info['cameras']!r}")
        if len(info["cameras"]) > MAX_CAMERAS:
            raise ValueError(f"{info_path}: {len(info['cameras'])} cameras, more than the limit of {MAX_CAMERAS}")
        try:
            check_text(info["text"], "text")
            check_fps(info["fps"], "fps")
            if not all(isinstance(c, dict) for c in info["cameras"]):
                raise ValueError("every entry of 'cameras' must be an object")
            cameras = [Camera.from_dict(c) for c in info["cameras"]]
        except ValueError as exc:
            raise ValueError(f"{info_path}: {exc}") from exc
        videos = []
        for cam in cameras:
            path = directory / "videos" / f"{cam.name}.mp4"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (video of camera {cam.name!r})")
            videos.append(read_video(path))
        if len({v.shape for v in videos}) != 1:
            raise ValueError(f"{directory}: videos differ in shape: {[v.shape for v in videos]}")
        pseudo = None
        if (directory / "pseudo_videos").is_dir():
            pseudo = np.stack([read_video(directory / "pseudo_videos" / f"{c.name}.mp4") for c in cameras])
        tracks_path = directory / "tracks.npz"
        if not tracks_path.is_file():
            raise FileNotFoundError(f"{tracks_path} not found")
        arrays = _read_npz(tracks_path, ("tracks_world", "labels"), ("track_anchors", "label_confidence"))
        depth = None
        if load_depth and (directory / "depth.npz").is_file():
            depth = _read_npz(directory / "depth.npz", ("depth",))["depth"]
        try:
            depth_ranges = np.asarray(info["depth_ranges"], dtype=np.float32) if "depth_ranges" in info else None
            return cls(cameras=cameras, videos=np.stack(videos), tracks_world=arrays["tracks_world"],
                       labels=arrays["labels"], text=info["text"], fps=float(info["fps"]), depth=depth,
                       pseudo_videos=pseudo, depth_ranges=depth_ranges, track_anchors=arrays.get("track_anchors"),
                       label_confidence=arrays.get("label_confidence"), meta=info.get("meta", {}))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{directory}: {exc}") from exc

    def select_views(self, indices: list[int]) -> "Scene":
        """A scene with only the cameras at ``indices`` (tracks and text unchanged).

        Not defined for scenes with ``track_anchors`` (their identities name views by index).
        """
        if self.track_anchors is not None:
            raise ValueError("select_views: the scene's track_anchors refer to view indices; select views before generating")
        pick = lambda a: None if a is None else np.asarray(a)[indices]  # noqa: E731
        return Scene([self.cameras[i] for i in indices], self.videos[indices], self.tracks_world, self.labels,
                     self.text, self.fps, pick(self.depth), pick(self.pseudo_videos), pick(self.depth_ranges),
                     meta=dict(self.meta))
