"""Evaluate generated scenes against ground truth and write the paper's Tab. 1-2 (docs/metrics.md).

A prediction is a ``Scene`` (the output of generation, or a reference row such as "ground truth
through encode / decode" or a static baseline); the ground truth is the ``Scene`` it was generated
for. The metric definitions live in ``metrics.py`` and ``video_features.py``; this module pairs
the tracks, checks the cameras, averages over a split and renders the tables.

Track identity. A predicted track with ``track_anchors`` row ``(v, u0, v0)`` corresponds to the
ground-truth track whose frame-0 projection in pred's view ``v`` (the ground-truth camera of the
same name) lies within ``max_anchor_px`` pixels of ``(u0, v0)`` and is the front-most (smallest
depth) of those candidates: the surface visible at that pixel. A prediction without
``track_anchors`` whose K equals the ground truth's is paired by index (reference rows built from
the ground-truth tracks themselves). Track metrics are computed on the matched pairs in pred's
cameras; unmatched predicted tracks are counted in ``matching``.

Identity-free motion (``metrics.identity_free_motion``) uses ALL finite predicted tracks, no
identity: surface proximity at frame 0, per-frame Chamfer in mm, and the displacement error of
each track tied to its nearest true track at frame 0, with the same numbers for the static
baseline of the prediction (its frame-0 points held still). Scene keeping and hand presence
(``video_metrics``): PSNR on pixels static in the true video and hand-pixel IoU against the true
hand region, re-rendered from a synthetic ground truth's seed, with the ground-truth video (ceiling)
and the copied reference frame (baseline) through the same measure; frames >= 1 only.

Result of ``evaluate_scene`` (JSON-ready apart from NaN, which ``write_tables`` writes as null)::

    {"metrics": {name: float | None for name in METRICS},
     "matching": {"identity": "anchors" | "index", "pred_tracks", "matched", "coverage",
                  "gt_visible", "gt_matched", "gt_coverage"},
     "unavailable": {metric name: reason},
     "notes": {metric name: how it is computed here}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .. import pseudo_video
from ..cameras import Camera
from ..scene import Scene
from . import metrics as M
from . import video_metrics as VM
from .video_features import video_feature_metrics

DEFAULT_MAX_ANCHOR_PX = 1.5  # anchor match radius in pixels (anchors are stored as 8-bit colours: W / 255 px)
INTRINSICS_TOL_PX = 1e-3     # largest accepted difference of K entries between pred and gt cameras, pixels
POSE_TOL = 1e-5              # largest accepted difference of world_T_cam entries (rotation, metres)

# Every metric of the tables: key -> (header, format, unit / meaning).
VIDEO_COLUMNS = {
    "SubjectConsistency": ("SubjCons", ".4f", "VBench subject consistency, DINO cosine in [0, 1]"),
    "DynamicDegree": ("DynDeg", ".4f", "VBench dynamic degree, fraction of dynamic videos"),
    "MatchingPixels": ("MatPix", ".1f", "RANSAC-verified SIFT matches per frame and view pair"),
    "CLIP-V": ("CLIP-V", ".2f", "CLIP image cosine across views, x100"),
}
MOTION_COLUMNS = {
    "RPE": ("RPE", ".1f", "relative point error, camera frame, x100"),
    "PI@0.25": ("PI", ".1f", "% points with relative error < 0.25"),
    "PI@0.05": ("PI@0.05", ".1f", "% points with relative error < 0.05"),
    "median_error_mm": ("Med. mm", ".1f", "median 3D error, millimetres"),
    "Chamfer": ("Chamfer", ".3g", "per-frame symmetric squared Chamfer, m^2"),
    "Smoothness": ("Smooth", ".3g", "mean |x[t+1] - 2 x[t] + x[t-1]|, m / frame^2"),
    "RPE-MV": ("RPE-MV", ".1f", "relative error between views' decoded tracks, x100"),
    "PI-MV": ("PI-MV", ".1f", "% view-pair points with relative error < 0.25"),
}
# Identity-free motion over ALL predicted tracks (metrics.identity_free_motion), with the static
# baseline of the same prediction (its own frame-0 points held still).
SET_COLUMNS = {
    "surface@2cm": ("Surf@2cm", ".1f", "% predicted tracks within 2 cm of a true track's frame-0 point at frame 0"),
    "chamfer_mm": ("Chamfer mm", ".1f", "per-frame mean nearest distance both ways, mm"),
    "disp_mm": ("Disp mm", ".1f", "displacement error of tracks tied to the nearest true track at frame 0, mm"),
    "disp_moving_mm": ("Disp-mov mm", ".1f", "the same over tracks tied to a true track moving > 1 cm, mm"),
    "chamfer_mm_static": ("Chamfer mm (static)", ".1f", "Chamfer of the prediction's frame 0 held still, mm"),
    "disp_mm_static": ("Disp mm (static)", ".1f", "displacement error of the prediction's frame 0 held still, mm"),
    "disp_moving_mm_static": ("Disp-mov mm (static)", ".1f", "moving-track displacement error of the static baseline, mm"),
    "disp_moving_ratio": ("Disp-mov / static", ".2f", "Disp-mov mm over its static baseline (split: ratio of the means)"),
    "action_acc": ("Action %", ".1f", "% scenes the action classifier gives the action of the prediction's own text"),
    "label_acc": ("Label %", ".1f", "% right labels among predicted tracks within 2 cm of a true track at frame 0"),
}
# Does the video keep the scene and show the hand (video_metrics.py)? Frames >= 1.
KEEP_COLUMNS = {
    "psnr_static_db": ("PSNR-static", ".2f", "PSNR on pixels static in the true video, frames >= 1, dB"),
    "psnr_static_db_copy": ("PSNR-static (copy)", ".2f", "the same for the copied reference frame, dB"),
    "hand_iou": ("Hand IoU", ".3f", "IoU of the video's hand mask with the true hand region, frames >= 1"),
    "hand_iou_gt": ("Hand IoU (GT)", ".3f", "the same for the true video (the measure's ceiling)"),
    "hand_iou_copy": ("Hand IoU (copy)", ".3f", "the same for the copied reference frame (baseline)"),
}
REFERENCE_COLUMNS = {
    "Smoothness_gt": ("Smooth (GT)", ".3g", "smoothness of the ground-truth tracks"),
    "RPE-fused": ("RPE-fused", ".1f", "relative error, decoded view tracks vs fused tracks, x100"),
    "PI-fused": ("PI-fused", ".1f", "% decoded view points within 0.25 of the fused tracks"),
    "accuracy_mm": ("Acc. mm", ".1f", "mean distance of predicted points to the true set (Chamfer's first half), mm"),
    "completeness_mm": ("Comp. mm", ".1f", "mean distance of true points to the predicted set (second half), mm"),
    "moving_fraction": ("Moving %", ".1f", "% predicted tracks tied to a true track moving > 1 cm"),
    "static_fraction": ("Static px %", ".1f", "% pixels static in the true video (PSNR-static's pixels)"),
    "drawn0_precision": ("Drawn@0 P %", ".1f", "% of the motion videos' drawn frame-0 pixels that the true tracks draw"),
    "drawn0_recall": ("Drawn@0 R %", ".1f", "% of the true tracks' drawn frame-0 pixels that the motion videos draw"),
    "depth0_mm": ("Depth@0 mm", ".1f", "median depth error of the motion videos' frame 0 on pixels drawn in both, mm"),
}
METRICS = (*VIDEO_COLUMNS, *KEEP_COLUMNS, *MOTION_COLUMNS, *SET_COLUMNS, *REFERENCE_COLUMNS)

NOTES = {
    "MatchingPixels": "OpenCV SIFT + Lowe ratio 0.75 + RANSAC fundamental-matrix inliers (not GIM as in the paper); "
                      "mean count per frame and view pair, not comparable with the paper's absolute numbers",
    "RPE": "computed in the camera frame of each of the prediction's views, on matched track pairs",
}


# ---------------------------------------------------------------------------------- checks
def check_cameras(pred: Scene, gt: Scene) -> list[Camera]:
    """Check that pred's cameras are a subset (by name) of gt's with the same calibration.

    Returns:
        gt's cameras in pred's view order.
    Raises:
        ValueError naming the camera and the field that differs, or the frame counts.
    """
    if pred.num_frames != gt.num_frames:
        raise ValueError(f"frame counts differ: prediction has {pred.num_frames}, ground truth {gt.num_frames}")
    by_name = {c.name: c for c in gt.cameras}
    matched = []
    for cam in pred.cameras:
        ref = by_name.get(cam.name)
        if ref is None:
            raise ValueError(f"camera {cam.name!r} of the prediction is not in the ground truth "
                             f"(ground-truth cameras: {sorted(by_name)})")
        if (cam.width, cam.height) != (ref.width, ref.height):
            raise ValueError(f"camera {cam.name!r}: image size differs, prediction {cam.width}x{cam.height}, "
                             f"ground truth {ref.width}x{ref.height}")
        if np.abs(cam.K - ref.K).max() > INTRINSICS_TOL_PX:
            raise ValueError(f"camera {cam.name!r}: intrinsics K differ (max difference "
                             f"{np.abs(cam.K - ref.K).max():.3g} px)")
        if np.abs(cam.world_T_cam - ref.world_T_cam).max() > POSE_TOL:
            raise ValueError(f"camera {cam.name!r}: pose world_T_cam differs (max difference "
                             f"{np.abs(cam.world_T_cam - ref.world_T_cam).max():.3g})")
        matched.append(ref)
    return matched


# ---------------------------------------------------------------------------------- identity
def _frontmost_within(uv0: np.ndarray, depth0: np.ndarray, camera: Camera, queries: np.ndarray,
                      max_anchor_px: float) -> np.ndarray:
    """For each query pixel the front-most track whose frame-0 pixel lies within ``max_anchor_px``.

    Args:
        uv0: (K, 2) frame-0 pixels of the tracks in ``camera``; depth0: (K,) metres.
        queries: (Q, 2) pixels.
    Returns:
        (Q,) int track index, -1 where no track in the image is that close.
    """
    inside = np.flatnonzero(camera.in_image(uv0, depth0))
    out = np.full(len(queries), -1, dtype=np.int64)
    if inside.size == 0 or len(queries) == 0:
        return out
    near = cKDTree(uv0[inside]).query_ball_point(queries, r=max_anchor_px)
    for q, candidates in enumerate(near):
        if candidates:
            candidates = inside[candidates]
            out[q] = candidates[np.argmin(depth0[candidates])]
    return out


def match_tracks(pred: Scene, gt: Scene, max_anchor_px: float = DEFAULT_MAX_ANCHOR_PX) -> tuple[np.ndarray, dict]:
    """Pair predicted tracks with ground-truth tracks (module docstring: "Track identity").

    Args:
        pred, gt: scenes whose cameras passed ``check_cameras``.
        max_anchor_px: anchor match radius, pixels.
    Returns:
        gt_index: (K_pred,) int, the matched ground-truth track per predicted track, -1 if none.
        info: {"identity", "pred_tracks", "matched", "coverage", "gt_visible", "gt_matched", "gt_coverage"};
            ``gt_visible`` counts ground-truth tracks that are front-most within ``max_anchor_px`` at
            their own frame-0 pixel in at least one of pred's views (the tracks an anchor can reach).
    """
    if not max_anchor_px > 0:
        raise ValueError(f"max_anchor_px must be a positive number of pixels, got {max_anchor_px}")
    gt_cams = check_cameras(pred, gt)
    projections = [cam.project(gt.tracks_world[0]) for cam in gt_cams]   # per view: (K_gt, 2), (K_gt,)
    reachable = np.zeros(gt.num_points, dtype=bool)
    for cam, (uv0, depth0) in zip(gt_cams, projections):
        own = _frontmost_within(uv0, depth0, cam, uv0, max_anchor_px)     # (K_gt,)
        reachable |= own == np.arange(gt.num_points)

    if pred.track_anchors is not None:
        identity = "anchors"
        anchors = np.asarray(pred.track_anchors, dtype=np.float64)
        view = anchors[:, 0]
        seen = view >= 0  # view -1: the track is in no view's image at frame 0 (never matched)
        if not np.all(np.isfinite(anchors[seen])) or np.any(view != np.round(view)) or np.any(view >= pred.num_views) \
                or np.any(view < -1):
            raise ValueError(f"track_anchors must hold (view index in [0, {pred.num_views}), u0, v0) rows with finite "
                             f"pixels, or view -1 for a track no view sees")
        gt_index = np.full(pred.num_points, -1, dtype=np.int64)
        for v, (cam, (uv0, depth0)) in enumerate(zip(gt_cams, projections)):
            rows = np.flatnonzero(view == v)
            gt_index[rows] = _frontmost_within(uv0, depth0, cam, anchors[rows, 1:], max_anchor_px)
    elif pred.num_points == gt.num_points:
        identity = "index"
        gt_index = np.arange(pred.num_points)
    else:
        raise ValueError(f"the prediction has no track_anchors and {pred.num_points} tracks against the ground "
                         f"truth's {gt.num_points}: track identity is undefined")

    matched = gt_index >= 0
    gt_hit = np.zeros(gt.num_points, dtype=bool)
    gt_hit[gt_index[matched]] = True
    info = {
        "identity": identity,
        "pred_tracks": pred.num_points,
        "matched": int(matched.sum()),
        "coverage": float(matched.mean()) if pred.num_points else math.nan,
        "gt_visible": int(reachable.sum()),
        "gt_matched": int((gt_hit & reachable).sum()),
        "gt_coverage": float((gt_hit & reachable).sum() / reachable.sum()) if reachable.any() else math.nan,
    }
    return gt_index, info


# ---------------------------------------------------------------------------------- one scene
def _consistency(pred: Scene) -> dict:
    """RPE-MV / PI-MV between pred's decoded views (two or more views) and RPE-fused / PI-fused
    between each view's decoded tracks and pred's fused tracks, in that view's camera frame."""
    anchors_uv, _ = pseudo_video.anchors_for_views(pred.tracks_world, pred.cameras)        # (V, K, 2)
    per_view, valid = pseudo_video.decode_views(pred.pseudo_videos, pred.cameras, pred.depth_ranges, anchors_uv)
    out = {}
    if pred.num_views >= 2:
        mv = M.multiview_consistency(per_view, valid, pred.cameras)
        out.update({"RPE-MV": mv["RPE-MV"], "PI-MV": mv["PI-MV"]})
    fused = np.concatenate([M.relative_point_errors(per_view[i], pred.tracks_world, [cam], valid[i])
                            for i, cam in enumerate(pred.cameras)])                          # (N,)
    out["RPE-fused"] = 100.0 * float(fused.mean()) if fused.size else math.nan
    out["PI-fused"] = 100.0 * float((fused < 0.25).mean()) if fused.size else math.nan
    return out


_CLASSIFIER = []


def _classifier():
    """The shipped action classifier, loaded once."""
    if not _CLASSIFIER:
        from .action_classifier import load_classifier

        _CLASSIFIER.append(load_classifier())
    return _CLASSIFIER[0]


def evaluate_scene(pred: Scene, gt: Scene, dino_dir: str | Path | None = None, clip_dir: str | Path | None = None,
                   max_anchor_px: float = DEFAULT_MAX_ANCHOR_PX, hand: bool = True,
                   action: bool | str | Path = True) -> dict:
    """All Tab. 1-2 metrics of one predicted scene against its ground truth.

    Args:
        pred: the prediction (videos, tracks_world; pseudo_videos + depth_ranges for RPE-MV / PI-MV).
        gt: the ground-truth scene (its cameras must include pred's, see ``check_cameras``).
        dino_dir, clip_dir: local transformers weight directories for subject consistency / CLIP-V.
        max_anchor_px: anchor match radius for track identity, pixels.
        hand: measure hand-pixel IoU (re-renders a synthetic ground truth from its seed; other
            ground truths report it unavailable).
        action: score the predicted tracks with the action classifier against the action of
            ``pred.text`` (the text it was generated from): True = the shipped weights, a path =
            other weights, False = skip.
    Returns:
        {"metrics", "matching", "unavailable", "notes"} (module docstring).
    """
    gt_index, matching = match_tracks(pred, gt, max_anchor_px)
    values: dict = dict.fromkeys(METRICS, None)
    unavailable: dict = {}
    notes: dict = dict(NOTES)

    # 1. Track accuracy on matched pairs, in pred's cameras; non-finite predictions are not counted.
    rows = np.flatnonzero(gt_index >= 0)
    p, g = pred.tracks_world[:, rows], gt.tracks_world[:, gt_index[rows]]          # (F, N, 3)
    finite = np.isfinite(p).all(axis=-1)                                           # (F, N)
    if finite.any():
        values.update(M.track_accuracy(p, g, pred.cameras, finite))
    else:
        for key in ("RPE", "PI@0.25", "PI@0.05", "median_error_mm"):
            unavailable[key] = "no predicted track matched a ground-truth track"

    # 2. Track-set metrics (no identity needed).
    if pred.num_points == 0:
        for key in ("Chamfer", "Smoothness"):
            unavailable[key] = "the prediction has no tracks (a video-only model)"
    elif np.isfinite(pred.tracks_world).all():
        values["Chamfer"] = M.chamfer_distance(pred.tracks_world, gt.tracks_world)
        values["Smoothness"] = M.motion_smoothness(pred.tracks_world)
    else:
        for key in ("Chamfer", "Smoothness"):
            unavailable[key] = "the predicted tracks hold non-finite values"
    values["Smoothness_gt"] = M.motion_smoothness(gt.tracks_world)

    # 3. Multi-view consistency of the motion pseudo videos.
    if pred.pseudo_videos is None or pred.depth_ranges is None:
        for key in ("RPE-MV", "PI-MV", "RPE-fused", "PI-fused", "drawn0_precision", "drawn0_recall", "depth0_mm"):
            unavailable[key] = "the prediction has no pseudo_videos and depth_ranges"
    else:
        values.update(_consistency(pred))
        true_ranges = pseudo_video.depth_range_from_tracks(gt.tracks_world, pred.cameras)
        true0 = pseudo_video.encode_views(gt.tracks_world[:1], pred.cameras, true_ranges)[:, 0]
        pred0 = pred.pseudo_videos[:, 0] / 255.0  # uint8 (Scene)
        values.update(M.motion_video_frame0(pred0, pred.depth_ranges, true0, true_ranges))
        if pred.num_views < 2:
            unavailable["RPE-MV"] = unavailable["PI-MV"] = "needs two or more views"
        for key in ("RPE-MV", "PI-MV", "RPE-fused", "PI-fused"):
            if values[key] is not None and math.isnan(values[key]):
                unavailable[key] = "no track was decoded from the pseudo videos (in two views, for -MV)"

    # 3b. Identity-free motion over all (finite) predicted tracks, with the static baseline.
    usable = np.isfinite(pred.tracks_world).all(axis=(0, 2)) if pred.num_points else np.zeros(0, bool)
    if usable.any():
        motion = M.identity_free_motion(pred.tracks_world[:, usable], gt.tracks_world)
        values.update({k: motion[k] for k in SET_COLUMNS if k in motion})
        values.update({k: motion[k] for k in ("accuracy_mm", "completeness_mm", "moving_fraction")})
        if not usable.all():
            notes["set metrics"] = f"{int((~usable).sum())} predicted tracks with non-finite values left out"
    else:
        for key in (*SET_COLUMNS, "accuracy_mm", "completeness_mm", "moving_fraction"):  # action_acc too
            unavailable[key] = "the prediction has no (finite) tracks"
    if usable.any() and action:
        try:
            from .action_classifier import action_of_text, load_classifier

            intended = action_of_text(pred.text)
            classifier = _classifier() if action is True else load_classifier(action)
        except (ValueError, FileNotFoundError) as exc:
            unavailable["action_acc"] = str(exc)
        else:
            labels = pred.labels[usable] if np.any(pred.labels > 0) else None
            got = classifier.predict(pred.tracks_world[:, usable], labels)
            values["action_acc"] = 100.0 if got == intended else 0.0
            notes["action"] = f"classified {got!r}; the text {pred.text!r} names {intended!r}"
    elif not action:
        unavailable["action_acc"] = "not requested (action=False)"
    if usable.any() and np.any(pred.labels[usable] > 0):  # a model that labels its tracks
        labels = M.label_accuracy(pred.tracks_world[:, usable], pred.labels[usable], gt.tracks_world, gt.labels)
        values["label_acc"] = labels["label_acc"]
        if math.isnan(labels["label_acc"]):
            unavailable["label_acc"] = "no predicted track lies within 2 cm of a true track at frame 0"
    else:
        unavailable["label_acc"] = "the prediction's tracks are unlabelled"
    if values["disp_moving_mm"] is not None and math.isnan(values["disp_moving_mm"]):
        unavailable["disp_moving_mm"] = "no predicted track is tied to a moving true track"

    # 3c. Scene kept (static-pixel PSNR) and hand shown (hand-pixel IoU), frames >= 1.
    gt_videos = gt.videos[[next(i for i, c in enumerate(gt.cameras) if c.name == cam.name) for cam in pred.cameras]]
    if pred.videos.shape != gt_videos.shape:
        for key in KEEP_COLUMNS:
            unavailable[key] = f"video shape {pred.videos.shape} differs from the ground truth's {gt_videos.shape}"
    else:
        kept = VM.static_psnr(pred.videos, gt_videos)
        values["psnr_static_db"], values["static_fraction"] = kept["psnr_static_db"], 100.0 * kept["static_fraction"]
        values["psnr_static_db_copy"] = VM.static_psnr(VM.copied_reference(gt_videos), gt_videos)["psnr_static_db"]
        if hand:
            try:
                masks, background = VM.render_hand_truth(gt.select_views(
                    [next(i for i, c in enumerate(gt.cameras) if c.name == cam.name) for cam in pred.cameras]))
            except ValueError as exc:
                for key in ("hand_iou", "hand_iou_gt", "hand_iou_copy"):
                    unavailable[key] = str(exc)
            else:
                shown = VM.hand_presence(pred.videos, gt_videos, masks, background)
                values.update({k: shown[k] for k in ("hand_iou", "hand_iou_gt", "hand_iou_copy")})
                for key in ("hand_iou", "hand_iou_gt", "hand_iou_copy"):
                    if math.isnan(values[key]):
                        unavailable[key] = "the true hand is in no view after frame 0"
        else:
            for key in ("hand_iou", "hand_iou_gt", "hand_iou_copy"):
                unavailable[key] = "not requested (hand=False)"

    # 4. Video metrics.
    if pred.num_views >= 2:
        values["MatchingPixels"] = M.matching_pixels(pred.videos)
    else:
        unavailable["MatchingPixels"] = "needs two or more views"
    features, reasons = video_feature_metrics(pred.videos, dino_dir, clip_dir)
    values.update(features)
    unavailable.update(reasons)
    return {"metrics": values, "matching": matching, "unavailable": unavailable, "notes": notes}


# ---------------------------------------------------------------------------------- a split
def _scene_dirs(root: Path) -> dict[str, Path]:
    """Sub-directories of ``root`` that hold a scene.json, by name."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    return {d.name: d for d in sorted(root.iterdir()) if (d / "scene.json").is_file()}


def aggregate(per_scene: list[dict]) -> dict:
    """Average per-scene results (each from ``evaluate_scene``, optionally with a "scene" name).

    Returns:
        {"scenes": n, "metrics": mean per metric over the scenes where it is a finite number (None
        if none), "counts": that number of scenes per metric, "matching": summed track counts and
        mean coverages, "unavailable": reasons seen, "notes", "per_scene": the inputs}.
    """
    if not per_scene:
        raise ValueError("nothing to aggregate: no per-scene results")
    means, counts = {}, {}
    for key in METRICS:
        vals = [r["metrics"].get(key) for r in per_scene]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        means[key] = float(np.mean(vals)) if vals else None
        counts[key] = len(vals)
    both = [(r["metrics"].get("disp_moving_mm"), r["metrics"].get("disp_moving_mm_static")) for r in per_scene]
    both = [(a, b) for a, b in both if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    if both and sum(b for _, b in both) > 0:  # the split's ratio is the ratio of the means, not a mean of ratios
        means["disp_moving_ratio"] = sum(a for a, _ in both) / sum(b for _, b in both)
        counts["disp_moving_ratio"] = len(both)
    matching = {key: int(sum(r["matching"][key] for r in per_scene))
                for key in ("pred_tracks", "matched", "gt_visible", "gt_matched")}
    for key in ("coverage", "gt_coverage"):
        vals = [r["matching"][key] for r in per_scene if math.isfinite(r["matching"][key])]
        matching[key] = float(np.mean(vals)) if vals else math.nan
    unavailable: dict = {}
    for r in per_scene:
        for key, reason in r["unavailable"].items():
            unavailable.setdefault(key, reason)
    notes: dict = {}
    for r in per_scene:
        notes.update(r.get("notes", {}))
    return {"scenes": len(per_scene), "metrics": means, "counts": counts, "matching": matching,
            "unavailable": unavailable, "notes": notes, "per_scene": per_scene}


def evaluate_dirs(pred_root: str | Path, gt_root: str | Path, dino_dir: str | Path | None = None,
                  clip_dir: str | Path | None = None, max_anchor_px: float = DEFAULT_MAX_ANCHOR_PX,
                  hand: bool = True, action: bool | str | Path = True) -> dict:
    """Evaluate every scene directory of ``pred_root`` against the same-named one of ``gt_root``.

    Returns:
        ``aggregate`` of the per-scene results (each tagged with "scene": its name), plus
        "missing_predictions": ground-truth scene names without a prediction.
    Raises:
        ValueError if ``pred_root`` holds no scene or a predicted scene has no ground truth.
    """
    preds, gts = _scene_dirs(Path(pred_root)), _scene_dirs(Path(gt_root))
    if not preds:
        raise ValueError(f"{pred_root} holds no scene directory (sub-directory with scene.json)")
    orphans = sorted(set(preds) - set(gts))
    if orphans:
        raise ValueError(f"predicted scenes without ground truth in {gt_root}: {orphans}")
    per_scene = []
    for name, path in preds.items():
        result = evaluate_scene(Scene.load(path, load_depth=False), Scene.load(gts[name], load_depth=False),
                                dino_dir, clip_dir, max_anchor_px, hand, action)
        per_scene.append({"scene": name, **result})
    out = aggregate(per_scene)
    out["missing_predictions"] = sorted(set(gts) - set(preds))
    return out


# ---------------------------------------------------------------------------------- tables
def _cell(value, fmt: str) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return "-"
    return format(value, fmt)


def _table(rows: dict[str, dict], columns: dict) -> str:
    """Markdown table: one row per name, one column per metric key of ``columns``."""
    head = "| Method | " + " | ".join(h for h, _, _ in columns.values()) + " |"
    rule = "|---|" + "---:|" * len(columns)
    body = ["| " + name + " | " + " | ".join(_cell(m.get(k), fmt) for k, (_, fmt, _) in columns.items()) + " |"
            for name, m in rows.items()]
    return "\n".join([head, rule, *body])


def _metrics_of(result: dict) -> dict:
    """The flat metric dict of a result (``evaluate_scene`` / ``aggregate`` output) or a flat dict itself."""
    return result["metrics"] if isinstance(result.get("metrics"), dict) else result


def ablation_table(rows: dict[str, dict]) -> str:
    """Markdown comparison of named methods (e.g. "full", "no DPA", "single-view").

    Args:
        rows: method name -> a result (``evaluate_scene`` / ``evaluate_dirs`` output) or a flat
            metric dict. Columns are the table metrics any row reports (video, then motion).
    Returns:
        The table as a Markdown string.
    """
    if not rows:
        raise ValueError("ablation_table needs at least one method")
    flat = {name: _metrics_of(r) for name, r in rows.items()}
    columns = {k: spec for k, spec in {**VIDEO_COLUMNS, **MOTION_COLUMNS, **KEEP_COLUMNS, **SET_COLUMNS}.items()
               if any(m.get(k) is not None for m in flat.values())}
    if not columns:
        raise ValueError(f"no table metric in any row; known metrics: {list(VIDEO_COLUMNS) + list(MOTION_COLUMNS)}")
    return _table(flat, columns)


def render_markdown(result: dict, name: str = "ours") -> str:
    """Tab. 1 (video) and Tab. 2 (motion) of one result, plus references, coverage and notes.

    Args:
        result: ``evaluate_scene`` output or ``aggregate`` / ``evaluate_dirs`` output (then one row
            per scene follows the mean row).
        name: row label of a single-scene result / of the mean row.
    """
    rows = {name if "per_scene" not in result else f"mean ({result['scenes']} scenes)": result["metrics"]}
    for r in result.get("per_scene", []):
        rows[r.get("scene", "?")] = r["metrics"]
    legend = {**VIDEO_COLUMNS, **KEEP_COLUMNS, **MOTION_COLUMNS, **SET_COLUMNS, **REFERENCE_COLUMNS}
    m = result["matching"]
    lines = [
        "## Video quality (Tab. 1)", "", _table(rows, VIDEO_COLUMNS), "",
        "## Scene kept, hand shown (issue 10, item 4)", "", _table(rows, KEEP_COLUMNS), "",
        "## Motion (Tab. 2)", "", _table(rows, MOTION_COLUMNS), "",
        "## Motion of all tracks, no identity (issue 10, item 1)", "", _table(rows, SET_COLUMNS), "",
        "## References", "", _table(rows, REFERENCE_COLUMNS), "",
        f"Track matching: {m['matched']} of {m['pred_tracks']} predicted tracks matched "
        f"(coverage {_cell(m['coverage'], '.3f')}); ground-truth coverage {_cell(m['gt_coverage'], '.3f')} "
        f"({m['gt_matched']} of {m['gt_visible']} reachable tracks)"
        + (f"; identity by {m['identity']}." if "identity" in m else "."),
        "", "Units: " + "; ".join(f"{h}: {u}" for h, _, u in legend.values()) + ".",
    ]
    if result["unavailable"]:
        lines += ["", "Unavailable (n/a):"] + [f"- {k}: {v}" for k, v in result["unavailable"].items()]
    if result.get("notes"):
        lines += ["", "Notes:"] + [f"- {k}: {v}" for k, v in result["notes"].items()]
    return "\n".join(lines) + "\n"


def json_ready(obj):
    """NaN / inf -> None, numpy scalars -> Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_tables(results: dict | list, out_json: str | Path | None = None, out_md: str | Path | None = None,
                 name: str = "ours") -> str:
    """Write a result as JSON (NaN as null) and as Markdown tables; return the Markdown.

    Args:
        results: one ``evaluate_scene`` / ``evaluate_dirs`` result, or a list of per-scene results
            (aggregated with ``aggregate``).
        out_json, out_md: output paths (parent directories are created); None skips that file.
        name: row label of a single-scene result.
    """
    result = aggregate(results) if isinstance(results, list) else results
    markdown = render_markdown(result, name)
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(json_ready(result), indent=1, allow_nan=False))
    if out_md is not None:
        Path(out_md).parent.mkdir(parents=True, exist_ok=True)
        Path(out_md).write_text(markdown)
    return markdown
