"""Text encoders: the frozen umT5 of Wan2.2 (local weights) and a tiny byte-level umT5 for tiny presets.

Both return Wan-style text tokens: ``encode(texts) -> (B, max_length, dim)`` float32, the encoder's
hidden states for each text's tokens (incl. the EOS token) followed by zeros, as the Wan pipelines
pad their prompt embeddings. The empty text "" is the unconditional input for classifier-free
guidance.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

WAN_TEXT_ENCODER_SUBDIR = "text_encoder"
WAN_TOKENIZER_SUBDIR = "tokenizer"
WAN_TEXT_LENGTH = 512  # Wan's max prompt length (paper Sec. 4.2: L = 512)

# Tiny random weights can produce denormal floats that slow CPU matmuls ~200x (measured here).
torch.set_flush_denormal(True)


class TextEncoder(nn.Module):
    """Frozen text encoder: token ids -> padded hidden states."""

    def __init__(self, model: nn.Module, max_length: int):
        super().__init__()
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be >= 1")
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (ids (B, max_length) int64, attention mask (B, max_length) int64)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, texts: list[str] | str) -> torch.Tensor:
        """texts (B strings) -> (B, max_length, dim) float32, zero after each text's last token."""
        if isinstance(texts, str):
            texts = [texts]
        ids, mask = self.tokenize(list(texts))
        device = next(self.model.parameters()).device
        device = getattr(self, "execution_device", None) or device  # model CPU offload
        ids, mask = ids.to(device), mask.to(device)
        with torch.autocast(device.type, enabled=False):  # runs in its weights' dtype (bf16 umT5)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return hidden * mask[..., None].to(hidden.dtype)


class UMT5TextEncoder(TextEncoder):
    """umT5 (transformers ``UMT5EncoderModel``) with its own tokenizer."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int = WAN_TEXT_LENGTH):
        super().__init__(model, max_length)
        self.tokenizer = tokenizer

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return out.input_ids, out.attention_mask


def load_umt5(local_dir: str | Path, max_length: int = WAN_TEXT_LENGTH,
              dtype: torch.dtype | str = torch.bfloat16) -> UMT5TextEncoder:
    """Load the frozen umT5 from ``<local_dir>/text_encoder`` and ``<local_dir>/tokenizer``. No download.

    ``dtype``: weight dtype, bfloat16 by default (umT5-xxl: 11.4 GB instead of 22.7 GB in float32; the
    Wan pipelines run it in bf16 too); the returned embeddings are float32 either way.
    """
    from transformers import AutoTokenizer, UMT5EncoderModel

    from .codec import to_dtype

    dtype = to_dtype(dtype)

    root = Path(local_dir)
    enc_dir, tok_dir = root / WAN_TEXT_ENCODER_SUBDIR, root / WAN_TOKENIZER_SUBDIR
    for d, what in ((enc_dir, "umT5 encoder (config.json + safetensors)"), (tok_dir, "umT5 tokenizer files")):
        if not d.is_dir() or not any(d.iterdir()):
            raise FileNotFoundError(f"missing {d}: put the Wan2.2-TI2V-5B-Diffusers {what} there")
    model = UMT5EncoderModel.from_pretrained(str(enc_dir), dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    return UMT5TextEncoder(model, tokenizer, max_length)


class TinyTextEncoder(TextEncoder):
    """A small random umT5 encoder with a UTF-8 byte tokenizer; needs no downloaded weights.

    Deterministic for a given ``seed``; different texts give different embeddings (the encoder sees
    every byte). Ids: 0 = pad, 1 = EOS, 2 = unused, byte b -> b + 3. Save it with ``state_dict()``
    plus ``config()``; rebuild with ``TinyTextEncoder(**config)`` and ``load_state_dict``.
    """

    PAD, EOS, BYTE_OFFSET = 0, 1, 3

    def __init__(self, dim: int = 32, max_length: int = 64, num_layers: int = 2, num_heads: int = 4,
                 seed: int = 0):
        from transformers import UMT5Config, UMT5EncoderModel

        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        cfg = UMT5Config(vocab_size=256 + self.BYTE_OFFSET, d_model=dim, d_kv=dim // num_heads, d_ff=2 * dim,
                         num_layers=num_layers, num_heads=num_heads, relative_attention_num_buckets=8,
                         feed_forward_proj="gated-gelu", pad_token_id=self.PAD, eos_token_id=self.EOS,
                         decoder_start_token_id=self.PAD)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = UMT5EncoderModel(cfg)
        super().__init__(model, max_length)
        self._config = dict(dim=dim, max_length=max_length, num_layers=num_layers, num_heads=num_heads, seed=seed)

    def config(self) -> dict:
        return dict(self._config)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(texts), self.max_length), self.PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            data = text.encode("utf-8")
            if len(data) > self.max_length - 1:
                logger.warning("text of %d bytes truncated to %d tokens", len(data), self.max_length)
            tokens = [b + self.BYTE_OFFSET for b in data[: self.max_length - 1]] + [self.EOS]
            ids[i, : len(tokens)] = torch.tensor(tokens)
        return ids, (ids != self.PAD).long()


__all__ = ["TextEncoder", "UMT5TextEncoder", "TinyTextEncoder", "load_umt5", "WAN_TEXT_LENGTH"]
