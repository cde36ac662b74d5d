"""DPA speed and memory: forward and forward + backward at the paper size and at a tiny size.

Paper size: K = 1600 tracks x F = 49 frames, V = 3 views of coarse tracks (Kc per view).
Tiny size: K = 256, F = 9, V = 3. Peak memory is the process's peak resident set growth while
the measured call runs (CPU) or torch's peak allocated memory (CUDA).

    .venv/bin/python bench/bench_dpa.py [--preset tiny] [--threads 2] [--skip-paper] [--frames 49]
        [--gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from syncmv4d_core.diffusion.flow import add_noise
from syncmv4d_core.diffusion.track_flow import coarse_track_frame, dpa_loss, sample_track_noise
from syncmv4d_core.models.dpa import DPA, preset


def _inputs(b: int, v: int, f: int, k: int, kc: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    tracks = torch.tensor([0.5, 0.0, 0.8]) + 0.1 * torch.randn(b, f, k, 3, generator=g)
    coarse = tracks[:, None, :, :kc] + 0.02 * torch.randn(b, v, f, kc, 3, generator=g)
    mask = torch.rand(b, v, f, kc, generator=g) > 0.1
    centre, scale = coarse_track_frame(coarse, mask)
    noise = sample_track_noise((b, f, k, 3), centre, scale, g)
    t = torch.rand(b, generator=g)
    return [x.to(device) for x in (tracks, coarse, mask, noise, t, scale)]


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MiB (Linux)


def _time(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per call and peak memory (MiB) over ``repeats`` calls after one warm-up."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], _peak_mib(device)


def bench(name: str, model: DPA, b: int, v: int, f: int, k: int, kc: int, repeats: int, device: torch.device) -> None:
    tracks, coarse, mask, noise, t, scale = _inputs(b, v, f, k, kc, device)
    noisy = add_noise(tracks, noise, t)
    points = b * f * (k + v * kc)

    def forward():
        with torch.no_grad():
            model(noisy, coarse, t, mask)

    def forward_backward():
        velocity = model(noisy, coarse, t, mask)
        dpa_loss(velocity, noisy, tracks, noise, t, scale).total.backward()

    base = _peak_mib(device)
    fwd, fwd_mem = _time(forward, repeats, device)
    fb, fb_mem = _time(forward_backward, repeats, device)
    extra = "" if device.type == "cuda" else f" (process peak RSS; before: {base:.0f} MiB)"
    print(f"{name}: B={b} V={v} F={f} K={k} Kc={kc} -> {points} points in the level-0 union")
    print(f"  forward          {fwd * 1e3:9.1f} ms   peak {fwd_mem:8.0f} MiB{extra}")
    print(f"  forward+backward {fb * 1e3:9.1f} ms   peak {fb_mem:8.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="DPA preset (tiny, small, paper)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kc", type=int, default=640, help="coarse tracks per view at the paper size")
    parser.add_argument("--skip-paper", action="store_true", help="only the tiny size")
    parser.add_argument("--frames", type=int, default=49, help="frames at the paper size (49; fewer for a quick look)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute each point block in backward (training at the paper size)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = DPA(preset(args.preset, gradient_checkpointing=args.gradient_checkpointing)).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"DPA preset {args.preset}: {params / 1e6:.2f} M parameters, device {device}, {args.threads} threads, "
          f"gradient checkpointing {args.gradient_checkpointing}")
    bench("tiny", model, 1, 3, 9, 256, 256, args.repeats, device)
    if not args.skip_paper:
        bench("paper size", model, 1, 3, args.frames, 1600, args.kc, max(1, args.repeats - 2), device)


if __name__ == "__main__":
    main()
