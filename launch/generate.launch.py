"""Launch the SyncMV4D generation node with its parameters file.

    ros2 launch syncmv4d_ros generate.launch.py
    ros2 launch syncmv4d_ros generate.launch.py params_file:=/path/to/rig.yaml \
        task_topic:=/planner/task tracks_topic:=/planner/hoi_tracks
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("syncmv4d_ros"), "config", "generate.yaml")
    remapped = {
        "task_topic": "/hoi_task",
        "status_topic": "/hoi_status",
        "tracks_topic": "/hoi_tracks",
        "videos_topic": "/hoi_videos",
    }
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML parameters: cameras, poses, generator settings"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("log_level", default_value="info", description="rclpy log level"),
    ] + [DeclareLaunchArgument(name, default_value=topic, description=f"remap {topic}")
         for name, topic in remapped.items()]
    node = Node(
        package="syncmv4d_ros",
        executable="syncmv4d-node",
        name="syncmv4d_generate",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file")],
        remappings=[(topic, LaunchConfiguration(name)) for name, topic in remapped.items()],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
