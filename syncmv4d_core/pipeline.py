"""SyncMV4DPipeline: reference images + cameras + text -> multi-view videos and metric 4D tracks.

The sampling loop with the closed loop of the paper (Sec. 3.5), one iteration per scheduler step:

1. MJD denoising step (``diffusion.sampling.mjd_denoise_step``): the reference latents replace
   frame 0 of the video latents; the guidance latent of the previous iteration is added to the
   motion input; returns the updated latents, the one-step clean estimates and the depth ranges s.
2. The clean motion estimate is decoded into pseudo videos and, with s, into per-view coarse
   tracks in the world frame (``diffusion.closed_loop.decode_coarse_tracks``).
3. DPA advances its own rectified flow over the K world tracks, conditioned on the coarse tracks:
   v = DPA(M_t, M_hat, t); its clean estimate M_bar = M_t - t v (``closed_loop.refine_tracks``);
   Euler step to the next t.
4. M_bar is reprojected and normalised into per-view pseudo videos, encoded, and becomes the
   guidance latent of the next MJD step (``cycle=True``, ``closed_loop.encode_track_guidance``).

DPA's track state starts, at the first step whose coarse estimate has a valid point, from noise
placed at the coarse tracks' centre and scale (``closed_loop.initial_track_state``); before that, and when
``use_dpa=False``, MJD runs without guidance. Ablations: ``use_dpa=False`` fuses the per-view
decoded tracks directly; ``cycle=False`` runs DPA alongside MJD but never feeds it back;
``single_view=True`` generates each view on its own (no inter-view attention, no cross-view
coarse tracks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .cameras import Camera, stack_cameras
from .diffusion.closed_loop import (decode_coarse_tracks, encode_track_guidance, initial_track_state,
                                    read_depth_ranges, refine_tracks)
from .diffusion.flow import euler_step
from .diffusion.sampling import impose_reference, make_scheduler, mjd_denoise_step
from .models.codec import to_dtype
from .models.mjd import camera_features
from .models.syncmv4d import SyncMV4DModel
from .pseudo_video import to_uint8
from .scene import UNKNOWN, Scene
from .limits import MAX_FRAMES, check_num_frames, check_steps, check_text

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "tiny"

ProgressCallback = Callable[[int, int], None]


def fuse_coarse_tracks(coarse: np.ndarray, mask: np.ndarray, num_tracks: int, anchors: np.ndarray | None = None,
                       rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fuse per-view decoded tracks into one world track set without DPA (the "no DPA" ablation).

    Candidates are the (view, track) pairs decoded in frame 0; frames where a track was not
    decoded take the position of the nearest decoded frame. ``num_tracks`` candidates are drawn
    (all if fewer).

    Args:
        coarse: (V, F, Kc, 3) metres; mask: (V, F, Kc) bool.
    Returns:
        tracks: (F, K, 3) float32 metres; source: (K, 2) int (view, index in that view).
    """
    V, Fn, Kc = mask.shape
    views, idx = np.nonzero(mask[:, 0])
    if views.size == 0:
        raise ValueError("no track was decoded in frame 0 of any view: nothing to fuse")
    rng = rng or np.random.default_rng(0)
    pick = rng.choice(views.size, size=min(num_tracks, views.size), replace=False)
    views, idx = views[pick], idx[pick]
    tracks = coarse[views, :, idx].transpose(1, 0, 2).copy()  # (F, K, 3)
    valid = mask[views, :, idx].T  # (F, K)
    frames = np.arange(Fn)
    for k in np.flatnonzero(~valid.all(0)):
        good = np.flatnonzero(valid[:, k])
        nearest = good[np.abs(frames[:, None] - good[None]).argmin(1)]
        tracks[:, k] = tracks[nearest, k]
    return tracks.astype(np.float32), np.stack([views, idx], 1)


def track_anchors(tracks_world: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """Identity (view, u0, v0) of each track: the view where its frame-0 point is nearest the camera
    among those that see it in the image, and its pixel there; (-1, nan, nan) if no view does.

    Args:
        tracks_world: (F, K, 3) metres.
    Returns:
        (K, 3) float32.
    """
    K = tracks_world.shape[1]
    best = np.full(K, np.inf)
    out = np.full((K, 3), np.nan, dtype=np.float32)
    out[:, 0] = -1
    for v, cam in enumerate(cameras):
        uv, depth = cam.project(tracks_world[0])
        better = cam.in_image(uv, depth) & (depth < best)
        best[better] = depth[better]
        out[better, 0] = v
        out[better, 1:] = uv[better]
    return out


def steps_to_run(sigmas: torch.Tensor, final_sigma: float) -> int:
    """Denoising steps of a schedule (``sigmas``: num_steps + 1 noise levels) when sampling ends
    with the clean estimate of the first step whose next noise level is below ``final_sigma``."""
    num_steps = len(sigmas) - 1
    return next((i + 1 for i in range(num_steps) if 0 < sigmas[i + 1] < final_sigma), num_steps)


class SyncMV4DPipeline:
    """Generates a Scene from V reference images (some may be missing), cameras and a task text."""

    def __init__(self, model: SyncMV4DModel, fps: float = 8.0, dtype: torch.dtype | str | None = None,
                 cpu_offload: str | torch.device | None = None):
        """``dtype``: the MJD's and text encoder's weight dtype during generation (e.g. ``"bfloat16"``;
        None: as loaded). MJD keeps Wan's float32 modules (rope, timestep embedder, modulation tables,
        norms, gates) and runs under autocast; latents, schedulers, DPA and the VAE (its own
        ``codec.dtype``) stay float32. ``cpu_offload``: an execution device (``"cuda"``): every
        network lives on the CPU and moves to that device only while it runs (``enable_cpu_offload``)."""
        self.model = model.eval()
        self.fps = fps
        self.dtype = None if dtype is None else to_dtype(dtype)
        if self.dtype is not None:
            cast_networks(model, self.dtype)
        if cpu_offload is not None:
            enable_cpu_offload(model, cpu_offload)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str = "cpu") -> "SyncMV4DPipeline":
        """Load a checkpoint directory (``model.safetensors`` + ``config.json``); None: the built-in tiny model."""
        return cls(SyncMV4DModel.from_pretrained(DEFAULT_CHECKPOINT if path is None else path, device))

    # ------------------------------------------------------------------ input checks
    def check_inputs(self, images: list[np.ndarray | None], cameras: list[Camera], text: str, num_frames: int,
                     num_steps: int) -> None:
        """ValueError for any input that cannot be generated from, before any compute."""
        if not cameras:
            raise ValueError("need at least one camera")
        if len(images) != len(cameras):
            raise ValueError(f"got {len(images)} reference images for {len(cameras)} cameras; pass None for a missing view")
        max_views = self.model.mjd.config.max_views
        if len(cameras) > max_views:
            raise ValueError(f"{len(cameras)} views exceed the model's max_views={max_views}")
        sizes = {(c.height, c.width) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"all cameras must have the same image size, got {sorted(sizes)}")
        height, width = sizes.pop()
        for cam, image in zip(cameras, images):
            if image is None:
                continue
            if image.dtype != np.uint8 or image.shape != (height, width, 3):
                raise ValueError(f"reference image of camera {cam.name!r} must be ({height}, {width}, 3) uint8 RGB "
                                 f"like its camera, got {image.shape} {image.dtype}; resize the image and the camera "
                                 f"together (Camera.resize)")
        check_num_frames(num_frames, self.model.codec.temporal_compression, MAX_FRAMES)
        _, h, w = self.model.codec.latent_shape(num_frames, height, width)
        p = self.model.mjd.config.patch_size
        if h % p[1] or w % p[2]:
            raise ValueError(f"image size {width}x{height} must be a multiple of "
                             f"{self.model.codec.spatial_compression * p[1]} pixels")
        check_steps(num_steps)
        check_text(text)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(self, images: list[np.ndarray | None], cameras: list[Camera], text: str, num_frames: int = 9,
                 num_steps: int = 20, guidance_scale: float = 3.0, seed: int = 0,
                 callback: ProgressCallback | None = None, use_dpa: bool = True, cycle: bool = True,
                 single_view: bool = False, scheduler: str = "unipc", flow_shift: float | None = None,
                 final_sigma: float | None = None) -> Scene:
        """Generate V videos, V motion pseudo videos, per-view depth ranges and world tracks.

        Args:
            images: V reference frames (H, W, 3) uint8 RGB, None where a view has none.
            cameras: V cameras (same size as the images; world frame, metres).
            text: the task, e.g. "lift the cup".
            num_frames: F = 4n+1; num_steps: denoising steps; guidance_scale: text CFG scale.
            callback(step, total): called after every denoising step (total = the steps run, V times
                that when ``single_view``).
            final_sigma: end at the first step whose next noise level is below it, returning that
                step's clean estimate (None: the model's ``config["final_sigma"]``; 0: all steps).
        Returns:
            Scene with videos (V, F, H, W, 3) uint8, pseudo_videos (V, F, H, W, 3) uint8,
            tracks_world (F, K, 3) metres, labels (K,) from DPA's label head with their probability
            label_confidence (K,) (UNKNOWN and None for a DPA without one), depth_ranges (V, 2)
            metres, track_anchors (K, 3).
        """
        self.check_inputs(images, cameras, text, num_frames, num_steps)
        final_sigma, flow_shift = self._final_sigma(final_sigma), self._flow_shift(flow_shift)
        return self._dispatch(images, cameras, text, num_frames, num_steps, guidance_scale, seed, callback,
                              use_dpa, cycle, single_view, scheduler, flow_shift, final_sigma)

    def _final_sigma(self, final_sigma: float | None) -> float:
        """``final_sigma`` or the model's default, checked."""
        final_sigma = float(self.model.config["final_sigma"]) if final_sigma is None else final_sigma
        if not 0.0 <= final_sigma < 1.0:
            raise ValueError(f"final_sigma={final_sigma} must lie in [0, 1)")
        return final_sigma

    def _flow_shift(self, flow_shift: float | None) -> float:
        """``flow_shift`` or the model's (a Wan directory's scheduler config), else 3."""
        return float(self.model.config.get("flow_shift") or 3.0) if flow_shift is None else flow_shift

    def planned_steps(self, num_steps: int, scheduler: str = "unipc", flow_shift: float | None = None,
                      final_sigma: float | None = None) -> int:
        """Denoising steps one view set runs for ``num_steps`` (a model may end early at its
        ``final_sigma``): the progress callback's total (``single_view``: this times the views)."""
        schedule = make_scheduler(scheduler, self._flow_shift(flow_shift))
        schedule.set_timesteps(num_steps)
        return steps_to_run(schedule.sigmas.float().cpu(), self._final_sigma(final_sigma))

    def _dispatch(self, images, cameras, text, num_frames, num_steps, guidance_scale, seed, callback, use_dpa, cycle,
                  single_view, scheduler, flow_shift, final_sigma) -> Scene:
        if single_view:
            return self._single_view(images, cameras, text, num_frames, num_steps, guidance_scale, seed, callback,
                                     use_dpa, cycle, scheduler, flow_shift, final_sigma)
        return self._generate(images, cameras, text, num_frames, num_steps, guidance_scale, seed, callback, use_dpa,
                              cycle, scheduler, flow_shift, final_sigma)

    def _generate(self, images, cameras, text, num_frames, num_steps, guidance_scale, seed, callback, use_dpa, cycle,
                  scheduler, flow_shift, final_sigma, step_offset: int = 0, total_steps: int | None = None) -> Scene:
        model, device = self.model, self.model.device
        generator = torch.Generator().manual_seed(seed)
        height, width = cameras[0].height, cameras[0].width
        V = len(cameras)

        # 1. Conditions: text (+ empty text for CFG), reference latents
        text_emb = model.text_encoder.encode([text]).to(device)
        uncond = model.text_encoder.encode([""]).to(device)
        refs = np.zeros((1, V, 1, height, width, 3), dtype=np.float32)
        ref_mask = torch.zeros(1, V, dtype=torch.bool)
        for v, image in enumerate(images):
            if image is not None:
                refs[0, v, 0] = image.astype(np.float32) / 255.0
                ref_mask[0, v] = True
        ref_latents = model.encode_videos(torch.from_numpy(refs).to(device))  # (1, V, C, 1, h, w)
        ref_mask = ref_mask.to(device)
        intrinsics, world_T_cam = (torch.from_numpy(a)[None] for a in stack_cameras(cameras))
        camera = camera_features(intrinsics, world_T_cam, width, height).to(device)  # (1, V, 16)

        # 2. Schedulers (shared timesteps) and initial noise
        video_sched = make_scheduler(scheduler, flow_shift)
        video_sched.set_timesteps(num_steps, device=device)
        motion_sched = make_scheduler(scheduler, flow_shift)
        motion_sched.set_timesteps(num_steps, device=device)
        sigmas = video_sched.sigmas.float().cpu()
        num_run = steps_to_run(sigmas, final_sigma)
        latent_shape = (1, V, model.codec.channels, *model.codec.latent_shape(num_frames, height, width))
        video = torch.randn(latent_shape, generator=generator).to(device)
        motion = torch.randn(latent_shape, generator=generator).to(device) if model.mjd.config.motion else None

        # 3. Denoising with the closed loop
        cams = [cameras]
        track_state, guidance, coarse, mask, depth, label_logits = None, None, None, None, None, None
        total = total_steps or num_run
        for i in range(num_run):
            res = mjd_denoise_step(model.mjd, video_sched, motion_sched, i, video, motion, text_emb, uncond,
                                   ref_latents, ref_mask, guidance, guidance_scale, camera)
            video, motion = res.video_latents, res.motion_latents
            if motion is not None:
                depth = read_depth_ranges(res.depth_range)  # (1, V, 2) metres
                last = i + 1 == num_run
                if use_dpa or last:  # without DPA only the final estimate is decoded (and fused)
                    coarse, mask = decode_coarse_tracks(model, res.motion_x0, depth, cams)
                if use_dpa and bool(mask.any()):
                    sigma, sigma_next = sigmas[i].to(device).expand(1), sigmas[i + 1].to(device).expand(1)
                    if track_state is None:
                        shape = (1, num_frames, model.config["num_tracks"], 3)
                        track_state = initial_track_state(coarse, mask, shape, generator)
                    velocity, refined, label_logits = refine_tracks(model, track_state, coarse, mask, sigma)
                    track_state = refined if last else euler_step(track_state, velocity, sigma, sigma_next)
                    # the guidance of the last step would never be used: not encoded
                    guidance = encode_track_guidance(model, refined, depth, cams) if cycle and not last else None
            if callback is not None:
                callback(step_offset + i + 1, total)
        if num_run < len(video_sched.timesteps):
            video = impose_reference(res.video_x0, ref_latents, ref_mask)
            motion = res.motion_x0

        # 4. Outputs
        videos = (model.decode_latents(video)[0].cpu().numpy() * 255.0).round().astype(np.uint8)
        meta = {"generated": True, "seed": seed, "num_steps": num_steps, "steps_run": num_run,
                "guidance_scale": guidance_scale, "use_dpa": use_dpa, "cycle": cycle, "scheduler": scheduler,
                "flow_shift": flow_shift, "final_sigma": final_sigma}
        if motion is None:  # a video-only MJD generates no motion and so no tracks
            no_tracks = np.zeros((num_frames, 0, 3), np.float32)
            return Scene(list(cameras), videos, no_tracks, np.zeros(0, np.uint8), text, self.fps,
                         track_anchors=np.zeros((0, 3), np.float32), meta=dict(meta, video_only=True))
        pseudo = to_uint8(model.decode_latents(motion)[0].cpu().numpy())
        depth_ranges = depth[0].cpu().numpy()
        labels, confidence = None, None
        if track_state is not None:
            tracks = track_state[0].cpu().numpy().astype(np.float32)
            if label_logits is not None:  # the labels of the last DPA evaluation
                probs = label_logits[0].float().softmax(-1).cpu().numpy()  # (K, num_labels)
                labels, confidence = probs.argmax(-1).astype(np.uint8), probs.max(-1).astype(np.float32)
        else:
            if use_dpa:
                logger.warning("no coarse track was ever decoded; falling back to fusing the final per-view tracks")
            tracks, _ = fuse_coarse_tracks(coarse[0].cpu().numpy(), mask[0].cpu().numpy(), model.config["num_tracks"],
                                           rng=np.random.default_rng(seed))
        if labels is None:
            labels = np.full(tracks.shape[1], UNKNOWN, np.uint8)
        return Scene(list(cameras), videos, tracks, labels, text, self.fps, pseudo_videos=pseudo,
                     depth_ranges=depth_ranges, track_anchors=track_anchors(tracks, cameras),
                     label_confidence=confidence, meta=meta)

    def _single_view(self, images, cameras, text, num_frames, num_steps, guidance_scale, seed, callback, use_dpa, cycle,
                     scheduler, flow_shift, final_sigma) -> Scene:
        """Each view generated on its own; tracks of all views pooled and subsampled to K."""
        V = len(cameras)
        per_view = self.planned_steps(num_steps, scheduler, flow_shift, final_sigma)
        scenes = [self._generate([images[v]], [cameras[v]], text, num_frames, num_steps, guidance_scale, seed + v,
                                 callback, use_dpa, cycle, scheduler, flow_shift, final_sigma, v * per_view,
                                 V * per_view)
                  for v in range(V)]
        pooled = np.concatenate([s.tracks_world for s in scenes], axis=1)
        keep = np.sort(np.random.default_rng(seed).choice(pooled.shape[1], self.model.config["num_tracks"], replace=False))
        tracks = pooled[:, keep]
        labels = np.concatenate([s.labels for s in scenes])[keep]
        confidence = (np.concatenate([s.label_confidence for s in scenes])[keep]
                      if all(s.label_confidence is not None for s in scenes) else None)
        meta = dict(scenes[0].meta, single_view=True)
        return Scene(list(cameras), np.concatenate([s.videos for s in scenes]), tracks, labels, text, self.fps,
                     pseudo_videos=np.concatenate([s.pseudo_videos for s in scenes]),
                     depth_ranges=np.concatenate([s.depth_ranges for s in scenes]),
                     track_anchors=track_anchors(tracks, cameras), label_confidence=confidence, meta=meta)


# Wan keeps these in float32 (diffusers' WanTransformer3DModel._keep_in_fp32_modules) plus MJD's gates.
FP32_PARTS = ("rope", "time_embedder", "scale_shift_table", "norm", "gate")


def cast_networks(model: SyncMV4DModel, dtype: torch.dtype) -> None:
    """MJD and the text encoder to ``dtype`` (MJD's ``FP32_PARTS`` stay float32); MJD then runs under
    autocast and returns float32 outputs, so latents and schedulers stay float32. DPA stays float32 and
    the VAE keeps ``codec.dtype``."""
    for name, param in model.mjd.named_parameters():
        if not any(part in name for part in FP32_PARTS):
            param.data = param.data.to(dtype)
    model.text_encoder.to(dtype)
    if dtype == torch.float32:
        return
    forward = model.mjd.forward

    def mjd_forward(*args, **kwargs):
        with torch.autocast(model.device.type, dtype=dtype):
            out = forward(*args, **kwargs)
        for field in ("video_velocity", "motion_velocity", "depth_range"):
            value = getattr(out, field)
            if value is not None:
                setattr(out, field, value.float())
        return out

    model.mjd.forward = mjd_forward


class _OffloadGroup:
    """Model CPU offload: each network is moved to ``device`` when called and the one used before it
    goes back to the CPU, so one network at a time occupies the accelerator."""

    def __init__(self, device: torch.device):
        self.device, self.active = device, None

    def wrap(self, module: torch.nn.Module, owner, method: str) -> None:
        original = getattr(owner, method)

        def call(*args, **kwargs):
            if self.active is not module:
                if self.active is not None:
                    self.active.to("cpu")
                module.to(self.device)
                self.active = module
            return original(*args, **kwargs)

        setattr(owner, method, call)


def enable_cpu_offload(model: SyncMV4DModel, device: str | torch.device) -> None:
    """Keep every network on the CPU and move each to ``device`` only while it runs (text encoder,
    VAE encode / decode, MJD, DPA). Inputs follow ``model.device``, which becomes ``device``."""
    device = torch.device(device)
    model.to("cpu")
    group = _OffloadGroup(device)
    for part in (model, model.codec, model.text_encoder):
        part.execution_device = device
    group.wrap(model.text_encoder, model.text_encoder, "encode")
    group.wrap(model.mjd, model.mjd, "forward")
    group.wrap(model.dpa, model.dpa, "forward")
    vae = getattr(model.codec, "vae", model.codec)
    for method in ("encode", "decode"):
        group.wrap(vae, model.codec, method)


def write_result(scene: Scene, out_dir: str | Path) -> Path:
    """Save a generated scene (scene format), playable mp4s per view and a preview PNG.

    Layout: ``out_dir/scene/`` (the scene format), ``out_dir/mp4/<camera>.mp4`` and
    ``out_dir/mp4/<camera>_motion.mp4`` (H.264 yuv420p), ``out_dir/preview.png``.
    """
    from .scene import write_preview_video
    from .visualize import render_preview

    out_dir = Path(out_dir)
    scene.save(out_dir / "scene")
    (out_dir / "mp4").mkdir(parents=True, exist_ok=True)
    for v, cam in enumerate(scene.cameras):
        write_preview_video(out_dir / "mp4" / f"{cam.name}.mp4", scene.videos[v], scene.fps)
        write_preview_video(out_dir / "mp4" / f"{cam.name}_motion.mp4", scene.pseudo_videos[v], scene.fps)
    render_preview(scene, out_dir / "preview.png")
    return out_dir
