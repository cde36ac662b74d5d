"""ROS message <-> numpy conversions with in-memory messages (no ROS graph)."""

import math

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from syncmv4d_core.cameras import Camera
from syncmv4d_ros.conversions import (
    camera_info_to_K,
    camera_to_camera_info,
    image_to_numpy,
    image_to_rgb,
    matrix_to_pose,
    numpy_to_image,
    point_cloud_to_numpy,
    seconds_to_time,
    time_to_seconds,
    tracks_from_msg,
    tracks_to_markers,
    tracks_to_msg,
    tracks_to_point_cloud,
    video_to_msg,
)
from syncmv4d_ros.msg import HOITracks

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _camera(width=64, height=48):
    return Camera.look_at("cam", (0.5, -0.5, 0.5), (0.0, 0.0, 0.0), 50.0, width, height)


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)),
])
def test_colour_encodings_round_trip_and_decode_to_rgb(encoding, pixels):
    msg = numpy_to_image(pixels, encoding)
    assert msg.step == 7 * pixels.shape[2] and len(msg.data) == 5 * msg.step
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_mono8_replicates_to_rgb():
    gray = RGB[..., 0]
    msg = numpy_to_image(gray, "mono8")
    np.testing.assert_array_equal(image_to_numpy(msg), gray)
    np.testing.assert_array_equal(image_to_rgb(msg), np.stack([gray] * 3, axis=2))


def test_padded_rows_honour_step():
    padded = np.zeros((5, 7 * 3 + 11), np.uint8)
    padded[:, :21] = RGB.reshape(5, 21)
    padded[:, 21:] = 255  # padding bytes must be ignored
    msg = Image(height=5, width=7, encoding="rgb8", step=32, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("change, match", [
    (dict(encoding="16UC1"), "unsupported image encoding '16UC1'"),
    (dict(encoding=""), "unsupported image encoding ''"),
    (dict(data=bytes(5 * 21 - 1)), "expected height x step = 5 x 21 = 105"),
    (dict(step=20), "shorter than a row"),
    (dict(height=0, data=b""), "size must be positive"),
])
def test_bad_images_raise(change, match):
    msg = numpy_to_image(RGB, "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=match):
        image_to_numpy(msg)


def test_numpy_to_image_rejects_wrong_shape_and_dtype():
    with pytest.raises(ValueError, match=r"rgba8 pixels must be \(H, W, 4\) uint8"):
        numpy_to_image(RGB, "rgba8")
    with pytest.raises(ValueError, match="uint8"):
        numpy_to_image(RGB.astype(np.float32), "rgb8")
    with pytest.raises(ValueError, match="unsupported"):
        numpy_to_image(RGB, "yuv422")


def test_camera_info_round_trip():
    camera = _camera()
    info = camera_to_camera_info(camera, Header(frame_id="cam_optical"))
    assert (info.width, info.height, info.header.frame_id) == (64, 48, "cam_optical")
    np.testing.assert_allclose(camera_info_to_K(info), camera.K)
    np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4)[:, :3], camera.K)


@pytest.mark.parametrize("k, size, match", [
    ([0.0] * 9, (64, 48), "not a valid intrinsics"),
    ([math.nan, 0, 32, 0, 50, 24, 0, 0, 1], (64, 48), "non-finite"),
    ([50, 0, 32, 0, 50, 24, 0, 0, 1], (0, 0), "size must be positive"),
])
def test_bad_camera_info_raises(k, size, match):
    info = CameraInfo(width=size[0], height=size[1], k=[float(v) for v in k])
    with pytest.raises(ValueError, match=match):
        camera_info_to_K(info)


def test_pose_matches_the_camera_transform():
    camera = _camera()
    pose = matrix_to_pose(camera.world_T_cam)
    rebuilt = Camera.from_pose("cam", camera.K, (pose.position.x, pose.position.y, pose.position.z),
                               (pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z), 64, 48)
    np.testing.assert_allclose(rebuilt.world_T_cam, camera.world_T_cam, atol=1e-9)


def test_time_conversions():
    stamp = seconds_to_time(12.25)
    assert (stamp.sec, stamp.nanosec) == (12, 250_000_000)
    assert time_to_seconds(stamp) == pytest.approx(12.25)
    with pytest.raises(ValueError, match="time"):
        seconds_to_time(-1.0)


TRACKS = RNG.normal(size=(4, 6, 3)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3, 1, 2], np.uint8)


def test_hoi_tracks_round_trip():
    header = Header(stamp=seconds_to_time(3.0), frame_id="world")
    msg = tracks_to_msg(TRACKS, LABELS, header, 8.0, request_id="r1", task="lift the cup",
                        confidence=np.linspace(0, 1, 6), camera_names=["a", "b"],
                        depth_ranges=np.array([[0.3, 0.9], [0.4, 1.0]]))
    assert (msg.num_frames, msg.num_points, msg.frame_rate, msg.task) == (4, 6, 8.0, "lift the cup")
    assert HOITracks.LABEL_HAND == 1 and HOITracks.LABEL_TARGET == 3
    tracks, labels, confidence = tracks_from_msg(msg)
    np.testing.assert_array_equal(tracks, TRACKS)  # frame-major layout preserved
    np.testing.assert_array_equal(labels, LABELS)
    np.testing.assert_allclose(confidence, np.linspace(0, 1, 6), atol=1e-7)
    np.testing.assert_allclose(np.asarray(msg.depth_ranges).reshape(2, 2), [[0.3, 0.9], [0.4, 1.0]], atol=1e-6)
    assert list(msg.camera_names) == ["a", "b"]
    assert tracks_from_msg(tracks_to_msg(TRACKS, LABELS, header, 8.0))[2] is None


def test_hoi_tracks_bad_input():
    header = Header()
    with pytest.raises(ValueError, match=r"tracks must be \(F >= 1, K, 3\)"):
        tracks_to_msg(TRACKS[..., :2], LABELS, header, 8.0)
    with pytest.raises(ValueError, match=r"labels must be \(K=6,\)"):
        tracks_to_msg(TRACKS, LABELS[:5], header, 8.0)
    with pytest.raises(ValueError, match="frame_rate"):
        tracks_to_msg(TRACKS, LABELS, header, 0.0)
    with pytest.raises(ValueError, match="depth_ranges"):
        tracks_to_msg(TRACKS, LABELS, header, 8.0, camera_names=["a"], depth_ranges=np.zeros((2, 2)))
    msg = tracks_to_msg(TRACKS, LABELS, header, 8.0)
    msg.num_points = 7
    with pytest.raises(ValueError, match="points has 72 values, expected num_frames x num_points x 3 = 84"):
        tracks_from_msg(msg)


def test_point_cloud_holds_every_point_with_time_and_label():
    header = Header(frame_id="world")
    msg = tracks_to_point_cloud(TRACKS, header, 8.0, LABELS)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "t", "label"] and msg.width == 24
    assert msg.point_step % 4 == 0 and len(msg.data) == 24 * msg.point_step
    cloud = point_cloud_to_numpy(msg)
    np.testing.assert_array_equal(np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1), TRACKS.reshape(24, 3))
    np.testing.assert_allclose(cloud["t"], np.repeat(np.arange(4) / 8.0, 6))
    np.testing.assert_array_equal(cloud["label"], np.tile(LABELS, 4))
    assert msg.is_dense
    nan_tracks = TRACKS.copy()
    nan_tracks[0, 0, 0] = np.nan
    no_label = tracks_to_point_cloud(nan_tracks, header, 8.0)
    assert [f.name for f in no_label.fields] == ["x", "y", "z", "t"] and not no_label.is_dense


def test_markers_draw_subsampled_trajectories_coloured_by_label():
    msg = tracks_to_markers(TRACKS, LABELS, Header(frame_id="world"), max_tracks=3)
    assert msg.markers[0].action == Marker.DELETEALL
    strips = msg.markers[1:]
    assert len(strips) == 3 and all(m.type == Marker.LINE_STRIP for m in strips)
    assert len({m.id for m in strips}) == 3
    # Evenly spaced tracks 0, 2 (or 3) and 5: first and last are always drawn.
    first = [(p.x, p.y, p.z) for p in strips[0].points]
    np.testing.assert_allclose(first, TRACKS[:, 0], atol=1e-6)
    np.testing.assert_allclose([(p.x, p.y, p.z) for p in strips[-1].points], TRACKS[:, 5], atol=1e-6)
    assert strips[0].color != strips[-1].color  # labels 0 and 2
    with pytest.raises(ValueError, match="max_tracks"):
        tracks_to_markers(TRACKS, LABELS, Header(), max_tracks=0)


def test_video_message_has_timed_rgb_frames_and_camera():
    camera = _camera(8, 6)
    frames = RNG.integers(0, 256, size=(3, 6, 8, 3), dtype=np.uint8)
    msg = video_to_msg(frames, camera, Header(stamp=seconds_to_time(10.0), frame_id="cam_optical"), 4.0, "r")
    assert msg.camera_name == "cam" and msg.request_id == "r" and len(msg.frames) == 3
    assert [time_to_seconds(f.header.stamp) for f in msg.frames] == pytest.approx([10.0, 10.25, 10.5])
    np.testing.assert_array_equal(image_to_rgb(msg.frames[2]), frames[2])
    np.testing.assert_allclose(camera_info_to_K(msg.camera_info), camera.K)
    assert msg.camera_pose.position.x == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"frames must be \(F, 6, 8, 3\) uint8"):
        video_to_msg(frames[:, :5], camera, Header(), 4.0)


def test_poses_round_trip_through_pose_array():
    from scipy.spatial.transform import Rotation

    from syncmv4d_ros.conversions import pose_to_matrix, poses_to_msg

    poses = np.tile(np.eye(4), (5, 1, 1))
    poses[:, :3, :3] = Rotation.random(5, random_state=0).as_matrix()
    poses[:, :3, 3] = np.arange(15.0).reshape(5, 3) * 0.01
    msg = poses_to_msg(poses, Header(frame_id="world"))
    assert len(msg.poses) == 5 and msg.header.frame_id == "world"
    np.testing.assert_allclose(np.stack([pose_to_matrix(p) for p in msg.poses]), poses, atol=1e-12)
    assert poses_to_msg(np.zeros((0, 4, 4)), Header()).poses == []
    with pytest.raises(ValueError, match=r"poses must be \(F, 4, 4\)"):
        poses_to_msg(np.zeros((3, 3)), Header())


def _images_of_every_encoding():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (6, 7, 1), dtype=np.uint8)
    return rgb, {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.concatenate([rgb, alpha], 2),
                 "bgra8": np.concatenate([rgb[..., ::-1], alpha], 2), "mono8": rgb[..., 0]}


def test_image_converter_falls_back_to_the_built_in_converter():
    from syncmv4d_ros.conversions import ImageConverter

    converter = ImageConverter(use_cv_bridge=False)
    assert converter.backend == "builtin" and "built-in converter" in converter.describe()
    rgb, images = _images_of_every_encoding()
    for encoding, pixels in images.items():
        out = converter.to_rgb(numpy_to_image(np.ascontiguousarray(pixels), encoding))
        expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
        np.testing.assert_array_equal(out, expected)
    bad = numpy_to_image(rgb, "rgb8")
    bad.encoding = "16UC1"
    with pytest.raises(ValueError, match="unsupported image encoding"):
        converter.to_rgb(bad)
    # Here (pip wheels) cv_bridge does not import; the converter says so.
    auto = ImageConverter()
    assert auto.backend in ("cv_bridge", "builtin") and auto.describe().startswith("image conversion: ")


def test_cv_bridge_output_matches_the_built_in_converter():
    pytest.importorskip("cv_bridge")
    from syncmv4d_ros.conversions import ImageConverter

    bridge, builtin = ImageConverter(), ImageConverter(use_cv_bridge=False)
    if bridge.backend != "cv_bridge":
        pytest.skip(f"cv_bridge imports but cannot be used: {bridge.reason}")
    _, images = _images_of_every_encoding()
    for encoding, pixels in images.items():
        msg = numpy_to_image(np.ascontiguousarray(pixels), encoding)
        np.testing.assert_array_equal(bridge.to_rgb(msg), builtin.to_rgb(msg))
