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
    assert {"ament_cmake_pytest", "ament_flake8", "ament_pep257"} <= {d.name for d in package.test_depends}


# Top-level Python module -> the package.xml key that provides it.
PYTHON_KEYS = {"numpy": "python3-numpy", "torch": "python3-torch", "diffusers": "python3-diffusers-pip",
               "transformers": "python3-transformers", "accelerate": "python3-accelerate-pip",
               "safetensors": "python3-safetensors-pip", "spconv": "python3-spconv-pip", "cv2": "python3-opencv",
               "scipy": "python3-scipy", "yaml": "python3-yaml", "transforms3d": "python3-transforms3d",
               "imageio": "python3-imageio", "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm",
               "mcap": "python3-mcap-pip"}


def test_package_xml_declares_what_the_node_imports_and_nothing_else():
    """Run the node's, the demo's and the model's code (imports, loading the built-in model, the
    demo's plot) in a fresh interpreter and compare the third-party modules it imports with
    package.xml's python3-* keys, both ways."""
    import subprocess
    import sys

    code = ("import sys, syncmv4d_ros.generate_node, syncmv4d_ros.demo\n"
            "from syncmv4d_ros.generate_node import load_pipeline\n"
            "load_pipeline(None, 'cpu')\n"
            "import numpy, tempfile, pathlib\n"
            "from syncmv4d_core.visualize import plot_trajectories\n"  # the demo's tracks.png
            "plot_trajectories(numpy.zeros((2, 3, 3)), numpy.zeros(3, numpy.uint8),\n"
            "                  pathlib.Path(tempfile.mkdtemp()) / 'p.png', 'x')\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    stdlib = set(sys.stdlib_module_names)
    imported = {m for m in out.stdout.split() if m not in stdlib and not m.startswith("_")}
    ros = {m for m in imported if m.endswith("_msgs") or m in ("builtin_interfaces", "rcl_interfaces")}
    ours = {m for m in imported if m in PYTHON_KEYS}
    package = parse_package(str(ROOT / "package.xml"))
    declared = {d.name for d in package.exec_depends}
    assert {PYTHON_KEYS[m] for m in ours} <= declared
    assert {k for k in declared if k.startswith("python3-")} == {PYTHON_KEYS[m] for m in ours}, \
        "package.xml declares Python packages the code never imports"
    assert ros - {"rosgraph_msgs", "service_msgs", "type_description_interfaces",
                  "unique_identifier_msgs"} <= declared | {d.name for d in package.build_depends}


def test_license_file_matches_package_xml():
    package = parse_package(str(ROOT / "package.xml"))
    assert [str(lic) for lic in package.licenses] == ["Apache-2.0"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


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
