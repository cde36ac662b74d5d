"""The 4D-track action classifier (issue 10, item 3): features, invariances, training, shipped weights."""

import numpy as np
import pytest
import torch

from syncmv4d_core.data.synthetic import ACTIONS, SynthConfig, generate_scene
from syncmv4d_core.evaluation import action_classifier as A

SMALL = SynthConfig(height=8, width=8, num_points=128)


@pytest.fixture(scope="module")
def scenes():
    """Six ground-truth scenes of six actions (tiny images: the tracks do not depend on the image size)."""
    triplets = [("lift", "cup", None), ("push", "box", "plate"), ("pour", "bottle", "bowl"), ("stir", "spoon", "cup"),
                ("shake", "ball", None), ("place", "box", "board")]
    return [generate_scene(100 + i, SMALL, triplet=t) for i, t in enumerate(triplets)]


def test_action_of_text_and_vocabulary():
    assert A.ACTION_NAMES == tuple(sorted(ACTIONS)) and len(A.ACTION_NAMES) == 11
    for action, (template, tools, targets) in ACTIONS.items():
        assert A.action_of_text(template.format(tool=tools[0], target=targets[0] if targets else None)) == action
    with pytest.raises(ValueError, match="vocabulary"):
        A.action_of_text("juggle the ball")


def test_features_resampling_and_order_invariance(scenes):
    tracks = scenes[0].tracks_world
    feats = A.track_features(tracks, scenes[0].labels)
    assert feats.shape == (tracks.shape[1], A.FEATURE_DIM)
    assert np.allclose(feats[:, :3], (tracks[1] - tracks[0]) / A.DISP_SCALE, atol=1e-5)
    line = np.linspace(0, 1, 17)[:, None, None] * np.ones((1, 2, 3))
    assert np.allclose(A.resample_frames(line), np.linspace(0, 1, 9)[:, None, None] * np.ones((1, 2, 3)))
    model = A.ActionClassifier().eval()
    perm = np.random.default_rng(0).permutation(tracks.shape[1])
    assert np.allclose(model.predict_proba(tracks), model.predict_proba(tracks[:, perm]), atol=1e-6)
    x = torch.from_numpy(feats)[None]
    padded = torch.cat([x, torch.zeros_like(x[:, :7])], dim=1)
    mask = torch.ones(padded.shape[:2], dtype=torch.bool)
    mask[:, -7:] = False
    assert torch.allclose(model(x), model(padded, mask), atol=1e-5)
    with pytest.raises(ValueError, match="finite"):
        model.predict_proba(np.full_like(tracks, np.nan))


def test_training_separates_two_actions(tmp_path):
    for i in range(24):
        triplet = ("lift", "cup", None) if i % 2 else ("push", "cup", "plate")
        generate_scene(200 + i, SynthConfig(height=8, width=8, num_points=64), triplet=triplet).save(tmp_path / "tr" / f"s{i:02d}")
    for i in range(6):
        triplet = ("lift", "box", None) if i % 2 else ("push", "box", "bowl")
        generate_scene(300 + i, SynthConfig(height=8, width=8, num_points=64), triplet=triplet).save(tmp_path / "te" / f"s{i:02d}")
    info = A.run_cli(str(tmp_path / "tr"), str(tmp_path / "w"), None, [str(tmp_path / "te")], None, steps=150, seed=0)
    report = info["tests"][str(tmp_path / "te")]["no_labels"]
    assert report["accuracy"] == 100.0 and report["n"] == 6 and set(report["confusion"]) == {"lift", "push"}
    again = A.load_classifier(tmp_path / "w")
    assert A.action_accuracy([tmp_path / "te" / "s01"], ["lift the box"], again)["accuracy"] == 100.0
    assert "confusion" in A.format_report(info)


def test_shipped_weights_classify_ground_truth_and_not_a_static_scene(scenes):
    model = A.load_classifier()
    size = sum(p.stat().st_size for p in A.DEFAULT_WEIGHTS.iterdir())
    assert size < 1_000_000
    result = A.action_accuracy(scenes, [s.text for s in scenes], model)
    assert result["accuracy"] >= 5 / 6 * 100
    still = [np.repeat(s.tracks_world[:1], s.num_frames, axis=0) for s in scenes]
    assert A.action_accuracy(still, [s.text for s in scenes], model)["accuracy"] <= 100 / 3


def test_text_swap_scores_on_ground_truth(scenes):
    rng = np.random.default_rng(0)
    swapped = [A.swapped_text(s.meta, rng) for s in scenes]
    for s, text in zip(scenes, swapped):
        assert A.action_of_text(text) != s.meta["action"] and s.meta["tool"] in text
    # ground-truth motion with the other text: what a model that ignores the text would produce
    scores = A.text_swap_scores(scenes, [s.text for s in scenes], scenes, swapped)
    assert scores["swapped"]["accuracy"] <= 100 / 6 and scores["changed"] == 0
    assert scores["swapped_as_own"] == pytest.approx(scores["own"]["accuracy"])
