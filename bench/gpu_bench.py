"""One sampler step and one gradient-checkpointed training step of the wan22-5b model in bf16.

Run through ``bench/gpu.sh`` on a GPU machine with a local Wan2.2-TI2V-5B-Diffusers copy; prints and
writes (``--md``) time and peak memory per part with the GPU's name. On CPU it runs too (any size,
e.g. the CI directory of scripts/make_paper_testdir.py), which is how it was checked here.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from syncmv4d_core.data.dataset import collate_scenes
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.models.syncmv4d import SyncMV4DModel
from syncmv4d_core.pipeline import SyncMV4DPipeline
from syncmv4d_core.training.objectives import compute_loss, stage_parameters


def _peak(device: torch.device) -> float:
    """GiB: torch's peak allocation since ``_reset`` (CUDA), else the process's peak resident set so far
    (CPU: it never falls, so the training step's figure includes whatever the sampler step held)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB (Linux)


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _sample(scene, frames: int, height: int, width: int) -> dict:
    """The dataset's training sample of ``scene`` (written to a temporary scene directory)."""
    import tempfile

    from syncmv4d_core.data.dataset import SceneDataset

    root = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    scene.save(root / "scene_00000")
    dataset = SceneDataset(root, num_frames=frames, seed=0)
    dataset.set_size((height, width))
    return dataset[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wan-dir", required=True)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=704)
    parser.add_argument("--tracks", type=int, default=1600)
    parser.add_argument("--dpa", default="paper")
    parser.add_argument("--offload", action="store_true", help="model CPU offload for the sampler step")
    parser.add_argument("--md", default=None, help="append a markdown table row here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    config = {"wan_dir": args.wan_dir, "codec": {"kind": "wan", "slicing": True, "tiling": True},
              "text": {"kind": "umt5", "dtype": "bfloat16"}, "dpa": {"preset": args.dpa}, "num_tracks": args.tracks}
    results = {"gpu": name, "frames": args.frames, "size": f"{args.height}x{args.width}", "views": 3}

    # 1. One sampler step (bf16 MJD + umT5, float32 VAE with slicing/tiling, closed loop included)
    t0 = time.perf_counter()
    model = SyncMV4DModel(config).eval()
    results["load_s"] = round(time.perf_counter() - t0, 1)
    pipe = SyncMV4DPipeline(model if args.offload else model.to(device), dtype="bfloat16",
                            cpu_offload=device if args.offload else None)
    scene = generate_scene(0, SynthConfig(num_frames=args.frames, height=args.height, width=args.width,
                                          num_points=max(args.tracks, 256)))
    refs = [scene.videos[v, 0] for v in range(3)]
    _reset(device)
    t0 = time.perf_counter()
    pipe(refs, scene.cameras[:3], scene.text, num_frames=args.frames, num_steps=1)
    results["sampler_step_s"] = round(time.perf_counter() - t0, 2)  # incl. text, ref encode, final decodes
    results["sampler_peak_gib"] = round(_peak(device), 2)

    # 2. One training step (joint, bf16 autocast, gradient checkpointing), AdamW over MJD + DPA
    checkpointed = {"mjd": {"gradient_checkpointing": True}, "dpa": {**config["dpa"], "gradient_checkpointing": True}}
    model = SyncMV4DModel.from_config({**config, **checkpointed}).to(device).train()
    params = stage_parameters(model, "joint")
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    batch = collate_scenes([_sample(scene, args.frames, args.height, args.width)])
    _reset(device)
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = compute_loss(model, batch, "joint", torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    optimizer.step()
    results["train_step_s"] = round(time.perf_counter() - t0, 2)
    results["train_peak_gib"] = round(_peak(device), 2)
    print(json.dumps(results))
    if args.md:
        with Path(args.md).open("a") as f:
            f.write("| " + " | ".join(str(results[k]) for k in ("gpu", "views", "frames", "size", "load_s",
                                                                  "sampler_step_s", "sampler_peak_gib",
                                                                  "train_step_s", "train_peak_gib")) + " |\n")


if __name__ == "__main__":
    main()
