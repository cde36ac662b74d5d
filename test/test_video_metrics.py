"""Scene keeping (static-pixel PSNR), hand presence (hand-pixel IoU) and their wiring in evaluate."""

import numpy as np
import pytest

from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.evaluation import evaluate as E
from syncmv4d_core.evaluation import video_metrics as VM
from syncmv4d_core.scene import Scene


@pytest.fixture(scope="module")
def gt():
    return generate_scene(3, SynthConfig(height=32, width=32, num_points=96)).select_views([0, 4, 8])


@pytest.fixture(scope="module")
def truth(gt):
    return VM.render_hand_truth(gt)


def test_static_mask_and_psnr():
    videos = np.full((2, 5, 4, 4, 3), 100, np.uint8)
    videos[0, 3, 0, 0] = 107            # changes by 7 > 6 levels: not static
    videos[1, 2, 1, 1, 1] = 106         # changes by 6: static
    static = VM.static_pixel_mask(videos)
    assert not static[0, 0, 0] and static[1, 1, 1] and static.sum() == 2 * 16 - 1
    assert VM.static_psnr(videos, videos)["psnr_static_db"] == VM.PSNR_CAP_DB
    off = videos.copy()
    off[:, 1:] += 10                    # every pixel 10 levels off after frame 0
    assert VM.static_psnr(off, videos)["psnr_static_db"] == pytest.approx(20 * np.log10(255 / 10), abs=0.02)
    first_only = videos.copy()
    first_only[:, 0] = 0                # frame 0 is not measured
    assert VM.static_psnr(first_only, videos)["psnr_static_db"] == VM.PSNR_CAP_DB
    with pytest.raises(ValueError, match="same shape"):
        VM.static_psnr(videos[:1], videos)


def test_hand_iou_counts_frames_after_the_first():
    a = np.zeros((1, 3, 4, 4), bool)
    b = a.copy()
    a[0, :, :2] = True                  # 8 pixels
    b[0, :, :1] = True                  # 4 of them
    b[0, 0] = False                     # frame 0 differs but is not counted
    assert VM.hand_iou(a, b) == pytest.approx(0.5)
    assert np.isnan(VM.hand_iou(np.zeros_like(a), np.zeros_like(a)))


def test_true_hand_region_matches_the_renderer(gt, truth):
    masks, background = truth
    assert masks.shape == gt.videos.shape[:-1] and background.shape == gt.videos.shape
    assert masks[:, 1:].any(axis=(2, 3)).mean() > 0.5          # the hand is seen in most frames
    # where the hand is not the front-most surface, the hand-free render is the video itself
    differs = np.any(background != gt.videos, axis=-1)
    assert not np.any(differs & ~masks)
    assert np.mean(differs[masks]) > 0.8                       # and the hand pixels change without it


def test_hand_presence_ceiling_and_baselines(gt, truth):
    masks, background = truth
    out = VM.hand_presence(gt.videos, gt.videos, masks, background)
    assert out["hand_iou"] == out["hand_iou_gt"] > 0.9
    assert out["hand_iou_copy"] < 0.5 * out["hand_iou_gt"]
    assert VM.hand_presence(background, gt.videos, masks, background)["hand_iou"] == 0
    noisy = np.clip(gt.videos + np.random.default_rng(0).normal(0, 3, gt.videos.shape), 0, 255).astype(np.uint8)
    assert VM.hand_presence(noisy, gt.videos, masks, background)["hand_iou"] > 0.8


def test_hand_truth_needs_a_reproducible_synthetic_scene(gt):
    plain = Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, gt.text)
    with pytest.raises(ValueError, match="synthetic ground truth"):
        VM.render_hand_truth(plain)
    other = Scene(gt.cameras, gt.videos[:, :, ::-1].copy(), gt.tracks_world, gt.labels, gt.text, meta=gt.meta)
    with pytest.raises(ValueError, match="regenerated videos differ"):
        VM.render_hand_truth(other)


def test_evaluate_scene_reports_the_new_measures(gt):
    perfect = E.evaluate_scene(Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, gt.text), gt)["metrics"]
    assert perfect["surface@2cm"] == 100 and perfect["chamfer_mm"] == 0 and perfect["disp_moving_mm"] == 0
    assert perfect["psnr_static_db"] == VM.PSNR_CAP_DB and perfect["hand_iou"] == perfect["hand_iou_gt"] > 0.9
    assert perfect["disp_moving_mm_static"] > 10 and perfect["hand_iou_copy"] < perfect["hand_iou_gt"]
    still = np.broadcast_to(gt.tracks_world[:1], gt.tracks_world.shape).copy()
    copied = VM.copied_reference(gt.videos)
    static = E.evaluate_scene(Scene(gt.cameras, copied, still, gt.labels, gt.text), gt, hand=False)
    m = static["metrics"]
    assert m["disp_moving_ratio"] == pytest.approx(1.0) and m["disp_moving_mm"] == pytest.approx(perfect["disp_moving_mm_static"])
    assert m["psnr_static_db"] == pytest.approx(perfect["psnr_static_db_copy"]) and "hand_iou" in static["unavailable"]
    # a split's ratio is the ratio of the mean errors
    agg = E.aggregate([{"scene": "a", **static}, {"scene": "b", **E.evaluate_scene(
        Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, gt.text), gt, hand=False)}])
    assert agg["metrics"]["disp_moving_ratio"] == pytest.approx(0.5)
    md = E.render_markdown(agg)
    assert "Surf@2cm" in md and "Hand IoU (copy)" in md and "PSNR-static" in md
    assert "Disp-mov / static" in E.ablation_table({"static": agg})


def test_evaluate_scene_without_finite_tracks(gt):
    broken = gt.tracks_world.copy()
    broken[2, :10] = np.nan
    r = E.evaluate_scene(Scene(gt.cameras, gt.videos, broken, gt.labels, gt.text), gt, hand=False)
    assert r["metrics"]["surface@2cm"] == 100 and "set metrics" in r["notes"]


def test_evaluate_scene_scores_the_action_of_the_prediction_text(gt):
    own = E.evaluate_scene(Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, gt.text), gt, hand=False)
    assert own["metrics"]["action_acc"] == 100.0 and gt.meta["action"] in own["notes"]["action"]
    other = "lift the cup" if gt.meta["action"] != "lift" else "push the cup toward the bowl"
    swapped = E.evaluate_scene(Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, other), gt, hand=False)
    assert swapped["metrics"]["action_acc"] == 0.0
    odd = E.evaluate_scene(Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, "juggle"), gt, hand=False)
    assert odd["metrics"]["action_acc"] is None and "vocabulary" in odd["unavailable"]["action_acc"]
    assert "action_acc" in E.evaluate_scene(Scene(gt.cameras, gt.videos, gt.tracks_world, gt.labels, gt.text), gt,
                                            hand=False, action=False)["unavailable"]
