"""The per-stage training objectives of SyncMV4DModel (paper Sec. 3, Algorithm 1).

Stages (run in this order by ``training/train.py``):

* ``vae``: reconstruction of colour and motion pseudo videos through the latent codec. Only a
  learned codec (the Wan VAE architecture) has parameters; the fixed patchify codec of the tiny
  presets is lossless and has nothing to train, so the stage is skipped for it.
* ``warmup_dpa``: DPA alone (Eq. 4). Its coarse input is decoded from the ground-truth motion
  latent degraded with Gaussian noise of standard deviation ``t / 2`` (t = the DPA's own noise
  level), a stand-in for MJD's one-step estimate, whose error also grows with t.
* ``warmup_mjd``: MJD on single views (every view of the batch is its own sample, so inter-view
  attention is not exercised), Eq. 3 on video, motion and scale.
* ``joint``: Algorithm 1. DPA (no grad) refines the tracks decoded from the noisy motion latent;
  the refinement, reprojected into pseudo videos and encoded, is added to MJD's motion input;
  MJD predicts (v_V, v_M, s_hat); its one-step estimate of the motion latent is decoded with
  s_hat and refined by DPA with grad. L = L_MJD + L_DPA. Decoding tracks from pseudo videos is a
  non-differentiable lookup, so DPA's loss does not reach MJD's weights (nor the reverse).
  For a video-only MJD (``mjd.motion = False``, the paper's "MV video only" ablation) the joint
  stage is multi-view MJD on the video alone.

The closed loop (decode coarse tracks, refine with DPA, re-encode the guidance) is the
inference pipeline's own (``diffusion.closed_loop``); MJD is called through
``diffusion.flow.mjd_velocity`` as in sampling. ``SyncMV4DObjective`` wraps the model so that
DDP / DeepSpeed wrap the module whose ``forward`` returns the loss.

* DPA generates an unordered set of ``num_tracks`` tracks. In training the set is a random subset
  of the ground-truth tracks visible in frame 0 of some view; the noise is placed at the
  ground-truth centre and scale (at inference: the coarse tracks' centre and scale).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion import flow
from ..diffusion.closed_loop import decode_coarse_tracks, encode_track_guidance, read_depth_ranges, refine_tracks
from ..diffusion.sampling import impose_reference
from ..diffusion.track_flow import coarse_track_frame, dpa_loss, sample_track_noise
from ..models.mjd import camera_features
from ..models.syncmv4d import SyncMV4DModel
from .config import StageConfig

logger = logging.getLogger(__name__)

STAGES = ("vae", "warmup_dpa", "warmup_mjd", "joint")

def stage_parameters(model: SyncMV4DModel, stage: str, num_views: int = StageConfig.num_views) -> list[nn.Parameter]:
    """The parameters ``stage`` trains; every other parameter is frozen (requires_grad False).

    vae: the codec; warmup_dpa: DPA; warmup_mjd: MJD; joint: MJD + DPA (MJD alone for a video-only
    MJD). The text encoder is always frozen (as the paper's umT5). With one view per sample
    (warmup_mjd always, any stage with ``num_views`` 1) MJD's inter-view parameters stay frozen:
    they get no gradient, and DDP / ZeRO-3 require one for every parameter they train.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    joint = [model.mjd, model.dpa] if model.mjd.config.motion else [model.mjd]  # video-only: no tracks for DPA
    trained = {"vae": [model.codec], "warmup_dpa": [model.dpa], "warmup_mjd": [model.mjd], "joint": joint}[stage]
    model.requires_grad_(False)
    for module in trained:
        module.requires_grad_(True)
    if stage == "warmup_mjd" or num_views == 1:
        for param in model.mjd.inter_view_parameters():
            param.requires_grad_(False)
    return [p for module in trained for p in module.parameters() if p.requires_grad]


def _select_tracks(batch: dict, num_tracks: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random subsets of the ground-truth tracks seen in frame 0 of some view: tracks
    (B, F, num_tracks, 3) metres and their labels (B, num_tracks) int64."""
    tracks, visible = batch["tracks_world"], batch["anchor_visible"].any(1)  # (B, F, K, 3), (B, K)
    rows, labels = [], []
    for b in range(tracks.shape[0]):
        weights = visible[b].float() if visible[b].any() else torch.ones_like(visible[b], dtype=torch.float)
        idx = torch.multinomial(weights, num_tracks, replacement=int(weights.sum()) < num_tracks, generator=generator)
        rows.append(tracks[b][:, idx])
        labels.append(batch["labels"][b][idx])
    return torch.stack(rows), torch.stack(labels)


def _dpa_terms(model: SyncMV4DModel, gt: Tensor, gt_labels: Tensor, noisy: Tensor, noise: Tensor, t: Tensor,
               scale: Tensor, coarse: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Eq. 4 (+ the label cross-entropy for a DPA with a label head) on the samples that have a valid
    coarse point (zero terms when none has)."""
    ok = mask.flatten(1).any(1)  # (B,)
    labelled = bool(model.dpa.config.num_labels)
    if not bool(ok.any()):
        zero = gt.new_zeros(())
        return {"dpa": zero, "dpa_velocity": zero, "dpa_chamfer": zero} | ({"dpa_label": zero} if labelled else {})
    velocity, _, logits = refine_tracks(model, noisy[ok], coarse[ok], mask[ok], t[ok])
    terms = dpa_loss(velocity, noisy[ok], gt[ok], noise[ok], t[ok], scale[ok], model.config["chamfer_weight"])
    out = {"dpa": terms.total, "dpa_velocity": terms.velocity_mse, "dpa_chamfer": terms.chamfer}
    if labelled:
        out["dpa_label"] = F.cross_entropy(logits.flatten(0, 1), gt_labels[ok].flatten())
        out["dpa"] = out["dpa"] + model.config["label_weight"] * out["dpa_label"]
    return out


def _noisy_inputs(model: SyncMV4DModel, batch: dict, generator: torch.Generator) -> dict:
    """Latents, text, references and the shared noise level t for one batch (no grad)."""
    cfg, device = model.config, model.device
    videos = batch["videos"].to(device)
    b, v = videos.shape[:2]
    with torch.no_grad():
        z_video = model.encode_videos(videos)  # (B, V, C, F', h, w)
        z_motion = model.encode_videos(batch["pseudo_videos"].to(device))
        z_ref = model.encode_videos(videos[:, :, :1])  # (B, V, C, 1, h, w)
        texts = [text if float(torch.rand((), generator=generator)) >= cfg["text_drop"] else "" for text in batch["text"]]
        text = model.text_encoder.encode(texts).to(device)  # (B, L, D)
    ref_mask = (torch.rand(b, v, generator=generator) >= cfg["ref_drop"]).to(device)
    t = flow.sample_timesteps(b, cfg["timestep_shift"], generator).to(device)  # (B,)
    eps_video = torch.randn(z_video.shape, generator=generator).to(device)
    eps_motion = torch.randn(z_motion.shape, generator=generator).to(device)
    height, width = videos.shape[-3:-1]
    camera = camera_features(batch["intrinsics"], batch["world_T_cam"], width, height).to(device)  # (B, V, 16)
    return {
        "t": t, "text": text, "ref_mask": ref_mask, "z_ref": z_ref, "camera": camera,
        "video_t": impose_reference(flow.add_noise(z_video, eps_video, t), z_ref, ref_mask),
        "motion_t": flow.add_noise(z_motion, eps_motion, t),
        "video_target": flow.velocity_target(z_video, eps_video),
        "motion_target": flow.velocity_target(z_motion, eps_motion),
        "motion_0": z_motion,
        "depth_ranges": batch["depth_ranges"].to(device),
    }


def _track_noise(gt: Tensor, t: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(noisy M_t, noise eps, scale) with the noise placed at the ground truth's centre and scale."""
    centre, scale = coarse_track_frame(gt[:, None], torch.ones(gt.shape[:-1], dtype=torch.bool, device=gt.device)[:, None])
    noise = sample_track_noise(tuple(gt.shape), centre.cpu(), scale.cpu(), generator).to(gt.device)
    return flow.add_noise(gt, noise, t), noise, scale


# ---------------------------------------------------------------------------------- stages
def _vae_loss(model: SyncMV4DModel, batch: dict) -> dict[str, Tensor]:
    device = model.device
    terms = {}
    for key in ("videos", "pseudo_videos"):
        x = batch[key].to(device)
        recon = model.decode_latents(model.encode_videos(x))
        terms[f"recon_{key}"] = F.mse_loss(recon, x)
    terms["loss"] = terms["recon_videos"] + terms["recon_pseudo_videos"]
    return terms


def _mjd_single_view_loss(model: SyncMV4DModel, inputs: dict) -> dict[str, Tensor]:
    b, v = inputs["video_t"].shape[:2]
    motion = model.mjd.config.motion
    single = lambda x: x.flatten(0, 1)[:, None]  # noqa: E731  (B, V, ...) -> (B*V, 1, ...)
    out = flow.mjd_velocity(model.mjd, single(inputs["video_t"]), single(inputs["motion_t"]) if motion else None,
                            flow.model_timestep(inputs["t"].repeat_interleave(v)),
                            inputs["text"].repeat_interleave(v, 0), single(inputs["ref_mask"]),
                            camera=single(inputs["camera"]))
    return flow.mjd_loss(out.video_velocity, single(inputs["video_target"]), out.motion_velocity,
                         single(inputs["motion_target"]) if motion else None,
                         out.depth_range.reshape(b, v, 2) if motion else None,
                         inputs["depth_ranges"] if motion else None, single(inputs["ref_mask"]))


def _video_only_loss(model: SyncMV4DModel, inputs: dict) -> dict[str, Tensor]:
    """Multi-view MJD on the video alone (``motion=False``)."""
    out = flow.mjd_velocity(model.mjd, inputs["video_t"], None, flow.model_timestep(inputs["t"]), inputs["text"],
                            inputs["ref_mask"], camera=inputs["camera"])
    return flow.mjd_loss(out.video_velocity, inputs["video_target"], None, None, None, None, inputs["ref_mask"])


def _dpa_warmup_loss(model: SyncMV4DModel, batch: dict, inputs: dict, generator: torch.Generator) -> dict[str, Tensor]:
    t = inputs["t"]
    gt, gt_labels = (x.to(model.device) for x in _select_tracks(batch, model.config["num_tracks"], generator))
    noisy, noise, scale = _track_noise(gt, t, generator)
    degrade = torch.randn(inputs["motion_0"].shape, generator=generator).to(model.device)
    degraded = inputs["motion_0"] + (t / 2)[:, None, None, None, None, None] * degrade
    coarse, mask = decode_coarse_tracks(model, degraded, inputs["depth_ranges"], batch["cameras"])
    terms = _dpa_terms(model, gt, gt_labels, noisy, noise, t, scale, coarse, mask)
    terms["loss"] = terms["dpa"]
    return terms


def _joint_loss(model: SyncMV4DModel, batch: dict, inputs: dict, generator: torch.Generator) -> dict[str, Tensor]:
    t, cams, s_gt = inputs["t"], batch["cameras"], inputs["depth_ranges"]
    gt, gt_labels = (x.to(model.device) for x in _select_tracks(batch, model.config["num_tracks"], generator))
    noisy, noise, scale = _track_noise(gt, t, generator)
    # Line 7-8: DPA (no grad) on Denorm & Dec(z_Mpv_t, s); Proj & Norm + encode -> guidance latent
    with torch.no_grad():
        coarse, mask = decode_coarse_tracks(model, inputs["motion_t"], s_gt, cams)
        guidance = torch.zeros_like(inputs["motion_t"])
        ok = mask.flatten(1).any(1)
        if bool(ok.any()):
            refined = refine_tracks(model, noisy[ok], coarse[ok], mask[ok], t[ok]).tracks
            guidance[ok] = encode_track_guidance(model, refined, s_gt[ok], [c for c, k in zip(cams, ok.tolist()) if k])
    # Line 9: MJD with the refined motion guidance added to its motion input
    out = flow.mjd_velocity(model.mjd, inputs["video_t"], inputs["motion_t"], flow.model_timestep(t), inputs["text"],
                            inputs["ref_mask"], guidance, inputs["camera"])
    terms = flow.mjd_loss(out.video_velocity, inputs["video_target"], out.motion_velocity, inputs["motion_target"],
                          out.depth_range, s_gt, inputs["ref_mask"])
    # Line 10-11: one-step motion estimate decoded with the predicted scale, refined by DPA with grad
    with torch.no_grad():
        motion_0 = flow.estimate_x0(inputs["motion_t"], out.motion_velocity, t)
        coarse, mask = decode_coarse_tracks(model, motion_0, read_depth_ranges(out.depth_range), cams)
    dpa_terms = _dpa_terms(model, gt, gt_labels, noisy, noise, t, scale, coarse, mask)
    terms.update(dpa_terms)
    terms["mjd"] = terms["loss"]
    terms["loss"] = terms["mjd"] + dpa_terms["dpa"]  # Line 12
    return terms


def compute_loss(model: SyncMV4DModel, batch: dict, stage: str, generator: torch.Generator) -> dict[str, Tensor]:
    """The loss terms of one training step of ``stage`` on a collated batch.

    Args:
        batch: from ``data.dataset.collate_scenes``: videos / pseudo_videos (B, V, F, H, W, 3) in
            [0, 1], depth_ranges (B, V, 2) metres, tracks_world (B, F, K, 3) metres,
            anchor_visible (B, V, K), text (B strings), cameras (B lists of V).
        generator: CPU generator for every random draw (noise, t, subsets, drops), so that a
            resumed run repeats an uninterrupted one exactly.
    Returns:
        scalar tensors; "loss" is the total to minimise, the rest are logged.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    if stage == "vae":
        return _vae_loss(model, batch)
    inputs = _noisy_inputs(model, batch, generator)
    if stage == "warmup_mjd":
        return _mjd_single_view_loss(model, inputs)
    if stage == "warmup_dpa":
        return _dpa_warmup_loss(model, batch, inputs, generator)
    if not model.mjd.config.motion:
        return _video_only_loss(model, inputs)
    return _joint_loss(model, batch, inputs, generator)


class SyncMV4DObjective(nn.Module):
    """The module a training loop wraps (DDP / DeepSpeed): ``forward`` returns the loss terms.

    Holds the model as ``model`` (its parameters are this module's); checkpoints store
    ``objective.model.state_dict()``.
    """

    def __init__(self, model: SyncMV4DModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, stage: str, generator: torch.Generator) -> dict[str, Tensor]:
        """``compute_loss(self.model, batch, stage, generator)``."""
        return compute_loss(self.model, batch, stage, generator)

