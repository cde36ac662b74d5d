"""Real cameras, real processes: three camera processes publish 640 x 480 bgr8 images with lens
distortion at 20 Hz, the node runs as its own process with the built-in model (64 x 64), and a
planner in this process gets /hoi_tracks.

The camera images are a held-out synthetic scene's frame 0 as a 640 x 480, fx = 600 pinhole
camera at the scene camera's pose sees it (the 64 x 64 view scaled into the middle, the rest
grey), distorted with plumb_bob / rational_polynomial coefficients (ros_camera_process.py).
The node undistorts, crops around the workspace box and resizes to 64 x 64; the HOIVideo
CameraInfo must be that camera. Prints the measured times (run with ``-s`` to see them).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from syncmv4d_core.cameras import Camera
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_ros import topics
from syncmv4d_ros.conversions import tracks_from_msg
from syncmv4d_ros.msg import GenerationStatus, HOITracks, HOIVideo
from syncmv4d_ros.preprocess import crop_window

DOMAIN_ID = 74  # this module's own DDS domain
ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FOCAL = 640, 480, 600.0
RATE_HZ = 20.0
DISTORTION = {  # camera index -> (model, coefficients)
    0: ("plumb_bob", [-0.28, 0.09, 0.0008, -0.0005, -0.012]),
    1: ("rational_polynomial", [0.35, -0.12, 0.0004, 0.0002, 0.02, 0.7, -0.1, 0.05]),
    2: ("plumb_bob", [-0.12, 0.03, -0.0006, 0.0004, 0.0]),
}
TIMEOUT_S = 120.0


def pick_views(scene) -> list[int]:
    """The first camera of each cluster: left, center, right."""
    return [next(i for i, cam in enumerate(scene.cameras) if cam.cluster == c) for c in ("left", "center", "right")]


def camera_images(scene, views) -> list[tuple[Camera, np.ndarray]]:
    """Per view: the 640 x 480 fx = 600 camera at the scene camera's pose and its ideal image."""
    out = []
    for v in views:
        small = scene.cameras[v]
        s = FOCAL / small.K[0, 0]
        K = np.array([[FOCAL, 0.0, (WIDTH - 1) / 2], [0.0, s * small.K[1, 1], (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]])
        # u_big = s * u_small + (cx_big - s * cx_small), pixel centres at integers on both sides.
        M = np.array([[s, 0.0, K[0, 2] - s * small.K[0, 2]], [0.0, s, K[1, 2] - s * small.K[1, 2]]])
        image = cv2.warpAffine(scene.videos[v, 0], M, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))
        out.append((Camera(small.name, K, small.world_T_cam, WIDTH, HEIGHT, small.cluster), image))
    return out


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@pytest.mark.slow
def test_640x480_distorted_cameras_in_processes_get_hoi_tracks(tmp_path):
    scene = generate_scene(0, SynthConfig(num_frames=9, height=64, width=64, num_points=128), split="test")
    views = pick_views(scene)
    rig = camera_images(scene, views)
    box = np.concatenate([scene.tracks_world.reshape(-1, 3).min(0) - 0.05, scene.tracks_world.reshape(-1, 3).max(0)
                          + 0.05]).tolist()
    cams = {}
    for cam, _ in rig:
        pose = cam.to_dict()
        cams[cam.name] = {"xyz": [float(x) for x in pose["xyz"]], "quat_wxyz": [float(x) for x in pose["quat_wxyz"]],
                          "cluster": cam.cluster}
    params = {"camera_names": [cam.name for cam, _ in rig], "cameras": cams, "checkpoint": "", "num_steps": 20,
              "num_frames": 9, "model_width": 64, "model_height": 64, "crop_mode": "workspace",
              "workspace_box": [float(x) for x in box],
              "sync_slop": 0.03}  # free-running 20 Hz cameras: closest stamps are up to 25 ms apart
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID))
    processes = []
    for i, (cam, image) in enumerate(rig):
        model, d = DISTORTION[i]
        frame = tmp_path / f"{cam.name}.npz"
        np.savez(frame, name=cam.name, image=image, K=cam.K, d=np.asarray(d), distortion_model=model, rate=RATE_HZ)
        processes.append(subprocess.Popen([sys.executable, str(ROOT / "test" / "ros_camera_process.py"), str(frame)],
                                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    node_log = tmp_path / "node.log"
    with open(node_log, "w") as log:
        node_process = subprocess.Popen([sys.executable, "-m", "syncmv4d_ros.generate_node", "--ros-args",
                                         "--params-file", str(params_file)], cwd=ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT)
    processes.append(node_process)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    planner = rclpy.create_node("planner", context=context)
    statuses: list[tuple[float, GenerationStatus]] = []
    tracks: list[tuple[float, HOITracks]] = []
    videos: list[HOIVideo] = []
    planner.create_subscription(GenerationStatus, topics.STATUS, lambda m: statuses.append((time.monotonic(), m)),
                                topics.STATUS_QOS)
    planner.create_subscription(HOITracks, topics.TRACKS, lambda m: tracks.append((time.monotonic(), m)),
                                topics.LATCHED)
    planner.create_subscription(HOIVideo, topics.VIDEOS, videos.append, 10)
    task_pub = planner.create_publisher(String, topics.TASK, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(planner)
    try:
        start = time.monotonic()
        request_id, sent, last_sent, rejections = "", 0.0, -1e9, []
        while time.monotonic() - start < TIMEOUT_S and node_process.poll() is None:
            executor.spin_once(timeout_sec=0.05)
            if not request_id and statuses and task_pub.get_subscription_count() and time.monotonic() - last_sent > 1.0:
                last_sent = time.monotonic()
                task_pub.publish(String(data=scene.text))
            for t, status in statuses:
                if not request_id and status.state == GenerationStatus.QUEUED:
                    request_id, sent = status.request_id, last_sent
                elif status.state == GenerationStatus.REJECTED and status.error not in rejections:
                    rejections.append(status.error)
            if (request_id and any(m.request_id == request_id for _, m in tracks) and len(videos) >= 3
                    and any(s.request_id == request_id and s.state == GenerationStatus.DONE for _, s in statuses)):
                break
        assert node_process.poll() is None, node_log.read_text()
        assert request_id and tracks, f"no tracks within {TIMEOUT_S} s; rejections {rejections}\n{node_log.read_text()}"
        received, msg = next((t, m) for t, m in tracks if m.request_id == request_id)
        mine = [(t, s) for t, s in statuses if s.request_id == request_id]
        done = next(s for _, s in mine if s.state == GenerationStatus.DONE)
        first_running = next(s for _, s in mine if s.state == GenerationStatus.RUNNING)
        stamp = lambda s: s.header.stamp.sec + s.header.stamp.nanosec * 1e-9  # noqa: E731
        generation_s = stamp(done) - stamp(first_running)
        rss_mb = peak_rss_mb(node_process.pid)

        points, labels, _ = tracks_from_msg(msg)
        assert points.shape == (9, 128, 3) and np.isfinite(points).all() and msg.header.frame_id == "world"
        assert np.abs(points).max() < 5.0
        # The published cameras are the undistorted, cropped, resized ones.
        for cam, _ in rig:
            video = next(v for v in videos if v.camera_name == cam.name)
            window = crop_window(cam, 64, 64, "workspace", np.reshape(box, (2, 3)))
            expected = cam.crop(window.x0, window.y0, window.width, window.height).resize(64, 64)
            info = video.camera_info
            assert (info.width, info.height) == (64, 64) and not any(info.d)
            np.testing.assert_allclose(np.reshape(info.k, (3, 3)), expected.K, atol=1e-6)
            assert len(video.frames) == 9 and video.frames[0].width == 64
        assert {s.total_steps for _, s in mine if s.state != GenerationStatus.QUEUED} == {done.total_steps}
        assert rss_mb < 1500, f"node peak RSS {rss_mb:.0f} MB"

        node_process.send_signal(signal.SIGINT)
        assert node_process.wait(timeout=15) == 0, node_log.read_text()
        # The built-in model at its own size on the scene's own 64 x 64 images, in this process,
        # while the cameras still publish (the same machine load): what the node is compared with.
        from syncmv4d_core.pipeline import SyncMV4DPipeline

        pipeline = SyncMV4DPipeline.from_checkpoint(None)
        t0 = time.monotonic()
        pipeline(images=[scene.videos[v, 0] for v in views], cameras=[scene.cameras[v] for v in views],
                 text=scene.text, num_frames=9, num_steps=20)
        direct_s = time.monotonic() - t0
        # Both ran under the same (shared, noisy) load; the node must not be much slower.
        assert generation_s < 2.0 * direct_s + 10.0, (generation_s, direct_s)
        print(f"\nnode up after {statuses[0][0] - start:.2f} s, task accepted after {sent - start:.2f} s")
        print(f"640x480 bgr8 distorted cameras at {RATE_HZ:.0f} Hz: task -> /hoi_tracks {received - sent:.2f} s "
              f"(first task: includes loading the model), generation RUNNING -> DONE {generation_s:.2f} s for "
              f"{done.total_steps} steps; the pipeline alone at 64x64: {direct_s:.2f} s; node peak RSS "
              f"{rss_mb:.0f} MB, rejections before: {rejections}")
        assert "Traceback" not in node_log.read_text()
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        executor.shutdown()
        planner.destroy_node()
        rclpy.try_shutdown(context=context)
