"""End-to-end demo of the generation node, run as a user would run it.

``syncmv4d-demo [--out out/demo] [--checkpoint DIR] [--seed S] [--steps N] [--timeout SEC]``

1. A held-out synthetic scene (64 x 64 pixels, 9 frames: the built-in tiny model's training
   size) gives three calibrated cameras, one per cluster (left, center, right), and a task text.
2. A params file for the node is written from those cameras and the node is started as its own
   process: ``python -m syncmv4d_ros.generate_node --ros-args --params-file <out>/params.yaml``.
3. In this process a camera rig publishes the scene's frame-0 images and CameraInfos, a
   planner-like client sends the task once the node is up and checks the HOITracks it gets back,
   and a recorder writes every topic of the run into an MCAP file (ros2 profile, CDR messages,
   ros2msg schemas) that ROS 2 tools can read.
4. The node is stopped with SIGINT; the outputs are written to ``--out``:

   =====================  =====================================================================
   ``params.yaml``        the node's parameters (cameras, checkpoint, steps, frames, seed)
   ``node.log``           the node's console output
   ``tracks.npz``         tracks (F, K, 3) float32 metres in the world frame, labels (K,),
                          request_id, task, frame_rate (frames per second), camera_names; per
                          labelled rigid object ``poses_<tool|target>`` (F, 4, 4) world_T_object
                          and ``pose_residual_<...>`` (F,) metres (syncmv4d_core.poses)
   ``tracks.png``         the trajectories in 3D and seen from above
   ``videos/<cam>.mp4``   the generated view of each camera (H.264, yuv420p)
   ``status_log.csv``     every GenerationStatus: time (s since the task was sent), state,
                          request id, step, total steps, progress, error
   ``run.mcap``           all topics of the run, each channel with its publishers' QoS in
                          ``offered_qos_profiles`` metadata (as rosbag2 writes it)
   =====================  =====================================================================

Exit status: 0 on success; 1 with a message on stderr when the node fails, reports an error,
the result is malformed or ``--timeout`` passes; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
import yaml
from mcap.writer import Writer
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from geometry_msgs.msg import PoseArray
from rclpy.duration import Duration
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from syncmv4d_core.cameras import Camera, one_view_per_cluster
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.poses import RIGID_LABELS, object_poses
from syncmv4d_core.scene import LABEL_NAMES, write_preview_video
from syncmv4d_core.visualize import plot_trajectories
from syncmv4d_ros import topics
from syncmv4d_ros.conversions import camera_to_camera_info, image_to_rgb, numpy_to_image, tracks_from_msg
from syncmv4d_ros.topics import absolute
from syncmv4d_ros.msg import GenerationStatus, HOITracks, HOIVideo

NUM_FRAMES, IMAGE_SIZE = 9, 64  # the built-in tiny model's training clip: 9 frames at 64 x 64 pixels
WORLD_FRAME = "world"
# The node's topics (syncmv4d_ros.topics, relative) as seen from the root namespace, where the demo runs.
TASK_TOPIC, STATUS_TOPIC, TRACKS_TOPIC = (absolute(t) for t in (topics.TASK, topics.STATUS, topics.TRACKS))
VIDEOS_TOPIC, CLOUD_TOPIC, MARKERS_TOPIC = (absolute(t) for t in (topics.VIDEOS, topics.CLOUD, topics.MARKERS))
POSES_TOPICS = {label: absolute(f"{topics.POSES}/{LABEL_NAMES[label]}") for label in RIGID_LABELS}
RIG_RATE_HZ = 5.0  # image sets per second: "a few Hz", like a slow camera driver
TASK_RETRY_S = 1.0  # a task that was rejected (e.g. no image set yet) or not answered is sent again after this
MAX_DISTANCE_M = 5.0  # generated points farther than this from the world origin are implausible for a table scene
STOP_TIMEOUT_S = 20.0  # seconds the node gets to exit after SIGINT
STATE_NAMES = {GenerationStatus.IDLE: "IDLE", GenerationStatus.QUEUED: "QUEUED", GenerationStatus.RUNNING: "RUNNING",
               GenerationStatus.DONE: "DONE", GenerationStatus.ERROR: "ERROR", GenerationStatus.REJECTED: "REJECTED",
               GenerationStatus.CANCELED: "CANCELED"}
LATCHED, STATUS_QOS = topics.LATCHED, topics.STATUS_QOS
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class DemoError(RuntimeError):
    """The demo cannot finish: node failure, error status, malformed result or timeout."""


# ---------------------------------------------------------------------- scene and node parameters
def image_topic(name: str) -> str:
    """The image topic of camera ``name`` (the node's default, in the root namespace)."""
    return absolute(topics.image_topic(name))


def camera_info_topic(name: str) -> str:
    """The CameraInfo topic of camera ``name`` (the node's default, in the root namespace)."""
    return absolute(topics.camera_info_topic(name))


def node_parameters(cameras: list[Camera], checkpoint: str, num_steps: int, seed: int) -> dict:
    """The node's params-file content (``/**: ros__parameters: ...``) for ``cameras``.

    Poses are the cameras' world_T_cam as xyz (metres) + quat_wxyz, floats as the node requires.
    Topic names are left to the node's defaults (``syncmv4d_ros.topics``).
    """
    cams = {}
    for cam in cameras:
        pose = cam.to_dict()
        cams[cam.name] = {"xyz": [float(v) for v in pose["xyz"]], "quat_wxyz": [float(v) for v in pose["quat_wxyz"]],
                          "cluster": cam.cluster}
    params = {"camera_names": [cam.name for cam in cameras], "cameras": cams, "world_frame": WORLD_FRAME,
              "checkpoint": checkpoint, "num_steps": num_steps, "num_frames": NUM_FRAMES, "guidance_scale": 3.0,
              "seed": seed, "model_width": IMAGE_SIZE, "model_height": IMAGE_SIZE}
    return {"/**": {"ros__parameters": params}}


# ---------------------------------------------------------------------- MCAP recording
_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64", "string", "wstring"}
_SEPARATOR = "=" * 80


def message_type_name(msg_type: type) -> str:
    """``pkg/msg/Type`` of a generated message class (e.g. ``sensor_msgs/msg/Image``)."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def _definition_file(type_name: str, prefixes: list[Path]) -> Path:
    package, _, name = type_name.split("/")
    for prefix in prefixes:
        path = prefix / "share" / package / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise ValueError(f"no definition of {type_name} under {[str(p) for p in prefixes]} "
                     f"(share/{package}/msg/{name}.msg)")


def _field_types(text: str, package: str) -> list[str]:
    """``pkg/msg/Type`` of every non-primitive field of a .msg text, in order of appearance."""
    types = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        base = line.split()[0].split("[")[0].split("<=")[0]  # drop array / bound suffixes
        if base in _PRIMITIVES:
            continue
        if base == "Header":
            types.append("std_msgs/msg/Header")
        elif "/" in base:
            dep_package, dep_name = base.split("/")[0], base.split("/")[-1]
            types.append(f"{dep_package}/msg/{dep_name}")
        else:
            types.append(f"{package}/msg/{base}")
    return types


def message_definition(type_name: str, prefixes: list[Path] | None = None) -> str:
    """The complete ``ros2msg`` definition of ``type_name``: its .msg text, then every type it
    depends on (recursively, once each) after an 80 ``=`` line and ``MSG: pkg/msg/Type``.

    Args:
        type_name: ``pkg/msg/Type``.
        prefixes: install prefixes holding ``share/<pkg>/msg/*.msg``; default ``AMENT_PREFIX_PATH``,
            else this Python's prefix (ROS 2 from pip wheels installs there).
    """
    if prefixes is None:
        ament = os.environ.get("AMENT_PREFIX_PATH", "")
        prefixes = [Path(p) for p in ament.split(os.pathsep) if p] or [Path(sys.prefix)]
    texts: dict[str, str] = {}
    pending = [type_name]
    while pending:
        name = pending.pop(0)
        if name in texts:
            continue
        texts[name] = _definition_file(name, prefixes).read_text()
        pending += _field_types(texts[name], name.split("/")[0])
    parts = [texts.pop(type_name).rstrip("\n")]
    parts += [f"{_SEPARATOR}\nMSG: {name}\n{text.rstrip(chr(10))}" for name, text in texts.items()]
    return "\n".join(parts) + "\n"


_INFINITE_NS = 2**63 - 1  # rmw's "infinite" duration as rclpy reports it
_RMW_INFINITE = {"sec": 2147483647, "nsec": 4294967295}  # ... and as rosbag2 writes it


def _duration_to_yaml(duration: Duration) -> dict:
    ns = duration.nanoseconds
    if ns >= _INFINITE_NS or ns < 0:
        return dict(_RMW_INFINITE)
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def _duration_from_yaml(data: dict) -> Duration:
    if data == _RMW_INFINITE:
        return Duration(nanoseconds=_INFINITE_NS)
    return Duration(seconds=int(data["sec"]), nanoseconds=int(data["nsec"]))


def qos_to_metadata(profiles: list[QoSProfile]) -> str:
    """rosbag2's ``offered_qos_profiles`` channel metadata: a YAML list of QoS profiles (policies
    as rmw enum integers, durations as sec / nsec)."""
    return yaml.safe_dump([{
        "history": int(p.history), "depth": int(p.depth), "reliability": int(p.reliability),
        "durability": int(p.durability), "deadline": _duration_to_yaml(p.deadline),
        "lifespan": _duration_to_yaml(p.lifespan), "liveliness": int(p.liveliness),
        "liveliness_lease_duration": _duration_to_yaml(p.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": bool(p.avoid_ros_namespace_conventions)} for p in profiles],
        sort_keys=False)


def qos_from_metadata(text: str) -> list[QoSProfile]:
    """The QoS profiles of an ``offered_qos_profiles`` metadata entry (what a replay offers)."""
    profiles = []
    for p in yaml.safe_load(text) or []:
        profiles.append(QoSProfile(
            history=HistoryPolicy(p["history"]), depth=p["depth"], reliability=ReliabilityPolicy(p["reliability"]),
            durability=DurabilityPolicy(p["durability"]), deadline=_duration_from_yaml(p["deadline"]),
            lifespan=_duration_from_yaml(p["lifespan"]), liveliness=LivelinessPolicy(p["liveliness"]),
            liveliness_lease_duration=_duration_from_yaml(p["liveliness_lease_duration"]),
            avoid_ros_namespace_conventions=p["avoid_ros_namespace_conventions"]))
    return profiles


class McapRecorder(Node):
    """Records topics into an MCAP file as ROS 2 does (profile ros2, CDR, ros2msg schemas, and
    the publishers' offered QoS in each channel's ``offered_qos_profiles`` metadata, so a replay
    can offer the same: ``/hoi_tracks`` stays latched).

    Subscriptions are raw: the serialized CDR bytes as received are written, so any message
    type, including this package's own, is recorded without converting it. A channel is
    registered at its first message, when its publishers (and their QoS) are known.
    """

    def __init__(self, path: str | Path, recorded: list[tuple[str, type, QoSProfile]], **node_kwargs) -> None:
        """
        Args:
            path: the MCAP file to write.
            recorded: (topic, message class, QoS of the subscription) per recorded topic.
        """
        super().__init__("syncmv4d_demo_recorder", **node_kwargs)
        self.counts: dict[str, int] = {topic: 0 for topic, _, _ in recorded}
        self._file = open(path, "wb")
        self._writer = Writer(self._file)
        self._writer.start(profile="ros2", library="syncmv4d-demo")
        self._schemas: dict[type, int] = {}
        self._channels: dict[str, int] = {}
        for topic, msg_type, qos in recorded:
            self.create_subscription(msg_type, topic, lambda data, t=topic, m=msg_type: self._record(t, m, data), qos,
                                     raw=True)

    def _channel(self, topic: str, msg_type: type) -> int:
        if topic not in self._channels:
            if msg_type not in self._schemas:
                name = message_type_name(msg_type)
                self._schemas[msg_type] = self._writer.register_schema(name=name, encoding="ros2msg",
                                                                       data=message_definition(name).encode())
            offered = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
            self._channels[topic] = self._writer.register_channel(
                topic=topic, message_encoding="cdr", schema_id=self._schemas[msg_type],
                metadata={"offered_qos_profiles": qos_to_metadata(offered)})
        return self._channels[topic]

    def _record(self, topic: str, msg_type: type, data: bytes) -> None:
        now = time.time_ns()
        self._writer.add_message(channel_id=self._channel(topic, msg_type), log_time=now, publish_time=now, data=data,
                                 sequence=self.counts[topic])
        self.counts[topic] += 1

    def close(self) -> None:
        """Write the MCAP summary and close the file (call once, after the last message)."""
        self._writer.finish()
        self._file.close()


# ---------------------------------------------------------------------- camera rig and planner
class CameraRig(Node):
    """Publishes one image (rgb8) + CameraInfo per camera at ``rate_hz``, all stamped alike per set."""

    def __init__(self, cameras: list[Camera], images: list[np.ndarray], rate_hz: float = RIG_RATE_HZ,
                 **node_kwargs) -> None:
        """
        Args:
            cameras: V cameras; images: V (H, W, 3) uint8 RGB images of the cameras' size.
        """
        super().__init__("syncmv4d_demo_camera_rig", **node_kwargs)
        self._sets = []
        for cam, pixels in zip(cameras, images, strict=True):
            header = Header(frame_id=f"{cam.name}_optical_frame")
            self._sets.append((numpy_to_image(pixels, "rgb8", header), camera_to_camera_info(cam, header),
                               self.create_publisher(Image, image_topic(cam.name), qos_profile_sensor_data),
                               self.create_publisher(CameraInfo, camera_info_topic(cam.name), qos_profile_sensor_data)))
        self.published = 0
        self.create_timer(1.0 / rate_hz, self._publish)

    def _publish(self) -> None:
        stamp = self.get_clock().now().to_msg()
        for image, info, image_pub, info_pub in self._sets:
            image.header.stamp = stamp
            info.header.stamp = stamp
            info_pub.publish(info)
            image_pub.publish(image)
        self.published += 1


@dataclass
class Result:
    """What the planner received for its request."""

    request_id: str = ""
    tracks: HOITracks | None = None
    videos: dict[str, HOIVideo] = field(default_factory=dict)
    statuses: list[tuple[float, GenerationStatus]] = field(default_factory=list)  # (seconds since the task, status)
    task_sent: float = math.nan  # time.monotonic() of the task that was accepted
    tracks_received: float = math.nan  # time.monotonic() of the tracks' arrival


class Planner(Node):
    """Sends the task, retrying while the node rejects it, and collects the answer to it."""

    def __init__(self, task: str, **node_kwargs) -> None:
        super().__init__("syncmv4d_demo_planner", **node_kwargs)
        self.task = task
        self.result = Result()
        self.node_up = False  # the node published a status (it publishes IDLE when it starts)
        self._answered = True  # the last task sent got its QUEUED / REJECTED (or none was sent)
        self._last_sent = -math.inf
        self._task_pub = self.create_publisher(String, TASK_TOPIC, RELIABLE)
        self.create_subscription(GenerationStatus, STATUS_TOPIC, self._on_status, STATUS_QOS)
        self.create_subscription(HOITracks, TRACKS_TOPIC, self._on_tracks, LATCHED)
        self.create_subscription(HOIVideo, VIDEOS_TOPIC, self._on_video, RELIABLE)

    def send_task_if_due(self) -> None:
        """Send the task when the node is up and the last attempt was rejected or went unanswered."""
        if self.result.request_id or not self.node_up or self._task_pub.get_subscription_count() == 0:
            return
        now = time.monotonic()
        if now - self._last_sent >= TASK_RETRY_S and (self._answered or now - self._last_sent >= 5 * TASK_RETRY_S):
            self._task_pub.publish(String(data=self.task))
            self._last_sent = now
            self._answered = False

    def _on_status(self, msg: GenerationStatus) -> None:
        self.node_up = True
        result = self.result
        if not result.request_id and msg.task == self.task:
            if msg.state == GenerationStatus.QUEUED:
                result.request_id, result.task_sent = msg.request_id, self._last_sent
            elif msg.state == GenerationStatus.REJECTED:
                self.get_logger().info(f"task rejected, sending it again: {msg.error}")
                self._answered = True
        if result.request_id and msg.request_id in (result.request_id, ""):
            result.statuses.append((time.monotonic() - result.task_sent, msg))

    def _on_tracks(self, msg: HOITracks) -> None:
        if self.result.request_id and msg.request_id == self.result.request_id and self.result.tracks is None:
            self.result.tracks, self.result.tracks_received = msg, time.monotonic()

    def _on_video(self, msg: HOIVideo) -> None:
        if self.result.request_id and msg.request_id == self.result.request_id:
            self.result.videos[msg.camera_name] = msg

    def terminal_status(self) -> GenerationStatus | None:
        """The DONE / ERROR status of the request, once it arrived."""
        for _, status in self.result.statuses:
            if status.request_id == self.result.request_id and status.state in (GenerationStatus.DONE,
                                                                                GenerationStatus.ERROR):
                return status
        return None


def check_tracks(msg: HOITracks, num_frames: int, world_frame: str = WORLD_FRAME,
                 max_distance: float = MAX_DISTANCE_M) -> tuple[np.ndarray, np.ndarray]:
    """Check a received HOITracks the way a planner would before using it.

    Returns:
        tracks (F, K, 3) float32 metres in ``world_frame`` and labels (K,) uint8.
    Raises:
        ValueError: wrong frame id, frame count, label count, non-finite or implausibly far points.
    """
    if msg.header.frame_id != world_frame:
        raise ValueError(f"tracks are in frame {msg.header.frame_id!r}, expected {world_frame!r}")
    tracks, labels, _ = tracks_from_msg(msg)
    if tracks.shape[0] != num_frames or tracks.shape[1] < 1:
        raise ValueError(f"tracks have shape {tracks.shape}, expected ({num_frames}, K >= 1, 3)")
    if labels.shape != (tracks.shape[1],):
        raise ValueError(f"{labels.shape[0]} labels for {tracks.shape[1]} points")
    if not np.isfinite(tracks).all():
        raise ValueError(f"{int((~np.isfinite(tracks)).sum())} non-finite coordinates in the tracks")
    farthest = float(np.linalg.norm(tracks, axis=-1).max())
    if farthest > max_distance:
        raise ValueError(f"a point lies {farthest:.2f} m from the world origin, more than {max_distance} m")
    return tracks, labels


# ---------------------------------------------------------------------- outputs
def write_status_log(statuses: list[tuple[float, GenerationStatus]], path: Path) -> Path:
    """CSV of the statuses: time_s (since the task was sent), state, request_id, step, total_steps, progress, error."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time_s", "state", "request_id", "step", "total_steps", "progress", "error"])
        for t, s in statuses:
            writer.writerow([f"{t:.3f}", STATE_NAMES.get(s.state, str(s.state)), s.request_id, s.step, s.total_steps,
                             f"{s.progress:.3f}", s.error])
    return path


# ---------------------------------------------------------------------- the run
@dataclass
class Summary:
    """What the demo measured and wrote."""

    task: str
    request_id: str
    latency_s: float  # task sent -> tracks received (includes loading the model on the first task)
    num_frames: int
    num_points: int
    recorded: dict[str, int]  # topic -> messages in the MCAP file
    outputs: dict[str, Path]


def start_node(params_file: Path, log_file: Path) -> subprocess.Popen:
    """The generation node as its own process, its console output going to ``log_file``."""
    with open(log_file, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "syncmv4d_ros.generate_node", "--ros-args",
                                 "--params-file", str(params_file)], stdout=log, stderr=subprocess.STDOUT)


def stop_node(process: subprocess.Popen) -> int:
    """SIGINT (what Ctrl-C sends), then kill if it does not exit within STOP_TIMEOUT_S; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _log_tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run(out: Path, checkpoint: str = "", seed: int = 0, num_steps: int = 20, timeout: float = 300.0) -> Summary:
    """Run the demo (see the module docstring); writes into ``out``.

    Args:
        checkpoint: checkpoint directory of the node ("" = the built-in tiny model).
        seed: seed of the synthetic scene and of the generation.
        num_steps: denoising steps.
        timeout: seconds from starting the node to having received every output.
    Raises:
        DemoError: the node failed or reported an error, the result is malformed, or timeout passed.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(exist_ok=True)
    # 1. Scene: one camera per cluster, frame-0 images.
    scene = generate_scene(seed, SynthConfig(num_frames=NUM_FRAMES, height=IMAGE_SIZE, width=IMAGE_SIZE), split="test")
    views = one_view_per_cluster(scene.cameras)
    cameras = [scene.cameras[v] for v in views]
    images = [scene.videos[v, 0] for v in views]

    # 2. The node, from a params file.
    params_file = out / "params.yaml"
    params_file.write_text(yaml.safe_dump(node_parameters(cameras, checkpoint, num_steps, seed), sort_keys=False))
    node_log = out / "node.log"

    # 3. Rig, planner and recorder in this process (created first: the node's first messages are recorded).
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    recorded = [(image_topic(c.name), Image, qos_profile_sensor_data) for c in cameras]
    recorded += [(camera_info_topic(c.name), CameraInfo, qos_profile_sensor_data) for c in cameras]
    recorded += [(TASK_TOPIC, String, RELIABLE), (STATUS_TOPIC, GenerationStatus, STATUS_QOS),
                 (TRACKS_TOPIC, HOITracks, LATCHED), (VIDEOS_TOPIC, HOIVideo, RELIABLE),
                 (CLOUD_TOPIC, PointCloud2, RELIABLE), (MARKERS_TOPIC, MarkerArray, LATCHED)]
    recorded += [(topic, PoseArray, LATCHED) for topic in POSES_TOPICS.values()]
    recorder = McapRecorder(out / "run.mcap", recorded, context=context)
    rig = CameraRig(cameras, images, context=context)
    planner = Planner(scene.text, context=context)
    for node in (recorder, rig, planner):
        executor.add_node(node)
    process, stopped = start_node(params_file, node_log), False
    try:
        deadline = time.monotonic() + timeout
        result = planner.result

        def complete() -> bool:
            return (result.tracks is not None and len(result.videos) == len(cameras)
                    and planner.terminal_status() is not None
                    and recorder.counts[CLOUD_TOPIC] > 0 and recorder.counts[MARKERS_TOPIC] > 0
                    and recorder.counts[TRACKS_TOPIC] > 0 and recorder.counts[VIDEOS_TOPIC] >= len(cameras)
                    and all(recorder.counts[topic] > 0 for topic in POSES_TOPICS.values()))

        while not complete():
            if process.poll() is not None:
                raise DemoError(f"the generation node exited with status {process.returncode}; "
                                f"end of {node_log}:\n{_log_tail(node_log)}")
            status = planner.terminal_status()
            if status is not None and status.state == GenerationStatus.ERROR:
                raise DemoError(f"the node reported an error for request {status.request_id}: {status.error}")
            if time.monotonic() > deadline:
                stage = ("the node to come up" if not planner.node_up else
                         "the node to accept the task" if not result.request_id else "the result")
                raise DemoError(f"timed out after {timeout:g} s waiting for {stage}; end of {node_log}:\n"
                                f"{_log_tail(node_log)}")
            planner.send_task_if_due()
            executor.spin_once(timeout_sec=0.05)
        tracks, labels = check_tracks(result.tracks, NUM_FRAMES)
        for name, video in result.videos.items():
            if len(video.frames) != NUM_FRAMES:
                raise DemoError(f"video of {name} has {len(video.frames)} frames, expected {NUM_FRAMES}")
        # The node publishes IDLE after DONE; spin briefly so the recording ends with it.
        idle_by = time.monotonic() + 2.0
        while time.monotonic() < idle_by and result.statuses[-1][1].state != GenerationStatus.IDLE:
            executor.spin_once(timeout_sec=0.05)
        rc = stop_node(process)
        stopped = True
        if rc != 0:
            raise DemoError(f"the generation node exited with status {rc} on SIGINT; end of {node_log}:\n"
                            f"{_log_tail(node_log)}")
    except ValueError as exc:
        raise DemoError(f"malformed result: {exc}") from exc
    finally:
        if not stopped:
            stop_node(process)
        recorder.close()
        executor.shutdown()
        for node in (recorder, rig, planner):
            node.destroy_node()
        rclpy.try_shutdown(context=context)

    # 4. Outputs.
    outputs = {"params": params_file, "node_log": node_log, "mcap": out / "run.mcap"}
    outputs["tracks"] = out / "tracks.npz"
    # Per-object pose trajectories from the labelled tracks (none while the model labels nothing).
    poses = {}
    for label, trajectory in object_poses(tracks, labels).items():
        poses[f"poses_{trajectory.name}"] = trajectory.poses
        poses[f"pose_residual_{trajectory.name}"] = trajectory.residual
    np.savez(outputs["tracks"], tracks=tracks, labels=labels, request_id=result.request_id, task=scene.text,
             frame_rate=result.tracks.frame_rate, camera_names=np.array(list(result.tracks.camera_names)), **poses)
    outputs["plot"] = plot_trajectories(tracks, labels, out / "tracks.png", scene.text)
    for cam in cameras:
        video = result.videos[cam.name]
        outputs[f"video_{cam.name}"] = out / "videos" / f"{cam.name}.mp4"
        write_preview_video(outputs[f"video_{cam.name}"], np.stack([image_to_rgb(f) for f in video.frames]),
                            video.frame_rate)
    outputs["status_log"] = write_status_log(result.statuses, out / "status_log.csv")
    return Summary(task=scene.text, request_id=result.request_id, latency_s=result.tracks_received - result.task_sent,
                   num_frames=tracks.shape[0], num_points=tracks.shape[1], recorded=dict(recorder.counts),
                   outputs=outputs)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``syncmv4d-demo``."""
    parser = argparse.ArgumentParser(prog="syncmv4d-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)")
    parser.add_argument("--checkpoint", default="", help="checkpoint directory (default: the built-in tiny model)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scene and the generation (default 0)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds until every output must have arrived (default 300)")
    args = parser.parse_args(argv)
    if args.seed < 0 or args.steps < 1 or not args.timeout > 0:
        parser.error("--seed must be >= 0, --steps >= 1 and --timeout > 0")
    checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else ""
    try:
        summary = run(args.out, checkpoint, args.seed, args.steps, args.timeout)
    except DemoError as exc:
        print(f"syncmv4d-demo: error: {exc}", file=sys.stderr)
        return 1
    print(f'task "{summary.task}" -> request {summary.request_id}')
    print(f"latency task -> tracks: {summary.latency_s:.2f} s (includes loading the model)")
    print(f"tracks: {summary.num_frames} frames x {summary.num_points} points (metres, frame {WORLD_FRAME!r})")
    print("recorded: " + ", ".join(f"{topic} {count}" for topic, count in summary.recorded.items()))
    for name, path in summary.outputs.items():
        print(f"{name:>14}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
