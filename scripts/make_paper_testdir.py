#!/usr/bin/env python3
"""Write a local directory in the Wan2.2-TI2V-5B-Diffusers layout with RANDOM weights.

No weights can be downloaded here, so the paper-scale path (``model.wan_dir``) is exercised on a
directory that has the real layout and the real config keys, written with diffusers' /
transformers' ``save_pretrained``, at reduced depth (and, for ``--size ci``, reduced width)::

    <out>/model_index.json
    <out>/transformer/config.json + diffusion_pytorch_model.safetensors   (WanTransformer3DModel)
    <out>/vae/config.json + diffusion_pytorch_model.safetensors           (AutoencoderKLWan, Wan2.2)
    <out>/text_encoder/config.json + model.safetensors                    (UMT5EncoderModel)
    <out>/tokenizer/tokenizer.json + tokenizer_config.json                (T5Tokenizer, unigram)
    <out>/scheduler/scheduler_config.json                                 (UniPC, flow_shift 5)

Sizes:

- ``ci`` (default, ~30 MB, seconds to load): every config key of the real files; transformer
  2 layers x (2 heads x 64), ffn 256; VAE base_dim 16 / decoder 32, 1 res block; umT5 2 layers x 64.
  The rest (patch size, z_dim 48, 4x16x16 compression, latents_mean/std, qk_norm, rope,
  flow_shift 5) is the real model's.
- ``real-width``: the real widths (transformer 24 x 128, ffn 14336, text_dim 4096; the real VAE
  config; umT5-xxl widths) with ``--layers`` transformer blocks and 2 umT5 layers (about 2 GB on
  disk for 2 blocks). The tokenizer is a small unigram vocabulary in both sizes (the real one is
  256,384 pieces), so umT5's vocab_size is the tokenizer's.

Usage::

    python scripts/make_paper_testdir.py --out /tmp/wan22-ci                 # CI size
    python scripts/make_paper_testdir.py --out /tmp/wan22-rw --size real-width --layers 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

# Wan2.2-TI2V-5B-Diffusers/transformer/config.json (values of the real file).
WAN22_TRANSFORMER = dict(
    patch_size=[1, 2, 2], num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
    text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024, pos_embed_seq_len=None,
)
# Wan2.2-TI2V-5B-Diffusers/vae/config.json (the Wan2.2 high-compression VAE).
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]
WAN22_VAE = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], dropout=0.0, is_residual=True, in_channels=12, out_channels=12,
    patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
    latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD,
)
# google/umt5-xxl encoder (Wan2.2-TI2V-5B-Diffusers/text_encoder/config.json).
UMT5_XXL = dict(
    d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, relative_attention_num_buckets=32,
    relative_attention_max_distance=128, dropout_rate=0.1, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
    tie_word_embeddings=False, vocab_size=256384, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    scalable_attention=True,
)
# Wan2.2-TI2V-5B-Diffusers/scheduler/scheduler_config.json.
WAN22_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", solver_order=2,
    prediction_type="flow_prediction", thresholding=False, sample_max_value=1.0, predict_x0=True,
    solver_type="bh2", lower_order_final=True, disable_corrector=[], use_flow_sigmas=True, flow_shift=5.0,
    timestep_spacing="linspace", steps_offset=0, final_sigmas_type="zero",
)
MODEL_INDEX = {
    "_class_name": "WanPipeline", "boundary_ratio": None, "expand_timesteps": True,
    "scheduler": ["diffusers", "UniPCMultistepScheduler"], "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "WanTransformer3DModel"],
    "transformer_2": [None, None], "vae": ["diffusers", "AutoencoderKLWan"],
}
WORDS = ("lift pick up place put push pull open close pour stir cut the a cup bowl knife spoon bottle box lid "
         "into onto from with hand left right table tool target").split()


def sizes(size: str, layers: int) -> tuple[dict, dict, dict]:
    """(transformer, vae, umT5) configs for ``size``: the real keys, reduced depth (and width for ci)."""
    transformer, vae, text = dict(WAN22_TRANSFORMER), dict(WAN22_VAE), dict(UMT5_XXL)
    transformer["num_layers"] = layers
    text["num_layers"] = 2
    if size == "ci":
        transformer.update(num_attention_heads=2, attention_head_dim=64, ffn_dim=256, text_dim=64)
        vae.update(base_dim=16, decoder_base_dim=32, num_res_blocks=1)
        text.update(d_model=64, d_kv=16, d_ff=128, num_heads=4)
    elif size != "real-width":
        raise ValueError(f"size {size!r}: choose ci or real-width")
    return transformer, vae, text


def make_tokenizer():
    """A T5Tokenizer (unigram) over bytes-as-characters + a few task words; ids 0 pad, 1 </s>, 2 <unk>."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -1.0) for w in WORDS]
    pieces += [(chr(c), -5.0) for c in range(32, 127)] + [("\u2581", -2.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def write(out: str | Path, size: str = "ci", layers: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Write the directory (see the module docstring) and return it."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_cfg, v_cfg, u_cfg = sizes(size, layers)
    tokenizer = make_tokenizer()
    u_cfg["vocab_size"] = len(tokenizer)
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**t_cfg)
    with torch.no_grad():  # Wan's init leaves some tables at constants; random values test the loading
        for p in transformer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    transformer.to(dtype).save_pretrained(out / "transformer", safe_serialization=True)
    del transformer
    AutoencoderKLWan(**v_cfg).to(dtype).save_pretrained(out / "vae", safe_serialization=True)
    UMT5EncoderModel(UMT5Config(**u_cfg)).to(dtype).save_pretrained(out / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out / "tokenizer")
    UniPCMultistepScheduler(**WAN22_SCHEDULER).save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", default="ci", choices=("ci", "real-width"))
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks (real: 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args(argv)
    path = write(args.out, args.size, args.layers, args.seed, getattr(torch, args.dtype))
    print(path)


if __name__ == "__main__":
    main()
