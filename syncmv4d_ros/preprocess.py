"""Camera images -> the model's input: undistort, crop, resize, with the intrinsics kept exact.

Pure numpy / OpenCV (no ROS): a real camera's image (any size the node supports, with lens
distortion) becomes a pinhole image of the model's size, and its ``Camera`` is updated the same
way (``Camera.crop`` then ``Camera.resize``), so projections stay metric-exact.

1. Undistort (``undistort``): plumb_bob (5 coefficients k1 k2 p1 p2 k3) and rational_polynomial
   (8: k1 k2 p1 p2 k3 k4 k5 k6, more are accepted when zero) with OpenCV, keeping K (the output is
   the ideal pinhole camera with the same K). Zero coefficients: no-op. Any other model: ValueError.
2. Crop (``crop_window``): a window with the model's aspect ratio, either centred in the image or
   around the projection of a world-frame workspace box (the hand-object interaction region),
   grown to the aspect ratio and clipped to the image.
3. Resize to the model's size (``cv2.INTER_AREA``: averaging when shrinking, no aliasing).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from syncmv4d_core.cameras import Camera

# distortion model -> number of coefficients OpenCV reads (ROS CameraInfo.d order = OpenCV order).
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8}
CROP_MODES = ("center", "workspace")


@dataclass(frozen=True)
class Window:
    """Pixel window ``[x0, x0 + width) x [y0, y0 + height)`` of an image."""

    x0: int
    y0: int
    width: int
    height: int


def distortion_coefficients(model: str, d) -> np.ndarray | None:
    """OpenCV distortion coefficients of a CameraInfo (``distortion_model``, ``d``); None if all zero.

    Raises:
        ValueError: an unsupported distortion model with non-zero coefficients, non-finite
            coefficients, or more coefficients than the model has (unless the extra ones are 0).
    """
    d = np.asarray(d, dtype=np.float64).ravel()
    if not np.isfinite(d).all():
        raise ValueError(f"distortion coefficients must be finite, got {d.tolist()}")
    if not d.size or not d.any():
        return None
    if model not in DISTORTION_MODELS:
        raise ValueError(f"unsupported distortion model {model!r} with coefficients {d.tolist()}; supported: "
                         f"{sorted(DISTORTION_MODELS)} (or all-zero coefficients)")
    n = DISTORTION_MODELS[model]
    if d.size > n and d[n:].any():
        raise ValueError(f"distortion model {model!r} has {n} coefficients, got {d.size}: {d.tolist()}")
    out = np.zeros(n)
    out[: min(n, d.size)] = d[:n]
    return out


class Undistorter:
    """Caches OpenCV's undistortion maps per (K, coefficients, size): remapping a 640 x 480 image
    with cached maps takes about a millisecond, building the maps about ten."""

    def __init__(self) -> None:
        self._maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, image: np.ndarray, K: np.ndarray, coefficients: np.ndarray | None) -> np.ndarray:
        """The undistorted image (same size, same K); ``image`` itself when ``coefficients`` is None."""
        if coefficients is None:
            return image
        height, width = image.shape[:2]
        key = (tuple(np.asarray(K, np.float64).ravel()), tuple(coefficients), width, height)
        if key not in self._maps:
            if len(self._maps) > 16:  # a few cameras; a changing calibration must not grow this forever
                self._maps.clear()
            self._maps[key] = cv2.initUndistortRectifyMap(np.asarray(K, np.float64), coefficients, None,
                                                          np.asarray(K, np.float64), (width, height), cv2.CV_16SC2)
        map1, map2 = self._maps[key]
        return cv2.remap(image, map1, map2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _fit_aspect(lo: tuple[float, float], hi: tuple[float, float], aspect: float, image_width: int,
                image_height: int) -> Window:
    """The integer pixel window of aspect ``aspect`` (width / height, to within a pixel) that
    covers the region ``[lo, hi)`` (pixel-edge coordinates: pixel j spans [j, j + 1)), grown
    evenly around its centre, moved into the image and, if larger than the image, shrunk to
    the largest such window there (keeping its centre as far as possible)."""
    x0, y0 = math.floor(lo[0]), math.floor(lo[1])
    w, h = max(1, math.ceil(hi[0]) - x0), max(1, math.ceil(hi[1]) - y0)
    if w < h * aspect:
        grow = math.ceil(h * aspect) - w
        x0, w = x0 - grow // 2, w + grow
    elif w > h * aspect:
        grow = math.ceil(w / aspect) - h
        y0, h = y0 - grow // 2, h + grow
    if w > image_width or h > image_height:  # shrink about the centre to fit
        cx, cy = x0 + w / 2, y0 + h / 2
        w, h = min(image_width, round(image_height * aspect)), min(image_height, round(image_width / aspect))
        x0, y0 = round(cx - w / 2), round(cy - h / 2)
    x0 = min(max(x0, 0), image_width - w)
    y0 = min(max(y0, 0), image_height - h)
    return Window(int(x0), int(y0), int(w), int(h))


def crop_window(camera: Camera, out_width: int, out_height: int, mode: str = "center",
                workspace_box: np.ndarray | None = None) -> Window:
    """The crop of ``camera``'s image that is resized to ``out_width x out_height``.

    Args:
        mode: "center": the largest centred window of the output aspect ratio; "workspace": the
            bounding box of the projected corners of ``workspace_box``, clipped to the image,
            grown to the output aspect ratio around its centre and moved / shrunk into the image.
        workspace_box: (2, 3) world-frame corners (xmin, ymin, zmin), (xmax, ymax, zmax), metres.
    Raises:
        ValueError: unknown mode, a bad box, or a box that lies wholly behind the camera or
            outside its image.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    aspect = out_width / out_height
    W, H = camera.width, camera.height
    if mode == "center":
        return _fit_aspect((0.0, 0.0), (float(W), float(H)), aspect, W, H)
    box = np.asarray(workspace_box, dtype=np.float64)
    if box.shape != (2, 3) or not np.isfinite(box).all() or np.any(box[1] <= box[0]):
        raise ValueError(f"workspace box must be [xmin, ymin, zmin, xmax, ymax, zmax] metres with min < max, "
                         f"got {box.ravel().tolist()}")
    corners = np.array(list(itertools.product(*box.T)))  # (8, 3)
    uv, depth = camera.project(corners)
    if np.all(depth <= 0):
        raise ValueError(f"camera {camera.name!r}: the workspace box {box.ravel().tolist()} lies behind the camera")
    if np.any(depth <= 0):  # a corner behind the camera projects nonsensically: the box spans the view
        return _fit_aspect((0.0, 0.0), (float(W), float(H)), aspect, W, H)
    # Pixel-edge coordinates (pixel j spans u in [j - 0.5, j + 0.5)), clipped to the image.
    lo = np.clip(uv.min(0) + 0.5, 0.0, [W, H])
    hi = np.clip(uv.max(0) + 0.5, 0.0, [W, H])
    if np.any(hi - lo < 1.0):
        raise ValueError(f"camera {camera.name!r}: the workspace box {box.ravel().tolist()} projects outside "
                         f"its {W}x{H} image")
    return _fit_aspect(tuple(lo), tuple(hi), aspect, W, H)


def to_model_input(image: np.ndarray, camera: Camera, out_width: int, out_height: int, window: Window
                   ) -> tuple[np.ndarray, Camera]:
    """Crop ``image`` (H, W, 3) uint8 to ``window`` and resize it to the model size.

    Returns:
        (out_height, out_width, 3) uint8 and the camera of that image (``crop`` then ``resize``).
    """
    crop = image[window.y0: window.y0 + window.height, window.x0: window.x0 + window.width]
    if (window.width, window.height) != (out_width, out_height):
        interpolation = cv2.INTER_AREA if window.width >= out_width else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (out_width, out_height), interpolation=interpolation)
    cropped = camera.crop(window.x0, window.y0, window.width, window.height)
    return np.ascontiguousarray(crop), cropped.resize(out_width, out_height)
