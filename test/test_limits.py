"""limits.py validators (the one 4n+1 check, names, bounds) and fileio's atomic helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from syncmv4d_core import limits
from syncmv4d_core.fileio import (atomic_write, atomic_write_json, clean_temp_files, new_temp_dir, output_dir,
                                  repair_dir, replace_dir)


def test_check_num_frames_is_4n_plus_1_within_bounds():
    assert [limits.check_num_frames(f) for f in (1, 5, 9, 49, 121)] == [1, 5, 9, 49, 121]
    assert limits.check_num_frames(np.int64(9)) == 9
    for bad in (0, -3, 8, 125, 4001, 9.0, "9", True, None):
        with pytest.raises(ValueError, match=r"num_frames must be 4n\+1 in \[1, 121\]"):
            limits.check_num_frames(bad)
    with pytest.raises(ValueError, match=r"--frames must be 4n\+1 in \[5, 121\].*got 1"):
        limits.check_num_frames(1, min_frames=5, what="--frames")
    assert limits.check_num_frames(7, temporal_compression=2, max_frames=9) == 7
    with pytest.raises(ValueError, match=r"2n\+1"):
        limits.check_num_frames(8, temporal_compression=2)


def test_check_name_allows_only_safe_file_names():
    for good in ("cam03", "22070938", "left", "a.b-c_d", "x" * limits.MAX_NAME_CHARS):
        assert limits.check_name(good) == good
    for bad in ("../../escape", "..", ".", ".hidden", "a/b", "a\\b", "", "-rf", "a b", "x\x00", "é", 3, None,
                "x" * (limits.MAX_NAME_CHARS + 1)):
        with pytest.raises(ValueError, match="camera name .* is not allowed"):
            limits.check_name(bad, "camera name")


def test_numeric_bounds_name_the_value():
    assert limits.check_steps(limits.MAX_STEPS) == limits.MAX_STEPS
    with pytest.raises(ValueError, match=r"--steps must be in \[1, 1000\], got 1000000"):
        limits.check_steps(1_000_000, "--steps")
    for bad in (float("nan"), float("inf"), -1.0, 101.0, "strong"):
        with pytest.raises(ValueError, match=r"guidance_scale must be a"):
            limits.check_guidance(bad)
    assert limits.check_fps("8") == 8.0  # numeric strings are numbers
    for bad in ("fast", 0, -8, float("nan"), True, None):
        with pytest.raises(ValueError, match="fps must be a"):
            limits.check_fps(bad)
    with pytest.raises(ValueError, match=r"height must be in \[1, 1280\], got 100000"):
        limits.check_image_size(100000, 64)
    with pytest.raises(ValueError, match=r"text has 1001 characters, more than the limit of 1000"):
        limits.check_text("x" * 1001)
    with pytest.raises(ValueError, match="text must be a string"):
        limits.check_text(b"bytes")


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})  # not serialisable: nothing written

    def half(tmp):
        tmp.write_text('{"x": 2')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, half)
    assert path.read_text() == '{\n "x": 1\n}' and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_clean_temp_files_removes_only_dead_writers(tmp_path):
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (tmp_path / f".a.json.tmp{dead}.json").write_text("partial")
    (tmp_path / f".b.json.tmp{os.getpid()}.json").write_text("mine, still writing")
    assert [p.name for p in clean_temp_files(tmp_path)] == [f".a.json.tmp{dead}.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".b.json.tmp{os.getpid()}.json"]


def test_folder_swap_and_repair(tmp_path):
    target = tmp_path / "out"
    tmp = new_temp_dir(target)
    (tmp / "f").write_text("1")
    replace_dir(tmp, target)
    os.rename(target, tmp_path / ".out.old")  # killed between the two renames of the next swap
    repair_dir(target, clean=False)
    assert (target / "f").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_dir_writes_everything_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with output_dir(out) as staging:
            (staging / "part").write_text("x")
            raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []
    with output_dir(out) as staging:
        (staging / "done").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "done").is_file()
    with pytest.raises(ValueError, match="not empty: pass --overwrite"):
        with output_dir(out):
            pass
    with pytest.raises(ValueError, match=r"refusing to overwrite .* holds \['done'\]"):
        with output_dir(out, overwrite=True, known=("scene",)):
            pass
    with output_dir(out, overwrite=True, known=("done",)) as staging:
        (staging / "done").write_text("y")
    assert (out / "done").read_text() == "y"
