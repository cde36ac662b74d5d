"""The ``syncmv4d`` command line: ``synth | show | generate | ablate | taco | train | eval``.

Argument definitions live here (argparse only, so ``--help`` is instant); each handler checks
its arguments against ``limits`` before it allocates or writes anything, then imports the
library module that does the work. Any bad input ends the command with a one-line error that
names the value or file and what is expected, and exit status 2 (docs/limits.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import limits
from .limits import (check_float, check_guidance, check_image_size, check_int, check_num_frames, check_points,
                     check_steps, check_text)


META_SPLITS = ("train", "test")  # data.synthetic.SPLITS (not imported here: --help stays instant)


def _synth(args: argparse.Namespace) -> None:
    from .data.synthetic import SynthConfig, write_scenes

    check_int(args.scenes, "--scenes", 1, limits.MAX_SCENES)
    check_num_frames(args.frames, min_frames=5, what="--frames")
    check_image_size(args.height, args.width, "--height/--width")
    check_points(args.points, "--points")
    cfg = SynthConfig(num_frames=args.frames, height=args.height, width=args.width, num_points=args.points)
    write_scenes(args.out, num_scenes=args.scenes, seed=args.seed, config=cfg, progress=True, split=args.split,
                 actions_per_layout=args.actions_per_layout)


def _show(args: argparse.Namespace) -> None:
    from .scene import Scene
    from .visualize import render_preview

    out = render_preview(Scene.load(args.scene), args.out)
    print(out)


def _taco(args: argparse.Namespace) -> None:
    from .data.taco import TacoConfig, convert_taco

    check_num_frames(args.frames, what="--frames")
    check_image_size(args.height, args.width, "--height/--width")
    check_points(args.points, "--points")
    if args.limit is not None:
        check_int(args.limit, "--limit", 1, 10**9)
    cfg = TacoConfig(height=args.height, width=args.width, num_frames=args.frames, num_points=args.points)
    convert_taco(args.root, args.out, mano_dir=args.mano, config=cfg, limit=args.limit, progress=True)


def _eval(args: argparse.Namespace) -> None:
    from .evaluation.evaluate import evaluate_dirs, evaluate_scene, write_tables
    from .scene import Scene

    check_float(args.max_anchor_px, "--max-anchor-px", 0.0, float(limits.MAX_IMAGE_SIDE))
    single, batch = (args.pred, args.gt), (args.pred_root, args.gt_root)
    if all(single) and not any(batch):
        result = evaluate_scene(Scene.load(args.pred, load_depth=False), Scene.load(args.gt, load_depth=False),
                                args.dino, args.clip, args.max_anchor_px)
    elif all(batch) and not any(single):
        result = evaluate_dirs(args.pred_root, args.gt_root, args.dino, args.clip, args.max_anchor_px)
    else:
        raise ValueError("eval needs either --pred and --gt (one scene) or --pred-root and --gt-root (a split)")
    print(write_tables(result, args.json, args.md))


def _read_image(path: str):
    """(H, W, 3) uint8 RGB image from a file (an alpha channel is dropped)."""
    import imageio.v3 as iio

    try:
        shape = iio.improps(path).shape  # the header only: the size is checked before decoding
    except Exception as exc:  # imageio raises several unrelated types for broken files
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    if len(shape) >= 2:
        check_image_size(shape[0], shape[1], f"image {path}")
    try:
        image = iio.imread(path)
    except Exception as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype.name != "uint8":
        raise ValueError(f"{path}: need an 8-bit RGB(A) image, got shape {image.shape} {image.dtype}")
    return image[..., :3]


def _check_device(device: str) -> str:
    """``device`` if torch can use it on this machine; ValueError naming it otherwise."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1): {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: only cpu, cuda and mps are supported")
    return device


def _read_cameras(path: str) -> list:
    """The cameras of a cameras.json (a list, or ``{"cameras": [...]}``); errors name the file."""
    from .cameras import Camera
    from .scene import read_json

    data = read_json(Path(path), "cameras file")
    entries = data.get("cameras") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of cameras (or {{\"cameras\": [...]}}), got {entries!r:.80}")
    if len(entries) > limits.MAX_CAMERAS:
        raise ValueError(f"{path}: {len(entries)} cameras, more than the limit of {limits.MAX_CAMERAS}")
    try:
        if not all(isinstance(e, dict) for e in entries):
            raise ValueError("every camera must be an object with name, K, width, height and a pose")
        return [Camera.from_dict(e) for e in entries]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


GENERATE_OUTPUTS = ("scene", "mp4", "preview.png")  # what write_result puts in --out


def _generate(args: argparse.Namespace) -> None:
    import numpy as np
    from tqdm import tqdm

    from .cameras import one_view_per_cluster
    from .fileio import output_dir
    from .pipeline import SyncMV4DPipeline, write_result
    from .scene import Scene

    # every bound before anything is loaded, allocated or written
    check_steps(args.steps, "--steps")
    check_guidance(args.guidance, "--guidance")
    if args.frames is not None:
        check_num_frames(args.frames, what="--frames")
    if args.text is not None:
        check_text(args.text, "--text")
    _check_device(args.device)
    if args.scene:
        scene = Scene.load(args.scene, load_depth=False)
        if args.views:
            names = args.views.split(",")
            unknown = sorted(set(names) - {c.name for c in scene.cameras})
            if unknown:
                raise ValueError(f"--views names unknown cameras {unknown}; the scene has {[c.name for c in scene.cameras]}")
            picks = [next(i for i, c in enumerate(scene.cameras) if c.name == n) for n in names]
        else:
            picks = one_view_per_cluster(scene.cameras, np.random.default_rng(args.seed))
        cameras = [scene.cameras[i] for i in picks]
        images = [scene.videos[i, 0] for i in picks]
        text = args.text if args.text is not None else scene.text
        frames = args.frames if args.frames is not None else scene.num_frames
    else:
        if not (args.refs and args.cameras and args.text):
            raise ValueError("give --scene SCENE_DIR, or --refs IMG... with --cameras cameras.json and --text")
        cameras = _read_cameras(args.cameras)
        if len(args.refs) != len(cameras):
            raise ValueError(f"--refs gives {len(args.refs)} images for the {len(cameras)} cameras of {args.cameras} "
                             "(one per camera, 'none' for a missing view)")
        images = [None if r == "none" else _read_image(r) for r in args.refs]
        text, frames = args.text, args.frames if args.frames is not None else 9
    check_num_frames(frames, what="--frames")
    for cam in cameras:
        check_image_size(cam.height, cam.width, f"camera {cam.name!r}")
    with output_dir(args.out, overwrite=args.overwrite, known=GENERATE_OUTPUTS) as staging:
        result = _run_pipeline(SyncMV4DPipeline.from_checkpoint(args.checkpoint, args.device), args, images,
                               cameras, text, frames, tqdm)
        write_result(result, staging)
    print(args.out)


def _run_pipeline(pipe, args, images, cameras, text, frames, tqdm):
    with tqdm(total=args.steps, desc="generate", unit="step") as bar:
        def progress(step: int, total: int) -> None:
            bar.total = total
            bar.update(step - bar.n)

        result = pipe(images, cameras, text, num_frames=frames, num_steps=args.steps, guidance_scale=args.guidance,
                      seed=args.seed, callback=progress, use_dpa=not args.no_dpa, cycle=not args.no_cycle,
                      single_view=args.single_view)
    return result


def _train(args: argparse.Namespace) -> None:
    from .training.config import load_config
    from .training.train import train

    overrides = list(args.set) + ([f"out_dir={args.out}"] if args.out else [])
    final = train(load_config(args.config, overrides), resume=args.resume)
    print(final)


def _ablate(args: argparse.Namespace) -> None:
    from .evaluation.ablation import run_ablation

    # checked here, before run_ablation writes the ground-truth copies
    check_int(args.num_scenes, "--num-scenes", 1, 100_000)
    check_steps(args.steps, "--steps")
    check_guidance(args.guidance, "--guidance")
    run_ablation(args.checkpoint, args.scenes, args.out, num_scenes=args.num_scenes, num_steps=args.steps,
                 guidance_scale=args.guidance, seed=args.seed, video_only_checkpoint=args.video_only_checkpoint,
                 rows=args.rows)
    print((Path(args.out) / "results.md").read_text())


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
    p.add_argument("--split", choices=META_SPLITS, help="only triplets of this split (test = held-out objects/actions)")
    p.add_argument("--actions-per-layout", type=int, default=1,
                   help="act each layout out with up to this many actions on the same tool, as consecutive scenes "
                        "(groups that differ only in the task text)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("show", help="contact sheet of a scene's views over time with tracks + a 3D track plot")
    p.add_argument("scene", help="scene directory")
    p.add_argument("--out", default="preview.png", help="output PNG")
    p.set_defaults(func=_show)

    p = sub.add_parser("generate", help="generate multi-view HOI videos + metric 4D tracks from reference images and a text")
    p.add_argument("--scene", help="scene directory: use its frame-0 images, cameras and text")
    p.add_argument("--views", help="comma-separated camera names of --scene (default: one per cluster)")
    p.add_argument("--refs", nargs="+", help="reference images (PNG/JPG), one per camera; 'none' for a missing view")
    p.add_argument("--cameras", help="cameras.json: a list of cameras (K, world_T_cam or xyz + quat_wxyz, width, height)")
    p.add_argument("--text", help="task text (default with --scene: the scene's)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--checkpoint", help="checkpoint directory (default: the built-in tiny model)")
    p.add_argument("--frames", type=int, help=f"frames to generate, 4n+1 <= {limits.MAX_FRAMES} (default: the scene's, else 9)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps")
    p.add_argument("--guidance", type=float, default=3.0, help="text classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--no-dpa", action="store_true", help="ablation: fuse MJD's decoded tracks without DPA")
    p.add_argument("--no-cycle", action="store_true", help="ablation: DPA does not guide MJD")
    p.add_argument("--single-view", action="store_true", help="ablation: generate each view on its own")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out written by generate (default: refuse a non-empty --out)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("ablate", help="the Tab. 3 ablation (full, no cycle, no DPA, single-view + reference rows)")
    p.add_argument("--scenes", required=True, help="held-out ground-truth scenes (e.g. data/synth-tiny/test)")
    p.add_argument("--out", required=True, help="output directory (rows, gt, results.md/json)")
    p.add_argument("--checkpoint", help="checkpoint directory (default: the built-in tiny model)")
    p.add_argument("--video-only-checkpoint", help="a video-only model (mjd.motion false) for the MV video only row")
    p.add_argument("--num-scenes", type=int, default=12, help="evaluate the first N scenes")
    p.add_argument("--steps", type=int, default=20, help="denoising steps")
    p.add_argument("--guidance", type=float, default=3.0, help="text classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0, help="view sampling and generation seed")
    p.add_argument("--rows", nargs="+", help="only these generated rows (e.g. full), plus the reference rows")
    p.set_defaults(func=_ablate)

    def _action_classifier(args: argparse.Namespace) -> None:
        from .evaluation.action_classifier import format_report, run_cli

        print(format_report(run_cli(args.train, args.out, args.val, args.test, args.split, args.steps, args.seed)))

    p = sub.add_parser("action-classifier", help="train / evaluate the action classifier on ground-truth 4D tracks")
    p.add_argument("--train", help="ground-truth scenes to train on (syncmv4d synth output)")
    p.add_argument("--out", help="weights directory (evaluation default: the shipped weights)")
    p.add_argument("--val", help="scenes to report validation accuracy on after training")
    p.add_argument("--test", action="append", default=[], help="scenes to report accuracy and confusion on (repeatable)")
    p.add_argument("--split", choices=META_SPLITS, help="train only on scenes of this meta split")
    p.add_argument("--steps", type=int, default=1500, help="training steps")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.set_defaults(func=_action_classifier)

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

    p = sub.add_parser("train", help="train SyncMV4D in stages (works under `accelerate launch`)")
    p.add_argument("--config", required=True, help="training config YAML, e.g. config/train/tiny.yaml")
    p.add_argument("--resume", action="store_true", help="continue exactly from <out>/checkpoints/latest")
    p.add_argument("--out", default=None, help="output directory (overrides out_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, typed (repeatable): batch_size=2, stages.joint.steps=500")
    p.set_defaults(func=_train)

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
    except (ValueError, OSError) as exc:  # bad input, unreadable / unwritable files, a full disk
        logging.getLogger("syncmv4d").error("%s", one_line(exc))
        return 2
    return 0


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (multi-line messages of imageio / torch are joined with '; ')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
