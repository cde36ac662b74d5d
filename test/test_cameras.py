"""Pinhole camera geometry, image-space edits, construction paths and validation."""

import json

import numpy as np
import pytest
import transforms3d

from syncmv4d_core.cameras import Camera


def rig_camera(name: str = "cam03", width: int = 704, height: int = 480) -> Camera:
    return Camera.look_at(name, eye=(0.6, -0.7, 0.8), target=(0.0, 0.05, 0.1), fov_y_deg=45.0, width=width, height=height,
                          cluster="left")


def random_points(num: int, seed: int = 0) -> np.ndarray:
    """(N, 3) world points around the look-at target, metres."""
    return np.random.default_rng(seed).uniform(-0.2, 0.2, size=(num, 3)) + (0.0, 0.05, 0.1)


def test_project_unproject_round_trip():
    cam = rig_camera()
    points = random_points(200)
    uv, depth = cam.project(points)
    assert (depth > 0.5).all() and cam.in_image(uv, depth).all()
    np.testing.assert_allclose(cam.unproject(uv, depth), points, atol=1e-9)
    pix = np.random.default_rng(1).uniform(0, 400, size=(50, 2))
    d = np.random.default_rng(2).uniform(0.3, 2.0, size=50)
    uv2, depth2 = cam.project(cam.unproject(pix, d))
    np.testing.assert_allclose(uv2, pix, atol=1e-8)
    np.testing.assert_allclose(depth2, d, atol=1e-12)


def test_principal_point_and_optical_axis():
    cam = rig_camera()
    on_axis = cam.unproject(np.array([(cam.width - 1) / 2, (cam.height - 1) / 2]), np.array(1.0))
    forward = cam.world_T_cam[:3, 2]
    np.testing.assert_allclose(on_axis, cam.position + forward, atol=1e-12)
    # OpenCV frame: +x_cam is image right, +y_cam is image down.
    uv_right, _ = cam.project(cam.position + forward + 0.1 * cam.world_T_cam[:3, 0])
    uv_down, _ = cam.project(cam.position + forward + 0.1 * cam.world_T_cam[:3, 1])
    assert uv_right[0] > (cam.width - 1) / 2 and uv_down[1] > (cam.height - 1) / 2


def test_crop_moves_pixels_by_the_offset():
    cam = rig_camera()
    points = random_points(50)
    uv, depth = cam.project(points)
    cropped = cam.crop(100, 40, 300, 200)
    uv_c, depth_c = cropped.project(points)
    np.testing.assert_allclose(uv_c, uv - (100, 40), atol=1e-9)
    np.testing.assert_allclose(depth_c, depth)
    assert (cropped.width, cropped.height) == (300, 200)
    inside = cropped.in_image(uv_c, depth_c)
    expected = (uv[:, 0] > 99.5) & (uv[:, 0] < 399.5) & (uv[:, 1] > 39.5) & (uv[:, 1] < 239.5)
    np.testing.assert_array_equal(inside, expected)


def test_resize_scales_pixel_edges():
    cam = rig_camera()
    points = random_points(50)
    uv, _ = cam.project(points)
    half = cam.resize(352, 240)
    uv_h, _ = half.project(points)
    # Pixel-centre convention: the edge u = -0.5 maps to -0.5, so u' = (u + 0.5) * s - 0.5.
    np.testing.assert_allclose(uv_h, (uv + 0.5) * 0.5 - 0.5, atol=1e-9)
    np.testing.assert_allclose(half.resize(704, 480).K, cam.K, atol=1e-12)
    aniso = cam.resize(1408, 240)
    uv_a, _ = aniso.project(points)
    np.testing.assert_allclose(uv_a, (uv + 0.5) * (2.0, 0.5) - 0.5, atol=1e-9)


def test_crop_then_resize_matches_image_operations():
    """A point's pixel after crop + resize agrees with cropping then resizing the pixel grid."""
    cam = rig_camera()
    point = cam.unproject(np.array([250.0, 130.0]), np.array(0.9))
    edited = cam.crop(200, 100, 256, 128).resize(512, 256)
    uv, _ = edited.project(point)
    np.testing.assert_allclose(uv, [(50 + 0.5) * 2 - 0.5, (30 + 0.5) * 2 - 0.5], atol=1e-9)


def test_from_taco_matches_from_pose():
    K = np.array([[3000.0, 0.0, 2048.0], [0.0, 3000.0, 1500.0], [0.0, 0.0, 1.0]])
    quat = transforms3d.euler.euler2quat(0.3, -0.2, 2.5)
    R_cw = transforms3d.quaternions.quat2mat(quat)                          # camera -> world
    xyz = np.array([0.4, -0.6, 0.9])
    R = R_cw.T                                                              # TACO: world -> camera
    T = -R @ xyz
    a = Camera.from_taco("22070938", K, R, T, 4096, 3000)
    b = Camera.from_pose("22070938", K, xyz, quat, 4096, 3000)
    np.testing.assert_allclose(a.world_T_cam, b.world_T_cam, atol=1e-12)
    points = random_points(20)
    np.testing.assert_allclose(a.to_camera(points), points @ R.T + T, atol=1e-12)   # x_cam = R X + T
    np.testing.assert_allclose(a.position, xyz, atol=1e-12)


def test_look_at_sees_the_target_upright():
    cam = Camera.look_at("c", eye=(1.0, -1.0, 1.0), target=(0.0, 0.0, 0.0), fov_y_deg=60.0, width=640, height=480)
    uv, depth = cam.project(np.zeros(3))
    np.testing.assert_allclose(uv, [319.5, 239.5], atol=1e-9)
    np.testing.assert_allclose(depth, np.sqrt(3.0), atol=1e-12)
    above, _ = cam.project(np.array([0.0, 0.0, 0.1]))                      # world up is image up
    assert above[1] < 239.5
    # The vertical field of view spans the image height.
    top = cam.unproject(np.array([319.5, -0.5]), np.array(1.0)) - cam.position
    axis = cam.world_T_cam[:3, 2]
    np.testing.assert_allclose(np.degrees(np.arccos(top @ axis / np.linalg.norm(top))), 30.0, atol=1e-9)
    with pytest.raises(ValueError, match="parallel"):
        Camera.look_at("down", eye=(0.0, 0.0, 1.0), target=(0.0, 0.0, 0.0), fov_y_deg=60.0, width=64, height=64)


def test_dict_round_trip_through_json():
    cam = rig_camera()
    data = json.loads(json.dumps(cam.to_dict()))
    back = Camera.from_dict(data)
    np.testing.assert_allclose(back.K, cam.K)
    np.testing.assert_allclose(back.world_T_cam, cam.world_T_cam, atol=1e-15)
    assert (back.name, back.width, back.height, back.cluster) == (cam.name, cam.width, cam.height, cam.cluster)
    del data["world_T_cam"]                                                 # pose-only form
    np.testing.assert_allclose(Camera.from_dict(data).world_T_cam, cam.world_T_cam, atol=1e-12)
    with pytest.raises(ValueError, match="cam03"):
        Camera.from_dict({k: v for k, v in data.items() if k not in ("xyz",)})
    with pytest.raises(ValueError, match="missing"):
        Camera.from_dict({"name": "x"})


@pytest.mark.parametrize("edit, message", [
    (lambda K, T: (np.where(np.eye(3) == 1, np.nan, K), T), "non-finite"),
    (lambda K, T: (K * np.array([[0, 1, 1], [1, 1, 1], [1, 1, 1]]), T), "intrinsics"),
    (lambda K, T: (K, T @ np.diag([1.0, 1.0, 1.05, 1.0])), "not rigid"),
    (lambda K, T: (K, T @ np.diag([1.0, 1.0, -1.0, 1.0])), "not rigid"),          # reflection
    (lambda K, T: (K[:2], T), "3x3"),
])
def test_invalid_cameras_name_the_camera(edit, message):
    good = rig_camera("bad_cam")
    K, T = edit(good.K.copy(), good.world_T_cam.copy())
    with pytest.raises(ValueError, match=f"bad_cam.*{message}"):
        Camera("bad_cam", K, T, 704, 480)


def test_invalid_size_cluster_and_quaternion():
    good = rig_camera()
    with pytest.raises(ValueError, match="cam03.*size"):
        Camera("cam03", good.K, good.world_T_cam, 0, 480)
    with pytest.raises(ValueError, match="cam03.*cluster"):
        Camera("cam03", good.K, good.world_T_cam, 704, 480, cluster="top")
    with pytest.raises(ValueError, match="cam03.*quaternion"):
        Camera.from_pose("cam03", good.K, (0, 0, 1), (0, 0, 0, 0), 704, 480)
