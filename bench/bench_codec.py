"""Latent codecs for the tiny presets: reconstruction PSNR and the track error through the codec.

    python bench/bench_codec.py [--vae-checkpoint runs/vae-wan-tiny/checkpoints] [--scenes data/synth-tiny/test]

For every held-out scene (one view per cluster), colour videos and 8-bit motion pseudo videos are
encoded and decoded by each codec; the decoded pseudo videos are decoded into tracks with the
ground-truth anchors and depth ranges and compared with the ground truth (camera-frame relative
error, PI@0.05, median error, recovered fraction). "static" is the do-nothing reference: the
frame-0 points held still.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from syncmv4d_core import pseudo_video
from syncmv4d_core.data.dataset import find_scenes
from syncmv4d_core.cameras import one_view_per_cluster
from syncmv4d_core.evaluation.metrics import track_accuracy
from syncmv4d_core.models.codec import PatchifyCodec, codec_to_frames, frames_to_codec
from syncmv4d_core.models.syncmv4d import SyncMV4DModel
from syncmv4d_core.scene import Scene


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@torch.no_grad()
def round_trip(codec, videos: np.ndarray) -> np.ndarray:
    """(V, F, H, W, 3) float [0, 1] through encode + decode."""
    x = frames_to_codec(torch.from_numpy(videos))
    return codec_to_frames(codec.decode(codec.encode(x))).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="data/synth-tiny/test")
    parser.add_argument("--num-scenes", type=int, default=12)
    parser.add_argument("--vae-checkpoint", default=None, help="a checkpoint whose codec is a trained Wan VAE")
    args = parser.parse_args()
    torch.set_num_threads(1)

    codecs = {"patchify (lossless)": PatchifyCodec(spatial=4)}
    if args.vae_checkpoint:
        codecs["Wan VAE (trained)"] = SyncMV4DModel.from_pretrained(args.vae_checkpoint).codec.eval()
    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, list]] = {name: {"psnr_rgb": [], "psnr_motion": [], "acc": [], "recovered": []}
                                        for name in [*codecs, "static"]}
    for directory in find_scenes(args.scenes)[: args.num_scenes]:
        scene = Scene.load(directory, load_depth=False)
        scene = scene.select_views(one_view_per_cluster(scene.cameras, rng))
        cams, gt = scene.cameras, scene.tracks_world
        ranges = pseudo_video.depth_range_from_tracks(gt, cams)
        pseudo = pseudo_video.to_uint8(pseudo_video.encode_views(gt, cams, ranges)).astype(np.float32) / 255
        rgb = scene.videos.astype(np.float32) / 255
        anchors, visible = pseudo_video.anchors_for_views(gt, cams)
        for name, codec in codecs.items():
            rec_rgb, rec_pseudo = round_trip(codec, rgb), round_trip(codec, pseudo)
            per_view, valid = pseudo_video.decode_views(rec_pseudo, cams, ranges, anchors)
            for v, cam in enumerate(cams):
                if valid[v].any():
                    rows[name]["acc"].append(track_accuracy(np.nan_to_num(per_view[v]), gt, [cam], valid[v]))
            rows[name]["psnr_rgb"].append(psnr(rec_rgb, rgb))
            rows[name]["psnr_motion"].append(psnr(rec_pseudo, pseudo))
            rows[name]["recovered"].append(valid.sum() / max(1, (visible[:, None] & np.ones_like(valid)).sum()))
        still = np.broadcast_to(gt[:1], gt.shape)
        rows["static"]["acc"].append(track_accuracy(still, gt, cams))

    print(f"{len(find_scenes(args.scenes)[: args.num_scenes])} held-out scenes, 3 views, 64x64, 9 frames\n")
    print("| codec | PSNR colour dB | PSNR motion dB | track rel. err % | PI@0.05 | median mm | recovered |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        acc = {k: np.mean([a[k] for a in r["acc"]]) for k in ("RPE", "PI@0.05", "median_error_mm")}
        cells = [f"{np.mean(r[k]):.1f}" if r[k] else "-" for k in ("psnr_rgb", "psnr_motion")]
        rec = f"{np.mean(r['recovered']):.2f}" if r["recovered"] else "-"
        print(f"| {name} | {cells[0]} | {cells[1]} | {acc['RPE']:.2f} | {acc['PI@0.05']:.1f} | "
              f"{acc['median_error_mm']:.1f} | {rec} |")


if __name__ == "__main__":
    main()
