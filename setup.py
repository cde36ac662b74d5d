"""pip / colcon entry point for the Python code of syncmv4d.

The messages in msg/ are built by CMake (rosidl); see CMakeLists.txt and scripts/setup.sh.
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "syncmv4d_ros"

setup(
    name="syncmv4d",
    version="0.1.0",
    description="Synchronized multi-view HOI video and metric 4D point-track generation (SyncMV4D) with a ROS 2 node",
    packages=find_packages(include=["syncmv4d_core", "syncmv4d_core.*", "syncmv4d_ros", "syncmv4d_ros.*"]),
    package_data={"syncmv4d_core": ["weights/tiny/*", "weights/action_classifier/*"]},  # built-in weights
    python_requires=">=3.10",
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
    ],
    entry_points={
        "console_scripts": [
            "syncmv4d = syncmv4d_core.cli:main",
            "syncmv4d-node = syncmv4d_ros.generate_node:main",
            "syncmv4d-demo = syncmv4d_ros.demo:main",
        ],
    },
)
