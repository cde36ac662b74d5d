"""A camera driver stand-in, run as its own process by test_ros_cameras.py.

``python test/ros_camera_process.py FRAME.npz`` publishes, at ``rate`` Hz until SIGINT, the
image of FRAME.npz as bgr8 with lens distortion applied (plumb_bob or rational_polynomial, the
coefficients ``d``), and the matching CameraInfo (K, D, size), both stamped with this process's
clock, on ``cameras/<name>/image_raw`` and ``cameras/<name>/camera_info`` with sensor-data QoS,
as a camera driver does. FRAME.npz holds: name, image (H, W, 3) uint8 RGB of the ideal pinhole
camera K, K (3, 3), d, distortion_model, rate.
"""

import signal
import sys
import threading

import cv2
import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image

from syncmv4d_ros import topics


def distort(image: np.ndarray, K: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The image a camera with distortion ``d`` takes of the scene that the pinhole camera K sees as ``image``."""
    height, width = image.shape[:2]
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    distorted = np.stack([u.ravel(), v.ravel()], axis=1)[:, None]  # (H*W, 1, 2) pixels of the real camera
    ideal = cv2.undistortPoints(distorted, K, d, P=K).reshape(height, width, 2)  # where each one looks
    return cv2.remap(image, ideal[..., 0], ideal[..., 1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def main(path: str) -> int:
    data = np.load(path)
    name, rate = str(data["name"]), float(data["rate"])
    K, d = data["K"].astype(np.float64), data["d"].astype(np.float64)
    bgr = np.ascontiguousarray(distort(data["image"], K, d)[..., ::-1])
    height, width = bgr.shape[:2]
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = rclpy.create_node(f"camera_{name}")
    image_pub = node.create_publisher(Image, topics.image_topic(name), qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, topics.camera_info_topic(name), qos_profile_sensor_data)
    image = Image(height=height, width=width, encoding="bgr8", step=3 * width, data=bgr.tobytes())
    P = np.zeros((3, 4))
    P[:, :3] = K
    info = CameraInfo(height=height, width=width, distortion_model=str(data["distortion_model"]), d=d.tolist(),
                      k=K.ravel().tolist(), r=np.eye(3).ravel().tolist(), p=P.ravel().tolist())
    image.header.frame_id = info.header.frame_id = f"{name}_optical_frame"
    published = 0
    next_time = node.get_clock().now().nanoseconds
    while not stop.is_set():
        stamp = node.get_clock().now()
        image.header.stamp = info.header.stamp = stamp.to_msg()
        info_pub.publish(info)
        image_pub.publish(image)
        published += 1
        next_time += int(1e9 / rate)
        stop.wait(max(0.0, (next_time - node.get_clock().now().nanoseconds) * 1e-9))
    print(f"camera {name}: published {published} images of {width}x{height} bgr8", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
