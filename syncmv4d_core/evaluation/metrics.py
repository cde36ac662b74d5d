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
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
from scipy.spatial import cKDTree

from ..cameras import Camera


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
