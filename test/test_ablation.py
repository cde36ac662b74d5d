"""The Tab. 3 ablation runner: rows, reference rows and the written tables."""

import json

import numpy as np
import torch

from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.evaluation.ablation import SETTINGS, VIDEO_ONLY, codec_round_trip, run_ablation, static_baseline
from syncmv4d_core.evaluation.evaluate import evaluate_scene
from syncmv4d_core.pipeline import SyncMV4DPipeline
from syncmv4d_core.models.syncmv4d import SyncMV4DModel


def _scene():
    return generate_scene(5, SynthConfig(num_frames=5, height=64, width=64, num_points=96), split="test")


def test_reference_rows_bracket_the_representation():
    gt = _scene().select_views([0, 4, 8])
    pipe = SyncMV4DPipeline(SyncMV4DModel.from_config({}))
    still = evaluate_scene(static_baseline(gt), gt)["metrics"]
    round_trip = evaluate_scene(codec_round_trip(gt, pipe), gt)
    assert np.all(static_baseline(gt).tracks_world == gt.tracks_world[:1])
    # the lossless codec leaves only the representation's own error: far below doing nothing
    assert round_trip["metrics"]["RPE"] < 5 < still["RPE"]
    assert round_trip["metrics"]["median_error_mm"] < 0.2 * still["median_error_mm"]
    assert round_trip["matching"]["identity"] == "anchors" and round_trip["matching"]["coverage"] > 0.9


def test_run_ablation_writes_every_row(tmp_path):
    _scene().save(tmp_path / "scenes" / "scene_a")
    torch.manual_seed(0)
    ckpt = SyncMV4DModel.from_config({"num_tracks": 32}).save_pretrained(tmp_path / "full")
    video_only = SyncMV4DModel.from_config({"mjd": {"preset": "tiny", "motion": False}}).save_pretrained(tmp_path / "video")
    rows = run_ablation(ckpt, tmp_path / "scenes", tmp_path / "out", num_scenes=1, num_steps=2,
                        video_only_checkpoint=video_only)
    assert set(rows) == {*SETTINGS, VIDEO_ONLY, "static (ref.)", "GT enc-dec (ref.)"}
    for row in rows:
        assert (tmp_path / "out" / row / "scene_a" / "scene.json").is_file()
    table = (tmp_path / "out" / "results.md").read_text()
    assert all(f"| {row} |" in table for row in rows)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["static (ref.)"]["metrics"]["RPE"] == rows["static (ref.)"]["metrics"]["RPE"]
