"""DPA alone on the ground truth's own coarse tracks: how precisely does it place its tracks?

    python bench/bench_dpa_alignment.py [--checkpoint DIR] [--scenes data/synth-tiny/val] [--num-scenes 16]

For each scene (one view per cluster), the ground-truth tracks are rendered into 8-bit motion pseudo
videos with their own depth ranges, passed through the model's codec and decoded into per-view
coarse tracks exactly as the closed loop decodes MJD's estimate (``decode_coarse_tracks``): every
coarse point lies on a true surface (the "coarse" row). DPA then generates its K tracks conditioned
on them with the sampling schedule (20 UniPC steps, flow shift 3): from noise, as in the pipeline
("noise"), and, for reference, from the ground truth noised to a lower level of the same schedule
("truth at t"), which shows the noise level below which DPA's denoiser recovers the surface.
Printed per row: Surf@2cm (% of tracks whose frame-0 point is within 2 cm of a true frame-0 point)
and the per-frame Chamfer distance in mm (``evaluation.metrics``), means over the scenes.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from syncmv4d_core import pseudo_video
from syncmv4d_core.cameras import one_view_per_cluster
from syncmv4d_core.data.dataset import find_scenes
from syncmv4d_core.diffusion.closed_loop import decode_coarse_tracks, initial_track_state, refine_tracks
from syncmv4d_core.diffusion.flow import add_noise, euler_step
from syncmv4d_core.diffusion.sampling import make_scheduler
from syncmv4d_core.diffusion.track_flow import coarse_track_frame, sample_track_noise
from syncmv4d_core.evaluation.metrics import chamfer_mm_per_frame, surface_proximity
from syncmv4d_core.models.syncmv4d import SyncMV4DModel
from syncmv4d_core.pipeline import SyncMV4DPipeline
from syncmv4d_core.scene import Scene

NUM_STEPS = 20
START_STEPS = (19, 17, 14, 10)  # "truth at t" rows: the schedule index the generation starts from


@torch.no_grad()
def generate(model: SyncMV4DModel, coarse: torch.Tensor, mask: torch.Tensor, state: torch.Tensor,
             sigmas: torch.Tensor, start: int) -> np.ndarray:
    """DPA's Euler steps from ``state`` at ``sigmas[start]`` to 0 -> (F, K, 3) metres."""
    for i in range(start, NUM_STEPS):
        sigma, sigma_next = sigmas[i].expand(1), sigmas[i + 1].expand(1)
        velocity, refined, _ = refine_tracks(model, state, coarse, mask, sigma)
        state = refined if i + 1 == NUM_STEPS else euler_step(state, velocity, sigma, sigma_next)
    return state[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model directory (default: the built-in tiny model)")
    parser.add_argument("--scenes", default="data/synth-tiny/val")
    parser.add_argument("--num-scenes", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = SyncMV4DPipeline.from_checkpoint(args.checkpoint).model
    schedule = make_scheduler("unipc", 3.0)
    schedule.set_timesteps(NUM_STEPS)
    sigmas = schedule.sigmas.float()
    rows = ["coarse", "noise", *(f"truth at t={float(sigmas[i]):.2f}" for i in START_STEPS)]
    results: dict[str, dict[str, list[float]]] = {row: {"surf": [], "chamfer": []} for row in rows}
    rng = np.random.default_rng(0)  # view choice: the same views as `syncmv4d ablate --seed 0`
    subset_rng = np.random.default_rng(1)  # which true tracks start the "truth at t" rows
    for directory in find_scenes(args.scenes)[: args.num_scenes]:
        scene = Scene.load(directory, load_depth=False)
        scene = scene.select_views(one_view_per_cluster(scene.cameras, rng))
        gt, cams = scene.tracks_world, scene.cameras
        ranges = pseudo_video.depth_range_from_tracks(gt, cams)
        pseudo = pseudo_video.to_uint8(pseudo_video.encode_views(gt, cams, ranges)).astype(np.float32) / 255
        latents = model.encode_videos(torch.from_numpy(pseudo)[None])
        coarse, mask = decode_coarse_tracks(model, latents, torch.from_numpy(ranges)[None], [cams])
        generator = torch.Generator().manual_seed(0)
        shape = (1, scene.num_frames, model.config["num_tracks"], 3)
        outputs = {"noise": generate(model, coarse, mask, initial_track_state(coarse, mask, shape, generator),
                                     sigmas, 0)}
        centre, scale = coarse_track_frame(coarse, mask)
        truth = torch.from_numpy(gt[:, subset_rng.choice(gt.shape[1], shape[2], replace=gt.shape[1] < shape[2])])[None]
        for row, start in zip(rows[2:], START_STEPS):
            noise = sample_track_noise(shape, centre, scale, generator)
            outputs[row] = generate(model, coarse, mask, add_noise(truth, noise, sigmas[start].expand(1)),
                                    sigmas, start)
        points = coarse[0, :, 0][mask[0, :, 0]].numpy()  # every view's valid coarse frame-0 points
        results["coarse"]["surf"].append(100 * surface_proximity(points[None], gt[:1]))
        for row, tracks in outputs.items():
            results[row]["surf"].append(100 * surface_proximity(tracks, gt))
            results[row]["chamfer"].append(chamfer_mm_per_frame(tracks, gt)["chamfer_mm"])
    print(f"{len(results['noise']['surf'])} scenes of {args.scenes}, checkpoint {args.checkpoint or 'built-in'}")
    print("| DPA starts from | Surf@2cm % | Chamfer mm |\n|---|---:|---:|")
    for row, values in results.items():
        chamfer = f"{np.mean(values['chamfer']):.1f}" if values["chamfer"] else "n/a"
        print(f"| {row} | {np.mean(values['surf']):.1f} | {chamfer} |")


if __name__ == "__main__":
    main()
