"""Launch the SyncMV4D generation node with its parameters file.

    ros2 launch syncmv4d_ros generate.launch.py
    ros2 launch syncmv4d_ros generate.launch.py params_file:=/path/to/rig.yaml namespace:=robot1 \
        use_sim_time:=true task_topic:=/planner/task tracks_topic:=/planner/hoi_tracks

Every output and the task input can be remapped (``<name>_topic:=...``, defaults from
``syncmv4d_ros.topics``, relative so they follow ``namespace``); camera topics are per-camera
parameters in the params file (``cameras.<name>.image_topic`` / ``camera_info_topic``).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from syncmv4d_ros import topics


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("syncmv4d_ros"), "config", "generate.yaml")
    # launch argument -> the node's own (relative) name it remaps
    remapped = {name: topic for name, topic in topics.TOPIC_PARAMETERS.items()}
    remapped["action_name"] = topics.ACTION
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML parameters: cameras, poses, generator settings"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (simulation or bag replay) for stamps and max_image_age"),
        DeclareLaunchArgument("log_level", default_value="info", description="rclpy log level"),
    ] + [DeclareLaunchArgument(name, default_value=topic, description=f"remap {topic}")
         for name, topic in remapped.items()]
    node = Node(
        package="syncmv4d_ros",
        executable="syncmv4d-node",
        name="syncmv4d_generate",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), {"use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[(topic, LaunchConfiguration(name)) for name, topic in remapped.items()],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
