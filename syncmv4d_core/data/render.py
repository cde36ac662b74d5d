"""A small vectorised software renderer for procedural scenes (numpy only, no external renderer).

Every surface is a dense set of *surface samples* (point, outward normal, albedo) that belongs
to one rigid *part*; a scene moves its parts with per-frame rigid transforms. Rendering splats
the samples into a z-buffer, one pixel per sample, with Lambert shading; the samples are laid on
regular parametric grids whose spacing is chosen below the pixel footprint (see
``sample_spacing``), so closed surfaces render without holes. The table top (the z = 0 plane,
a finite rectangle) is ray-cast per pixel instead, with soft shadows from a top-down shadow map.

Depth convention: ``depth`` is the camera-frame z of the visible surface in metres (the table
counts as a surface); it is 0 only where the pixel's ray hits nothing (beyond the table edge or
above the horizon), where the colour is the flat background colour.

Units: metres, world z up, OpenCV camera frame (see ``syncmv4d_core.cameras``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ..cameras import Camera

AMBIENT, DIFFUSE = 0.38, 0.62  # Lambert shading: colour = albedo * (AMBIENT + DIFFUSE * max(0, n . l))
SHADOW_CELL = 0.004  # metres per shadow-map cell on the table
SHADOW_STRENGTH = 0.55  # fraction of light a fully occluded table cell loses
SHADOW_FALLOFF = 0.12  # metres: contact shadows fade as exp(-height / SHADOW_FALLOFF)


@dataclass
class SurfaceSamples:
    """Surface samples of one or more rigid parts, in each part's own frame.

    Attributes:
        points: (N, 3) float32 positions in the part frame, metres.
        normals: (N, 3) float32 unit outward normals in the part frame.
        colors: (N, 3) float32 albedo in [0, 1].
        part: (N,) int32 index of the rigid part carrying each sample.
    """

    points: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    part: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @staticmethod
    def concat(items: list["SurfaceSamples"]) -> "SurfaceSamples":
        """One sample set holding all of ``items`` (in order)."""
        return SurfaceSamples(*(np.concatenate([getattr(s, k) for s in items]) for k in ("points", "normals", "colors", "part")))

    def select(self, mask: np.ndarray) -> "SurfaceSamples":
        """The samples where the (N,) bool ``mask`` (or index array) selects."""
        return SurfaceSamples(self.points[mask], self.normals[mask], self.colors[mask], self.part[mask])

    def transformed(self, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World positions and normals over time.

        Args:
            poses: (F, P, 4, 4) world-from-part rigid transforms (P > max part index).
        Returns:
            points (F, N, 3) float32 metres and normals (F, N, 3) float32.
        """
        F = poses.shape[0]
        points = np.empty((F, len(self), 3), np.float32)
        normals = np.empty((F, len(self), 3), np.float32)
        for p in np.unique(self.part):
            sel = self.part == p
            R = poses[:, p, :3, :3].astype(np.float32)  # (F, 3, 3)
            t = poses[:, p, :3, 3].astype(np.float32)  # (F, 3)
            Rt = R.transpose(0, 2, 1)
            points[:, sel] = self.points[sel] @ Rt + t[:, None]  # (F, n, 3)
            normals[:, sel] = self.normals[sel] @ Rt
        return points, normals


# ---------------------------------------------------------------------- primitive samplers
def _grid(n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centred coordinates in [0, 1) x [0, 1): two (n_a * n_b,) arrays."""
    a, b = np.meshgrid((np.arange(n_a) + 0.5) / n_a, (np.arange(n_b) + 0.5) / n_b, indexing="ij")
    return a.ravel(), b.ravel()


def _count(length: float, spacing: float) -> int:
    return max(1, int(np.ceil(length / spacing)))


def sample_box(size: tuple[float, float, float], spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Points and normals (N, 3) on an axis-aligned box of ``size`` (metres) centred at the origin."""
    half = np.asarray(size, np.float64) / 2
    points, normals = [], []
    for axis in range(3):
        a1, a2 = [k for k in range(3) if k != axis]
        u, v = _grid(_count(2 * half[a1], spacing), _count(2 * half[a2], spacing))
        for sign in (-1.0, 1.0):
            p = np.zeros((u.size, 3))
            p[:, a1] = (u * 2 - 1) * half[a1]
            p[:, a2] = (v * 2 - 1) * half[a2]
            p[:, axis] = sign * half[axis]
            n = np.zeros_like(p)
            n[:, axis] = sign
            points.append(p)
            normals.append(n)
    return np.concatenate(points), np.concatenate(normals)


def sample_disk(radius: float, spacing: float, z: float, up: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points and normals on a horizontal disk at height ``z`` (normal +z if ``up`` else -z)."""
    rings = _count(radius, spacing)
    points = []
    for i in range(rings):
        r = (i + 0.5) / rings * radius
        n = _count(2 * np.pi * r, spacing)
        ang = (np.arange(n) + 0.5 * (i % 2)) * 2 * np.pi / n
        points.append(np.stack([r * np.cos(ang), r * np.sin(ang), np.full(n, z)], axis=1))
    points = np.concatenate(points)
    normals = np.zeros_like(points)
    normals[:, 2] = 1.0 if up else -1.0
    return points, normals


def sample_cylinder(radius: float, height: float, spacing: float, top: bool = True, bottom: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Points and normals on a vertical cylinder with its base at z = 0 (axis = +z)."""
    n_ang = _count(2 * np.pi * radius, spacing)
    a, h = _grid(n_ang, _count(height, spacing))
    ang = a * 2 * np.pi
    normals = np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], axis=1)
    points = normals * radius
    points[:, 2] = h * height
    parts = [(points, normals)]
    if top:
        parts.append(sample_disk(radius, spacing, height, up=True))
    if bottom:
        parts.append(sample_disk(radius, spacing, 0.0, up=False))
    return np.concatenate([p for p, _ in parts]), np.concatenate([n for _, n in parts])


def _sphere_directions(spacing_rad: float, z_min: float = -1.0, z_max: float = 1.0) -> np.ndarray:
    """(N, 3) unit vectors on a latitude-longitude grid with about ``spacing_rad`` between neighbours,
    restricted to ``z_min <= z <= z_max``."""
    polar_lo, polar_hi = np.arccos(np.clip(z_max, -1, 1)), np.arccos(np.clip(z_min, -1, 1))
    n_rings = _count(polar_hi - polar_lo, spacing_rad)
    dirs = []
    for i in range(n_rings):
        polar = polar_lo + (i + 0.5) / n_rings * (polar_hi - polar_lo)
        n = _count(2 * np.pi * np.sin(polar), spacing_rad)
        az = (np.arange(n) + 0.5 * (i % 2)) * 2 * np.pi / n
        dirs.append(np.stack([np.sin(polar) * np.cos(az), np.sin(polar) * np.sin(az), np.full(n, np.cos(polar))], axis=1))
    return np.concatenate(dirs)


def sample_ellipsoid(semi_axes: tuple[float, float, float], spacing: float, exponent: float = 2.0,
                     z_max: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Points and normals on the superquadric ``|x/a|^e + |y/b|^e + |z/c|^e = 1`` centred at the origin.

    ``exponent`` 2 gives an ellipsoid, larger values a rounded box. ``z_max`` (a fraction of
    ``c`` in [-1, 1]) cuts the surface off above that height (an open bowl).
    """
    abc = np.asarray(semi_axes, np.float64)
    dirs = _sphere_directions(spacing / abc.max(), z_max=z_max)
    F = (np.abs(dirs / abc) ** exponent).sum(axis=1)
    points = dirs * F[:, None] ** (-1.0 / exponent)
    grad = np.sign(points) * np.abs(points) ** (exponent - 1) / abc**exponent
    return points, grad / np.linalg.norm(grad, axis=1, keepdims=True)


def sample_capsule(length: float, radius0: float, radius1: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Points and normals on a tapered capsule along +x from the origin to ``(length, 0, 0)``:
    radius ``radius0`` at the origin, ``radius1`` at the far end, hemispherical caps."""
    r_max = max(radius0, radius1)
    a, s = _grid(_count(2 * np.pi * r_max, spacing), _count(length, spacing))
    ang = a * 2 * np.pi
    r = radius0 + (radius1 - radius0) * s
    slope = (radius0 - radius1) / length  # the normal of a cone tilts along the axis
    normals = np.stack([np.full_like(ang, slope), np.cos(ang), np.sin(ang)], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = np.stack([s * length, r * np.cos(ang), r * np.sin(ang)], axis=1)
    parts = [(points, normals)]
    for radius, x, sign in ((radius0, 0.0, -1.0), (radius1, length, 1.0)):
        d = _sphere_directions(spacing / radius, z_min=0.0)[:, [2, 0, 1]] * [sign, 1.0, 1.0]  # hemisphere along +-x
        parts.append((d * radius + [x, 0.0, 0.0], d))
    return np.concatenate([p for p, _ in parts]), np.concatenate([n for _, n in parts])


# ---------------------------------------------------------------------- textures
def cell_noise(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) for integer cell coordinates (any shape)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF) / 65536.0


def solid_texture(points: np.ndarray, base: np.ndarray, accent: np.ndarray, pattern: str, scale: float, seed: int) -> np.ndarray:
    """Albedo (N, 3) of a procedural solid texture evaluated at part-frame ``points`` (N, 3) metres.

    Patterns: ``plain`` (base with faint noise), ``stripes`` (horizontal bands of period
    ``scale``), ``checker`` (3D checker of cell ``scale``), ``dots`` (accent spots on a
    ``scale`` grid), ``rings`` (wood-like rings around the z axis).
    """
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    cells = np.floor(points / scale).astype(np.int64)
    if pattern == "plain":
        w = np.zeros_like(x)
    elif pattern == "stripes":
        w = (np.floor(z / scale) % 2).astype(np.float64)
    elif pattern == "checker":
        w = (cells.sum(axis=1) % 2).astype(np.float64)
    elif pattern == "dots":
        frac = points / scale - cells - 0.5
        w = (np.linalg.norm(frac[:, :2], axis=1) < 0.28).astype(np.float64)
    elif pattern == "rings":
        w = 0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(x, y) / scale + 2.0 * np.sin(z / scale))
    else:
        raise ValueError(f"unknown texture pattern {pattern!r}")
    noise = cell_noise(cells[:, 0] * 7 + cells[:, 2], cells[:, 1], seed)[:, None] * 0.08 - 0.04
    color = base * (1 - w[:, None]) + accent * w[:, None] + noise
    return np.clip(color, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------- table and lighting
@dataclass
class Table:
    """A finite table top at z = 0, centred at ``center`` (x, y) with ``size`` (x, y) in metres.

    ``pattern`` is ``wood`` (grain stripes along x) or ``cloth`` (a checked tablecloth with
    squares of ``scale`` metres); ``background`` is the RGB in [0, 1] where rays miss the table.
    """

    center: tuple[float, float]
    size: tuple[float, float]
    base: np.ndarray
    accent: np.ndarray
    pattern: str
    scale: float
    background: np.ndarray
    seed: int = 0

    def albedo(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(..., 3) table colour at world (x, y) metres."""
        if self.pattern == "wood":
            grain = 0.5 + 0.5 * np.sin(2 * np.pi * y / self.scale + 1.5 * np.sin(2 * np.pi * x / (7 * self.scale)))
            w = grain**3
        elif self.pattern == "cloth":
            w = ((np.floor(x / self.scale) + np.floor(y / self.scale)) % 2) * 0.8
        else:
            raise ValueError(f"unknown table pattern {self.pattern!r}")
        noise = cell_noise(np.floor(x / 0.01), np.floor(y / 0.01), self.seed) * 0.06 - 0.03
        return np.clip(self.base * (1 - w[..., None]) + self.accent * w[..., None] + noise[..., None], 0, 1)


def shadow_maps(points: np.ndarray, light_dir: np.ndarray, table: Table) -> np.ndarray:
    """Soft shadow intensity on the table per frame.

    Args:
        points: (F, N, 3) world positions of the shadow casters, metres.
        light_dir: (3,) unit vector towards the light (z > 0).
    Returns:
        (F, Gx, Gy) in [0, 1] on a grid of ``SHADOW_CELL`` metres covering the table.
    """
    cx, cy = table.center
    sx, sy = table.size
    gx, gy = _count(sx, SHADOW_CELL), _count(sy, SHADOW_CELL)
    height = np.clip(points[..., 2], 0.0, None)
    ground = points[..., :2] - height[..., None] / light_dir[2] * light_dir[:2]  # (F, N, 2) along the light ray
    ix = np.floor((ground[..., 0] - (cx - sx / 2)) / SHADOW_CELL).astype(np.int64)
    iy = np.floor((ground[..., 1] - (cy - sy / 2)) / SHADOW_CELL).astype(np.int64)
    ok = (ix >= 0) & (ix < gx) & (iy >= 0) & (iy < gy)
    frame = np.broadcast_to(np.arange(points.shape[0])[:, None], ix.shape)
    maps = np.zeros((points.shape[0], gx, gy), np.float32)
    np.maximum.at(maps, (frame[ok], ix[ok], iy[ok]), np.exp(-height[ok] / SHADOW_FALLOFF).astype(np.float32))
    return gaussian_filter(maps, sigma=(0, 1.5, 1.5))


def pixel_rays(camera: Camera) -> np.ndarray:
    """(H, W, 3) world-frame ray directions scaled so that their camera-frame z is 1."""
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    xy = (np.stack([u, v], axis=-1) - camera.K[:2, 2]) @ np.linalg.inv(camera.K[:2, :2]).T
    d_cam = np.concatenate([xy, np.ones_like(u)[..., None]], axis=-1)
    return d_cam @ camera.world_T_cam[:3, :3].T


def render_table(camera: Camera, table: Table, light_dir: np.ndarray, shadows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the table top.

    Args:
        shadows: (F, Gx, Gy) from ``shadow_maps``.
    Returns:
        colors (F, H, W, 3) float32 in [0, 1] and depth (H, W) float32 metres (0 = no table).
    """
    rays = pixel_rays(camera)
    origin = camera.position
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rays[..., 2] < -1e-9, -origin[2] / rays[..., 2], np.inf)
    hit = origin + t[..., None] * np.where(np.isfinite(t)[..., None], rays, 0.0)
    cx, cy = table.center
    sx, sy = table.size
    on = np.isfinite(t) & (np.abs(hit[..., 0] - cx) <= sx / 2) & (np.abs(hit[..., 1] - cy) <= sy / 2)
    depth = np.where(on, t, 0.0).astype(np.float32)
    shade = AMBIENT + DIFFUSE * max(0.0, float(light_dir[2]))
    albedo = table.albedo(hit[..., 0], hit[..., 1]) * shade  # (H, W, 3)
    ix = np.clip(np.floor((hit[..., 0] - (cx - sx / 2)) / SHADOW_CELL).astype(np.int64), 0, shadows.shape[1] - 1)
    iy = np.clip(np.floor((hit[..., 1] - (cy - sy / 2)) / SHADOW_CELL).astype(np.int64), 0, shadows.shape[2] - 1)
    lit = 1.0 - SHADOW_STRENGTH * np.minimum(shadows[:, ix, iy], 1.0)  # (F, H, W)
    colors = np.where(on[..., None], albedo * lit[..., None], table.background)
    return np.ascontiguousarray(colors, dtype=np.float32), depth


# ---------------------------------------------------------------------- splatting
def sample_spacing(cameras: list[Camera], center: np.ndarray, reach: float, fraction: float) -> float:
    """Surface-sample spacing (metres) that keeps neighbouring samples within ``fraction`` of a
    pixel in every camera, for surfaces up to ``reach`` metres closer to the camera than ``center``."""
    footprints = []
    for cam in cameras:
        nearest = max(float(np.linalg.norm(cam.position - center)) - reach, 0.05)
        footprints.append(nearest / max(cam.K[0, 0], cam.K[1, 1]))
    return fraction * min(footprints)


def shade(colors: np.ndarray, normals: np.ndarray, light_dir: np.ndarray) -> np.ndarray:
    """Lambert shading: (N, 3) albedo and (F, N, 3) normals -> (F, N, 3) float32 colours."""
    lambert = np.clip(normals @ light_dir.astype(np.float32), 0.0, None)
    return colors[None] * (AMBIENT + DIFFUSE * lambert)[..., None]


def _n_dot_p(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(F, N) dot products n . p (a sample faces camera c where n . c > n . p)."""
    return (points * normals).sum(axis=-1)


def splat(camera: Camera, points: np.ndarray, normals: np.ndarray, colors: np.ndarray,
          zbuf: np.ndarray, image: np.ndarray) -> None:
    """Z-buffered splatting of surface samples into per-frame buffers, in place.

    Samples facing away from the camera are culled (closed surfaces hide them anyway).

    Args:
        points, normals, colors: (F, N, 3) world positions (metres), unit normals, shaded colours.
        zbuf: (F, H, W) float32 camera-frame depth, metres (inf or the table depth); updated.
        image: (F, H, W, 3) float32 colours; updated where a sample wins the depth test.
    """
    if not (zbuf.flags.c_contiguous and image.flags.c_contiguous):
        raise ValueError("splat writes through flat views: zbuf and image must be C-contiguous")
    F, H, W = zbuf.shape
    P = (camera.K @ camera.cam_T_world[:3]).astype(np.float32)  # (3, 4) world -> homogeneous pixels
    h = points @ P[:, :3].T + P[:, 3]  # (F, N, 3): (u z, v z, z)
    z = h[..., 2]
    facing = normals @ camera.position.astype(np.float32) > _n_dot_p(points, normals)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.floor(h[..., 0] / z + 0.5)
        v = np.floor(h[..., 1] / z + 0.5)
    idx = np.flatnonzero(facing & (z > 1e-3) & (u >= 0) & (u < W) & (v >= 0) & (v < H))
    frame = idx // z.shape[1]
    pix = (frame * H + v.ravel()[idx].astype(np.int64)) * W + u.ravel()[idx].astype(np.int64)  # flat index into (F, H, W)
    z = z.ravel()[idx]
    flat_z = zbuf.reshape(-1)
    np.minimum.at(flat_z, pix, z)
    win = z <= flat_z[pix]
    image.reshape(-1, 3)[pix[win]] = colors.reshape(-1, 3)[idx[win]]


def render_views(cameras: list[Camera], samples: SurfaceSamples, poses: np.ndarray, table: Table,
                 light_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render all cameras over time.

    Args:
        cameras: V cameras of the same size H x W.
        samples: surface samples of P parts (part frames).
        poses: (F, P, 4, 4) world-from-part transforms per frame.
        table: the table top (z = 0).
        light_dir: (3,) unit vector towards the directional light.
    Returns:
        videos (V, F, H, W, 3) uint8 and depth (V, F, H, W) float32 metres (0 = nothing hit).
    """
    F = poses.shape[0]
    H, W = cameras[0].height, cameras[0].width
    light_dir = np.asarray(light_dir, np.float32)
    static = np.all(np.abs(poses - poses[:1]) < 1e-9, axis=(0, 2, 3))  # (P,) parts that never move
    is_static = static[samples.part]
    points, normals = samples.transformed(poses)
    colors = shade(samples.colors, normals, light_dir)
    casters = points[:, :: max(1, len(samples) // 8000)]  # a bounded subset is enough for soft shadows
    shadows = shadow_maps(casters, light_dir, table)
    fixed = [a[:1, is_static] for a in (points, normals, colors)]  # (1, Ns, 3) each
    moving = [np.ascontiguousarray(a[:, ~is_static]) for a in (points, normals, colors)]  # (F, Nm, 3) each
    videos = np.empty((len(cameras), F, H, W, 3), np.uint8)
    depth = np.empty((len(cameras), F, H, W), np.float32)
    for i, cam in enumerate(cameras):
        image, table_depth = render_table(cam, table, light_dir, shadows)
        zbuf = np.where(table_depth > 0, table_depth, np.inf).astype(np.float32)[None].repeat(F, axis=0)
        # Static parts are splatted once (into frame 0's buffers) and copied to all frames.
        if is_static.any():
            first = image[:1].copy(), zbuf[:1].copy()
            splat(cam, *fixed, first[1], first[0])
            changed = first[1][0] < zbuf[0]
            zbuf[:, changed] = first[1][0][changed]
            image[:, changed] = first[0][0][changed]
        splat(cam, *moving, zbuf, image)
        videos[i] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
        depth[i] = np.where(np.isfinite(zbuf), zbuf, 0.0)
    return videos, depth
