"""The closed loop between MJD and DPA (paper Sec. 3.5): one implementation for sampling and training.

At every denoising step (``pipeline.SyncMV4DPipeline``) and in Algorithm 1 (``training.objectives``):

1. ``read_depth_ranges``: the scale head's output s (B, V, 2) is brought to a physical interval
   (the one place the clamp happens).
2. ``decode_coarse_tracks`` (``Denorm & Dec``): motion latents -> pseudo videos -> anchors read
   from frame 0 -> per-view coarse world tracks M_hat with the depth ranges s.
3. ``refine_tracks``: DPA's velocity at the current track state M_t and its clean estimate
   M_bar = M_t - t v (the aligned world tracks).
4. ``encode_track_guidance`` (``Proj & Norm`` + encode): M_bar reprojected into per-view pseudo
   videos and encoded; added to MJD's motion input at the next step.

``model`` is a ``models.syncmv4d.SyncMV4DModel`` (its ``dpa``, ``encode_videos``,
``decode_latents``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .. import pseudo_video
from ..cameras import Camera
from .flow import estimate_x0, model_timestep
from .track_flow import coarse_track_frame, sample_track_noise

# Predicted depth ranges are clamped to this physical interval (metres) before decoding: an
# untrained scale head can output anything, and decoding needs 0 < zmin < zmax.
DEPTH_LIMITS = (0.05, 20.0)


def read_depth_ranges(depth_ranges: Tensor) -> Tensor:
    """(..., 2) predicted (zmin, zmax) metres -> sorted, inside DEPTH_LIMITS, at least
    ``pseudo_video.MIN_DEPTH_SPAN`` wide."""
    lo = depth_ranges.min(-1).values.clamp(*DEPTH_LIMITS)
    hi = torch.maximum(depth_ranges.max(-1).values.clamp(*DEPTH_LIMITS), lo + pseudo_video.MIN_DEPTH_SPAN)
    return torch.stack([lo, hi], -1)


@torch.no_grad()
def decode_coarse_tracks(model, motion_latents: Tensor, depth_ranges: Tensor,
                         cameras: list[list[Camera]]) -> tuple[Tensor, Tensor]:
    """Per-view coarse tracks from motion latents (``Denorm & Dec``).

    Args:
        motion_latents: (B, V, C, F', h, w).
        depth_ranges: (B, V, 2) metres, physical (``read_depth_ranges`` or ground truth).
        cameras: B lists of V cameras.
    Returns:
        coarse: (B, V, F, Kc, 3) world tracks, metres (0 where invalid), Kc = most anchors in a view.
        mask: (B, V, F, Kc) bool validity.
    """
    videos = model.decode_latents(motion_latents).detach().float().cpu().numpy()  # (B, V, F, H, W, 3)
    ranges = depth_ranges.detach().float().cpu().numpy()
    per_sample = []
    for b, cams in enumerate(cameras):
        anchors = [pseudo_video.anchors_from_pseudo_frame0(videos[b, v, 0]) for v in range(len(cams))]
        width = max(1, max(a.shape[0] for a in anchors))
        padded = np.full((len(cams), width, 2), np.nan, dtype=np.float32)
        for v, a in enumerate(anchors):
            padded[v, : a.shape[0]] = a
        per_sample.append(pseudo_video.decode_views(videos[b], cams, ranges[b], padded))
    kc = max(t.shape[2] for t, _ in per_sample)
    coarse = np.zeros((len(cameras), *per_sample[0][0].shape[:2], kc, 3), dtype=np.float32)
    mask = np.zeros(coarse.shape[:-1], dtype=bool)
    for b, (t, m) in enumerate(per_sample):
        coarse[b, :, :, : t.shape[2]] = np.nan_to_num(t)
        mask[b, :, :, : m.shape[2]] = m
    device = motion_latents.device
    return torch.from_numpy(coarse).to(device), torch.from_numpy(mask).to(device)


def initial_track_state(coarse: Tensor, mask: Tensor, shape: tuple[int, int, int, int],
                        generator: torch.Generator | None = None) -> Tensor:
    """DPA's starting point M_1: noise (B, F, K, 3) metres at the coarse tracks' centre and scale."""
    centre, scale = coarse_track_frame(coarse, mask)
    return sample_track_noise(shape, centre.cpu(), scale.cpu(), generator).to(coarse.device)


class Refinement(NamedTuple):
    """DPA's velocity v (B, F, K, 3) metres per unit t, clean estimate M_bar = M_t - t v (metres) and,
    for a DPA with a label head, label logits (B, K, num_labels) (else None)."""

    velocity: Tensor
    tracks: Tensor
    label_logits: Tensor | None


def refine_tracks(model, track_state: Tensor, coarse: Tensor, mask: Tensor, sigma: Tensor) -> Refinement:
    """One DPA evaluation: ``v = DPA(M_t, M_hat, t)``, ``M_bar = M_t - t v``.

    Args:
        track_state: (B, F, K, 3) M_t, metres; coarse (B, V, F, Kc, 3), mask (B, V, F, Kc);
        sigma: (B,) noise level t in [0, 1].
    """
    if model.dpa.config.num_labels:
        velocity, logits = model.dpa(track_state, coarse, model_timestep(sigma), mask, return_labels=True)
    else:
        velocity, logits = model.dpa(track_state, coarse, model_timestep(sigma), mask), None
    return Refinement(velocity, estimate_x0(track_state, velocity, sigma), logits)


@torch.no_grad()
def encode_track_guidance(model, tracks_world: Tensor, depth_ranges: Tensor,
                          cameras: list[list[Camera]]) -> Tensor:
    """``Proj & Norm`` + encode: world tracks -> per-view pseudo videos -> motion latents.

    Args:
        tracks_world: (B, F, K, 3) metres; depth_ranges: (B, V, 2) metres, physical; cameras: B lists of V.
    Returns:
        (B, V, C, F', h, w) latents of the reprojected tracks.
    """
    tracks = tracks_world.detach().float().cpu().numpy()
    ranges = depth_ranges.detach().float().cpu().numpy()
    videos = np.stack([pseudo_video.encode_views(tracks[b], cams, ranges[b]) for b, cams in enumerate(cameras)])
    return model.encode_videos(torch.from_numpy(videos).to(tracks_world.device))


__all__ = ["DEPTH_LIMITS", "read_depth_ranges", "decode_coarse_tracks", "initial_track_state", "Refinement",
           "refine_tracks", "encode_track_guidance"]
