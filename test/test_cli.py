"""The command line on hostile and broken input: one-line errors that name the value or file,
exit status 2, nothing written outside --out, no partial outputs, --out locked / not replaced
without --overwrite. Generation itself is replaced by a fake pipeline (the real one is covered by
test_pipeline.py; ``test_generate_end_to_end`` runs it once, marked slow)."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from syncmv4d_core import pipeline as pipeline_module
from syncmv4d_core.cameras import Camera
from syncmv4d_core.cli import main
from syncmv4d_core.scene import Scene

H, W, F = 32, 32, 5


def _cameras(names=("left0", "center0", "right0")) -> list[Camera]:
    return [Camera.look_at(n, [0.8 * np.cos(a), 0.8 * np.sin(a), 0.5], [0, 0, 0], 40.0, W, H, c)
            for n, a, c in zip(names, (-0.8, 0.0, 0.8), ("left", "center", "right"))]


def _scene(cameras=None, frames=F) -> Scene:
    cameras = cameras or _cameras()
    rng = np.random.default_rng(0)
    V = len(cameras)
    return Scene(cameras, rng.integers(0, 256, (V, frames, H, W, 3), dtype=np.uint8),
                 rng.normal(size=(frames, 8, 3)).astype(np.float32), np.zeros(8, np.uint8), "lift the cup",
                 pseudo_videos=rng.integers(0, 256, (V, frames, H, W, 3), dtype=np.uint8))


class FakePipeline:
    """Stands in for SyncMV4DPipeline: returns a fixed scene for the given cameras."""

    calls: list[dict] = []

    @classmethod
    def from_checkpoint(cls, checkpoint=None, device="cpu"):
        return cls()

    def __call__(self, images, cameras, text, num_frames=9, num_steps=20, **kwargs):
        FakePipeline.calls.append(dict(text=text, num_frames=num_frames, num_steps=num_steps, **kwargs))
        return _scene(cameras, num_frames)


@pytest.fixture
def fake(monkeypatch):
    """The fake pipeline, and a stub preview (rendering is test_visualize's business, and slow here)."""
    from syncmv4d_core import visualize

    def preview(scene, out_path, *args, **kwargs):
        Path(out_path).write_bytes(b"png")
        return Path(out_path)

    FakePipeline.calls = []
    monkeypatch.setattr(pipeline_module, "SyncMV4DPipeline", FakePipeline)
    monkeypatch.setattr(visualize, "render_preview", preview)
    return FakePipeline


@pytest.fixture
def scene_dir(tmp_path) -> Path:
    return _scene().save(tmp_path / "in" / "scene")


@pytest.fixture
def rig(tmp_path) -> tuple[Path, list[str]]:
    """A cameras.json and 3 reference PNGs for ``generate --refs ... --cameras``."""
    import imageio.v3 as iio

    cams = _cameras()
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps({"cameras": [c.to_dict() for c in cams]}))
    refs = []
    for c in cams:
        refs.append(str(tmp_path / f"{c.name}.png"))
        iio.imwrite(refs[-1], np.zeros((H, W, 3), np.uint8))
    return path, refs


def run(caplog, *argv) -> tuple[int, str]:
    """(exit status, the error line logged)."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="syncmv4d"):
        rc = main([str(a) for a in argv])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) <= 1
    return rc, errors[0] if errors else ""


def assert_error(caplog, expected: str, *argv) -> str:
    rc, message = run(caplog, *argv)
    assert rc == 2, (argv, rc, message)
    assert expected in message, (expected, message)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------------- security
def test_camera_names_cannot_write_outside_out(tmp_path, rig, fake, caplog):
    cams_path, refs = rig
    data = json.loads(cams_path.read_text())
    data["cameras"][0]["name"] = "../../escape"
    cams_path.write_text(json.dumps(data))
    out = tmp_path / "a" / "b" / "out"
    assert_error(caplog, f"{cams_path}: camera name '../../escape' is not allowed", "generate", "--refs", *refs,
                 "--cameras", cams_path, "--text", "lift the cup", "--out", out)
    assert not list(tmp_path.rglob("escape*")) and not out.exists() and not fake.calls


# ---------------------------------------------------------------------- bounds, checked before anything runs
@pytest.mark.parametrize("extra, expected", [
    (["--frames", "0"], "--frames must be 4n+1 in [1, 121] (e.g. 9, 13, 49), got 0"),
    (["--frames", "4001"], "--frames must be 4n+1 in [1, 121] (e.g. 9, 13, 49), got 4001"),
    (["--frames", "8"], "got 8"),
    (["--steps", "1000000"], "--steps must be in [1, 1000], got 1000000"),
    (["--steps", "0"], "--steps must be in [1, 1000], got 0"),
    (["--guidance", "nan"], "--guidance must be a finite number in [0, 100], got nan"),
    (["--guidance=-inf"], "--guidance must be a finite number in [0, 100], got -inf"),
    (["--text", "x" * 1_000_000], "--text has 1000000 characters, more than the limit of 1000"),
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--device", "tpu-ish"], "--device 'tpu-ish' is not a torch device"),
])
def test_generate_bounds(tmp_path, scene_dir, fake, caplog, extra, expected):
    out = tmp_path / "out"
    assert_error(caplog, expected, "generate", "--scene", scene_dir, "--out", out, *extra)
    assert not out.exists() and not fake.calls


def test_generate_device_without_cuda(tmp_path, scene_dir, fake, caplog, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_error(caplog, "--device cuda: CUDA is not available on this machine (use --device cpu)",
                 "generate", "--scene", scene_dir, "--out", tmp_path / "out", "--device", "cuda")


def test_generate_frames_default_and_explicit(tmp_path, scene_dir, fake, caplog):
    assert run(caplog, "generate", "--scene", scene_dir, "--out", tmp_path / "o1")[0] == 0
    assert run(caplog, "generate", "--scene", scene_dir, "--out", tmp_path / "o2", "--frames", "9")[0] == 0
    assert [c["num_frames"] for c in fake.calls] == [F, 9]


def test_synth_bounds_are_checked_before_allocating(tmp_path, caplog):
    out = tmp_path / "synth"
    assert_error(caplog, "--height/--width: height must be in [1, 1280], got 100000",
                 "synth", "--out", out, "--height", "100000", "--width", "100000")
    assert_error(caplog, "--frames must be 4n+1 in [5, 121]", "synth", "--out", out, "--frames", "4001")
    assert_error(caplog, "--points must be in [1, 65536], got 10000000", "synth", "--out", out, "--points", "10000000")
    assert_error(caplog, "--scenes must be in [1, 1000000], got 0", "synth", "--out", out, "--scenes", "0")
    assert not out.exists()


def test_taco_bounds(tmp_path, caplog):
    assert_error(caplog, "--frames must be 4n+1 in [1, 121]", "taco", "--root", tmp_path, "--mano", tmp_path,
                 "--out", tmp_path / "o", "--frames", "4001")
    assert_error(caplog, "height must be in [1, 1280], got 100000", "taco", "--root", tmp_path, "--mano", tmp_path,
                 "--out", tmp_path / "o", "--height", "100000")
    assert not (tmp_path / "o").exists()


def test_ablate_checks_before_writing_gt(tmp_path, scene_dir, caplog):
    out = tmp_path / "ablation"
    assert_error(caplog, "--steps must be in [1, 1000], got 0", "ablate", "--scenes", scene_dir.parent,
                 "--out", out, "--steps", "0")
    assert_error(caplog, "--guidance must be a finite number", "ablate", "--scenes", scene_dir.parent,
                 "--out", out, "--guidance", "nan")
    assert not out.exists()


# ---------------------------------------------------------------------- broken files
def test_cameras_json_errors_name_the_file(tmp_path, rig, fake, caplog):
    cams_path, refs = rig
    good = cams_path.read_text()
    args = ["generate", "--refs", *refs, "--cameras", cams_path, "--text", "lift", "--out", tmp_path / "out"]
    cams_path.write_text(good[: len(good) // 2])
    assert_error(caplog, f"{cams_path}: invalid JSON", *args)
    cams_path.write_text(json.dumps({"cameras": []}))
    assert_error(caplog, f"{cams_path}: expected a non-empty list of cameras", *args)
    cams_path.write_text(json.dumps([1, 2, 3]))
    assert_error(caplog, f"{cams_path}: every camera must be an object", *args)
    data = json.loads(good)
    data["cameras"][1]["K"] = [[float("nan"), 0, 16], [0, 40, 16], [0, 0, 1]]
    cams_path.write_text(json.dumps(data))
    assert_error(caplog, f"{cams_path}: camera 'center0': K or world_T_cam holds non-finite values", *args)
    data = json.loads(good)
    data["cameras"][1]["width"] = 100000
    cams_path.write_text(json.dumps(data))
    assert_error(caplog, "camera 'center0': width must be in [1, 1280], got 100000", *args)
    cams_path.write_text(good)
    assert_error(caplog, f"--refs gives 2 images for the 3 cameras of {cams_path}",
                 "generate", "--refs", *refs[:2], "--cameras", cams_path, "--text", "lift", "--out", tmp_path / "out")
    Path(refs[1]).write_bytes(b"\x89PNG truncated")
    assert_error(caplog, f"cannot read image {refs[1]}", *args)
    assert not (tmp_path / "out").exists() and not fake.calls


def test_scene_file_errors_name_the_file(tmp_path, scene_dir, fake, caplog):
    info = json.loads((scene_dir / "scene.json").read_text())
    args = ["generate", "--scene", scene_dir, "--out", tmp_path / "out"]
    (scene_dir / "scene.json").write_text(json.dumps({**info, "fps": "fast"}))
    assert_error(caplog, f"{scene_dir / 'scene.json'}: fps must be a number", *args)
    (scene_dir / "scene.json").write_text(json.dumps({**info, "cameras": []}))
    assert_error(caplog, f"{scene_dir / 'scene.json'}: 'cameras' must be a non-empty list", *args)
    (scene_dir / "scene.json").write_text(json.dumps({**info, "text": "x" * 1_000_000}))
    assert_error(caplog, "text has 1000000 characters", "show", scene_dir, "--out", tmp_path / "p.png")
    (scene_dir / "scene.json").write_text(json.dumps(info))
    (scene_dir / "tracks.npz").write_bytes(b"")
    assert_error(caplog, f"cannot read {scene_dir / 'tracks.npz'}", *args)
    assert not (tmp_path / "out").exists() and not (tmp_path / "p.png").exists() and not fake.calls


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, scene_dir, fake, caplog, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.mp4"))

    from syncmv4d_core import scene as scene_module

    monkeypatch.setattr(scene_module, "write_preview_video", full)
    out = tmp_path / "out"
    assert_error(caplog, "No space left on device", "generate", "--scene", scene_dir, "--out", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# ---------------------------------------------------------------------- the output folder
def test_failing_run_leaves_no_outputs(tmp_path, scene_dir, fake, caplog, monkeypatch):
    def half_written(scene, out_dir):
        scene.save(Path(out_dir) / "scene")
        raise ValueError("no track was decoded")

    monkeypatch.setattr(pipeline_module, "write_result", half_written)
    assert_error(caplog, "no track was decoded", "generate", "--scene", scene_dir, "--out", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_non_empty_out_needs_overwrite(tmp_path, scene_dir, fake, caplog):
    out = tmp_path / "out"
    assert run(caplog, "generate", "--scene", scene_dir, "--out", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["mp4", "preview.png", "scene"]
    first = (out / "scene" / "scene.json").stat().st_mtime_ns
    assert_error(caplog, f"output folder {out} is not empty: pass --overwrite to replace it",
                 "generate", "--scene", scene_dir, "--out", out)
    assert (out / "scene" / "scene.json").stat().st_mtime_ns == first
    assert run(caplog, "generate", "--scene", scene_dir, "--out", out, "--overwrite", "--frames", "9")[0] == 0
    assert Scene.load(out / "scene").num_frames == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no lock / temp / .old left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    assert_error(caplog, "refusing to overwrite", "generate", "--scene", scene_dir, "--out", tmp_path / "mine",
                 "--overwrite")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "x"


def test_concurrent_run_into_the_same_out_is_refused(tmp_path, scene_dir, fake, caplog):
    out = tmp_path / "out"
    lock = tmp_path / ".out.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another generate run writing to out
    try:
        assert_error(caplog, f"output folder {out} is being written by another run", "generate", "--scene",
                     scene_dir, "--out", out)
    finally:
        os.close(fd)
    assert not out.exists() and not fake.calls
    assert run(caplog, "generate", "--scene", scene_dir, "--out", out)[0] == 0  # free again


def test_output_folder_follows_the_umask(tmp_path, scene_dir, fake, caplog):
    import stat

    old = os.umask(0o027)
    try:
        assert run(caplog, "generate", "--scene", scene_dir, "--out", tmp_path / "out")[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "out" / "scene").stat().st_mode) == 0o750


@pytest.mark.slow
def test_generate_end_to_end(tmp_path, caplog):
    """The real built-in model through the command line (about 40 s on 2 busy cores)."""
    from syncmv4d_core.data.synthetic import SynthConfig, generate_scene

    scene = generate_scene(0, SynthConfig(num_frames=5, height=64, width=64, num_points=64)).save(tmp_path / "s")
    assert run(caplog, "generate", "--scene", scene, "--out", tmp_path / "out", "--steps", "2")[0] == 0
    assert Scene.load(tmp_path / "out" / "scene").num_frames == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s"]
