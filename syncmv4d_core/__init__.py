"""syncmv4d core: cameras, motion representation, scenes, models, training and evaluation.

Importable without ROS: nothing in this package imports rclpy.
"""

__version__ = "0.1.0"
