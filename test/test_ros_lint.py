"""The ROS package's lint tests, as ROS 2 packages have them (``colcon test`` runs this file
through ament_cmake_pytest, see CMakeLists.txt): ament_flake8 with the package's settings in
setup.cfg (120 columns) and ament_pep257 with the docstring convention the code follows.

ament_pep257 runs the Google convention (``Args:`` / ``Returns:`` / ``Raises:`` sections) with
ament's own ignores (D100-D107: missing docstrings; D212) and these, which the code's style
contradicts on purpose: D205 / D400 / D415 (summaries may wrap onto a second line and end with
a colon before a list), D209 (closing quotes after the last line), D403 (a summary may start with
a parameter or a shape, e.g. ``(4, 4) world_T_cam``), D410 / D411 (no blank line between
sections), D417 (obvious parameters are not listed under Args).
"""

from pathlib import Path

from ament_flake8.main import main_with_errors as flake8_main
from ament_pep257.main import main as pep257_main

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["syncmv4d_ros", "launch", "syncmv4d_core/poses.py", "test/ros_camera_process.py", "test/test_poses.py",
          "test/test_package_xml.py", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("test/test_ros_*.py"))]
PEP257_IGNORE = ["D100", "D101", "D102", "D103", "D104", "D105", "D106", "D107", "D212",
                 "D205", "D209", "D400", "D403", "D410", "D411", "D415", "D417"]


def test_flake8(monkeypatch):
    monkeypatch.chdir(ROOT)
    rc, errors = flake8_main(argv=["--config", str(ROOT / "setup.cfg"), *LINTED])
    assert rc == 0, f"ament_flake8: {len(errors)} errors:\n" + "\n".join(errors)


def test_pep257(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert pep257_main(argv=[*LINTED, "--convention", "google", "--add-ignore", *PEP257_IGNORE]) == 0
