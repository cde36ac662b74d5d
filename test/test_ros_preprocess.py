"""Camera images -> model input (syncmv4d_ros.preprocess): undistortion, crops, resize, intrinsics.

Geometry is checked with points: a world point drawn as a blob into the (distorted, full-size)
camera image must land, after undistortion, crop and resize, where the returned model camera
projects it.
"""

import cv2
import numpy as np
import pytest

from syncmv4d_core.cameras import Camera
from syncmv4d_ros.preprocess import Undistorter, Window, crop_window, distortion_coefficients, to_model_input

PLUMB_BOB = [-0.28, 0.09, 0.0008, -0.0005, -0.012]  # a typical wide-angle webcam
RATIONAL = [0.35, -0.12, 0.0004, 0.0002, 0.02, 0.7, -0.1, 0.05]


def camera_640x480() -> Camera:
    cam = Camera.look_at("cam", (0.0, -0.6, 0.45), (0.0, 0.0, 0.05), 60.0, 640, 480)
    K = np.array([[600.0, 0.0, 322.5], [0.0, 598.0, 241.0], [0.0, 0.0, 1.0]])  # fx ~ 600, off-centre
    return Camera("cam", K, cam.world_T_cam, 640, 480)


def world_points(n: int = 5, spread: float = 0.25) -> np.ndarray:
    """(n * n, 3) points on a grid above the table, far enough apart that their blobs do not touch."""
    x, y = np.meshgrid(np.linspace(-spread, spread, n), np.linspace(-0.8 * spread, 0.8 * spread, n))
    return np.column_stack([x.ravel(), y.ravel(), np.full(n * n, 0.05)])


def draw_blobs(uv: np.ndarray, width: int, height: int, sigma: float = 2.0) -> np.ndarray:
    """(H, W, 3) uint8 image with a Gaussian blob at each pixel position ``uv`` (N, 2)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width))
    for x, y in uv:
        image = np.maximum(image, np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * sigma**2)))
    return np.repeat((image * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def blob_centre(image: np.ndarray, near: np.ndarray, radius: int) -> np.ndarray:
    """Intensity-weighted centroid (u, v) of ``image`` around pixel ``near``."""
    gray = image[..., 0].astype(np.float64)
    u0, v0 = np.round(near).astype(int)
    ys, xs = slice(max(v0 - radius, 0), v0 + radius + 1), slice(max(u0 - radius, 0), u0 + radius + 1)
    patch = gray[ys, xs]
    v, u = np.mgrid[ys, xs]
    return np.array([(patch * u).sum(), (patch * v).sum()]) / patch.sum()


def distorted_pixels(camera: Camera, points: np.ndarray, d: list[float]) -> np.ndarray:
    """Where a camera with distortion ``d`` (OpenCV order) images ``points``."""
    T = camera.cam_T_world
    rvec, _ = cv2.Rodrigues(T[:3, :3])
    uv, _ = cv2.projectPoints(points, rvec, T[:3, 3], camera.K, np.asarray(d, np.float64))
    return uv[:, 0]


# ---------------------------------------------------------------------- distortion models
def test_distortion_coefficients():
    assert distortion_coefficients("plumb_bob", [0.0] * 5) is None
    assert distortion_coefficients("", []) is None
    assert distortion_coefficients("equidistant", [0.0] * 4) is None  # all zero: nothing to undistort
    np.testing.assert_array_equal(distortion_coefficients("plumb_bob", PLUMB_BOB), PLUMB_BOB)
    np.testing.assert_array_equal(distortion_coefficients("rational_polynomial", RATIONAL), RATIONAL)
    np.testing.assert_array_equal(distortion_coefficients("plumb_bob", PLUMB_BOB[:2]), PLUMB_BOB[:2] + [0.0] * 3)
    np.testing.assert_array_equal(distortion_coefficients("rational_polynomial", RATIONAL + [0.0] * 6), RATIONAL)


@pytest.mark.parametrize("model, d, message", [
    ("equidistant", [0.1, 0.01, 0.0, 0.0], "unsupported distortion model 'equidistant'"),
    ("fisheye", [0.1], "unsupported distortion model 'fisheye'"),
    ("plumb_bob", [0.1, float("nan"), 0, 0, 0], "must be finite"),
    ("plumb_bob", PLUMB_BOB + [0.3], "distortion model 'plumb_bob' has 5 coefficients, got 6"),
])
def test_unsupported_or_bad_distortion_is_a_clear_error(model, d, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        distortion_coefficients(model, d)


@pytest.mark.parametrize("model, d", [("plumb_bob", PLUMB_BOB), ("rational_polynomial", RATIONAL)])
def test_undistortion_puts_points_where_the_pinhole_camera_projects_them(model, d):
    camera = camera_640x480()
    points = world_points()
    image = draw_blobs(distorted_pixels(camera, points, d), camera.width, camera.height)
    undistorted = Undistorter()(image, camera.K, distortion_coefficients(model, d))
    ideal, _ = camera.project(points)
    errors = [np.linalg.norm(blob_centre(undistorted, uv, 6) - uv) for uv in ideal]
    assert max(errors) < 0.3, errors
    # Without undistortion the blobs are pixels away from the pinhole projection.
    assert np.linalg.norm(distorted_pixels(camera, points, d) - ideal, axis=1).max() > 3.0


def test_no_distortion_is_a_no_op():
    image = np.zeros((4, 6, 3), np.uint8)
    assert Undistorter()(image, np.eye(3), None) is image


# ---------------------------------------------------------------------- crops and intrinsics
def test_center_crop_window_and_camera():
    camera = camera_640x480()
    assert crop_window(camera, 64, 64) == Window(80, 0, 480, 480)
    assert crop_window(camera, 64, 48) == Window(0, 0, 640, 480)
    assert crop_window(camera, 96, 32) == Window(0, 134, 640, 213)  # (480 - 213) / 2 rounded
    image = np.zeros((480, 640, 3), np.uint8)
    pixels, model_camera = to_model_input(image, camera, 64, 64, crop_window(camera, 64, 64))
    assert pixels.shape == (64, 64, 3) and (model_camera.width, model_camera.height) == (64, 64)
    # A world point's pixel moves with the crop and scales with the resize (pixel-centre convention).
    point = world_points(1, 0.0)
    uv, _ = camera.project(point)
    uv_model, _ = model_camera.project(point)
    np.testing.assert_allclose(uv_model, (uv - [80, 0] + 0.5) * (64 / 480) - 0.5, atol=1e-9)
    np.testing.assert_array_equal(model_camera.world_T_cam, camera.world_T_cam)


def test_workspace_crop_keeps_the_box_and_the_aspect():
    camera = camera_640x480()
    box = np.array([[-0.1, -0.1, 0.0], [0.1, 0.1, 0.15]])
    window = crop_window(camera, 64, 64, "workspace", box)
    assert window.width == window.height and window.width < 480  # tighter than the centre crop
    assert 0 <= window.x0 and window.x0 + window.width <= 640 and 0 <= window.y0 and window.y0 + window.height <= 480
    model_camera = camera.crop(window.x0, window.y0, window.width, window.height).resize(64, 64)
    corners = np.array(np.meshgrid(*box.T)).reshape(3, -1).T
    uv, depth = model_camera.project(corners)
    assert model_camera.in_image(uv, depth).all()  # every corner of the box stays in view
    # A box larger than the view: clipped to the image, then the largest window of the aspect.
    huge = np.array([[-5.0, -5.0, 0.0], [5.0, 5.0, 1.0]])
    assert crop_window(camera, 64, 64, "workspace", huge).width == 480


@pytest.mark.parametrize("box, message", [
    ([[-0.1, -0.1, 0.0], [0.1, 0.1, 0.2]], None),
    ([[-0.1, -2.0, 0.0], [0.1, -1.5, 0.2]], "lies behind the camera"),
    ([[3.0, 3.0, 0.0], [3.2, 3.2, 0.1]], "projects outside"),
    ([[0.1, 0.1, 0.0], [-0.1, 0.2, 0.2]], "min < max"),
    ([[0.0, 0.0, 0.0]], "min < max"),
])
def test_workspace_box_errors(box, message):
    camera = camera_640x480()
    if message is None:
        crop_window(camera, 64, 64, "workspace", np.asarray(box))
        return
    with pytest.raises(ValueError, match=message):
        crop_window(camera, 64, 64, "workspace", np.asarray(box))
    with pytest.raises(ValueError, match="crop mode must be one of"):
        crop_window(camera, 64, 64, "zoom")


@pytest.mark.parametrize("mode", ["center", "workspace"])
def test_distorted_640x480_image_to_model_input_keeps_points_on_their_projection(mode):
    """Undistort + crop + resize: a blob at a world point lands where the model camera projects it."""
    camera = camera_640x480()
    points = world_points(3, 0.2)
    image = draw_blobs(distorted_pixels(camera, points, PLUMB_BOB), 640, 480, sigma=5.0)
    box = np.array([[-0.3, -0.25, 0.0], [0.3, 0.25, 0.25]])
    window = crop_window(camera, 64, 64, mode, box)
    undistorted = Undistorter()(image, camera.K, distortion_coefficients("plumb_bob", PLUMB_BOB))
    pixels, model_camera = to_model_input(undistorted, camera, 64, 64, window)
    uv, depth = model_camera.project(points)
    inside = model_camera.in_image(uv, depth) & np.all((uv > 3) & (uv < 60), axis=1)
    assert inside.sum() >= 5
    errors = [np.linalg.norm(blob_centre(pixels, p, 2) - p) for p in uv[inside]]
    assert max(errors) < 0.35, errors
