"""TACO reader and MANO layer, on a small fixture in the TACO layout written by the tests.

The fixture takes its 12-camera rig from a procedural synthetic scene (``generate_scene``),
replaces MANO by a tiny model of the same structure (16 joints, 2 vertices per joint) and the
4096x3000 videos by 128x96 ones whose pixels encode their own coordinates (R = u, G = v) and
the source frame index (B), so crops, resizes and 30 -> 8 fps frame selection can be checked
from the converted pixels.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import sys
import types
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from syncmv4d_core.cameras import CLUSTERS, Camera, one_view_per_cluster
from syncmv4d_core.data.synthetic import LOOK_AT, SynthConfig, generate_scene
from syncmv4d_core.data.mano import ManoModel, rodrigues
from syncmv4d_core.data.taco import (TacoConfig, TacoSequence, assign_clusters, clip_source_frames, convert_taco,
                                     crop_box, load_mano, parse_triplet, read_calibration, read_hand,
                                     sequence_scenes, split_sequences, task_text, voxel_subsample)
from syncmv4d_core.scene import HAND, TARGET, TOOL, Scene, write_video

W_SRC, H_SRC = 128, 96
CENTRE = LOOK_AT  # where the synthetic rig looks, metres
PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]  # MANO's 5 fingers x 3 joints
SEQ_A = ("(stir, spoon, bowl)", "20231105_019", 35)  # 2 clips of 5 frames at 8 fps
SEQ_B = ("(measure, ruler, box)", "20231106_001", 16)  # 1 clip, held out (action "measure")
CONFIG = TacoConfig(height=64, width=96, num_frames=5, num_points=64)


# ---------------------------------------------------------------------- fixture builders
def tiny_hand(seed: int) -> dict:
    """A MANO-structured dict: 16 joints, 2 vertices per joint (rigidly skinned), 10 betas."""
    rng = np.random.default_rng(seed)
    J = len(PARENTS)
    joints = np.zeros((J, 3))
    for j in range(1, J):
        finger, level = (j - 1) // 3, (j - 1) % 3
        joints[j] = joints[PARENTS[j]] + ([0.02, 0.0, 0.0] if level else [0.03, 0.015 * (finger - 2), 0.0])
    v_template = np.repeat(joints, 2, axis=0) + rng.normal(0, 0.004, (2 * J, 3))
    regressor = np.zeros((J, 2 * J))
    for j in range(J):
        regressor[j, 2 * j:2 * j + 2] = 0.5
    return {
        "v_template": v_template,
        "shapedirs": rng.normal(0, 0.001, (2 * J, 3, 10)),
        "posedirs": rng.normal(0, 0.001, (2 * J, 3, 9 * (J - 1))),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": np.repeat(np.eye(J), 2, axis=0),
        "kintree_table": np.array([[2**32 - 1] + PARENTS[1:], list(range(J))], dtype=np.int64),
        "f": np.array([[2 * j, 2 * j + 1, 2 * PARENTS[j]] for j in range(1, J)], dtype=np.uint32),
        "hands_mean": rng.normal(0, 0.1, 3 * (J - 1)),
        "hands_components": np.eye(3 * (J - 1)),
    }


def box_obj(size_cm: tuple[float, float, float], n: int = 4) -> str:
    """OBJ text of a box surface sampled on an n x n grid per face (centimetres)."""
    g = np.linspace(-0.5, 0.5, n)
    a, b = (x.ravel() for x in np.meshgrid(g, g))
    pts = []
    for axis in range(3):
        for sign in (-0.5, 0.5):
            p = np.zeros((n * n, 3))
            p[:, axis] = sign
            p[:, [i for i in range(3) if i != axis]] = np.stack([a, b], 1)
            pts.append(p)
    pts = np.unique(np.concatenate(pts), axis=0) * np.asarray(size_cm)
    return "# box\n" + "".join(f"v {x:.5f} {y:.5f} {z:.5f}\n" for x, y, z in pts) + "f 1 2 3\n"


@lru_cache(maxsize=1)
def synthetic_rig() -> tuple[Camera, ...]:
    scene = generate_scene(0, SynthConfig(num_frames=5, height=H_SRC, width=W_SRC, num_points=64))
    return tuple(Camera(str(22070900 + i), c.K, c.world_T_cam, c.width, c.height, c.cluster)
                 for i, c in enumerate(scene.cameras))


def rig() -> list[Camera]:
    """The 12 cameras (128x96, with the generator's clusters) of a synthetic scene, renamed to
    TACO-like serial numbers."""
    return list(synthetic_rig())


def tool_poses(n: int) -> np.ndarray:
    t = np.arange(n) / 30.0
    poses = np.tile(np.eye(4), (n, 1, 1))
    ang = 0.8 * t
    poses[:, 0, 0], poses[:, 0, 1], poses[:, 1, 0], poses[:, 1, 1] = np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)
    poses[:, :3, 3] = CENTRE + np.stack([0.05 * t - 0.03, 0.02 + 0 * t, 0.03 + 0.02 * t], 1)
    return poses


def write_sequence(root: Path, triplet: str, name: str, n: int, cams: list[Camera]) -> None:
    """One sequence in the TACO layout (calibration, videos, hand poses and shapes, object poses)."""
    calib = {c.name: {"K": c.K.tolist(), "R": c.cam_T_world[:3, :3].tolist(), "T": c.cam_T_world[:3, 3].tolist(),
                      "imgSize": [c.width, c.height]} for c in cams}
    folder = root / "Allocentric_Camera_Parameters" / triplet / name
    folder.mkdir(parents=True)
    (folder / "calibration.json").write_text(json.dumps(calib))
    u, v = np.meshgrid(np.arange(W_SRC), np.arange(H_SRC))
    frames = np.zeros((n, H_SRC, W_SRC, 3), np.uint8)
    frames[..., 0] = np.round(u * 255 / (W_SRC - 1))
    frames[..., 1] = np.round(v * 255 / (H_SRC - 1))
    frames[..., 2] = (np.arange(n) * 7)[:, None, None]
    folder = root / "Allocentric_RGB_Videos" / triplet / name
    folder.mkdir(parents=True)
    for c in cams:
        write_video(folder / f"{c.name}.mp4", frames, 30.0)
    rng = np.random.default_rng(len(name) + n)
    folder = root / "Hand_Poses" / triplet / name
    folder.mkdir(parents=True)
    for side, dy in (("left", -0.06), ("right", 0.06)):
        hand = {f"{i:05d}": {"hand_pose": torch.tensor(rng.normal(0, 0.2, 48), dtype=torch.float32),
                             "hand_trans": torch.tensor(CENTRE + [-0.05 + 0.002 * i, dy, 0.06], dtype=torch.float32)}
                for i in range(n)}
        (folder / f"{side}_hand.pkl").write_bytes(pickle.dumps(hand))
        shape = {"hand_shape": torch.tensor(rng.normal(0, 1, (1, 10)), dtype=torch.float32)}
        (folder / f"{side}_hand_shape.pkl").write_bytes(pickle.dumps(shape))
    folder = root / "Object_Poses" / triplet / name
    folder.mkdir(parents=True)
    np.save(folder / "tool_017.npy", tool_poses(n))
    target = np.tile(np.eye(4), (n, 1, 1))
    target[:, :3, 3] = CENTRE + [0.02, -0.03, 0.0]
    np.save(folder / "target_103.npy", target)


@pytest.fixture(scope="module")
def taco(tmp_path_factory) -> tuple[Path, Path]:
    """(TACO root, MANO dir) with two sequences."""
    base = tmp_path_factory.mktemp("taco")
    root, mano = base / "TACO", base / "mano"
    mano.mkdir()
    for side, seed in (("LEFT", 1), ("RIGHT", 2)):
        (mano / f"MANO_{side}.pkl").write_bytes(pickle.dumps(tiny_hand(seed)))
    models = root / "Object_Models"
    models.mkdir(parents=True)
    (models / "017_cm.obj").write_text(box_obj((6.0, 2.0, 1.5)))
    (models / "103_cm.obj").write_text(box_obj((8.0, 8.0, 4.0)))
    for triplet, name, n in (SEQ_A, SEQ_B):
        write_sequence(root, triplet, name, n, rig())
    return root, mano


@pytest.fixture(scope="module")
def converted(taco, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    manifest = convert_taco(taco[0], out, taco[1], CONFIG, progress=False)
    return out, manifest


# ---------------------------------------------------------------------- MANO layer
def test_mano_rest_pose_puts_wrist_at_trans():
    data = tiny_hand(0)
    model = ManoModel.from_dict(data)
    trans = np.array([[0.1, -0.2, 0.3]])
    verts, joints = model(np.zeros((1, 48)), np.zeros(10), trans)
    j0 = data["J_regressor"].toarray()[0] @ data["v_template"]
    np.testing.assert_allclose(verts[0], data["v_template"] - j0 + trans, atol=1e-12)
    np.testing.assert_allclose(joints[0, 0], trans[0], atol=1e-12)


def test_mano_skinning_follows_the_kinematic_chain():
    data = tiny_hand(0)
    data["posedirs"] = np.zeros_like(data["posedirs"])
    model = ManoModel.from_dict(data)
    pose = np.zeros((1, 48))
    pose[0, 3 * 1:3 * 2] = [0.0, 0.0, np.pi / 2]  # bend the first joint of finger 0
    verts, joints = model(pose, np.zeros(10))
    rest, rest_joints = model(np.zeros((1, 48)), np.zeros(10))
    Rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for j in (1, 2, 3):  # the finger rotates about joint 1
        expected = (rest[0, 2 * j:2 * j + 2] - rest_joints[0, 1]) @ Rz.T + rest_joints[0, 1]
        np.testing.assert_allclose(verts[0, 2 * j:2 * j + 2], expected, atol=1e-12)
        np.testing.assert_allclose(joints[0, j], (rest_joints[0, j] - rest_joints[0, 1]) @ Rz.T + rest_joints[0, 1], atol=1e-12)
    untouched = [v for v in range(32) if v // 2 not in (1, 2, 3)]
    np.testing.assert_allclose(verts[0, untouched], rest[0, untouched], atol=1e-12)


def test_mano_pose_blend_shapes_and_hand_mean():
    data = tiny_hand(3)
    model = ManoModel.from_dict(data)
    no_blend = ManoModel.from_dict({**data, "posedirs": np.zeros_like(data["posedirs"])})
    pose = np.zeros((1, 48))
    pose[0, 3:] = np.random.default_rng(0).normal(0, 0.3, 45)
    verts, _ = model(pose, np.zeros(10))
    plain, _ = no_blend(pose, np.zeros(10))
    feature = (rodrigues(pose.reshape(16, 3))[1:] - np.eye(3)).reshape(-1)
    # the root's vertices are rigidly attached to the (unrotated) root: the blend shape shows as is
    np.testing.assert_allclose(verts[0, :2] - plain[0, :2], data["posedirs"][:2] @ feature, atol=1e-12)
    mean_model = ManoModel.from_dict(data, flat_hand_mean=False)
    shifted = pose.copy()
    shifted[0, 3:] += data["hands_mean"]
    np.testing.assert_allclose(mean_model(pose, np.zeros(10))[0], model(shifted, np.zeros(10))[0], atol=1e-12)


def test_mano_load_reads_chumpy_pickles_without_chumpy(tmp_path):
    data = tiny_hand(4)
    module = types.ModuleType("chumpy.ch")

    class Ch:  # pickled like chumpy's Ch: class reference + state dict holding the array as "x"
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = Ch
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), module
    try:
        blob = pickle.dumps({**data, "shapedirs": Ch(data["shapedirs"]),
                             "J_regressor": scipy.sparse.csr_matrix(data["J_regressor"])}, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(blob)
    loaded = ManoModel.load(tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(loaded.shapedirs, data["shapedirs"])
    np.testing.assert_array_equal(loaded.J_regressor, data["J_regressor"].toarray())
    assert loaded.parents.tolist() == PARENTS


def test_mano_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="MANO_LEFT.pkl"):
        load_mano(tmp_path)
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="MANO_RIGHT.pkl"):
        ManoModel.load(tmp_path / "MANO_RIGHT.pkl")
    data = tiny_hand(0)
    with pytest.raises(ValueError, match="posedirs"):
        ManoModel.from_dict({**data, "posedirs": data["posedirs"][..., :10]})
    with pytest.raises(ValueError, match="missing MANO keys"):
        ManoModel.from_dict({k: v for k, v in data.items() if k != "weights"})
    with pytest.raises(ValueError, match="pose must be"):
        ManoModel.from_dict(data)(np.zeros((1, 45)), np.zeros(10))


# ---------------------------------------------------------------------- pieces
def test_triplet_text():
    assert parse_triplet("(stir, spoon, bowl)") == ("stir", "spoon", "bowl")
    assert task_text(*parse_triplet("(stir, spoon, bowl)")) == "stir the bowl with the spoon"
    assert task_text(*parse_triplet("(cut, knife, cutting_board)")) == "cut the cutting board with the knife"
    with pytest.raises(ValueError, match="stir spoon bowl"):
        parse_triplet("stir spoon bowl")


def test_clip_frames_30_to_8_fps():
    clips = clip_source_frames(35, CONFIG)
    assert clips.tolist() == [[0, 4, 8, 11, 15], [19, 23, 26, 30, 34]]
    assert clip_source_frames(34, CONFIG).tolist() == [[0, 4, 8, 11, 15]]
    assert clip_source_frames(15, CONFIG).shape == (0, 5)
    full = clip_source_frames(181, TacoConfig())  # 49 frames at 8 fps span 6 s of 30 fps video
    assert full.shape == (1, 49) and full[0, -1] == 180


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple of 32.*100"):
        TacoConfig(height=100)
    with pytest.raises(ValueError, match="4n\\+1.*48"):
        TacoConfig(num_frames=48)


def test_voxel_subsample_is_density_independent_and_deterministic():
    rng = np.random.default_rng(0)
    dense = rng.uniform(0, 0.1, (5000, 3))  # same volume, 10x the points
    sparse = rng.uniform(0, 0.1, (500, 3)) + [1.0, 0, 0]
    pts = np.concatenate([dense, sparse])
    idx = voxel_subsample(pts, 100, np.random.default_rng(1))
    assert len(idx) == 100 and len(np.unique(idx)) == 100
    share_dense = np.mean(idx < 5000)
    assert 0.3 < share_dense < 0.7, share_dense  # random sampling would give ~0.91
    np.testing.assert_array_equal(idx, voxel_subsample(pts, 100, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="distinct"):
        voxel_subsample(np.zeros((50, 3)), 10, rng)


def test_crop_box_has_output_aspect_and_holds_the_points():
    cam = rig()[0]
    uv = np.array([[40.0, 30.0], [60.0, 35.0]])
    x0, y0, w, h = crop_box(uv, np.ones(2), cam, 96, 64, 0.1)
    assert abs(w / h - 1.5) < 0.05
    assert x0 <= 40 and x0 + w > 60 and y0 <= 30 and y0 + h > 35
    assert (x0, y0, w, h) == crop_box(uv, np.ones(2), cam, 96, 64, 0.1)
    # points spanning more than the image: the largest box of that aspect inside the image
    x0, y0, w, h = crop_box(np.array([[-500.0, 10.0], [900.0, 20.0]]), np.ones(2), cam, 96, 32, 0.0)
    assert (x0, w) == (0, W_SRC) and 0 <= y0 and y0 + h <= H_SRC and abs(w / h - 3) < 0.1
    assert crop_box(uv, -np.ones(2), cam, 128, 96, 0.1) == (0, 0, W_SRC, H_SRC)  # nothing in front


def test_clusters_run_left_to_right_around_the_workspace():
    cams = rig()  # the synthetic rig: left / center / right arcs of 4 at -60 / 0 / +60 degrees
    rng = np.random.default_rng(0)
    for turn in (0.0, 100.0, 170.0):  # the arc also straddles the azimuth wrap-around
        c, s = np.cos(np.deg2rad(turn)), np.sin(np.deg2rad(turn))
        Rz = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        turned = [Camera(k.name, k.K, Rz @ k.world_T_cam, k.width, k.height) for k in cams]
        shuffled = [turned[i] for i in rng.permutation(len(turned))]
        out = assign_clusters(shuffled)
        assert {k.name: k.cluster for k in out} == {k.name: k.cluster for k in cams}
        assert [k.cluster for k in out] == [cl for cl in CLUSTERS for _ in range(4)]
        # ordered by azimuth, counter-clockwise seen from above
        az = np.unwrap([np.arctan2(k.position[1], k.position[0]) for k in out])  # the rig's centre has x = y = 0
        assert np.all(np.diff(az) > 0)
    with pytest.raises(ValueError, match="at least 3 cameras"):
        assign_clusters(cams[:2])


def test_splits_hold_out_objects_and_actions_and_are_deterministic():
    triplets = ["(stir, spoon, bowl)", "(measure, ruler, box)", "(hit, hammer, nail)", "(cut, knife, hammer)",
                "(brush, brush, box)", "(dust, brush, plate)"]
    seqs = [TacoSequence(Path("."), triplets[i % 6], f"2023{i:04d}") for i in range(120)]
    splits = split_sequences(seqs, TacoConfig())
    test = {s.name for s in seqs if s.triplet in triplets[1:4]}
    assert {n for n, sp in splits.items() if sp == "test"} == test
    rest = [n for n in splits if n not in test]
    assert sum(splits[n] == "val" for n in rest) == round(0.1 * len(rest))
    assert split_sequences(seqs[::-1], TacoConfig()) == splits
    other = split_sequences(seqs, TacoConfig(split_seed=1))
    assert {n for n in rest if other[n] == "val"} != {n for n in rest if splits[n] == "val"}


def test_one_view_per_cluster_draws_uniformly_within_each_cluster():
    cams = assign_clusters(rig())
    scene = Scene(cams, np.zeros((12, 1, H_SRC, W_SRC, 3), np.uint8), np.zeros((1, 1, 3)), np.zeros(1), "x")
    rng = np.random.default_rng(0)
    draws = np.array([one_view_per_cluster(scene.cameras, rng) for _ in range(200)])
    for k, cluster in enumerate(CLUSTERS):
        members = {i for i, c in enumerate(cams) if c.cluster == cluster}
        assert set(draws[:, k]) == members
    with pytest.raises(ValueError, match="right"):
        one_view_per_cluster(scene.select_views(list(range(8))).cameras, rng)
    assert one_view_per_cluster(cams) == [next(i for i, c in enumerate(cams) if c.cluster == cl) for cl in CLUSTERS]
    assert one_view_per_cluster(scene.select_views(list(range(8))).cameras, strict=False) == [0, 4]


# ---------------------------------------------------------------------- end to end
def test_convert_writes_splits_and_manifest(converted):
    out, manifest = converted
    names = {(r["split"], r["name"]) for r in manifest["scenes"]}
    assert names == {("test", "20231106_001_00")} | {(s, f"20231105_019_{c:02d}") for c in (0, 1)
                                                      for s in [manifest["sequence_splits"]["20231105_019"]]}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["skipped"] == []
    for r in manifest["scenes"]:
        assert (out / r["path"] / "scene.json").is_file()


def test_converted_scene_tracks_labels_and_frames(converted, taco):
    out, manifest = converted
    path = next(r["path"] for r in manifest["scenes"] if r["name"] == "20231105_019_01")
    scene = Scene.load(out / path)
    assert scene.videos.shape == (12, 5, 64, 96, 3) and scene.fps == 8.0
    assert scene.text == "stir the bowl with the spoon"
    assert scene.meta["source_frames"] == [19, 23, 26, 30, 34]
    # the blue channel encodes the source frame index: 30 -> 8 fps selection seen in the pixels
    np.testing.assert_array_equal(np.median(scene.videos[..., 2], axis=(2, 3)), np.tile([19 * 7, 23 * 7, 26 * 7, 30 * 7, 34 * 7], (12, 1)))
    assert set(np.unique(scene.labels)) == {HAND, TOOL, TARGET} and scene.num_points == 64
    # tool tracks follow the tool's rigid motion; target tracks stay put
    poses = tool_poses(SEQ_A[2])[scene.meta["source_frames"]]
    tool = scene.tracks_world[:, scene.labels == TOOL].astype(np.float64)
    local = (tool[0] - poses[0, :3, 3]) @ poses[0, :3, :3]
    for f in range(5):
        np.testing.assert_allclose(tool[f], local @ poses[f, :3, :3].T + poses[f, :3, 3], atol=1e-5)
    target = scene.tracks_world[:, scene.labels == TARGET]
    np.testing.assert_allclose(target, np.broadcast_to(target[:1], target.shape), atol=1e-6)
    # hand tracks are vertices of the posed hands, the same vertex ids in every frame
    mano = load_mano(taco[1])
    folder = taco[0] / "Hand_Poses" / SEQ_A[0] / SEQ_A[1]
    hands = []
    for side in ("left", "right"):
        pose, trans, betas = read_hand(folder, side)
        hands.append(mano[side](pose[scene.meta["source_frames"]], betas, trans[scene.meta["source_frames"]])[0])
    hands = np.concatenate(hands, axis=1)  # (5, 64, 3)
    hand = scene.tracks_world[:, scene.labels == HAND]
    ids = np.argmin(np.linalg.norm(hand[0][:, None] - hands[0][None], axis=-1), axis=1)
    np.testing.assert_allclose(hand, hands[:, ids], atol=1e-5)


def test_converted_cameras_agree_with_cropped_pixels(converted, taco):
    """Tracks projected with the converted cameras land on pixels showing the right source pixel."""
    out, manifest = converted
    path = next(r["path"] for r in manifest["scenes"] if r["name"] == "20231105_019_00")
    scene = Scene.load(out / path)
    source = {c.name: c for c in read_calibration(taco[0] / "Allocentric_Camera_Parameters" / SEQ_A[0] / SEQ_A[1]
                                                  / "calibration.json", CONFIG)}
    assert [c.name for c in scene.cameras] == list(source)
    assert [c.cluster for c in scene.cameras] == [cl for cl in CLUSTERS for _ in range(4)]
    assert {c.name: c.cluster for c in scene.cameras} == {c.name: c.cluster for c in rig()}
    checked = 0
    for v, cam in enumerate(scene.cameras):
        uv, depth = cam.project(scene.tracks_world[0])
        inside = cam.in_image(uv, depth)
        assert inside.mean() > 0.95  # the crop holds the tracks
        uv_src, _ = source[cam.name].project(scene.tracks_world[0])
        px = np.round(uv).astype(int)
        keep = inside & (px[:, 0] > 0) & (px[:, 0] < 95) & (px[:, 1] > 0) & (px[:, 1] < 63)
        rgb = scene.videos[v, 0][px[keep, 1], px[keep, 0]].astype(float)
        expected_r = uv_src[keep, 0] * 255 / (W_SRC - 1)
        expected_g = uv_src[keep, 1] * 255 / (H_SRC - 1)
        # one output pixel is < 1 source pixel here (~2 levels); allow the rounding of uv to it
        assert np.abs(rgb[:, 0] - expected_r).max() < 5
        assert np.abs(rgb[:, 1] - expected_g).max() < 5
        checked += keep.sum()
    assert checked > 300


def test_limit_keeps_splits(taco, tmp_path):
    manifest = convert_taco(taco[0], tmp_path, taco[1], CONFIG, limit=1, progress=False)
    assert [r["sequence"] for r in manifest["scenes"]] == ["20231105_019"] * 2
    with pytest.raises(ValueError, match="limit"):
        convert_taco(taco[0], tmp_path, taco[1], CONFIG, limit=0, progress=False)


# ---------------------------------------------------------------------- errors
@pytest.fixture
def broken(taco, tmp_path) -> tuple[Path, Path, TacoSequence]:
    """A copy of the fixture root (damaged by each test) and its first sequence."""
    root = tmp_path / "TACO"
    shutil.copytree(taco[0], root)
    return root, taco[1], TacoSequence(root, SEQ_A[0], SEQ_A[1])


def first_camera(seq: TacoSequence) -> str:
    return read_calibration(seq.folder("Allocentric_Camera_Parameters") / "calibration.json", CONFIG)[0].name


def test_missing_video_is_named(broken):
    root, mano, seq = broken
    path = seq.folder("Allocentric_RGB_Videos") / f"{first_camera(seq)}.mp4"
    path.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        list(sequence_scenes(seq, load_mano(mano), CONFIG))


def test_unreadable_video_is_named(broken):
    root, mano, seq = broken
    path = seq.folder("Allocentric_RGB_Videos") / f"{first_camera(seq)}.mp4"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        list(sequence_scenes(seq, load_mano(mano), CONFIG))


def test_mismatched_frame_counts_are_named(broken):
    root, mano, seq = broken
    path = seq.folder("Allocentric_RGB_Videos") / f"{first_camera(seq)}.mp4"
    write_video(path, np.zeros((30, H_SRC, W_SRC, 3), np.uint8), 30.0)
    with pytest.raises(ValueError, match=re.escape(f"{path} has 30 frames")):
        list(sequence_scenes(seq, load_mano(mano), CONFIG))
    np.save(seq.folder("Object_Poses") / "tool_017.npy", tool_poses(20))
    with pytest.raises(ValueError, match="mismatched frame counts.*tool_017.npy"):
        list(sequence_scenes(seq, load_mano(mano), CONFIG))


def test_missing_annotation_is_named(broken):
    root, mano, seq = broken
    path = seq.folder("Hand_Poses") / "left_hand.pkl"
    path.rename(root / "kept.pkl")
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        list(sequence_scenes(seq, load_mano(mano), CONFIG))
    (root / "kept.pkl").rename(path)
    (root / "Object_Models" / "017_cm.obj").unlink()
    with pytest.raises(FileNotFoundError, match="017_cm.obj"):
        convert_taco(root, root / "out", mano, CONFIG, progress=False)
    assert not (root / "out" / "manifest.json").exists()  # no manifest for a run that stopped


def test_skip_errors_lists_the_broken_sequence(broken, tmp_path):
    root, mano, seq = broken
    (seq.folder("Object_Poses") / "target_103.npy").unlink()
    cfg = TacoConfig(height=64, width=96, num_frames=5, num_points=64, skip_errors=True)
    manifest = convert_taco(root, tmp_path / "out", mano, cfg, progress=False)
    assert [s["sequence"] for s in manifest["skipped"]] == [SEQ_A[1]]
    assert "target_<id>.npy" in manifest["skipped"][0]["error"]
    assert [r["sequence"] for r in manifest["scenes"]] == [SEQ_B[1]]


# ---------------------------------------------------------------------- hostile pickles
class _Payload:
    """Pickles as a call of ``func(*args)``: what a crafted MANO / TACO file would run on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> list[tuple[object, str]]:
    """(payload, the refused global as the error names it)."""
    import builtins
    import os
    import subprocess

    return [(_Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
            (_Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
            (_Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call")]


@pytest.mark.parametrize("case", range(3))
def test_mano_pickle_with_reduce_payload_runs_nothing(tmp_path, case):
    marker = tmp_path / "marker"
    payload, refused = _payloads(marker)[case]
    for protocol in (2, 4):
        path = tmp_path / "MANO_RIGHT.pkl"
        path.write_bytes(pickle.dumps({**tiny_hand(0), "hands_mean": payload}, protocol=protocol))
        with pytest.raises(ValueError) as err:
            ManoModel.load(path)
        assert str(path) in str(err.value) and refused in str(err.value) and "refusing" in str(err.value)
        assert not marker.exists()


@pytest.mark.parametrize("name", ["left_hand.pkl", "left_hand_shape.pkl"])
def test_taco_pickle_with_reduce_payload_runs_nothing(tmp_path, name):
    import os

    marker = tmp_path / "marker"
    folder = tmp_path / "seq"
    folder.mkdir()
    pose = {"00000": {"hand_pose": torch.zeros(48), "hand_trans": torch.zeros(3)}}
    (folder / "left_hand.pkl").write_bytes(pickle.dumps(pose))
    (folder / "left_hand_shape.pkl").write_bytes(pickle.dumps({"hand_shape": torch.zeros(1, 10)}))
    assert read_hand(folder, "left")[2].shape == (10,)  # torch tensors themselves are read
    payload = {"hand_shape": _Payload(os.system, f"touch {marker}")} if "shape" in name else \
        {"00000": {"hand_pose": _Payload(os.system, f"touch {marker}"), "hand_trans": torch.zeros(3)}}
    (folder / name).write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match=rf"{re.escape(name)}: refusing to unpickle {os.system.__module__}\.system"):
        read_hand(folder, "left")
    assert not marker.exists()


def test_taco_cli_refuses_a_crafted_mano_file(taco, tmp_path, caplog):
    import os

    from syncmv4d_core.cli import main

    marker = tmp_path / "marker"
    mano = tmp_path / "mano"
    shutil.copytree(taco[1], mano)
    (mano / "MANO_LEFT.pkl").write_bytes(pickle.dumps({**tiny_hand(1), "f": _Payload(os.system, f"touch {marker}")}))
    rc = main(["taco", "--root", str(taco[0]), "--mano", str(mano), "--out", str(tmp_path / "out"),
               "--height", "64", "--width", "96", "--frames", "5", "--points", "64"])
    assert rc == 2 and not marker.exists()
    assert "MANO_LEFT.pkl" in caplog.text and "refusing to unpickle" in caplog.text
