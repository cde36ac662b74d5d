"""Motion and video metrics (the paper's Tab. 1-3), defined on numpy arrays.

Track metrics take world-frame tracks (F, K, 3) in metres whose K axis is the same identity in
prediction and ground truth. Relative point error is measured in a camera frame (as
GeometryCrafter measures point maps), so ``||p_gt||`` is the distance to the camera (~1 m), not to
an arbitrary world origin.

Definitions:
    RPE   mean over points of ||p - p_gt|| / max(||p_gt||, 0.01), camera frame, x100.
    PI@τ  percentage of points with that relative error < τ (τ = 0.25 as in the paper; 0.05 too,
          because hand-scale motion ~1 m from the camera makes a do-nothing prediction pass 0.25).
    median_error_mm  median ||p - p_gt|| in millimetres (frame-independent).
    Chamfer  per frame, mean_x min_y ||x - y||^2 + mean_y min_x ||x - y||^2 (m^2), averaged over frames.
    Smoothness  mean ||x_{t+1} - 2 x_t + x_{t-1}|| (metres / frame^2); lower is smoother.
    RPE-MV / PI-MV  multi-view motion consistency: the per-view tracks decoded from each view's
          motion pseudo video (V, F, K, 3) compared pairwise (view i against view j, in camera j),
          over tracks both views decode; 0 for perfectly consistent views.
    Matching pixels  SIFT keypoints matched between two views of the same frame (Lowe ratio 0.75)
          and kept as RANSAC fundamental-matrix inliers, counted per frame and view pair and
          averaged. This is OpenCV SIFT + RANSAC, not GIM (the paper's matcher), so absolute numbers
          are not comparable with the paper's.

Identity-free motion over ALL generated tracks (issue 10; no track identity, any K):
    surface@2cm  % of generated tracks whose frame-0 point lies within 2 cm of a true surface
          point (the ground-truth tracks' frame-0 points are the surface sample).
    chamfer_mm  per frame, (mean_x min_y ||x - y|| + mean_y min_x ||x - y||) / 2 in mm, averaged
          over frames (not squared, unlike Chamfer above).
    disp_mm / disp_moving_mm  each generated track tied to the true track nearest at frame 0;
          mean over frames t >= 1 of ||(p_t - p_0) - (g_t - g_0)|| in mm, over all tracks / over
          tracks tied to a true track that moves more than 1 cm; "_static" versions for the
          prediction's own frame 0 held still.

Frame 0 of the motion pseudo videos (where the frame-0 geometry of the tracks comes from):
    drawn0_precision / drawn0_recall  % of the predicted frame-0 pixels that are drawn (brightest
          channel above the decoder's foreground threshold) and also drawn by the true tracks / of
          the true drawn pixels that the prediction draws.
    depth0_mm  median |z_pred - z_true| (camera z, mm) over the pixels drawn in both, each decoded
          from B with its own depth range.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
from scipy.spatial import cKDTree

from ..cameras import Camera
from ..pseudo_video import FOREGROUND_THRESHOLD


def _check_tracks(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"tracks must both be (F, K, 3), got {pred.shape} and {gt.shape}")


def relative_point_errors(pred: np.ndarray, gt: np.ndarray, cameras: list[Camera], valid: np.ndarray | None = None) -> np.ndarray:
    """Relative errors of every (view, frame, point) in that view's camera frame.

    Args:
        pred, gt: (F, K, 3) world tracks, metres.
        cameras: the views to measure in.
        valid: optional (F, K) bool mask of points to count.
    Returns:
        (N,) relative errors of the counted points over all views.
    """
    _check_tracks(pred, gt)
    errors = []
    for cam in cameras:
        p, g = cam.to_camera(pred), cam.to_camera(gt)
        rel = np.linalg.norm(p - g, axis=-1) / np.maximum(np.linalg.norm(g, axis=-1), 0.01)
        errors.append(rel[valid] if valid is not None else rel.ravel())
    return np.concatenate(errors)


def track_accuracy(pred: np.ndarray, gt: np.ndarray, cameras: list[Camera], valid: np.ndarray | None = None) -> dict:
    """RPE, PI@0.25, PI@0.05 (all x100) and the median error in mm."""
    rel = relative_point_errors(pred, gt, cameras, valid)
    err = np.linalg.norm(pred - gt, axis=-1)
    err = err[valid] if valid is not None else err.ravel()
    return {
        "RPE": 100.0 * float(rel.mean()),
        "PI@0.25": 100.0 * float((rel < 0.25).mean()),
        "PI@0.05": 100.0 * float((rel < 0.05).mean()),
        "median_error_mm": 1000.0 * float(np.median(err)),
    }


def chamfer_distance(pred: np.ndarray, gt: np.ndarray) -> float:
    """Symmetric squared Chamfer distance (m^2) between point sets per frame, averaged over frames.

    Args:
        pred: (F, K1, 3), gt: (F, K2, 3) metres (no identity needed).
    """
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[0] != gt.shape[0]:
        raise ValueError(f"chamfer needs (F, K, 3) sets with equal F, got {pred.shape} and {gt.shape}")
    total = 0.0
    for a, b in zip(pred, gt):
        d_ab, _ = cKDTree(b).query(a)
        d_ba, _ = cKDTree(a).query(b)
        total += float((d_ab ** 2).mean() + (d_ba ** 2).mean())
    return total / pred.shape[0]


def motion_smoothness(tracks: np.ndarray) -> float:
    """Mean second-difference magnitude ||x_{t+1} - 2 x_t + x_{t-1}|| of (F, K, 3) tracks (m / frame^2)."""
    if tracks.ndim != 3 or tracks.shape[0] < 3:
        raise ValueError(f"smoothness needs (F >= 3, K, 3) tracks, got {tracks.shape}")
    accel = tracks[2:] - 2.0 * tracks[1:-1] + tracks[:-2]
    return float(np.linalg.norm(accel, axis=-1).mean())


def multiview_consistency(per_view: np.ndarray, valid: np.ndarray, cameras: list[Camera]) -> dict:
    """RPE-MV and PI-MV (x100) between per-view decoded tracks.

    Args:
        per_view: (V, F, K, 3) world tracks decoded from each view's pseudo video, metres.
        valid: (V, F, K) bool, where each view decoded the track.
        cameras: the V cameras (view j's frame is used when comparing i against j).
    Returns:
        {"RPE-MV", "PI-MV", "pairs"}; NaN metrics when no track is shared by two views.
    """
    V = per_view.shape[0]
    if V < 2:
        raise ValueError("multi-view consistency needs at least two views")
    rel = []
    for i, j in itertools.permutations(range(V), 2):
        both = valid[i] & valid[j]
        if both.any():
            rel.append(relative_point_errors(per_view[i], per_view[j], [cameras[j]], both))
    if not rel:
        return {"RPE-MV": float("nan"), "PI-MV": float("nan"), "pairs": 0}
    rel = np.concatenate(rel)
    return {"RPE-MV": 100.0 * float(rel.mean()), "PI-MV": 100.0 * float((rel < 0.25).mean()), "pairs": int(rel.size)}


def matching_pixels(videos: np.ndarray, ratio: float = 0.75, ransac_px: float = 1.0) -> float:
    """Mean number of RANSAC-verified SIFT matches per frame and view pair.

    Args:
        videos: (V, F, H, W, 3) uint8.
    """
    if videos.ndim != 5 or videos.shape[0] < 2:
        raise ValueError(f"matching pixels needs (V >= 2, F, H, W, 3) videos, got {videos.shape}")
    sift = cv2.SIFT_create()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    counts = []
    for f in range(videos.shape[1]):
        feats = [sift.detectAndCompute(cv2.cvtColor(v[f], cv2.COLOR_RGB2GRAY), None) for v in videos]
        for (ka, da), (kb, db) in itertools.combinations(feats, 2):
            if da is None or db is None or len(ka) < 8 or len(kb) < 8:
                counts.append(0)
                continue
            good = [m for m, n in (p for p in matcher.knnMatch(da, db, k=2) if len(p) == 2) if m.distance < ratio * n.distance]
            if len(good) < 8:
                counts.append(0)
                continue
            pa = np.float32([ka[m.queryIdx].pt for m in good])
            pb = np.float32([kb[m.trainIdx].pt for m in good])
            _, mask = cv2.findFundamentalMat(pa, pb, cv2.FM_RANSAC, ransac_px, 0.999)
            counts.append(int(mask.sum()) if mask is not None else 0)
    return float(np.mean(counts))


# ---------------------------------------------------------------------------------- identity-free motion
# These compare ALL generated tracks with the true track set, without any track identity: a
# generated track is tied to the true track nearest to it at frame 0. The true surface is
# represented by the ground-truth tracks' frame-0 points (the only surface sample a scene
# stores for every source: synthetic, TACO and generated), so "within 2 cm of a true surface
# point" means within 2 cm of one of those K_gt points (docs/metrics.md: how sparse K_gt makes
# this for a perfect prediction that samples the surface elsewhere).
SURFACE_RADIUS_M = 0.02      # surface proximity radius, metres
MOVING_THRESHOLD_M = 0.01    # a true track "moves" if its largest displacement from frame 0 exceeds this, metres


def _check_sets(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[-1] != 3 or gt.shape[-1] != 3 or pred.shape[0] != gt.shape[0]:
        raise ValueError(f"track sets must be (F, K, 3) with equal F, got {pred.shape} and {gt.shape}")
    if pred.shape[1] == 0 or gt.shape[1] == 0:
        raise ValueError(f"track sets must be non-empty, got {pred.shape} and {gt.shape}")


def surface_proximity(pred: np.ndarray, gt: np.ndarray, radius: float = SURFACE_RADIUS_M) -> float:
    """Fraction of predicted tracks whose frame-0 point lies within ``radius`` of a true surface point.

    Args:
        pred: (F, K1, 3) predicted world tracks, metres (any order, any K1).
        gt: (F, K2, 3) ground-truth world tracks, metres; their frame-0 points are the surface sample.
        radius: metres.
    Returns:
        The fraction in [0, 1] (tables report it x100, as %).
    """
    _check_sets(pred, gt)
    d, _ = cKDTree(gt[0]).query(pred[0])
    return float((d <= radius).mean())


def chamfer_mm_per_frame(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Per-frame Chamfer distance as a mean nearest distance, both ways, in millimetres.

    Per frame t: ``acc_t = mean_x min_y ||x - y||`` (x predicted, y true: how far generated points
    lie from the true set), ``comp_t = mean_y min_x ||x - y||`` (how far true points lie from the
    generated set) and ``chamfer_t = (acc_t + comp_t) / 2`` (not squared; a set shifted by d much
    larger than the point spacing scores d).

    Args:
        pred: (F, K1, 3), gt: (F, K2, 3) world tracks, metres (no identity needed).
    Returns:
        {"chamfer_mm": mean over frames of chamfer_t, "accuracy_mm": mean acc_t,
         "completeness_mm": mean comp_t, "per_frame_mm": (F,) chamfer_t}.
    """
    _check_sets(pred, gt)
    acc = np.empty(pred.shape[0])
    comp = np.empty(pred.shape[0])
    for t, (a, b) in enumerate(zip(pred, gt)):
        acc[t] = cKDTree(b).query(a)[0].mean()
        comp[t] = cKDTree(a).query(b)[0].mean()
    per_frame = 1000.0 * (acc + comp) / 2.0
    return {"chamfer_mm": float(per_frame.mean()), "accuracy_mm": 1000.0 * float(acc.mean()),
            "completeness_mm": 1000.0 * float(comp.mean()), "per_frame_mm": per_frame}


def tie_to_nearest(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(K1,) index of the true track nearest to each predicted track at frame 0.

    Args:
        pred: (F, K1, 3), gt: (F, K2, 3) world tracks, metres.
    """
    _check_sets(pred, gt)
    return cKDTree(gt[0]).query(pred[0])[1].astype(np.int64)


def tied_displacement_error(pred: np.ndarray, gt: np.ndarray, moving_threshold: float = MOVING_THRESHOLD_M) -> dict:
    """Displacement error of every predicted track against the true track it is tied to at frame 0.

    Track k is tied to true track j(k) = ``tie_to_nearest``; its error is the mean over frames
    t >= 1 of ``||(p_t,k - p_0,k) - (g_t,j - g_0,j)||``: the motion is compared, not the position,
    so a frame-0 offset is not counted (surface proximity measures that). The static prediction
    (p_t = p_0) therefore scores exactly the true motion of the tied tracks.

    Args:
        pred: (F >= 2, K1, 3) predicted world tracks, metres; gt: (F, K2, 3) true tracks, metres.
        moving_threshold: a true track moves if ``max_t ||g_t - g_0|| > moving_threshold`` metres.
    Returns:
        {"disp_mm": mean over tracks and frames t >= 1, mm; "disp_moving_mm": the same over the
         predicted tracks tied to a moving true track (NaN if none); "moving_fraction": the share
         of predicted tracks tied to a moving true track; "per_track_mm": (K1,) mean error per
         track; "tied": (K1,) j(k)}.
    """
    _check_sets(pred, gt)
    if pred.shape[0] < 2:
        raise ValueError(f"displacement needs F >= 2 frames, got {pred.shape[0]}")
    tied = tie_to_nearest(pred, gt)
    true_disp = gt[:, tied] - gt[:1, tied]                                       # (F, K1, 3)
    err = np.linalg.norm((pred - pred[:1]) - true_disp, axis=-1)[1:]              # (F-1, K1)
    per_track = err.mean(axis=0)                                                  # (K1,)
    moving = np.linalg.norm(gt - gt[:1], axis=-1).max(axis=0)[tied] > moving_threshold  # (K1,)
    return {"disp_mm": 1000.0 * float(per_track.mean()),
            "disp_moving_mm": 1000.0 * float(per_track[moving].mean()) if moving.any() else float("nan"),
            "moving_fraction": float(moving.mean()), "per_track_mm": 1000.0 * per_track, "tied": tied}


def static_tracks(tracks: np.ndarray) -> np.ndarray:
    """The static baseline of a track set: its own frame-0 points held still, (F, K, 3)."""
    if tracks.ndim != 3 or tracks.shape[-1] != 3:
        raise ValueError(f"tracks must be (F, K, 3), got {tracks.shape}")
    return np.broadcast_to(tracks[:1], tracks.shape).copy()


def label_accuracy(pred: np.ndarray, pred_labels: np.ndarray, gt: np.ndarray, gt_labels: np.ndarray,
                   radius: float = SURFACE_RADIUS_M) -> dict:
    """Accuracy of predicted track labels on the tracks tied to a true track at frame 0.

    A predicted track is tied to its nearest true track at frame 0 when that track lies within
    ``radius`` (metres); its label is right when it equals the true track's.

    Args:
        pred: (F, K1, 3), gt: (F, K2, 3) world tracks, metres; pred_labels (K1,), gt_labels (K2,).
    Returns:
        {"label_acc": % right among the tied tracks (nan when none is tied), "label_tied": % of the
        predicted tracks that are tied}.
    """
    _check_sets(pred, gt)
    dist, nearest = cKDTree(gt[0]).query(pred[0])
    tied = dist <= radius
    right = np.asarray(pred_labels)[tied] == np.asarray(gt_labels)[nearest[tied]]
    return {"label_acc": 100.0 * float(right.mean()) if tied.any() else float("nan"),
            "label_tied": 100.0 * float(tied.mean())}


def identity_free_motion(pred: np.ndarray, gt: np.ndarray, radius: float = SURFACE_RADIUS_M,
                         moving_threshold: float = MOVING_THRESHOLD_M) -> dict:
    """All identity-free motion metrics of a predicted track set and of its static baseline.

    Args:
        pred: (F, K1, 3) predicted world tracks, metres (all of them; finite).
        gt: (F, K2, 3) ground-truth world tracks, metres.
        radius, moving_threshold: see ``surface_proximity`` / ``tied_displacement_error``, metres.
    Returns:
        {"surface@2cm": % of predicted tracks within ``radius`` at frame 0 (x100),
         "chamfer_mm", "accuracy_mm", "completeness_mm", "disp_mm", "disp_moving_mm",
         "moving_fraction" (x100, %), and the same with suffix "_static" for
         ``static_tracks(pred)`` (its surface proximity equals pred's, so it is not repeated),
         "disp_moving_ratio": disp_moving_mm / disp_moving_mm_static}.
    """
    out = {"surface@2cm": 100.0 * surface_proximity(pred, gt, radius)}
    still = static_tracks(pred)
    for suffix, tracks in (("", pred), ("_static", still)):
        ch = chamfer_mm_per_frame(tracks, gt)
        disp = tied_displacement_error(tracks, gt, moving_threshold)
        out.update({f"chamfer_mm{suffix}": ch["chamfer_mm"], f"accuracy_mm{suffix}": ch["accuracy_mm"],
                    f"completeness_mm{suffix}": ch["completeness_mm"], f"disp_mm{suffix}": disp["disp_mm"],
                    f"disp_moving_mm{suffix}": disp["disp_moving_mm"]})
        if not suffix:
            out["moving_fraction"] = 100.0 * disp["moving_fraction"]
    static = out["disp_moving_mm_static"]
    out["disp_moving_ratio"] = out["disp_moving_mm"] / static if static > 0 else float("nan")
    return out


def motion_video_frame0(pred: np.ndarray, pred_ranges: np.ndarray, true: np.ndarray, true_ranges: np.ndarray,
                        threshold: float = FOREGROUND_THRESHOLD) -> dict:
    """Frame 0 of predicted motion pseudo videos against the ones the true tracks draw, same views.

    Args:
        pred, true: (V, H, W, 3) float frame-0 pseudo images in [0, 1].
        pred_ranges, true_ranges: (V, 2) depth ranges (zmin, zmax), metres, B = (z - zmin) / (zmax - zmin).
        threshold: a pixel is drawn when its brightest channel exceeds this (the decoder's rule).
    Returns:
        {"drawn0_precision", "drawn0_recall"} in %, {"depth0_mm"} mm (NaN where no pixel qualifies).
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(f"pred and true must be (V, H, W, 3) of one shape, got {pred.shape} and {true.shape}")
    drawn_p, drawn_t = pred.max(-1) > threshold, true.max(-1) > threshold            # (V, H, W)
    both = drawn_p & drawn_t

    def depth(images, ranges):
        ranges = np.asarray(ranges, np.float64)[:, None, None]                       # (V, 1, 1, 2)
        return ranges[..., 0] + images[..., 2] * (ranges[..., 1] - ranges[..., 0])

    err = np.abs(depth(pred, pred_ranges) - depth(true, true_ranges))[both]
    return {"drawn0_precision": 100.0 * both.sum() / drawn_p.sum() if drawn_p.any() else float("nan"),
            "drawn0_recall": 100.0 * both.sum() / drawn_t.sum() if drawn_t.any() else float("nan"),
            "depth0_mm": 1e3 * float(np.median(err)) if err.size else float("nan")}
