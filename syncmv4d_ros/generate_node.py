"""ROS 2 node: synchronised camera images + a task text -> SyncMV4D 4D point tracks and videos.

Inputs: every camera's Image and CameraInfo (sensor-data QoS) and the task text (std_msgs/String).
An action ``generate_hoi`` (GenerateHOI) offers the same as a request/response with feedback.
Outputs: HOITracks (reliable, transient local, depth 1: a late planner still gets the last
result), one HOIVideo per view, the tracks as PointCloud2 (x, y, z, t, label) and as a
MarkerArray, and GenerationStatus (progress at every denoising step).

Busy policy: tasks wait in a bounded queue (``task_queue_size``); a task arriving while the
queue is full is REJECTED on the status topic. The node is a thin adapter: ``prepare_request``
turns ROS inputs into (images, cameras, text), the pipeline does the work, ``publish_scene``
turns the resulting Scene into messages.

Run: ``python -m syncmv4d_ros.generate_node --ros-args --params-file config/generate.yaml``.
"""

from __future__ import annotations

import queue
import sys
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from syncmv4d_core.cameras import Camera
from syncmv4d_core.scene import Scene
from syncmv4d_ros.conversions import (
    camera_info_to_K,
    image_to_numpy,
    image_to_rgb,
    seconds_to_time,
    time_to_seconds,
    tracks_to_markers,
    tracks_to_msg,
    tracks_to_point_cloud,
    video_to_msg,
)
from syncmv4d_ros.action import GenerateHOI
from syncmv4d_ros.msg import GenerationStatus, HOITracks, HOIVideo
from syncmv4d_ros.sync import ApproximateTimeSynchronizer

# A pipeline maps (images, cameras, text, num_frames, num_steps, guidance_scale, seed, callback) to a Scene.
Pipeline = Callable[..., Scene]
PipelineFactory = Callable[[str | None, str], Pipeline]
# Told every status of one request; the DONE status comes with the published HOITracks.
StatusListener = Callable[[GenerationStatus, HOITracks | None], None]


def load_pipeline(checkpoint: str | None, device: str) -> Pipeline:
    """The SyncMV4D pipeline of ``checkpoint`` (None = the built-in one) on ``device``."""
    # Imported here: torch and the models load only when the first task needs them.
    from syncmv4d_core.pipeline import SyncMV4DPipeline

    return SyncMV4DPipeline.from_checkpoint(checkpoint, device=device)


class Cancelled(Exception):
    """Raised from the progress callback to abort a running generation at shutdown."""


@dataclass
class Request:
    """One accepted generation request (everything the worker needs, copied at arrival)."""

    request_id: str
    text: str
    images: list[np.ndarray]  # V x (H, W, 3) uint8 RGB
    cameras: list[Camera]
    frame_ids: dict[str, str]  # camera name -> optical frame id (from the input images)
    stamp: float  # seconds, stamp of the synchronised image set (= time of frame 0)
    num_frames: int
    num_steps: int
    guidance_scale: float
    seed: int
    listener: StatusListener | None = None


# Parameters that may change while the node runs, with their validity checks.
_RUNTIME_CHECKS = {
    "num_steps": (lambda v: v >= 1, "must be >= 1"),
    "num_frames": (lambda v: v >= 1, "must be >= 1"),
    "guidance_scale": (lambda v: v >= 0, "must be >= 0"),
    "seed": (lambda v: v >= 0, "must be >= 0"),
    "max_task_length": (lambda v: v >= 1, "must be >= 1"),
    "marker_max_tracks": (lambda v: v >= 1, "must be >= 1"),
    "checkpoint": (lambda v: True, ""),
    "device": (lambda v: bool(v), "must not be empty"),
}


class GenerateNode(Node):
    """Generates HOI point tracks from the latest synchronised multi-view images on each task."""

    def __init__(self, pipeline_factory: PipelineFactory = load_pipeline, **node_kwargs) -> None:
        """
        Args:
            pipeline_factory: (checkpoint or None, device) -> pipeline; called in the worker
                thread on the first task and again after ``checkpoint`` or ``device`` change.
            node_kwargs: passed to rclpy's Node (e.g. ``parameter_overrides``, ``context``).
        """
        super().__init__("syncmv4d_generate", **node_kwargs)
        self._pipeline_factory = pipeline_factory

        # 1. Parameters (all declared up front; per-camera ones after the camera list is known).
        self.declare_parameter("camera_names", ["left", "center", "right"])
        self.declare_parameter("world_frame", "world")
        self.declare_parameter("checkpoint", "")
        self.declare_parameter("device", "cpu")
        self.declare_parameter("num_steps", 20)
        self.declare_parameter("guidance_scale", 3.0)
        self.declare_parameter("num_frames", 9)
        self.declare_parameter("seed", 0)
        self.declare_parameter("sync_slop", 0.02)
        self.declare_parameter("sync_queue_size", 10)
        self.declare_parameter("task_queue_size", 2)
        self.declare_parameter("max_task_length", 1000)
        self.declare_parameter("marker_max_tracks", 200)
        self.declare_parameter("task_topic", "/hoi_task")
        self.declare_parameter("status_topic", "/hoi_status")
        self.declare_parameter("tracks_topic", "/hoi_tracks")
        self.declare_parameter("videos_topic", "/hoi_videos")
        self.declare_parameter("cloud_topic", "/hoi_tracks/cloud")
        self.declare_parameter("markers_topic", "/hoi_tracks/markers")
        self.declare_parameter("action_name", "generate_hoi")
        self.camera_names: list[str] = list(self._param("camera_names"))
        if not self.camera_names or len(set(self.camera_names)) != len(self.camera_names) or "" in self.camera_names:
            raise ValueError(f"parameter camera_names must list unique non-empty names, got {self.camera_names}")
        self._poses: dict[str, np.ndarray] = {}
        self._clusters: dict[str, str] = {}
        topics: dict[str, tuple[str, str]] = {}
        for name in self.camera_names:
            prefix = f"cameras.{name}."
            self.declare_parameter(prefix + "image_topic", f"/cameras/{name}/image_raw")
            self.declare_parameter(prefix + "camera_info_topic", f"/cameras/{name}/camera_info")
            self.declare_parameter(prefix + "xyz", Parameter.Type.DOUBLE_ARRAY)
            self.declare_parameter(prefix + "quat_wxyz", Parameter.Type.DOUBLE_ARRAY)
            self.declare_parameter(prefix + "cluster", "center")
            topics[name] = (self._param(prefix + "image_topic"), self._param(prefix + "camera_info_topic"))
            self._poses[name] = self._camera_pose(name)
            self._clusters[name] = self._param(prefix + "cluster")
        for name in ("sync_slop", "sync_queue_size", "task_queue_size"):
            if self._param(name) < 0 or (name != "sync_slop" and self._param(name) < 1):
                raise ValueError(f"parameter {name} is out of range: {self._param(name)}")
        for name, (check, rule) in _RUNTIME_CHECKS.items():
            if not check(self._param(name)):
                raise ValueError(f"parameter {name} {rule}, got {self._param(name)!r}")
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

        # 3. Publishers.
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._tracks_pub = self.create_publisher(HOITracks, self._param("tracks_topic"), latched)
        self._videos_pub = self.create_publisher(HOIVideo, self._param("videos_topic"), len(self.camera_names))
        self._cloud_pub = self.create_publisher(PointCloud2, self._param("cloud_topic"), 1)
        self._markers_pub = self.create_publisher(MarkerArray, self._param("markers_topic"), latched)
        status_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._status_pub = self.create_publisher(GenerationStatus, self._param("status_topic"), status_qos)

        # 4. Subscriptions.
        for name, (image_topic, info_topic) in topics.items():
            self.create_subscription(Image, image_topic, lambda msg, n=name: self._on_image(n, msg),
                                     qos_profile_sensor_data)
            self.create_subscription(CameraInfo, info_topic, lambda msg, n=name: self._on_camera_info(n, msg),
                                     qos_profile_sensor_data)
        self.create_subscription(String, self._param("task_topic"), lambda msg: self.submit(msg.data), 10)
        # The action's execute callback waits for the worker; a reentrant group lets a
        # MultiThreadedExecutor run it next to the other callbacks.
        self._action_server = ActionServer(self, GenerateHOI, self._param("action_name"),
                                           execute_callback=self._execute_goal,
                                           callback_group=ReentrantCallbackGroup())

        # 5. Worker. Generation takes seconds to minutes; running it in the subscription callback
        # would block the executor, so images, new tasks and parameter changes would stall.
        self._queue: queue.Queue[Request | None] = queue.Queue(maxsize=self._param("task_queue_size"))
        self._pipeline: Pipeline | None = None
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="syncmv4d-generation", daemon=True)
        self._worker.start()
        self._publish_status(GenerationStatus.IDLE)
        self.get_logger().info(f"ready: cameras {self.camera_names}, tasks on {self._param('task_topic')}, "
                               f"tracks on {self._param('tracks_topic')}")

    # ------------------------------------------------------------------ parameters
    def _param(self, name: str):
        return self.get_parameter(name).value

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

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name not in _RUNTIME_CHECKS:
                return SetParametersResult(successful=False, reason=f"parameter {param.name} cannot change at run time")
            check, rule = _RUNTIME_CHECKS[param.name]
            if not check(param.value):
                return SetParametersResult(successful=False, reason=f"parameter {param.name} {rule}, got {param.value!r}")
        if any(p.name in ("checkpoint", "device") for p in params):
            with self._lock:
                self._pipeline = None  # reloaded by the worker on the next task
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ inputs
    def _on_image(self, name: str, msg: Image) -> None:
        try:
            image_to_numpy(msg)  # validation only; pixels are converted when a task arrives
        except ValueError as exc:
            self._input_error(name, "image", f"image of camera {name!r} dropped: {exc}")
            return
        with self._lock:
            self._sync.add(name, time_to_seconds(msg.header.stamp), msg)
            self._input_errors.pop((name, "image"), None)

    def _on_camera_info(self, name: str, msg: CameraInfo) -> None:
        try:
            camera_info_to_K(msg)
        except ValueError as exc:
            self._input_error(name, "camera_info", f"CameraInfo of camera {name!r} dropped: {exc}")
            return
        with self._lock:
            self._infos[name] = msg
            self._input_errors.pop((name, "camera_info"), None)

    def _input_error(self, name: str, kind: str, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=1.0)
        with self._lock:
            self._input_errors[(name, kind)] = message

    def submit(self, task: str, listener: StatusListener | None = None) -> str:
        """Queue a generation for ``task`` (or reject it, on the status topic); returns its request id."""
        request_id = uuid.uuid4().hex[:12]
        text = task.strip()
        with self._submit_lock:  # the topic and the action may submit concurrently
            try:
                request = self.prepare_request(request_id, text)
                request.listener = listener
                if self._queue.full():
                    raise ValueError(f"busy: {self._queue.maxsize} requests already queued (task_queue_size)")
            except ValueError as exc:
                self.get_logger().error(f"request {request_id} rejected: {exc}")
                self._publish_status(GenerationStatus.REJECTED, request_id, text[:200], error=str(exc),
                                     listener=listener)
                return request_id
            # QUEUED goes out before the worker can see the request, so it always comes first.
            self.get_logger().info(f"request {request_id} queued: {text!r}")
            self._publish_status(GenerationStatus.QUEUED, request_id, text, total_steps=request.num_steps,
                                 listener=listener)
            self._queue.put_nowait(request)
        return request_id

    def _execute_goal(self, goal_handle) -> GenerateHOI.Result:
        finished = threading.Event()
        outcome: dict = {}

        def listener(status: GenerationStatus, tracks: HOITracks | None) -> None:
            if status.state in (GenerationStatus.DONE, GenerationStatus.ERROR, GenerationStatus.REJECTED):
                outcome.update(status=status, tracks=tracks)
                finished.set()
            else:
                goal_handle.publish_feedback(GenerateHOI.Feedback(status=status))

        self.submit(goal_handle.request.task, listener)
        while not finished.wait(timeout=0.1):
            if self._stop.is_set():
                goal_handle.abort()
                return GenerateHOI.Result(error="the node is shutting down")
        status = outcome["status"]
        if status.state == GenerationStatus.DONE:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return GenerateHOI.Result(tracks=outcome["tracks"] or HOITracks(), error=status.error)

    def prepare_request(self, request_id: str, text: str) -> Request:
        """ROS inputs -> pipeline inputs: the task text, the latest synchronised images as RGB
        arrays and one Camera per view (CameraInfo intrinsics + pose parameters).

        Raises:
            ValueError: empty or too long text, no synchronised image set yet, missing
                CameraInfo, or images / CameraInfo of different sizes.
        """
        max_length = self._param("max_task_length")
        if not text:
            raise ValueError("empty task text")
        if len(text) > max_length:
            raise ValueError(f"task text has {len(text)} characters, more than max_task_length = {max_length}")
        with self._lock:
            synced, infos, errors = self._sync.latest, dict(self._infos), dict(self._input_errors)
        if synced is None:
            reasons = "; ".join(errors.values()) or "no images received yet"
            raise ValueError(f"no synchronised image set of cameras {self.camera_names} "
                             f"(slop {self._param('sync_slop')} s): {reasons}")
        images, cameras, frame_ids = [], [], {}
        for name in self.camera_names:
            if name not in infos:
                error = errors.get((name, "camera_info"))
                raise ValueError(f"no valid CameraInfo received for camera {name!r}" + (f" ({error})" if error else ""))
            msg, info = synced.items[name], infos[name]
            if (msg.width, msg.height) != (info.width, info.height):
                raise ValueError(f"camera {name!r}: image is {msg.width}x{msg.height} but its CameraInfo says "
                                 f"{info.width}x{info.height}")
            images.append(image_to_rgb(msg))
            cameras.append(Camera(name, camera_info_to_K(info), self._poses[name], info.width, info.height,
                                  self._clusters[name]))
            frame_ids[name] = msg.header.frame_id or name
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise ValueError("cameras have different image sizes: " +
                             ", ".join(f"{c.name} {c.width}x{c.height}" for c in cameras))
        return Request(request_id=request_id, text=text, images=images, cameras=cameras, frame_ids=frame_ids,
                       stamp=synced.stamp, num_frames=self._param("num_frames"), num_steps=self._param("num_steps"),
                       guidance_scale=self._param("guidance_scale"), seed=self._param("seed"))

    # ------------------------------------------------------------------ generation (worker thread)
    def _work(self) -> None:
        while not self._stop.is_set():
            request = self._queue.get()
            if request is None:
                return
            try:
                self._generate(request)
            except Cancelled:
                return
            except Exception as exc:  # any pipeline failure must leave the node running
                self.get_logger().error(f"request {request.request_id} failed: {type(exc).__name__}: {exc}")
                self._publish_status(GenerationStatus.ERROR, request.request_id, request.text,
                                     total_steps=request.num_steps, error=f"{type(exc).__name__}: {exc}",
                                     listener=request.listener)
            if self._queue.empty():
                self._publish_status(GenerationStatus.IDLE)

    def _generate(self, request: Request) -> None:
        with self._lock:
            pipeline = self._pipeline
        if pipeline is None:
            checkpoint = self._param("checkpoint") or None
            self.get_logger().info(f"loading pipeline {checkpoint or '(built-in)'} on {self._param('device')}")
            pipeline = self._pipeline_factory(checkpoint, self._param("device"))
            with self._lock:
                self._pipeline = pipeline
        self._publish_status(GenerationStatus.RUNNING, request.request_id, request.text, total_steps=request.num_steps,
                             listener=request.listener)

        def on_step(step: int, total: int) -> None:
            if self._stop.is_set():
                raise Cancelled()
            self._publish_status(GenerationStatus.RUNNING, request.request_id, request.text, step=step,
                                 total_steps=total, listener=request.listener)

        scene = pipeline(images=request.images, cameras=request.cameras, text=request.text,
                         num_frames=request.num_frames, num_steps=request.num_steps,
                         guidance_scale=request.guidance_scale, seed=request.seed, callback=on_step)
        tracks = self.publish_scene(request, scene)
        self.get_logger().info(f"request {request.request_id} done: {scene.num_frames} frames x "
                               f"{scene.num_points} points")
        steps = int(scene.meta.get("steps_run", request.num_steps))  # a model may end sampling early
        self._publish_status(GenerationStatus.DONE, request.request_id, request.text, step=steps,
                             total_steps=steps, listener=request.listener, tracks=tracks)

    def publish_scene(self, request: Request, scene: Scene) -> HOITracks:
        """Publish a generated Scene: HOITracks, one HOIVideo per view, PointCloud2 and markers.

        Returns:
            the published HOITracks message.
        """
        header = Header(stamp=seconds_to_time(request.stamp), frame_id=self._param("world_frame"))
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
        return tracks

    def _publish_status(self, state: int, request_id: str = "", task: str = "", step: int = 0,
                        total_steps: int = 0, error: str = "", listener: StatusListener | None = None,
                        tracks: HOITracks | None = None) -> None:
        msg = GenerationStatus(state=state, request_id=request_id, task=task, step=step, total_steps=total_steps,
                               progress=float(step / total_steps) if total_steps else 0.0, error=error)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)
        if listener is not None:
            listener(msg, tracks)

    # ------------------------------------------------------------------ shutdown
    def destroy_node(self) -> None:
        """Stop the worker (a running generation is aborted at its next step), then the node."""
        self._stop.set()
        while True:  # make room for the sentinel: queued requests are dropped at shutdown
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._worker.join(timeout=10.0)
        self._action_server.destroy()  # not destroyed by Node.destroy_node
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``syncmv4d-node``: ``--ros-args --params-file config/generate.yaml``."""
    logger = rclpy.logging.get_logger("syncmv4d_generate")
    try:
        rclpy.init(args=args)
    except Exception as exc:  # rclpy reports a broken params file or bad --ros-args as RCLError
        logger.fatal(f"cannot start: {exc}")
        return 2
    node = None
    try:
        node = GenerateNode()
        rclpy.spin(node, executor=MultiThreadedExecutor())  # action goals wait in their own thread
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, ParameterException) as exc:
        logger.fatal(f"invalid parameters: {exc}")
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
