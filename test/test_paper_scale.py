"""The paper-scale path on a local Wan2.2-TI2V-5B-Diffusers-layout directory with random weights.

``scripts/make_paper_testdir.py`` writes it (the real config keys; CI size: 2 transformer blocks,
reduced widths). Checked: ``model.wan_dir`` builds the MJD from Wan's transformer (every Wan
tensor loaded, video output equal to Wan's view by view at init), reads the scheduler config
(flow_shift 5), checkpoints hold only what is trained (umT5 and the VAE are referenced by path),
and one training step and one closed-loop generation run on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from syncmv4d_core.models.syncmv4d import SyncMV4DModel
from syncmv4d_core.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import make_paper_testdir  # noqa: E402

MODEL = {"codec": {"kind": "wan"}, "text": {"kind": "umt5", "max_length": 16}, "num_tracks": 32}


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory) -> Path:
    return make_paper_testdir.write(tmp_path_factory.mktemp("wan22") / "Wan2.2-TI2V-5B-Diffusers")


@pytest.fixture(scope="module")
def model(wan_dir) -> SyncMV4DModel:
    torch.manual_seed(0)
    return SyncMV4DModel({"wan_dir": str(wan_dir), **MODEL}).eval()


def test_the_directory_has_the_real_layout_and_config_keys(wan_dir):
    for sub, name in (("transformer", "config.json"), ("transformer", "diffusion_pytorch_model.safetensors"),
                      ("vae", "config.json"), ("text_encoder", "config.json"), ("tokenizer", "tokenizer_config.json"),
                      ("scheduler", "scheduler_config.json")):
        assert (wan_dir / sub / name).is_file(), (sub, name)
    transformer = json.loads((wan_dir / "transformer" / "config.json").read_text())
    assert set(make_paper_testdir.WAN22_TRANSFORMER) <= set(transformer)
    assert transformer["_class_name"] == "WanTransformer3DModel" and transformer["in_channels"] == 48
    vae = json.loads((wan_dir / "vae" / "config.json").read_text())
    assert vae["z_dim"] == 48 and vae["scale_factor_spatial"] == 16 and vae["latents_std"][:2] == [0.4765, 1.0364]
    assert json.loads((wan_dir / "scheduler" / "scheduler_config.json").read_text())["flow_shift"] == 5.0


def test_wan_dir_builds_the_mjd_from_the_wan_weights(model, wan_dir):
    assert model.config["mjd"]["preset"] == "wan"
    wan = load_file(str(wan_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    own = model.mjd.state_dict()
    assert len(wan) > 60 and all(torch.equal(own[k], v) for k, v in wan.items())
    assert model.mjd.config.text_dim == model.text_encoder.dim == 64
    assert model.config["flow_shift"] == model.config["timestep_shift"] == 5.0  # scheduler/scheduler_config.json
    explicit = SyncMV4DModel({"wan_dir": str(wan_dir), **MODEL, "timestep_shift": 3.0}, load_wan_weights=False)
    assert explicit.config["timestep_shift"] == 3.0 and explicit.config["flow_shift"] == 5.0


@torch.no_grad()
def test_video_output_equals_wan_view_by_view_at_init(model, wan_dir):
    from diffusers import WanTransformer3DModel

    wan = WanTransformer3DModel.from_pretrained(str(wan_dir / "transformer")).eval()
    g = torch.Generator().manual_seed(0)
    video, motion = (torch.randn(1, 3, 48, 2, 4, 4, generator=g) for _ in range(2))
    text, t = torch.randn(1, 16, 64, generator=g), torch.tensor([700.0])
    out = model.mjd(video, motion, t, text).video_velocity
    ref = torch.stack([wan(video[:, v], t, text).sample for v in range(3)], 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_checkpoints_hold_only_the_trained_parts(model, wan_dir, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    keys = load_file(str(tmp_path / "ckpt" / "model.safetensors")).keys()
    assert {k.split(".")[0] for k in keys} == {"mjd", "dpa"}
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["referenced"] == {"text_encoder.": str(wan_dir / "text_encoder"), "codec.": str(wan_dir / "vae")}
    loaded = SyncMV4DModel.from_pretrained(tmp_path / "ckpt")
    theirs = loaded.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())


def test_mixed_precision_no_override_is_the_string():
    config = load_config(REPO / "config" / "train" / "test.yaml", ["mixed_precision=no"])
    assert config.mixed_precision == "no"


@pytest.mark.slow
def test_one_training_step_and_one_generation(wan_dir, tmp_path):
    from syncmv4d_core.cameras import Camera  # noqa: F401  (scene cameras come from the synthetic rig)
    from syncmv4d_core.data.synthetic import SynthConfig, generate_scene, write_scenes
    from syncmv4d_core.pipeline import SyncMV4DPipeline
    from syncmv4d_core.training.config import StageConfig, TrainConfig
    from syncmv4d_core.training.train import read_log, train

    write_scenes(tmp_path / "data", 2, seed=0, config=SynthConfig(num_frames=5, height=32, width=32, num_points=96),
                 split="train")
    config = TrainConfig(data_root=str(tmp_path / "data"), num_frames=5, out_dir=str(tmp_path / "run"),
                         model={"wan_dir": str(wan_dir), **MODEL}, batch_size=1, ckpt_every=1, eval_every=0,
                         stages=[StageConfig("joint", steps=1, lr=1e-4, warmup_steps=0)])
    final = train(config)
    assert np.isfinite(read_log(tmp_path / "run" / "log.csv")[0]["loss"])
    assert {k.split(".")[0] for k in load_file(str(final / "model.safetensors"))} == {"mjd", "dpa"}
    pipe = SyncMV4DPipeline(SyncMV4DModel.from_pretrained(final))
    scene = generate_scene(0, SynthConfig(num_frames=5, height=32, width=32, num_points=96))
    refs = [scene.videos[v, 0] for v in range(3)]
    out = pipe(refs, scene.cameras[:3], scene.text, num_frames=5, num_steps=2)
    assert out.videos.shape == (3, 5, 32, 32, 3) and out.meta["flow_shift"] == 5.0
