import numpy as np
import pytest

from syncmv4d_core.cameras import Camera
from syncmv4d_core.evaluation import metrics
from syncmv4d_core.evaluation.video_features import video_feature_metrics


@pytest.fixture
def cameras():
    return [Camera.look_at(f"c{i}", (np.cos(a), np.sin(a), 0.6), (0, 0, 0.1), 50, 64, 64)
            for i, a in enumerate((0.0, 1.0, 2.0))]


@pytest.fixture
def tracks():
    rng = np.random.default_rng(0)
    base = rng.uniform(-0.1, 0.1, (1, 50, 3)) + (0, 0, 0.1)
    t = np.arange(9)[:, None, None] / 8.0
    return (base + t * np.array([0.1, 0.0, 0.05])).astype(np.float32)  # (9, 50, 3), constant velocity


def test_track_accuracy_perfect_and_offset(tracks, cameras):
    perfect = metrics.track_accuracy(tracks, tracks, cameras)
    assert perfect["RPE"] == 0 and perfect["PI@0.25"] == 100 and perfect["median_error_mm"] == 0
    shifted = metrics.track_accuracy(tracks + np.array([0.0, 0.0, 0.03]), tracks, cameras)
    assert shifted["median_error_mm"] == pytest.approx(30.0, rel=1e-4)
    # 3 cm at ~1 m from each camera: about 3% relative error, inside 0.25 and 0.05
    assert 1.5 < shifted["RPE"] < 6 and shifted["PI@0.05"] == 100
    far = metrics.track_accuracy(tracks + np.array([0.0, 0.0, 0.5]), tracks, cameras)
    assert far["PI@0.25"] < 50 and far["RPE"] > shifted["RPE"]


def test_track_accuracy_mask_and_shape_errors(tracks, cameras):
    pred = tracks.copy()
    pred[:, :10] += 1.0
    valid = np.ones(tracks.shape[:2], bool)
    valid[:, :10] = False
    assert metrics.track_accuracy(pred, tracks, cameras, valid)["RPE"] == 0
    with pytest.raises(ValueError, match="tracks must both be"):
        metrics.track_accuracy(pred[:, :5], tracks, cameras)


def test_chamfer(tracks):
    assert metrics.chamfer_distance(tracks, tracks[:, ::-1]) == 0
    d = metrics.chamfer_distance(tracks + np.array([0.01, 0, 0]), tracks)
    assert 0 < d <= 2 * 0.01 ** 2 + 1e-12


def test_smoothness(tracks):
    assert metrics.motion_smoothness(tracks) == pytest.approx(0, abs=1e-6)
    jitter = tracks.copy()
    jitter[4] += 0.01
    assert metrics.motion_smoothness(jitter) > 1e-3
    with pytest.raises(ValueError):
        metrics.motion_smoothness(tracks[:2])


def test_multiview_consistency(tracks, cameras):
    per_view = np.stack([tracks] * 3)
    valid = np.ones(per_view.shape[:3], bool)
    same = metrics.multiview_consistency(per_view, valid, cameras)
    assert same["RPE-MV"] == 0 and same["PI-MV"] == 100 and same["pairs"] > 0
    per_view[1] += np.array([0.0, 0.3, 0.0])
    worse = metrics.multiview_consistency(per_view, valid, cameras)
    assert worse["RPE-MV"] > 10
    valid[:] = False
    assert np.isnan(metrics.multiview_consistency(per_view, valid, cameras)["RPE-MV"])


def test_matching_pixels_prefers_consistent_views():
    rng = np.random.default_rng(0)
    texture = (rng.uniform(0, 255, (24, 24, 3))).astype(np.uint8)
    import cv2

    img = cv2.resize(texture, (128, 128), interpolation=cv2.INTER_CUBIC)
    shifted = np.roll(img, 5, axis=1)
    consistent = np.stack([np.stack([img] * 2), np.stack([shifted] * 2)])  # (V=2, F=2, H, W, 3)
    noise = rng.uniform(0, 255, consistent.shape).astype(np.uint8)
    assert metrics.matching_pixels(consistent) > 5 * max(metrics.matching_pixels(noise), 1)


def test_video_feature_metrics_with_local_tiny_weights(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(tmp_path / "dino")
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=64, image_size=32, patch_size=8,
                                                   projection_dim=16)).save_pretrained(tmp_path / "clip")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    static = np.broadcast_to(frame, (2, 5, 32, 32, 3)).copy()
    values, unavailable = video_feature_metrics(static, tmp_path / "dino", tmp_path / "clip")
    assert values["SubjectConsistency"] == pytest.approx(1.0, abs=1e-5)
    assert values["CLIP-V"] == pytest.approx(100.0, abs=1e-3)
    assert values["DynamicDegree"] is None and "RAFT" in unavailable["DynamicDegree"]
    random = rng.integers(0, 255, (2, 5, 32, 32, 3), dtype=np.uint8)
    assert video_feature_metrics(random, tmp_path / "dino")[0]["SubjectConsistency"] < 1.0
    values, unavailable = video_feature_metrics(static)
    assert values["SubjectConsistency"] is None and "--dino" in unavailable["SubjectConsistency"]
    with pytest.raises(FileNotFoundError, match="config.json"):
        video_feature_metrics(static, tmp_path / "missing")


# ---------------------------------------------------------------------------------- identity-free motion
def _moving_set(rng, K=40):
    """(9, K, 3) tracks 5 cm apart at frame 0: half still, half moving 6 cm along +z over the clip."""
    base = np.stack(np.meshgrid(np.arange(K // 4), np.arange(2), np.arange(2), indexing="ij"), -1).reshape(-1, 3) * 0.05
    t = np.arange(9)[:, None, None] / 8.0
    motion = np.zeros((1, K, 3))
    motion[0, K // 2:, 2] = 0.06
    return (base[None] + t * motion).astype(np.float64)


def test_identity_free_perfect_and_shuffled(tracks):
    for pred in (tracks, tracks[:, ::-1]):
        out = metrics.identity_free_motion(pred, tracks)
        assert out["surface@2cm"] == 100.0 and out["chamfer_mm"] == 0 and out["disp_mm"] == 0
        assert out["disp_moving_mm"] == 0 and out["disp_moving_ratio"] == 0


def test_static_prediction_scores_the_true_motion(tracks):
    still = metrics.static_tracks(tracks)
    assert np.all(still == tracks[:1])
    disp = metrics.tied_displacement_error(still, tracks)
    truth = np.linalg.norm(tracks[1:] - tracks[:1], axis=-1).mean()          # every track moves, same speed
    assert disp["disp_mm"] == pytest.approx(1000 * truth) and disp["disp_moving_mm"] == pytest.approx(1000 * truth)
    out = metrics.identity_free_motion(tracks, tracks)
    assert out["disp_mm_static"] == pytest.approx(1000 * truth) and out["disp_moving_ratio"] == 0


def test_moving_tracks_and_threshold():
    gt = _moving_set(np.random.default_rng(0))
    still = metrics.static_tracks(gt)
    disp = metrics.tied_displacement_error(still, gt)
    assert disp["moving_fraction"] == 0.5
    # the moving half moves t/8 * 6 cm: mean over t = 1..8 is 6 cm * 4.5 / 8
    assert disp["disp_moving_mm"] == pytest.approx(60.0 * 4.5 / 8) and disp["disp_mm"] == pytest.approx(30.0 * 4.5 / 8)
    assert metrics.tied_displacement_error(still, gt, moving_threshold=0.07)["moving_fraction"] == 0
    assert np.isnan(metrics.tied_displacement_error(still, gt, moving_threshold=0.07)["disp_moving_mm"])


def test_offset_counts_in_position_not_in_displacement():
    gt = _moving_set(np.random.default_rng(0))
    near = gt + np.array([0.0, 0.0, 0.01])       # 1 cm up: inside 2 cm, motion exact
    out = metrics.identity_free_motion(near, gt)
    assert out["surface@2cm"] == 100 and out["disp_mm"] == pytest.approx(0, abs=1e-9)
    assert out["chamfer_mm"] == pytest.approx(10.0)  # points 5 cm apart: the nearest is the shifted one both ways
    far = gt.copy()
    far[:, ::2] += np.array([0.0, 0.0, 0.025])   # half the tracks 2.5 cm off (points are 5 cm apart)
    assert metrics.surface_proximity(far, gt) == 0.5


def test_chamfer_mm_of_a_half_spacing_shift():
    grid = np.stack(np.meshgrid(*[np.arange(6) * 0.01] * 3, indexing="ij"), -1).reshape(1, -1, 3)
    grid = np.repeat(grid, 3, axis=0)
    shifted = grid + np.array([0.005, 0.0, 0.0])  # every point 5 mm from its nearest neighbour, both ways
    out = metrics.chamfer_mm_per_frame(shifted, grid)
    assert out["chamfer_mm"] == pytest.approx(5.0) and out["accuracy_mm"] == pytest.approx(5.0)
    assert out["per_frame_mm"].shape == (3,)
    one = metrics.chamfer_mm_per_frame(np.zeros((2, 1, 3)), np.full((2, 1, 3), 0.1))
    assert one["chamfer_mm"] == pytest.approx(1000 * np.sqrt(3) * 0.1)


def test_identity_free_shape_errors(tracks):
    with pytest.raises(ValueError, match="equal F"):
        metrics.identity_free_motion(tracks[:5], tracks)
    with pytest.raises(ValueError, match="non-empty"):
        metrics.identity_free_motion(tracks[:, :0], tracks)
    with pytest.raises(ValueError, match="F >= 2"):
        metrics.tied_displacement_error(tracks[:1], tracks[:1])


def test_label_accuracy_counts_tracks_tied_within_2cm():
    from syncmv4d_core.evaluation.metrics import label_accuracy

    gt = np.zeros((2, 3, 3))
    gt[:, 1, 0], gt[:, 2, 0] = 0.1, 0.2  # three true tracks 10 cm apart
    gt_labels = np.array([1, 2, 3])
    pred = gt[:, [0, 1, 2, 2]].copy()
    pred[:, 3, 1] = 0.05  # 5 cm from every true track: not tied
    out = label_accuracy(pred, np.array([1, 2, 1, 3]), gt, gt_labels)
    assert out["label_acc"] == pytest.approx(100 * 2 / 3)  # the third tracks' label is wrong, the fourth not tied
    assert out["label_tied"] == pytest.approx(75.0)
    assert np.isnan(label_accuracy(pred[:, 3:], np.array([3]), gt, gt_labels)["label_acc"])


def test_motion_video_frame0_scores_drawn_pixels_and_their_depth():
    from syncmv4d_core.evaluation.metrics import motion_video_frame0

    true = np.zeros((2, 8, 8, 3))
    true[:, 2:6, 2:6] = (0.5, 0.5, 0.5)                       # 16 drawn pixels per view, B = 0.5
    ranges = np.array([[0.8, 1.2], [0.9, 1.1]])                # z = 1.0 m in both views
    perfect = motion_video_frame0(true, ranges, true, ranges)
    assert perfect == {"drawn0_precision": 100.0, "drawn0_recall": 100.0, "depth0_mm": 0.0}
    pred = np.zeros_like(true)
    pred[:, 2:4, 2:6] = (0.5, 0.5, 0.75)                       # half the true pixels, 5 cm / 2.5 cm deeper
    pred[:, 0, 0] = (0.3, 0.3, 0.3)                            # one pixel the truth does not draw
    got = motion_video_frame0(pred, ranges, true, ranges)
    assert got["drawn0_precision"] == pytest.approx(100 * 16 / 18) and got["drawn0_recall"] == pytest.approx(50.0)
    assert got["depth0_mm"] == pytest.approx(75.0)            # median of 8 x 100 mm (view 0) and 8 x 50 mm
    empty = motion_video_frame0(np.zeros_like(true), ranges, true, ranges)
    assert np.isnan(empty["drawn0_precision"]) and empty["drawn0_recall"] == 0.0 and np.isnan(empty["depth0_mm"])
    with pytest.raises(ValueError, match=r"pred and true must be \(V, H, W, 3\) of one shape, got \(2, 8, 8, 3\) and "
                                         r"\(1, 8, 8, 3\)"):
        motion_video_frame0(pred, ranges, true[:1], ranges[:1])
