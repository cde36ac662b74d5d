"""ROS side costs: message conversions, and HOITracks transport between two processes.

    .venv/bin/python bench/bench_ros.py            # prints a table (docs/ros.md records one)

Transport: a publisher subprocess converts (F, K, 3) tracks to HOITracks and publishes them with
the node's QoS (reliable, transient local, depth 1); this process receives them and converts
them back to numpy. Latency = from before the conversion to after the conversion back
(both processes read the same wall clock), i.e. what a planner waits for beyond generation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from syncmv4d_core.cameras import Camera
from syncmv4d_ros.conversions import (
    image_to_rgb,
    numpy_to_image,
    seconds_to_time,
    time_to_seconds,
    tracks_from_msg,
    tracks_to_markers,
    tracks_to_msg,
    tracks_to_point_cloud,
    video_to_msg,
)
from syncmv4d_ros.msg import HOITracks

DOMAIN_ID = 74
TOPIC = "/bench/hoi_tracks"
QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def timed(fn, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_conversions() -> None:
    rng = np.random.default_rng(0)
    tracks = rng.normal(size=(49, 1600, 3)).astype(np.float32)
    labels = (np.arange(1600) % 4).astype(np.uint8)
    header = Header(stamp=seconds_to_time(1.0), frame_id="world")
    msg = tracks_to_msg(tracks, labels, header, 8.0)
    image = rng.integers(0, 256, size=(480, 704, 3), dtype=np.uint8)
    bgr = numpy_to_image(image[..., ::-1].copy(), "bgr8")
    frames = rng.integers(0, 256, size=(49, 480, 704, 3), dtype=np.uint8)
    camera = Camera.look_at("cam", (0.5, -0.5, 0.5), (0, 0, 0), 50.0, 704, 480)
    rows = [
        ("tracks_to_msg 49 x 1600", lambda: tracks_to_msg(tracks, labels, header, 8.0)),
        ("tracks_from_msg 49 x 1600", lambda: tracks_from_msg(msg)),
        ("tracks_to_point_cloud 49 x 1600", lambda: tracks_to_point_cloud(tracks, header, 8.0, labels)),
        ("tracks_to_markers 200 of 1600 tracks", lambda: tracks_to_markers(tracks, labels, header, 200)),
        ("tracks_to_markers all 1600 tracks", lambda: tracks_to_markers(tracks, labels, header, 1600)),
        ("image_to_rgb bgr8 480 x 704", lambda: image_to_rgb(bgr)),
        ("numpy_to_image rgb8 480 x 704", lambda: numpy_to_image(image, "rgb8")),
        ("video_to_msg 49 x 480 x 704", lambda: video_to_msg(frames, camera, header, 8.0)),
    ]
    print("conversion                                   median ms")
    for name, fn in rows:
        print(f"{name:<44} {timed(fn):9.3f}")


def publish(frames: int, points: int, count: int, rate: float) -> None:
    """Publisher process: ``count`` HOITracks of (frames, points, 3) at ``rate`` Hz."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("bench_tracks_publisher", context=context)
    pub = node.create_publisher(HOITracks, TOPIC, QOS)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    tracks = np.random.default_rng(0).normal(size=(frames, points, 3)).astype(np.float32)
    labels = np.zeros(points, np.uint8)
    for _ in range(count):
        start = time.time()
        header = Header(stamp=seconds_to_time(start), frame_id="world")  # send time rides in the stamp
        pub.publish(tracks_to_msg(tracks, labels, header, 8.0))
        time.sleep(max(0.0, 1.0 / rate - (time.time() - start)))
    time.sleep(1.0)  # let reliable delivery finish before the participant goes away
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def bench_transport(frames: int, points: int, count: int, rate: float) -> None:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("bench_tracks_subscriber", context=context)
    latencies: list[float] = []
    arrivals: list[float] = []

    def on_tracks(msg: HOITracks) -> None:
        tracks, _, _ = tracks_from_msg(msg)
        now = time.time()
        assert tracks.shape == (frames, points, 3)
        latencies.append((now - time_to_seconds(msg.header.stamp)) * 1e3)
        arrivals.append(now)

    node.create_subscription(HOITracks, TOPIC, on_tracks, QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    publisher = subprocess.Popen([sys.executable, __file__, "--publish", str(frames), str(points), str(count),
                                  str(rate)], env=env)
    deadline = time.monotonic() + 60.0
    while publisher.poll() is None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    for _ in range(20):
        executor.spin_once(timeout_sec=0.05)
    publisher.wait(timeout=10.0)
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    megabytes = frames * points * 12 / 1e6
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    print(f"HOITracks {frames} x {points} ({frames * points / 1e6:.2f} M points, {megabytes:.1f} MB) at {rate:g} Hz: "
          f"received {len(latencies)}/{count}, median latency {statistics.median(latencies):.1f} ms, "
          f"max {max(latencies):.1f} ms, {(len(arrivals) - 1) / span:.1f} msgs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publish", nargs=4, metavar=("FRAMES", "POINTS", "COUNT", "RATE"),
                        help="internal: run as the publisher process")
    args = parser.parse_args()
    if args.publish:
        frames, points, count, rate = args.publish
        publish(int(frames), int(points), int(count), float(rate))
        return
    bench_conversions()
    print()
    bench_transport(49, 1600, count=30, rate=10.0)
    bench_transport(49, 20409, count=10, rate=2.0)  # 1.0 M points
    bench_transport(1, 1_000_000, count=10, rate=2.0)


if __name__ == "__main__":
    main()
