"""Scene on-disk format: bit-exact round trip, atomic saves, clear errors for broken directories."""

from __future__ import annotations

import json

import numpy as np
import pytest

from syncmv4d_core import scene as scene_module
from syncmv4d_core.cameras import Camera
from syncmv4d_core.scene import HAND, TARGET, TOOL, Scene

V, F, H, W, K = 3, 5, 24, 32, 40


def make_scene(seed: int = 0, with_extras: bool = True) -> Scene:
    rng = np.random.default_rng(seed)
    cameras = [Camera.look_at(f"cam{i}", [0.8 * np.cos(a), 0.8 * np.sin(a), 0.5], [0, 0, 0], 40.0, W, H, cluster)
               for i, (a, cluster) in enumerate(zip((-0.8, 0.0, 0.8), ("left", "center", "right")))]
    return Scene(
        cameras=cameras,
        videos=rng.integers(0, 256, (V, F, H, W, 3), dtype=np.uint8),
        tracks_world=rng.normal(size=(F, K, 3)).astype(np.float32),
        labels=rng.choice([HAND, TOOL, TARGET], size=K).astype(np.uint8),
        text="lift the cup",
        fps=8.0,
        depth=rng.uniform(0.3, 1.5, (V, F, H, W)).astype(np.float32) if with_extras else None,
        pseudo_videos=rng.integers(0, 256, (V, F, H, W, 3), dtype=np.uint8) if with_extras else None,
        depth_ranges=np.array([[0.3, 1.2], [0.4, 1.1], [0.5, 1.4]], np.float32) if with_extras else None,
        meta={"seed": seed, "action": "lift", "nested": {"a": [1, 2]}},
    )


@pytest.mark.parametrize("with_extras", [True, False])
def test_round_trip_is_exact(tmp_path, with_extras):
    original = make_scene(1, with_extras)
    out = original.save(tmp_path / "s")
    loaded = Scene.load(out)
    np.testing.assert_array_equal(loaded.videos, original.videos)
    np.testing.assert_array_equal(loaded.tracks_world, original.tracks_world)
    np.testing.assert_array_equal(loaded.labels, original.labels)
    assert loaded.text == original.text and loaded.fps == original.fps and loaded.meta == original.meta
    for a, b in zip(loaded.cameras, original.cameras):
        assert (a.name, a.width, a.height, a.cluster) == (b.name, b.width, b.height, b.cluster)
        np.testing.assert_allclose(a.K, b.K)
        np.testing.assert_allclose(a.world_T_cam, b.world_T_cam)
    if with_extras:
        np.testing.assert_array_equal(loaded.depth, original.depth)
        np.testing.assert_array_equal(loaded.pseudo_videos, original.pseudo_videos)
        np.testing.assert_allclose(loaded.depth_ranges, original.depth_ranges)
        assert Scene.load(out, load_depth=False).depth is None
    else:
        assert loaded.depth is None and loaded.pseudo_videos is None and loaded.depth_ranges is None


def test_save_replaces_existing_scene_and_leaves_no_temporaries(tmp_path):
    make_scene(1).save(tmp_path / "s")
    second = make_scene(2, with_extras=False)
    second.save(tmp_path / "s")
    loaded = Scene.load(tmp_path / "s")
    np.testing.assert_array_equal(loaded.videos, second.videos)
    assert loaded.depth is None and loaded.pseudo_videos is None  # nothing left over from the first scene
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_interrupted_save_keeps_the_old_scene(tmp_path, monkeypatch):
    first = make_scene(1)
    first.save(tmp_path / "s")
    calls = []

    def failing_write(path, frames, fps):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(scene_module, "write_video", failing_write)
    with pytest.raises(OSError, match="disk full"):
        make_scene(2).save(tmp_path / "s")
    assert len(calls) == 2
    monkeypatch.undo()
    loaded = Scene.load(tmp_path / "s")
    np.testing.assert_array_equal(loaded.videos, first.videos)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    # a fresh directory is not created at all by a failed save
    monkeypatch.setattr(scene_module, "write_video", failing_write)
    calls.clear()
    with pytest.raises(OSError):
        make_scene(3).save(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_missing_and_broken_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="scene.json"):
        Scene.load(tmp_path / "nothing")
    make_scene(1).save(tmp_path / "s")

    info = json.loads((tmp_path / "s" / "scene.json").read_text())
    (tmp_path / "s" / "scene.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        Scene.load(tmp_path / "s")
    (tmp_path / "s" / "scene.json").write_text(json.dumps({**info, "format": "other/9"}))
    with pytest.raises(ValueError, match="unknown format"):
        Scene.load(tmp_path / "s")
    (tmp_path / "s" / "scene.json").write_text(json.dumps(info))

    (tmp_path / "s" / "videos" / "cam1.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cam1.mp4"):
        Scene.load(tmp_path / "s")
    (tmp_path / "s" / "videos" / "cam1.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="cam1"):
        Scene.load(tmp_path / "s")

    make_scene(1).save(tmp_path / "s")
    (tmp_path / "s" / "tracks.npz").unlink()
    with pytest.raises(FileNotFoundError, match="tracks.npz"):
        Scene.load(tmp_path / "s")


def test_validation_names_the_bad_shape():
    good = make_scene(0, with_extras=False)
    with pytest.raises(ValueError, match="tracks_world"):
        Scene(good.cameras, good.videos, good.tracks_world[:-1], good.labels, "t")
    with pytest.raises(ValueError, match="labels"):
        Scene(good.cameras, good.videos, good.tracks_world, good.labels[:-1], "t")
    with pytest.raises(ValueError, match="videos"):
        Scene(good.cameras, good.videos.astype(np.float32), good.tracks_world, good.labels, "t")
    with pytest.raises(ValueError, match="depth"):
        Scene(good.cameras, good.videos, good.tracks_world, good.labels, "t", depth=np.zeros((V, F, H, W + 1)))
    with pytest.raises(ValueError, match="unique"):
        Scene([good.cameras[0]] * V, good.videos, good.tracks_world, good.labels, "t")
    with pytest.raises(ValueError, match="camera 'cam0'"):
        Scene([good.cameras[0].resize(W * 2, H * 2)] + good.cameras[1:], good.videos, good.tracks_world, good.labels, "t")


def test_select_views_keeps_everything_aligned():
    s = make_scene(4)
    sub = s.select_views([2, 0])
    assert [c.name for c in sub.cameras] == ["cam2", "cam0"]
    np.testing.assert_array_equal(sub.videos[0], s.videos[2])
    np.testing.assert_array_equal(sub.depth[1], s.depth[0])
    np.testing.assert_array_equal(sub.depth_ranges, s.depth_ranges[[2, 0]])
    np.testing.assert_array_equal(sub.tracks_world, s.tracks_world)


# ---------------------------------------------------------------------- kills, umask, hostile files
def _save_killed_at(scene: Scene, directory, point: int) -> bool:
    """Save ``scene`` in a forked child that is killed (``os._exit``, no cleanup) just before its
    ``point``-th file-system operation (mkdir, write, rename, rmtree: a kill inside rmtree deletes
    one file first). True when the save completed before reaching ``point``."""
    import os
    import shutil
    from pathlib import Path

    pid = os.fork()
    if pid == 0:  # child
        try:
            count = [0]

            def wrap(func, partial_rmtree=False):
                def wrapper(*args, **kwargs):
                    count[0] += 1
                    if count[0] == point:
                        if partial_rmtree:
                            files = sorted(p for p in Path(args[0]).rglob("*") if p.is_file())
                            if files:
                                files[0].unlink()
                        os._exit(137)
                    return func(*args, **kwargs)
                return wrapper

            os.rename, os.mkdir = wrap(os.rename), wrap(os.mkdir)
            shutil.rmtree = wrap(shutil.rmtree, partial_rmtree=True)
            scene_module.write_video = wrap(scene_module.write_video)
            np.savez_compressed = wrap(np.savez_compressed)
            Path.write_text, Path.mkdir = wrap(Path.write_text), wrap(Path.mkdir)
            scene.save(directory)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 137), f"child failed at point {point} (exit {code})"
    return code == 0


@pytest.mark.parametrize("existing", [True, False])
def test_save_killed_at_every_point_is_recoverable(tmp_path, existing):
    """Kill a save before each of its file-system operations: ``load`` then gives the old or the
    new scene (never an error when an old one existed), and a later save repairs the folder and
    leaves no temporaries (the killed process's temp folder and ``.s.old`` are removed)."""
    first, second, third = (make_scene(seed, False).select_views([0]) for seed in (1, 2, 3))  # one video: fast
    point = 0
    while True:
        point += 1
        base = tmp_path / f"p{point}"
        if existing:
            first.save(base / "s")
        if _save_killed_at(second, base / "s", point):
            break
        if existing or (base / "s").exists():
            loaded = Scene.load(base / "s")
            assert any(np.array_equal(loaded.videos, s.videos) for s in (first, second)), point
        else:
            with pytest.raises(FileNotFoundError):
                Scene.load(base / "s")
        third.save(base / "s")
        np.testing.assert_array_equal(Scene.load(base / "s").videos, third.videos)
        assert sorted(p.name for p in base.iterdir()) == ["s"], (point, sorted(p.name for p in base.iterdir()))
    assert point > 6  # every operation of a save was a kill point (mkdirs, json, video, npz, renames, rmtree)
    np.testing.assert_array_equal(Scene.load(base / "s").videos, second.videos)


def test_save_killed_between_the_renames_then_saved_again(tmp_path):
    """The reported failure: only ``.s.old`` is left; the next save used to fail with Errno 39."""
    import os

    make_scene(1, False).save(tmp_path / "s")
    os.rename(tmp_path / "s", tmp_path / ".s.old")
    make_scene(2, False).save(tmp_path / "s")
    make_scene(3, False).save(tmp_path / "s")
    np.testing.assert_array_equal(Scene.load(tmp_path / "s").videos, make_scene(3, False).videos)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_scene_folders_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = make_scene(1, False).save(tmp_path / "s")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "videos").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "tracks.npz").stat().st_mode) == 0o644


def test_disk_full_names_the_scene_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(OSError, match=r"cannot save scene .*/new: .*No space left on device"):
        make_scene(1, False).save(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def _rewrite_info(path, **changes):
    info = json.loads((path / "scene.json").read_text())
    info.update(changes)
    (path / "scene.json").write_text(json.dumps(info))


def test_hostile_scene_files_get_one_line_errors_naming_the_file(tmp_path):
    good = make_scene(1, False)
    s = good.save(tmp_path / "s")
    info = json.loads((s / "scene.json").read_text())
    cases = [
        (dict(fps="fast"), r"scene.json: fps must be a .*got 'fast'"),
        (dict(fps=float("nan")), r"scene.json: fps must be a finite"),
        (dict(cameras=[]), r"scene.json: 'cameras' must be a non-empty list"),
        (dict(text="x" * 1_000_000), r"scene.json: text has 1000000 characters, more than the limit of 1000"),
        (dict(cameras=[{**info["cameras"][0], "name": "../../escape"}]), r"scene.json: camera name '\.\./\.\./escape'"),
    ]
    for change, message in cases:
        _rewrite_info(s, **change)
        with pytest.raises(ValueError, match=message):
            Scene.load(s)
        (s / "scene.json").write_text(json.dumps(info))
    text = (s / "scene.json").read_text()
    (s / "scene.json").write_text(text[: len(text) // 2])  # truncated JSON
    with pytest.raises(ValueError, match=r"scene.json: invalid JSON"):
        Scene.load(s)
    (s / "scene.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"scene.json: invalid JSON"):
        Scene.load(s)
    (s / "scene.json").write_text(json.dumps(info))
    (s / "tracks.npz").write_bytes(b"")  # zero-byte tracks
    with pytest.raises(ValueError, match=r"cannot read .*tracks.npz"):
        Scene.load(s)
    np.savez(s / "tracks.npz", labels=good.labels)
    with pytest.raises(ValueError, match=r"tracks.npz: missing arrays \['tracks_world'\]"):
        Scene.load(s)
    np.savez(s / "tracks.npz", tracks_world=good.tracks_world[:, :3], labels=good.labels)
    with pytest.raises(ValueError, match=r"labels must be"):
        Scene.load(s)


def test_camera_names_that_are_not_safe_file_names_are_refused():
    cam = make_scene(0, False).cameras[0]
    for name in ("../../escape", "a/b", "..", ".hidden", "", "x" * 65, "-rf", "a b", "nul\x00"):
        with pytest.raises(ValueError, match=r"camera name .* is not allowed"):
            Camera.from_dict({**cam.to_dict(), "name": name})
    assert Camera.from_dict({**cam.to_dict(), "name": "22070938_left-1.0"}).name == "22070938_left-1.0"
