"""Sampling for MJD: schedulers, classifier-free guidance, TI2V reference imposition, one step.

The scheduler owns the noise levels (sigmas, timesteps = ``flow.model_timestep(sigma)``) and the
update rule; MJD only maps (latents, timestep, text) to a prediction, turned into velocities by
``flow.mjd_velocity``. One denoising step is ``mjd_denoise_step``; the loop around it, with the
closed loop, is ``pipeline.SyncMV4DPipeline``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .flow import estimate_x0, mjd_velocity

logger = logging.getLogger(__name__)

SCHEDULERS = ("unipc", "euler")

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
                      guidance_scale: float, camera: torch.Tensor | None = None):
    """MJD prediction with classifier-free guidance on the text (one batched 2B pass).

    The depth range is taken from the conditional branch (it is a regression, not a velocity).
    """
    if uncond_text is None or guidance_scale == 1.0:
        return mjd_velocity(model, video, motion, timestep, text, ref_mask, motion_guidance, camera)
    if uncond_text.shape[0] != text.shape[0]:
        uncond_text = uncond_text.expand(text.shape[0], -1, -1)
    out = mjd_velocity(model, _twice(video), _twice(motion), _twice(timestep),
                       torch.cat([text, uncond_text.to(text.dtype)]), _twice(ref_mask), _twice(motion_guidance),
                       _twice(camera))
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
                     motion_guidance: torch.Tensor | None, guidance_scale: float,
                     camera: torch.Tensor | None = None) -> MJDStepResult:
    """Denoising step ``step`` (index into ``video_scheduler.timesteps``; both schedulers hold the
    same timesteps). The reference latent is imposed on the input and again on the output; ``camera``
    (B, V, 16) is ``models.mjd.camera_features`` of the views."""
    t = video_scheduler.timesteps[step]
    sigma = video_scheduler.sigmas[step].item()
    video_latents = impose_reference(video_latents, ref_latents, ref_mask)
    b = video_latents.shape[0]
    timestep = t.to(video_latents.device, torch.float32).expand(b)
    out = guided_prediction(model, video_latents, motion_latents, timestep, text, uncond_text, ref_mask,
                            motion_guidance, guidance_scale, camera)
    video_x0 = estimate_x0(video_latents, out.video_velocity, sigma)
    video_next = video_scheduler.step(out.video_velocity, t, video_latents, return_dict=False)[0]
    video_next = impose_reference(video_next, ref_latents, ref_mask)
    if motion_latents is None:
        return MJDStepResult(video_next, None, video_x0, None, None)
    motion_x0 = estimate_x0(motion_latents, out.motion_velocity, sigma)
    motion_next = motion_scheduler.step(out.motion_velocity, t, motion_latents, return_dict=False)[0]
    return MJDStepResult(video_next, motion_next, video_x0, motion_x0, out.depth_range)


__all__ = ["SCHEDULERS", "make_scheduler", "classifier_free_guidance", "impose_reference", "MJDStepResult",
           "guided_prediction", "mjd_denoise_step"]
