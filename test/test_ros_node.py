"""The generation node end to end with real rclpy pub/sub in one process.

The node runs the real SyncMV4DPipeline: a tiny model with random weights saved to a checkpoint
directory and loaded by the node's own ``load_pipeline``. Its outputs are compared with the same
pipeline called directly on the inputs the test published (generation is deterministic for a
seed). A test node plays camera rig and planner. Only the busy-queue test wraps the pipeline, in
a gate that holds each generation until the test opens it.
"""

import math
import re
import threading
import time
from pathlib import Path

import numpy as np
from action_msgs.msg import GoalStatus
import pytest
import rclpy
import torch
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from geometry_msgs.msg import PoseArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from syncmv4d_core.cameras import Camera
from syncmv4d_core.pipeline import SyncMV4DPipeline
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.scene import TARGET, TOOL, UNKNOWN, Scene
try:  # the model class moves from training/objectives.py to models/syncmv4d.py (structure work)
    from syncmv4d_core.models.syncmv4d import SyncMV4DModel
except ImportError:
    from syncmv4d_core.training.objectives import SyncMV4DModel
from syncmv4d_ros.conversions import (
    camera_to_camera_info,
    image_to_rgb,
    numpy_to_image,
    point_cloud_to_numpy,
    pose_to_matrix,
    seconds_to_time,
    time_to_seconds,
    tracks_from_msg,
)
from syncmv4d_ros.generate_node import GenerateNode, load_pipeline
from syncmv4d_ros.action import GenerateHOI
from syncmv4d_ros.msg import GenerationStatus, HOITracks, HOIVideo

DOMAIN_ID = 71  # this module's own DDS domain: no cross-talk with other test modules
NAMES = ["left", "center", "right"]
WIDTH, HEIGHT = 32, 24  # multiples of 8 pixels, as the tiny model needs
NUM_FRAMES, NUM_STEPS, NUM_TRACKS = 5, 3, 64
GUIDANCE, SEED = 3.0, 0
TIMEOUT = 20.0  # seconds, bound of every wait
TERMINAL = (GenerationStatus.DONE, GenerationStatus.ERROR, GenerationStatus.REJECTED, GenerationStatus.CANCELED)


def rig(width: int = WIDTH, height: int = HEIGHT) -> list[Camera]:
    eyes = [(-0.4, -0.4, 0.4), (0.0, -0.55, 0.4), (0.4, -0.4, 0.4)]
    return [Camera.look_at(n, eye, (0.0, 0.0, 0.05), 50.0, width, height, cluster=n) for n, eye in zip(NAMES, eyes)]


class GatedPipeline:
    """The real pipeline behind a gate: every call waits until the test opens ``gate``, so tasks
    arrive while the node is busy however fast the tiny model is."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.planned_steps = pipeline.planned_steps  # the node asks the pipeline for the step count
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self, **kwargs) -> Scene:
        self.calls += 1
        if not self.gate.wait(TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        return self.pipeline(**kwargs)


def rig_parameters(checkpoint: Path, **extra) -> list[Parameter]:
    params = [Parameter("camera_names", value=NAMES), Parameter("num_frames", value=NUM_FRAMES),
              Parameter("num_steps", value=NUM_STEPS), Parameter("guidance_scale", value=GUIDANCE),
              Parameter("seed", value=SEED), Parameter("sync_slop", value=0.01),
              Parameter("checkpoint", value=str(checkpoint)), Parameter("model_width", value=WIDTH),
              Parameter("model_height", value=HEIGHT),
              # The test's stamps are small fixed times, not the clock: no age limit (tested apart).
              Parameter("max_image_age", value=0.0)]
    for cam in rig():
        pose = cam.to_dict()
        params += [Parameter(f"cameras.{cam.name}.xyz", value=[float(v) for v in pose["xyz"]]),
                   Parameter(f"cameras.{cam.name}.quat_wxyz", value=[float(v) for v in pose["quat_wxyz"]]),
                   Parameter(f"cameras.{cam.name}.cluster", value=cam.cluster)]
    params += [Parameter(name, value=value) for name, value in extra.items()]
    return params


def node_cameras() -> list[Camera]:
    """The cameras as the node builds them: CameraInfo intrinsics + the xyz / quat_wxyz parameters."""
    cameras = []
    for cam in rig():
        pose = cam.to_dict()
        cameras.append(Camera.from_pose(cam.name, cam.K, pose["xyz"], pose["quat_wxyz"], cam.width, cam.height,
                                        cam.cluster))
    return cameras


class Harness:
    """The node under test plus a camera-rig / planner test node, spun in a background thread."""

    def __init__(self, context, checkpoint: Path, pipeline_factory=load_pipeline, namespace: str = "",
                 cli_args: list[str] | None = None, topic: dict[str, str] | None = None, wait: bool = True,
                 **params) -> None:
        """
        Args:
            wait: wait until the node's subscriptions match and its IDLE status arrived (an
                active node).
            namespace: the node's namespace; the peer uses the same one.
            cli_args: the node's ``--ros-args`` (e.g. remappings).
            topic: topic name -> the name the peer uses for it instead (to follow a remapping).
        """
        self.node = GenerateNode(pipeline_factory, context=context, namespace=namespace or None, cli_args=cli_args,
                                 parameter_overrides=rig_parameters(checkpoint, **params))
        self.peer = rclpy.create_node("syncmv4d_test_peer", context=context, namespace=namespace or None)
        names = {t: (topic or {}).get(t, t) for t in ("hoi_status", "hoi_tracks", "hoi_videos", "hoi_tracks/cloud",
                                                      "hoi_tracks/markers", "hoi_task")}
        self.lock = threading.Lock()
        self.statuses: list[GenerationStatus] = []
        self.tracks: list[HOITracks] = []
        self.videos: list[HOIVideo] = []
        self.clouds: list[PointCloud2] = []
        self.markers: list[MarkerArray] = []
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
        # Relative names: in the root namespace they are /hoi_status etc.
        for msg_type, name, sink, qos in [
            (GenerationStatus, "hoi_status", self.statuses, reliable),
            (HOITracks, "hoi_tracks", self.tracks, reliable),
            (HOIVideo, "hoi_videos", self.videos, 10),
            (PointCloud2, "hoi_tracks/cloud", self.clouds, 10),
            (MarkerArray, "hoi_tracks/markers", self.markers, reliable),
        ]:
            self.peer.create_subscription(msg_type, names[name], lambda m, s=sink: self._store(s, m), qos)
        self.image_pubs = {n: self.peer.create_publisher(Image, f"cameras/{n}/image_raw", qos_profile_sensor_data)
                           for n in NAMES}
        self.info_pubs = {n: self.peer.create_publisher(CameraInfo, f"cameras/{n}/camera_info",
                                                        qos_profile_sensor_data) for n in NAMES}
        self.task_pub = self.peer.create_publisher(String, names["hoi_task"], 10)
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.pubs = [*self.image_pubs.values(), *self.info_pubs.values(), self.task_pub]
        if wait:
            self.wait_until(lambda: all(p.get_subscription_count() >= 1 for p in self.pubs),
                            "node subscriptions to match")
            self.wait_until(lambda: self.statuses and self.statuses[0].state == GenerationStatus.IDLE, "IDLE status")

    def _store(self, sink: list, msg) -> None:
        with self.lock:
            sink.append(msg)

    def wait_until(self, predicate, what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return
            time.sleep(0.01)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    # ---------------------------------------------------------------- inputs
    def publish_infos(self, cameras: list[Camera] | None = None) -> None:
        for cam in cameras or rig():
            self.info_pubs[cam.name].publish(camera_to_camera_info(cam, Header(frame_id=f"{cam.name}_optical")))

    def publish_images(self, stamp: float, size: tuple[int, int] = (WIDTH, HEIGHT),
                       sizes: dict[str, tuple[int, int]] | None = None) -> list[np.ndarray]:
        """Publish one image per camera at ``stamp`` seconds; returns the RGB pixels sent."""
        sent = []
        for i, name in enumerate(NAMES):
            width, height = (sizes or {}).get(name, size)
            pixels = np.full((height, width, 3), 40 * i, np.uint8)
            pixels[:, :, 2] = np.arange(width, dtype=np.uint8)[None]
            header = Header(stamp=seconds_to_time(stamp), frame_id=f"{name}_optical")
            self.image_pubs[name].publish(numpy_to_image(pixels, "rgb8", header))
            sent.append(pixels)
        return sent

    def publish_valid_inputs(self, stamp: float = 100.0) -> list[np.ndarray]:
        """CameraInfo + one synchronised image set; waits until the node holds the set."""
        self.publish_infos()
        sent = self.publish_images(stamp)
        # A stamp goes through sec + nanosec and back: equal to within float resolution, not bit for bit.
        self.wait_until(lambda: self.node._sync.latest is not None and abs(self.node._sync.latest.stamp - stamp) < 1e-6
                        and len(self.node._infos) == len(NAMES), "the node to hold the image set")
        return sent

    def send_task(self, text: str) -> None:
        self.task_pub.publish(String(data=text))

    # ---------------------------------------------------------------- outputs
    def terminal(self) -> list[GenerationStatus]:
        return [s for s in self.statuses if s.state in TERMINAL]

    def next_terminal(self, count_before: int) -> GenerationStatus:
        """The first terminal status after ``count_before`` earlier ones."""
        self.wait_until(lambda: len(self.terminal()) > count_before, "a terminal status")
        with self.lock:
            return self.terminal()[count_before]

    def run_task(self, text: str) -> GenerationStatus:
        before = len(self.terminal())
        self.send_task(text)
        return self.next_terminal(before)

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture(scope="module")
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def save_model(config: dict, directory: Path) -> Path:
    """A tiny SyncMV4D model with random weights saved as a checkpoint directory."""
    model = SyncMV4DModel.from_config(config)
    if hasattr(model, "save_pretrained"):
        return model.save_pretrained(directory)
    from syncmv4d_core.pipeline import save_pretrained

    return save_pretrained(model, directory)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny SyncMV4D model (K = NUM_TRACKS) with random weights, saved as a checkpoint directory."""
    torch.manual_seed(0)
    return save_model({"num_tracks": NUM_TRACKS}, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def reference(checkpoint) -> SyncMV4DPipeline:
    """The same checkpoint, called directly: what the node must publish."""
    return SyncMV4DPipeline.from_checkpoint(checkpoint)


def expected_scene(reference: SyncMV4DPipeline, images: list[np.ndarray], text: str) -> Scene:
    return reference(images=images, cameras=node_cameras(), text=text, num_frames=NUM_FRAMES, num_steps=NUM_STEPS,
                     guidance_scale=GUIDANCE, seed=SEED)


@pytest.fixture
def harness(context, checkpoint):
    h = Harness(context, checkpoint)
    yield h
    h.close()


def assert_recovers(h: Harness, stamp: float = 200.0) -> None:
    """After bad input, valid images and a valid task still produce tracks."""
    h.publish_valid_inputs(stamp)
    status = h.run_task("pour the water into the glass")
    assert status.state == GenerationStatus.DONE, status.error
    h.wait_until(lambda: any(t.request_id == status.request_id for t in h.tracks), "the recovered tracks")


# ---------------------------------------------------------------------- the valid path
def test_task_produces_tracks_videos_cloud_markers_and_progress(harness, reference):
    h = harness
    sent = h.publish_valid_inputs(stamp=100.0)
    status = h.run_task("  lift the cup  ")
    assert status.state == GenerationStatus.DONE and status.task == "lift the cup"
    h.wait_until(lambda: h.tracks and len(h.videos) == 3 and h.clouds and h.markers, "all outputs")

    tracks_msg = h.tracks[-1]
    assert tracks_msg.request_id == status.request_id and tracks_msg.task == "lift the cup"
    assert tracks_msg.header.frame_id == "world" and time_to_seconds(tracks_msg.header.stamp) == pytest.approx(100.0)
    tracks, labels, confidence = tracks_from_msg(tracks_msg)
    expected = expected_scene(reference, sent, "lift the cup")
    assert tracks.shape == (NUM_FRAMES, NUM_TRACKS, 3)
    np.testing.assert_allclose(tracks, expected.tracks_world, atol=1e-5)
    np.testing.assert_array_equal(labels, np.full(NUM_TRACKS, UNKNOWN))
    assert confidence is None and list(tracks_msg.camera_names) == NAMES and tracks_msg.frame_rate == 8.0
    ranges = np.asarray(tracks_msg.depth_ranges).reshape(3, 2)
    np.testing.assert_allclose(ranges, expected.depth_ranges, atol=1e-6)
    assert np.all(ranges[:, 0] < ranges[:, 1])

    videos = {v.camera_name: v for v in h.videos}
    assert sorted(videos) == sorted(NAMES)
    for i, name in enumerate(NAMES):
        assert len(videos[name].frames) == NUM_FRAMES and videos[name].header.frame_id == f"{name}_optical"
        frames = np.stack([image_to_rgb(f) for f in videos[name].frames])
        np.testing.assert_array_equal(frames, expected.videos[i])
        np.testing.assert_array_equal(frames[0], sent[i])  # frame 0 is the reference image
    cloud = point_cloud_to_numpy(h.clouds[-1])
    assert cloud.shape == (NUM_FRAMES * NUM_TRACKS,) and cloud["t"].max() == pytest.approx((NUM_FRAMES - 1) / 8.0)
    np.testing.assert_allclose(np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1), tracks.reshape(-1, 3))
    assert len(h.markers[-1].markers) == 1 + NUM_TRACKS
    assert confidence is None and not tracks_msg.confidence  # the model gives no confidence: empty field

    states = [(s.state, s.step) for s in h.statuses if s.request_id == status.request_id]
    assert states[0] == (GenerationStatus.QUEUED, 0)
    assert [st for st in states if st[0] == GenerationStatus.RUNNING][-NUM_STEPS:] == \
        [(GenerationStatus.RUNNING, k) for k in range(1, NUM_STEPS + 1)]
    assert states[-1] == (GenerationStatus.DONE, NUM_STEPS)
    assert h.statuses[-1].progress == 1.0 or h.statuses[-1].state == GenerationStatus.IDLE


class GroundTruthPipeline:
    """Returns a synthetic scene's ground-truth tracks and labels (rigid tool and target) for the
    node's cameras: the node's pose path is tested on tracks whose object motion is known."""

    def __init__(self) -> None:
        self.scene = generate_scene(3, SynthConfig(num_frames=NUM_FRAMES, height=64, width=64, num_points=300))

    def __call__(self, images, cameras, text, num_frames, **kwargs) -> Scene:
        videos = np.zeros((len(cameras), num_frames, cameras[0].height, cameras[0].width, 3), np.uint8)
        confidence = np.linspace(0.0, 1.0, self.scene.num_points, dtype=np.float32)
        return Scene(list(cameras), videos, self.scene.tracks_world, self.scene.labels, text, self.scene.fps,
                     label_confidence=confidence)


def test_object_poses_are_published_from_labelled_tracks(context, checkpoint):
    truth = GroundTruthPipeline()
    h = Harness(context, checkpoint, lambda path, device: truth)
    poses: dict[str, list[PoseArray]] = {"tool": [], "target": []}
    for name, sink in poses.items():
        h.peer.create_subscription(PoseArray, f"hoi_tracks/poses/{name}", lambda m, s=sink: h._store(s, m),
                                   QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                              durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        h.publish_valid_inputs()
        status = h.run_task("lift the cup")
        assert status.state == GenerationStatus.DONE, status.error
        h.wait_until(lambda: poses["tool"] and poses["target"], "the object poses")
        tracks, labels = truth.scene.tracks_world, truth.scene.labels
        for name, label in (("tool", TOOL), ("target", TARGET)):
            msg = poses[name][-1]
            assert len(msg.poses) == NUM_FRAMES and msg.header.frame_id == "world"
            assert time_to_seconds(msg.header.stamp) == pytest.approx(100.0)
            matrices = np.stack([pose_to_matrix(p) for p in msg.poses])
            # The published poses move the object's frame-0 points onto its tracks (mm accuracy).
            points = tracks[:, labels == label]
            local = points[0] - matrices[0][:3, 3]
            for f in range(NUM_FRAMES):
                moved = local @ matrices[f][:3, :3].T + matrices[f][:3, 3]
                assert np.abs(moved - points[f]).max() < 1e-4
        # Labels and per-track confidence travel in HOITracks.
        h.wait_until(lambda: h.tracks, "the tracks")
        _, got_labels, confidence = tracks_from_msg(h.tracks[-1])
        np.testing.assert_array_equal(got_labels, labels)
        np.testing.assert_allclose(confidence, np.linspace(0.0, 1.0, truth.scene.num_points), atol=1e-6)
        target = np.stack([pose_to_matrix(p) for p in poses["target"][-1].poses])
        assert np.abs(target - target[0]).max() < 1e-5  # the target stays put
    finally:
        h.close()


def test_late_subscriber_receives_the_last_tracks(harness, context):
    h = harness
    h.publish_valid_inputs()
    status = h.run_task("stir the bowl")
    assert status.state == GenerationStatus.DONE
    late: list[HOITracks] = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    h.peer.create_subscription(HOITracks, "/hoi_tracks", late.append, qos)
    h.wait_until(lambda: late, "the latched tracks on a late subscription")
    assert late[0].request_id == status.request_id and late[0].num_points == NUM_TRACKS


def lifecycle_call(h: Harness, service_type, name: str, request):
    client = h.peer.create_client(service_type, f"/syncmv4d_generate/{name}")
    assert client.wait_for_service(timeout_sec=TIMEOUT)
    future = client.call_async(request)
    h.wait_until(lambda: future.done(), f"the {name} response")
    h.peer.destroy_client(client)
    return future.result()


def lifecycle_state(h: Harness) -> str:
    return lifecycle_call(h, GetState, "get_state", GetState.Request()).current_state.label


def change_state(h: Harness, transition: int) -> bool:
    return lifecycle_call(h, ChangeState, "change_state",
                          ChangeState.Request(transition=Transition(id=transition))).success


def test_managed_node_configure_loads_the_model_and_activate_subscribes(context, checkpoint):
    loads = []

    def factory(path, device):
        loads.append(path)
        return load_pipeline(path, device)

    h = Harness(context, checkpoint, factory, wait=False, autostart=False)
    try:
        assert lifecycle_state(h) == "unconfigured" and not loads
        assert all(p.get_subscription_count() == 0 for p in h.pubs)  # not taking inputs
        assert change_state(h, Transition.TRANSITION_CONFIGURE)
        assert lifecycle_state(h) == "inactive" and loads == [str(checkpoint)]  # the model is loaded
        assert all(p.get_subscription_count() == 0 for p in h.pubs)
        assert change_state(h, Transition.TRANSITION_ACTIVATE) and lifecycle_state(h) == "active"
        h.wait_until(lambda: all(p.get_subscription_count() >= 1 for p in h.pubs), "node subscriptions to match")
        h.wait_until(lambda: h.statuses and h.statuses[0].state == GenerationStatus.IDLE, "IDLE status")
        h.publish_valid_inputs()
        status = h.run_task("lift the cup")
        assert status.state == GenerationStatus.DONE and len(loads) == 1  # no second load on the first task
        assert change_state(h, Transition.TRANSITION_DEACTIVATE) and lifecycle_state(h) == "inactive"
        h.wait_until(lambda: all(p.get_subscription_count() == 0 for p in h.pubs), "the subscriptions to go")
        assert change_state(h, Transition.TRANSITION_CLEANUP) and lifecycle_state(h) == "unconfigured"
        assert h.node._pipeline is None
    finally:
        h.close()


def test_managed_node_configure_fails_on_a_missing_checkpoint(context, tmp_path):
    h = Harness(context, tmp_path / "no_such_checkpoint", wait=False, autostart=False)
    try:
        assert not change_state(h, Transition.TRANSITION_CONFIGURE)
        assert lifecycle_state(h) == "unconfigured"
    finally:
        h.close()


def test_two_nodes_in_two_namespaces_do_not_collide(context, checkpoint):
    a = Harness(context, checkpoint, namespace="/robot_a")
    b = Harness(context, checkpoint, namespace="/robot_b")
    try:
        assert a.node.resolve_topic_name(a.node.get_parameter("tracks_topic").value) == "/robot_a/hoi_tracks"
        a.publish_valid_inputs()
        status = a.run_task("lift the cup")
        assert status.state == GenerationStatus.DONE, status.error
        a.wait_until(lambda: a.tracks, "robot_a's tracks")
        assert not b.terminal() and not b.tracks and not b.node._sync.last_stamps  # robot_b saw nothing
        status = b.run_task("lift the cup")  # robot_b has no images of its own
        assert status.state == GenerationStatus.REJECTED and "no images received yet" in status.error
        assert len(a.terminal()) == 1
    finally:
        a.close()
        b.close()


def test_inputs_and_outputs_can_be_remapped(context, checkpoint):
    remaps = {"hoi_task": "/planner/task", "hoi_tracks": "/planner/tracks", "hoi_status": "/planner/status"}
    args = ["--ros-args"] + [x for old, new in remaps.items() for x in ("-r", f"{old}:={new}")]
    h = Harness(context, checkpoint, cli_args=args, topic=remaps)
    try:
        h.publish_valid_inputs()
        status = h.run_task("lift the cup")
        assert status.state == GenerationStatus.DONE, status.error
        h.wait_until(lambda: h.tracks, "the tracks on /planner/tracks")
        topics_of_node = dict(h.node.get_topic_names_and_types())
        assert "/planner/tracks" in topics_of_node and "/hoi_tracks" not in {
            t for t, _ in h.node.get_publisher_names_and_types_by_node("syncmv4d_generate", "/")}
    finally:
        h.close()


# ---------------------------------------------------------------------- bad input
def test_no_images_yet(harness):
    status = harness.run_task("lift the cup")
    assert status.state == GenerationStatus.REJECTED and "no images received yet" in status.error
    assert_recovers(harness)


@pytest.mark.parametrize("corrupt, message", [
    (lambda m: setattr(m, "encoding", "16UC1"), "unsupported image encoding '16UC1'"),
    (lambda m: setattr(m, "data", bytes(m.data)[:-7]), "expected height x step"),
    (lambda m: setattr(m, "step", m.step + 4), "expected height x step"),
])
def test_malformed_images_are_dropped_and_reported(harness, corrupt, message):
    h = harness
    h.publish_infos()
    msg = numpy_to_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), "rgb8", Header(stamp=seconds_to_time(5.0)))
    corrupt(msg)
    for pub in h.image_pubs.values():
        pub.publish(msg)
    h.wait_until(lambda: len(h.node._input_errors) == 3, "the node to see the bad images")
    status = h.run_task("lift the cup")
    assert status.state == GenerationStatus.REJECTED and message in status.error
    assert_recovers(h)


def test_cameras_of_different_sizes_are_brought_to_the_model_size(harness):
    h = harness
    small = rig()
    big = rig(48, 36)  # the same view at 1.5 x the resolution: same aspect, so the whole image is used
    h.publish_infos([small[0], small[1], big[2]])
    h.publish_images(50.0, sizes={"right": (48, 36)})
    # the right camera's CameraInfo may arrive after the first image sets: wait for it, do not index it
    h.wait_until(lambda: h.node._sync.latest is not None and getattr(h.node._infos.get("right"), "width", 0) == 48,
                 "the image set")
    status = h.run_task("lift the cup")
    assert status.state == GenerationStatus.DONE, status.error
    h.wait_until(lambda: sum(v.request_id == status.request_id for v in h.videos) == 3, "the videos")
    video = next(v for v in h.videos if v.request_id == status.request_id and v.camera_name == "right")
    info = video.camera_info
    assert (info.width, info.height) == (WIDTH, HEIGHT) and len(video.frames) == NUM_FRAMES
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), big[2].resize(WIDTH, HEIGHT).K, atol=1e-9)
    assert_recovers(h)


def test_image_size_not_matching_its_camera_info(harness):
    h = harness
    h.publish_infos()
    h.publish_images(50.0, sizes={"center": (16, 12)})
    h.wait_until(lambda: h.node._sync.latest is not None and len(h.node._infos) == 3, "the image set")
    status = h.run_task("lift the cup")
    assert status.state == GenerationStatus.REJECTED and "'center': image is 16x12" in status.error
    assert_recovers(h)


def test_images_that_never_synchronise_are_explained(harness):
    h = harness
    h.publish_infos()
    for i, name in enumerate(NAMES):  # 50 ms apart, sync_slop is 10 ms
        pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        h.image_pubs[name].publish(numpy_to_image(pixels, "rgb8", Header(stamp=seconds_to_time(10.0 + 0.05 * i))))
    h.wait_until(lambda: len(h.node._sync.last_stamps) == 3, "the node to see the images")
    status = h.run_task("lift the cup")
    assert status.state == GenerationStatus.REJECTED
    assert ("images arrive but no set of all cameras lies within sync_slop = 0.01 s: latest stamps left 10.000000, "
            "center 10.050000, right 10.100000 (spread 0.100 s)") in status.error
    assert "no images received yet" not in status.error
    assert_recovers(h)


def test_an_image_set_older_than_max_image_age_is_refused(context, checkpoint):
    h = Harness(context, checkpoint, max_image_age=1.0)
    try:
        h.publish_infos()
        now = h.node.get_clock().now().nanoseconds * 1e-9
        h.publish_images(now - 5.0)
        h.wait_until(lambda: h.node._sync.latest is not None, "the image set")
        status = h.run_task("lift the cup")
        assert status.state == GenerationStatus.REJECTED
        assert re.search(r"the latest synchronised image set is 5\.\d+ s old \(stamp [\d.]+\), more than "
                         r"max_image_age = 1\.0 s", status.error), status.error
        assert_recovers(h, stamp=h.node.get_clock().now().nanoseconds * 1e-9)  # fresh images: accepted
    finally:
        h.close()


def test_an_oversized_image_is_reported(harness):
    h = harness
    h.publish_infos()
    big = numpy_to_image(np.zeros((4096, 4096, 3), np.uint8), "rgb8", Header(stamp=seconds_to_time(7.0)))  # 50 MB
    h.image_pubs["center"].publish(big)
    h.wait_until(lambda: ("center", "image") in h.node._input_errors, "the node to see the 50 MB image")
    status = h.run_task("lift the cup")
    assert status.state == GenerationStatus.REJECTED
    assert ("image of camera 'center' stamped 7.000000 dropped: 50331648 bytes (4096x4096 rgb8), more than "
            "max_image_bytes = 40000000") in status.error
    assert_recovers(h)


def test_camera_info_with_an_unsupported_distortion_model(harness):
    h = harness
    cams = rig()
    h.publish_infos(cams[:2])
    info = camera_to_camera_info(cams[2])
    info.distortion_model, info.d = "equidistant", [0.1, 0.02, 0.0, 0.0]
    h.info_pubs["right"].publish(info)
    h.wait_until(lambda: ("right", "camera_info") in h.node._input_errors, "the node to see the CameraInfo")
    h.publish_images(60.0)
    h.wait_until(lambda: h.node._sync.latest is not None, "the image set")
    status = h.run_task("lift the cup")
    assert status.state == GenerationStatus.REJECTED
    assert "no valid CameraInfo received for camera 'right'" in status.error
    assert "unsupported distortion model 'equidistant'" in status.error
    assert_recovers(h)


@pytest.mark.parametrize("k, message", [
    (None, "no valid CameraInfo received for camera 'right'"),
    ([0.0] * 9, "not a valid intrinsics matrix"),
    ([math.nan] * 9, "non-finite"),
])
def test_missing_or_invalid_camera_info(harness, k, message):
    h = harness
    cams = rig()
    h.publish_infos(cams[:2])
    if k is not None:
        h.info_pubs["right"].publish(CameraInfo(width=WIDTH, height=HEIGHT, k=k))
        h.wait_until(lambda: ("right", "camera_info") in h.node._input_errors, "the node to see the bad CameraInfo")
    h.publish_images(60.0)
    h.wait_until(lambda: h.node._sync.latest is not None, "the image set")
    status = h.run_task("lift the cup")
    assert status.state == GenerationStatus.REJECTED and message in status.error
    assert_recovers(h)


@pytest.mark.parametrize("text, message", [
    ("", "empty task text"),
    ("   \n\t ", "empty task text"),
    ("x" * 100_000, "task text has 100000 characters, more than max_task_length = 1000"),
])
def test_empty_or_huge_task_text(harness, text, message):
    h = harness
    h.publish_valid_inputs()
    status = h.run_task(text)
    assert status.state == GenerationStatus.REJECTED and status.error == message
    assert len(status.task) <= 200  # the echo of a huge task is truncated
    assert_recovers(h)


def test_burst_of_tasks_is_bounded_by_the_queue(context, checkpoint):
    gated: list[GatedPipeline] = []

    def factory(path, device):
        gated.append(GatedPipeline(load_pipeline(path, device)))
        return gated[-1]

    h = Harness(context, checkpoint, factory, task_queue_size=2)
    try:
        h.publish_valid_inputs()
        for i in range(10):
            h.send_task(f"task {i}")
        # Every task is answered (QUEUED or REJECTED) while the first one is held at the gate.
        h.wait_until(lambda: sum(s.state in (GenerationStatus.QUEUED, GenerationStatus.REJECTED)
                                 for s in h.statuses) == 10, "an answer to each of 10 tasks")
        h.wait_until(lambda: gated and gated[0].calls == 1, "the first generation to reach the gate")
        assert not any(s.state == GenerationStatus.DONE for s in h.statuses)
        gated[0].gate.set()
        h.wait_until(lambda: len(h.terminal()) == 10, "a terminal status for each of 10 tasks", timeout=40.0)
        done = [s for s in h.terminal() if s.state == GenerationStatus.DONE]
        rejected = [s for s in h.terminal() if s.state == GenerationStatus.REJECTED]
        # 1 running + 2 queued; 2 when the burst filled the queue before the worker took the first.
        assert len(done) + len(rejected) == 10 and 2 <= len(done) <= 3
        assert all("busy" in s.error for s in rejected)
        assert len({s.request_id for s in h.terminal()}) == 10
        h.wait_until(lambda: len(h.tracks) == len(done), "tracks of every accepted task")
        assert len(gated) == 1 and gated[0].calls == len(done)
        h.wait_until(lambda: h.statuses[-1].state == GenerationStatus.IDLE, "IDLE after the burst")
        assert_recovers(h)
    finally:
        h.close()


def test_missing_checkpoint_is_reported_and_the_node_keeps_running(harness, checkpoint, tmp_path):
    h = harness
    h.publish_valid_inputs()
    missing = str(tmp_path / "no_such_checkpoint")
    assert h.node.set_parameters([Parameter("checkpoint", value=missing)])[0].successful
    status = h.run_task("lift the cup")
    assert status.state == GenerationStatus.ERROR and "FileNotFoundError" in status.error and missing in status.error
    assert h.node.set_parameters([Parameter("checkpoint", value=str(checkpoint))])[0].successful
    assert_recovers(h)


@pytest.mark.parametrize("name, value, message", [
    ("num_steps", 0, "num_steps"),
    ("num_steps", 5000, "num_steps"),
    ("num_frames", 6, "num_frames"),  # not 4n + 1
    ("num_frames", 125, "num_frames"),  # above the model limit
    ("guidance_scale", math.nan, "guidance_scale"),
    ("guidance_scale", 1e6, "guidance_scale"),
    ("seed", -1, "seed"),
    ("device", "gpu", "device must be cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("device", "cuda:7", "is not available here"),
    ("crop_mode", "zoom", "crop_mode must be one of"),
    ("crop_mode", "workspace", "workspace_box must be [xmin, ymin, zmin, xmax, ymax, zmax]"),
    ("workspace_box", [0.0, 0.0, 0.0, -1.0, 1.0, 1.0], "min < max"),
    ("max_image_age", -1.0, "max_image_age"),
    ("world_frame", "map", "read-only"),
    ("model_width", 640, "read-only"),
])
def test_invalid_parameter_is_refused_when_set(harness, name, value, message):
    """Parameters are validated when set (ranges and read-only flags by their descriptors, the
    rest by the node's callback), not at the next task; the old value stays."""
    try:
        before = harness.node.get_parameter(name).value
    except Exception:  # workspace_box is declared without a value
        before = None
    result = harness.node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful and message in result.reason, result.reason
    try:
        after = harness.node.get_parameter(name).value
    except Exception:
        after = None
    assert after == before or (isinstance(before, float) and math.isnan(value) and not math.isnan(after))


def test_descriptors_describe_every_parameter(harness):
    node = harness.node
    for name in ("num_steps", "num_frames", "guidance_scale", "device", "crop_mode", "max_image_age"):
        descriptor = node.describe_parameter(name)
        assert descriptor.description and not descriptor.read_only
    assert node.describe_parameter("num_frames").integer_range[0].step == 4
    assert node.describe_parameter("world_frame").read_only
    assert node.set_parameters([Parameter("num_frames", value=9)])[0].successful
    assert node.set_parameters([Parameter("num_frames", value=NUM_FRAMES)])[0].successful


FUZZ_ENCODINGS = ["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "16UC1", "32FC1", "yuv422", "", "RGB8"]
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def image_fault(msg: Image) -> str | None:
    """What is wrong with an Image, worked out independently of the node (None: nothing)."""
    if msg.encoding not in CHANNELS:
        return f"unsupported image encoding {msg.encoding!r}"
    if msg.width == 0 or msg.height == 0:
        return "image size must be positive"
    if msg.step < msg.width * CHANNELS[msg.encoding]:
        return "is shorter than a row"
    if len(msg.data) != msg.height * msg.step:
        return "expected height x step"
    return None


def camera_info_fault(msg: CameraInfo) -> str | None:
    """What is wrong with a CameraInfo, worked out independently of the node (None: nothing)."""
    k = np.asarray(msg.k)
    if not np.isfinite(k).all():
        return "CameraInfo.k holds non-finite values"
    if k[0] <= 0 or k[4] <= 0 or tuple(k[6:]) != (0.0, 0.0, 1.0):
        return "CameraInfo.k is not a valid intrinsics matrix"
    if msg.width == 0 or msg.height == 0:
        return "CameraInfo image size must be positive"
    return None


def task_fault(text: str) -> str | None:
    """The exact rejection a task text must get while a valid image set is held (None: accepted)."""
    text = text.strip()
    if not text:
        return "empty task text"
    if len(text) > 1000:
        return f"task text has {len(text)} characters, more than max_task_length = 1000"
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text):
        return "task text holds control characters (other than tab and newline)"
    return None


def test_fuzzed_inputs_each_get_their_own_error(harness):
    """540 malformed images, CameraInfos and tasks, each checked for its own outcome while a valid
    image set and valid CameraInfos are held, then a valid task still runs.

    Each input's expected error comes from an oracle in this test (``image_fault``,
    ``camera_info_fault``, ``task_fault``), not from the node. Every input has its own stamp, so
    the node's recorded error for it is identified by that stamp. Mutations of the node that
    make this test fail:

    - CameraInfo with NaN / inf / negative / zero focal lengths, a last row other than 0 0 1 or
      a zero size accepted (no error naming that fault for that stamp, or the held valid
      CameraInfo replaced by it);
    - images with an unsupported encoding, a zero size, a step shorter than a row or a data
      length other than height x step accepted (no error naming the fault for that stamp, or the
      image entering the synchroniser);
    - no empty / blank / too-long / control-character checks on the task text (the task would be
      QUEUED, or REJECTED for another reason, instead of REJECTED with exactly its own message);
    - a rejection naming the wrong cause (e.g. "no images received yet" while a set is held);
    - a node that stops working after bad input (the last valid task must be DONE).
    """
    h = harness
    h.publish_valid_inputs(stamp=100.0)
    valid_infos = {n: h.node._infos[n] for n in NAMES}
    rng = np.random.default_rng(1)
    counts = {"image": 0, "camera_info": 0, "task": 0, "accepted": 0}
    for i in range(540):
        kind = i % 3
        name = NAMES[rng.integers(3)]
        stamp = 1000.0 + i  # unique: identifies this input's error
        if kind == 0:  # random sizes, steps, encodings and data lengths
            msg = Image(height=int(rng.integers(0, 40)), width=int(rng.integers(0, 40)),
                        encoding=FUZZ_ENCODINGS[rng.integers(len(FUZZ_ENCODINGS))], step=int(rng.integers(0, 200)),
                        data=rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes())
            msg.header.stamp = seconds_to_time(stamp)
            fault = image_fault(msg)
            tag = f"image of camera {name!r} stamped {stamp:.6f} dropped: "
            h.image_pubs[name].publish(msg)
            if fault is None:  # a well-formed image: it must reach the synchroniser
                h.wait_until(lambda: h.node._sync.last_stamps.get(name) == stamp, f"valid image {i} accepted")
                counts["accepted"] += 1
                continue
            h.wait_until(lambda: h.node._input_errors.get((name, "image"), "").startswith(tag), f"error of image {i}")
            assert fault in h.node._input_errors[(name, "image")], (fault, h.node._input_errors[(name, "image")])
            assert h.node._sync.last_stamps.get(name) != stamp  # never entered the synchroniser
            counts["image"] += 1
        elif kind == 1:  # zeros, NaN, infinities, negative focal lengths, sizes 0..2
            msg = CameraInfo(width=int(rng.integers(0, 3)), height=int(rng.integers(0, 3)),
                             k=rng.choice([0.0, math.nan, math.inf, -50.0, 1.0], size=9).tolist())
            msg.header.stamp = seconds_to_time(stamp)
            fault = camera_info_fault(msg)
            h.info_pubs[name].publish(msg)
            if fault is None:  # well-formed: taken; the valid one is restored after the check
                h.wait_until(lambda: h.node._infos[name].header.stamp == msg.header.stamp, f"CameraInfo {i} taken")
                h.info_pubs[name].publish(valid_infos[name])
                h.wait_until(lambda: h.node._infos[name] == valid_infos[name], "the valid CameraInfo back")
                counts["accepted"] += 1
                continue
            tag = f"CameraInfo of camera {name!r} stamped {stamp:.6f} dropped: "
            h.wait_until(lambda: h.node._input_errors.get((name, "camera_info"), "").startswith(tag),
                         f"error of CameraInfo {i}")
            assert fault in h.node._input_errors[(name, "camera_info")]
            assert h.node._infos[name] == valid_infos[name]  # the held valid CameraInfo stays
            counts["camera_info"] += 1
        else:  # empty, blank, oversized, control characters (not NUL: ROS strings end there)
            text = ["", " \t\n ", "lift\x1b[2J the\x01 cup", "y" * int(rng.integers(1001, 20000))][i % 4]
            # Waiting for each answer paces the flood: beyond the subscription depth DDS drops.
            status = h.run_task(text)
            assert (status.state, status.error) == (GenerationStatus.REJECTED, task_fault(text))
            counts["task"] += 1
    assert counts["image"] >= 170 and counts["camera_info"] >= 170 and counts["task"] == 180, counts
    assert not any(s.state in (GenerationStatus.QUEUED, GenerationStatus.RUNNING) for s in h.statuses)
    # The valid set is still held and used: the next valid task runs.
    status = h.run_task("pour the water into the glass")
    assert status.state == GenerationStatus.DONE, status.error


def test_shutdown_ends_a_running_generation_with_a_terminal_status(context, checkpoint):
    h = Harness(context, checkpoint, num_steps=1000)  # about a minute if not stopped
    try:
        h.publish_valid_inputs()
        h.send_task("lift the cup")
        h.wait_until(lambda: any(s.state == GenerationStatus.RUNNING and s.step >= 1 for s in h.statuses), "RUNNING")
        request_id = next(s.request_id for s in h.statuses if s.state == GenerationStatus.RUNNING)
        start = time.monotonic()
        h.node.shutdown_requests()
        status = h.next_terminal(0)
        assert status.request_id == request_id and status.state == GenerationStatus.ERROR
        assert status.error == "shutdown"
        h.node._worker.join(timeout=5.0)
        assert not h.node._worker.is_alive() and time.monotonic() - start < 5.0
        assert h.run_task("lift the cup").error == "the node is shutting down"
        time.sleep(0.3)  # nothing after the terminal status: the worker stopped without publishing
        assert not any(s.request_id == request_id and s.state == GenerationStatus.RUNNING
                       and s.header.stamp.sec * 1e9 + s.header.stamp.nanosec
                       > status.header.stamp.sec * 1e9 + status.header.stamp.nanosec for s in h.statuses)
    finally:
        h.close()


def test_running_statuses_keep_total_steps_and_a_heartbeat(context, tmp_path):
    """A model that ends sampling early (final_sigma 0.7: 12 of 20 steps) reports 12 total steps
    from its first RUNNING status to DONE; while a step runs (held at a gate here) the RUNNING
    status is repeated every heartbeat_period."""
    torch.manual_seed(0)
    checkpoint = save_model({"num_tracks": NUM_TRACKS, "final_sigma": 0.7}, tmp_path)
    gated: list[GatedPipeline] = []

    def factory(path, device):
        gated.append(GatedPipeline(load_pipeline(path, device)))
        return gated[-1]

    h = Harness(context, checkpoint, factory, num_steps=20, heartbeat_period=0.2)
    try:
        h.publish_valid_inputs()
        h.send_task("lift the cup")
        h.wait_until(lambda: gated and gated[0].calls == 1, "the generation to start")
        time.sleep(1.0)  # the pipeline is held: only heartbeats can arrive now
        with h.lock:
            beats = [s for s in h.statuses if s.state == GenerationStatus.RUNNING]
        assert len(beats) >= 3 and all(s.step == 0 and s.total_steps == 12 for s in beats)
        gated[0].gate.set()
        status = h.next_terminal(0)
        assert status.state == GenerationStatus.DONE and (status.step, status.total_steps) == (12, 12)
        with h.lock:
            running = [s for s in h.statuses if s.request_id == status.request_id
                       and s.state == GenerationStatus.RUNNING]
        assert {s.total_steps for s in running} == {12}
        assert sorted({s.step for s in running}) == list(range(13))
        queued = next(s for s in h.statuses if s.state == GenerationStatus.QUEUED)
        assert queued.total_steps == 0  # not known before the model is loaded
    finally:
        h.close()


def test_action_returns_the_tracks_with_progress_feedback(context, checkpoint, reference):
    h = Harness(context, checkpoint)
    try:
        run_action_goals(h, reference)
    finally:
        h.close()


def send_goal(h: Harness, client: ActionClient, task: str, feedback: list | None = None):
    """Send a goal; returns its goal handle once the server answered (accepted or not)."""
    goal = client.send_goal_async(GenerateHOI.Goal(task=task),
                                  feedback_callback=None if feedback is None
                                  else lambda f: feedback.append(f.feedback.status))
    h.wait_until(lambda: goal.done(), "the goal to be answered")
    return goal.result()


def goal_result(h: Harness, handle):
    result = handle.get_result_async()
    h.wait_until(lambda: result.done(), "the action result")
    return result.result()


def run_action_goals(h: Harness, reference: SyncMV4DPipeline) -> None:
    client = ActionClient(h.peer, GenerateHOI, "generate_hoi")
    assert client.wait_for_server(timeout_sec=TIMEOUT)
    feedback: list[GenerationStatus] = []

    # Goals that cannot run are rejected at goal time; the status topic says why.
    assert not send_goal(h, client, "lift the cup").accepted  # no images yet
    h.wait_until(lambda: h.terminal(), "the REJECTED status")
    assert h.terminal()[-1].state == GenerationStatus.REJECTED
    assert "action goal rejected" in h.terminal()[-1].error and "no images received yet" in h.terminal()[-1].error
    sent = h.publish_valid_inputs()
    assert not send_goal(h, client, "   ").accepted
    h.wait_until(lambda: len(h.terminal()) == 2, "the second REJECTED status")
    assert h.terminal()[-1].error == "action goal rejected: empty task text"

    done = goal_result(h, send_goal(h, client, "lift the cup", feedback))
    assert done.status == GoalStatus.STATUS_SUCCEEDED and done.result.error == ""
    tracks, labels, _ = tracks_from_msg(done.result.tracks)
    np.testing.assert_allclose(tracks, expected_scene(reference, sent, "lift the cup").tracks_world, atol=1e-5)
    # Feedback (a topic) and the result (a service) are separate channels, and the client drops
    # feedback that arrives after the result: the last step's feedback may be missing.
    assert feedback[0].state == GenerationStatus.QUEUED
    steps = [s.step for s in feedback if s.state == GenerationStatus.RUNNING and s.step > 0]
    assert steps and steps == list(range(1, len(steps) + 1))
    client.destroy()


def test_action_cancel_stops_the_generation(context, checkpoint):
    h = Harness(context, checkpoint, num_steps=1000)  # about a minute if not canceled
    try:
        client = ActionClient(h.peer, GenerateHOI, "generate_hoi")
        assert client.wait_for_server(timeout_sec=TIMEOUT)
        h.publish_valid_inputs()
        handle = send_goal(h, client, "lift the cup")
        assert handle.accepted
        h.wait_until(lambda: any(s.state == GenerationStatus.RUNNING and s.step >= 2 for s in h.statuses), "RUNNING")
        start = time.monotonic()
        cancel = handle.cancel_goal_async()
        h.wait_until(lambda: cancel.done(), "the cancel response")
        assert len(cancel.result().goals_canceling) == 1
        result = goal_result(h, handle)
        assert result.status == GoalStatus.STATUS_CANCELED and result.result.error.startswith("canceled at step")
        assert time.monotonic() - start < 5.0
        status = h.terminal()[-1]
        assert status.state == GenerationStatus.CANCELED and status.step < 1000
        assert not h.tracks  # nothing was published for the canceled request
        h.wait_until(lambda: h.statuses[-1].state == GenerationStatus.IDLE, "IDLE after the cancel")
        h.node.set_parameters([Parameter("num_steps", value=NUM_STEPS)])
        assert_recovers(h)
        client.destroy()
    finally:
        h.close()
