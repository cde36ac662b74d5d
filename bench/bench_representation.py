"""Round-trip accuracy and speed of the motion pseudo video (syncmv4d_core/pseudo_video.py).

For procedural scenes (syncmv4d_core/data/synthetic.py; three views, one per camera cluster) the
tracks are encoded into pseudo videos, optionally degraded (Gaussian blur + Gaussian noise, a
stand-in for a VAE round trip), optionally stored as uint8, decoded with the true anchors and
depth ranges, and compared with the ground truth in each view's camera frame.

Scenes are generated at 64x64 (the tracks do not depend on the image size; rendering the RGB
videos at 480x704 would take a minute per scene) and the cameras are resized to each benchmark
resolution with ``Camera.resize``.

Usage:
    .venv/bin/python bench/bench_representation.py [--seeds 2] [--frames 9]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from syncmv4d_core import pseudo_video
from syncmv4d_core.cameras import CLUSTERS, Camera
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene

RESOLUTIONS = ((64, 64), (256, 384), (480, 704))       # (H, W)
POINT_COUNTS = (1600, 800, 400)
DEGRADATION = (0.5, 1.0)                                # blur sigma (px), noise sigma (1/255 units)


def scene_views(seed: int, num_points: int, num_frames: int, height: int, width: int) -> tuple[np.ndarray, list[Camera]]:
    """Tracks (F, K, 3) metres and one camera per cluster resized to ``width x height``."""
    scene = generate_scene(seed, SynthConfig(num_frames=num_frames, num_points=num_points))
    cams = [next(c for c in scene.cameras if c.cluster == cluster) for cluster in CLUSTERS]
    return scene.tracks_world, [c.resize(width, height) for c in cams]


def degrade(videos: np.ndarray, blur: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(V, F, H, W, 3) float -> blurred (Gaussian, sigma ``blur`` px) plus noise (sigma ``noise``/255)."""
    flat = videos.reshape(-1, *videos.shape[2:])
    blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), blur) for frame in flat]).reshape(videos.shape)
    return np.clip(blurred + rng.normal(0.0, noise / 255.0, videos.shape), 0.0, 1.0).astype(np.float32)


def round_trip(tracks: np.ndarray, cams: list[Camera], videos: np.ndarray, ranges: np.ndarray,
               anchors: np.ndarray) -> dict[str, np.ndarray]:
    """Decode all views; per recovered point its relative and absolute error, plus counts."""
    rec, valid = pseudo_video.decode_views(videos, cams, ranges, anchors)
    rel, err, drawable = [], [], 0
    for i, cam in enumerate(cams):
        uv, depth = cam.project(tracks)
        drawable += int((np.isfinite(anchors[i]).all(-1)[None] & cam.in_image(uv, depth)).sum())
        p = cam.to_camera(rec[i][valid[i]].astype(np.float64))
        g = cam.to_camera(tracks[valid[i]].astype(np.float64))
        err.append(np.linalg.norm(p - g, axis=-1))
        rel.append(err[-1] / np.maximum(np.linalg.norm(g, axis=-1), 0.01))
    return {"rel": np.concatenate(rel), "err": np.concatenate(err), "recovered": int(valid.sum()), "drawable": drawable}


def summarise(results: list[dict]) -> str:
    rel = np.concatenate([r["rel"] for r in results])
    err = np.concatenate([r["err"] for r in results])
    recovered = sum(r["recovered"] for r in results) / sum(r["drawable"] for r in results)
    return (f"{100 * rel.mean():8.3f} {100 * (rel < 0.25).mean():8.2f} {100 * (rel < 0.05).mean():8.2f} "
            f"{recovered:9.3f} {1000 * np.median(err):8.2f}")


def accuracy(seeds: int, num_frames: int) -> None:
    print("round trip (3 views, %d frames, %d seeds): mean rel err %%, PI@0.25 %%, PI@0.05 %%, recovered, median mm"
          % (num_frames, seeds))
    print(f"{'H x W':>9} {'K':>5} {'r':>2} {'storage':>7} {'degraded':>9} {'rel%':>8} {'PI25':>8} {'PI05':>8} "
          f"{'recovered':>9} {'med mm':>8}")
    rng = np.random.default_rng(0)
    for height, width in RESOLUTIONS:
        radii = (pseudo_video.default_radius(height, width),) if (height, width) != (480, 704) else (1, 2)
        for num_points in POINT_COUNTS:
            for radius in radii:
                rows: dict[tuple[str, str], list[dict]] = {}
                for seed in range(seeds):
                    tracks, cams = scene_views(seed, num_points, num_frames, height, width)
                    ranges = pseudo_video.depth_range_from_tracks(tracks, cams)
                    anchors, _ = pseudo_video.anchors_for_views(tracks, cams)
                    clean = pseudo_video.encode_views(tracks, cams, ranges, radius=radius)
                    for degraded, videos in (("no", clean), ("blur+noise", degrade(clean, *DEGRADATION, rng))):
                        for storage, stored in (("float", videos), ("uint8", pseudo_video.to_uint8(videos))):
                            rows.setdefault((storage, degraded), []).append(round_trip(tracks, cams, stored, ranges, anchors))
                for (storage, degraded), results in rows.items():
                    print(f"{height:4d}x{width:<4d} {num_points:5d} {radius:2d} {storage:>7} {degraded:>9} {summarise(results)}")


def timing(repeats: int) -> None:
    print("\nspeed at 480x704, 3 views, K = 1600 (median of %d runs, ms)" % repeats)
    print(f"{'frames':>6} {'encode_views':>12} {'decode_views float':>18} {'decode_views uint8':>18}")
    for num_frames in (9, 49):
        tracks, cams = scene_views(0, 1600, num_frames, 480, 704)
        ranges = pseudo_video.depth_range_from_tracks(tracks, cams)
        anchors, _ = pseudo_video.anchors_for_views(tracks, cams)
        times = {"enc": [], "dec": [], "dec8": []}
        for _ in range(repeats):
            start = time.perf_counter()
            videos = pseudo_video.encode_views(tracks, cams, ranges)
            times["enc"].append(time.perf_counter() - start)
            stored = pseudo_video.to_uint8(videos)
            start = time.perf_counter()
            pseudo_video.decode_views(videos, cams, ranges, anchors)
            times["dec"].append(time.perf_counter() - start)
            start = time.perf_counter()
            pseudo_video.decode_views(stored, cams, ranges, anchors)
            times["dec8"].append(time.perf_counter() - start)
        med = {k: 1000 * np.median(v) for k, v in times.items()}
        print(f"{num_frames:6d} {med['enc']:12.1f} {med['dec']:18.1f} {med['dec8']:18.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="synthetic scenes per configuration")
    parser.add_argument("--frames", type=int, default=9, help="frames per scene (4n + 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats")
    args = parser.parse_args()
    accuracy(args.seeds, args.frames)
    timing(args.repeats)


if __name__ == "__main__":
    main()
