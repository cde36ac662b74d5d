"""The node as its own process: comes up from config/generate.yaml, stops cleanly on SIGINT,
and refuses broken parameter files with a clear error."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from syncmv4d_ros.msg import GenerationStatus

DOMAIN_ID = 72  # this module's own DDS domain
ROOT = Path(__file__).resolve().parents[1]
NODE = [sys.executable, "-m", "syncmv4d_ros.generate_node"]


def run_node(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID))
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def expect_failure(args: list[str]) -> str:
    """Run the node, expecting it to exit by itself with status 2; returns its stderr."""
    process = run_node(args)
    try:
        _, stderr = process.communicate(timeout=30.0)
    finally:
        if process.poll() is None:  # it came up although it should not have: do not leave it running
            process.kill()
            process.communicate()
    assert process.returncode == 2, stderr
    return stderr


def test_node_comes_up_from_the_shipped_params_and_stops_on_sigint():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("syncmv4d_process_probe", context=context)
    statuses: list[GenerationStatus] = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(GenerationStatus, "/hoi_status", statuses.append, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    process = run_node(NODE + ["--ros-args", "--params-file", "config/generate.yaml"])
    try:
        deadline = time.monotonic() + 30.0
        while not statuses and time.monotonic() < deadline and process.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert process.poll() is None, f"node exited early: {process.communicate()[1]}"
        assert statuses and statuses[0].state == GenerationStatus.IDLE
        # The graph (node names) is discovered separately from the topic data: wait for it too.
        while time.monotonic() < deadline and "syncmv4d_generate" not in dict(node.get_node_names_and_namespaces()):
            executor.spin_once(timeout_sec=0.1)
        assert "syncmv4d_generate" in dict(node.get_node_names_and_namespaces())
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15.0)
        assert process.returncode == 0, stderr
        assert "ready: cameras ['left', 'center', 'right']" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


SHIPPED = (ROOT / "config" / "generate.yaml").read_text()


@pytest.mark.parametrize("content, message", [
    ("this: [is: not yaml\n  - {{{\n", "Couldn't parse params file"),
    (SHIPPED.replace("num_steps: 20", "num_steps: many"), "invalid parameters: Trying to set parameter 'num_steps'"),
    (SHIPPED.replace("num_steps: 20", "num_steps: 0"), "Parameter num_steps out of range. Min: 1, Max: 1000, value: 0"),
    (SHIPPED.replace("xyz: [0.0, -0.6, 0.45]", "xyz: [0.0, -0.6]"), "parameter cameras.center.xyz must hold 3 values"),
    ("/**:\n  ros__parameters:\n    camera_names: [solo]\n", "parameter cameras.solo.xyz is not set"),
])
def test_broken_params_file_fails_with_a_clear_error(tmp_path, content, message):
    assert content != SHIPPED
    params = tmp_path / "garbage.yaml"
    params.write_text(content)
    stderr = expect_failure(NODE + ["--ros-args", "--params-file", str(params)])
    assert message in stderr, stderr


def test_console_script_is_installed():
    script = shutil.which("syncmv4d-node", path=str(Path(sys.executable).parent))
    assert script is not None
    stderr = expect_failure([script, "--ros-args", "--params-file", "/nonexistent/params.yaml"])
    assert "cannot start" in stderr, stderr
