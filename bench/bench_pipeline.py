"""Closed-loop cost per denoising step: MJD step vs. decode + DPA + re-encode (tiny preset).

    python bench/bench_pipeline.py [--checkpoint DIR] [--steps 20] [--threads 1]

Generates one held-out synthetic scene (3 views, 9 frames, 64x64) with the given checkpoint
(default: the built-in tiny model; a trained model matters: with random weights no coarse track
is ever decoded and DPA never runs) and times each part of every step with wall-clock timers
around the pipeline's own functions.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

import syncmv4d_core.pipeline as pipeline_module
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.pipeline import SyncMV4DPipeline

TIMES: dict[str, list[float]] = defaultdict(list)


def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        TIMES[name].append(time.perf_counter() - start)
        return out
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    scene = generate_scene(9001, SynthConfig(num_frames=9, height=64, width=64, num_points=128), split="test")
    views = [0, 4, 8]
    cams, images = [scene.cameras[i] for i in views], [scene.videos[i, 0] for i in views]
    pipe = SyncMV4DPipeline.from_checkpoint(args.checkpoint)
    pipe.model.dpa.forward = timed("DPA forward", pipe.model.dpa.forward)
    for name in ("mjd_denoise_step", "decode_coarse_tracks", "encode_track_guidance"):
        setattr(pipeline_module, name, timed(name, getattr(pipeline_module, name)))

    for label, kwargs in (("closed loop", {}), ("no DPA", {"use_dpa": False})):
        TIMES.clear()
        start = time.perf_counter()
        for _ in range(args.repeats):
            pipe(images, cams, scene.text, num_frames=9, num_steps=args.steps, **kwargs)
        steps_run = len(TIMES["mjd_denoise_step"])  # the model's final_sigma may end sampling early
        total = (time.perf_counter() - start) / steps_run
        per_step = {k: sum(v) / steps_run for k, v in TIMES.items()}
        print(f"\n{label}: {1000 * total:.1f} ms per denoising step (all parts, {args.threads} thread(s), "
              f"{steps_run // args.repeats} steps per run)")
        for name, value in per_step.items():
            print(f"  {name:24s} {1000 * value:7.1f} ms/step  ({len(TIMES[name])} calls)")
        if label == "closed loop":
            mjd = per_step["mjd_denoise_step"]
            loop = sum(per_step.get(k, 0.0) for k in ("decode_coarse_tracks", "DPA forward", "encode_track_guidance"))
            print(f"  closed-loop overhead / MJD step = {loop / mjd:.2f}")


if __name__ == "__main__":
    main()
