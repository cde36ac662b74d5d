"""DPA, the Diffusion Points Aligner (paper Sec. 3.4): a Point-Transformer-V3-style flow-matching
network that turns noisy 4D tracks into a velocity, conditioned on per-view coarse tracks.

Contract (called at every denoising step of the closed loop)::

    v = DPA(M_t (B, F, K, 3), M_hat (B, V, F, Kc, 3), timestep (B,), mask (B, V, F, Kc))
    M_bar = M_t - t v        # (B, F, K, 3), metres, world frame; timestep = model_timestep(t)

Data flow inside (B samples, F frames, K noisy tracks, V views, Kc coarse tracks per view):

1. Normalisation. Centre c (B, 3) and scale s (B,) come from the valid coarse points
   (:func:`~syncmv4d_core.diffusion.track_flow.coarse_track_frame`); every input coordinate enters the
   network as (x - c) / s and the predicted velocity leaves it multiplied by s.
2. One point cloud per (sample, frame): the K noisy points of that frame plus the valid coarse
   points of all V views at that frame (their union), voxelised at ``grid_size`` metres. Noisy
   points are embedded from their position; coarse points from their position plus a learned view
   embedding.
3. A U-Net of PTv3 blocks over these clouds. Each block: xCPE (SubMConv3d k=3 -> Linear ->
   LayerNorm on voxel-averaged features, residual), adaLN-modulated serialized patch attention
   (the orders cycle z, z-trans, hilbert, hilbert-trans), adaLN-modulated MLP. Patches hold
   spatially close points of the union whatever view they come from, so this is the *inter-view
   geometry attention*: coarse points of different views on the same surface, and noisy points
   that have reached it, exchange information. Grid pooling (stride 2, max) between levels,
   unpooling with skip connections back up.
4. At full resolution (after the first encoder level and after the last decoder level) a track
   block acts on the K noisy tracks as identities over F frames: *cross-attention to the coarse
   4D motion* (one query per noisy track, one key per coarse trajectory, so temporal context
   enters as whole trajectories), then temporal self-attention along each track, then an MLP.
5. Head: adaLN-modulated LayerNorm -> Linear to a velocity (zero-initialised), times s; with
   ``num_labels`` a label head (hand / tool / target) on the track features averaged over frames.

Timestep conditioning: sinusoidal embedding of the timestep (``diffusion.flow.model_timestep``,
as MJD's) -> MLP -> adaLN-Zero modulation of every
sub-layer (shift, scale, gate; gates start at zero so every block starts as the identity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from syncmv4d_core.diffusion.track_flow import coarse_track_frame
from syncmv4d_core.models.config import ConfigMixin
from syncmv4d_core.models.point import ORDERS, Point
from syncmv4d_core.models.spconv_cpu import SubMConv3d


@dataclass(frozen=True)
class DPAConfig(ConfigMixin):
    """Architecture of a DPA network."""

    channels: tuple[int, ...] = (32, 64)  # feature width per U-Net level (>= 2 levels)
    depths: tuple[int, ...] = (1, 1)  # PTv3 blocks per encoder level; decoder levels reuse depths[:-1]
    head_dim: int = 16  # attention head width; heads = channels / head_dim
    patch_size: int = 128  # serialized attention patch (PTv3 uses 1024 with flash attention; ~128 suits CPU)
    grid_size: float = 0.01  # level-0 voxel edge, metres (each pooling level doubles it)
    mlp_ratio: float = 2.0
    freq_dim: int = 64  # sinusoidal timestep features
    max_views: int = 8  # size of the learned view embedding table
    orders: tuple[str, ...] = ORDERS  # serialization orders cycled by consecutive blocks
    num_labels: int = 0  # > 0: a head classifies each track (scene label codes 0..num_labels-1)
    gradient_checkpointing: bool = False  # recompute each point block's activations in backward

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or len(self.depths) != len(self.channels):
            raise ValueError(
                f"need >= 2 levels with one depth each, got channels={self.channels} depths={self.depths}"
            )
        bad = [c for c in self.channels if c % self.head_dim]
        if bad:
            raise ValueError(f"channels {bad} are not multiples of head_dim={self.head_dim}")
        unknown = [o for o in self.orders if o not in ORDERS]
        if unknown or not self.orders:
            raise ValueError(f"orders must be a non-empty subset of {ORDERS}, got {self.orders}")
        if self.num_labels < 0:
            raise ValueError(f"num_labels={self.num_labels} must be >= 0")
        if self.grid_size <= 0 or self.patch_size < 1:
            raise ValueError(f"grid_size={self.grid_size} and patch_size={self.patch_size} must be positive")

    @classmethod
    def from_dict(cls, d: dict) -> DPAConfig:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls().replace(**d)


PRESETS: dict[str, DPAConfig] = {
    # ~0.2 M parameters: CPU tests and the tiny end-to-end pipeline (K = 256..512).
    "tiny": DPAConfig(channels=(32, 64), depths=(1, 1)),
    # a few M parameters: CPU training demos.
    "small": DPAConfig(channels=(48, 96, 192), depths=(2, 2, 2)),
    # PTv3-like widths for K = 1600 on a GPU (patch 1024 as with flash attention).
    "paper": DPAConfig(channels=(64, 128, 256, 512), depths=(2, 2, 2, 4), head_dim=32, patch_size=1024),
}


def preset(name: str, **changes) -> DPAConfig:
    """The named preset (``tiny``, ``small``, ``paper``) with optional field changes."""
    if name not in PRESETS:
        raise ValueError(f"unknown DPA preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**changes)


def sinusoidal_embedding(x: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of (N,) positions: (N, dim), cos half then sin half (periods up to 1e4)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angle = x.float()[:, None] * freq[None]
    return torch.cat([angle.cos(), angle.sin()], dim=-1)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(dim: int, ratio: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


def patch_partition(offset: Tensor, patch_size: int) -> tuple[Tensor, Tensor]:
    """Split serialized segments into patches of at most ``patch_size`` consecutive points.

    Patches never cross a segment boundary; the last patch of a segment is padded.

    Args:
        offset: (S,) cumulative point counts of the segments.
        patch_size: points per patch; a smaller value is used when every segment is smaller.

    Returns:
        index: (P, L) int64 positions in the serialized sequence (padding repeats a valid one).
        valid: (P, L) bool, False on padding.
    """
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    length = min(patch_size, int(counts.max()))
    patches = (counts + length - 1) // length  # (S,)
    segment = torch.repeat_interleave(torch.arange(len(counts), device=offset.device), patches)
    first = torch.cumsum(patches, 0) - patches  # first patch id of each segment
    start = (offset - counts)[segment] + (torch.arange(len(segment), device=offset.device) - first[segment]) * length
    index = start[:, None] + torch.arange(length, device=offset.device)[None]  # (P, L)
    valid = index < offset[segment][:, None]
    return torch.where(valid, index, start[:, None]), valid


class SerializedAttention(nn.Module):
    """Multi-head self-attention inside patches of serialized points (PTv3)."""

    def __init__(self, dim: int, head_dim: int, patch_size: int) -> None:
        super().__init__()
        self.heads = dim // head_dim
        self.patch_size = patch_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, point: Point, x: Tensor, order: int) -> Tensor:
        """Attend within patches of ``point`` serialized by its order row ``order``.

        Args:
            point: serialized Point (N points).
            x: (N, C) normalised features.
            order: row of ``point.serialized_order`` to use.

        Returns:
            (N, C) attention output, in the point order of ``x``.
        """
        n, c = x.shape
        index, valid = patch_partition(point.offset, self.patch_size)  # (P, L)
        sorted_qkv = self.qkv(x)[point.serialized_order[order]]  # (N, 3C) serialized order
        qkv = sorted_qkv[index].unflatten(-1, (3, self.heads, c // self.heads))  # (P, L, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (P, H, L, D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
        out = out.transpose(1, 2).flatten(2)[valid]  # (N, C) serialized order
        return self.proj(out[point.serialized_inverse[order]])


class PointBlock(nn.Module):
    """PTv3 block with timestep modulation: xCPE, serialized attention, MLP."""

    def __init__(self, dim: int, temb_dim: int, config: DPAConfig, level: int, order: int) -> None:
        super().__init__()
        self.order = order
        self.gradient_checkpointing = config.gradient_checkpointing
        # 1. xCPE: SubMConv3d(k=3) -> Linear -> LayerNorm on voxel features
        self.cpe_conv = SubMConv3d(dim, dim, 3, indice_key=f"dpa_level{level}")
        self.cpe_linear = nn.Linear(dim, dim)
        self.cpe_norm = nn.LayerNorm(dim)
        # 2. Serialized patch attention (inter-view geometry attention over the union of points)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = SerializedAttention(dim, config.head_dim, config.patch_size)
        # 3. MLP
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = _mlp(dim, config.mlp_ratio)
        # adaLN-Zero: (shift, scale, gate) for 2. and 3.
        self.modulation = _zero_linear(temb_dim, 6 * dim)

    def forward(self, point: Point, temb: Tensor) -> Point:
        """Update ``point.feat`` (N, C) in place; ``temb`` (S, temb_dim) is per segment."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            # keep only the block's input for backward: the block's activations (~20 C floats a point)
            # dominate DPA's training memory at the paper size (docs/paper-scale.md)
            point.feat = checkpoint(self._mix, point, point.feat, temb, use_reentrant=False)
        else:
            point.feat = self._mix(point, point.feat, temb)
        # keep the spconv tensor in step with feat (PTv3 re-syncs after every block)
        point.sparse_conv_feat = point.sparse_conv_feat.replace_feature(point.voxel_features(point.feat))
        return point

    def _mix(self, point: Point, x: Tensor, temb: Tensor) -> Tensor:
        """(N, C) features after xCPE, attention and MLP; reads ``point``'s structure, never its feat."""
        # 1. xCPE (voxel-averaged features, so points sharing a voxel get the same encoding)
        sparse = point.sparse_conv_feat.replace_feature(point.voxel_features(x))
        x = x + self.cpe_norm(self.cpe_linear(self.cpe_conv(sparse).features[point.voxel_inverse]))
        mod = self.modulation(temb)[point.batch].chunk(6, dim=-1)  # 6 x (N, C)
        # 2. Attention
        h = _modulate(self.norm1(x), mod[0], mod[1])
        x = x + mod[2] * self.attn(point, h, self.order)
        # 3. MLP
        h = _modulate(self.norm2(x), mod[3], mod[4])
        return x + mod[5] * self.mlp(h)


class TrackBlock(nn.Module):
    """Track-level mixing of the noisy points: coarse-motion cross-attention, temporal attention, MLP."""

    def __init__(self, dim: int, temb_dim: int, config: DPAConfig) -> None:
        super().__init__()
        self.heads = dim // config.head_dim
        # 1. Cross-attention: one query per noisy track (summary over frames), keys = coarse trajectories
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.summary = _mlp(dim, 1.0)
        self.cross_q = nn.Linear(dim, dim)
        self.cross_kv = nn.Linear(dim, 2 * dim)
        self.cross_proj = nn.Linear(dim, dim)
        # 2. Temporal self-attention along each track
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.temporal_qkv = nn.Linear(dim, 3 * dim)
        self.temporal_proj = nn.Linear(dim, dim)
        # 3. MLP
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = _mlp(dim, config.mlp_ratio)
        self.modulation = _zero_linear(temb_dim, 9 * dim)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)  # (..., H, L, D)

    def forward(
        self, x: Tensor, frame_emb: Tensor, coarse_tokens: Tensor, coarse_valid: Tensor, temb: Tensor
    ) -> Tensor:
        """Mix track features.

        Args:
            x: (B, F, K, C) noisy-track features.
            frame_emb: (F, C) frame position embedding.
            coarse_tokens: (B, T, C) coarse trajectory tokens (T = V * Kc).
            coarse_valid: (B, T) bool, False for trajectories with no valid point.
            temb: (B, temb_dim) timestep embedding.

        Returns:
            (B, F, K, C) updated features.
        """
        b, f, k, c = x.shape
        mod = self.modulation(temb)[:, None, None].chunk(9, dim=-1)  # 9 x (B, 1, 1, C)
        # 1. Cross-attention to the coarse 4D motion
        h = _modulate(self.norm1(x), mod[0], mod[1]) + frame_emb[None, :, None]
        query = self.summary(h).mean(1)  # (B, K, C)
        q = self._heads(self.cross_q(query))  # (B, H, K, D)
        key, value = self._heads(self.cross_kv(coarse_tokens)).chunk(2, dim=-1)  # (B, H, T, D) each
        cross = F.scaled_dot_product_attention(q, key, value, attn_mask=coarse_valid[:, None, None, :])
        cross = self.cross_proj(cross.transpose(1, 2).flatten(2))  # (B, K, C)
        x = x + mod[2] * cross[:, None]
        # 2. Temporal attention along each track
        h = _modulate(self.norm2(x), mod[3], mod[4]) + frame_emb[None, :, None]
        h = h.permute(0, 2, 1, 3).reshape(b * k, f, c)  # (B*K, F, C)
        q, key, value = self._heads(self.temporal_qkv(h)).chunk(3, dim=-1)  # (B*K, H, F, D) each
        temporal = F.scaled_dot_product_attention(q, key, value).transpose(1, 2).flatten(2)  # (B*K, F, C)
        temporal = self.temporal_proj(temporal).reshape(b, k, f, c).permute(0, 2, 1, 3)  # (B, F, K, C)
        x = x + mod[5] * temporal
        # 3. MLP
        h = _modulate(self.norm3(x), mod[6], mod[7])
        return x + mod[8] * self.mlp(h)


class DPA(nn.Module):
    """Diffusion Points Aligner: velocity of noisy 4D tracks given per-view coarse tracks."""

    def __init__(self, config: DPAConfig = DPAConfig()) -> None:
        super().__init__()
        self.config = config
        cfg, widths = config, config.channels
        c0, temb_dim = widths[0], max(widths)
        # 1. Timestep and frame embeddings
        self.time_mlp = nn.Sequential(nn.Linear(cfg.freq_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        # 2. Point embeddings: noisy (position, source coarse position, source flag), coarse (position + view)
        self.noisy_embed = nn.Linear(3, c0)
        self.coarse_embed = nn.Linear(3, c0)
        self.view_embedding = nn.Embedding(cfg.max_views, c0)
        # 3. Coarse trajectory tokens: per-frame MLP of (position, frame), masked mean over frames
        self.trajectory_point = nn.Sequential(nn.Linear(3, c0), nn.GELU(), nn.Linear(c0, c0))
        self.trajectory_mix = _mlp(c0, 2.0)
        # 4. U-Net of PTv3 blocks; block i of a level uses serialization order i (cycled)
        self.encoders = nn.ModuleList()
        self.pools = nn.ModuleList()
        for level, (width, depth) in enumerate(zip(widths, cfg.depths)):
            if level > 0:
                self.pools.append(nn.Linear(widths[level - 1], width))
            self.encoders.append(nn.ModuleList(
                [PointBlock(width, temb_dim, cfg, level, i % len(cfg.orders)) for i in range(depth)]
            ))
        self.pool_norms = nn.ModuleList([nn.LayerNorm(w) for w in widths[1:]])
        self.unpool_up = nn.ModuleList([nn.Linear(widths[l + 1], widths[l]) for l in range(len(widths) - 1)])
        self.unpool_skip = nn.ModuleList([nn.Linear(widths[l], widths[l]) for l in range(len(widths) - 1)])
        self.decoders = nn.ModuleList([
            nn.ModuleList([PointBlock(widths[l], temb_dim, cfg, l, i % len(cfg.orders)) for i in range(cfg.depths[l])])
            for l in range(len(widths) - 1)
        ])
        # 5. Track blocks at full resolution (after encoder level 0, after decoder level 0)
        self.track_in = TrackBlock(c0, temb_dim, cfg)
        self.track_out = TrackBlock(c0, temb_dim, cfg)
        # 6. Head
        self.norm_out = nn.LayerNorm(c0, elementwise_affine=False)
        self.modulation_out = _zero_linear(temb_dim, 2 * c0)
        self.proj_out = _zero_linear(c0, 3)
        # 7. Track labels from the track features averaged over frames
        self.label_head = nn.Sequential(nn.LayerNorm(c0), nn.Linear(c0, cfg.num_labels)) if cfg.num_labels else None

    def check_inputs(
        self, noisy_tracks: Tensor, coarse_tracks: Tensor, timestep: Tensor,
        coarse_mask: Tensor | None,
    ) -> Tensor:
        """Validate shapes; returns the coarse mask (all True when None)."""
        if noisy_tracks.ndim != 4 or noisy_tracks.shape[-1] != 3:
            raise ValueError(f"noisy_tracks must be (B, F, K, 3), got {tuple(noisy_tracks.shape)}")
        b, f, k, _ = noisy_tracks.shape
        if coarse_tracks.ndim != 5 or coarse_tracks.shape[0] != b or coarse_tracks.shape[2] != f or coarse_tracks.shape[-1] != 3:
            raise ValueError(f"coarse_tracks must be ({b}, V, {f}, Kc, 3), got {tuple(coarse_tracks.shape)}")
        if coarse_tracks.shape[1] > self.config.max_views:
            raise ValueError(f"{coarse_tracks.shape[1]} views exceed max_views={self.config.max_views}")
        if timestep.shape != (b,):
            raise ValueError(f"timestep must have shape ({b},), got {tuple(timestep.shape)}")
        if coarse_mask is None:
            coarse_mask = torch.ones(coarse_tracks.shape[:-1], dtype=torch.bool, device=coarse_tracks.device)
        elif coarse_mask.shape != coarse_tracks.shape[:-1]:
            raise ValueError(f"coarse_mask must be {tuple(coarse_tracks.shape[:-1])}, got {tuple(coarse_mask.shape)}")
        return coarse_mask.bool()

    def forward(
        self,
        noisy_tracks: Tensor,
        coarse_tracks: Tensor,
        timestep: Tensor,
        coarse_mask: Tensor | None = None,
        return_labels: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict the rectified-flow velocity of the noisy tracks (and their labels).

        Args:
            noisy_tracks: (B, F, K, 3) M_t, metres, world frame.
            coarse_tracks: (B, V, F, Kc, 3) per-view coarse tracks M_hat, metres, world frame.
            timestep: (B,) ``model_timestep(t)`` of the noise level t in [0, 1] (as MJD).
            coarse_mask: (B, V, F, Kc) bool validity of the coarse points (None: all valid).

            return_labels: also return label logits (needs ``config.num_labels > 0``).

        Returns:
            (B, F, K, 3) velocity v, metres per unit t (M_bar = M_t - t v); with ``return_labels``
            also (B, K, num_labels) label logits.
        """
        coarse_mask = self.check_inputs(noisy_tracks, coarse_tracks, timestep, coarse_mask)
        b, f, k, _ = noisy_tracks.shape
        v = coarse_tracks.shape[1]
        device = noisy_tracks.device
        # 1. Normalisation from the coarse tracks
        centre, scale = coarse_track_frame(coarse_tracks, coarse_mask)  # (B, 3), (B,)
        noisy_n = (noisy_tracks - centre[:, None, None]) / scale[:, None, None, None]  # (B, F, K, 3)
        coarse_n = (coarse_tracks - centre[:, None, None, None]) / scale[:, None, None, None, None]

        # 2. Timestep / frame embeddings
        temb = self.time_mlp(sinusoidal_embedding(timestep, self.config.freq_dim))  # (B, Dt)
        temb_segment = temb.repeat_interleave(f, dim=0)  # (B*F, Dt), segment = b * F + frame
        frame_emb = sinusoidal_embedding(torch.arange(f, device=device), self.config.channels[0])  # (F, C0)

        # 3. Coarse trajectory tokens (B, V*Kc, C0)
        valid_w = coarse_mask.to(coarse_n.dtype)[..., None]  # (B, V, F, Kc, 1)
        per_frame = self.trajectory_point(coarse_n) + frame_emb[None, None, :, None]  # (B, V, F, Kc, C0)
        count = valid_w.sum(2).clamp_min(1)  # (B, V, Kc, 1)
        tokens = (self.trajectory_mix(per_frame) * valid_w).sum(2) / count  # (B, V, Kc, C0)
        tokens = tokens + self.view_embedding.weight[:v, None]
        coarse_tokens = tokens.flatten(1, 2)  # (B, V*Kc, C0)
        coarse_valid = coarse_mask.any(2).flatten(1)  # (B, V*Kc)

        # 4. Level-0 point clouds: per (sample, frame) the K noisy points then the valid coarse points
        noisy_feat = self.noisy_embed(noisy_n)  # (B, F, K, C0)
        coarse_feat = self.coarse_embed(coarse_n) + self.view_embedding.weight[:v, None, None]  # (B, V, F, Kc, C0)
        point = self._union_point(noisy_tracks, noisy_feat, coarse_tracks, coarse_feat, coarse_mask)
        noisy_rows = point.track >= 0  # (N,) the B*F*K noisy points, in (b, frame, k) order

        # 5. Encoder
        skips = []
        for level, blocks in enumerate(self.encoders):
            if level > 0:
                pooled, cluster = point.grid_pool(self.pools[level - 1](point.feat), "amax")
                skips.append((point, cluster))
                pooled.feat = F.gelu(self.pool_norms[level - 1](pooled.feat))
                point = pooled.serialize(self.config.orders).sparsify()
            for block in blocks:
                point = block(point, temb_segment)
            if level == 0:
                tracks = self.track_in(point.feat[noisy_rows].view(b, f, k, -1), frame_emb,
                                       coarse_tokens, coarse_valid, temb)
                point.feat = point.feat.masked_scatter(noisy_rows[:, None], tracks.reshape(-1, tracks.shape[-1]))

        # 6. Decoder
        for level in reversed(range(len(self.decoders))):
            skip, cluster = skips[level]
            skip.feat = self.unpool_skip[level](skip.feat) + self.unpool_up[level](point.feat)[cluster]
            point = skip
            for block in self.decoders[level]:
                point = block(point, temb_segment)
        tracks = self.track_out(point.feat[noisy_rows].view(b, f, k, -1), frame_emb, coarse_tokens, coarse_valid, temb)

        # 7. Head: velocity in normalised units, back to metres per unit t
        shift, scale_mod = self.modulation_out(temb)[:, None, None].chunk(2, dim=-1)
        velocity_n = self.proj_out(_modulate(self.norm_out(tracks), shift, scale_mod))  # (B, F, K, 3)
        velocity = velocity_n * scale[:, None, None, None]
        if not return_labels:
            return velocity
        if self.label_head is None:
            raise ValueError("return_labels needs a DPA with num_labels > 0")
        return velocity, self.label_head(tracks.mean(1))  # (B, K, num_labels)

    def _union_point(
        self, noisy: Tensor, noisy_feat: Tensor, coarse: Tensor, coarse_feat: Tensor, coarse_mask: Tensor
    ) -> Point:
        """One segment per (sample, frame): K noisy points then the valid coarse points of all views."""
        b, f, k, _ = noisy.shape
        v, kc = coarse.shape[1], coarse.shape[3]
        device = noisy.device

        def per_frame(x: Tensor) -> Tensor:  # (B, V, F, Kc, ...) -> (B*F, V*Kc, ...)
            return x.transpose(1, 2).flatten(0, 1).flatten(1, 2)

        coord = torch.cat([noisy.flatten(0, 1), per_frame(coarse)], 1)  # (B*F, K+V*Kc, 3)
        feat = torch.cat([noisy_feat.flatten(0, 1), per_frame(coarse_feat)], 1)  # (B*F, K+V*Kc, C0)
        keep = torch.cat([torch.ones(b * f, k, dtype=torch.bool, device=device), per_frame(coarse_mask)], 1)
        segment = torch.arange(b * f, device=device)[:, None].expand_as(keep)
        view = torch.cat([torch.full((b * f, k), -1, device=device),
                          per_frame(torch.arange(v, device=device)[None, :, None, None].expand(b, v, f, kc))], 1)
        track = torch.cat([torch.arange(k, device=device).expand(b * f, k),
                           torch.full((b * f, v * kc), -1, device=device)], 1)
        point = Point.from_points(
            coord=coord[keep], feat=feat[keep], batch=segment[keep], grid_size=self.config.grid_size,
            frame=(segment[keep] % f), view=view[keep], track=track[keep],
        )
        return point.serialize(self.config.orders).sparsify()
