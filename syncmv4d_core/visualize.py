"""Scene previews: a contact sheet of views over time with the tracks overlaid, plus 3D track plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cameras import one_view_per_cluster
from .scene import LABEL_COLORS, LABEL_NAMES, UNKNOWN, Scene

TRAIL = 3  # frames of history drawn behind each overlaid track
MAX_TRAILS = 120  # trails are drawn for an evenly spaced subset of the tracks only (readability)
OCCLUSION_TOLERANCE = 0.01  # metres: a track is drawn as visible if within this of the rendered depth


def preview_views(scene: Scene, max_views: int = 3) -> list[int]:
    """Indices of up to ``max_views`` views, one per camera cluster first, then in order."""
    if max_views < 1:
        raise ValueError(f"max_views must be positive, got {max_views}")
    picked = one_view_per_cluster(scene.cameras, strict=False)
    picked += [i for i in range(scene.num_views) if i not in picked]
    return picked[:max_views]


def visible_tracks(scene: Scene, view: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (K, 2) of the tracks in ``view`` at ``frame`` and a (K,) visibility mask:
    inside the image, in front of the camera and, when the scene has depth, not occluded."""
    cam = scene.cameras[view]
    uv, z = cam.project(scene.tracks_world[frame])
    vis = cam.in_image(uv, z)
    if scene.depth is not None:
        H, W = scene.image_size
        col = np.clip(np.rint(uv[:, 0]).astype(int), 0, W - 1)
        row = np.clip(np.rint(uv[:, 1]).astype(int), 0, H - 1)
        surface = scene.depth[view, frame, row, col]
        vis &= (surface <= 0) | (z <= surface + OCCLUSION_TOLERANCE)
    return uv, vis


def render_preview(scene: Scene, out_path: str | Path, max_views: int = 3, max_frames: int = 5,
                   max_3d_points: int = 400) -> Path:
    """Save a PNG contact sheet of ``scene``.

    Rows are up to ``max_views`` views (one per cluster), columns up to ``max_frames`` frames
    spread over the clip; visible tracks are drawn at their current projected pixel, coloured
    by label, with a short trail. A 3D panel shows the world tracks (metres) coloured by label;
    the title is the scene text.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    if max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    views = preview_views(scene, max_views)
    frames = np.unique(np.linspace(0, scene.num_frames - 1, min(max_frames, scene.num_frames)).round().astype(int))
    H, W = scene.image_size
    cell = 2.2
    fig = plt.figure(figsize=(cell * (len(frames) + 2.2), cell * H / W * len(views) + 0.9))
    grid = fig.add_gridspec(len(views), len(frames) + 2, wspace=0.04, hspace=0.06)
    colors = np.array([LABEL_COLORS.get(int(lab), LABEL_COLORS[UNKNOWN]) for lab in scene.labels]).reshape(-1, 3)
    marker = max(0.3, 3.0 * min(H, W) / 256 / np.sqrt(max(scene.num_points, 1) / 400))
    for r, v in enumerate(views):
        for c, f in enumerate(frames):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(scene.videos[v, f], interpolation="nearest")
            uv, vis = visible_tracks(scene, v, f)
            trail = np.zeros(scene.num_points, bool)
            trail[:: max(1, scene.num_points // MAX_TRAILS)] = True
            newer_uv, newer_vis = uv, vis & trail
            for back in range(1, min(TRAIL, f) + 1):
                older_uv, older_vis = visible_tracks(scene, v, f - back)
                both = newer_vis & older_vis
                for lab in np.unique(scene.labels[both]):
                    sel = both & (scene.labels == lab)
                    ax.plot(np.stack([older_uv[sel, 0], newer_uv[sel, 0]]), np.stack([older_uv[sel, 1], newer_uv[sel, 1]]),
                            color=LABEL_COLORS.get(int(lab)), lw=0.6, alpha=0.8 * (1 - (back - 1) / TRAIL))
                newer_uv, newer_vis = older_uv, both
            ax.scatter(uv[vis, 0], uv[vis, 1], s=marker, c=colors[vis], linewidths=0)
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{scene.cameras[v].name} ({scene.cameras[v].cluster})", fontsize=7)

    ax3 = fig.add_subplot(grid[:, len(frames):], projection="3d")
    rng = np.random.default_rng(0)
    pick = rng.choice(scene.num_points, size=min(max_3d_points, scene.num_points), replace=False)
    draw_tracks_3d(ax3, scene.tracks_world[:, pick], scene.labels[pick], frame=-1, every=4, size=2, lw=0.4)
    ax3.tick_params(labelsize=6)
    ax3.set_title("world tracks (last frame + paths)", fontsize=8)
    fig.suptitle(f'"{scene.text}"  ({scene.num_views} views, {scene.num_frames} frames @ {scene.fps:g} fps, '
                 f'{scene.num_points} tracks)', fontsize=10)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_path


def draw_tracks_3d(ax, tracks: np.ndarray, labels: np.ndarray, frame: int = 0, every: int = 1, size: float = 4,
                   lw: float = 0.6) -> None:
    """Trajectories on a matplotlib 3D axis, coloured by label, with the points of one frame; equal axes.

    Args:
        tracks: (F, K, 3) metres, world frame; labels: (K,) label codes.
        frame: the frame whose points are drawn as dots; every: draw every n-th path of a label.
    """
    for lab in np.unique(labels):
        sel = np.flatnonzero(labels == lab)
        color = LABEL_COLORS.get(int(lab), LABEL_COLORS[UNKNOWN])
        for k in sel[::every]:
            ax.plot(*tracks[:, k].T, color=color, lw=lw, alpha=0.6)
        ax.scatter(*tracks[frame, sel].T, s=size, color=color, label=LABEL_NAMES.get(int(lab), str(lab)),
                   depthshade=False)
    lo, hi = tracks.reshape(-1, 3).min(0), tracks.reshape(-1, 3).max(0)
    mid, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3)
    for axis, set_lim in enumerate((ax.set_xlim, ax.set_ylim, ax.set_zlim)):
        set_lim(mid[axis] - half, mid[axis] + half)
    ax.set_xlabel("x (m)", fontsize=7)
    ax.set_ylabel("y (m)", fontsize=7)
    ax.set_zlabel("z (m)", fontsize=7)
    ax.legend(fontsize=7, loc="upper left")


def plot_trajectories(tracks: np.ndarray, labels: np.ndarray, path: str | Path, title: str) -> Path:
    """PNG of the trajectories (tracks (F, K, 3) metres): a 3D view and the top view (x, y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4.8))
    grid = fig.add_gridspec(1, 2, wspace=0.3)
    draw_tracks_3d(fig.add_subplot(grid[0], projection="3d"), tracks, labels)
    top = fig.add_subplot(grid[1])
    for lab in np.unique(labels):
        sel = np.flatnonzero(labels == lab)
        color = LABEL_COLORS.get(int(lab), LABEL_COLORS[UNKNOWN])
        top.plot(tracks[:, sel, 0], tracks[:, sel, 1], color=color, lw=0.6, alpha=0.7)
        top.scatter(tracks[0, sel, 0], tracks[0, sel, 1], s=4, color=color)
    top.set_aspect("equal")
    top.set_xlabel("x (m)")
    top.set_ylabel("y (m)")
    top.set_title("top view")
    fig.suptitle(f'"{title}": {tracks.shape[1]} tracks over {tracks.shape[0]} frames')
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)

