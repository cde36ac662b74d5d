"""Pinhole cameras and the world frame.

Conventions (used everywhere in the project):

* World frame: right-handed, metres, z up (the table top is z = 0 in synthetic scenes).
* Camera frame: OpenCV, x right, y down, z forward (depth = z_cam > 0 in front of the camera).
* Pixels: ``u`` along the width, ``v`` along the height; the centre of pixel ``(i, j)`` has
  coordinates ``(u, v) = (j, i)`` (OpenCV), so a centred principal point is
  ``((W - 1) / 2, (H - 1) / 2)``.
* ``world_T_cam`` maps camera coordinates to world coordinates (camera-to-world, the camera's
  pose); ``cam_T_world`` is its inverse. TACO stores world->camera ``(R, T)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import transforms3d

from .limits import check_name

CLUSTERS = ("left", "center", "right")


def one_view_per_cluster(cameras: list["Camera"], rng: np.random.Generator | None = None,
                         strict: bool = True) -> list[int]:
    """One camera index per cluster, in ``CLUSTERS`` order (left, center, right).

    Args:
        rng: pick uniformly within each cluster; None: the first camera of each cluster.
        strict: a cluster without a camera is a ValueError; False: it is skipped.
    """
    picks = []
    for cluster in CLUSTERS:
        members = [i for i, cam in enumerate(cameras) if cam.cluster == cluster]
        if not members:
            if strict:
                raise ValueError(f"no camera in cluster {cluster!r} (clusters: {[c.cluster for c in cameras]})")
            continue
        picks.append(members[0] if rng is None else int(rng.choice(members)))
    return picks


def stack_cameras(cameras: list["Camera"]) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics (V, 3, 3) pixels and camera-to-world poses (V, 4, 4) metres of V cameras, float32."""
    return (np.stack([c.K for c in cameras]).astype(np.float32),
            np.stack([c.world_T_cam for c in cameras]).astype(np.float32))


def _rigid_error(rotation: np.ndarray) -> float:
    """Largest deviation of ``R^T R`` from identity, plus ``|det R - 1|``."""
    return float(np.abs(rotation.T @ rotation - np.eye(3)).max() + abs(np.linalg.det(rotation) - 1.0))


@dataclass(frozen=True, eq=False)
class Camera:
    """A calibrated pinhole camera.

    Attributes:
        name: unique name within a rig (e.g. a serial number or ``"cam03"``); it becomes a file name,
            so it must match ``limits.NAME_PATTERN`` (letters, digits, "_", "-", ".").
        K: (3, 3) intrinsics in pixels.
        world_T_cam: (4, 4) camera-to-world rigid transform, translation in metres.
        width, height: image size in pixels.
        cluster: one of ``CLUSTERS`` (the TACO-style left / center / right grouping).
    """

    name: str
    K: np.ndarray
    world_T_cam: np.ndarray
    width: int
    height: int
    cluster: str = "center"

    def __post_init__(self) -> None:
        check_name(self.name, "camera name")  # names become file names (videos/<name>.mp4)
        K = np.asarray(self.K, dtype=np.float64)
        world_T_cam = np.asarray(self.world_T_cam, dtype=np.float64)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "world_T_cam", world_T_cam)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        where = f"camera {self.name!r}"
        if K.shape != (3, 3) or world_T_cam.shape != (4, 4):
            raise ValueError(f"{where}: K must be 3x3 and world_T_cam 4x4, got {K.shape} and {world_T_cam.shape}")
        if not (np.isfinite(K).all() and np.isfinite(world_T_cam).all()):
            raise ValueError(f"{where}: K or world_T_cam holds non-finite values")
        if abs(np.linalg.det(K)) < 1e-9 or K[0, 0] <= 0 or K[1, 1] <= 0 or np.any(K[2] != (0.0, 0.0, 1.0)):
            raise ValueError(f"{where}: K is not a valid intrinsics matrix (need fx, fy > 0 and last row 0 0 1): {K.tolist()}")
        if np.any(world_T_cam[3] != (0.0, 0.0, 0.0, 1.0)):
            raise ValueError(f"{where}: world_T_cam's last row must be 0 0 0 1, got {world_T_cam[3].tolist()}")
        err = _rigid_error(world_T_cam[:3, :3])
        if err > 1e-4:
            raise ValueError(f"{where}: world_T_cam's rotation is not rigid (orthonormality/determinant error {err:.3g})")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"{where}: image size must be positive, got {self.width}x{self.height}")
        if self.cluster not in CLUSTERS:
            raise ValueError(f"{where}: cluster must be one of {CLUSTERS}, got {self.cluster!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pose(
        cls,
        name: str,
        K: np.ndarray,
        xyz: np.ndarray,
        quat_wxyz: np.ndarray,
        width: int,
        height: int,
        cluster: str = "center",
    ) -> "Camera":
        """Build from a position (metres) and an orientation quaternion (w, x, y, z), camera-to-world."""
        quat = np.asarray(quat_wxyz, dtype=np.float64)
        if quat.shape != (4,) or not np.isfinite(quat).all() or np.linalg.norm(quat) < 1e-9:
            raise ValueError(f"camera {name!r}: quaternion must be 4 finite values, not all zero, got {quat_wxyz}")
        world_T_cam = np.eye(4)
        world_T_cam[:3, :3] = transforms3d.quaternions.quat2mat(quat / np.linalg.norm(quat))
        world_T_cam[:3, 3] = np.asarray(xyz, dtype=np.float64)
        return cls(name, K, world_T_cam, width, height, cluster)

    @classmethod
    def from_taco(
        cls, name: str, K: np.ndarray, R: np.ndarray, T: np.ndarray, width: int, height: int, cluster: str = "center"
    ) -> "Camera":
        """Build from TACO's world->camera calibration ``x_cam = R @ X + T`` (T in metres)."""
        R = np.asarray(R, dtype=np.float64).reshape(3, 3)
        T = np.asarray(T, dtype=np.float64).reshape(3)
        world_T_cam = np.eye(4)
        world_T_cam[:3, :3] = R.T
        world_T_cam[:3, 3] = -R.T @ T
        return cls(name, K, world_T_cam, width, height, cluster)

    @classmethod
    def look_at(
        cls,
        name: str,
        eye: np.ndarray,
        target: np.ndarray,
        fov_y_deg: float,
        width: int,
        height: int,
        cluster: str = "center",
        up: np.ndarray = (0.0, 0.0, 1.0),
    ) -> "Camera":
        """A camera at ``eye`` (metres) looking at ``target`` with vertical field of view ``fov_y_deg``."""
        eye = np.asarray(eye, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(up, dtype=np.float64))
        if np.linalg.norm(right) < 1e-9:
            raise ValueError(f"camera {name!r}: viewing direction is parallel to the up vector")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        world_T_cam = np.eye(4)
        world_T_cam[:3, :3] = np.stack([right, down, forward], axis=1)
        world_T_cam[:3, 3] = eye
        f = 0.5 * height / np.tan(np.deg2rad(fov_y_deg) / 2)
        K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
        return cls(name, K, world_T_cam, width, height, cluster)

    # ------------------------------------------------------------------ geometry
    @property
    def cam_T_world(self) -> np.ndarray:
        """(4, 4) world-to-camera transform."""
        R = self.world_T_cam[:3, :3]
        out = np.eye(4)
        out[:3, :3] = R.T
        out[:3, 3] = -R.T @ self.world_T_cam[:3, 3]
        return out

    @property
    def position(self) -> np.ndarray:
        """(3,) camera centre in the world frame, metres."""
        return self.world_T_cam[:3, 3].copy()

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """World points (..., 3) metres -> camera-frame points (..., 3) metres."""
        T = self.cam_T_world
        return points_world @ T[:3, :3].T + T[:3, 3]

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points.

        Args:
            points_world: (..., 3) metres.
        Returns:
            uv: (..., 2) pixels (meaningless where depth <= 0), depth: (...,) metres along the optical axis.
        """
        p = self.to_camera(np.asarray(points_world, dtype=np.float64))
        depth = p[..., 2]
        safe = np.where(np.abs(depth) < 1e-12, 1e-12, depth)
        uv = p[..., :2] / safe[..., None] @ self.K[:2, :2].T + self.K[:2, 2]
        return uv, depth

    def unproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Pixels (..., 2) and depth (...,) metres -> world points (..., 3) metres."""
        uv = np.asarray(uv, dtype=np.float64)
        depth = np.asarray(depth, dtype=np.float64)
        xy = (uv - self.K[:2, 2]) @ np.linalg.inv(self.K[:2, :2]).T
        p_cam = np.concatenate([xy * depth[..., None], depth[..., None]], axis=-1)
        return p_cam @ self.world_T_cam[:3, :3].T + self.world_T_cam[:3, 3]

    def in_image(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(...,) bool: in front of the camera and inside the pixel grid."""
        u, v = uv[..., 0], uv[..., 1]
        return (depth > 0) & (u > -0.5) & (u < self.width - 0.5) & (v > -0.5) & (v < self.height - 0.5)

    # ------------------------------------------------------------------ image-space edits
    def crop(self, x0: int, y0: int, width: int, height: int) -> "Camera":
        """The camera seeing the pixel window ``[x0, x0 + width) x [y0, y0 + height)``."""
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return Camera(self.name, K, self.world_T_cam, width, height, self.cluster)

    def resize(self, width: int, height: int) -> "Camera":
        """The camera after resizing its image to ``width x height`` (pixel-centre convention kept)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return Camera(self.name, K, self.world_T_cam, width, height, self.cluster)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """JSON-ready dict: K and world_T_cam as nested lists, plus the pose as xyz + quaternion (w, x, y, z)."""
        return {
            "name": self.name,
            "K": self.K.tolist(),
            "world_T_cam": self.world_T_cam.tolist(),
            "width": self.width,
            "height": self.height,
            "cluster": self.cluster,
            "xyz": self.world_T_cam[:3, 3].tolist(),
            "quat_wxyz": transforms3d.quaternions.mat2quat(self.world_T_cam[:3, :3]).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Camera":
        """Inverse of ``to_dict``; ``world_T_cam`` may be replaced by ``xyz`` + ``quat_wxyz``."""
        name = data.get("name", "?")
        missing = [k for k in ("name", "K", "width", "height") if k not in data]
        if missing:
            raise ValueError(f"camera {name!r}: missing keys {missing}")
        if "world_T_cam" in data:
            return cls(data["name"], np.asarray(data["K"]), np.asarray(data["world_T_cam"]),
                       data["width"], data["height"], data.get("cluster", "center"))
        if "xyz" in data and "quat_wxyz" in data:
            return cls.from_pose(data["name"], np.asarray(data["K"]), data["xyz"], data["quat_wxyz"],
                                 data["width"], data["height"], data.get("cluster", "center"))
        raise ValueError(f"camera {name!r}: needs world_T_cam or xyz + quat_wxyz")
