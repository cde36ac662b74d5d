"""MJD cost on this machine: forward / forward+backward time and peak memory per preset and view count.

Usage: .venv/bin/python bench/bench_mjd.py [--frames 9] [--size 64] [--repeats 3] [--presets tiny small]

Latents come from the lossless patchify codec (4x2x2), so a 9-frame 64x64 video gives (48, 3, 32, 32)
latents and 3 x 16 x 16 = 768 tokens per view and modality. Each configuration runs in a forked child
so its peak RSS (resource.getrusage) is its own; times are the best of --repeats calls.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

from syncmv4d_core.models.codec import PatchifyCodec
from syncmv4d_core.models.mjd import MJDTransformer, patch_tokens_per_view, preset, wan_reference_model

torch.set_flush_denormal(True)


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(wall s, process CPU s) per call, each the best of ``repeats`` calls after one warm-up.

    On a shared machine the wall time includes waiting for other jobs; the CPU time (summed over
    this process's threads) is the steadier measure of the work itself.
    """
    fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu


def _run(name: str, views: int, latent: tuple[int, int, int], repeats: int, backward: bool,
         changes: dict, queue) -> None:
    torch.manual_seed(0)
    cfg = preset(name, **changes)
    model = MJDTransformer(cfg)
    b = 1
    shape = (b, views, cfg.in_channels, *latent)
    video, motion = torch.randn(shape), torch.randn(shape) if cfg.motion else None
    text = torch.randn(b, 32, cfg.text_dim)
    t = torch.tensor([500.0])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step():
        if backward:
            out = model(video, motion, t, text)
            loss = out.video_velocity.square().mean()
            if out.motion_velocity is not None:
                loss = loss + out.motion_velocity.square().mean() + out.depth_range.square().mean()
            loss.backward()
        else:
            with torch.no_grad():
                model(video, motion, t, text)

    wall, cpu = _timed(step, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((wall, cpu, (peak - base) / 1024, model.num_parameters()))


def measure(name, views, latent, repeats, backward=False, **changes):
    """(wall s, CPU s per call, peak RSS growth in MiB, parameters) in a forked child process."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(name, views, latent, repeats, backward, changes, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--threads", type=int, default=1, help="1 keeps CPU times steady on a shared machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    latent = PatchifyCodec().latent_shape(args.frames, args.size, args.size)
    print(f"threads {torch.get_num_threads()}, video {args.frames} x {args.size}x{args.size} -> latents "
          f"(48, {latent[0]}, {latent[1]}, {latent[2]})")
    for name in args.presets:
        cfg = preset(name)
        tokens = patch_tokens_per_view(cfg, *latent)
        print(f"\n[{name}] d={cfg.inner_dim} layers={cfg.num_layers}; tokens per view: {tokens} video + "
              f"{tokens} motion + {cfg.num_scale_tokens + cfg.num_register_tokens} scale/register")
        print(f"{'V':>3} {'fwd wall ms':>12} {'fwd CPU ms':>11} {'fwd MiB':>8} {'f+b wall ms':>12} "
              f"{'f+b CPU ms':>11} {'f+b MiB':>8} {'params':>10}")
        cpu_fwd = {}
        for views in (1, 3, 6):
            fwd, fwd_cpu, fwd_mem, n = measure(name, views, latent, args.repeats)
            bwd, bwd_cpu, bwd_mem, _ = measure(name, views, latent, args.repeats, backward=True)
            cpu_fwd[views] = fwd_cpu
            print(f"{views:>3} {fwd * 1e3:>12.1f} {fwd_cpu * 1e3:>11.1f} {fwd_mem:>8.0f} {bwd * 1e3:>12.1f} "
                  f"{bwd_cpu * 1e3:>11.1f} {bwd_mem:>8.0f} {n:>10,}")
        _, no_view, _, _ = measure(name, 3, latent, args.repeats, inter_view=False)
        _, video_only, _, _ = measure(name, 3, latent, args.repeats, motion=False)
        print(f"CPU ms: joint 3-view forward {cpu_fwd[3] * 1e3:.1f} vs 3 sequential single-view forwards "
              f"{3 * cpu_fwd[1] * 1e3:.1f}")
        print(f"inter-view attention share of the 3-view forward (CPU time with vs without it): "
              f"{max(0.0, 1 - no_view / cpu_fwd[3]):.1%}; video-only (motion=False) 3-view forward "
              f"{video_only * 1e3:.1f} CPU ms")
    cfg = preset("wan22-5b")
    with torch.device("meta"):
        n_mjd = MJDTransformer(cfg).num_parameters()
        n_wan = wan_reference_model(cfg).num_parameters()
    print(f"\n[wan22-5b on meta] Wan2.2 transformer {n_wan / 1e9:.3f} B parameters; MJD {n_mjd / 1e9:.3f} B "
          f"(+{(n_mjd - n_wan) / 1e9:.3f} B new); tokens per view at 49 x 480x704: "
          f"{patch_tokens_per_view(cfg, 13, 30, 44)} per modality")


if __name__ == "__main__":
    main()
