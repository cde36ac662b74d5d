"""Sampling for MJD: schedulers, classifier-free guidance, TI2V reference imposition and the loop.

The scheduler owns the noise levels (sigmas, ``t = 1000 sigma``) and the update rule; MJD only maps
(latents, t, text) to velocities. One denoising step is ``mjd_denoise_step``; ``sample_mjd`` loops
over it. The full pipeline reuses the step and plugs its closed loop (decode the one-step motion
estimate, refine it with the points aligner, re-encode) in through ``guidance_fn``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

import torch

from .flow import estimate_x0

logger = logging.getLogger(__name__)

SCHEDULERS = ("unipc", "euler")

# guidance_fn(step, x0_motion_estimate (B, V, C, F', h, w), depth_range (B, V, 2) metres)
#     -> guidance latent (B, V, C, F', h, w) added to the motion input of the next step, or None.
GuidanceFn = Callable[[int, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


def make_scheduler(kind: str = "unipc", flow_shift: float = 5.0, num_train_timesteps: int = 1000):
    """A diffusers flow-matching scheduler.

    ``unipc``: ``UniPCMultistepScheduler`` with flow sigmas (Wan's default sampler, shift 5.0;
    3.0 suggested for 480p); ``euler``: ``FlowMatchEulerDiscreteScheduler`` (Eq. 2 steps).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if flow_shift <= 0:
        raise ValueError(f"flow_shift={flow_shift} must be > 0")
    if kind == "unipc":
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                       flow_shift=flow_shift, num_train_timesteps=num_train_timesteps)
    if kind == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=flow_shift, num_train_timesteps=num_train_timesteps)
    raise ValueError(f"unknown scheduler {kind!r}; choose one of {SCHEDULERS}")


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale (cond - uncond); scale 1 returns cond."""
    return uncond + scale * (cond - uncond)


def impose_reference(video_latents: torch.Tensor, ref_latents: torch.Tensor | None,
                     ref_mask: torch.Tensor | None) -> torch.Tensor:
    """Replace latent frame 0 by the reference latent where a view has one (Wan TI2V).

    video_latents: (B, V, C, F', h, w); ref_latents: (B, V, C, 1, h, w); ref_mask: (B, V) bool.
    """
    if ref_latents is None or ref_mask is None:
        return video_latents
    b, v, c, _, h, w = video_latents.shape
    if ref_latents.shape != (b, v, c, 1, h, w):
        raise ValueError(f"ref_latents must be (B, V, C, 1, h, w) = {(b, v, c, 1, h, w)}, "
                         f"got {tuple(ref_latents.shape)}")
    out = video_latents.clone()
    keep = ref_mask.to(out.device).bool()[:, :, None, None, None, None]
    out[:, :, :, :1] = torch.where(keep, ref_latents.to(out.dtype), out[:, :, :, :1])
    return out


@dataclass
class MJDSample:
    """Result of MJD sampling. Latents (B, V, C, F', h, w); depth_range (B, V, 2) metres.
    motion_latents and depth_range are None for a video-only MJD."""

    video_latents: torch.Tensor
    motion_latents: torch.Tensor | None
    depth_range: torch.Tensor | None


@dataclass
class MJDStepResult:
    """One denoising step: the latents after the scheduler update, the one-step clean estimates
    (x_0 = x_t - sigma v) of the input latents and the predicted depth range (B, V, 2)."""

    video_latents: torch.Tensor
    motion_latents: torch.Tensor | None
    video_x0: torch.Tensor
    motion_x0: torch.Tensor | None
    depth_range: torch.Tensor | None


def _twice(x: torch.Tensor | None) -> torch.Tensor | None:
    """Stack a batch with itself (conditional + unconditional halves)."""
    return None if x is None else torch.cat([x, x])


def guided_prediction(model, video, motion, timestep, text, uncond_text, ref_mask, motion_guidance,
                      guidance_scale: float):
    """MJD prediction with classifier-free guidance on the text (one batched 2B pass).

    The depth range is taken from the conditional branch (it is a regression, not a velocity).
    """
    if uncond_text is None or guidance_scale == 1.0:
        return model(video, motion, timestep, text, ref_mask, motion_guidance)
    if uncond_text.shape[0] != text.shape[0]:
        uncond_text = uncond_text.expand(text.shape[0], -1, -1)
    out = model(_twice(video), _twice(motion), _twice(timestep), torch.cat([text, uncond_text.to(text.dtype)]),
                _twice(ref_mask), _twice(motion_guidance))
    b = video.shape[0]
    video_v = classifier_free_guidance(out.video_velocity[:b], out.video_velocity[b:], guidance_scale)
    if out.motion_velocity is None:
        return type(out)(video_v, None, None)
    motion_v = classifier_free_guidance(out.motion_velocity[:b], out.motion_velocity[b:], guidance_scale)
    return type(out)(video_v, motion_v, out.depth_range[:b])


@torch.no_grad()
def mjd_denoise_step(model, video_scheduler, motion_scheduler, step: int, video_latents: torch.Tensor,
                     motion_latents: torch.Tensor | None, text: torch.Tensor, uncond_text: torch.Tensor | None,
                     ref_latents: torch.Tensor | None, ref_mask: torch.Tensor | None,
                     motion_guidance: torch.Tensor | None, guidance_scale: float) -> MJDStepResult:
    """Denoising step ``step`` (index into ``video_scheduler.timesteps``; both schedulers hold the
    same timesteps). The reference latent is imposed on the input and again on the output."""
    t = video_scheduler.timesteps[step]
    sigma = video_scheduler.sigmas[step].item()
    video_latents = impose_reference(video_latents, ref_latents, ref_mask)
    b = video_latents.shape[0]
    timestep = t.to(video_latents.device, torch.float32).expand(b)
    out = guided_prediction(model, video_latents, motion_latents, timestep, text, uncond_text, ref_mask,
                            motion_guidance, guidance_scale)
    video_x0 = estimate_x0(video_latents, out.video_velocity, sigma)
    video_next = video_scheduler.step(out.video_velocity, t, video_latents, return_dict=False)[0]
    video_next = impose_reference(video_next, ref_latents, ref_mask)
    if motion_latents is None:
        return MJDStepResult(video_next, None, video_x0, None, None)
    motion_x0 = estimate_x0(motion_latents, out.motion_velocity, sigma)
    motion_next = motion_scheduler.step(out.motion_velocity, t, motion_latents, return_dict=False)[0]
    return MJDStepResult(video_next, motion_next, video_x0, motion_x0, out.depth_range)


@torch.no_grad()
def sample_mjd(model, text: torch.Tensor, latent_shape: tuple[int, int, int, int, int],
               ref_latents: torch.Tensor | None = None, ref_mask: torch.Tensor | None = None,
               uncond_text: torch.Tensor | None = None, guidance_scale: float = 5.0, num_steps: int = 30,
               scheduler: str = "unipc", flow_shift: float = 5.0, generator: torch.Generator | None = None,
               callback: Callable[[int, int], None] | None = None,
               guidance_fn: GuidanceFn | None = None) -> MJDSample:
    """Generate V video latents, V motion latents and the depth ranges with MJD alone.

    text: (B, L, text_dim); uncond_text: (1 or B, L, text_dim) empty-text embedding (None: no CFG).
    latent_shape: (V, C, F', h, w). ref_latents: (B, V, C, 1, h, w), ref_mask (B, V) bool.
    generator seeds the initial noise (deterministic for a given seed).
    callback(step, total) is called after each step with step = 1..total.
    guidance_fn(step, x0_motion_estimate, depth_range) returns the guidance latent added to the
    motion input of the NEXT step (None: no guidance), e.g. the re-encoded aligner refinement.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    if len(latent_shape) != 5:
        raise ValueError(f"latent_shape must be (V, C, F', h, w), got {latent_shape}")
    device = text.device
    b = text.shape[0]
    if ref_latents is not None and ref_mask is None:
        ref_mask = torch.ones(b, latent_shape[0], dtype=torch.bool, device=device)
    video_scheduler = make_scheduler(scheduler, flow_shift)
    video_scheduler.set_timesteps(num_steps, device=device)
    motion_scheduler = copy.deepcopy(video_scheduler)
    shape = (b, *latent_shape)
    video = torch.randn(shape, generator=generator, device=device)
    motion = torch.randn(shape, generator=generator, device=device) if model.config.motion else None
    guidance, depth_range = None, None
    total = len(video_scheduler.timesteps)
    for step in range(total):
        res = mjd_denoise_step(model, video_scheduler, motion_scheduler, step, video, motion, text, uncond_text,
                               ref_latents, ref_mask, guidance, guidance_scale)
        video, motion, depth_range = res.video_latents, res.motion_latents, res.depth_range
        if guidance_fn is not None and motion is not None and step + 1 < total:
            guidance = guidance_fn(step, res.motion_x0, depth_range)
        if callback is not None:
            callback(step + 1, total)
    return MJDSample(video, motion, depth_range)


__all__ = ["SCHEDULERS", "GuidanceFn", "make_scheduler", "classifier_free_guidance", "impose_reference",
           "MJDSample", "MJDStepResult", "guided_prediction", "mjd_denoise_step", "sample_mjd"]
