"""Per-object 6-DoF pose trajectories from labelled 4D point tracks (rigid least-squares fits).

A rigid object's tracks move together: for every frame f there is one rotation R_f and
translation t_f with ``x_k(f) = R_f x_k(0) + t_f`` for all its tracks k. ``fit_rigid`` finds the
least-squares (R, t) between two point sets (Kabsch / Umeyama without scale, via SVD, with the
reflection fixed); ``object_poses`` fits every frame of each labelled object against its frame 0
and reports the per-frame RMS residual (how far the tracks are from moving rigidly: ~0 for
exact rigid tracks, larger for noise, wrong labels or a non-rigid part such as the hand).

The object frame: origin at the centroid of the object's frame-0 points, axes parallel to the
world axes at frame 0. So ``poses[0]`` is a pure translation and ``poses[f] = Delta_f @ poses[0]``
with ``Delta_f = [R_f | t_f]`` the object's motion since frame 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import LABEL_NAMES, TARGET, TOOL

RIGID_LABELS = (TOOL, TARGET)  # the hand is articulated: a single rigid pose does not describe it


@dataclass(frozen=True)
class ObjectTrajectory:
    """The pose trajectory of one labelled object.

    Attributes:
        label: the tracks' label (``scene.TOOL``, ``scene.TARGET``, ...).
        poses: (F, 4, 4) world_T_object per frame (metres).
        residual: (F,) RMS distance of the object's tracks from the fitted rigid motion, metres.
        track_indices: (N,) the tracks the fit used (the label's tracks finite in every frame).
    """

    label: int
    poses: np.ndarray
    residual: np.ndarray
    track_indices: np.ndarray

    @property
    def name(self) -> str:
        return LABEL_NAMES.get(self.label, str(self.label))


def fit_rigid(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares rigid transform with ``target ~ source @ R.T + t``.

    Args:
        source, target: (N, 3) corresponding points, N >= 3, not all on one line.
    Returns:
        R (3, 3) rotation (det +1), t (3,) translation, RMS residual (same units as the points).
    Raises:
        ValueError: shape mismatch, fewer than 3 points, non-finite values or collinear points.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3:
        raise ValueError(f"source and target must both be (N, 3), got {source.shape} and {target.shape}")
    if source.shape[0] < 3:
        raise ValueError(f"a rigid fit needs at least 3 points, got {source.shape[0]}")
    if not (np.isfinite(source).all() and np.isfinite(target).all()):
        raise ValueError("a rigid fit needs finite points")
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    # The second singular value of the centred source is ~0 for collinear points: the
    # rotation about that line is then undetermined.
    spread = np.linalg.svd(a, compute_uv=False)
    if spread[1] <= 1e-9 * max(spread[0], 1e-12) or spread[0] == 0:
        raise ValueError("the points are collinear (or coincide): the rotation is undetermined")
    U, _, Vt = np.linalg.svd(a.T @ b)  # (3, 3) cross-covariance source^T target
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0])  # no reflection
    R = Vt.T @ D @ U.T
    t = mu_t - R @ mu_s
    rms = float(np.sqrt(np.mean(np.sum((source @ R.T + t - target) ** 2, axis=1))))
    return R, t, rms


def object_poses(tracks: np.ndarray, labels: np.ndarray, objects: tuple[int, ...] = RIGID_LABELS,
                 min_tracks: int = 3) -> dict[int, ObjectTrajectory]:
    """Pose trajectories of the labelled objects in ``tracks``.

    Args:
        tracks: (F, K, 3) world positions, metres.
        labels: (K,) per-track labels.
        objects: the labels to fit (each one object); others are ignored.
        min_tracks: an object with fewer tracks finite in every frame (or only collinear ones)
            gets no trajectory.
    Returns:
        label -> ObjectTrajectory, for every label of ``objects`` that could be fitted.
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    labels = np.asarray(labels)
    if tracks.ndim != 3 or tracks.shape[2] != 3 or labels.shape != (tracks.shape[1],):
        raise ValueError(f"tracks must be (F, K, 3) and labels (K,), got {tracks.shape} and {labels.shape}")
    finite = np.isfinite(tracks).all(axis=(0, 2))  # (K,)
    out: dict[int, ObjectTrajectory] = {}
    for label in objects:
        index = np.flatnonzero((labels == label) & finite)
        if index.size < max(3, min_tracks):
            continue
        points = tracks[:, index]  # (F, N, 3)
        origin = np.eye(4)
        origin[:3, 3] = points[0].mean(0)
        poses = np.empty((tracks.shape[0], 4, 4))
        residual = np.empty(tracks.shape[0])
        try:
            for f in range(tracks.shape[0]):
                R, t, residual[f] = fit_rigid(points[0], points[f])
                delta = np.eye(4)
                delta[:3, :3], delta[:3, 3] = R, t
                poses[f] = delta @ origin
        except ValueError:  # collinear tracks: no orientation to recover
            continue
        out[int(label)] = ObjectTrajectory(int(label), poses, residual, index)
    return out
