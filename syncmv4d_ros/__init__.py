"""ROS 2 nodes of syncmv4d (thin adapters over syncmv4d_core).

The generated message package (``syncmv4d_ros.msg``) is installed by the rosidl build into the
environment's site-packages under the same import name; extend_path merges the two locations.
"""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)
