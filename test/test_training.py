"""Training infrastructure: config loading/overrides, LR schedule, data stream, checkpoints, the loop, resume.

The loop's mechanics are tested with a small regression objective defined here (predict each
view's depth range from its mean colours; dropout and generator noise included so that resuming
must restore every RNG), installed in place of ``training.objectives``. The tests marked slow
run the real SyncMV4D objectives (``warmup_dpa`` at tiny size), in-process and in a subprocess
killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from syncmv4d_core.data.dataset import SceneDataset
from syncmv4d_core.data.synthetic import SynthConfig, write_scenes
from syncmv4d_core.training.checkpoint import (
    LATEST, MODEL_FILE, STATE_FILE, begin_checkpoint, commit_checkpoint, latest_checkpoint, load_state, load_weights,
    rng_file, save_weights,
)
from syncmv4d_core.training.config import StageConfig, TrainConfig, apply_override, load_config
from syncmv4d_core.training.ema import WeightEMA, ema_decay_at
from syncmv4d_core.training.train import get_lr, read_log, stage_batches, train

REPO = Path(__file__).resolve().parents[1]
TEST_YAML = REPO / "config" / "train" / "test.yaml"
LOSS_COLUMNS = ("loss", "lr")


# ---------------------------------------------------------------------------------- test objective
class RegressionModel(nn.Module):
    """Mean colours of a view's video and pseudo video (6) -> its depth range (2)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = {"hidden": 16, **config}
        hidden = self.config["hidden"]
        self.mjd = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 2))
        self.mjd.config = types.SimpleNamespace(patch_size=(1, 2, 2))
        self.dpa = nn.Linear(3, 3)
        self.codec = nn.Module()
        self.codec.spatial_compression = 4
        self.text_encoder = nn.Module()

    @classmethod
    def from_config(cls, config: dict) -> "RegressionModel":
        return cls(config)

    def referenced_modules(self) -> dict:  # SyncMV4DModel's checkpoint interface: nothing referenced
        return {}

    def trained_state_dict(self, state_dict: dict, prefix: str = "") -> dict:
        return {k.removeprefix(prefix): v for k, v in state_dict.items()}

    def load_trained_state_dict(self, state_dict: dict, where: str = "") -> None:
        self.load_state_dict(state_dict)


def _stage_parameters(model: RegressionModel, stage: str, num_views: int = 3) -> list[nn.Parameter]:
    return {"vae": [], "warmup_dpa": list(model.dpa.parameters()), "warmup_mjd": list(model.mjd.parameters()),
            "joint": list(model.parameters())}[stage]


def _compute_loss(model: RegressionModel, batch: dict, stage: str, generator: torch.Generator) -> dict:
    feats = torch.cat([batch["videos"].mean((2, 3, 4)), batch["pseudo_videos"].mean((2, 3, 4))], -1)  # (B, V, 6)
    noise = 0.01 * torch.randn(feats.shape, generator=generator)
    depth = nn.functional.mse_loss(model.mjd(feats + noise), batch["depth_ranges"])
    tracks = batch["tracks_world"]                                                          # (B, F, K, 3)
    motion = nn.functional.mse_loss(model.dpa(tracks[:, 0]), tracks[:, -1])
    terms = {"depth": depth, "motion": motion}
    terms["loss"] = {"warmup_dpa": motion, "warmup_mjd": depth}.get(stage, depth + motion)
    return terms


def _objective_module() -> types.ModuleType:
    module = types.ModuleType("syncmv4d_core.training.objectives")
    module.STAGES = ("vae", "warmup_dpa", "warmup_mjd", "joint")
    module.SyncMV4DModel = RegressionModel
    module.stage_parameters = _stage_parameters
    module.compute_loss = _compute_loss

    class Objective(nn.Module):  # forward looks compute_loss up at call time, as the real one does
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, batch, stage, generator):
            return module.compute_loss(self.model, batch, stage, generator)

    module.SyncMV4DObjective = Objective
    return module


@pytest.fixture
def objective(monkeypatch) -> types.ModuleType:
    import syncmv4d_core.training

    module = _objective_module()
    monkeypatch.setitem(sys.modules, "syncmv4d_core.training.objectives", module)
    # ``from . import objectives`` reads the package attribute once the real module was imported
    monkeypatch.setattr(syncmv4d_core.training, "objectives", module, raising=False)
    return module


# ---------------------------------------------------------------------------------- data + configs
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(num_frames=9, height=32, width=32, num_points=96)
    write_scenes(root / "train", 4, seed=0, config=cfg, split="train")
    write_scenes(root / "val", 1, seed=1, config=cfg, split="train")
    return root


def make_config(data: Path, out: Path, **changes) -> TrainConfig:
    config = TrainConfig(
        data_root=str(data / "train"), val_root=str(data / "val"), val_samples=1, num_frames=5,
        out_dir=str(out), seed=0, model={"hidden": 16}, batch_size=1, grad_accum=2, log_every=1,
        ckpt_every=3, eval_every=4,
        stages=[StageConfig("vae", steps=2),
                StageConfig("warmup_mjd", steps=5, lr=1e-2, warmup_steps=1, resolution=[[0, 16, 16], [3, 24, 24]]),
                StageConfig("joint", steps=4, lr=1e-2, warmup_steps=0, data_fraction=0.5, num_views=2)])
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def loss_rows(out: Path) -> list[dict]:
    return [{k: r[k] for k in ("step", "stage", *LOSS_COLUMNS, "depth", "motion") if k in r}
            for r in read_log(out / "log.csv")]


@pytest.fixture
def one_thread():
    """Resume equality is exact only with a fixed intra-op thread count: with 2 threads the
    reductions' order varies and two runs differ by up to 4e-6 relative. The resume tests run
    on one thread (and their subprocesses with OMP_NUM_THREADS=1) so ``assert_same_curves`` can
    keep its 1e-6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_curves(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] and [r["stage"] for r in a] == [r["stage"] for r in b]
    for key in a[0]:
        if key not in ("step", "stage"):
            np.testing.assert_allclose([r[key] for r in a], [r[key] for r in b], rtol=1e-6, atol=1e-9, err_msg=key)


# ---------------------------------------------------------------------------------- config
def test_yaml_configs_load_and_overrides_keep_types(objective):
    for name in ("tiny.yaml", "test.yaml"):
        assert load_config(REPO / "config" / "train" / name).stages
    config = load_config(TEST_YAML, ["batch_size=3", "stages.warmup_dpa.lr=2e-4", "stages.1.steps=9",
                                     "model.mjd.num_layers=2", "val_root=somewhere", "mixed_precision=bf16"])
    assert config.batch_size == 3 and config.stages[1].lr == 2e-4 and config.stages[1].steps == 9
    assert config.model["mjd"]["num_layers"] == 2 and config.val_root == "somewhere"
    assert isinstance(config.stages[1].lr, float) and config.mixed_precision == "bf16"
    for bad, match in [("batch_size=2.5", "expected int"), ("nope=1", "unknown key"), ("seed=true", "expected int"),
                       ("model.mjd.depth=3", "unknown key"), ("stages.joint.steps=3", "no stage"),
                       ("model.mjd.num_layers=two", "expected int"), ("stages=[]", "stage fields"),
                       ("batch_size", "key=value")]:
        with pytest.raises(ValueError, match=match):
            apply_override(load_config(TEST_YAML), bad)


def test_bad_configs_raise_clear_errors(objective, tmp_path, data):
    text = TEST_YAML.read_text()
    cases = [("batch_size: 1", "batch_sise: 1", "unknown key"),
             ("name: warmup_dpa", "name: warmup_points", "unknown stage"),
             ("num_frames: 5", "num_frames: 6", "4n\\+1"),
             ("mixed_precision: \"no\"", "mixed_precision: fp16", "mixed_precision"),
             ("[[0, 16, 16], [3, 24, 24]]", "[[2, 16, 16]]", "begin at 0")]
    for old, new, match in cases:
        assert old in text
        path = tmp_path / "bad.yaml"
        path.write_text(text.replace(old, new))
        with pytest.raises(ValueError, match=match):
            load_config(path)
    # a resolution the codec x patch size (4 x 2 = 8 pixels) cannot tile: refused before training
    config = make_config(data, tmp_path / "run")
    config.stages[1].resolution = [[0, 20, 20]]
    with pytest.raises(ValueError, match="multiple of 8"):
        train(config)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_yaml_booleans_are_yaml_1_2(objective, tmp_path):
    """`--set mixed_precision=no` (and `mixed_precision: no` in a file) is the string "no", not False."""
    assert load_config(TEST_YAML, ["mixed_precision=no"]).mixed_precision == "no"
    path = tmp_path / "c.yaml"
    path.write_text(TEST_YAML.read_text().replace('mixed_precision: "no"', "mixed_precision: no"))
    assert load_config(path).mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision must be one of .*got 'off'"):
        load_config(TEST_YAML, ["mixed_precision=off"])
    assert load_config(TEST_YAML, ["preload=true"]).preload is True
    with pytest.raises(ValueError, match="expected bool, got 'yes'"):
        load_config(TEST_YAML, ["preload=yes"])
    path.write_text("stages: [unclosed")
    with pytest.raises(ValueError, match=r"c.yaml: invalid YAML"):
        load_config(path)


def test_train_config_bounds_are_one_line_errors(tmp_path, caplog):
    """A config `ffn_dim` of 2^31 (1 TB of weights) is refused before anything is allocated."""
    from syncmv4d_core.cli import main

    with caplog.at_level("ERROR", logger="syncmv4d"):
        rc = main(["train", "--config", str(TEST_YAML), "--out", str(tmp_path / "run"),
                   "--set", "model.mjd.ffn_dim=2147483648"])
    assert rc == 2
    message = caplog.records[-1].getMessage()
    assert "model.mjd" in message and "more than the limit of 20e9" in message and "'ffn_dim': 2147483648" in message
    with caplog.at_level("ERROR", logger="syncmv4d"):
        assert main(["train", "--config", str(TEST_YAML), "--out", str(tmp_path / "run"),
                     "--set", "num_frames=4001"]) == 2
    assert "num_frames must be 4n+1 in [1, 121] (e.g. 9, 13, 49), got 4001" in caplog.records[-1].getMessage()
    assert not (tmp_path / "run").exists()


def test_get_lr_warmup_then_cosine():
    stage = StageConfig("joint", steps=20, lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    lrs = [get_lr(s, stage) for s in range(20)]
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------- data stream
def test_stage_batches_epochs_shards_and_resume(objective, data, tmp_path):
    config = make_config(data, tmp_path, grad_accum=1)
    stage = StageConfig("joint", steps=6, resolution=[[0, 16, 16], [4, 24, 24]])
    ds = SceneDataset(config.data_root, num_frames=5, seed=0)
    def summary(start):  # (step, scene, camera names, height) of each single-sample batch
        return [(s, mb[0]["scene_dir"][0], [c.name for c in mb[0]["cameras"][0]], mb[0]["videos"].shape[3])
                for s, mb in stage_batches(ds, stage, 1, config, start)]

    stream = summary(0)
    assert [s for s, *_ in stream] == list(range(6))
    assert sorted(d for _, d, _, _ in stream[:4]) == [str(p) for p in ds.scene_dirs]  # one epoch = a permutation
    assert [h for *_, h in stream] == [16] * 4 + [24] * 2                             # progressive resolution
    assert summary(3) == stream[3:]
    two_steps = StageConfig("joint", steps=2)
    shards = [[d for _, mb in stage_batches(ds, two_steps, 1, config, 0, r, 2) for d in mb[0]["scene_dir"]]
              for r in range(2)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0] + shards[1]) == 4
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        next(stage_batches(ds, stage, 1, make_config(data, tmp_path, batch_size=5), 0))


# ---------------------------------------------------------------------------------- checkpoints
def test_checkpoint_commit_is_atomic(tmp_path):
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(root) is None
    partial = begin_checkpoint(root, "step_0000001")
    save_weights(partial / MODEL_FILE, {"w": torch.ones(2), "tied": torch.ones(2)})
    torch.save({"global_step": 1}, partial / STATE_FILE)
    first = commit_checkpoint(partial, keep=2)
    assert latest_checkpoint(root) == first and (root / LATEST).read_text().strip() == "step_0000001"
    # a run killed while writing the next checkpoint leaves a partial directory: ignored
    broken = begin_checkpoint(root, "step_0000002")
    (broken / MODEL_FILE).write_bytes(b"half a file")
    assert latest_checkpoint(root) == first
    assert torch.equal(load_weights(root)["w"], torch.ones(2))
    for step in (3, 4, 5):
        partial = begin_checkpoint(root, f"step_{step:07d}")
        save_weights(partial / MODEL_FILE, {"w": torch.full((2,), float(step))})
        torch.save({"global_step": step}, partial / STATE_FILE)
        commit_checkpoint(partial, keep=2)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_0000004", "step_0000005"]
    assert load_weights(root)["w"][0] == 5


# ---------------------------------------------------------------------------------- the loop
def test_train_outputs_and_weights_only_checkpoints(objective, data, tmp_path):
    out = tmp_path / "run"
    final = train(make_config(data, out))
    assert final == out / "checkpoints" / "step_0000009" and latest_checkpoint(out / "checkpoints") == final
    rows = read_log(out / "log.csv")
    assert [r["stage"] for r in rows] == ["warmup_mjd"] * 5 + ["joint"] * 4  # vae has nothing to train: skipped
    assert [r["step"] for r in rows] == list(range(1, 10)) and {"depth", "motion", "lr", "seconds"} <= set(rows[0])
    val = read_log(out / "val_log.csv")
    assert [(r["step"], r["stage"]) for r in val] == [(4, "warmup_mjd"), (5, "warmup_mjd"), (8, "joint"), (9, "joint")]
    assert (out / "loss.png").stat().st_size > 1000 and any((out / "tensorboard").iterdir())
    state = torch.load(final / STATE_FILE, weights_only=True)
    assert (state["stage_index"], state["stage_step"], state["global_step"]) == (2, 4, 9)
    assert state["config"]["stages"][1]["name"] == "warmup_mjd" and "state" in state["optimizer"]
    rng = torch.load(final / rng_file(0), weights_only=True)
    assert rng["generator"].dtype == torch.uint8 and rng["numpy"]["key"].shape == (624,)
    model = RegressionModel({"hidden": 16})
    model.load_state_dict(load_weights(final))
    assert json.loads((final / "config.json").read_text())["train"]["seed"] == 0
    # a finished run is not overwritten by accident
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(make_config(data, out))


def test_init_weights_start_a_fresh_run_from_trained_weights(objective, data, tmp_path):
    def one_step(out, **changes):
        config = make_config(data, out, val_root=None, grad_accum=1, seed=5,
                             stages=[StageConfig("joint", steps=1, lr=1e-12, warmup_steps=0)], **changes)
        return load_weights(train(config))

    trained = load_weights(train(make_config(data, tmp_path / "trained", val_root=None)))
    fresh = one_step(tmp_path / "fresh")
    tuned = one_step(tmp_path / "tuned", init_weights=str(tmp_path / "trained" / "checkpoints"))
    assert not torch.allclose(fresh["mjd.0.weight"], trained["mjd.0.weight"])  # seed 5 alone starts elsewhere
    for name, tensor in trained.items():
        torch.testing.assert_close(tuned[name], tensor, rtol=0, atol=1e-9)
    with pytest.raises(FileNotFoundError, match="no weights at .*missing"):
        one_step(tmp_path / "bad", init_weights=str(tmp_path / "missing"))
    # same tensor shapes, other settings: refused, naming the entry; a fine-tunable entry may change
    with pytest.raises(ValueError, match=r"init_weights .*trained with another model config \(hidden_act: "
                                         r"saved None, this run 'tanh'\)"):
        one_step(tmp_path / "other", init_weights=str(tmp_path / "trained" / "checkpoints"),
                 model={"hidden": 16, "hidden_act": "tanh"})
    relabelled = one_step(tmp_path / "relabelled", init_weights=str(tmp_path / "trained" / "checkpoints"),
                          model={"hidden": 16, "label_weight": 0.5})
    torch.testing.assert_close(relabelled["mjd.0.weight"], trained["mjd.0.weight"], rtol=0, atol=1e-9)


def test_training_lowers_the_loss(objective, data, tmp_path):
    config = make_config(data, tmp_path, val_root=None, grad_accum=1, ckpt_every=100,
                         stages=[StageConfig("warmup_mjd", steps=40, lr=3e-2, warmup_steps=2)])
    train(config)
    losses = [r["loss"] for r in read_log(tmp_path / "log.csv")]
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])


def test_resume_repeats_an_uninterrupted_run(objective, data, tmp_path, monkeypatch, one_thread):
    train(make_config(data, tmp_path / "full"))
    reference = loss_rows(tmp_path / "full")

    # Interrupted at optimizer step 8 (joint stage, after the checkpoint at step 6 and validation at step 8).
    calls = {"n": 0}

    def failing(model, batch, stage, generator):
        calls["n"] += model.training  # validation calls (eval mode) not counted
        if calls["n"] > 2 * 7 + 1:  # grad_accum = 2 micro-batches per step: dies inside step 8
            raise KeyboardInterrupt("simulated kill")
        return _compute_loss(model, batch, stage, generator)

    monkeypatch.setattr(objective, "compute_loss", failing)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(data, tmp_path / "cut"))
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints").name == "step_0000006"
    assert [r["step"] for r in read_log(tmp_path / "cut" / "log.csv")] == list(range(1, 8))

    monkeypatch.setattr(objective, "compute_loss", _compute_loss)
    train(make_config(data, tmp_path / "cut"), resume=True)
    assert_same_curves(loss_rows(tmp_path / "cut"), reference)
    assert_same_curves(read_log(tmp_path / "cut" / "val_log.csv"), read_log(tmp_path / "full" / "val_log.csv"))
    full_w, cut_w = load_weights(tmp_path / "full" / "checkpoints"), load_weights(tmp_path / "cut" / "checkpoints")
    assert all(torch.equal(full_w[k], cut_w[k]) for k in full_w)


def test_weight_average_follows_its_formula():
    """shadow <- d_n shadow + (1 - d_n) weights with d_n = min(decay, (1 + n) / (10 + n)); applied()
    lends the average to the model and gives the weights back."""
    model = RegressionModel({"hidden": 4})
    ema = WeightEMA(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(3):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(1.0)
        ema.update(model, n)
        d = ema_decay_at(0.9, n)
        assert d == min(0.9, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * v for k, v in model.state_dict().items()}
    averaged = ema.state_dict(model)
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.applied(model):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, expected[key])
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key])
    with pytest.raises(ValueError, match="ema_decay must be in \\(0, 1\\), got 1.0"):
        WeightEMA(model, decay=1.0)
    with pytest.raises(ValueError, match="the saved average lacks 1 of the model's weights .*dpa.bias"):
        WeightEMA(model, 0.9, {k: v for k, v in averaged.items() if k != "dpa.bias"})


def test_weight_average_is_saved_validated_and_resumed_exactly(objective, data, tmp_path, monkeypatch, one_thread):
    """ema_decay: every checkpoint holds the average as a model directory ema/, the validation log
    scores it beside the weights, and an interrupted run resumes to the same average."""
    final = train(make_config(data, tmp_path / "full", ema_decay=0.8))
    averaged, weights = load_weights(final / "ema"), load_weights(final)
    assert set(averaged) == set(weights) and not torch.allclose(averaged["mjd.0.weight"], weights["mjd.0.weight"])
    assert json.loads((final / "ema" / "config.json").read_text())["model"] == {"hidden": 16}
    val = read_log(tmp_path / "full" / "val_log.csv")
    assert all("ema_loss" in r and r["ema_loss"] != r["loss"] for r in val)

    calls = {"n": 0}

    def failing(model, batch, stage, generator):
        calls["n"] += model.training
        if calls["n"] > 2 * 7 + 1:  # dies inside step 8, after the checkpoint at step 6
            raise KeyboardInterrupt("simulated kill")
        return _compute_loss(model, batch, stage, generator)

    monkeypatch.setattr(objective, "compute_loss", failing)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(data, tmp_path / "cut", ema_decay=0.8))
    monkeypatch.setattr(objective, "compute_loss", _compute_loss)
    resumed = load_weights(train(make_config(data, tmp_path / "cut", ema_decay=0.8), resume=True) / "ema")
    assert all(torch.equal(resumed[k], averaged[k]) for k in averaged)
    assert_same_curves(read_log(tmp_path / "cut" / "val_log.csv"), val)

    train(make_config(data, tmp_path / "plain", stages=[StageConfig("joint", steps=2)]))
    with pytest.raises(ValueError, match=r"step_0000002 has no ema/model.safetensors \(saved without ema_decay\)"):
        train(make_config(data, tmp_path / "plain", ema_decay=0.8, stages=[StageConfig("joint", steps=4)]),
              resume=True)
    with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\) \(or null: off\), got 1.5"):
        train(make_config(data, tmp_path / "bad", ema_decay=1.5))


@pytest.mark.parametrize("broken", ["state.pt", "model.safetensors"])
def test_resume_skips_a_corrupt_newest_checkpoint(objective, data, tmp_path, monkeypatch, one_thread, caplog, broken):
    """The newest checkpoint is complete but does not load: resume says so (naming the file) and
    continues from the previous complete one, reaching the uninterrupted run's curves."""
    config = make_config(data, tmp_path / "full", val_root=None, ckpt_every=2, keep_checkpoints=2,
                         stages=[StageConfig("warmup_mjd", steps=6, lr=1e-2, warmup_steps=1)])
    train(config)
    reference = loss_rows(tmp_path / "full")
    calls = {"n": 0}

    def failing(model, batch, stage, generator):
        calls["n"] += model.training
        if calls["n"] > 2 * 4 + 1:  # dies in step 5, after the checkpoints at steps 2 and 4
            raise KeyboardInterrupt("simulated kill")
        return _compute_loss(model, batch, stage, generator)

    monkeypatch.setattr(objective, "compute_loss", failing)
    cut = make_config(data, tmp_path / "cut", **{k: getattr(config, k) for k in ("val_root", "ckpt_every")})
    cut.stages = config.stages
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    monkeypatch.setattr(objective, "compute_loss", _compute_loss)
    root = tmp_path / "cut" / "checkpoints"
    assert latest_checkpoint(root).name == "step_0000004"
    bad = root / "step_0000004" / broken
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated (disk error, partial copy)
    with caplog.at_level("WARNING"):
        train(cut, resume=True)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"checkpoint step_0000004 does not load (cannot read" in warning and str(bad) in warning
    assert "resuming from step_0000002" in warning
    assert_same_curves(loss_rows(tmp_path / "cut"), reference)
    # nothing loads: one error listing each broken file
    for step in ("step_0000004", "step_0000006"):
        path = root / step / broken
        if path.is_file():
            path.write_bytes(b"")
    (root / "step_0000004").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=rf"no checkpoint under {root} loads: .*{broken}"):
        train(cut, resume=True)


def test_stop_after_stage_then_resume(objective, data, tmp_path, one_thread):
    config = make_config(data, tmp_path, val_root=None, ckpt_every=100,
                         stages=[StageConfig("warmup_mjd", steps=3, lr=1e-2), StageConfig("joint", steps=2, lr=1e-2)])
    reference = make_config(data, tmp_path / "full", **{k: getattr(config, k) for k in ("val_root", "ckpt_every")})
    reference.stages = config.stages
    train(reference)
    config.stop_after_stage = "warmup_mjd"
    assert train(config).name == "step_0000003"
    assert {r["stage"] for r in read_log(tmp_path / "log.csv")} == {"warmup_mjd"}
    config.stop_after_stage = None
    assert train(config, resume=True).name == "step_0000005"
    assert_same_curves(loss_rows(tmp_path), loss_rows(tmp_path / "full"))


# ---------------------------------------------------------------------------------- real objectives
def _real_config(data: Path, out: Path, steps: int) -> TrainConfig:
    return load_config(TEST_YAML, [f"data_root={data / 'train'}", f"val_root={data / 'val'}", f"out_dir={out}",
                                   f"stages.warmup_dpa.steps={steps}", "eval_every=100"])


@pytest.mark.slow
def test_resume_with_real_objectives(data, tmp_path, one_thread):
    pytest.importorskip("syncmv4d_core.training.objectives")
    train(_real_config(data, tmp_path / "full", 6))
    with pytest.MonkeyPatch.context() as mp:
        from syncmv4d_core.training import objectives

        calls = {"n": 0}
        real = objectives.compute_loss

        def failing(model, *args):
            calls["n"] += model.training
            if calls["n"] > 2 * 4:  # dies in step 5, after the checkpoint at step 4
                raise KeyboardInterrupt("simulated kill")
            return real(model, *args)

        mp.setattr(objectives, "compute_loss", failing)
        with pytest.raises(KeyboardInterrupt):
            train(_real_config(data, tmp_path / "cut", 6))
    train(_real_config(data, tmp_path / "cut", 6), resume=True)
    assert_same_curves(loss_rows(tmp_path / "cut"), loss_rows(tmp_path / "full"))


@pytest.mark.slow
def test_real_dpa_warmup_lowers_the_loss(data, tmp_path):
    pytest.importorskip("syncmv4d_core.training.objectives")
    config = _real_config(data, tmp_path, 30)
    config.val_root, config.ckpt_every, config.stages[1].warmup_steps = None, 100, 2
    train(config)
    losses = [r["loss"] for r in read_log(tmp_path / "log.csv")]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


@pytest.mark.slow
def test_sigkill_then_resume_from_the_command_line(data, tmp_path):
    """A `syncmv4d train` process killed with SIGKILL mid-run resumes to the uninterrupted curve."""
    pytest.importorskip("syncmv4d_core.training.objectives")

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "syncmv4d_core.cli", "train", "--config", str(TEST_YAML), "--out", str(out),
                "--set", f"data_root={data / 'train'}", "--set", "val_root=null", "--set", "ckpt_every=1",
                "--set", "stages.warmup_dpa.steps=6", *extra]

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # see one_thread
    subprocess.run(command(tmp_path / "full"), check=True, cwd=REPO, env=env, capture_output=True)
    proc = subprocess.Popen(command(tmp_path / "cut"), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    root = tmp_path / "cut" / "checkpoints"
    deadline = time.monotonic() + 300
    while (latest_checkpoint(root) is None or latest_checkpoint(root).name < "step_0000003") and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_state(latest_checkpoint(root) / STATE_FILE)["global_step"]
    assert killed_at < 6, "the run finished before it could be killed"
    subprocess.run(command(tmp_path / "cut", "--resume"), check=True, cwd=REPO, env=env, capture_output=True)
    assert_same_curves(loss_rows(tmp_path / "cut"), loss_rows(tmp_path / "full"))
