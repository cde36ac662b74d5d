"""package.xml, CMakeLists.txt and the launch file agree with each other and with the code."""

import ast
import py_compile
import re
from pathlib import Path

from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_a_valid_format_3_interface_package():
    package = parse_package(str(ROOT / "package.xml"))
    package.validate()  # raises InvalidPackage on schema violations
    assert package.name == "syncmv4d_ros" and package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]
    buildtool = {d.name for d in package.buildtool_depends}
    assert {"ament_cmake", "rosidl_default_generators"} <= buildtool
    build = {d.name for d in package.build_depends}
    execs = {d.name for d in package.exec_depends}
    messages = {"std_msgs", "sensor_msgs", "geometry_msgs", "builtin_interfaces"}
    assert messages <= build and messages <= execs
    assert {"rosidl_default_runtime", "rclpy", "visualization_msgs", "cv_bridge", "python3-numpy", "python3-torch",
            "python3-opencv", "launch_ros"} <= execs
    assert {"ament_lint_auto", "ament_lint_common"} <= {d.name for d in package.test_depends}


def test_every_message_used_by_the_interfaces_is_a_dependency():
    package = parse_package(str(ROOT / "package.xml"))
    declared = {d.name for d in package.build_depends}
    used = set()
    for path in [*ROOT.glob("msg/*.msg"), *ROOT.glob("action/*.action")]:
        used |= set(re.findall(r"^\s*(\w+_msgs|builtin_interfaces)/", path.read_text(), flags=re.MULTILINE))
    assert used and used <= declared
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for interface in [*ROOT.glob("msg/*.msg"), *ROOT.glob("action/*.action")]:
        assert f'"{interface.relative_to(ROOT)}"' in cmake, f"{interface.name} is not in rosidl_generate_interfaces"


def test_cmake_installs_what_ros2_launch_needs():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"option\(SYNCMV4D_INSTALL_PYTHON .* ON\)", cmake)
    assert "install(PROGRAMS scripts/syncmv4d-node DESTINATION lib/${PROJECT_NAME})" in cmake
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake
    assert (ROOT / "scripts" / "syncmv4d-node").stat().st_mode & 0o111, "the node script must be executable"


def test_launch_file_compiles_and_starts_the_installed_executable(tmp_path):
    launch = ROOT / "launch" / "generate.launch.py"
    py_compile.compile(str(launch), cfile=str(tmp_path / "launch.pyc"), doraise=True)
    tree = ast.parse(launch.read_text())
    functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    keywords = {kw.arg: kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "Node" for kw in node.keywords}
    assert ast.literal_eval(keywords["package"]) == "syncmv4d_ros"
    assert ast.literal_eval(keywords["executable"]) == "syncmv4d-node"
    assert "syncmv4d-node = syncmv4d_ros.generate_node:main" in (ROOT / "setup.py").read_text()
