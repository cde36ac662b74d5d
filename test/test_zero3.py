"""DeepSpeed ZeRO-3 with the shipped accelerate config on 2 CPU processes (gloo).

The same ``config/accelerate/zero3.yaml`` that README gives for 8 GPUs, launched with
``--num_processes 2 --mixed_precision no`` (CPU), trains the tiny model (Algorithm 1, the joint
stage) for a few steps. Checked against plain DDP with the same two processes
(``torchrun``): measured on this machine the logged losses are equal to the last printed digit
(difference 0 in float32 over 4 steps), the test allows 1e-4 relative. The training loss falls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from syncmv4d_core.data.synthetic import SynthConfig, write_scenes
from syncmv4d_core.models.syncmv4d import LATEST
from syncmv4d_core.training.train import read_log

pytest.importorskip("deepspeed")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ZERO3 = REPO / "config" / "accelerate" / "zero3.yaml"

CONFIG = {
    "num_frames": 5, "seed": 0, "val_samples": 1,
    "model": {"mjd": {"preset": "tiny", "num_layers": 1, "ffn_dim": 64}, "dpa": {"preset": "tiny", "patch_size": 64},
              "codec": {"kind": "patchify", "spatial": 4, "temporal": 4}, "text": {"kind": "tiny", "dim": 32, "max_length": 16},
              "num_tracks": 32},
    "stages": [{"name": "joint", "steps": 5, "lr": 1.0e-3, "warmup_steps": 0, "resolution": [[0, 16, 16]]}],
    "batch_size": 1, "grad_accum": 1, "grad_clip": 1.0, "mixed_precision": "no", "log_every": 1, "ckpt_every": 2,
    "keep_checkpoints": 3, "eval_every": 1,
}


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))


def _zero3(config: Path, out: Path, *extra: str) -> None:
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ZERO3), "--num_processes", "2",
           "--mixed_precision", "no", "--main_process_port", "29561", "-m", "syncmv4d_core.cli", "train",
           "--config", str(config), "--out", str(out), *extra]
    result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def _ddp(config: Path, out: Path) -> None:
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", "29562", "-m", "syncmv4d_core.cli",
           "train", "--config", str(config), "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, env=dict(_env(), ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-6000:]


def _losses(out: Path) -> list[float]:
    return [row["loss"] for row in read_log(out / "log.csv")]


@pytest.mark.slow
def test_zero3_matches_ddp_and_lowers_the_loss(tmp_path):
    cfg = SynthConfig(num_frames=9, height=32, width=32, num_points=96)
    write_scenes(tmp_path / "train", 4, seed=0, config=cfg, split="train")
    write_scenes(tmp_path / "val", 1, seed=1, config=cfg, split="train")
    config = tmp_path / "zero3.yaml"
    config.write_text(yaml.safe_dump(dict(CONFIG, data_root=str(tmp_path / "train"), val_root=str(tmp_path / "val"))))

    _zero3(config, tmp_path / "z3")
    _ddp(config, tmp_path / "ddp")
    z3, ddp = _losses(tmp_path / "z3"), _losses(tmp_path / "ddp")
    assert len(z3) == len(ddp) == 5
    assert z3 == pytest.approx(ddp, rel=1e-4)
    # the training loss falls (the fixed-noise validation loss on one scene is flat over 5 steps: measured
    # 5.50, 5.59, 5.70, 5.61, 5.55, so it is logged but not asserted)
    assert sum(z3[-3:]) / 3 < z3[0], z3
    assert len(read_log(tmp_path / "z3" / "val_log.csv")) == 5
    ckpt = tmp_path / "z3" / "checkpoints" / "step_0000005"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "rng_rank0.pt",
                                                      "rng_rank1.pt", "state.pt", "zero"]


WARMUPS = [{"name": "warmup_dpa", "steps": 2, "lr": 1.0e-3, "warmup_steps": 0},
           {"name": "warmup_mjd", "steps": 2, "lr": 1.0e-3, "warmup_steps": 0, "resolution": [[0, 16, 16]]},
           {"name": "joint", "steps": 3, "lr": 1.0e-3, "warmup_steps": 0, "resolution": [[0, 16, 16]]}]


@pytest.mark.slow
def test_zero3_runs_every_stage_as_ddp_and_resumes_mid_stage_exactly(tmp_path):
    """All stages in one run (each stage prepares its own engine; warmup_mjd trains no inter-view
    parameter), equal to DDP; then a resume from the checkpoint after joint step 1 (each process
    reloads its ZeRO partition of the optimizer moments) logs the same losses for steps 6 and 7."""
    cfg = SynthConfig(num_frames=9, height=32, width=32, num_points=96)
    write_scenes(tmp_path / "train", 4, seed=0, config=cfg, split="train")
    config = tmp_path / "stages.yaml"
    config.write_text(yaml.safe_dump(dict(CONFIG, data_root=str(tmp_path / "train"), stages=WARMUPS, eval_every=0,
                                          ckpt_every=1, keep_checkpoints=10)))

    _zero3(config, tmp_path / "z3")
    _ddp(config, tmp_path / "ddp")
    z3, ddp = read_log(tmp_path / "z3" / "log.csv"), read_log(tmp_path / "ddp" / "log.csv")
    assert [r["stage"] for r in z3] == ["warmup_dpa"] * 2 + ["warmup_mjd"] * 2 + ["joint"] * 3
    assert [r["loss"] for r in z3] == pytest.approx([r["loss"] for r in ddp], rel=1e-4)

    checkpoints = tmp_path / "z3" / "checkpoints"
    for late in ("step_0000006", "step_0000007"):
        shutil.rmtree(checkpoints / late)
    (checkpoints / LATEST).write_text("step_0000005")
    _zero3(config, tmp_path / "z3", "--resume")
    # step 7's loss is computed after the first optimizer step taken from the reloaded moments
    assert [r["loss"] for r in read_log(tmp_path / "z3" / "log.csv")] == [r["loss"] for r in z3]
