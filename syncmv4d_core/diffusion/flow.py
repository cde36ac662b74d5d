"""Rectified flow (paper Sec. 3.1) and the MJD objective (Eq. 3).

Convention (Wan / diffusers flow matching): t in [0, 1] is the noise level (sigma),
x_t = (1 - t) x_0 + t eps, velocity v = eps - x_0, and one Euler step x_{t'} = x_t + (t' - t) v.
Both networks (MJD and DPA) take the scheduler's timestep ``model_timestep(t)`` =
NUM_TRAIN_TIMESTEPS * t, never sigma; ``mjd_velocity`` is the one place that turns MJD's output
into a velocity (the skip preconditioning of the tiny presets). The noising, target and estimate functions work on tensors of any shape
(latents, world-space point tracks): ``t`` is (N,) for a batch of N samples or any shape that
broadcasts against the leading dimensions of ``x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_TRAIN_TIMESTEPS = 1000  # model timestep = 1000 * t (Wan, diffusers flow-matching schedulers)


def model_timestep(t: torch.Tensor) -> torch.Tensor:
    """The timestep both networks take for noise level t in [0, 1] (a scheduler's ``timesteps``)."""
    return NUM_TRAIN_TIMESTEPS * t


def _expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t (N,) or leading-dims shape -> broadcastable against x (N, ...), in x's dtype."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.ndim > x.ndim:
        raise ValueError(f"timestep shape {tuple(t.shape)} has more dims than the data {tuple(x.shape)}")
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's timestep shift: t' = shift t / (1 + (shift - 1) t). shift > 1 favours high noise."""
    if shift <= 0:
        raise ValueError(f"shift={shift} must be > 0")
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(n: int, shift: float = 1.0, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """n noise levels t in [0, 1): uniform, then shifted (Wan's training uses shift = 5 at 720p)."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    u = torch.rand(n, generator=generator, device=device)
    return shift_timesteps(u, shift)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t eps. x0, noise (N, ...); t (N,) in [0, 1]."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} differ in shape")
    t = _expand(t, x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Ground-truth velocity v = dx_t/dt = eps - x_0 (same shape as x0)."""
    return noise - x0


def estimate_x0(x_t: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One-step clean estimate x_0 = x_t - t v (the ``M_bar = M_t - t v`` of the DPA)."""
    return x_t - _expand(t, x_t) * velocity


def euler_step(x_t: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """Eq. 2: x_{t_next} = x_t + (t_next - t) v."""
    return x_t + (_expand(t_next, x_t) - _expand(t, x_t)) * velocity


def preconditioned_velocity(x_t: torch.Tensor, raw: torch.Tensor, t: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """Rectified-flow velocity with a skip from the noisy input (EDM-style preconditioning).

    For x_t = (1 - t) x_0 + t eps with x_0 of standard deviation sigma_data, the best linear
    predictor of v = eps - x_0 from x_t is c_skip x_t, c_skip = (t - (1 - t) s^2) / D with
    D = (1 - t)^2 s^2 + t^2; the network output F is scaled by c_out = s / sqrt(D) (the residual's
    standard deviation), so F targets unit variance at every t.

    x_t, raw: (B, V, C, F', h, w); t: broadcastable noise levels in [0, 1].
    """
    s2 = sigma_data ** 2
    t = t.to(x_t.dtype)
    denom = (1 - t) ** 2 * s2 + t ** 2
    c_skip = (t - (1 - t) * s2) / denom
    c_out = sigma_data / denom.sqrt()
    return c_skip * x_t + c_out * raw


MIN_SAMPLE_T = 0.05
"""Smallest noise level dividing an x_0 prediction into a velocity (JiT clips there too): below it
the velocity is damped instead of amplifying the prediction error by 1 / t."""


def sample_to_velocity(x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = (x_t - x_0) / max(t, MIN_SAMPLE_T) for a predicted clean sample x_0 (t broadcastable)."""
    return (x_t - x0) / t.to(x_t.dtype).clamp_min(MIN_SAMPLE_T)


def mjd_velocity(mjd, video_latents: torch.Tensor, motion_latents: torch.Tensor | None, timestep: torch.Tensor,
                 text: torch.Tensor, ref_mask: torch.Tensor | None = None,
                 motion_guidance: torch.Tensor | None = None, camera: torch.Tensor | None = None):
    """MJD's prediction as velocities: the one call site of the MJD network for sampling and training.

    ``mjd.config`` says what the network output F means:

    * ``prediction_type="velocity"``: F is v (with ``sigma_data`` set: a preconditioned residual,
      ``v = c_skip x_t + c_out F``);
    * ``prediction_type="sample"``: F is the clean latent x_0 (plus the reference latent repeated
      over the latent frames where ``video_from_reference`` and the view has one), and
      ``v = (x_t - x_0) / max(t, MIN_SAMPLE_T)``.

    Frame 0 of a view with a reference image is at noise level 0.

    Args:
        mjd: an ``MJDTransformer``; the other arguments as its ``forward`` (timestep (B,) from
            ``model_timestep``; video / motion latents (B, V, C, F', h, w); camera (B, V, 16)
            ``models.mjd.camera_features``).
    Returns:
        its ``MJDOutput`` with video / motion velocities (B, V, C, F', h, w).
    """
    out = mjd(video_latents, motion_latents, timestep, text, ref_mask, motion_guidance, camera)
    cfg = mjd.config
    if cfg.sigma_data is None and cfg.prediction_type == "velocity":
        return out
    b, v, _, f = video_latents.shape[:4]
    t = (timestep / NUM_TRAIN_TIMESTEPS).view(b, 1, 1, 1, 1, 1)
    t_video = t.expand(b, v, 1, f, 1, 1).clone()
    if ref_mask is not None:
        t_video[:, :, :, 0] = torch.where(ref_mask.view(b, v, 1, 1, 1), 0.0, t_video[:, :, :, 0])
    if cfg.prediction_type == "sample":
        video_x0 = out.video_velocity
        if cfg.video_from_reference and ref_mask is not None:
            keep = ref_mask.view(b, v, 1, 1, 1, 1).to(video_x0.dtype)
            video_x0 = video_x0 + keep * video_latents[:, :, :, :1]  # frame 0 holds the reference latent
        video_velocity = sample_to_velocity(video_latents, video_x0, t_video)
        motion_velocity = None if out.motion_velocity is None else sample_to_velocity(
            motion_latents, out.motion_velocity, t)
    else:
        video_velocity = preconditioned_velocity(video_latents, out.video_velocity, t_video, cfg.sigma_data)
        motion_velocity = None if out.motion_velocity is None else preconditioned_velocity(
            motion_latents, out.motion_velocity, t, cfg.sigma_data)
    return type(out)(video_velocity, motion_velocity, out.depth_range)


def video_loss_mask(ref_mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """(B, V, 1, F', 1, 1) float mask for video latents (B, V, C, F', h, w): 0 on frame 0 of views
    whose frame 0 is the reference latent (it is given, not generated, as in Wan TI2V)."""
    b, v, _, f = shape[:4]
    mask = torch.ones(b, v, 1, f, 1, 1)
    if ref_mask is not None:
        if tuple(ref_mask.shape) != (b, v):
            raise ValueError(f"ref_mask must be (B, V) = ({b}, {v}), got {tuple(ref_mask.shape)}")
        mask[:, :, 0, 0] = (~ref_mask.bool().cpu()).float()[..., None, None]  # (B, V, 1, 1)
    return mask


def mjd_loss(video_velocity: torch.Tensor, video_target: torch.Tensor, motion_velocity: torch.Tensor | None,
             motion_target: torch.Tensor | None, depth_range: torch.Tensor | None,
             depth_range_target: torch.Tensor | None, ref_mask: torch.Tensor | None = None,
             weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, torch.Tensor]:
    """Eq. 3: L = MSE(v_V) + MSE(v_M) + MSE(s), each a mean over its elements.

    video_velocity/target: (B, V, C, F', h, w); frame-0 latents of views with a reference
        (ref_mask (B, V) True) are excluded from the video term.
    motion_velocity/target: (B, V, C, F', h, w) or None (video-only ablation).
    depth_range/target: (B, V, 2) metres or None.
    Returns {"loss", "video", "motion", "scale"} (absent terms are 0).
    """
    if video_velocity.shape != video_target.shape:
        raise ValueError(f"video velocity {tuple(video_velocity.shape)} != target {tuple(video_target.shape)}")
    mask = video_loss_mask(ref_mask, video_velocity.shape).to(video_velocity.device)
    sq = (video_velocity.float() - video_target.float()) ** 2 * mask
    denom = mask.expand_as(sq).sum().clamp_min(1.0)
    terms = {"video": sq.sum() / denom}
    zero = video_velocity.new_zeros((), dtype=torch.float32)
    if (motion_velocity is None) != (motion_target is None):
        raise ValueError("motion_velocity and motion_target must both be given or both be None")
    terms["motion"] = zero if motion_velocity is None else F.mse_loss(motion_velocity.float(), motion_target.float())
    if (depth_range is None) != (depth_range_target is None):
        raise ValueError("depth_range and depth_range_target must both be given or both be None")
    terms["scale"] = zero if depth_range is None else F.mse_loss(depth_range.float(), depth_range_target.float())
    terms["loss"] = weights[0] * terms["video"] + weights[1] * terms["motion"] + weights[2] * terms["scale"]
    return terms


__all__ = ["NUM_TRAIN_TIMESTEPS", "MIN_SAMPLE_T", "model_timestep", "preconditioned_velocity", "sample_to_velocity",
           "mjd_velocity", "shift_timesteps", "sample_timesteps", "add_noise", "velocity_target",
           "estimate_x0", "euler_step", "video_loss_mask", "mjd_loss"]
