"""ROS 2 node: synchronised camera images + a task text -> SyncMV4D 4D point tracks and videos.

Inputs: every camera's Image and CameraInfo (sensor-data QoS) and the task text (std_msgs/String).
An action ``generate_hoi`` (GenerateHOI) offers the same as a request/response with feedback.
Outputs: HOITracks (reliable, transient local, depth 1: a late planner still gets the last
result), one HOIVideo per view, the tracks as PointCloud2 (x, y, z, t, label) and as a
MarkerArray, and GenerationStatus (progress at every denoising step, a heartbeat in between).
Topic names are relative (``syncmv4d_ros.topics``), so the node works in a namespace.

Camera images of any size are undistorted (plumb_bob / rational_polynomial), cropped (centre or
around a world-frame workspace box) and resized to the model's size, with the intrinsics updated
(``syncmv4d_ros.preprocess``); the published HOIVideo CameraInfo describes that camera.

Busy policy: tasks wait in a bounded queue (``task_queue_size``); a task arriving while the
queue is full is REJECTED on the status topic. The node is a thin adapter: ``prepare_request``
turns ROS inputs into (images, cameras, text), the pipeline does the work, ``publish_scene``
turns the resulting Scene into messages.

Run: ``python -m syncmv4d_ros.generate_node --ros-args --params-file config/generate.yaml``.
"""

from __future__ import annotations

import math
import os
import queue
import re
import signal
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from syncmv4d_core.cameras import Camera
from syncmv4d_core.limits import MAX_FRAMES, MAX_GUIDANCE, MAX_IMAGE_SIDE, MAX_STEPS, MAX_TEXT_CHARS
from syncmv4d_core.poses import RIGID_LABELS, object_poses
from syncmv4d_core.scene import LABEL_NAMES, Scene
from syncmv4d_ros import topics
from syncmv4d_ros.action import GenerateHOI
from syncmv4d_ros.conversions import (
    ImageConverter,
    camera_info_to_K,
    image_to_numpy,
    poses_to_msg,
    seconds_to_time,
    time_to_seconds,
    tracks_to_markers,
    tracks_to_msg,
    tracks_to_point_cloud,
    video_to_msg,
)
from syncmv4d_ros.msg import GenerationStatus, HOITracks, HOIVideo
from syncmv4d_ros.preprocess import CROP_MODES, Undistorter, crop_window, distortion_coefficients, to_model_input
from syncmv4d_ros.sync import ApproximateTimeSynchronizer

# A pipeline maps (images, cameras, text, num_frames, num_steps, guidance_scale, seed, callback) to a Scene.
Pipeline = Callable[..., Scene]
PipelineFactory = Callable[[str | None, str], Pipeline]
# Told every status of one request; the DONE status comes with the published HOITracks.
StatusListener = Callable[[GenerationStatus, HOITracks | None], None]

TERMINAL = (GenerationStatus.DONE, GenerationStatus.ERROR, GenerationStatus.REJECTED, GenerationStatus.CANCELED)
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def load_pipeline(checkpoint: str | None, device: str) -> Pipeline:
    """The SyncMV4D pipeline of ``checkpoint`` (None = the built-in one) on ``device``."""
    # Imported here: torch and the models load only when the first task needs them.
    from syncmv4d_core.pipeline import SyncMV4DPipeline

    return SyncMV4DPipeline.from_checkpoint(checkpoint, device=device)


def planned_steps(pipeline: Pipeline, num_steps: int) -> int | None:
    """Denoising steps ``pipeline`` will run for ``num_steps`` with its defaults (a model may end
    sampling early, ``final_sigma``): ``SyncMV4DPipeline.planned_steps``; None for a pipeline
    without it (the first progress callback then tells)."""
    planner = getattr(pipeline, "planned_steps", None)
    return None if planner is None else int(planner(num_steps))


def check_device(device: str) -> str:
    """``device`` if it names a device torch can use here ("cpu", "cuda", "cuda:N", "mps"), else ValueError."""
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if device.startswith("cuda"):
        import torch  # only when a GPU is asked for

        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available here ({torch.cuda.device_count()} CUDA devices)")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' is not available here")
    return device


class Cancelled(Exception):
    """Raised from the progress callback to stop a running generation (cancel or shutdown)."""


@dataclass(eq=False)
class Request:
    """One accepted generation request (everything the worker needs, copied at arrival)."""

    request_id: str
    text: str
    images: list[np.ndarray]  # V x (h, w, 3) uint8 RGB at the model's size
    cameras: list[Camera]  # undistorted, cropped and resized to the model's size
    frame_ids: dict[str, str]  # camera name -> optical frame id (from the input images)
    stamp: float  # seconds, stamp of the synchronised image set (= time of frame 0)
    num_frames: int
    num_steps: int
    guidance_scale: float
    seed: int
    listener: StatusListener | None = None
    total_steps: int = 0  # denoising steps that will run; 0 until the pipeline is loaded
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: bool = False  # its terminal status was published
    last_status: GenerationStatus | None = None


def _int_range(low: int, high: int, step: int = 0) -> list[IntegerRange]:
    return [IntegerRange(from_value=low, to_value=high, step=step)]


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


# name -> (default, description, ranges (or None), changeable at run time)
PARAMETERS: dict[str, tuple] = {
    "camera_names": (["left", "center", "right"], "names of the cameras (unique)", None, False),
    "world_frame": ("world", "frame_id of the tracks; camera poses are given in it", None, False),
    "checkpoint": ("", "checkpoint directory; empty = the built-in tiny model (reloaded when changed)", None, True),
    "device": ("cpu", "torch device: cpu, cuda, cuda:N, mps (reloaded when changed)", None, True),
    "num_steps": (20, "denoising steps", {"integer_range": _int_range(1, MAX_STEPS)}, True),
    "guidance_scale": (3.0, "classifier-free guidance scale on the text",
                       {"floating_point_range": _float_range(0.0, MAX_GUIDANCE)}, True),
    "num_frames": (9, f"generated frames, 4n + 1 up to {MAX_FRAMES}",
                   {"integer_range": _int_range(1, MAX_FRAMES, 4)}, True),
    "seed": (0, "noise seed", {"integer_range": _int_range(0, 2**31 - 1)}, True),
    "model_width": (64, "model input width, pixels (the built-in model: 64)",
                    {"integer_range": _int_range(8, MAX_IMAGE_SIDE, 8)}, False),
    "model_height": (64, "model input height, pixels (the built-in model: 64)",
                     {"integer_range": _int_range(8, MAX_IMAGE_SIDE, 8)}, False),
    "crop_mode": ("center", f"crop before the resize: {' | '.join(CROP_MODES)}", None, True),
    "workspace_box": ([0.0] * 0, "crop_mode workspace: [xmin, ymin, zmin, xmax, ymax, zmax] metres in world_frame",
                      None, True),
    "max_image_bytes": (40_000_000, "larger images are dropped and reported",
                        {"integer_range": _int_range(1, 2**31 - 1)}, True),
    "max_image_age": (2.0, "seconds; an image set older than this (node clock) is refused; 0 = no limit",
                      {"floating_point_range": _float_range(0.0, 1e6)}, True),
    "sync_slop": (0.02, "seconds: images of all cameras within this form one set",
                  {"floating_point_range": _float_range(0.0, 10.0)}, False),
    "sync_queue_size": (10, "images kept per camera while waiting for a match",
                        {"integer_range": _int_range(1, 1000)}, False),
    "task_queue_size": (2, "tasks waiting while one runs; more are REJECTED",
                        {"integer_range": _int_range(1, 1000)}, False),
    "max_task_length": (MAX_TEXT_CHARS, "characters", {"integer_range": _int_range(1, MAX_TEXT_CHARS)}, True),
    "marker_max_tracks": (200, "trajectories drawn in the MarkerArray", {"integer_range": _int_range(1, 100_000)},
                          True),
    "heartbeat_period": (1.0, "seconds between repeated statuses while a request runs",
                         {"floating_point_range": _float_range(0.05, 60.0)}, False),
    "action_name": (topics.ACTION, "name of the GenerateHOI action (relative)", None, False),
    "autostart": (True, "configure and activate at start (false: wait for a lifecycle manager; configure then "
                        "loads the model)", None, False),
    **{name: (default, "topic (relative names resolve in the node's namespace)", None, False)
       for name, default in topics.TOPIC_PARAMETERS.items()},
}
RUNTIME = {name for name, (_, _, _, runtime) in PARAMETERS.items() if runtime}


class GenerateNode(LifecycleNode):
    """Generates HOI point tracks from the latest synchronised multi-view images on each task."""

    def __init__(self, pipeline_factory: PipelineFactory = load_pipeline, node_name: str = "syncmv4d_generate",
                 **node_kwargs) -> None:
        """
        Args:
            pipeline_factory: (checkpoint or None, device) -> pipeline; called in the worker
                thread on the first task and again after ``checkpoint`` or ``device`` change.
            node_kwargs: passed to rclpy's Node (e.g. ``parameter_overrides``, ``context``, ``namespace``).
        Raises:
            ValueError: an invalid parameter (the message names it).
        """
        super().__init__(node_name, **node_kwargs)
        self._pipeline_factory = pipeline_factory

        # 1. Parameters (all declared up front with descriptors; per-camera ones after the camera
        # list is known). rclpy enforces the ranges and read-only flags at set time;
        # _on_set_parameters checks the rest (device, crop, box) before a value is accepted.
        for name, (default, description, ranges, runtime) in PARAMETERS.items():
            descriptor = ParameterDescriptor(description=description, read_only=not runtime, **(ranges or {}))
            if name == "workspace_box":  # a double array with no default: declared by type
                default = Parameter.Type.DOUBLE_ARRAY
            self.declare_parameter(name, default, descriptor)
        self.camera_names: list[str] = list(self._param("camera_names"))
        if not self.camera_names or len(set(self.camera_names)) != len(self.camera_names) or "" in self.camera_names:
            raise ValueError(f"parameter camera_names must list unique non-empty names, got {self.camera_names}")
        self._poses: dict[str, np.ndarray] = {}
        self._clusters: dict[str, str] = {}
        camera_topics: dict[str, tuple[str, str]] = {}
        for name in self.camera_names:
            prefix = f"cameras.{name}."
            self.declare_parameter(prefix + "image_topic", topics.image_topic(name),
                                   ParameterDescriptor(description="image topic of the camera", read_only=True))
            self.declare_parameter(prefix + "camera_info_topic", topics.camera_info_topic(name),
                                   ParameterDescriptor(description="CameraInfo topic of the camera", read_only=True))
            self.declare_parameter(prefix + "xyz", Parameter.Type.DOUBLE_ARRAY,
                                   ParameterDescriptor(description="camera position in world_frame, metres",
                                                       read_only=True))
            self.declare_parameter(prefix + "quat_wxyz", Parameter.Type.DOUBLE_ARRAY,
                                   ParameterDescriptor(description="camera-to-world orientation (w, x, y, z)",
                                                       read_only=True))
            self.declare_parameter(prefix + "cluster", "center",
                                   ParameterDescriptor(description="left | center | right", read_only=True))
            camera_topics[name] = (self._param(prefix + "image_topic"), self._param(prefix + "camera_info_topic"))
            self._poses[name] = self._camera_pose(name)
            self._clusters[name] = self._param(prefix + "cluster")
        for name in ("device", "crop_mode"):
            error = self._check_value(name, self._param(name))
            if error:
                raise ValueError(error)
        self._check_crop(self._param("crop_mode"), self._workspace_box())
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # 2. Input state: valid images go through the synchroniser; the latest valid CameraInfo
        # per camera is kept (intrinsics rarely change); the last input error per camera explains
        # a rejection when no valid set exists.
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._sync = ApproximateTimeSynchronizer(self.camera_names, self._param("sync_slop"),
                                                 self._param("sync_queue_size"))
        self._infos: dict[str, CameraInfo] = {}
        self._input_errors: dict[tuple[str, str], str] = {}  # (camera, "image" | "camera_info") -> error
        self._undistort = Undistorter()
        self._images = ImageConverter()
        self.get_logger().info(self._images.describe())

        # 3. Publishers.
        self._tracks_pub = self.create_publisher(HOITracks, self._param("tracks_topic"), topics.LATCHED)
        self._videos_pub = self.create_publisher(HOIVideo, self._param("videos_topic"), len(self.camera_names))
        self._cloud_pub = self.create_publisher(PointCloud2, self._param("cloud_topic"), 1)
        self._markers_pub = self.create_publisher(MarkerArray, self._param("markers_topic"), topics.LATCHED)
        self._status_pub = self.create_publisher(GenerationStatus, self._param("status_topic"), topics.STATUS_QOS)
        # One PoseArray topic per rigid object label: <poses_topic>/tool, <poses_topic>/target.
        self._pose_pubs = {label: self.create_publisher(PoseArray, f"{self._param('poses_topic')}/{LABEL_NAMES[label]}",
                                                        topics.LATCHED) for label in RIGID_LABELS}

        # 4. Worker. Generation takes seconds to minutes; running it in the subscription callback
        # would block the executor, so images, new tasks and parameter changes would stall.
        self._queue: queue.Queue[Request | None] = queue.Queue(maxsize=self._param("task_queue_size"))
        self._requests: dict[str, Request] = {}  # not yet finished, by id
        self._current: Request | None = None
        self._pipeline: Pipeline | None = None
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="syncmv4d-generation", daemon=True)
        self._worker.start()
        self._camera_topics = camera_topics
        self._inputs: list = []  # subscriptions, action server and timer while active
        self._action_server: ActionServer | None = None

        # 5. Lifecycle: a plain node configures and activates itself (the model loads on the
        # first task); with autostart false it waits for configure (loads the model) and
        # activate (subscribes) from a lifecycle manager.
        if self._param("autostart"):
            self.trigger_configure()
            self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the model (managed mode; a plain node loads it on the first task)."""
        if self._param("autostart"):
            return TransitionCallbackReturn.SUCCESS
        checkpoint = self._param("checkpoint") or None
        self.get_logger().info(f"configure: loading pipeline {checkpoint or '(built-in)'} on {self._param('device')}")
        try:
            pipeline = self._pipeline_factory(checkpoint, self._param("device"))
        except Exception as exc:  # a transition reports failure instead of raising
            self.get_logger().error(f"configure failed: cannot load the pipeline: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self._pipeline = pipeline
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Subscribe to the cameras and the task topic, offer the action, start the heartbeat."""
        for name, (image_topic, info_topic) in self._camera_topics.items():
            self._inputs.append(self.create_subscription(Image, image_topic, lambda msg, n=name: self._on_image(n, msg),
                                                         qos_profile_sensor_data))
            self._inputs.append(self.create_subscription(CameraInfo, info_topic,
                                                         lambda msg, n=name: self._on_camera_info(n, msg),
                                                         qos_profile_sensor_data))
        self._inputs.append(self.create_subscription(String, self._param("task_topic"),
                                                     lambda msg: self.submit(msg.data), 10))
        # The action's execute callback waits for the worker; a reentrant group lets a
        # MultiThreadedExecutor run it next to the other callbacks.
        self._action_server = ActionServer(self, GenerateHOI, self._param("action_name"),
                                           execute_callback=self._execute_goal, goal_callback=self._on_goal,
                                           cancel_callback=lambda _goal: CancelResponse.ACCEPT,
                                           callback_group=ReentrantCallbackGroup())
        # The heartbeat repeats the running request's last status, so a planner can tell a long
        # denoising step (or the model loading) from a dead node.
        self._inputs.append(self.create_timer(self._param("heartbeat_period"), self._heartbeat))
        self._publish_status(GenerationStatus.IDLE)
        self.get_logger().info(f"ready: cameras {self.camera_names}, model input "
                               f"{self._param('model_width')}x{self._param('model_height')} "
                               f"({self._param('crop_mode')} crop), tasks on "
                               f"{self.resolve_topic_name(self._param('task_topic'))}, tracks on "
                               f"{self.resolve_topic_name(self._param('tracks_topic'))}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop taking inputs (a running generation still finishes and is published)."""
        self._destroy_inputs()
        self.get_logger().info("deactivated: not subscribed to cameras or tasks")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Drop the model and the held images."""
        with self._lock:
            self._pipeline = None
            self._sync = ApproximateTimeSynchronizer(self.camera_names, self._param("sync_slop"),
                                                     self._param("sync_queue_size"))
            self._infos.clear()
            self._input_errors.clear()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        """End unfinished requests with ERROR "shutdown"."""
        self._destroy_inputs()
        self.shutdown_requests()
        return TransitionCallbackReturn.SUCCESS

    def _destroy_inputs(self) -> None:
        for entity in self._inputs:
            if hasattr(entity, "cancel"):  # a timer
                entity.cancel()
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        self._inputs = []
        if self._action_server is not None:
            self._action_server.destroy()
            self._action_server = None

    # ------------------------------------------------------------------ parameters
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _workspace_box(self) -> list[float]:
        try:
            return list(self._param("workspace_box"))
        except ParameterUninitializedException:
            return []

    def _camera_pose(self, name: str) -> np.ndarray:
        """(4, 4) world_T_cam of camera ``name`` from its xyz (metres) + quat_wxyz parameters."""
        prefix = f"cameras.{name}."
        values = {}
        for key in ("xyz", "quat_wxyz"):
            try:
                values[key] = self.get_parameter(prefix + key).value
            except ParameterUninitializedException:
                raise ValueError(f"parameter {prefix + key} is not set (camera {name!r} needs its pose in the "
                                 "world frame, as floats)") from None
        if len(values["xyz"]) != 3:
            raise ValueError(f"parameter {prefix}xyz must hold 3 values (metres), got {list(values['xyz'])}")
        # Camera.from_pose validates the quaternion; identity intrinsics only carry the pose here.
        return Camera.from_pose(name, np.eye(3), values["xyz"], values["quat_wxyz"], 1, 1).world_T_cam

    @staticmethod
    def _check_value(name: str, value) -> str:
        """Why ``value`` is not valid for parameter ``name`` ("" if it is), beyond the descriptors' ranges."""
        try:
            if name == "device":
                check_device(value)
            elif name == "crop_mode" and value not in CROP_MODES:
                return f"parameter crop_mode must be one of {CROP_MODES}, got {value!r}"
            elif name in ("guidance_scale", "max_image_age") and not math.isfinite(value):
                return f"parameter {name} must be finite, got {value!r}"
        except ValueError as exc:
            return f"parameter {name}: {exc}"
        return ""

    @staticmethod
    def _check_crop(mode: str, box: list[float]) -> None:
        valid = len(box) == 6 and all(math.isfinite(v) for v in box) and all(box[i] < box[i + 3] for i in range(3))
        if (mode == "workspace" or box) and not valid:
            raise ValueError("parameter workspace_box must be [xmin, ymin, zmin, xmax, ymax, zmax] metres "
                             f"(finite, min < max; needed by crop_mode workspace), got {box}")

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            error = self._check_value(param.name, param.value)
            if error:
                return SetParametersResult(successful=False, reason=error)
        new = {p.name: p.value for p in params}
        if "crop_mode" in new or "workspace_box" in new:
            try:
                self._check_crop(new.get("crop_mode", self._param("crop_mode")),
                                 list(new["workspace_box"]) if "workspace_box" in new else self._workspace_box())
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if "checkpoint" in new or "device" in new:
            with self._lock:
                self._pipeline = None  # reloaded by the worker on the next task
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ inputs
    def _on_image(self, name: str, msg: Image) -> None:
        limit = self._param("max_image_bytes")
        what = f"image of camera {name!r} stamped {time_to_seconds(msg.header.stamp):.6f}"
        if len(msg.data) > limit:
            self._input_error(name, "image", f"{what} dropped: {len(msg.data)} bytes "
                                             f"({msg.width}x{msg.height} {msg.encoding}), more than "
                                             f"max_image_bytes = {limit}")
            return
        try:
            image_to_numpy(msg)  # validation only; pixels are converted when a task arrives
        except ValueError as exc:
            self._input_error(name, "image", f"{what} dropped: {exc}")
            return
        with self._lock:
            self._sync.add(name, time_to_seconds(msg.header.stamp), msg)
            self._input_errors.pop((name, "image"), None)

    def _on_camera_info(self, name: str, msg: CameraInfo) -> None:
        try:
            camera_info_to_K(msg)
            distortion_coefficients(msg.distortion_model, msg.d)
        except ValueError as exc:
            self._input_error(name, "camera_info", f"CameraInfo of camera {name!r} stamped "
                                                   f"{time_to_seconds(msg.header.stamp):.6f} dropped: {exc}")
            return
        with self._lock:
            self._infos[name] = msg
            self._input_errors.pop((name, "camera_info"), None)

    def _input_error(self, name: str, kind: str, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=1.0)
        with self._lock:
            self._input_errors[(name, kind)] = message

    def _no_set_reason(self, errors: dict[tuple[str, str], str]) -> str:
        """Why there is no usable image set: input errors, cameras never heard from, or stamps too far apart."""
        stamps = self._sync.last_stamps
        reasons = list(errors.values())
        silent = [n for n in self.camera_names if n not in stamps]
        if len(silent) == len(self.camera_names) and not reasons:
            return "no images received yet"
        if silent:
            reasons.append(f"no image received from camera(s) {silent}")
        elif stamps:
            spread = max(stamps.values()) - min(stamps.values())
            reasons.append(f"images arrive but no set of all cameras lies within sync_slop = "
                           f"{self._sync.slop} s: latest stamps " +
                           ", ".join(f"{n} {stamps[n]:.6f}" for n in self.camera_names) +
                           f" (spread {spread:.3f} s)")
        return "; ".join(reasons)

    def check_ready(self, text: str) -> None:
        """ValueError if a task ``text`` cannot be accepted now (the checks of ``prepare_request``
        that need no pixel work: text, image set, its age, CameraInfo)."""
        max_length = self._param("max_task_length")
        if not text:
            raise ValueError("empty task text")
        if len(text) > max_length:
            raise ValueError(f"task text has {len(text)} characters, more than max_task_length = {max_length}")
        if CONTROL_CHARACTERS.search(text):
            raise ValueError("task text holds control characters (other than tab and newline)")
        with self._lock:
            synced, infos, errors = self._sync.latest, dict(self._infos), dict(self._input_errors)
            reason = self._no_set_reason(errors) if synced is None else ""
        if synced is None:
            raise ValueError(f"no synchronised image set of cameras {self.camera_names}: {reason}")
        max_age = self._param("max_image_age")
        age = self.get_clock().now().nanoseconds * 1e-9 - synced.stamp
        if max_age > 0 and age > max_age:
            with self._lock:
                newer = self._no_set_reason({}) if self._sync.last_stamps else ""
            raise ValueError(f"the latest synchronised image set is {age:.3f} s old (stamp {synced.stamp:.6f}), "
                             f"more than max_image_age = {max_age} s" + (f"; {newer}" if newer else ""))
        for name in self.camera_names:
            if name not in infos:
                error = errors.get((name, "camera_info"))
                raise ValueError(f"no valid CameraInfo received for camera {name!r}" + (f" ({error})" if error else ""))

    def prepare_request(self, request_id: str, text: str) -> Request:
        """ROS inputs -> pipeline inputs: the task text, the latest synchronised images as RGB
        arrays undistorted, cropped and resized to the model's size, and one Camera per view
        (CameraInfo intrinsics + pose parameters, updated by the crop and the resize).

        Raises:
            ValueError: empty or too long text, no (recent enough) synchronised image set,
                missing CameraInfo, an image not matching its CameraInfo, or a workspace box
                outside a camera's view.
        """
        self.check_ready(text)
        with self._lock:
            synced, infos = self._sync.latest, dict(self._infos)
        width, height = self._param("model_width"), self._param("model_height")
        mode, box = self._param("crop_mode"), self._workspace_box()
        images, cameras, frame_ids = [], [], {}
        for name in self.camera_names:
            msg, info = synced.items[name], infos[name]
            if (msg.width, msg.height) != (info.width, info.height):
                raise ValueError(f"camera {name!r}: image is {msg.width}x{msg.height} but its CameraInfo says "
                                 f"{info.width}x{info.height}")
            K = camera_info_to_K(info)
            coefficients = distortion_coefficients(info.distortion_model, info.d)
            pixels = self._undistort(self._images.to_rgb(msg), K, coefficients)
            camera = Camera(name, K, self._poses[name], info.width, info.height, self._clusters[name])
            window = crop_window(camera, width, height, mode, np.reshape(box, (2, 3)) if box else None)
            pixels, camera = to_model_input(pixels, camera, width, height, window)
            images.append(pixels)
            cameras.append(camera)
            frame_ids[name] = msg.header.frame_id or name
        return Request(request_id=request_id, text=text, images=images, cameras=cameras, frame_ids=frame_ids,
                       stamp=synced.stamp, num_frames=self._param("num_frames"), num_steps=self._param("num_steps"),
                       guidance_scale=self._param("guidance_scale"), seed=self._param("seed"))

    # ------------------------------------------------------------------ requests
    def submit(self, task: str, listener: StatusListener | None = None) -> str:
        """Queue a generation for ``task`` (or reject it, on the status topic); returns its request id."""
        request_id = uuid.uuid4().hex[:12]
        text = task.strip()
        with self._submit_lock:  # the topic and the action may submit concurrently
            try:
                if self._stop.is_set():
                    raise ValueError("the node is shutting down")
                request = self.prepare_request(request_id, text)
                request.listener = listener
                if self._queue.full():
                    raise ValueError(f"busy: {self._queue.maxsize} requests already queued (task_queue_size)")
            except ValueError as exc:
                self.reject(request_id, text, str(exc), listener)
                return request_id
            # QUEUED goes out before the worker can see the request, so it always comes first.
            self.get_logger().info(f"request {request_id} queued: {text!r}")
            with self._lock:
                self._requests[request_id] = request
            self._status(request, GenerationStatus.QUEUED)
            self._queue.put_nowait(request)
        return request_id

    def reject(self, request_id: str, text: str, error: str, listener: StatusListener | None = None) -> None:
        """Publish REJECTED for a request that was never queued."""
        self.get_logger().error(f"request {request_id} rejected: {error}")
        self._publish_status(GenerationStatus.REJECTED, request_id, text[:200], error=error, listener=listener)

    def cancel(self, request_id: str) -> bool:
        """Cancel a queued or running request: a queued one ends CANCELED now, a running one at
        its next denoising step. False if the request is unknown or already finished."""
        with self._lock:
            request = self._requests.get(request_id)
            running = request is not None and request is self._current
        if request is None:
            return False
        request.cancel.set()
        if not running:
            self._finish(request, GenerationStatus.CANCELED, error="canceled while queued")
        return True

    def _on_goal(self, goal: GenerateHOI.Goal) -> GoalResponse:
        """Reject a goal that cannot run (empty / long text, no image set) at goal time."""
        try:
            self.check_ready(goal.task.strip())
        except ValueError as exc:
            self.reject(uuid.uuid4().hex[:12], goal.task.strip(), f"action goal rejected: {exc}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute_goal(self, goal_handle) -> GenerateHOI.Result:
        finished = threading.Event()
        outcome: dict = {}

        def listener(status: GenerationStatus, tracks: HOITracks | None) -> None:
            if status.state in TERMINAL:
                outcome.update(status=status, tracks=tracks)
                finished.set()
            else:
                goal_handle.publish_feedback(GenerateHOI.Feedback(status=status))

        request_id = self.submit(goal_handle.request.task, listener)
        cancel_sent = False
        while not finished.wait(timeout=0.05):
            if goal_handle.is_cancel_requested and not cancel_sent:
                cancel_sent = True
                self.cancel(request_id)
        status = outcome["status"]
        result = GenerateHOI.Result(tracks=outcome["tracks"] or HOITracks(), error=status.error)
        if status.state == GenerationStatus.DONE:
            goal_handle.succeed()
        elif status.state == GenerationStatus.CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return result

    # ------------------------------------------------------------------ generation (worker thread)
    def _work(self) -> None:
        while True:
            request = self._queue.get()
            if request is None or self._stop.is_set():
                return
            with self._lock:
                if request.finished:  # canceled while queued
                    continue
                self._current = request
            try:
                self._generate(request)
            except Cancelled as exc:
                self._finish(request, GenerationStatus.CANCELED if request.cancel.is_set() else GenerationStatus.ERROR,
                             error=str(exc))
            except Exception as exc:  # any pipeline failure must leave the node running
                self.get_logger().error(f"request {request.request_id} failed: {type(exc).__name__}: {exc}")
                self._finish(request, GenerationStatus.ERROR, error=f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._current = None
            if self._stop.is_set():
                return
            if self._queue.empty():
                self._publish_status(GenerationStatus.IDLE)

    def _check_cancel(self, request: Request, step: int) -> None:
        if self._stop.is_set():
            raise Cancelled("shutdown")
        if request.cancel.is_set():
            raise Cancelled(f"canceled at step {step}")

    def _generate(self, request: Request) -> None:
        with self._lock:
            pipeline = self._pipeline
        if pipeline is None:
            checkpoint = self._param("checkpoint") or None
            self.get_logger().info(f"loading pipeline {checkpoint or '(built-in)'} on {self._param('device')}")
            pipeline = self._pipeline_factory(checkpoint, self._param("device"))
            with self._lock:
                self._pipeline = pipeline
        self._check_cancel(request, 0)
        request.total_steps = planned_steps(pipeline, request.num_steps) or 0
        if request.total_steps:
            self._status(request, GenerationStatus.RUNNING)

        def on_step(step: int, total: int) -> None:
            if request.total_steps and total != request.total_steps:
                self.get_logger().warning(f"request {request.request_id}: the pipeline reports {total} steps, "
                                          f"{request.total_steps} were planned")
            request.total_steps = total
            self._check_cancel(request, step)
            self._status(request, GenerationStatus.RUNNING, step=step)

        scene = pipeline(images=request.images, cameras=request.cameras, text=request.text,
                         num_frames=request.num_frames, num_steps=request.num_steps,
                         guidance_scale=request.guidance_scale, seed=request.seed, callback=on_step)
        self._check_cancel(request, request.total_steps)
        tracks = self.publish_scene(request, scene)
        self.get_logger().info(f"request {request.request_id} done: {scene.num_frames} frames x "
                               f"{scene.num_points} points")
        steps = int(scene.meta.get("steps_run", request.total_steps or request.num_steps))
        request.total_steps = request.total_steps or steps
        self._finish(request, GenerationStatus.DONE, step=steps, tracks=tracks)

    def publish_scene(self, request: Request, scene: Scene) -> HOITracks:
        """Publish a generated Scene: HOITracks, one HOIVideo per view, PointCloud2, markers and a
        PoseArray per rigid object (its F poses from a rigid fit of its labelled tracks; empty
        when the scene has no such tracks, so a latched pose never belongs to an older request).

        Returns:
            the published HOITracks message.
        """
        header = Header(stamp=seconds_to_time(request.stamp), frame_id=self._param("world_frame"))
        # Per-track confidence: the Scene's label_confidence (the model's probability of each
        # label), else meta["confidence"]; None when the model gives none (empty field).
        confidence = getattr(scene, "label_confidence", None)
        if confidence is None:
            confidence = scene.meta.get("confidence")
        tracks = tracks_to_msg(
            scene.tracks_world, scene.labels, header, scene.fps, request_id=request.request_id, task=request.text,
            confidence=None if confidence is None else np.asarray(confidence),
            camera_names=[c.name for c in scene.cameras], depth_ranges=scene.depth_ranges)
        self._tracks_pub.publish(tracks)
        for camera, frames in zip(scene.cameras, scene.videos):
            frame_id = request.frame_ids.get(camera.name, camera.name)
            self._videos_pub.publish(video_to_msg(frames, camera, Header(stamp=header.stamp, frame_id=frame_id),
                                                  scene.fps, request.request_id))
        self._cloud_pub.publish(tracks_to_point_cloud(scene.tracks_world, header, scene.fps, scene.labels))
        self._markers_pub.publish(tracks_to_markers(scene.tracks_world, scene.labels, header,
                                                    self._param("marker_max_tracks")))
        trajectories = object_poses(scene.tracks_world, scene.labels)
        for label, publisher in self._pose_pubs.items():
            trajectory = trajectories.get(label)
            publisher.publish(poses_to_msg(np.zeros((0, 4, 4)) if trajectory is None else trajectory.poses, header))
            if trajectory is not None:
                self.get_logger().info(f"request {request.request_id}: {trajectory.name} pose from "
                                       f"{trajectory.track_indices.size} tracks, rigid-fit residual max "
                                       f"{trajectory.residual.max() * 1e3:.2f} mm")
        return tracks

    # ------------------------------------------------------------------ statuses
    def _status(self, request: Request, state: int, step: int = 0) -> None:
        """A non-terminal status of ``request`` (remembered for the heartbeat)."""
        with self._lock:
            if request.finished:
                return
        request.last_status = self._publish_status(state, request.request_id, request.text, step=step,
                                                   total_steps=request.total_steps, listener=request.listener)

    def _finish(self, request: Request, state: int, step: int = 0, error: str = "",
                tracks: HOITracks | None = None) -> None:
        """The one terminal status of ``request`` (later calls for the same request do nothing)."""
        with self._lock:
            if request.finished:
                return
            request.finished = True
            self._requests.pop(request.request_id, None)
        if error:
            self.get_logger().info(f"request {request.request_id} ended: {error}")
        self._publish_status(state, request.request_id, request.text, step=step, total_steps=request.total_steps,
                             error=error, listener=request.listener, tracks=tracks)

    def _heartbeat(self) -> None:
        with self._lock:
            request = self._current
        status = request.last_status if request is not None else None
        if status is None or request.finished:
            return
        age = (self.get_clock().now().nanoseconds - Time.from_msg(status.header.stamp).nanoseconds) * 1e-9
        if age >= 0.9 * self._param("heartbeat_period"):
            self._status(request, status.state, step=status.step)

    def _publish_status(self, state: int, request_id: str = "", task: str = "", step: int = 0,
                        total_steps: int = 0, error: str = "", listener: StatusListener | None = None,
                        tracks: HOITracks | None = None) -> GenerationStatus:
        msg = GenerationStatus(state=state, request_id=request_id, task=task, step=step, total_steps=total_steps,
                               progress=float(min(step, total_steps) / total_steps) if total_steps else 0.0,
                               error=error)
        msg.header.stamp = self.get_clock().now().to_msg()
        try:
            self._status_pub.publish(msg)
        except Exception:  # the context is gone (shutdown raced with the worker): nothing left to tell
            if not self._stop.is_set():
                raise
        if listener is not None:
            listener(msg, tracks)
        return msg

    # ------------------------------------------------------------------ shutdown
    def shutdown_requests(self, reason: str = "shutdown", flush_timeout: float = 2.0) -> None:
        """End every queued and running request with ERROR ``reason`` and stop the worker (a
        running generation stops at its next denoising step); waits up to ``flush_timeout``
        seconds for subscribers to acknowledge the statuses. Call while the context is valid."""
        self._stop.set()
        with self._lock:
            pending = list(self._requests.values())
        for request in pending:
            self._finish(request, GenerationStatus.ERROR, error=reason)
        if pending:
            self._status_pub.wait_for_all_acked(Duration(seconds=flush_timeout))

    def destroy_node(self, worker_timeout: float = 5.0) -> None:
        """Stop the worker (ERROR "shutdown" for unfinished requests; waits up to ``worker_timeout``
        seconds for a running denoising step to end), then the node."""
        if not hasattr(self, "_worker"):  # the constructor failed (bad parameters): only the node to destroy
            super().destroy_node()
            return
        if not self._stop.is_set():
            try:
                self.shutdown_requests()
            except Exception:  # the context was shut down before the node: statuses cannot go out
                self._stop.set()
        while True:  # make room for the sentinel: queued requests are dropped at shutdown
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._worker.join(timeout=worker_timeout)
        if self._action_server is not None:  # not destroyed by Node.destroy_node
            self._action_server.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``syncmv4d-node``: ``--ros-args --params-file config/generate.yaml``.

    SIGINT / SIGTERM: every unfinished request ends with ERROR "shutdown" (published while the
    context is still up), the worker stops at its next denoising step, exit status 0.
    """
    logger = rclpy.logging.get_logger("syncmv4d_generate")
    try:
        # rclpy's own handler would shut the context down at once, before the statuses go out.
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # rclpy reports a broken params file or bad --ros-args as RCLError
        logger.fatal(f"cannot start: {exc}")
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = None
    executor = MultiThreadedExecutor()  # action goals wait in their own thread
    try:
        node = GenerateNode()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        logger.info("shutting down")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, ParameterException) as exc:
        logger.fatal(f"invalid parameters: {exc}")
        return 2
    finally:
        if node is not None:
            node.shutdown_requests()
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node(worker_timeout=2.0)
        rclpy.try_shutdown()
    if node is not None and node._worker.is_alive():
        # A denoising step (torch, C++) is still running: interpreter teardown under it would
        # abort the process. Every request has its terminal status already; leave at once.
        logger.warning("a denoising step is still running; exiting without waiting for it")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
