"""Benchmark of the synthetic scene generator (prints numbers; nothing is asserted).

    .venv/bin/python bench/bench_synth.py [--scenes 100] [--out DIR]

Times (1) generating N scenes of 12 views x 9 frames x 64x64, (2) generating and writing them
with ``write_scenes`` (lossless mp4 per view, tracks, depth), (3) one scene at 256x384 and one
at 480x704.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from syncmv4d_core.data.synthetic import SynthConfig, generate_scene, scene_seed, write_scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--out", default=None, help="where to write (default: a temporary directory, removed after)")
    args = parser.parse_args()
    print(f"CPU cores visible: {os.cpu_count()}")

    cfg = SynthConfig(num_frames=9, height=64, width=64)
    generate_scene(0, cfg)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    for i in range(args.scenes):
        generate_scene(scene_seed(0, i), cfg)
    gen = time.perf_counter() - t0
    print(f"generate {args.scenes} scenes 12x9x64x64: {gen:.1f} s ({1000 * gen / args.scenes:.0f} ms/scene)")

    out = args.out or tempfile.mkdtemp(prefix="bench_synth_")
    try:
        t0 = time.perf_counter()
        write_scenes(out, args.scenes, seed=0, config=cfg)
        total = time.perf_counter() - t0
        print(f"generate + write {args.scenes} scenes 12x9x64x64: {total:.1f} s ({1000 * total / args.scenes:.0f} ms/scene)")
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)

    for h, w in ((256, 384), (480, 704)):
        t0 = time.perf_counter()
        scene = generate_scene(1, SynthConfig(num_frames=9, height=h, width=w))
        print(f"generate 1 scene 12x9x{h}x{w}: {time.perf_counter() - t0:.1f} s ({scene.text!r})")


if __name__ == "__main__":
    main()
