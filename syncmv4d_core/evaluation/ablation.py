"""The paper's Tab. 3 ablation on a held-out split, with two reference rows.

Rows (each a directory of predicted scenes named like the ground-truth scenes):

* ``full``: SyncMV4D (MJD + DPA + closed loop).
* ``no cycle``: DPA runs alongside MJD but never guides it.
* ``no DPA``: the per-view decoded tracks are fused without the aligner.
* ``single-view``: each view generated on its own (no inter-view attention).
* ``MV video only``: a separately trained MJD without the motion stream (``mjd.motion = false``;
  only its video metrics exist), when its checkpoint is given.
* ``static (ref.)``: the ground-truth frame-0 points held still for all frames.
* ``GT enc/dec (ref.)``: the ground-truth tracks rendered into 8-bit pseudo videos, passed through
  the latent codec and decoded again with the ground-truth depth ranges: the floor the motion
  representation sets.

Every ground-truth scene is cut to one view per camera cluster (the same views for all rows) and
saved under ``out/gt``; generation uses those views' frame-0 images, cameras and text.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import pseudo_video
from ..data.dataset import find_scenes
from ..fileio import atomic_write_json, atomic_write_text
from ..limits import check_guidance, check_int, check_steps
from ..cameras import one_view_per_cluster
from ..pipeline import SyncMV4DPipeline, fuse_coarse_tracks
from ..scene import Scene
from .evaluate import json_ready, ablation_table, evaluate_dirs

logger = logging.getLogger(__name__)

SETTINGS = {
    "full": {},
    "no cycle": {"cycle": False},
    "no DPA": {"use_dpa": False},
    "single-view": {"single_view": True},
}
VIDEO_ONLY = "MV video only"


def static_baseline(gt: Scene) -> Scene:
    """The ground-truth frame-0 points held still (index identity with the ground truth)."""
    still = np.broadcast_to(gt.tracks_world[:1], gt.tracks_world.shape).copy()
    return Scene(gt.cameras, gt.videos, still, gt.labels, gt.text, gt.fps, meta={"reference": "static"})


def codec_round_trip(gt: Scene, pipe: SyncMV4DPipeline) -> Scene:
    """Ground-truth tracks -> 8-bit pseudo videos -> codec encode/decode -> decoded, fused tracks."""
    ranges = pseudo_video.depth_range_from_tracks(gt.tracks_world, gt.cameras)
    pseudo = pseudo_video.to_uint8(pseudo_video.encode_views(gt.tracks_world, gt.cameras, ranges))
    with torch.no_grad():
        x = torch.from_numpy(pseudo.astype(np.float32) / 255.0)[None]
        decoded = pipe.model.decode_latents(pipe.model.encode_videos(x))[0].numpy()
    anchors, _ = pseudo_video.anchors_for_views(gt.tracks_world, gt.cameras)
    per_view, valid = pseudo_video.decode_views(decoded, gt.cameras, ranges, anchors)
    fused, source = fuse_coarse_tracks(np.nan_to_num(per_view), valid, gt.num_points)
    ids = np.concatenate([source[:, :1], anchors[source[:, 0], source[:, 1]]], axis=1).astype(np.float32)
    return Scene(gt.cameras, gt.videos, fused, gt.labels[source[:, 1]], gt.text, gt.fps,
                 pseudo_videos=pseudo_video.to_uint8(decoded), depth_ranges=ranges, track_anchors=ids,
                 meta={"reference": "codec round trip"})


def run_ablation(checkpoint: str | Path | None, scene_root: str | Path, out_dir: str | Path, num_scenes: int = 12,
                 num_steps: int = 20, guidance_scale: float = 3.0, seed: int = 0,
                 video_only_checkpoint: str | Path | None = None, rows: list[str] | None = None) -> dict:
    """Generate every row for the first ``num_scenes`` scenes of ``scene_root`` and evaluate them.

    ``rows``: the generated rows to run (names of ``SETTINGS``; None: all), e.g. ``["full"]`` to
    score one checkpoint (a pilot) against the reference rows.

    Generated scenes already in ``out_dir`` are kept (an interrupted run continues; a row added
    later, e.g. the video-only model, is generated alone).

    Writes ``out_dir/<row>/<scene>/`` scenes, ``out_dir/results.json`` and ``out_dir/results.md``.
    Returns {row name: aggregated result}.
    """
    out_dir = Path(out_dir)
    check_int(num_scenes, "num_scenes", 1, 100_000)  # every argument before anything is written
    check_steps(num_steps)
    check_guidance(guidance_scale)
    unknown = sorted(set(rows or ()) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; choose from {list(SETTINGS)}")
    settings = {row: SETTINGS[row] for row in (rows or SETTINGS)}
    scenes = find_scenes(scene_root)[:num_scenes]
    if not scenes:
        raise ValueError(f"no scenes under {scene_root}")
    pipe = SyncMV4DPipeline.from_checkpoint(checkpoint)
    video_only = None if video_only_checkpoint is None else SyncMV4DPipeline.from_checkpoint(video_only_checkpoint)
    if video_only is not None and video_only.model.mjd.config.motion:
        raise ValueError(f"{video_only_checkpoint} is not a video-only model (its MJD has the motion stream)")
    rng = np.random.default_rng(seed)
    for directory in tqdm(scenes, desc="ablation", unit="scene"):
        gt = Scene.load(directory)
        gt = gt.select_views(one_view_per_cluster(gt.cameras, rng))
        name = directory.name
        images = [video[0] for video in gt.videos]
        pipe.check_inputs(images, gt.cameras, gt.text, gt.num_frames, num_steps)  # before writing gt/
        gt.save(out_dir / "gt" / name)
        runs = [(row, pipe, switches) for row, switches in settings.items()]
        runs += [(VIDEO_ONLY, video_only, {})] if video_only is not None else []
        for row, generator, switches in runs:
            if (out_dir / row / name / "scene.json").is_file():  # kept from an earlier (interrupted) run
                continue
            result = generator(images, gt.cameras, gt.text, num_frames=gt.num_frames, num_steps=num_steps,
                               guidance_scale=guidance_scale, seed=seed, **switches)
            result.save(out_dir / row / name)
        static_baseline(gt).save(out_dir / "static (ref.)" / name)
        codec_round_trip(gt, pipe).save(out_dir / "GT enc-dec (ref.)" / name)
    names = [*settings, *([VIDEO_ONLY] if video_only is not None else []), "static (ref.)", "GT enc-dec (ref.)"]
    rows = {row: evaluate_dirs(out_dir / row, out_dir / "gt") for row in names}
    atomic_write_json(out_dir / "results.json", json_ready(rows))
    atomic_write_text(out_dir / "results.md", ablation_table(rows) + "\n")
    return rows
