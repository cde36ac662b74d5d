"""The node's topic names and QoS profiles: one place for the node, the demo, the launch file and the tests.

Names are relative, so they resolve in the node's namespace (``ros2 run ... --ros-args -r
__ns:=/robot1`` gives ``/robot1/hoi_tracks``); in the root namespace they are ``/hoi_tracks``
etc. Every name is also a node parameter (``<key>`` below) and can be remapped.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

TASK = "hoi_task"  # std_msgs/String: the task text
STATUS = "hoi_status"  # GenerationStatus
TRACKS = "hoi_tracks"  # HOITracks
VIDEOS = "hoi_videos"  # HOIVideo, one per view
CLOUD = "hoi_tracks/cloud"  # PointCloud2
MARKERS = "hoi_tracks/markers"  # MarkerArray
POSES = "hoi_tracks/poses"  # geometry_msgs/PoseArray per labelled object: POSES + "/" + label name
ACTION = "generate_hoi"  # GenerateHOI action

# parameter name -> default topic (the node declares these; the launch file remaps them).
TOPIC_PARAMETERS = {
    "task_topic": TASK,
    "status_topic": STATUS,
    "tracks_topic": TRACKS,
    "videos_topic": VIDEOS,
    "cloud_topic": CLOUD,
    "markers_topic": MARKERS,
    "poses_topic": POSES,
}


def image_topic(camera: str) -> str:
    """Default image topic of camera ``camera`` (relative)."""
    return f"cameras/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    """Default CameraInfo topic of camera ``camera`` (relative)."""
    return f"cameras/{camera}/camera_info"


def absolute(name: str, namespace: str = "/") -> str:
    """The fully qualified name of a relative topic ``name`` in ``namespace``."""
    if name.startswith("/"):
        return name
    return namespace.rstrip("/") + "/" + name


# Results: a planner that subscribes late still gets the last one (reliable, transient local, depth 1).
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Statuses: the recent history of every request, also for a late subscriber.
STATUS_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
