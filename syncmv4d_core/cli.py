"""The ``syncmv4d`` command line: ``synth | show | taco | eval``.

Argument definitions live here (argparse only, so ``--help`` is instant); each handler imports
the library module that does the work.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _synth(args: argparse.Namespace) -> None:
    from .data.synthetic import SynthConfig, write_scenes

    cfg = SynthConfig(num_frames=args.frames, height=args.height, width=args.width, num_points=args.points)
    write_scenes(args.out, num_scenes=args.scenes, seed=args.seed, config=cfg, progress=True)


def _show(args: argparse.Namespace) -> None:
    from .scene import Scene
    from .visualize import render_preview

    out = render_preview(Scene.load(args.scene), args.out)
    print(out)


def _taco(args: argparse.Namespace) -> None:
    from .data.taco import TacoConfig, convert_taco

    cfg = TacoConfig(height=args.height, width=args.width, num_frames=args.frames, num_points=args.points)
    convert_taco(args.root, args.out, mano_dir=args.mano, config=cfg, limit=args.limit, progress=True)


def _eval(args: argparse.Namespace) -> None:
    from .evaluation.evaluate import evaluate_dirs, evaluate_scene, write_tables
    from .scene import Scene

    single, batch = (args.pred, args.gt), (args.pred_root, args.gt_root)
    if all(single) and not any(batch):
        result = evaluate_scene(Scene.load(args.pred, load_depth=False), Scene.load(args.gt, load_depth=False),
                                args.dino, args.clip, args.max_anchor_px)
    elif all(batch) and not any(single):
        result = evaluate_dirs(args.pred_root, args.gt_root, args.dino, args.clip, args.max_anchor_px)
    else:
        raise ValueError("eval needs either --pred and --gt (one scene) or --pred-root and --gt-root (a split)")
    print(write_tables(result, args.json, args.md))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncmv4d", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write procedural multi-view HOI scenes with exact ground truth")
    p.add_argument("--out", required=True, help="output directory (one sub-directory per scene)")
    p.add_argument("--scenes", type=int, default=10, help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same scenes)")
    p.add_argument("--frames", type=int, default=9, help="frames per scene, 4n+1")
    p.add_argument("--height", type=int, default=64, help="image height in pixels")
    p.add_argument("--width", type=int, default=64, help="image width in pixels")
    p.add_argument("--points", type=int, default=1600, help="tracked surface points K")
    p.set_defaults(func=_synth)

    p = sub.add_parser("show", help="contact sheet of a scene's views over time with tracks + a 3D track plot")
    p.add_argument("scene", help="scene directory")
    p.add_argument("--out", default="preview.png", help="output PNG")
    p.set_defaults(func=_show)

    p = sub.add_parser("taco", help="convert a local TACO download into syncmv4d scenes")
    p.add_argument("--root", required=True, help="TACO root (Allocentric_RGB_Videos/, Hand_Poses/, ...)")
    p.add_argument("--mano", required=True, help="directory with the user's MANO_RIGHT.pkl / MANO_LEFT.pkl")
    p.add_argument("--out", required=True, help="output directory (train/ val/ test/ splits)")
    p.add_argument("--height", type=int, default=480, help="output height, multiple of 32")
    p.add_argument("--width", type=int, default=704, help="output width, multiple of 32")
    p.add_argument("--frames", type=int, default=49, help="frames per clip at 8 fps, 4n+1")
    p.add_argument("--points", type=int, default=1600, help="tracked points K per frame")
    p.add_argument("--limit", type=int, default=None, help="convert at most this many sequences")
    p.set_defaults(func=_taco)

    p = sub.add_parser("eval", help="Tab. 1-2 metrics of generated scenes against ground truth (docs/metrics.md)")
    p.add_argument("--pred", help="predicted scene directory")
    p.add_argument("--gt", help="ground-truth scene directory")
    p.add_argument("--pred-root", help="directory of predicted scenes (batch mode, paired by name)")
    p.add_argument("--gt-root", help="directory of ground-truth scenes (batch mode)")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--md", default=None, help="write the Markdown tables here")
    p.add_argument("--dino", default=None, help="local DINO ViT weights directory (subject consistency)")
    p.add_argument("--clip", default=None, help="local CLIP vision weights directory (CLIP-V)")
    p.add_argument("--max-anchor-px", type=float, default=1.5, help="anchor match radius for track identity, pixels")
    p.set_defaults(func=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        logging.getLogger("syncmv4d").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
