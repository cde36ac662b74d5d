"""syncmv4d-demo end to end: the console script starts the node as a process from its params
file, feeds it a synthetic rig over real DDS, and writes checked tracks, a plot, mp4s, a status
log and an MCAP recording; plus its failure exits and the planner-side checks."""

import csv
import importlib
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from rclpy.serialization import deserialize_message
from std_msgs.msg import Header

from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.scene import read_video
try:  # the model class moves from training/objectives.py to models/syncmv4d.py (structure work)
    from syncmv4d_core.models.syncmv4d import SyncMV4DModel
except ImportError:
    from syncmv4d_core.training.objectives import SyncMV4DModel
from syncmv4d_ros.conversions import image_to_rgb, tracks_from_msg, tracks_to_msg
from syncmv4d_core.cameras import one_view_per_cluster
from syncmv4d_ros.demo import check_tracks, message_definition, qos_from_metadata
from syncmv4d_ros.msg import GenerationStatus

DOMAIN_ID = 73  # this module's own DDS domain
DEMO = Path(sys.executable).parent / "syncmv4d-demo"  # the installed console script
SEED, STEPS, NUM_TRACKS = 3, 3, 64


def run_demo(out: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), OMP_NUM_THREADS="1")
    return subprocess.run([str(DEMO), "--out", str(out), "--seed", str(SEED), "--steps", str(STEPS), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random tiny SyncMV4D model (K = 64 tracks) saved as a checkpoint directory."""
    model = SyncMV4DModel.from_config({"num_tracks": NUM_TRACKS})
    if hasattr(model, "save_pretrained"):
        return model.save_pretrained(tmp_path_factory.mktemp("checkpoint"))
    from syncmv4d_core.pipeline import save_pretrained

    return save_pretrained(model, tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory, checkpoint) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, "--checkpoint", str(checkpoint))


@pytest.fixture(scope="module")
def scene_views():
    """The scene and views the demo uses for SEED (regenerated independently here)."""
    scene = generate_scene(SEED, SynthConfig(num_frames=9, height=64, width=64), split="test")
    return scene, one_view_per_cluster(scene.cameras)


def read_mcap(path: Path) -> tuple[dict, dict]:
    """(profile, schemas by topic) and the deserialized messages by topic."""
    by_topic: dict[str, list] = {}
    schemas = {}
    with open(path, "rb") as f:
        reader = make_reader(f)
        profile = reader.get_header().profile
        for schema, channel, message in reader.iter_messages():
            package, _, name = schema.name.split("/")
            msg_type = getattr(importlib.import_module(f"{package}.msg"), name)
            schemas[channel.topic] = (schema.name, schema.encoding, schema.data.decode(), channel.message_encoding)
            by_topic.setdefault(channel.topic, []).append(deserialize_message(message.data, msg_type))
    return {"profile": profile, "schemas": schemas}, by_topic


def test_demo_writes_checked_tracks_plot_videos_and_status_log(demo, scene_views):
    out, proc = demo
    assert proc.returncode == 0, proc.stderr
    scene, views = scene_views
    names = [scene.cameras[v].name for v in views]
    assert [scene.cameras[v].cluster for v in views] == ["left", "center", "right"]
    assert "latency task -> tracks" in proc.stdout and f"9 frames x {NUM_TRACKS} points" in proc.stdout

    params = yaml.safe_load((out / "params.yaml").read_text())["/**"]["ros__parameters"]
    assert params["camera_names"] == names and params["num_steps"] == STEPS and params["num_frames"] == 9
    np.testing.assert_allclose(params["cameras"][names[1]]["xyz"], scene.cameras[views[1]].world_T_cam[:3, 3])

    result = np.load(out / "tracks.npz")
    tracks, labels = result["tracks"], result["labels"]
    assert tracks.shape == (9, NUM_TRACKS, 3) and tracks.dtype == np.float32 and np.isfinite(tracks).all()
    assert labels.shape == (NUM_TRACKS,) and str(result["task"]) == scene.text
    assert len(str(result["request_id"])) == 12 and list(result["camera_names"]) == names

    png = iio.imread(out / "tracks.png")
    assert png.ndim == 3 and png.shape[0] > 200 and png.shape[1] > 400 and png.std() > 0
    for name in names:
        assert read_video(out / "videos" / f"{name}.mp4").shape == (9, 64, 64, 3)

    with open(out / "status_log.csv") as f:
        rows = list(csv.DictReader(f))
    mine = [r for r in rows if r["request_id"] == str(result["request_id"])]
    assert mine[0]["state"] == "QUEUED" and mine[-1]["state"] == "DONE"
    assert [int(r["step"]) for r in mine if r["state"] == "RUNNING" and int(r["step"]) > 0] == list(range(1, STEPS + 1))
    times = [float(r["time_s"]) for r in rows]
    assert times == sorted(times) and rows[-1]["state"] == "IDLE"


def test_mcap_holds_every_topic_and_reads_back_with_rclpy(demo, scene_views):
    out, proc = demo
    assert proc.returncode == 0, proc.stderr
    scene, views = scene_views
    info, messages = read_mcap(out / "run.mcap")
    assert info["profile"] == "ros2"
    assert all(enc == "ros2msg" and msg_enc == "cdr" for _, enc, _, msg_enc in info["schemas"].values())
    name, _, definition, _ = info["schemas"]["/hoi_tracks"]
    assert name == "syncmv4d_ros/msg/HOITracks" and "MSG: std_msgs/msg/Header" in definition
    assert "MSG: builtin_interfaces/msg/Time" in definition

    result = np.load(out / "tracks.npz")
    (tracks_msg,) = messages["/hoi_tracks"]
    assert tracks_msg.request_id == str(result["request_id"]) and tracks_msg.header.frame_id == "world"
    np.testing.assert_array_equal(tracks_from_msg(tracks_msg)[0], result["tracks"])
    assert messages["/hoi_task"][-1].data == scene.text
    assert sorted(v.camera_name for v in messages["/hoi_videos"]) == sorted(scene.cameras[v].name for v in views)
    assert len(messages["/hoi_tracks/cloud"]) == 1 and len(messages["/hoi_tracks/markers"]) == 1
    states = [s.state for s in messages["/hoi_status"] if s.request_id == tracks_msg.request_id]
    assert states[0] == GenerationStatus.QUEUED and states[-1] == GenerationStatus.DONE

    for v in views:
        cam = scene.cameras[v]
        images = messages[f"/cameras/{cam.name}/image_raw"]
        infos = messages[f"/cameras/{cam.name}/camera_info"]
        assert len(images) >= 2 and len(infos) >= 2
        assert images[0].encoding == "rgb8" and (images[0].width, images[0].height) == (64, 64)
        np.testing.assert_array_equal(image_to_rgb(images[-1]), scene.videos[v, 0])
        np.testing.assert_allclose(np.reshape(infos[-1].k, (3, 3)), cam.K)
        assert images[-1].header.frame_id == infos[-1].header.frame_id == f"{cam.name}_optical_frame"
    # One rig set shares one stamp across cameras (what the node's synchroniser pairs).
    first = [messages[f"/cameras/{scene.cameras[v].name}/image_raw"][0].header.stamp for v in views]
    assert len({(s.sec, s.nanosec) for s in first}) == 1


def test_mcap_channels_keep_the_offered_qos_and_decode_with_mcap_ros2(demo):
    """Each channel's offered_qos_profiles (rosbag2's metadata) is the publisher's QoS, so a replay
    keeps /hoi_tracks latched; mcap-ros2-support decodes the messages from the ros2msg schemas."""
    from mcap_ros2.reader import read_ros2_messages
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    out, proc = demo
    assert proc.returncode == 0, proc.stderr
    with open(out / "run.mcap", "rb") as f:
        channels = {c.topic: c for c in make_reader(f).get_summary().channels.values()}
    offered = {topic: qos_from_metadata(c.metadata["offered_qos_profiles"]) for topic, c in channels.items()}
    # Discovery carries the policies but not the history depth (0 here, as in rosbag2's own bags).
    (tracks_qos,) = offered["/hoi_tracks"]
    assert (tracks_qos.durability, tracks_qos.reliability) == (DurabilityPolicy.TRANSIENT_LOCAL,
                                                               ReliabilityPolicy.RELIABLE)
    (status_qos,) = offered["/hoi_status"]
    assert status_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
    image_topic = next(t for t in offered if t.endswith("/image_raw"))
    assert offered[image_topic][0].reliability == ReliabilityPolicy.BEST_EFFORT  # sensor data
    assert all(len(profiles) == 1 for profiles in offered.values())  # one publisher per topic

    result = np.load(out / "tracks.npz")
    (decoded,) = list(read_ros2_messages(str(out / "run.mcap"), topics=["/hoi_tracks"]))
    msg = decoded.ros_msg
    assert decoded.schema.name == "syncmv4d_ros/msg/HOITracks" and msg.request_id == str(result["request_id"])
    points = np.asarray(msg.points, np.float32).reshape(result["tracks"].shape)
    np.testing.assert_array_equal(points, result["tracks"])
    pose_topics = ["/hoi_tracks/poses/tool", "/hoi_tracks/poses/target"]
    poses = {d.channel.topic: d.ros_msg for d in read_ros2_messages(str(out / "run.mcap"), topics=pose_topics)}
    assert set(poses) == {"/hoi_tracks/poses/tool", "/hoi_tracks/poses/target"}
    assert all(len(p.poses) == 0 for p in poses.values())  # a random model labels nothing: no object poses


def test_missing_checkpoint_exits_non_zero_naming_the_error(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    proc = run_demo(tmp_path / "out", "--checkpoint", str(missing))
    assert proc.returncode == 1
    assert "the node reported an error" in proc.stderr and "FileNotFoundError" in proc.stderr
    assert str(missing) in proc.stderr


def test_timeout_exits_non_zero_with_a_message(tmp_path, checkpoint):
    proc = run_demo(tmp_path / "out", "--checkpoint", str(checkpoint), "--timeout", "0.2")
    assert proc.returncode == 1 and "timed out after 0.2 s waiting for" in proc.stderr


def test_bad_arguments_exit_2(tmp_path):
    proc = run_demo(tmp_path / "out", "--steps", "0")
    assert proc.returncode == 2 and "--steps" in proc.stderr


# ---------------------------------------------------------------------- pure parts
def test_message_definition_lists_each_dependency_once():
    text = message_definition("sensor_msgs/msg/CameraInfo")
    assert text.startswith(Path(sys.prefix, "share/sensor_msgs/msg/CameraInfo.msg").read_text().rstrip("\n"))
    deps = [line for line in text.splitlines() if line.startswith("MSG: ")]
    assert deps == ["MSG: std_msgs/msg/Header", "MSG: sensor_msgs/msg/RegionOfInterest",
                    "MSG: builtin_interfaces/msg/Time"]
    with pytest.raises(ValueError, match="no definition of sensor_msgs/msg/NoSuchType"):
        message_definition("sensor_msgs/msg/NoSuchType")


@pytest.mark.parametrize("change, message", [
    (lambda t: t, None),
    (lambda t: t * np.float32(np.nan), "non-finite"),
    (lambda t: t + np.float32(10.0), "from the world origin"),
    (lambda t: t[:5], r"shape \(5, 8, 3\), expected \(9"),
])
def test_check_tracks(change, message):
    tracks = np.random.default_rng(0).uniform(-0.5, 0.5, (9, 8, 3)).astype(np.float32)
    msg = tracks_to_msg(change(tracks), np.zeros(8, np.uint8), Header(frame_id="world"), 8.0)
    if message is None:
        np.testing.assert_array_equal(check_tracks(msg, 9)[0], tracks)
        with pytest.raises(ValueError, match="tracks are in frame 'world', expected 'map'"):
            check_tracks(msg, 9, world_frame="map")
    else:
        with pytest.raises(ValueError, match=message):
            check_tracks(msg, 9)
