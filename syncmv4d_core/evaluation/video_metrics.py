"""Video measures of issue 10, item 4: does the video keep the scene, and does it show the hand?

Both compare a predicted video with the ground truth of the same cameras (uint8 RGB,
(V, F, H, W, 3)); frame 0 is left out of both, because generation imposes the reference image
there (every method, and the copied-reference baseline, would score its frame 0 perfectly).

Static-pixel PSNR (``static_psnr``)
    A pixel is *static* if its ground-truth colour never changes by more than
    ``STATIC_CHANGE_LEVELS`` 8-bit levels (any channel) from frame 0 over the clip. PSNR is
    ``10 log10(255^2 / MSE)`` with the MSE pooled over every static pixel, channel, view and
    frame >= 1 (capped at ``PSNR_CAP_DB`` for identical videos).

Hand-pixel IoU (``hand_presence``)
    True hand region: the pixels where the renderer's front-most surface is a HAND-labelled part
    (palm and fingers; the sleeve is not hand, as in the tracks' labels), rendered again from the
    synthetic scene's seed by ``render_hand_masks``. Hand mask of any video: a per-scene colour
    classifier (``HandColourModel``) fitted on the ground-truth video and its true hand region:
    a pixel is hand when, in a 32^3-bin RGB histogram smoothed by one bin, hand pixels outnumber
    non-hand pixels at its colour. The classifier needs nothing from the model (no internals, no
    tracks). Per (view, frame >= 1) the IoU of that mask with the true hand region is taken where
    either is non-empty, and averaged. Reported with two references through the same measure:
    the ground-truth video itself (the measure's ceiling: colour alone does not separate skin
    from every skin-coloured table or object pixel) and the copied-reference video (frame 0
    repeated: the hand stays where it started).
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.spatial import cKDTree

from ..cameras import Camera
from ..scene import HAND, Scene

STATIC_CHANGE_LEVELS = 6     # a pixel is static if max_t |I_t - I_0| <= this many 8-bit levels (all channels)
PSNR_CAP_DB = 100.0          # PSNR of identical pixels
HAND_MARGIN_LEVELS = 12.0    # a pixel is hand if nearer the hand colours than the hand-free render by this, 8-bit levels
FIRST_FRAME = 1              # frames before this are left out (frame 0 is the imposed reference)


def _check_videos(*videos: np.ndarray) -> None:
    shapes = {v.shape for v in videos}
    if len(shapes) != 1:
        raise ValueError(f"videos must have the same shape, got {sorted(shapes)}")
    v = videos[0]
    if v.ndim != 5 or v.shape[-1] != 3 or v.dtype != np.uint8:
        raise ValueError(f"videos must be (V, F, H, W, 3) uint8, got {v.shape} {v.dtype}")
    if v.shape[1] <= FIRST_FRAME:
        raise ValueError(f"videos need more than {FIRST_FRAME} frame(s), got {v.shape[1]}")


# ---------------------------------------------------------------------------------- static PSNR
def static_pixel_mask(gt_videos: np.ndarray, levels: int = STATIC_CHANGE_LEVELS) -> np.ndarray:
    """(V, H, W) bool: pixels whose true colour stays within ``levels`` of frame 0 in every frame.

    Args:
        gt_videos: (V, F, H, W, 3) uint8 ground-truth videos.
    """
    _check_videos(gt_videos)
    change = np.abs(gt_videos.astype(np.int16) - gt_videos[:, :1].astype(np.int16)).max(axis=(1, 4))
    return change <= levels


def static_psnr(pred_videos: np.ndarray, gt_videos: np.ndarray, levels: int = STATIC_CHANGE_LEVELS) -> dict:
    """PSNR over the pixels that are static in the truth, frames >= 1 (module docstring).

    Args:
        pred_videos, gt_videos: (V, F, H, W, 3) uint8 of the same cameras.
        levels: static threshold, 8-bit levels.
    Returns:
        {"psnr_static_db": dB (NaN if no pixel is static), "static_fraction": share of the
         (view, pixel) positions that are static, in [0, 1]}.
    """
    _check_videos(pred_videos, gt_videos)
    static = static_pixel_mask(gt_videos, levels)                                    # (V, H, W)
    if not static.any():
        return {"psnr_static_db": float("nan"), "static_fraction": 0.0}
    diff = pred_videos[:, FIRST_FRAME:].astype(np.float64) - gt_videos[:, FIRST_FRAME:]  # (V, F-1, H, W, 3)
    sq = (diff ** 2).mean(axis=-1)                                                   # (V, F-1, H, W)
    mse = float(sq.transpose(1, 0, 2, 3)[:, static].mean())
    psnr = PSNR_CAP_DB if mse <= 255.0 ** 2 * 10 ** (-PSNR_CAP_DB / 10) else 10.0 * np.log10(255.0 ** 2 / mse)
    return {"psnr_static_db": float(psnr), "static_fraction": float(static.mean())}


# ---------------------------------------------------------------------------------- true hand region
@contextlib.contextmanager
def _replaced(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def render_hand_truth(gt: Scene, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The true hand region of a synthetic scene's views and the views without the hand, rendered again.

    The scene is regenerated with ``data.synthetic.generate_scene`` (same seed, frames, image size
    and split, so the same layout, motion and cameras) and its surface samples are splatted with
    the renderer's z-buffer (``render.splat``, the table's ray-cast depth as background) carrying
    a hand flag instead of a colour: a pixel is hand where the front-most surface is a HAND part.
    The same samples without the HAND parts give the hand-free videos (what each pixel would show
    if palm and fingers were not there; the sleeve stays).

    Args:
        gt: a scene written by the synthetic generator (``meta`` holds seed, action, tool,
            target, split), any subset of its cameras, at the size it was rendered at.
        verify: also re-render the colour videos of ``gt``'s cameras and require them to match
            ``gt.videos`` (catches a scene resized or generated with other settings).
    Returns:
        masks (V, F, H, W) bool and hand-free videos (V, F, H, W, 3) uint8, in ``gt.cameras`` order.
    Raises:
        ValueError if ``gt`` is not a synthetic scene or cannot be reproduced.
    """
    from ..data import render as R
    from ..data import synthetic as S

    meta = gt.meta or {}
    if not str(meta.get("generator", "")).startswith("syncmv4d.synthetic") or "seed" not in meta:
        raise ValueError("the true hand region needs a synthetic ground truth (meta with generator and seed)")
    H, W = gt.image_size
    cfg = S.SynthConfig(num_frames=gt.num_frames, height=H, width=W, num_points=max(gt.num_points, 1))
    captured: dict = {}

    def capture(cameras, samples, poses, table, light_dir):
        captured.update(cameras=cameras, samples=samples, poses=poses, table=table, light=np.asarray(light_dir, np.float32))
        return (np.zeros((len(cameras), poses.shape[0], H, W, 3), np.uint8),
                np.zeros((len(cameras), poses.shape[0], H, W), np.float32))

    triplet = (meta.get("action"), meta.get("tool"), meta.get("target"))
    with _replaced(S, "render_views", capture):
        again = S.generate_scene(int(meta["seed"]), cfg, split=meta.get("split"))
        if (again.meta["action"], again.meta["tool"], again.meta["target"]) != triplet:  # a forced triplet
            again = S.generate_scene(int(meta["seed"]), cfg, triplet=triplet)
    by_name = {c.name: i for i, c in enumerate(captured["cameras"])}
    missing = [c.name for c in gt.cameras if c.name not in by_name]
    if missing:
        raise ValueError(f"cameras {missing} are not in the regenerated rig {sorted(by_name)}")
    cams: list[Camera] = [captured["cameras"][by_name[c.name]] for c in gt.cameras]
    for cam, ref in zip(cams, gt.cameras):
        if np.abs(cam.world_T_cam - ref.world_T_cam).max() > 1e-5 or np.abs(cam.K - ref.K).max() > 1e-3:
            raise ValueError(f"camera {ref.name}: the regenerated rig differs from the scene's (not reproducible)")
    samples, poses, table, light = captured["samples"], captured["poses"], captured["table"], captured["light"]
    part_label = np.array([S.PART_LABELS.get(p, 0) for p in range(S.NUM_PARTS)], np.uint8)
    is_hand = part_label[samples.part] == HAND                                        # (N,)
    if verify:
        videos, _ = R.render_views(cams, samples, poses, table, light)
        mismatch = float((np.abs(videos.astype(np.int16) - gt.videos).max(axis=-1) > 2).mean())
        if mismatch > 0.01:
            raise ValueError(f"the regenerated videos differ from the scene's in {100 * mismatch:.1f} % of the "
                             f"pixels: the scene was not rendered with the default synthetic settings")
    background = _render_without(cams, samples, poses, table, light, is_hand)
    points, normals = samples.transformed(poses)                                     # (F, N, 3)
    flags = np.ascontiguousarray(np.broadcast_to(is_hand.astype(np.float32)[None, :, None], points.shape))
    points, normals = np.ascontiguousarray(points), np.ascontiguousarray(normals)
    F = poses.shape[0]
    masks = np.zeros((len(cams), F, H, W), bool)
    no_shadow = np.zeros((F, 1, 1), np.float32)
    for i, cam in enumerate(cams):
        _, table_depth = R.render_table(cam, table, light, no_shadow)
        zbuf = np.where(table_depth > 0, table_depth, np.inf).astype(np.float32)[None].repeat(F, axis=0)
        image = np.zeros((F, H, W, 3), np.float32)
        R.splat(cam, points, normals, flags, zbuf, image)
        masks[i] = image[..., 0] > 0.5
    return masks, background


def _render_without(cams: list[Camera], samples, poses: np.ndarray, table, light: np.ndarray,
                    drop: np.ndarray) -> np.ndarray:
    """(V, F, H, W, 3) uint8 videos of the scene without the samples ``drop`` selects, but with the
    shadows of all samples on the table (the steps of ``render.render_views`` in that order, so a
    pixel the dropped parts never cover renders exactly as in the full video)."""
    from ..data import render as R

    points, normals = samples.transformed(poses)
    colors = R.shade(samples.colors, normals, light)
    shadows = R.shadow_maps(points[:, :: max(1, len(samples) // 8000)], light, table)
    keep = ~drop
    kept = [np.ascontiguousarray(a[:, keep]) for a in (points, normals, colors)]
    F, H, W = poses.shape[0], cams[0].height, cams[0].width
    out = np.empty((len(cams), F, H, W, 3), np.uint8)
    for i, cam in enumerate(cams):
        image, table_depth = R.render_table(cam, table, light, shadows)
        zbuf = np.where(table_depth > 0, table_depth, np.inf).astype(np.float32)[None].repeat(F, axis=0)
        R.splat(cam, *kept, zbuf, image)
        out[i] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------- hand mask of a video
def hand_mask(videos: np.ndarray, hand_colours: np.ndarray, background: np.ndarray,
              margin: float = HAND_MARGIN_LEVELS) -> np.ndarray:
    """Hand mask of any video: pixels whose colour is nearer the scene's hand colours than the hand-free scene.

    A pixel p of frame t is hand when ``min_s ||X_t(p) - s|| + margin < ||X_t(p) - B_t(p)||`` (RGB,
    8-bit levels): its colour is clearly closer to one of the true hand colours ``s`` (the colours
    of the true hand pixels in the ground-truth video) than to the colour the renderer gives that
    pixel with the hand removed. The margin keeps noise on a skin-coloured background from
    counting as hand. Nothing of the model is used.

    Args:
        videos: (V, F, H, W, 3) uint8 video to measure.
        hand_colours: (N, 3) true hand colours, 8-bit levels (N >= 1).
        background: (V, F, H, W, 3) uint8 hand-free renders of the same cameras.
        margin: 8-bit levels.
    Returns:
        (V, F, H, W) bool.
    """
    _check_videos(videos, background)
    if hand_colours.ndim != 2 or hand_colours.shape[1] != 3 or len(hand_colours) == 0:
        raise ValueError(f"hand_colours must be (N >= 1, 3), got {hand_colours.shape}")
    x = videos.reshape(-1, 3).astype(np.float64)
    to_hand, _ = cKDTree(np.unique(hand_colours.astype(np.float64), axis=0)).query(x)
    to_background = np.linalg.norm(x - background.reshape(-1, 3), axis=-1)
    return (to_hand + margin < to_background).reshape(videos.shape[:-1])


def hand_iou(pred_masks: np.ndarray, true_masks: np.ndarray) -> float:
    """Mean IoU over (view, frame >= 1) where the predicted or the true hand mask is non-empty.

    Args:
        pred_masks, true_masks: (V, F, H, W) bool.
    Returns:
        The mean IoU in [0, 1]; NaN if both masks are empty in every such frame.
    """
    if pred_masks.shape != true_masks.shape or pred_masks.ndim != 4:
        raise ValueError(f"masks must both be (V, F, H, W), got {pred_masks.shape} and {true_masks.shape}")
    p, t = pred_masks[:, FIRST_FRAME:], true_masks[:, FIRST_FRAME:]
    inter = (p & t).sum(axis=(2, 3))
    union = (p | t).sum(axis=(2, 3))
    seen = union > 0
    return float((inter[seen] / union[seen]).mean()) if seen.any() else float("nan")


def copied_reference(videos: np.ndarray) -> np.ndarray:
    """The copied-reference-frame baseline: frame 0 of every view repeated over the clip."""
    return np.broadcast_to(videos[:, :1], videos.shape).copy()


def hand_presence(pred_videos: np.ndarray, gt_videos: np.ndarray, true_masks: np.ndarray,
                  background: np.ndarray) -> dict:
    """Hand-pixel IoU of a predicted video, with the ceiling and the copied-reference baseline.

    Args:
        pred_videos, gt_videos: (V, F, H, W, 3) uint8 of the same cameras.
        true_masks: (V, F, H, W) bool true hand region, background: (V, F, H, W, 3) uint8
            hand-free videos (both from ``render_hand_truth``).
    Returns:
        {"hand_iou": the prediction's, "hand_iou_gt": the ground-truth video's (ceiling),
         "hand_iou_copy": the copied-reference video's (baseline), "hand_pixels": mean true hand
         pixels per (view, frame >= 1)}; IoUs in [0, 1].
    """
    _check_videos(pred_videos, gt_videos, background)
    if not true_masks.any():
        nan = float("nan")
        return {"hand_iou": nan, "hand_iou_gt": nan, "hand_iou_copy": nan, "hand_pixels": 0.0}
    colours = gt_videos[true_masks]                                                  # (N, 3)
    return {"hand_iou": hand_iou(hand_mask(pred_videos, colours, background), true_masks),
            "hand_iou_gt": hand_iou(hand_mask(gt_videos, colours, background), true_masks),
            "hand_iou_copy": hand_iou(hand_mask(copied_reference(gt_videos), colours, background), true_masks),
            "hand_pixels": float(true_masks[:, FIRST_FRAME:].sum(axis=(2, 3)).mean())}
