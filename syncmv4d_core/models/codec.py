"""Latent codecs: videos <-> latents for MJD. Colour videos and motion pseudo videos share one codec.

Convention (Wan's): videos are (N, 3, F, H, W) float in [-1, 1] with F = 4n + 1 frames; latents are
(N, C, F', h, w) with F' = (F - 1) / 4 + 1 (frame 0 is coded on its own, then groups of 4 frames)
and h = H / spatial_compression, w = W / spatial_compression. A single image is F = 1 -> F' = 1.

- ``WanVAECodec``: Wan2.2's ``AutoencoderKLWan`` (z_dim 48, 4x16x16), latents normalised per channel
  with the VAE config's ``latents_mean`` / ``latents_std`` exactly as the Wan pipelines do.
- ``PatchifyCodec``: a fixed, exactly invertible packing for tiny presets: ``temporal`` frames x
  ``spatial`` x ``spatial`` pixels x 3 colours per latent cell (the tiny config's 4 x 4 x 4: 192
  channels); latent frame 0 holds frame 0 repeated ``temporal`` times.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

WAN_VAE_SUBDIR = "vae"


class LatentCodec(nn.Module):
    """Common interface. Attributes: channels (C), temporal_compression, spatial_compression."""

    channels: int
    temporal_compression: int
    spatial_compression: int

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(F', h, w) for a (F, H, W) video; ValueError when F != 4n+1 or H, W not divisible."""
        tc, sc = self.temporal_compression, self.spatial_compression
        if frames < 1 or (frames - 1) % tc:
            raise ValueError(f"frames={frames} must be {tc}n+1")
        if height % sc or width % sc:
            raise ValueError(f"video size {height}x{width} must be divisible by {sc}")
        return (frames - 1) // tc + 1, height // sc, width // sc

    def _check_videos(self, videos: torch.Tensor) -> None:
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(f"videos must be (N, 3, F, H, W) in [-1, 1], got shape {tuple(videos.shape)}")
        self.latent_shape(*videos.shape[2:])

    def _check_latents(self, latents: torch.Tensor) -> None:
        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise ValueError(f"latents must be (N, {self.channels}, F', h, w), got shape {tuple(latents.shape)}")

    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        """videos (N, 3, F, H, W) in [-1, 1] -> latents (N, C, F', h, w)."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (N, C, F', h, w) -> videos (N, 3, F, H, W) in [-1, 1]."""
        raise NotImplementedError


class PatchifyCodec(LatentCodec):
    """Lossless packing of 4 frames x s x s pixels x 3 colours into 3*4*s*s channels (s = 2: 48).

    Channel order: (colour, frame-in-group, pixel row, pixel column). Exactly invertible:
    ``decode(encode(x)) == x`` bit for bit. Has no parameters.
    """

    def __init__(self, spatial: int = 2, temporal: int = 4):
        super().__init__()
        if spatial < 1 or temporal < 1:
            raise ValueError(f"spatial={spatial} and temporal={temporal} must be >= 1")
        self.spatial_compression = spatial
        self.temporal_compression = temporal
        self.channels = 3 * temporal * spatial * spatial

    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        self._check_videos(videos)
        tc, s = self.temporal_compression, self.spatial_compression
        first = videos[:, :, :1].expand(-1, -1, tc, -1, -1)  # frame 0 repeated to a full group
        x = torch.cat([first, videos[:, :, 1:]], dim=2)  # (N, 3, F'*tc, H, W)
        n, c, f, h, w = x.shape
        # (N, 3, F', tc, h, s, w, s) -> (N, 3, tc, s, s, F', h, w) -> (N, 3*tc*s*s, F', h, w)
        x = x.reshape(n, c, f // tc, tc, h // s, s, w // s, s).permute(0, 1, 3, 5, 7, 2, 4, 6)
        return x.reshape(n, self.channels, f // tc, h // s, w // s)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents)
        tc, s = self.temporal_compression, self.spatial_compression
        n, _, f, h, w = latents.shape
        # (N, 3, tc, s, s, F', h, w) -> (N, 3, F', tc, h, s, w, s) -> (N, 3, F'*tc, H, W)
        x = latents.reshape(n, 3, tc, s, s, f, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(n, 3, f * tc, h * s, w * s)
        return x[:, :, tc - 1:]  # latent frame 0 = frame 0 repeated: keep one copy


class WanVAECodec(LatentCodec):
    """Wan2.2 VAE (``AutoencoderKLWan``) with Wan's per-channel latent normalisation.

    encode: z = (mode(q(z|x)) - latents_mean) / latents_std (deterministic posterior mode, as the
    Wan TI2V pipeline encodes its condition image); decode: x = D(z * latents_std + latents_mean).
    """

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        self.channels = cfg.z_dim
        self.temporal_compression = cfg.scale_factor_temporal
        self.spatial_compression = cfg.scale_factor_spatial
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise ValueError(f"VAE latents_mean/std must have z_dim={cfg.z_dim} entries, got "
                             f"{len(cfg.latents_mean)}/{len(cfg.latents_std)}")
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1), persistent=False)
        self.vae.requires_grad_(False)

    @classmethod
    def from_local(cls, local_dir: str | Path, dtype: torch.dtype | str = torch.float32, slicing: bool = False,
                   tiling: bool = False) -> "WanVAECodec":
        """Load ``<local_dir>/vae`` (Wan2.2-TI2V-5B-Diffusers layout). Nothing is downloaded.

        ``dtype``: weight dtype (``"bfloat16"`` halves the VAE's memory; latents stay float32).
        ``slicing`` / ``tiling``: diffusers' sliced (one video at a time) and tiled decoding, which
        bound the decoder's activation memory (``configure``).
        """
        from diffusers import AutoencoderKLWan

        vae_dir = Path(local_dir) / WAN_VAE_SUBDIR
        if not (vae_dir / "config.json").is_file():
            raise FileNotFoundError(f"no Wan VAE at {vae_dir}: put the Wan2.2-TI2V-5B-Diffusers vae/ folder "
                                    f"(config.json + diffusion_pytorch_model.safetensors) there")
        vae = AutoencoderKLWan.from_pretrained(str(vae_dir), torch_dtype=to_dtype(dtype)).eval()
        return cls(vae).configure(slicing=slicing, tiling=tiling)

    def configure(self, dtype: torch.dtype | str | None = None, slicing: bool | None = None,
                  tiling: bool | None = None) -> "WanVAECodec":
        """Set the VAE's weight dtype and diffusers' slicing / tiling (None: unchanged); returns self."""
        if dtype is not None:
            self.vae.to(to_dtype(dtype))
        if slicing is not None:
            self.vae.enable_slicing() if slicing else self.vae.disable_slicing()
        if tiling is not None:
            self.vae.enable_tiling() if tiling else self.vae.disable_tiling()
        return self

    @classmethod
    def tiny(cls, seed: int = 0) -> "WanVAECodec":
        """A random small Wan2.2-architecture VAE (z_dim 48, 4x16x16) for tests; no weights needed."""
        from diffusers import AutoencoderKLWan

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1],
                                   num_res_blocks=1, temperal_downsample=[False, True, True], is_residual=True,
                                   in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                                   scale_factor_temporal=4, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
        return cls(vae.eval())

    def _vae_dtype_device(self) -> tuple[torch.dtype, torch.device]:
        """The VAE's weight dtype and where it runs (the execution device under CPU offload)."""
        param = next(self.vae.parameters())
        return param.dtype, getattr(self, "execution_device", None) or param.device

    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        self._check_videos(videos)
        dtype, device = self._vae_dtype_device()
        with torch.autocast(device.type, enabled=False):  # the VAE runs in its own dtype
            z = self.vae.encode(videos.to(device, dtype)).latent_dist.mode().float()
        return (z - self.latents_mean.to(z.device)) / self.latents_std.to(z.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents)
        dtype, device = self._vae_dtype_device()
        z = latents.float().to(device) * self.latents_std.to(device) + self.latents_mean.to(device)
        with torch.autocast(device.type, enabled=False):
            return self.vae.decode(z.to(dtype)).sample.float()


def to_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.bfloat16`` / ``"bfloat16"`` / ``"bf16"`` -> a floating torch dtype (ValueError otherwise)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "no": "float32"}
    value = getattr(torch, names.get(str(dtype), str(dtype)), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype {dtype!r}: choose float32, bfloat16 or float16")
    return value


def frames_to_codec(videos: torch.Tensor) -> torch.Tensor:
    """(N, F, H, W, 3) float in [0, 1] (the Scene layout) -> (N, 3, F, H, W) in [-1, 1]."""
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"videos must be (N, F, H, W, 3), got shape {tuple(videos.shape)}")
    return videos.permute(0, 4, 1, 2, 3) * 2.0 - 1.0


def codec_to_frames(videos: torch.Tensor) -> torch.Tensor:
    """(N, 3, F, H, W) in [-1, 1] -> (N, F, H, W, 3) in [0, 1] (clamped)."""
    return ((videos.permute(0, 2, 3, 4, 1) + 1.0) * 0.5).clamp(0.0, 1.0)


__all__ = ["LatentCodec", "PatchifyCodec", "WanVAECodec", "frames_to_codec", "codec_to_frames", "to_dtype"]
