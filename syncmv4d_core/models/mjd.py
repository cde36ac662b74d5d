"""Multi-view Joint Diffusion (MJD): a multi-view video + motion DiT built on Wan2.2 components.

The network composes diffusers' Wan2.2 modules (``WanRotaryPosEmbed``, ``WanTimeTextImageEmbedding``,
``WanTransformerBlock`` with its ``WanAttention`` layers and ``FeedForward``) under the SAME parameter
names as ``WanTransformer3DModel``, so a Wan2.2-TI2V-5B state dict loads 1:1 and only the new modules
are missing. Per block (paper Sec. 3.3), in this order:

1. multimodal adaLN modulation: video tokens use the pretrained ``scale_shift_table`` + the Wan
   timestep projection (per-frame, so frame 0 with a reference gets ``t = 0`` as in Wan TI2V);
   motion, scale and register tokens use a new ``motion_scale_shift_table`` + a new
   ``motion_time_proj`` of the same timestep embedding;
2. inter-view geometry attention over all views' tokens of the same latent frame,
   ``(B*F', V*2*h*w)`` (video and motion tokens of that frame), plus one group with the V x 8
   scale/register tokens; a learned per-view embedding (zero-init) tells views apart; the output
   is added through a zero-init per-channel gate;
3. intra-view spatio-temporal attention, ``(B*V, 2*F'*h*w + 8)``: video, motion, scale and
   register tokens of one view attend jointly (shared ``attn1`` weights). The part of the video
   queries that attends to non-video keys passes a zero-init per-channel gate, so at step 0 the
   video stream is exactly the pretrained Wan's;
4. text cross-attention (``attn2``, all tokens), 5. FFN (modulated per modality).

Token layout per view: ``[video (F'*h*w) | motion (F'*h*w) | scale (t_s=2) | register (t_r=6)]``.
The two scale tokens of view v regress that view's depth range s_v = (z_min, z_max) in metres.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
    WanTransformer3DModel,
    WanTransformerBlock,
)
from torch.utils.checkpoint import checkpoint

from .config import ConfigMixin

logger = logging.getLogger(__name__)

WAN_TRANSFORMER_SUBDIR = "transformer"


PREDICTION_TYPES = ("velocity", "sample")


@dataclass(frozen=True)
class MJDConfig(ConfigMixin):
    """Architecture of an MJD transformer. The Wan fields mirror ``WanTransformer3DModel``'s config."""

    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) latent cells per token
    num_attention_heads: int = 2
    attention_head_dim: int = 32  # split by Wan's rotary into t/h/w parts (128 -> 44/42/42)
    in_channels: int = 48  # latent channels (Wan2.2 VAE z_dim)
    out_channels: int = 48
    text_dim: int = 32  # text encoder width (umT5-xxl: 4096)
    freq_dim: int = 256  # sinusoidal timestep features
    ffn_dim: int = 128
    num_layers: int = 2
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024
    max_views: int = 8  # size of the learned per-view embedding table
    num_scale_tokens: int = 2  # t_s (paper Sec. 4.2); one per depth-range bound
    num_register_tokens: int = 6  # t_r (paper Sec. 4.2)
    motion: bool = True  # False: video-only ablation (no motion/scale/register tokens)
    inter_view: bool = True  # False: single-view ablation (views run independently)
    gradient_checkpointing: bool = False
    # Skip preconditioning of the velocity (None: off, Wan's own parameterisation). With sigma_data
    # set, the network output F is a preconditioned residual and the velocity is
    # v = c_skip(t) x_t + c_out(t) F (``diffusion.flow.preconditioned_velocity``, applied by the
    # step and loss code, never inside forward): the noise reaches the output through the skip,
    # which a model whose token width is below the values per token cannot pass through its blocks.
    sigma_data: float | None = None
    # What the network output means (turned into velocities by ``diffusion.flow.mjd_velocity``):
    # "velocity" (Wan's v = eps - x_0) or "sample" (the clean latent x_0, JiT's x-prediction, which
    # a transformer narrower than the values per token can learn where velocity prediction fails).
    prediction_type: str = "velocity"
    # With "sample": the video output is the change from the reference frame (x_0 = reference latent
    # repeated over the latent frames + output) in views that have a reference, so a static
    # background costs the network nothing.
    video_from_reference: bool = False
    # Pooled-text modulation: the mean of the text tokens, through a zero-initialised MLP, is added to
    # the timestep embedding, so the task text shifts and scales every token in every block (adaLN,
    # DiT's strongest class conditioning) besides reaching them through cross-attention (``attn2``).
    pooled_text: bool = False
    # Camera conditioning: each video / motion token gets the world ray through its centre (direction,
    # moment o x d, origin o; ``camera_rays``) and each view's scale / register tokens its camera
    # (``CAMERA_FEATURES`` numbers), both through zero-initialised linear layers, so the depth and the
    # depth range can follow the known camera instead of being guessed from the pixels.
    camera_rays: bool = False
    # Reference-to-motion shortcut: the reference frame's latent at each token position, through a
    # zero-initialised patch embedding, is added to the motion tokens at that position in every latent
    # frame, so which pixels hold an object (and get a track) is read where it is, instead of being
    # found through attention across all positions (frame 0 of a motion video is the reference
    # image's objects coloured by their own pixel coordinates and depth).
    motion_reference: bool = False

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r} must be one of {PREDICTION_TYPES}")
        if self.prediction_type == "sample" and self.sigma_data is not None:
            raise ValueError("sigma_data (skip preconditioning of a velocity) and prediction_type='sample' exclude "
                             "each other")
        if self.video_from_reference and self.prediction_type != "sample":
            raise ValueError("video_from_reference needs prediction_type='sample'")
        if self.motion_reference and not self.motion:
            raise ValueError("motion_reference needs the motion modality (motion=True)")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def wan_kwargs(self) -> dict:
        """Keyword arguments for an equivalent ``WanTransformer3DModel``."""
        names = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
                 "text_dim", "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "qk_norm", "eps",
                 "rope_max_seq_len")
        return {n: getattr(self, n) for n in names}

    @classmethod
    def from_dict(cls, d: dict) -> "MJDConfig":
        d = dict(d)
        d["patch_size"] = tuple(d.get("patch_size", (1, 2, 2)))
        return cls().replace(**d)


PRESETS: dict[str, MJDConfig] = {
    # 0.26 M params: CPU tests and the tiny end-to-end pipeline.
    "tiny": MJDConfig(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2, text_dim=32),
    # 5.2 M params: CPU training demos.
    "small": MJDConfig(num_attention_heads=4, attention_head_dim=48, ffn_dim=768, num_layers=6, text_dim=64),
    # Wan2.2-TI2V-5B (its transformer config.json): d = 24 x 128 = 3072, 30 blocks, umT5-xxl text (4096).
    "wan22-5b": MJDConfig(num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30,
                          text_dim=4096),
}


def preset(name: str, **changes) -> MJDConfig:
    """The named preset (``tiny``, ``small``, ``wan22-5b``) with optional field changes."""
    if name not in PRESETS:
        raise ValueError(f"unknown MJD preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**changes)


@dataclass
class MJDOutput:
    """MJD prediction.

    video_velocity: (B, V, C, F', h, w) rectified-flow velocity of the video latents (with
        ``config.sigma_data`` set: the preconditioned network output F, see
        ``diffusion.flow.mjd_velocity``).
    motion_velocity: (B, V, C, F', h, w) the same for the motion latents, None when motion is off.
    depth_range: (B, V, 2) per-view (z_min, z_max) in metres, None when motion is off.
    """

    video_velocity: torch.Tensor
    motion_velocity: torch.Tensor | None
    depth_range: torch.Tensor | None


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved rotary embedding. x (N, L, H, D); cos/sin broadcastable to it."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


def _qkv(attn: WanAttention, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None):
    """Projected, RMS-normed, rotated (N, L, H, D) query/key/value of a self-attention layer."""
    q = attn.norm_q(attn.to_q(x)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(x)).unflatten(2, (attn.heads, -1))
    v = attn.to_v(x).unflatten(2, (attn.heads, -1))
    if rotary is not None:
        q, k = _apply_rotary(q, *rotary), _apply_rotary(k, *rotary)
    return q, k, v


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention (N, Lq, H, D) x (N, Lk, H, D) -> (N, Lq, H*D)."""
    return dispatch_attention_fn(q, k, v).flatten(2, 3).type_as(q)


def _self_attention(attn: WanAttention, x: torch.Tensor, rotary) -> torch.Tensor:
    """Plain self-attention with ``attn``'s weights. x (N, L, d) -> (N, L, d)."""
    q, k, v = _qkv(attn, x, rotary)
    return attn.to_out[1](attn.to_out[0](_attend(q, k, v)))


def _modulate(norm: nn.Module, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN in fp32: norm(x) * (1 + scale) + shift, cast back to x's dtype."""
    return (norm(x.float()) * (1 + scale) + shift).type_as(x)


class MJDBlock(WanTransformerBlock):
    """A Wan block extended with inter-view attention and a motion modality.

    Groups of tokens are passed as a list of (N, T, S, d) tensors, N = B*V views, T frames
    (1 for the scale/register group), S tokens per frame; group 0 is always video. Each group has a
    modulation tensor (N, T or 1, 1, 6, d) (projected timestep embedding) added to its table.
    """

    def __init__(self, cfg: MJDConfig):
        dim = cfg.inner_dim
        super().__init__(dim, cfg.ffn_dim, cfg.num_attention_heads, cfg.qk_norm, cfg.cross_attn_norm, cfg.eps)
        self.motion = cfg.motion
        self.inter_view = cfg.inter_view
        if cfg.inter_view:
            # 2. Inter-view geometry attention (init from attn1 in MJDTransformer.init_new_modules)
            self.attn_view = WanAttention(dim=dim, heads=cfg.num_attention_heads, dim_head=cfg.attention_head_dim,
                                          eps=cfg.eps)
            self.view_gate = nn.Parameter(torch.zeros(dim))
        if cfg.motion:
            # 1. Motion-modality modulation table; 3. gate of video queries over motion/scale keys
            self.motion_scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
            self.cross_modal_gate = nn.Parameter(torch.zeros(dim))

    def _tables(self) -> list[torch.Tensor]:
        """Modulation tables of the groups: [video] or [video, motion, scale+register]."""
        if not self.motion:
            return [self.scale_shift_table]
        return [self.scale_shift_table, self.motion_scale_shift_table, self.motion_scale_shift_table]

    def forward(self, groups: list[torch.Tensor], mods: list[torch.Tensor], text: torch.Tensor,
                rotary: tuple[torch.Tensor, torch.Tensor], num_views: int, view_emb: torch.Tensor | None):
        """One MJD block.

        groups: list of (N, T, S, d) token groups, N = B*V; [video, motion, special] or [video].
        mods: list of (N, T|1, 1, 6, d) projected timestep embeddings, one per group.
        text: (N, L, d) projected text tokens. rotary: (cos, sin), each (1, F'*h*w, 1, head_dim).
        num_views: V. view_emb: (V, d) per-view embedding or None.
        Returns the updated groups.
        """
        # 1. Multimodal adaLN modulation: (shift, scale, gate) x (attention, FFN) per group
        params = [(table.unsqueeze(0).unsqueeze(0) + m.float()).chunk(6, dim=-2) for table, m in
                  zip(self._tables(), mods)]
        params = [[p.squeeze(-2) for p in ps] for ps in params]  # each (N, T|1, 1, d)
        shapes = [g.shape for g in groups]

        # 2. Inter-view geometry attention
        if self.inter_view and num_views > 1:
            normed = [_modulate(self.norm1, g, p[0], p[1]) for g, p in zip(groups, params)]
            updates = self._inter_view(normed, rotary, num_views, view_emb)
            gate = self.view_gate.float()
            groups = [(g.float() + u.float() * gate).type_as(g) for g, u in zip(groups, updates)]

        # 3. Intra-view spatio-temporal attention (joint over the view's modalities)
        normed = [_modulate(self.norm1, g, p[0], p[1]).flatten(1, 2) for g, p in zip(groups, params)]
        outs = self._intra_view(normed, rotary)
        groups = [(g.float() + o.reshape(s).float() * p[2]).type_as(g)
                  for g, o, s, p in zip(groups, outs, shapes, params)]

        # 4. Text cross-attention (no modulation, as in Wan)
        flat = torch.cat([g.flatten(1, 2) for g in groups], dim=1)  # (N, L_all, d)
        flat = flat + self.attn2(self.norm2(flat.float()).type_as(flat), text, None, None)

        # 5. Feed-forward, modulated per group
        lengths = [s[1] * s[2] for s in shapes]
        groups = [g.reshape(s) for g, s in zip(flat.split(lengths, dim=1), shapes)]
        normed = torch.cat([_modulate(self.norm3, g, p[3], p[4]).flatten(1, 2) for g, p in zip(groups, params)], 1)
        ff = self.ffn(normed).split(lengths, dim=1)
        return [(g.float() + f.reshape(s).float() * p[5]).type_as(g)
                for g, f, s, p in zip(groups, ff, shapes, params)]

    def _inter_view(self, normed: list[torch.Tensor], rotary, num_views: int, view_emb: torch.Tensor | None):
        """Attention across views: frame-aligned groups per latent frame, special tokens as one group."""
        n, t, s, d = normed[0].shape
        b = n // num_views
        n_framed = 2 if self.motion else 1
        framed, special = normed[:n_framed], normed[n_framed:]  # [video, motion], [scale+register]
        if view_emb is not None:
            emb = view_emb.to(normed[0].dtype).repeat(b, 1)[:, None, None]  # (N, 1, 1, d)
            framed = [g + emb for g in framed]
            special = [g + emb for g in special]
        # (B, V, T, G*S, d) -> (B, T, V, G*S, d) -> (B*T, V*G*S, d)
        x = torch.cat(framed, dim=2).unflatten(0, (b, num_views)).transpose(1, 2).flatten(2, 3).flatten(0, 1)
        cos, sin = (r.reshape(t, 1, s, -1).expand(t, num_views * len(framed), s, -1).reshape(1, t, -1, r.shape[-1])
                    .expand(b, t, -1, -1).reshape(b * t, -1, 1, r.shape[-1]) for r in rotary)
        y = _self_attention(self.attn_view, x, (cos, sin))
        # (B*T, V*G*S, d) -> (B, T, V, G, S, d) -> (B*V, T, G, S, d)
        y = y.reshape(b, t, num_views, len(framed), s, d).transpose(1, 2).flatten(0, 1)
        updates = list(y.unbind(dim=2))
        for g in special:
            # (B*V, 1, S', d) -> (B, V*S', d): every view's scale/register tokens together
            y = _self_attention(self.attn_view, g.reshape(b, num_views * g.shape[2], d), None)
            updates.append(y.reshape(g.shape))
        return updates

    def _intra_view(self, normed: list[torch.Tensor], rotary) -> list[torch.Tensor]:
        """Joint self-attention within each view. normed: list of (N, L_g, d); returns the same shapes."""
        lengths = [g.shape[1] for g in normed]
        x = torch.cat(normed, dim=1)  # (N, L_all, d)
        cos, sin = rotary
        if self.motion:  # video and motion share (t, h, w) positions; special tokens are not rotated
            extra = lengths[2]
            cos = torch.cat([cos, cos, cos.new_ones(1, extra, 1, cos.shape[-1])], dim=1)
            sin = torch.cat([sin, sin, sin.new_zeros(1, extra, 1, sin.shape[-1])], dim=1)
        q, k, v = _qkv(self.attn1, x, (cos, sin))
        lv = lengths[0]
        if len(normed) == 1:
            out = _attend(q, k, v)
        else:
            video = _attend(q[:, :lv], k[:, :lv], v[:, :lv])
            video = video + self.cross_modal_gate.to(video.dtype) * _attend(q[:, :lv], k[:, lv:], v[:, lv:])
            out = torch.cat([video, _attend(q[:, lv:], k, v)], dim=1)
        out = self.attn1.to_out[1](self.attn1.to_out[0](out))
        return list(out.split(lengths, dim=1))


class MJDTransformer(nn.Module):
    """Multi-view joint video + motion diffusion transformer (paper Sec. 3.3).

    Wan parameters keep Wan's names (``patch_embedding``, ``condition_embedder``, ``blocks.i.attn1``,
    ``norm_out``, ``proj_out``, ``scale_shift_table``); new ones: ``blocks.i.attn_view``,
    ``blocks.i.view_gate``, ``blocks.i.motion_scale_shift_table``, ``blocks.i.cross_modal_gate``,
    ``view_embedding``, ``motion_patch_embedding``, ``motion_time_proj``, ``motion_proj_out``,
    ``motion_out_scale_shift_table``, ``special_tokens``, ``depth_head``.
    """

    def __init__(self, config: MJDConfig):
        super().__init__()
        self.config = config
        cfg, dim = config, config.inner_dim
        if cfg.attention_head_dim < 6:
            raise ValueError(f"attention_head_dim={cfg.attention_head_dim} too small for Wan's 3-axis rotary")
        patch_out = cfg.out_channels * math.prod(cfg.patch_size)

        # 1. Patch & position embedding (Wan)
        self.rope = WanRotaryPosEmbed(cfg.attention_head_dim, cfg.patch_size, cfg.rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(cfg.in_channels, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

        # 2. Condition embeddings (Wan): timestep -> temb (d) and its 6-way projection; text -> d
        self.condition_embedder = WanTimeTextImageEmbedding(dim=dim, time_freq_dim=cfg.freq_dim,
                                                            time_proj_dim=dim * 6, text_embed_dim=cfg.text_dim)

        # 3. Blocks (Wan blocks + inter-view attention + motion modulation)
        self.blocks = nn.ModuleList([MJDBlock(cfg) for _ in range(cfg.num_layers)])

        # 4. Output norm & projection (Wan)
        self.norm_out = FP32LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, patch_out)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

        # 5. New modules
        if cfg.inter_view:
            self.view_embedding = nn.Parameter(torch.zeros(cfg.max_views, dim))
        if cfg.motion:
            self.motion_patch_embedding = nn.Conv3d(cfg.in_channels, dim, kernel_size=cfg.patch_size,
                                                    stride=cfg.patch_size)
            self.motion_time_proj = nn.Linear(dim, dim * 6)
            self.motion_proj_out = nn.Linear(dim, patch_out)
            self.motion_out_scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
            n_special = cfg.num_scale_tokens + cfg.num_register_tokens
            self.special_tokens = nn.Parameter(torch.randn(n_special, dim) * 0.02)
            self.depth_head = nn.Linear(dim, 1)
        if cfg.motion_reference:
            self.motion_reference_embedding = nn.Conv3d(cfg.in_channels, dim, kernel_size=(1, *cfg.patch_size[1:]),
                                                        stride=(1, *cfg.patch_size[1:]))
        if cfg.pooled_text:
            self.pooled_text_embedder = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        if cfg.camera_rays:
            self.ray_embedding = nn.Linear(RAY_FEATURES, dim)
            self.camera_embedding = nn.Linear(CAMERA_FEATURES, dim)
        self.init_new_modules()

    # ------------------------------------------------------------------ construction
    def inter_view_parameters(self) -> list[nn.Parameter]:
        """The parameters only inter-view attention uses (``blocks.i.attn_view``, ``blocks.i.view_gate``,
        ``view_embedding``): with one view per sample they get no gradient."""
        if not self.config.inter_view:
            return []
        params = [self.view_embedding]
        for block in self.blocks:
            params += [*block.attn_view.parameters(), block.view_gate]
        return params

    @torch.no_grad()
    def init_new_modules(self) -> None:
        """Initialise new modules from the (pretrained) Wan ones so the video output equals Wan's.

        Inter-view attention copies ``attn1`` and has a zero gate; motion modules copy their video
        counterparts (both modalities are Wan-VAE latents); gates, the view embedding, the pooled-text
        embedder's output layer, the ray / camera embeddings and the motion reference embedding are zero.
        """
        cfg = self.config
        for block in self.blocks:
            if cfg.inter_view:
                block.attn_view.load_state_dict(block.attn1.state_dict())
                block.view_gate.zero_()
            if cfg.motion:
                block.motion_scale_shift_table.copy_(block.scale_shift_table)
                block.cross_modal_gate.zero_()
        if cfg.inter_view:
            self.view_embedding.zero_()
        if cfg.motion:
            self.motion_patch_embedding.load_state_dict(self.patch_embedding.state_dict())
            self.motion_time_proj.load_state_dict(self.condition_embedder.time_proj.state_dict())
            self.motion_proj_out.load_state_dict(self.proj_out.state_dict())
            self.motion_out_scale_shift_table.copy_(self.scale_shift_table)
        if cfg.pooled_text:
            nn.init.zeros_(self.pooled_text_embedder[-1].weight)
            nn.init.zeros_(self.pooled_text_embedder[-1].bias)
        if cfg.camera_rays:
            for layer in (self.ray_embedding, self.camera_embedding):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        if cfg.motion_reference:
            nn.init.zeros_(self.motion_reference_embedding.weight)
            nn.init.zeros_(self.motion_reference_embedding.bias)

    @classmethod
    def from_wan(cls, local_dir: str | Path, config: MJDConfig | None = None, **changes) -> "MJDTransformer":
        """Build from a local Wan2.2 diffusers directory (``<local_dir>/transformer/``).

        The architecture comes from ``transformer/config.json`` (``changes`` may set the MJD-only
        fields, e.g. ``motion=False``); Wan weights are loaded from the safetensors shards with
        ``strict=False`` and the new modules are then initialised by ``init_new_modules``.
        """
        from safetensors.torch import load_file

        tdir = Path(local_dir) / WAN_TRANSFORMER_SUBDIR
        cfg_path = tdir / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"no Wan transformer config at {cfg_path}: put the Wan2.2-TI2V-5B-Diffusers directory "
                f"(transformer/, vae/, text_encoder/, tokenizer/, scheduler/) at {Path(local_dir)}")
        shards = sorted(tdir.glob("*.safetensors"))
        if not shards:
            raise FileNotFoundError(f"no *.safetensors weights in {tdir}: copy the Wan transformer shards there")
        wan_cfg = json.loads(cfg_path.read_text())
        if wan_cfg.get("image_dim") or wan_cfg.get("added_kv_proj_dim"):
            raise ValueError(f"{cfg_path} is an image-embedding (Wan2.1 I2V) model; MJD needs a TI2V model")
        fields = {f.name for f in dataclasses.fields(MJDConfig)}
        wan_fields = {k: (tuple(v) if k == "patch_size" else v) for k, v in wan_cfg.items() if k in fields}
        config = (config or MJDConfig()).replace(**wan_fields, **changes)
        model = cls(config)
        state = {}
        for shard in shards:
            state.update(load_file(str(shard)))
        result = model.load_state_dict(state, strict=False)
        new_prefixes = ("attn_view", "view_gate", "motion_", "cross_modal_gate", "view_embedding",
                        "special_tokens", "depth_head", "pooled_text_embedder", "ray_embedding", "camera_embedding")
        not_new = [k for k in result.missing_keys if not any(p in k for p in new_prefixes)]
        if not_new or result.unexpected_keys:
            raise ValueError(f"Wan weights in {tdir} do not match the config: missing {not_new[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]}")
        model.init_new_modules()
        logger.info("loaded Wan weights from %s (%d tensors), %d new tensors initialised",
                    tdir, len(state), len(result.missing_keys))
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ forward
    def _check_inputs(self, video, motion, timestep, text, ref_mask, guidance, camera):
        if video.ndim != 6:
            raise ValueError(f"video_latents must be (B, V, C, F', h, w), got shape {tuple(video.shape)}")
        b, v, c, f, h, w = video.shape
        p_t, p_h, p_w = self.config.patch_size
        if c != self.config.in_channels or f % p_t or h % p_h or w % p_w:
            raise ValueError(f"video_latents shape {tuple(video.shape)} needs C={self.config.in_channels} and "
                             f"F', h, w divisible by patch {self.config.patch_size}")
        if v > self.config.max_views and self.config.inter_view:
            raise ValueError(f"{v} views exceed max_views={self.config.max_views}")
        if self.config.motion and (motion is None or motion.shape != video.shape):
            raise ValueError(f"motion_latents must match video_latents {tuple(video.shape)}, got "
                             f"{None if motion is None else tuple(motion.shape)}")
        if not self.config.motion and motion is not None:
            raise ValueError("motion_latents given but this MJD has motion=False")
        if guidance is not None and (motion is None or guidance.shape != motion.shape):
            raise ValueError(f"motion_guidance shape {tuple(guidance.shape)} must match motion_latents")
        if timestep.shape != (b,):
            raise ValueError(f"timestep must be (B,) = ({b},), got {tuple(timestep.shape)}")
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != self.config.text_dim:
            raise ValueError(f"encoder_hidden_states must be (B={b}, L, {self.config.text_dim}), "
                             f"got {tuple(text.shape)}")
        if ref_mask is not None and ref_mask.shape != (b, v):
            raise ValueError(f"ref_mask must be (B, V) = ({b}, {v}), got {tuple(ref_mask.shape)}")
        if self.config.camera_rays and (camera is None or camera.shape != (b, v, CAMERA_FEATURES)):
            raise ValueError(f"this MJD has camera_rays=True: camera must be (B, V, {CAMERA_FEATURES}) = "
                             f"({b}, {v}, {CAMERA_FEATURES}) (camera_features), got "
                             f"{None if camera is None else tuple(camera.shape)}")

    def _unpatchify(self, x: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
        """(N, F'*h'*w', C*p_t*p_h*p_w) tokens -> (N, C, F', h, w) latents (as Wan does)."""
        p_t, p_h, p_w = self.config.patch_size
        x = x.reshape(x.shape[0], f // p_t, h // p_h, w // p_w, p_t, p_h, p_w, -1)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def forward(self, video_latents: torch.Tensor, motion_latents: torch.Tensor | None, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor, ref_mask: torch.Tensor | None = None,
                motion_guidance: torch.Tensor | None = None, camera: torch.Tensor | None = None) -> MJDOutput:
        """Predict video/motion velocities and per-view depth ranges.

        video_latents: (B, V, C, F', h, w) noisy video latents; where ``ref_mask`` is set, frame 0
            must already hold the reference-image latent (the sampler / training loop imposes it).
        motion_latents: (B, V, C, F', h, w) noisy motion latents, or None when ``motion=False``.
        timestep: (B,) scheduler timestep (``diffusion.flow.model_timestep`` of the noise level).
        encoder_hidden_states: (B, L, text_dim) text tokens (umT5 output).
        ref_mask: (B, V) bool, True where view v has a reference image: its frame-0 video tokens
            get timestep 0 (Wan TI2V per-token timesteps). None = no references.
        motion_guidance: (B, V, C, F', h, w) guidance latent ADDED to the motion input
            (Algorithm 1 line 9), or None.
        camera: (B, V, CAMERA_FEATURES) ``camera_features`` of each view (needed with
            ``camera_rays``; not read otherwise).
        """
        self._check_inputs(video_latents, motion_latents, timestep, encoder_hidden_states, ref_mask,
                           motion_guidance, camera)
        cfg = self.config
        b, v, c, f, h, w = video_latents.shape
        n = b * v
        p_t, p_h, p_w = cfg.patch_size
        t_tok, hw = f // p_t, (h // p_h) * (w // p_w)
        rotary = self.rope(video_latents[:, 0])  # each (1, F'*h'*w', 1, head_dim)

        # 1. Patch embedding: (B*V, C, F', h, w) -> (B*V, F'*h'*w', d) -> (B*V, F', h'*w', d)
        video = self.patch_embedding(video_latents.flatten(0, 1)).flatten(2).transpose(1, 2)
        groups = [video.reshape(n, t_tok, hw, -1).contiguous()]
        if cfg.camera_rays:
            cam = camera.flatten(0, 1).float()  # (N, CAMERA_FEATURES)
            rays = self.ray_embedding(camera_rays(cam, h // p_h, w // p_w)).to(video.dtype)  # (N, h'*w', d)
            groups[0] = groups[0] + rays[:, None]

        # 2. Condition embeddings for t and for t = 0 (reference frame): (2B, d), (2B, 6d)
        times = torch.cat([timestep, torch.zeros_like(timestep)])
        temb, tproj, text, _ = self.condition_embedder(times, encoder_hidden_states)
        if cfg.pooled_text:
            temb = temb + self.pooled_text_embedder(pool_text(encoder_hidden_states)).repeat(2, 1)
            tproj = self.condition_embedder.time_proj(self.condition_embedder.act_fn(temb))
        tproj = tproj.unflatten(1, (6, -1))
        has_ref = (ref_mask if ref_mask is not None else torch.zeros(b, v, dtype=torch.bool,
                                                                     device=video.device)).reshape(n)
        frame0_ref = torch.zeros(n, t_tok, dtype=torch.bool, device=video.device)
        frame0_ref[:, 0] = has_ref
        sel = frame0_ref[..., None, None]  # (N, T, 1, 1)
        t_idx = torch.arange(b, device=video.device).repeat_interleave(v)
        video_tproj = torch.where(sel[..., None], tproj[b + t_idx][:, None, None], tproj[t_idx][:, None, None])
        video_temb = torch.where(sel, temb[b + t_idx][:, None, None], temb[t_idx][:, None, None])  # (N,T,1,d)
        mods = [video_tproj]  # (N, T, 1, 6, d)
        text = text.repeat_interleave(v, dim=0)  # (B*V, L, d)

        if cfg.motion:
            motion_in = motion_latents if motion_guidance is None else motion_latents + motion_guidance
            motion = self.motion_patch_embedding(motion_in.flatten(0, 1)).flatten(2).transpose(1, 2)
            special = self.special_tokens.to(video.dtype).expand(n, 1, -1, -1)  # (N, 1, t_s + t_r, d)
            motion = motion.reshape(n, t_tok, hw, -1)
            if cfg.motion_reference:  # (N, C, 1, h, w) reference latent -> (N, h'*w', d), 0 without a reference
                reference = self.motion_reference_embedding(video_latents[:, :, :, :1].flatten(0, 1))
                motion = motion + (reference.flatten(2).transpose(1, 2) * has_ref[:, None, None])[:, None]
            if cfg.camera_rays:
                motion = motion + rays[:, None]
                special = special + self.camera_embedding(cam).to(video.dtype)[:, None, None]
            groups += [motion.contiguous(), special]
            motion_tproj = self.motion_time_proj(self.condition_embedder.act_fn(temb[:b]))
            motion_tproj = motion_tproj.unflatten(1, (6, -1))[t_idx][:, None, None]  # (N, 1, 1, 6, d)
            mods += [motion_tproj, motion_tproj]

        # 3. Blocks
        view_emb = self.view_embedding[:v] if cfg.inter_view else None
        for block in self.blocks:
            if cfg.gradient_checkpointing and torch.is_grad_enabled():
                groups = checkpoint(block, groups, mods, text, rotary, v, view_emb, use_reentrant=False)
            else:
                groups = block(groups, mods, text, rotary, v, view_emb)

        # 4. Output norm, projection & unpatchify
        shift, scale = (self.scale_shift_table[:, None] + video_temb[..., None, :]).chunk(2, dim=-2)
        out = _modulate(self.norm_out, groups[0], shift.squeeze(-2), scale.squeeze(-2))
        video_velocity = self._unpatchify(self.proj_out(out.flatten(1, 2)), f, h, w).unflatten(0, (b, v))
        if not cfg.motion:
            return MJDOutput(video_velocity, None, None)
        motion_temb = temb[t_idx][:, None, None]  # (N, 1, 1, d)
        shift, scale = (self.motion_out_scale_shift_table[:, None] + motion_temb[..., None, :]).chunk(2, dim=-2)
        out = _modulate(self.norm_out, groups[1], shift.squeeze(-2), scale.squeeze(-2))
        motion_velocity = self._unpatchify(self.motion_proj_out(out.flatten(1, 2)), f, h, w).unflatten(0, (b, v))
        scale_tokens = groups[2][:, 0, :cfg.num_scale_tokens]  # (N, t_s, d)
        depth_range = self.depth_head(self.norm_out(scale_tokens.float()).type_as(scale_tokens))
        return MJDOutput(video_velocity, motion_velocity, depth_range.reshape(b, v, cfg.num_scale_tokens))


# The camera of a view as MJD reads it (``camera_features``): camera-to-world rotation (9) and camera
# centre (3, metres) in the world frame, then the intrinsics as fractions of the image size
# fx / W, fy / H and the principal point's position (cx + 0.5) / W, (cy + 0.5) / H.
CAMERA_FEATURES = 16
# Per token ray (``camera_rays``): unit direction d (3), moment o x d (3, metres), origin o (3, metres).
RAY_FEATURES = 9


def camera_features(intrinsics: torch.Tensor, world_T_cam: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(..., 3, 3) pixel intrinsics and (..., 4, 4) camera-to-world poses of ``width`` x ``height``
    images -> (..., CAMERA_FEATURES): independent of the image resolution (a resized camera gives the
    same numbers)."""
    fractions = torch.stack([intrinsics[..., 0, 0] / width, intrinsics[..., 1, 1] / height,
                             (intrinsics[..., 0, 2] + 0.5) / width, (intrinsics[..., 1, 2] + 0.5) / height], -1)
    return torch.cat([world_T_cam[..., :3, :3].flatten(-2), world_T_cam[..., :3, 3], fractions], -1).float()


def camera_rays(camera: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """World rays through the centres of a ``rows`` x ``cols`` token grid over the image.

    Args:
        camera: (N, CAMERA_FEATURES) ``camera_features``.
    Returns:
        (N, rows * cols, RAY_FEATURES) direction (unit), moment o x d and origin o (metres), row-major
        like the tokens.
    """
    rotation, origin = camera[:, :9].unflatten(1, (3, 3)), camera[:, 9:12]
    fx, fy, px, py = camera[:, 12:].unbind(1)
    v, u = torch.meshgrid((torch.arange(rows, device=camera.device) + 0.5) / rows,
                          (torch.arange(cols, device=camera.device) + 0.5) / cols, indexing="ij")
    x = (u.flatten()[None] - px[:, None]) / fx[:, None]  # (N, rows*cols), camera frame at depth 1
    y = (v.flatten()[None] - py[:, None]) / fy[:, None]
    direction = torch.stack([x, y, torch.ones_like(x)], -1) @ rotation.transpose(1, 2)  # world frame
    direction = direction / direction.norm(dim=-1, keepdim=True)
    origin = origin[:, None].expand_as(direction)
    return torch.cat([direction, torch.linalg.cross(origin, direction), origin], -1)


def pool_text(tokens: torch.Tensor) -> torch.Tensor:
    """(B, L, text_dim) text tokens, zero after each text's last token -> (B, text_dim) their mean
    over the text's own tokens (zeros for a text with none)."""
    own = (tokens != 0).any(-1, keepdim=True).to(tokens.dtype)  # (B, L, 1)
    return (tokens * own).sum(1) / own.sum(1).clamp(min=1)


def wan_reference_model(config: MJDConfig) -> WanTransformer3DModel:
    """A ``WanTransformer3DModel`` with the Wan part of ``config`` (used to check MJD against Wan)."""
    return WanTransformer3DModel(**config.wan_kwargs())


def patch_tokens_per_view(config: MJDConfig, latent_frames: int, latent_height: int, latent_width: int) -> int:
    """Number of video tokens of one view (= motion tokens when motion is on)."""
    p_t, p_h, p_w = config.patch_size
    return (latent_frames // p_t) * (latent_height // p_h) * (latent_width // p_w)


__all__ = ["MJDConfig", "MJDOutput", "MJDTransformer", "MJDBlock", "PRESETS", "preset",
           "patch_tokens_per_view", "pool_text", "wan_reference_model", "CAMERA_FEATURES", "RAY_FEATURES",
           "camera_features", "camera_rays"]
