"""Rigid pose trajectories of labelled objects (syncmv4d_core.poses), on exact and on noisy data.

Ground truth: procedural synthetic scenes (``syncmv4d_core.data.synthetic``) move the tool and
the target rigidly (the target stays put), so their tracks must be explained by one rigid
motion per frame (residual ~ float32 rounding) and the target's pose must be constant; the
articulated hand must not be. A known rigid motion with 1 mm noise added to the synthetic tool's
points checks the recovered rotation (degrees) and translation (mm).
"""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.poses import fit_rigid, object_poses
from syncmv4d_core.scene import HAND, TARGET, TOOL


def rotation_error_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(R1.T @ R2).magnitude()))


@pytest.fixture(scope="module")
def scene():
    # seed 3: a scene with a target; 400 tracks so every part has many.
    return generate_scene(3, SynthConfig(num_frames=9, height=64, width=64, num_points=400))


def test_fit_rigid_recovers_a_transform_and_never_reflects():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(20, 3))
    R = Rotation.random(random_state=1).as_matrix()
    t = np.array([0.3, -0.1, 0.2])
    R_fit, t_fit, rms = fit_rigid(source, source @ R.T + t)
    np.testing.assert_allclose(R_fit, R, atol=1e-10)
    np.testing.assert_allclose(t_fit, t, atol=1e-10)
    assert rms < 1e-10
    R_fit, _, rms = fit_rigid(source, source * [1, 1, -1])  # a mirror image: best rotation, not a reflection
    assert np.linalg.det(R_fit) == pytest.approx(1.0) and rms > 0.1


@pytest.mark.parametrize("source, message", [
    (np.zeros((2, 3)), "at least 3 points"),
    (np.outer(np.arange(5.0), [1.0, 2.0, 3.0]), "collinear"),
    (np.full((4, 3), np.nan), "finite"),
    (np.zeros((4, 2)), r"\(N, 3\)"),
])
def test_fit_rigid_errors(source, message):
    with pytest.raises(ValueError, match=message):
        fit_rigid(source, source)


def test_synthetic_tool_and_target_are_rigid_and_the_target_stays(scene):
    trajectories = object_poses(scene.tracks_world, scene.labels)
    assert set(trajectories) == {TOOL, TARGET}
    for label, trajectory in trajectories.items():
        assert trajectory.poses.shape == (scene.num_frames, 4, 4) and trajectory.track_indices.size >= 10
        assert trajectory.residual.max() < 1e-5, (trajectory.name, trajectory.residual)  # < 0.01 mm
        # poses[f] applied to the frame-0 points (object frame) reproduces frame f
        local = scene.tracks_world[0, trajectory.track_indices] - trajectory.poses[0][:3, 3]
        for f in range(scene.num_frames):
            moved = local @ trajectory.poses[f][:3, :3].T + trajectory.poses[f][:3, 3]
            np.testing.assert_allclose(moved, scene.tracks_world[f, trajectory.track_indices], atol=2e-5)
    target = trajectories[TARGET].poses
    for f in range(scene.num_frames):
        assert rotation_error_deg(target[0][:3, :3], target[f][:3, :3]) < 0.01
        assert np.linalg.norm(target[f][:3, 3] - target[0][:3, 3]) < 1e-5
    tool = trajectories[TOOL].poses
    assert np.linalg.norm(tool[-1][:3, 3] - tool[0][:3, 3]) > 0.01  # the tool does move (> 1 cm)


def test_the_articulated_hand_is_not_rigid(scene):
    hand = object_poses(scene.tracks_world, scene.labels, objects=(HAND,))[HAND]
    tool = object_poses(scene.tracks_world, scene.labels)[TOOL]
    assert hand.residual.max() > 1e-3 > 100 * tool.residual.max()  # > 1 mm versus < 0.01 mm


def test_known_motion_with_noise_is_recovered_in_mm_and_degrees(scene):
    rng = np.random.default_rng(7)
    points = scene.tracks_world[0, scene.labels == TOOL].astype(np.float64)  # (N, 3) the real tool shape
    F = 9
    rotations = Rotation.from_rotvec(rng.uniform(-0.5, 0.5, (F, 3)) * np.linspace(0, 1, F)[:, None]).as_matrix()
    translations = rng.uniform(-0.1, 0.1, (F, 3)) * np.linspace(0, 1, F)[:, None]
    centre = points.mean(0)
    clean = np.stack([(points - centre) @ R.T + centre + t for R, t in zip(rotations, translations)])  # (F, N, 3)
    sigma = 0.001
    noisy = clean + rng.normal(scale=sigma, size=clean.shape)
    labels = np.full(points.shape[0], TOOL)
    trajectory = object_poses(noisy, labels)[TOOL]
    # The true object frame: the frame-0 centroid of the clean points, moved by each motion.
    rot_err = [rotation_error_deg(trajectory.poses[f][:3, :3] @ trajectory.poses[0][:3, :3].T, rotations[f])
               for f in range(F)]
    true_centres = centre + translations
    trans_err = np.linalg.norm(trajectory.poses[:, :3, 3] - true_centres, axis=1)
    assert max(rot_err) < 1.0, rot_err  # degrees
    assert trans_err.max() < 1e-3, trans_err  # metres (noise of the frame-0 centroid included)
    # The residual is the noise seen through the fit: about sigma * sqrt(3 * 2) for two noisy frames.
    assert np.all((trajectory.residual[1:] > 1.0 * sigma) & (trajectory.residual[1:] < 4.0 * sigma))
    print(f"\n{points.shape[0]} tool tracks, 1 mm noise: rotation error max {max(rot_err):.3f} deg, "
          f"translation error max {trans_err.max() * 1e3:.3f} mm, residual median "
          f"{np.median(trajectory.residual[1:]) * 1e3:.2f} mm")


def test_objects_without_enough_tracks_are_skipped():
    tracks = np.zeros((3, 4, 3))
    labels = np.array([TOOL, TOOL, TARGET, TARGET])
    assert object_poses(tracks, labels) == {}
    with pytest.raises(ValueError, match="tracks must be"):
        object_poses(tracks, labels[:2])
