"""Broken and hostile model files: a truncated safetensors file, a wrong-shape tensor, a truncated
config.json, an absurd network size. Each gives one error naming the file (or config field) and
what is expected, also through ``syncmv4d generate --checkpoint`` (exit 2, one line)."""

from __future__ import annotations

import json
import logging

import pytest
from safetensors.torch import load_file, save_file

from syncmv4d_core.cli import main
from syncmv4d_core.models.syncmv4d import MODEL_FILE, SyncMV4DModel

CONFIG = {"mjd": {"preset": "tiny", "num_layers": 1, "ffn_dim": 64}, "dpa": {"preset": "tiny"},
          "text": {"kind": "tiny", "dim": 32, "max_length": 16}, "num_tracks": 16}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return SyncMV4DModel.from_config(CONFIG).save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")


def _copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "model")


def test_truncated_safetensors_names_the_file(saved, tmp_path):
    ckpt = _copy(saved, tmp_path)
    data = (ckpt / MODEL_FILE).read_bytes()
    for cut in (len(data) // 2, 20, 0):
        (ckpt / MODEL_FILE).write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"cannot read weights {ckpt / MODEL_FILE}: .*truncated or not a safetensors"):
            SyncMV4DModel.from_pretrained(ckpt)


def test_wrong_shape_tensor_names_the_tensor_and_file(saved, tmp_path):
    ckpt = _copy(saved, tmp_path)
    weights = load_file(str(ckpt / MODEL_FILE))
    name = next(k for k, v in weights.items() if k.startswith("mjd.") and v.ndim == 2)
    weights[name] = weights[name][:, :-1].contiguous()
    save_file(weights, str(ckpt / MODEL_FILE))
    with pytest.raises(ValueError, match=rf"{ckpt / MODEL_FILE}: tensor '{name}' has shape .* but the model built "
                                         r"from the config needs"):
        SyncMV4DModel.from_pretrained(ckpt)


def test_truncated_config_json_names_the_file(saved, tmp_path):
    ckpt = _copy(saved, tmp_path)
    text = (ckpt / "config.json").read_text()
    (ckpt / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{ckpt / 'config.json'}: invalid JSON"):
        SyncMV4DModel.from_pretrained(ckpt)


def test_network_size_is_bounded_before_allocation():
    with pytest.raises(ValueError, match=r"model.mjd: the config gives 5\d\d\.\de9 parameters .* more than the limit "
                                         r"of 20e9; large fields: \{'ffn_dim': 2147483648\}"):
        SyncMV4DModel.from_config({**CONFIG, "mjd": {"preset": "tiny", "ffn_dim": 2**31}})
    with pytest.raises(ValueError, match="model.dpa"):
        SyncMV4DModel.from_config({**CONFIG, "dpa": {"preset": "tiny", "channels": [2**18, 2**18]}})


def test_generate_with_a_broken_checkpoint_is_one_line(saved, tmp_path, caplog):
    from test_cli import _scene  # a small scene in the format

    ckpt = _copy(saved, tmp_path)
    (ckpt / MODEL_FILE).write_bytes((ckpt / MODEL_FILE).read_bytes()[:100])
    scene = _scene().save(tmp_path / "scene")
    with caplog.at_level(logging.ERROR, logger="syncmv4d"):
        rc = main(["generate", "--scene", str(scene), "--out", str(tmp_path / "out"), "--checkpoint", str(ckpt)])
    message = caplog.records[-1].getMessage()
    assert rc == 2 and f"cannot read weights {ckpt / MODEL_FILE}" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_ablation_checks_everything_before_writing_gt(tmp_path):
    """`ablate --steps 0` used to write gt/ first; a scene the model cannot generate from too."""
    from test_cli import _scene

    from syncmv4d_core.evaluation.ablation import run_ablation

    _scene().save(tmp_path / "scenes" / "scene_00000")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 1000\], got 0"):
        run_ablation(None, tmp_path / "scenes", out, num_scenes=1, num_steps=0)
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number .* got nan"):
        run_ablation(None, tmp_path / "scenes", out, num_scenes=1, num_steps=2, guidance_scale=float("nan"))
    _scene(frames=7).save(tmp_path / "scenes" / "scene_00000")  # not 4n+1
    with pytest.raises(ValueError, match=r"num_frames must be 4n\+1 in \[1, 121\] .* got 7"):
        run_ablation(None, tmp_path / "scenes", out, num_scenes=1, num_steps=2)
    assert not out.exists()
