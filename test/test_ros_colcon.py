"""The path a ROS 2 user takes: ``colcon build`` and ``colcon test`` of the package
(scripts/colcon_check.sh, colcon from its own pinned virtualenv, the pip ROS 2 wheels as the
underlay), then the installed node started from the install space with the installed params."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_ID = 75  # this module's own DDS domain


@pytest.mark.slow  # about 50 s on 2 cores (rosidl generation and compilation of the messages)
def test_colcon_build_and_test_then_the_installed_node_runs(tmp_path):
    out = tmp_path / "ws"
    venv = Path(sys.executable).parents[1]
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "colcon_check.sh"), str(venv), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Summary: 3 tests, 0 errors, 0 failures, 0 skipped" in proc.stdout  # lint: flake8 + pep257
    install = out / "install" / "syncmv4d_ros"
    share = install / "share" / "syncmv4d_ros"
    for path in ["package.xml", "launch/generate.launch.py", "config/generate.yaml", "msg/HOITracks.msg",
                 "action/GenerateHOI.action"]:
        assert (share / path).is_file(), path
    executable = install / "lib" / "syncmv4d_ros" / "syncmv4d-node"
    assert os.access(executable, os.X_OK)
    site = next((install / "lib").glob("python3*/site-packages"))
    assert (site / "syncmv4d_ros" / "generate_node.py").is_file() and (site / "syncmv4d_core" / "weights").is_dir()

    # The installed executable and params, as `ros2 run syncmv4d_ros syncmv4d-node` starts them.
    env = dict(os.environ, PYTHONPATH=str(site), ROS_DOMAIN_ID=str(DOMAIN_ID),
               AMENT_PREFIX_PATH=f"{install}{os.pathsep}{venv}")
    log = tmp_path / "node.log"
    with open(log, "w") as f:
        node = subprocess.Popen([sys.executable, str(executable), "--ros-args", "--params-file",
                                 str(share / "config" / "generate.yaml")], cwd=tmp_path, env=env, stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and node.poll() is None and "ready:" not in log.read_text():
            time.sleep(0.2)
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    output = log.read_text()
    assert node.returncode == 0, output
    assert "ready: cameras ['left', 'center', 'right']" in output
    assert f"{site}/syncmv4d_ros" in subprocess.run(
        [sys.executable, "-c", "import syncmv4d_ros.generate_node as g; print(g.__file__)"], env=env,
        capture_output=True, text=True, cwd=tmp_path).stdout
