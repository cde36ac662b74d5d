"""Torch dataset of training samples drawn from scene directories (synthetic or TACO-derived).

One sample is one scene seen from V views: by default one camera per cluster (left, center,
right, paper Sec. 4.1), optionally resized and temporally cropped to ``F = 4n + 1`` frames, with
everything Algorithm 1 needs precomputed from the ground-truth tracks:

    videos         (V, F, H, W, 3) float32 in [0, 1]
    pseudo_videos  (V, F, H, W, 3) float32 in [0, 1]  motion pseudo videos (tracks.encode_views),
                                                      rendered at the output size, not quantised
    depth_ranges   (V, 2) float32 metres              the metric scale s (tracks.depth_range_from_tracks)
    tracks_world   (F, K, 3) float32 metres
    anchors_uv     (V, K, 2) float32 pixels           frame-0 projections, NaN where not visible
    anchor_visible (V, K) bool
    intrinsics     (V, 3, 3) float32 pixels
    world_T_cam    (V, 4, 4) float32 camera-to-world, metres
    labels         (K,) int64                         UNKNOWN / HAND / TOOL / TARGET
    text           str;  cameras  list[Camera];  scene_dir  str

Randomness (which camera of each cluster, where the temporal crop starts) is a pure function of
``(seed, epoch, index)``: call ``set_epoch`` once per pass over the data, and the same sample
comes back in every run and after a resume.

Splits: a scene's split is its ``meta["split"]`` (written by ``syncmv4d synth`` and by the TACO
converter), else the name of its parent folder when that is ``train`` / ``val`` / ``test``.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from .. import limits
from ..scene import Scene
from ..pseudo_video import anchors_for_views, depth_range_from_tracks, encode_views
from ..cameras import one_view_per_cluster, stack_cameras

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
VIEW_MODES = ("cluster", "all")
# Keys of a sample that collate_scenes stacks into one tensor (the others stay lists).
TENSOR_KEYS = ("videos", "pseudo_videos", "depth_ranges", "tracks_world", "anchors_uv", "anchor_visible",
               "intrinsics", "world_T_cam", "labels")


def find_scenes(root: str | Path) -> list[Path]:
    """Scene directories (holding ``scene.json``) under ``root``, sorted; hidden folders (partial writes) skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a directory")
    found = []
    for info in root.rglob("scene.json"):
        rel = info.parent.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts):
            found.append(info.parent)
    return sorted(found)


def scene_split(directory: Path) -> str | None:
    """The split of a scene directory: ``meta["split"]``, else its parent folder's name, else None."""
    meta = json.loads((directory / "scene.json").read_text()).get("meta", {})
    if meta.get("split") is not None:
        return str(meta["split"])
    return directory.parent.name if directory.parent.name in SPLITS else None


def check_num_frames(num_frames: int | None) -> None:
    """ValueError unless ``num_frames`` is None or ``4n + 1`` within ``limits.MAX_FRAMES`` (``limits.check_num_frames``)."""
    if num_frames is not None:
        limits.check_num_frames(num_frames)


def resize_video(video: np.ndarray, height: int, width: int) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, height, width, 3) uint8 with area interpolation (anti-aliased shrinking)."""
    if video.shape[1:3] == (height, width):
        return video
    return np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in video])


class SceneDataset(Dataset):
    """Multi-view training samples from the scenes under ``root`` (module docstring: keys and shapes).

    Args:
        root: directory searched recursively for scene directories.
        split: keep scenes of this split ("train" / "val" / "test"), or None for all. Scenes of
            another split are never returned (held-out "test" scenes stay out of "train").
        num_frames: temporal crop length, 4n+1 (a random window per sample), or None for all frames.
        size: (height, width) to resize to, or None for the scenes' own size.
        fraction: keep this deterministic (``seed``-chosen) share of the scenes, in (0, 1]
            (the paper's warm-up uses 10 %).
        seed: seed of the subset and of the per-sample randomness.
        views: "cluster" (one random camera per left / center / right cluster) or "all".
        num_views: keep this many of the selected views (a random subset, order kept), or None.
        cache_size: decoded scenes kept in memory (least recently used evicted); 0 disables.
        preload: decode every scene up front (needs memory for all; worker processes inherit it).
        cache: an LRU mapping (scene directory -> Scene) to share with other datasets over the same
            files, e.g. one dataset per training stage; default: a private one.
    """

    def __init__(self, root: str | Path, split: str | None = "train", num_frames: int | None = None,
                 size: tuple[int, int] | None = None, fraction: float = 1.0, seed: int = 0,
                 views: str = "cluster", num_views: int | None = None, cache_size: int = 64,
                 preload: bool = False, cache: OrderedDict[str, Scene] | None = None):
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if views not in VIEW_MODES:
            raise ValueError(f"views must be one of {VIEW_MODES}, got {views!r}")
        if num_views is not None and num_views < 1:
            raise ValueError(f"num_views must be positive or None, got {num_views}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        check_num_frames(num_frames)
        self.root = Path(root)
        self.split, self.num_frames, self.fraction, self.seed = split, num_frames, fraction, seed
        self.views, self.num_views, self.cache_size = views, num_views, cache_size
        self.size: tuple[int, int] | None = None
        self.set_size(size)
        self.epoch = 0

        scenes = find_scenes(self.root)
        if split is not None:
            splits = {d: scene_split(d) for d in scenes}
            unknown = [str(d) for d, s in splits.items() if s is None]
            if unknown:
                raise ValueError(f"cannot tell the split of {len(unknown)} scene(s) (no meta['split'] and no "
                                 f"train/val/test parent folder), e.g. {unknown[:3]}")
            scenes = [d for d in scenes if splits[d] == split]
        if fraction < 1.0 and scenes:
            keep = max(1, int(round(fraction * len(scenes))))
            chosen = np.random.default_rng(seed).permutation(len(scenes))[:keep]
            scenes = [scenes[i] for i in sorted(chosen)]
        if not scenes:
            raise ValueError(f"no scenes of split {split!r} under {self.root}")
        self.scene_dirs: list[Path] = scenes
        self._cache: OrderedDict[str, Scene] = OrderedDict() if cache is None else cache
        if preload:
            self.cache_size = max(cache_size, len(scenes))
            for i in tqdm(range(len(scenes)), desc="loading scenes", unit="scene", leave=False):
                self.load_scene(i)

    def __len__(self) -> int:
        return len(self.scene_dirs)

    def set_epoch(self, epoch: int) -> None:
        """Select the per-sample randomness of pass ``epoch`` over the data."""
        self.epoch = int(epoch)

    def set_size(self, size: tuple[int, int] | None) -> None:
        """Change the output (height, width) (progressive resolution); None keeps the scenes' size."""
        if size is not None:
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"size must be (height, width) in pixels, got {size!r}")
            size = (int(size[0]), int(size[1]))
        self.size = size

    def load_scene(self, index: int) -> Scene:
        """The decoded scene ``index`` (through the LRU cache); depth maps are not loaded."""
        key = str(self.scene_dirs[index])
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        scene = Scene.load(key, load_depth=False)
        if self.cache_size:
            self._cache[key] = scene
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return scene

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} scenes")
        scene = self.load_scene(index)
        where = self.scene_dirs[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])

        # 1. Views: one per cluster (or all), then an optional random subset.
        picks = one_view_per_cluster(scene.cameras, rng) if self.views == "cluster" else list(range(scene.num_views))
        if self.num_views is not None:
            if self.num_views > len(picks):
                raise ValueError(f"{where}: num_views={self.num_views} but only {len(picks)} views selected")
            picks = sorted(rng.choice(picks, size=self.num_views, replace=False).tolist())

        # 2. Temporal crop to num_frames.
        frames = scene.num_frames if self.num_frames is None else self.num_frames
        if frames > scene.num_frames:
            raise ValueError(f"{where}: num_frames={frames} but the scene has {scene.num_frames} frames")
        start = int(rng.integers(0, scene.num_frames - frames + 1))
        window = slice(start, start + frames)
        tracks = scene.tracks_world[window]                                 # (F, K, 3)

        # 3. Resize videos and cameras.
        height, width = self.size if self.size is not None else scene.image_size
        cameras = [scene.cameras[i].resize(width, height) for i in picks]
        videos = np.stack([resize_video(scene.videos[i, window], height, width) for i in picks])  # (V, F, H, W, 3)

        # 4. Ground truth for Algorithm 1: scale s, anchors and motion pseudo videos at the output size.
        try:
            depth_ranges = depth_range_from_tracks(tracks, cameras)        # (V, 2)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        anchors_uv, visible = anchors_for_views(tracks, cameras)            # (V, K, 2), (V, K)
        pseudo = encode_views(tracks, cameras, depth_ranges, anchors_uv)   # (V, F, H, W, 3)
        intrinsics, world_T_cam = stack_cameras(cameras)
        return {
            "videos": torch.from_numpy(videos).float().div_(255.0),
            "pseudo_videos": torch.from_numpy(pseudo),
            "depth_ranges": torch.from_numpy(depth_ranges),
            "tracks_world": torch.from_numpy(np.ascontiguousarray(tracks, dtype=np.float32)),
            "anchors_uv": torch.from_numpy(anchors_uv),
            "anchor_visible": torch.from_numpy(visible),
            "intrinsics": torch.from_numpy(intrinsics),
            "world_T_cam": torch.from_numpy(world_T_cam),
            "labels": torch.from_numpy(scene.labels.astype(np.int64)),
            "text": scene.text,
            "cameras": cameras,
            "scene_dir": str(where),
        }


def collate_scenes(items: list[dict]) -> dict:
    """Batch samples: tensors stacked to (B, ...), ``text`` / ``cameras`` / ``scene_dir`` kept as lists.

    Raises ValueError naming the scenes when a tensor's shape differs between samples.
    """
    if not items:
        raise ValueError("collate_scenes needs at least one sample")
    batch: dict = {}
    for key in TENSOR_KEYS:
        shapes = [tuple(item[key].shape) for item in items]
        if len(set(shapes)) > 1:
            detail = ", ".join(f"{item['scene_dir']}: {s}" for item, s in zip(items, shapes))
            raise ValueError(f"cannot batch {key!r}: shapes differ ({detail}); use the same size, num_frames "
                             f"and number of tracks for every scene")
        batch[key] = torch.stack([item[key] for item in items])
    for key in ("text", "cameras", "scene_dir"):
        batch[key] = [item[key] for item in items]
    return batch


__all__ = ["SceneDataset", "collate_scenes", "find_scenes", "scene_split", "check_num_frames", "resize_video"]
