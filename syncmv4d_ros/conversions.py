"""Conversions between ROS 2 messages and numpy arrays / syncmv4d cameras (pure functions, no Node).

Images: 8-bit encodings only (rgb8, bgr8, mono8, rgba8, bgra8); rows may be padded (``step``).
Tracks: (F, K, 3) float32 world positions in metres, frame-major, as in ``Scene.tracks_world``.
Large arrays are written to messages with ``.tobytes()`` (assigning a numpy array to a
sequence field is ~100x slower).
"""

from __future__ import annotations

import math

import numpy as np
import transforms3d
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose, PoseArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from syncmv4d_core.cameras import Camera
from syncmv4d_core.scene import LABEL_COLORS, UNKNOWN
from syncmv4d_ros.msg import HOITracks, HOIVideo

# encoding -> (channels, channel indices that give R, G, B)
IMAGE_ENCODINGS = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}


# ---------------------------------------------------------------------- time
def seconds_to_time(seconds: float) -> Time:
    """builtin_interfaces/Time for a time in seconds (>= 0)."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"time must be finite and >= 0 seconds, got {seconds}")
    nanoseconds = round(seconds * 1e9)
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def time_to_seconds(stamp: Time) -> float:
    """Seconds of a builtin_interfaces/Time."""
    return stamp.sec + stamp.nanosec * 1e-9


# ---------------------------------------------------------------------- images
def image_to_numpy(msg: Image) -> np.ndarray:
    """The pixels of an 8-bit Image, in the message's own channel order.

    Returns:
        (H, W) uint8 for mono8, (H, W, C) uint8 otherwise (a copy, independent of the message).
    Raises:
        ValueError: unsupported encoding, empty image, ``step`` shorter than a row, or
            ``len(data) != height * step``.
    """
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; supported: {sorted(IMAGE_ENCODINGS)}")
    channels = IMAGE_ENCODINGS[msg.encoding][0]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if step < width * channels:
        raise ValueError(f"image step {step} is shorter than a row of {width} x {channels} bytes ({msg.encoding})")
    if len(msg.data) != height * step:
        raise ValueError(f"image data has {len(msg.data)} bytes, expected height x step = {height} x {step} = "
                         f"{height * step}")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)  # (H, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)  # (H, W, C)
    return (pixels[..., 0] if channels == 1 else pixels).copy()


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an 8-bit Image (alpha dropped, mono replicated)."""
    pixels = image_to_numpy(msg)
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=2)
    order = IMAGE_ENCODINGS[msg.encoding][1]
    if order == (0, 1, 2) and pixels.shape[2] == 3:
        return pixels
    return np.ascontiguousarray(pixels[..., list(order)])


class ImageConverter:
    """Image -> (H, W, 3) uint8 RGB with cv_bridge where it imports (a ROS 2 install), else with
    ``image_to_rgb``. Both paths validate the message with ``image_to_numpy`` first, so bad
    images give the same errors. ``backend`` says which one converts; ``reason`` why not cv_bridge.
    (PyPI's ``cv-bridge`` is an old ROS 1 copy that fails on numpy 2: the fallback serves there.)
    """

    def __init__(self, use_cv_bridge: bool = True) -> None:
        self.bridge, self.reason = None, "disabled"
        if use_cv_bridge:
            try:
                from cv_bridge import CvBridge

                self.bridge, self.reason = CvBridge(), ""
            except Exception as exc:  # ImportError, or a cv_bridge build that breaks on import
                self.reason = f"{type(exc).__name__}: {exc}"
        self.backend = "cv_bridge" if self.bridge is not None else "builtin"

    def describe(self) -> str:
        """One line for the log: which converter is used and why."""
        if self.bridge is not None:
            return "image conversion: cv_bridge"
        return f"image conversion: built-in converter (cv_bridge not used: {self.reason})"

    def to_rgb(self, msg: Image) -> np.ndarray:
        """(H, W, 3) uint8 RGB pixels of an 8-bit Image; ValueError as ``image_to_numpy``."""
        image_to_numpy(msg)
        if self.bridge is None:
            return image_to_rgb(msg)
        return np.ascontiguousarray(self.bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))


def numpy_to_image(pixels: np.ndarray, encoding: str = "rgb8", header: Header | None = None) -> Image:
    """An Image holding ``pixels`` (rows unpadded).

    Args:
        pixels: (H, W) uint8 for mono8, (H, W, C) uint8 with C matching ``encoding`` otherwise.
        encoding: one of ``IMAGE_ENCODINGS``; the channels must already be in that order.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(IMAGE_ENCODINGS)}")
    pixels = np.asarray(pixels)
    channels = IMAGE_ENCODINGS[encoding][0]
    expected = "(H, W)" if channels == 1 else f"(H, W, {channels})"
    shape_ok = pixels.ndim == 2 if channels == 1 else (pixels.ndim == 3 and pixels.shape[2] == channels)
    if pixels.dtype != np.uint8 or not shape_ok:
        raise ValueError(f"{encoding} pixels must be {expected} uint8, got {pixels.shape} {pixels.dtype}")
    height, width = pixels.shape[:2]
    return Image(header=header or Header(), height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * channels, data=np.ascontiguousarray(pixels).tobytes())


# ---------------------------------------------------------------------- cameras
def camera_info_to_K(info: CameraInfo) -> np.ndarray:
    """(3, 3) intrinsics in pixels from CameraInfo.k.

    Raises:
        ValueError: non-finite entries, fx or fy <= 0, a last row other than (0, 0, 1), or a
            non-positive image size (an all-zero CameraInfo is the usual "not calibrated").
    """
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(K).all():
        raise ValueError(f"CameraInfo.k holds non-finite values: {K.ravel().tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or np.any(K[2] != (0.0, 0.0, 1.0)):
        raise ValueError(f"CameraInfo.k is not a valid intrinsics matrix (need fx, fy > 0 and last row 0 0 1): "
                         f"{K.ravel().tolist()}")
    if info.width <= 0 or info.height <= 0:
        raise ValueError(f"CameraInfo image size must be positive, got {info.width}x{info.height}")
    return K


def camera_to_camera_info(camera: Camera, header: Header | None = None) -> CameraInfo:
    """CameraInfo of an undistorted pinhole camera (R = I, P = [K | 0], plumb_bob with zero d)."""
    P = np.zeros((3, 4))
    P[:, :3] = camera.K
    return CameraInfo(header=header or Header(), height=camera.height, width=camera.width,
                      distortion_model="plumb_bob", d=[0.0] * 5, k=camera.K.ravel().tolist(),
                      r=np.eye(3).ravel().tolist(), p=P.ravel().tolist())


def matrix_to_pose(world_T_cam: np.ndarray) -> Pose:
    """geometry_msgs/Pose of a (4, 4) rigid transform (translation in metres)."""
    w, x, y, z = transforms3d.quaternions.mat2quat(np.asarray(world_T_cam)[:3, :3])
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in np.asarray(world_T_cam)[:3, 3])
    q = pose.orientation
    q.w, q.x, q.y, q.z = float(w), float(x), float(y), float(z)
    return pose


def poses_to_msg(poses: np.ndarray, header: Header) -> PoseArray:
    """PoseArray of a pose trajectory: pose f (world_T_object, (F, 4, 4), metres) is at
    ``header.stamp + f / frame_rate`` of the matching HOITracks."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"poses must be (F, 4, 4), got {poses.shape}")
    return PoseArray(header=header, poses=[matrix_to_pose(T) for T in poses])


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """(4, 4) rigid transform of a geometry_msgs/Pose (inverse of ``matrix_to_pose``)."""
    q = pose.orientation
    T = np.eye(4)
    T[:3, :3] = transforms3d.quaternions.quat2mat([q.w, q.x, q.y, q.z])
    T[:3, 3] = pose.position.x, pose.position.y, pose.position.z
    return T


# ---------------------------------------------------------------------- tracks
def _check_tracks(tracks: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    tracks = np.asarray(tracks, dtype=np.float32)
    if tracks.ndim != 3 or tracks.shape[2] != 3 or tracks.shape[0] == 0:
        raise ValueError(f"tracks must be (F >= 1, K, 3), got {tracks.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (tracks.shape[1],):
            raise ValueError(f"labels must be (K={tracks.shape[1]},), got {labels.shape}")
        labels = labels.astype(np.uint8)
    return tracks, labels


def tracks_to_msg(
    tracks: np.ndarray,
    labels: np.ndarray,
    header: Header,
    frame_rate: float,
    request_id: str = "",
    task: str = "",
    confidence: np.ndarray | None = None,
    camera_names: list[str] | None = None,
    depth_ranges: np.ndarray | None = None,
) -> HOITracks:
    """HOITracks from numpy.

    Args:
        tracks: (F, K, 3) world positions, metres, in ``header.frame_id``.
        labels: (K,) uint8 (HOITracks.LABEL_*).
        header: stamp = time of frame 0, frame_id = world frame.
        frame_rate: frames per second (> 0).
        confidence: optional (K,) in [0, 1].
        camera_names: the V views used.
        depth_ranges: optional (V, 2) per-view (zmin, zmax), metres.
    """
    tracks, labels = _check_tracks(tracks, labels)
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be > 0 frames per second, got {frame_rate}")
    camera_names = list(camera_names or [])
    msg = HOITracks(header=header, request_id=request_id, task=task, frame_rate=float(frame_rate),
                    num_frames=tracks.shape[0], num_points=tracks.shape[1], camera_names=camera_names)
    msg.points = tracks.tobytes()  # fast path: bytes into the float32[] field
    msg.labels = labels.tobytes()
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float32)
        if confidence.shape != (tracks.shape[1],):
            raise ValueError(f"confidence must be (K={tracks.shape[1]},), got {confidence.shape}")
        msg.confidence = confidence.tobytes()
    if depth_ranges is not None:
        depth_ranges = np.asarray(depth_ranges, dtype=np.float32)
        if depth_ranges.shape != (len(camera_names), 2):
            raise ValueError(f"depth_ranges must be (V={len(camera_names)}, 2) for cameras {camera_names}, "
                             f"got {depth_ranges.shape}")
        msg.depth_ranges = depth_ranges.tobytes()
    return msg


def tracks_from_msg(msg: HOITracks) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The arrays of a HOITracks message (the planner side).

    Returns:
        tracks: (F, K, 3) float32 metres; labels: (K,) uint8; confidence: (K,) float32 or None.
    Raises:
        ValueError: if the array lengths disagree with num_frames / num_points.
    """
    F, K = int(msg.num_frames), int(msg.num_points)
    points = np.asarray(msg.points, dtype=np.float32)
    if points.size != F * K * 3:
        raise ValueError(f"HOITracks.points has {points.size} values, expected num_frames x num_points x 3 = "
                         f"{F * K * 3}")
    labels = np.asarray(msg.labels, dtype=np.uint8)
    if labels.size != K:
        raise ValueError(f"HOITracks.labels has {labels.size} values, expected num_points = {K}")
    confidence = np.asarray(msg.confidence, dtype=np.float32)
    if confidence.size not in (0, K):
        raise ValueError(f"HOITracks.confidence has {confidence.size} values, expected 0 or num_points = {K}")
    return points.reshape(F, K, 3), labels, (confidence if confidence.size else None)


def tracks_to_point_cloud(tracks: np.ndarray, header: Header, frame_rate: float,
                          labels: np.ndarray | None = None) -> PointCloud2:
    """PointCloud2 with every track point of every frame: fields x, y, z (metres), t (seconds
    after header.stamp, = frame / frame_rate) and optionally label (uint8); point f * K + k.

    Args:
        tracks: (F, K, 3) world positions, metres.
        labels: optional (K,) labels, repeated for every frame.
    """
    tracks, labels = _check_tracks(tracks, labels)
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be > 0 frames per second, got {frame_rate}")
    F, K = tracks.shape[:2]
    fields = [("x", np.float32), ("y", np.float32), ("z", np.float32), ("t", np.float32)]
    if labels is not None:
        fields.append(("label", np.uint8))
    # Pad each point to a multiple of 4 bytes so the float fields stay aligned.
    dtype = np.dtype({"names": [n for n, _ in fields], "formats": [f for _, f in fields],
                      "offsets": [4 * i for i in range(len(fields))], "itemsize": 4 * len(fields)})
    cloud = np.zeros(F * K, dtype=dtype)
    flat = tracks.reshape(F * K, 3)  # (F*K, 3)
    cloud["x"], cloud["y"], cloud["z"] = flat[:, 0], flat[:, 1], flat[:, 2]
    cloud["t"] = np.repeat(np.arange(F, dtype=np.float32) / np.float32(frame_rate), K)
    if labels is not None:
        cloud["label"] = np.tile(labels, F)
    ros_types = {np.dtype(np.float32): PointField.FLOAT32, np.dtype(np.uint8): PointField.UINT8}
    msg = PointCloud2(header=header, height=1, width=F * K, is_bigendian=False, point_step=dtype.itemsize,
                      row_step=dtype.itemsize * F * K, is_dense=bool(np.isfinite(tracks).all()),
                      fields=[PointField(name=n, offset=4 * i, datatype=ros_types[np.dtype(f)], count=1)
                              for i, (n, f) in enumerate(fields)])
    msg.data = cloud.tobytes()
    return msg


def point_cloud_to_numpy(msg: PointCloud2) -> np.ndarray:
    """Structured (N,) array of a little-endian PointCloud2 with FLOAT32 / UINT8 fields (N = height x width)."""
    types = {PointField.FLOAT32: np.float32, PointField.UINT8: np.uint8}
    unknown = [f.name for f in msg.fields if f.datatype not in types or f.count != 1]
    if unknown or msg.is_bigendian:
        raise ValueError(f"only little-endian single FLOAT32 / UINT8 fields are supported; unsupported: {unknown}")
    n = msg.height * msg.width
    if len(msg.data) != n * msg.point_step:
        raise ValueError(f"PointCloud2 data has {len(msg.data)} bytes, expected {n} points x {msg.point_step}")
    dtype = np.dtype({"names": [f.name for f in msg.fields], "formats": [types[f.datatype] for f in msg.fields],
                      "offsets": [f.offset for f in msg.fields], "itemsize": msg.point_step})
    return np.frombuffer(bytes(msg.data), dtype=dtype, count=n)


def tracks_to_markers(tracks: np.ndarray, labels: np.ndarray, header: Header, max_tracks: int = 200,
                      namespace: str = "hoi_tracks", line_width: float = 0.003) -> MarkerArray:
    """MarkerArray drawing trajectories as LINE_STRIPs coloured by label (a DELETEALL first
    clears the previous result). At most ``max_tracks`` evenly spaced tracks are drawn.

    Args:
        tracks: (F, K, 3) world positions, metres.
        labels: (K,) labels.
        line_width: metres.
    """
    tracks, labels = _check_tracks(tracks, labels)
    if max_tracks < 1:
        raise ValueError(f"max_tracks must be >= 1, got {max_tracks}")
    K = tracks.shape[1]
    chosen = np.unique(np.linspace(0, K - 1, min(K, max_tracks)).round().astype(int)) if K else []
    markers = [Marker(header=header, ns=namespace, action=Marker.DELETEALL)]
    for marker_id, k in enumerate(chosen):
        r, g, b = LABEL_COLORS.get(int(labels[k]), LABEL_COLORS[UNKNOWN])
        marker = Marker(header=header, ns=namespace, id=marker_id, type=Marker.LINE_STRIP, action=Marker.ADD,
                        color=ColorRGBA(r=r, g=g, b=b, a=1.0), lifetime=Duration(), frame_locked=False)
        marker.pose.orientation.w = 1.0
        marker.scale.x = float(line_width)
        marker.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in tracks[:, k].tolist()]
        markers.append(marker)
    return MarkerArray(markers=markers)


def video_to_msg(frames: np.ndarray, camera: Camera, header: Header, frame_rate: float,
                 request_id: str = "") -> HOIVideo:
    """HOIVideo of one generated view.

    Args:
        frames: (F, H, W, 3) uint8 RGB, H x W = the camera's size.
        camera: the view's camera (intrinsics and world_T_cam).
        header: stamp = time of frame 0, frame_id = the camera's optical frame.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (camera.height, camera.width, 3):
        raise ValueError(f"frames must be (F, {camera.height}, {camera.width}, 3) uint8 for camera {camera.name!r}, "
                         f"got {frames.shape} {frames.dtype}")
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise ValueError(f"frame_rate must be > 0 frames per second, got {frame_rate}")
    t0 = time_to_seconds(header.stamp)
    images = [numpy_to_image(frame, "rgb8",
                             Header(stamp=seconds_to_time(t0 + f / frame_rate), frame_id=header.frame_id))
              for f, frame in enumerate(frames)]
    return HOIVideo(header=header, request_id=request_id, camera_name=camera.name,
                    camera_info=camera_to_camera_info(camera, header), camera_pose=matrix_to_pose(camera.world_T_cam),
                    frame_rate=float(frame_rate), frames=images)
