"""4D point tracks <-> motion pseudo videos (paper Sec. 3.3, Fig. 3), depth ranges, DaS variant.

A *motion pseudo video* renders world-frame tracks ``(F, K, 3)`` into one camera as an RGB video:
on a black background, track ``k`` is drawn in frame ``t`` at its current projected pixel
``(u_t, v_t)`` with the colour

    R = (u0 + 0.5) / W,   G = (v0 + 0.5) / H,   B = (z_t - zmin) / (zmax - zmin)

where ``(u0, v0)`` is the track's *anchor*, its projection in frame 0, and ``z_t`` its metric
depth in frame ``t`` (metres along the optical axis). ``(zmin, zmax)`` is the view's depth range,
the paper's metric scale ``s`` (one row of ``s in R^{V x 2}``). Nearer points win (z-buffer);
each point is a square splat of ``(2 r + 1)^2`` pixels (``radius = r``), as in Fig. 3.

Choices made here (the paper does not state them):

* Half-pixel offset on R, G: an anchor inside the image has ``u0 in (-0.5, W - 0.5)`` (pixel-centre
  convention of ``cameras.py``), so R, G lie strictly inside ``(0, 1)``; the inverse is
  ``u0 = R W - 0.5``.
* Background vs. colour ``(0, 0, *)``: ``depth_range_from_tracks`` pads the range by ``margin`` (10 %
  of the span) on each side, so every drawn pixel has ``B >= margin / (1 + 2 margin) = 0.083``
  while the background is exactly 0. The decoder calls a pixel drawn when its brightest channel
  exceeds ``FOREGROUND_THRESHOLD`` (0.04, about 10 / 255), halfway between the two.
* Anchor visibility: a track whose frame-0 projection is behind the camera or outside the image
  has no anchor colour in that view, so it is never drawn there. ``anchors_for_views`` returns
  such anchors as NaN together with the per-view ``visible`` mask; all functions taking
  ``anchors_uv`` treat NaN rows as "not visible in this view".
* Decoding keeps the drawn pixels that are nearly as bright as the brightest pixel of their 3x3
  neighbourhood (splat interiors; blurred borders are darkened, which would move their decoded
  anchor toward ``(0, 0)``), identifies each one's track by the nearest anchor (in pixels) to its
  decoded ``(R W - 0.5, G H - 0.5)`` within ``max_anchor_error`` pixels, then takes per track and
  frame the median pixel and median depth of the pixels it owns (robust to stray pixels claimed
  by a neighbouring anchor), and unprojects. A track that owns no pixel in a frame (occluded,
  outside the image, or lost to noise) is reported invalid there.

8-bit storage quantises R, G to ``1/255``, i.e. ``W / 255`` pixels of anchor (2.8 px at W = 704):
anchors closer than that share a colour. The decoder then gives one of them the pixels of both
(its position error is about the anchors' distance, a few millimetres at 1 m) and reports the
other as not recovered. ``bench/bench_representation.py`` measures this (docs/representation.md).

DaS's "tracking video" (the paper's Tab. 4 ablation) keeps the frame-0 depth instead:
``B = (1/z0 - 1/zmax) / (1/zmin - 1/zmax)`` (normalised inverse depth, near = bright), constant
over time, drawn with the same z-buffer (``encode_tracking_video``).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.spatial import cKDTree

from .cameras import Camera

logger = logging.getLogger(__name__)

# Image side (pixels) per pixel of default splat radius: 480x704 -> 5x5 splats, 256x384 and smaller
# -> 3x3. At 480x704 a 5x5 splat's 3x3 centre keeps its colour under a Gaussian blur of sigma
# 0.5 px, which 3x3 splats do not; at low resolution big splats hide each other and bias the
# decoded position of partly covered ones (bench/bench_representation.py, radius 1 vs 2).
PIXELS_PER_RADIUS = 240
# Depth-range padding as a fraction of the observed span (keeps B >= 0.083 for drawn points and
# leaves headroom when a predicted range is slightly off).
DEFAULT_MARGIN = 0.1
# A flat (constant-depth) point set still gets a 1 cm wide range.
MIN_DEPTH_SPAN = 0.01
# Brightest-channel level above which a pixel counts as drawn (background is 0, drawn >= 0.083).
FOREGROUND_THRESHOLD = 0.04
# Largest distance (pixels) between a pixel's decoded anchor and the nearest true anchor; 8-bit
# quantisation alone moves the decoded anchor by up to 0.5 * hypot(W, H) / 255 (1.7 px at 480x704).
DEFAULT_MAX_ANCHOR_ERROR = 3.0
# A drawn pixel is used only if it is at least this bright relative to its 3x3 neighbourhood's
# brightest pixel: blur darkens splat borders, which shifts their decoded anchor toward (0, 0).
CORE_RATIO = 0.9
_NEIGHBOURHOOD = np.ones((3, 3), np.uint8)


# ---------------------------------------------------------------------------------- validation
def default_radius(height: int, width: int) -> int:
    """Splat half-size in pixels for an image size: ``max(1, round(min(H, W) / 240))``."""
    return max(1, round(min(height, width) / PIXELS_PER_RADIUS))


def _check_tracks(tracks_world: np.ndarray) -> np.ndarray:
    tracks = np.asarray(tracks_world, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape[-1] != 3:
        raise ValueError(f"tracks_world must be (F, K, 3) metres, got shape {tracks.shape}")
    if not np.isfinite(tracks).all():
        raise ValueError(f"tracks_world holds {int((~np.isfinite(tracks)).sum())} non-finite values")
    return tracks


def _check_depth_range(depth_range: np.ndarray, camera: Camera) -> tuple[float, float]:
    rng = np.asarray(depth_range, dtype=np.float64)
    if rng.shape != (2,) or not np.isfinite(rng).all() or not 0.0 < rng[0] < rng[1]:
        raise ValueError(f"camera {camera.name!r}: depth_range must be (zmin, zmax) metres with 0 < zmin < zmax, "
                         f"got {np.asarray(depth_range).tolist()}")
    return float(rng[0]), float(rng[1])


def _check_radius(radius: int | None, camera: Camera) -> int:
    if radius is None:
        return default_radius(camera.height, camera.width)
    if int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be a non-negative integer number of pixels, got {radius}")
    return int(radius)


def _check_anchors(anchors_uv: np.ndarray, num_points: int, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) anchors -> (anchors, visible (K,) bool); NaN rows are not visible, others must be in the image."""
    anchors = np.asarray(anchors_uv, dtype=np.float64)
    if anchors.shape != (num_points, 2):
        raise ValueError(f"camera {camera.name!r}: anchors_uv must be (K={num_points}, 2) pixels, got {anchors.shape}")
    visible = np.isfinite(anchors).all(axis=1)
    inside = camera.in_image(anchors[visible], np.ones(int(visible.sum())))
    if not inside.all():
        bad = anchors[visible][~inside][0].tolist()
        raise ValueError(f"camera {camera.name!r}: {int((~inside).sum())} anchors lie outside the "
                         f"{camera.width}x{camera.height} image (first: {bad}); mark invisible anchors with NaN")
    return anchors, visible


def _check_cameras(cameras: list[Camera]) -> tuple[int, int]:
    if len(cameras) == 0:
        raise ValueError("need at least one camera")
    sizes = {(cam.height, cam.width) for cam in cameras}
    if len(sizes) != 1:
        raise ValueError(f"all cameras must share one image size, got {[(c.name, c.width, c.height) for c in cameras]}")
    return sizes.pop()


# ---------------------------------------------------------------------------------- anchors
def _anchors_from_frame0(uv0: np.ndarray, depth0: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    visible = camera.in_image(uv0, depth0)
    anchors = np.where(visible[:, None], uv0, np.nan)
    return anchors, visible


def anchors_for_views(tracks_world: np.ndarray, cameras: list[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """Per-view anchor pixels: each track's projection in frame 0.

    Args:
        tracks_world: (F, K, 3) world tracks, metres.
        cameras: V cameras.
    Returns:
        anchors_uv: (V, K, 2) float32 pixels, NaN where the track is not visible in that view.
        visible: (V, K) bool, in front of the camera and inside the image in frame 0.
    """
    tracks = _check_tracks(tracks_world)
    anchors, visible = [], []
    for cam in cameras:
        uv0, depth0 = cam.project(tracks[0])
        a, vis = _anchors_from_frame0(uv0, depth0, cam)
        anchors.append(a)
        visible.append(vis)
    return np.stack(anchors).astype(np.float32), np.stack(visible)


def anchor_colours(anchors_uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 2) anchor pixels -> (..., 2) R, G colours ``((u0 + 0.5) / W, (v0 + 0.5) / H)`` in (0, 1)."""
    return (np.asarray(anchors_uv, dtype=np.float64) + 0.5) / np.array([width, height], dtype=np.float64)


# ---------------------------------------------------------------------------------- depth range
def depth_range_from_tracks(tracks_world: np.ndarray, cameras: list[Camera], margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The metric scale ``s``: per-view (zmin, zmax) of the depths the pseudo video will hold.

    The depths counted in a view are those of tracks anchored there (visible in frame 0) at the
    frames where they are inside the image. The observed span ``[lo, hi]`` (at least
    ``MIN_DEPTH_SPAN`` wide) is padded by ``margin * span`` on each side, the lower pad capped at
    ``lo / 2`` so that zmin stays positive.

    Args:
        tracks_world: (F, K, 3) world tracks, metres.
        cameras: V cameras.
        margin: padding as a fraction of the span (>= 0).
    Returns:
        (V, 2) float32 (zmin, zmax) metres.
    """
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a non-negative fraction of the depth span, got {margin}")
    tracks = _check_tracks(tracks_world)
    ranges = np.empty((len(cameras), 2), dtype=np.float64)
    for i, cam in enumerate(cameras):
        uv, depth = cam.project(tracks)
        anchored = cam.in_image(uv[0], depth[0])
        drawn = anchored[None] & cam.in_image(uv, depth)
        if not drawn.any():
            raise ValueError(f"camera {cam.name!r}: no track is visible in frame 0, the depth range is undefined")
        lo, hi = float(depth[drawn].min()), float(depth[drawn].max())
        pad = margin * max(hi - lo, MIN_DEPTH_SPAN)
        if hi - lo < MIN_DEPTH_SPAN:
            hi = lo + MIN_DEPTH_SPAN
        ranges[i] = (lo - min(pad, lo / 2), hi + pad)
    return ranges.astype(np.float32)


# ---------------------------------------------------------------------------------- rendering
def _splat(uv: np.ndarray, depth: np.ndarray, colours: np.ndarray, drawn: np.ndarray, width: int, height: int,
           radius: int) -> np.ndarray:
    """Z-buffered square splats.

    Args:
        uv: (F, K, 2) pixels; depth: (F, K) metres (z-buffer key, nearest wins);
        colours: (F, K, 3); drawn: (F, K) bool, which points to draw.
    Returns:
        (F, H, W, 3) float32 image, 0 where nothing is drawn.
    """
    num_frames = uv.shape[0]
    f_idx, k_idx = np.nonzero(drawn)                                       # (N,)
    n = f_idx.size
    out = np.zeros((num_frames * height * width, 3), dtype=np.float32)
    if n == 0:
        return out.reshape(num_frames, height, width, 3)
    centre = np.rint(uv[f_idx, k_idx]).astype(np.int64)                    # (N, 2) nearest pixel
    rank = np.empty(n, dtype=np.int32)                                     # 0 = nearest point overall
    rank[np.argsort(depth[f_idx, k_idx], kind="stable")] = np.arange(n, dtype=np.int32)
    offsets = np.arange(-radius, radius + 1)
    dx, dy = np.meshgrid(offsets, offsets)
    px = centre[:, 0:1] + dx.ravel()                                       # (N, S)
    py = centre[:, 1:2] + dy.ravel()                                       # (N, S)
    inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
    flat = ((f_idx[:, None] * height + py) * width + px)[inside]           # (M,) index into F*H*W
    cand = np.broadcast_to(np.arange(n)[:, None], px.shape)[inside]        # (M,) which point
    zbuf = np.full(num_frames * height * width, n, dtype=np.int32)
    np.minimum.at(zbuf, flat, rank[cand])
    wins = zbuf[flat] == rank[cand]                                        # (M,) exactly one per pixel
    out[flat[wins]] = colours[f_idx[cand[wins]], k_idx[cand[wins]]]
    return out.reshape(num_frames, height, width, 3)


def _render(tracks_world: np.ndarray, camera: Camera, depth_range: np.ndarray, anchors_uv: np.ndarray | None,
            radius: int | None, blue: str) -> np.ndarray:
    """Shared body of the two encoders; ``blue`` is "depth" (ours) or "inverse_depth0" (DaS)."""
    tracks = _check_tracks(tracks_world)
    zmin, zmax = _check_depth_range(depth_range, camera)
    radius = _check_radius(radius, camera)
    uv, depth = camera.project(tracks)                                     # (F, K, 2), (F, K)
    if anchors_uv is None:
        anchors, visible = _anchors_from_frame0(uv[0], depth[0], camera)
    else:
        anchors, visible = _check_anchors(anchors_uv, tracks.shape[1], camera)
    drawn = visible[None] & camera.in_image(uv, depth)                     # (F, K)
    if blue == "depth":
        b = (depth - zmin) / (zmax - zmin)                                 # (F, K)
    else:
        inv0 = 1.0 / np.where(depth[0] > 0, depth[0], np.inf)
        b = np.broadcast_to((inv0 - 1.0 / zmax) / (1.0 / zmin - 1.0 / zmax), depth.shape)
    out_of_range = drawn & ((b < 0) | (b > 1))
    if out_of_range.any():  # routine when reprojecting generated tracks with a predicted range
        logger.debug("camera %r: %d drawn points have depths outside the range (%.3f, %.3f) m; their depth colour "
                       "is clipped to [0, 1]", camera.name, int(out_of_range.sum()), zmin, zmax)
    colours = np.empty(depth.shape + (3,), dtype=np.float32)               # (F, K, 3)
    colours[..., :2] = anchor_colours(np.nan_to_num(anchors), camera.width, camera.height)[None]
    colours[..., 2] = np.clip(b, 0.0, 1.0)
    return _splat(uv, depth, colours, drawn, camera.width, camera.height, radius)


def encode_pseudo_video(tracks_world: np.ndarray, camera: Camera, depth_range: np.ndarray,
                        anchors_uv: np.ndarray | None = None, radius: int | None = None) -> np.ndarray:
    """Render tracks as this view's motion pseudo video (paper Fig. 3, "Our Point Tracks").

    Args:
        tracks_world: (F, K, 3) world tracks, metres.
        camera: the view.
        depth_range: (2,) (zmin, zmax) metres, e.g. a row of ``depth_range_from_tracks``.
        anchors_uv: optional (K, 2) anchor pixels (NaN = not visible); default: frame-0 projections.
        radius: splat half-size in pixels (square of side ``2 radius + 1``); default
            ``default_radius(H, W)``.
    Returns:
        (F, H, W, 3) float32 in [0, 1]; colour (R, G, B) = ((u0+.5)/W, (v0+.5)/H, normalised z_t), black background.
    """
    return _render(tracks_world, camera, depth_range, anchors_uv, radius, blue="depth")


def encode_tracking_video(tracks_world: np.ndarray, camera: Camera, depth_range: np.ndarray,
                          anchors_uv: np.ndarray | None = None, radius: int | None = None) -> np.ndarray:
    """DaS-style tracking video (paper Fig. 3 top row, Tab. 4 ablation): frame-0 depth only.

    Same as ``encode_pseudo_video`` except B = normalised inverse frame-0 depth
    ``(1/z0 - 1/zmax) / (1/zmin - 1/zmax)``, constant over time; points are still drawn at their
    current pixel with the current depth as z-buffer key.

    Returns:
        (F, H, W, 3) float32 in [0, 1].
    """
    return _render(tracks_world, camera, depth_range, anchors_uv, radius, blue="inverse_depth0")


def encode_views(tracks_world: np.ndarray, cameras: list[Camera], depth_ranges: np.ndarray,
                 anchors_uv: np.ndarray | None = None, radius: int | None = None) -> np.ndarray:
    """``encode_pseudo_video`` for every view.

    Args:
        tracks_world: (F, K, 3) metres; cameras: V cameras of one image size;
        depth_ranges: (V, 2) metres; anchors_uv: optional (V, K, 2) pixels (NaN = not visible).
    Returns:
        (V, F, H, W, 3) float32 in [0, 1].
    """
    height, width = _check_cameras(cameras)
    ranges = np.asarray(depth_ranges)
    if ranges.shape != (len(cameras), 2):
        raise ValueError(f"depth_ranges must be (V={len(cameras)}, 2) metres, got {ranges.shape}")
    if anchors_uv is not None and np.shape(anchors_uv)[0] != len(cameras):
        raise ValueError(f"anchors_uv must be (V={len(cameras)}, K, 2), got {np.shape(anchors_uv)}")
    return np.stack([
        encode_pseudo_video(tracks_world, cam, ranges[i], None if anchors_uv is None else anchors_uv[i], radius)
        for i, cam in enumerate(cameras)
    ])


# ---------------------------------------------------------------------------------- decoding
def _group_median(group: np.ndarray, values: np.ndarray, num_groups: int) -> np.ndarray:
    """Median of ``values`` per integer ``group`` in [0, num_groups); NaN for empty groups."""
    order = np.lexsort((values, group))
    sorted_values = values[order]
    counts = np.bincount(group, minlength=num_groups)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out = np.full(num_groups, np.nan)
    out[has] = 0.5 * (sorted_values[lo] + sorted_values[hi])
    return out


def _check_video(pseudo_video: np.ndarray) -> tuple[np.ndarray, float]:
    """(F, H, W, 3) uint8 or float pseudo video -> (video as given, value of colour 1.0 in its units)."""
    video = np.asarray(pseudo_video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"pseudo video must be (F, H, W, 3), got shape {video.shape}")
    if video.dtype == np.uint8:
        return video, 255.0
    if video.dtype not in (np.float32, np.float64):
        raise ValueError(f"pseudo video must be uint8, float32 or float64, got dtype {video.dtype}")
    return video, 1.0


def to_uint8(pseudo_video: np.ndarray) -> np.ndarray:
    """(..., 3) float pseudo video in [0, 1] -> uint8 (x 255, rounded, clipped), the on-disk form."""
    return np.rint(np.clip(np.asarray(pseudo_video, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def _core_pixels(video: np.ndarray, unit: float, foreground_threshold: float):
    """Splat-interior pixels of a (F, H, W, 3) pseudo video and the anchors their colours encode.

    Returns:
        f, y, x: (N,) frame, row, column of the drawn pixels that are nearly as bright as the
            brightest pixel of their 3x3 neighbourhood; colour: (N, 3) in [0, 1];
        decoded_anchor: (N, 2) pixels ``(R W - 0.5, G H - 0.5)``.
    """
    height, width = video.shape[1:3]
    brightness = np.maximum(np.maximum(video[..., 0], video[..., 1]), video[..., 2])  # (F, H, W)
    f, y, x = np.nonzero(brightness > foreground_threshold * unit)         # (N,) drawn pixels
    local_max = np.stack([cv2.dilate(frame, _NEIGHBOURHOOD) for frame in brightness])
    core = brightness[f, y, x] >= CORE_RATIO * local_max[f, y, x]
    f, y, x = f[core], y[core], x[core]                                    # splat-interior pixels
    colour = video[f, y, x].astype(np.float64) / unit                      # (N, 3) in [0, 1]
    decoded_anchor = colour[:, :2] * (width, height) - 0.5                 # (N, 2) pixels
    return f, y, x, colour, decoded_anchor


def anchors_from_pseudo_frame0(frame: np.ndarray, radius: int | None = None,
                               max_anchor_error: float = DEFAULT_MAX_ANCHOR_ERROR,
                               foreground_threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """The anchors a generated pseudo video holds, read from its frame 0.

    In frame 0 every track is drawn at its anchor, so a splat pixel's colour must decode to an
    anchor within ``radius + max_anchor_error`` pixels of the pixel itself; pixels that do not
    (noise, a not yet denoised estimate) are ignored. Decoded anchors are rounded to whole pixels,
    and an anchor within one pixel of one decoded by more pixels is dropped as its duplicate.

    Args:
        frame: (H, W, 3) float in [0, 1] or uint8, frame 0 of a pseudo video.
        radius: splat radius in pixels (default: ``default_radius`` of the frame size).
    Returns:
        (A, 2) float32 anchor pixels (u0, v0), possibly A = 0.
    """
    video, unit = _check_video(np.asarray(frame)[None])
    height, width = video.shape[1:3]
    radius = default_radius(height, width) if radius is None else radius
    _, y, x, _, decoded = _core_pixels(video, unit, foreground_threshold)
    cells = np.rint(decoded).astype(np.int64)
    keep = (np.abs(decoded - np.stack([x, y], -1)).max(-1) <= radius + max_anchor_error) \
        & (cells >= 0).all(-1) & (cells[:, 0] < width) & (cells[:, 1] < height)
    cells, counts = np.unique(cells[keep], axis=0, return_counts=True)
    kept: list[np.ndarray] = []
    for i in np.argsort(-counts, kind="stable"):
        if all(np.abs(cells[i] - k).max() > 1 for k in kept):
            kept.append(cells[i])
    return np.asarray(kept, dtype=np.float32).reshape(-1, 2)


def decode_pseudo_video(pseudo_video: np.ndarray, camera: Camera, depth_range: np.ndarray, anchors_uv: np.ndarray,
                        max_anchor_error: float = DEFAULT_MAX_ANCHOR_ERROR,
                        foreground_threshold: float = FOREGROUND_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Recover world tracks from one view's motion pseudo video.

    Args:
        pseudo_video: (F, H, W, 3) float in [0, 1] or uint8.
        camera: the view (its size must match the video).
        depth_range: (2,) (zmin, zmax) metres used to denormalise B.
        anchors_uv: (K, 2) anchor pixels of the tracks to look for (NaN rows are skipped).
        max_anchor_error: largest accepted distance, in pixels, between a pixel's decoded anchor
            and the nearest anchor; farther pixels are treated as noise.
        foreground_threshold: a pixel is drawn when its brightest channel exceeds this.
    Returns:
        tracks_world: (F, K, 3) float32 metres, NaN where not recovered.
        valid: (F, K) bool, the track owns at least one pixel in that frame.
    """
    video, unit = _check_video(pseudo_video)
    num_frames, height, width = video.shape[:3]
    if (height, width) != (camera.height, camera.width):
        raise ValueError(f"camera {camera.name!r} is {camera.width}x{camera.height} but the pseudo video is {width}x{height}")
    zmin, zmax = _check_depth_range(depth_range, camera)
    anchors = np.asarray(anchors_uv, dtype=np.float64)
    num_points = anchors.shape[0] if anchors.ndim == 2 else -1
    anchors, visible = _check_anchors(anchors, num_points, camera)
    if not max_anchor_error > 0:
        raise ValueError(f"max_anchor_error must be a positive number of pixels, got {max_anchor_error}")

    tracks = np.full((num_frames, num_points, 3), np.nan, dtype=np.float32)
    valid = np.zeros((num_frames, num_points), dtype=bool)
    candidates = np.flatnonzero(visible)
    if candidates.size == 0:
        return tracks, valid
    f, y, x, colour, decoded_anchor = _core_pixels(video, unit, foreground_threshold)
    dist, nearest = cKDTree(anchors[candidates]).query(decoded_anchor, distance_upper_bound=max_anchor_error)
    pixel = np.flatnonzero(np.isfinite(dist))                              # (M,) identified pixels
    group = f[pixel] * num_points + candidates[nearest[pixel]]             # (M,) frame * K + track
    num_groups = num_frames * num_points
    u = _group_median(group, x[pixel].astype(np.float64), num_groups)
    v = _group_median(group, y[pixel].astype(np.float64), num_groups)
    b = _group_median(group, colour[pixel, 2], num_groups)
    found = np.isfinite(u)
    points = camera.unproject(np.stack([u[found], v[found]], axis=-1), zmin + b[found] * (zmax - zmin))
    tracks.reshape(num_groups, 3)[found] = points
    valid.reshape(num_groups)[found] = True
    return tracks, valid


def decode_views(pseudo_videos: np.ndarray, cameras: list[Camera], depth_ranges: np.ndarray, anchors_uv: np.ndarray,
                 max_anchor_error: float = DEFAULT_MAX_ANCHOR_ERROR,
                 foreground_threshold: float = FOREGROUND_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """``decode_pseudo_video`` for every view.

    Args:
        pseudo_videos: (V, F, H, W, 3) float in [0, 1] or uint8; cameras: V cameras;
        depth_ranges: (V, 2) metres; anchors_uv: (V, K, 2) pixels (NaN = not visible in that view).
    Returns:
        tracks_world: (V, F, K, 3) float32 metres (NaN where not recovered); valid: (V, F, K) bool.
    """
    _check_cameras(cameras)
    num_views = len(cameras)
    if np.shape(pseudo_videos)[0] != num_views or np.shape(depth_ranges) != (num_views, 2) or np.shape(anchors_uv)[0] != num_views:
        raise ValueError(f"need V={num_views} pseudo videos, depth ranges and anchor sets, got shapes "
                         f"{np.shape(pseudo_videos)}, {np.shape(depth_ranges)}, {np.shape(anchors_uv)}")
    decoded = [decode_pseudo_video(pseudo_videos[i], cam, depth_ranges[i], anchors_uv[i], max_anchor_error,
                                   foreground_threshold) for i, cam in enumerate(cameras)]
    return np.stack([d[0] for d in decoded]), np.stack([d[1] for d in decoded])
