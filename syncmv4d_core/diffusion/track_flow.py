"""Flow matching on 4D point tracks for the Diffusion Points Aligner (paper Sec. 3.4, Eq. 4).

The flow lives in the world frame (metres) but at the scale of the scene: every sample gets a
centre ``c`` (B, 3) and a scale ``s`` (B,) from its *coarse* tracks (never from the ground
truth, which inference does not have), and its noise is ``eps = c + s * n`` with n ~ N(0, I).
With the rectified-flow path ``M_t = (1 - t) M + t eps`` and target ``v = eps - M``, the one-step
estimate ``M_bar = M_t - t v`` recovers M exactly when the predicted v equals the target.

The loss (Eq. 4) is ``MSE(v_hat, v) + Chamfer(M_bar, M)`` per frame, both measured in units of
the sample scale (divided by ``s`` before squaring) so that its size does not depend on how big
the scene is.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
from torch import Tensor

from syncmv4d_core.diffusion.flow import estimate_x0, velocity_target

logger = logging.getLogger(__name__)

MIN_SCALE = 0.01
"""Smallest sample scale, metres: a coarse point set tighter than 1 cm RMS is degenerate for a
hand-object scene (hands alone span ~0.2 m)."""

_CHAMFER_CHUNK = 1 << 24  # distance-matrix entries per chunk (64 MiB in fp32)


def coarse_track_frame(coarse_tracks: Tensor, coarse_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample centre and scale of the coarse tracks.

    Args:
        coarse_tracks: (B, V, F, Kc, 3) per-view coarse tracks, metres, world frame.
        coarse_mask: (B, V, F, Kc) bool, True where a coarse point is valid.

    Returns:
        centre: (B, 3) mean of the valid coarse points, metres.
        scale: (B,) RMS distance of the valid coarse points from the centre, metres, at least
            :data:`MIN_SCALE` (a warning is logged when the floor applies).
    """
    if coarse_tracks.ndim != 5 or coarse_tracks.shape[-1] != 3:
        raise ValueError(f"coarse_tracks must be (B, V, F, Kc, 3), got {tuple(coarse_tracks.shape)}")
    if coarse_mask.shape != coarse_tracks.shape[:-1]:
        raise ValueError(
            f"coarse_mask shape {tuple(coarse_mask.shape)} must be {tuple(coarse_tracks.shape[:-1])}"
        )
    points = coarse_tracks.flatten(1, 3)  # (B, V*F*Kc, 3)
    weight = coarse_mask.flatten(1).to(points.dtype)  # (B, V*F*Kc)
    count = weight.sum(1)
    if bool((count == 0).any()):
        empty = torch.nonzero(count == 0).flatten().tolist()
        raise ValueError(f"samples {empty} have no valid coarse point")
    centre = (points * weight[..., None]).sum(1) / count[:, None]
    spread = ((points - centre[:, None]).square().sum(-1) * weight).sum(1) / count
    scale = spread.sqrt()
    if bool((scale < MIN_SCALE).any()):
        logger.warning("coarse tracks spread %s m < %s m; using %s m", scale.tolist(), MIN_SCALE, MIN_SCALE)
        scale = scale.clamp_min(MIN_SCALE)
    return centre, scale


def sample_track_noise(
    shape: tuple[int, ...], centre: Tensor, scale: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Noise ``eps = c + s * n`` for tracks of the given shape.

    Args:
        shape: (B, F, K, 3).
        centre: (B, 3) metres.
        scale: (B,) metres.
        generator: optional torch generator.

    Returns:
        (B, F, K, 3) noise in metres, world frame.
    """
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"shape must be (B, F, K, 3), got {shape}")
    n = torch.randn(shape, generator=generator, device=centre.device, dtype=centre.dtype)
    return centre[:, None, None] + scale[:, None, None, None] * n


def chamfer_distance(a: Tensor, b: Tensor) -> Tensor:
    """Symmetric Chamfer distance between point sets, squared-distance form.

    ``mean_x min_y |x - y|^2 + mean_y min_x |x - y|^2``, computed in chunks over the leading
    dimensions so the distance matrices stay below ~64 MiB.

    Args:
        a: (..., N, 3) points.
        b: (..., M, 3) points, same leading shape.

    Returns:
        (...) Chamfer distance in squared input units.
    """
    if a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"point sets {tuple(a.shape)} and {tuple(b.shape)} do not match")
    lead = a.shape[:-2]
    a_flat, b_flat = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    chunk = max(1, _CHAMFER_CHUNK // max(1, a.shape[-2] * b.shape[-2]))
    parts = []
    for start in range(0, a_flat.shape[0], chunk):
        dist = torch.cdist(a_flat[start : start + chunk], b_flat[start : start + chunk]).square()
        parts.append(dist.min(-1).values.mean(-1) + dist.min(-2).values.mean(-1))
    return torch.cat(parts).reshape(lead)


class DPALoss(NamedTuple):
    """Eq. 4 terms, each a scalar tensor in units of the sample scale squared."""

    total: Tensor
    velocity_mse: Tensor
    chamfer: Tensor


def dpa_loss(
    velocity: Tensor,
    noisy_tracks: Tensor,
    tracks: Tensor,
    noise: Tensor,
    t: Tensor,
    scale: Tensor,
    chamfer_weight: float = 1.0,
) -> DPALoss:
    """Eq. 4: ``MSE(v_hat, eps - M) + Chamfer(M_t - t v_hat, M)`` per frame.

    Args:
        velocity: (B, F, K, 3) predicted velocity v_hat, metres per unit t.
        noisy_tracks: (B, F, K, 3) M_t = (1 - t) M + t eps, metres.
        tracks: (B, F, K, 3) ground-truth tracks M, metres.
        noise: (B, F, K, 3) eps, metres.
        t: (B,) timesteps in [0, 1].
        scale: (B,) sample scale from :func:`coarse_track_frame`, metres.
        chamfer_weight: weight of the Chamfer term (1 in the paper).

    Returns:
        DPALoss(total, velocity_mse, chamfer); both terms divided by scale^2.
    """
    if not velocity.shape == noisy_tracks.shape == tracks.shape == noise.shape:
        raise ValueError(
            f"velocity {tuple(velocity.shape)}, noisy_tracks {tuple(noisy_tracks.shape)}, tracks "
            f"{tuple(tracks.shape)} and noise {tuple(noise.shape)} must have the same shape"
        )
    inv_scale2 = scale.reciprocal().square()  # (B,)
    target = velocity_target(tracks, noise)
    velocity_mse = ((velocity - target).square().mean((1, 2, 3)) * inv_scale2).mean()
    estimate = estimate_x0(noisy_tracks, velocity, t)  # M_bar = M_t - t v
    chamfer = (chamfer_distance(estimate, tracks).mean(1) * inv_scale2).mean()
    return DPALoss(velocity_mse + chamfer_weight * chamfer, velocity_mse, chamfer)
