"""Evaluation: track identity, camera checks, Tab. 1-2 metrics on synthetic scenes, batch mode, tables, CLI."""

import json
import math

import numpy as np
import pytest

from syncmv4d_core import pseudo_video
from syncmv4d_core.cameras import Camera
from syncmv4d_core.cli import main
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.evaluation import evaluate as E
from syncmv4d_core.scene import Scene

VIEWS = [0, 4, 8]  # one camera per cluster (left, center, right) of the synthetic 12-camera rig


def _gt(seed: int) -> Scene:
    return generate_scene(seed, SynthConfig(num_frames=9, height=64, width=64, num_points=200)).select_views(VIEWS)


def _prediction(gt: Scene, tracks_world: np.ndarray, track_anchors: np.ndarray | None = None,
                pseudo: bool = True) -> Scene:
    """A prediction with gt's cameras and videos, the given tracks and (optionally) their pseudo videos."""
    ranges = pseudo_video.depth_range_from_tracks(tracks_world, gt.cameras) if pseudo else None
    videos = pseudo_video.to_uint8(pseudo_video.encode_views(tracks_world, gt.cameras, ranges)) if pseudo else None
    return Scene(gt.cameras, gt.videos, tracks_world, np.zeros(tracks_world.shape[1], np.uint8), gt.text, gt.fps,
                 pseudo_videos=videos, depth_ranges=ranges, track_anchors=track_anchors)


@pytest.fixture(scope="module")
def gt():
    return _gt(0)


@pytest.fixture(scope="module")
def perfect(gt):
    return _prediction(gt, gt.tracks_world)


def _frontmost_oracle(gt: Scene, view: int, query_uv: np.ndarray, radius: float) -> np.ndarray:
    """Brute force: per query pixel, the smallest-depth in-image gt track within ``radius`` px (-1 if none)."""
    cam = gt.cameras[view]
    uv, depth = cam.project(gt.tracks_world[0])
    inside = cam.in_image(uv, depth)
    dist = np.linalg.norm(query_uv[:, None] - uv[None], axis=-1)            # (Q, K)
    cand = (dist <= radius) & inside[None]
    depth_or_inf = np.where(cand, depth[None], np.inf)
    return np.where(cand.any(1), depth_or_inf.argmin(1), -1)


# ---------------------------------------------------------------------------------- one scene
def test_ground_truth_against_itself(gt, perfect):
    r = E.evaluate_scene(perfect, gt)
    m = r["metrics"]
    assert m["RPE"] == 0 and m["PI@0.25"] == 100 and m["PI@0.05"] == 100 and m["median_error_mm"] == 0
    assert m["Chamfer"] == 0 and m["Smoothness"] == pytest.approx(m["Smoothness_gt"]) and m["Smoothness"] > 0
    # Decoding 8-bit pseudo videos is not exact, but views agree to about 1 % of the distance.
    assert 0 < m["RPE-MV"] < 3 and m["PI-MV"] == 100
    assert 0 < m["RPE-fused"] < 3 and m["PI-fused"] == 100
    assert r["matching"]["identity"] == "index" and r["matching"]["coverage"] == 1 and r["matching"]["gt_coverage"] == 1
    assert m["MatchingPixels"] >= 0
    for key in ("SubjectConsistency", "DynamicDegree", "CLIP-V"):
        assert m[key] is None and key in r["unavailable"]
    assert "GIM" in r["notes"]["MatchingPixels"]


def test_perturbed_and_static_predictions_are_worse(gt, perfect):
    rng = np.random.default_rng(1)
    noisy = _prediction(gt, gt.tracks_world + rng.normal(0, 0.02, gt.tracks_world.shape).astype(np.float32))
    good, bad = E.evaluate_scene(perfect, gt)["metrics"], E.evaluate_scene(noisy, gt)["metrics"]
    assert bad["RPE"] > good["RPE"] and bad["PI@0.05"] < good["PI@0.05"]
    # |N(0, 0.02^2 I_3)| has median 0.02 * 1.538 m = 30.8 mm
    assert bad["median_error_mm"] == pytest.approx(30.8, rel=0.1)
    assert bad["Chamfer"] > 0 and bad["Smoothness"] > 2 * good["Smoothness"]
    # Consistent noise stays multi-view consistent; views that disagree do not.
    assert bad["RPE-MV"] < 3
    anchors_uv, _ = pseudo_video.anchors_for_views(gt.tracks_world, gt.cameras)
    shifted = gt.tracks_world + np.array([0.0, 0.0, 0.05], np.float32)      # view 1 draws the tracks 5 cm higher
    videos = perfect.pseudo_videos.copy()
    videos[1] = pseudo_video.to_uint8(pseudo_video.encode_pseudo_video(shifted, gt.cameras[1], perfect.depth_ranges[1], anchors_uv[1]))
    split_views = Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, gt.text, pseudo_videos=videos,
                        depth_ranges=perfect.depth_ranges)
    torn = E.evaluate_scene(split_views, gt)["metrics"]
    assert torn["RPE-MV"] > good["RPE-MV"] + 2 and torn["RPE-fused"] > good["RPE-fused"] + 1
    assert torn["RPE"] == 0
    blank = Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, gt.text, pseudo_videos=np.zeros_like(videos),
                  depth_ranges=perfect.depth_ranges)
    empty = E.evaluate_scene(blank, gt)
    assert math.isnan(empty["metrics"]["RPE-MV"]) and "no track was decoded" in empty["unavailable"]["PI-fused"]

    # A do-nothing prediction: every point's error is its displacement since frame 0.
    frozen = np.repeat(gt.tracks_world[:1], gt.num_frames, axis=0)
    static = E.evaluate_scene(_prediction(gt, frozen, pseudo=False), gt)
    s = static["metrics"]
    rel = np.concatenate([np.linalg.norm(c.to_camera(frozen) - c.to_camera(gt.tracks_world), axis=-1)
                          / np.linalg.norm(c.to_camera(gt.tracks_world), axis=-1) for c in gt.cameras])
    assert s["PI@0.25"] == pytest.approx(100 * (rel < 0.25).mean())
    assert s["PI@0.05"] < s["PI@0.25"] < 100 and s["Smoothness"] == 0
    assert s["RPE-MV"] is None and "pseudo_videos" in static["unavailable"]["RPE-MV"]


def test_anchor_matching_picks_the_frontmost_track():
    cams = [Camera.look_at(f"c{i}", (np.cos(a), np.sin(a), 0.5), (0, 0, 0), 50, 32, 32) for i, a in enumerate((0.0, 1.2))]
    near = np.array([0.02, 0.01, 0.0])
    ray = near - cams[0].position
    far = near + 0.3 * ray / np.linalg.norm(ray)                     # same pixel in c0, 30 cm farther
    other = np.array([-0.05, 0.06, 0.02])
    base = np.stack([far, other, near])                              # (K=3, 3): the front-most track is index 2
    gt_tracks = np.repeat(base[None], 5, axis=0).astype(np.float32)  # (F=5, 3, 3)
    gt = Scene(cams, np.zeros((2, 5, 32, 32, 3), np.uint8), gt_tracks, np.zeros(3, np.uint8), "t")
    (u, v), _ = cams[0].project(near)
    u_far, _ = cams[0].project(far)
    assert np.allclose(u_far, (u, v), atol=1e-6)
    (ou, ov), _ = cams[1].project(other)
    anchors = np.array([[0, u + 0.6, v - 0.5],      # within 1.5 px of near and far -> near
                        [1, ou, ov],                 # the other track, anchored in view 1
                        [0, u + 5.0, v + 5.0]],      # nothing within 1.5 px
                       np.float32)
    pred = Scene(cams, gt.videos, gt_tracks[:, [2, 1, 0]], np.zeros(3, np.uint8), "t", track_anchors=anchors)
    gt_index, info = E.match_tracks(pred, gt)
    assert gt_index.tolist() == [2, 1, -1]
    assert info["identity"] == "anchors" and info["matched"] == 2 and info["coverage"] == pytest.approx(2 / 3)
    # far is hidden behind near in c0 but reachable in c1: 3 reachable tracks, 2 matched
    assert info["gt_visible"] == 3 and info["gt_matched"] == 2 and info["gt_coverage"] == pytest.approx(2 / 3)
    # Seen from c0 alone, far is never reachable: 2 reachable tracks, both matched by the first two anchors.
    in_c0 = np.array([[0, u, v], [0, *cams[0].project(other)[0]], [0, u + 5.0, v + 5.0]], np.float32)
    one_view = Scene(cams[:1], gt.videos[:1], pred.tracks_world, pred.labels, "t", track_anchors=in_c0)
    _, info = E.match_tracks(one_view, gt)
    assert info["gt_visible"] == 2 and info["gt_matched"] == 2 and info["gt_coverage"] == 1
    assert E.match_tracks(pred, gt, max_anchor_px=0.5)[0].tolist() == [-1, 1, -1]
    with pytest.raises(ValueError, match="max_anchor_px"):
        E.match_tracks(pred, gt, max_anchor_px=0)
    bad_view = anchors.copy()
    bad_view[0, 0] = 2
    with pytest.raises(ValueError, match="view index"):
        E.match_tracks(Scene(cams, gt.videos, gt_tracks, gt.labels, "t", track_anchors=bad_view), gt)


def test_anchor_identity_survives_shuffling(gt):
    # Every gt track that is front-most at its own frame-0 pixel in some view, anchored there.
    chosen, rows = [], []
    for v, cam in enumerate(gt.cameras):
        uv, _ = cam.project(gt.tracks_world[0])
        own = _frontmost_oracle(gt, v, uv, E.DEFAULT_MAX_ANCHOR_PX)
        for k in np.flatnonzero(own == np.arange(gt.num_points)):
            if k not in chosen:
                chosen.append(k)
                rows.append((v, *uv[k]))
    chosen, rows = np.array(chosen), np.array(rows, np.float32)
    assert len(chosen) > 50
    perm = np.random.default_rng(0).permutation(len(chosen))
    pred = _prediction(gt, gt.tracks_world[:, chosen[perm]], track_anchors=rows[perm])
    gt_index, info = E.match_tracks(pred, gt)
    assert np.array_equal(gt_index, chosen[perm])
    assert info["gt_coverage"] == 1 and info["gt_visible"] == len(chosen)
    result = E.evaluate_scene(pred, gt)
    assert result["metrics"]["RPE"] == 0 and result["matching"]["coverage"] == 1

    # Anchors off by up to 0.4 px: each match is the front-most gt track within 1.5 px (brute force).
    jitter = rows.copy()
    jitter[:, 1:] += np.random.default_rng(2).uniform(-0.4, 0.4, (len(rows), 2))
    pred = _prediction(gt, gt.tracks_world[:, chosen], track_anchors=jitter, pseudo=False)
    gt_index, _ = E.match_tracks(pred, gt)
    expected = np.concatenate([_frontmost_oracle(gt, v, jitter[jitter[:, 0] == v, 1:], 1.5) for v in range(3)])
    order = np.concatenate([np.flatnonzero(jitter[:, 0] == v) for v in range(3)])
    assert np.array_equal(gt_index[order], expected) and (gt_index >= 0).all()


def test_camera_and_identity_checks(gt, perfect):
    def with_camera(i: int, cam: Camera) -> Scene:
        cams = list(perfect.cameras)
        cams[i] = cam
        return Scene(cams, perfect.videos, perfect.tracks_world, perfect.labels, perfect.text)

    c = gt.cameras[1]
    with pytest.raises(ValueError, match="'nope' of the prediction is not in the ground truth"):
        E.evaluate_scene(with_camera(1, Camera("nope", c.K, c.world_T_cam, c.width, c.height)), gt)
    K = c.K.copy()
    K[0, 0] += 1.0
    with pytest.raises(ValueError, match=f"camera '{c.name}': intrinsics"):
        E.evaluate_scene(with_camera(1, Camera(c.name, K, c.world_T_cam, c.width, c.height)), gt)
    pose = c.world_T_cam.copy()
    pose[0, 3] += 0.01
    with pytest.raises(ValueError, match=f"camera '{c.name}': pose"):
        E.evaluate_scene(with_camera(1, Camera(c.name, c.K, pose, c.width, c.height)), gt)
    short = Scene(perfect.cameras, perfect.videos[:, :5], perfect.tracks_world[:5], perfect.labels, perfect.text)
    with pytest.raises(ValueError, match="frame counts differ"):
        E.evaluate_scene(short, gt)
    fewer = Scene(perfect.cameras, perfect.videos, perfect.tracks_world[:, :50], perfect.labels[:50], perfect.text)
    with pytest.raises(ValueError, match="no track_anchors"):
        E.evaluate_scene(fewer, gt)
    # A subset of the cameras, in another order, is fine; single-view RPE-MV is unavailable.
    one = Scene([gt.cameras[2]], gt.videos[2:], gt.tracks_world, gt.labels, gt.text,
                pseudo_videos=perfect.pseudo_videos[2:], depth_ranges=perfect.depth_ranges[2:])
    r = E.evaluate_scene(one, gt)
    assert r["metrics"]["RPE"] == 0 and r["metrics"]["RPE-MV"] is None and r["metrics"]["RPE-fused"] < 3
    assert r["unavailable"]["RPE-MV"] == "needs two or more views"


# ---------------------------------------------------------------------------------- split, tables, CLI
@pytest.fixture(scope="module")
def split(tmp_path_factory, gt, perfect):
    """gt/ with three scenes, pred/ with a perfect prediction for scene_a and a noisy one for scene_b."""
    root = tmp_path_factory.mktemp("split")
    other = _gt(1)
    gt.save(root / "gt" / "scene_a")
    other.save(root / "gt" / "scene_b")
    _gt(2).save(root / "gt" / "scene_c")
    perfect.save(root / "pred" / "scene_a")
    noise = np.random.default_rng(3).normal(0, 0.01, other.tracks_world.shape).astype(np.float32)
    _prediction(other, other.tracks_world + noise).save(root / "pred" / "scene_b")
    return root


def test_batch_mode_averages(split):
    out = E.evaluate_dirs(split / "pred", split / "gt")
    assert out["scenes"] == 2 and [r["scene"] for r in out["per_scene"]] == ["scene_a", "scene_b"]
    assert out["missing_predictions"] == ["scene_c"]
    a, b = (r["metrics"] for r in out["per_scene"])
    assert a["RPE"] == 0 and b["RPE"] > 0
    for key in ("RPE", "PI@0.05", "median_error_mm", "Chamfer", "RPE-MV"):
        assert out["metrics"][key] == pytest.approx((a[key] + b[key]) / 2)
        assert out["counts"][key] == 2
    assert out["metrics"]["CLIP-V"] is None and out["counts"]["CLIP-V"] == 0
    assert out["matching"]["pred_tracks"] == 400 and out["matching"]["matched"] == 400

    # NaN (here: no multi-view metric in one scene) is left out of the mean and the count.
    c = {**out["per_scene"][1], "metrics": {**b, "RPE-MV": math.nan}}
    agg = E.aggregate([out["per_scene"][0], c])
    assert agg["metrics"]["RPE-MV"] == pytest.approx(a["RPE-MV"]) and agg["counts"]["RPE-MV"] == 1

    with pytest.raises(ValueError, match="without ground truth"):
        E.evaluate_dirs(split / "gt", split / "pred")
    with pytest.raises(ValueError, match="no per-scene"):
        E.aggregate([])


def test_tables(tmp_path, gt, perfect):
    rng = np.random.default_rng(4)
    noisy = E.evaluate_scene(_prediction(gt, gt.tracks_world + rng.normal(0, 0.01, gt.tracks_world.shape).astype(np.float32)), gt)
    md = E.write_tables(noisy, tmp_path / "out" / "r.json", tmp_path / "out" / "r.md", name="noisy")
    saved = json.loads((tmp_path / "out" / "r.json").read_text())
    assert saved["metrics"]["RPE"] == pytest.approx(noisy["metrics"]["RPE"]) and saved["metrics"]["CLIP-V"] is None
    assert (tmp_path / "out" / "r.md").read_text() == md
    assert "## Video quality (Tab. 1)" in md and "## Motion (Tab. 2)" in md
    assert "| Method | RPE | PI | PI@0.05 | Med. mm | Chamfer | Smooth | RPE-MV | PI-MV |" in md
    assert f"| noisy | {noisy['metrics']['RPE']:.1f} | {noisy['metrics']['PI@0.25']:.1f} |" in md
    assert "| noisy | n/a | n/a |" in md and "not GIM" in md

    # A list of per-scene results is aggregated; NaN becomes null in the JSON.
    scenes = [{"scene": "x", **noisy}, {"scene": "y", **E.evaluate_scene(perfect, gt)}]
    scenes[1]["metrics"]["PI-MV"] = math.nan
    md = E.write_tables(scenes, tmp_path / "b.json")
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["scenes"] == 2 and saved["per_scene"][1]["metrics"]["PI-MV"] is None
    assert "| mean (2 scenes) |" in md and "| x |" in md and "| y |" in md

    table = E.ablation_table({"full": scenes[1], "no DPA": {"MatchingPixels": 501.3, "RPE-MV": 46.3}})
    lines = table.splitlines()
    assert lines[0].startswith("| Method | MatPix | RPE |") and "SubjCons" not in lines[0]
    assert lines[3].startswith("| no DPA | 501.3 | n/a | n/a | n/a | n/a | n/a | n/a | 46.3 | n/a |")
    with pytest.raises(ValueError, match="at least one"):
        E.ablation_table({})


def test_cli_end_to_end(split, tmp_path, capsys, caplog):
    assert main(["eval", "--pred", str(split / "pred" / "scene_b"), "--gt", str(split / "gt" / "scene_b"),
                 "--json", str(tmp_path / "one.json"), "--md", str(tmp_path / "one.md")]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "one.json").read_text())
    assert "## Motion (Tab. 2)" in printed and f"| ours | {saved['metrics']['RPE']:.1f} |" in printed
    assert saved["metrics"]["RPE"] > 0 and (tmp_path / "one.md").read_text() in printed

    assert main(["eval", "--pred-root", str(split / "pred"), "--gt-root", str(split / "gt"),
                 "--json", str(tmp_path / "all.json")]) == 0
    assert "| mean (2 scenes) |" in capsys.readouterr().out
    assert json.loads((tmp_path / "all.json").read_text())["missing_predictions"] == ["scene_c"]

    assert main(["eval", "--pred", str(split / "pred" / "scene_a")]) == 2
    assert "either --pred and --gt" in caplog.text
    assert main(["eval", "--pred", str(split / "pred" / "scene_a"), "--gt", str(split / "gt" / "scene_b")]) == 2
    assert "camera 'cam00': intrinsics K differ" in caplog.text       # another scene's camera rig

