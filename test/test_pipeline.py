"""The closed-loop pipeline and the Algorithm 1 objectives on the tiny presets."""

import logging

import numpy as np
import pytest
import torch

from syncmv4d_core.cameras import Camera
from syncmv4d_core.scene import Scene
from syncmv4d_core.data.dataset import collate_scenes
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.pipeline import SyncMV4DPipeline, fuse_coarse_tracks, track_anchors
from syncmv4d_core.models.syncmv4d import SyncMV4DModel
from syncmv4d_core.training.objectives import STAGES, compute_loss, stage_parameters
from syncmv4d_core import pseudo_video

VIEWS = [0, 4, 8]  # one camera per cluster of the synthetic rig


@pytest.fixture(scope="module")
def scene():
    return generate_scene(3, SynthConfig(num_frames=9, height=64, width=64, num_points=256))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SyncMV4DModel.from_config({"num_tracks": 64})


def _batch(scene) -> dict:
    """A collated batch of one scene (three views), built like the dataset builds items."""
    cams = [scene.cameras[i] for i in VIEWS]
    ranges = pseudo_video.depth_range_from_tracks(scene.tracks_world, cams)
    anchors, visible = pseudo_video.anchors_for_views(scene.tracks_world, cams)
    item = {
        "videos": torch.from_numpy(scene.videos[VIEWS].astype(np.float32) / 255),
        "pseudo_videos": torch.from_numpy(pseudo_video.encode_views(scene.tracks_world, cams, ranges)),
        "depth_ranges": torch.from_numpy(ranges), "tracks_world": torch.from_numpy(scene.tracks_world),
        "anchors_uv": torch.from_numpy(anchors), "anchor_visible": torch.from_numpy(visible),
        "intrinsics": torch.from_numpy(np.stack([c.K for c in cams]).astype(np.float32)),
        "world_T_cam": torch.from_numpy(np.stack([c.world_T_cam for c in cams]).astype(np.float32)),
        "labels": torch.from_numpy(scene.labels.astype(np.int64)), "text": scene.text, "cameras": cams,
        "scene_dir": "memory",
    }
    return collate_scenes([item])


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "vae"])
def test_stage_losses_train_only_their_modules(model, scene, stage):
    params = stage_parameters(model, stage)
    terms = compute_loss(model, _batch(scene), stage, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in terms.values())
    model.zero_grad(set_to_none=True)
    terms["loss"].backward()
    trained = {id(p) for p in params}
    for p in model.parameters():
        if id(p) not in trained:
            assert p.grad is None
    # DDP and ZeRO-3 need a gradient for every parameter they train (warmup_mjd: inter-view ones frozen)
    assert all(p.grad is not None for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)
    if stage == "warmup_mjd":
        assert not any(p.requires_grad for p in model.mjd.inter_view_parameters())
    if stage == "joint":
        assert {"mjd", "dpa", "video", "motion", "scale", "dpa_chamfer"} <= set(terms)


def test_vae_stage_has_nothing_to_train_with_the_patchify_codec(model):
    assert stage_parameters(model, "vae") == []
    with pytest.raises(ValueError, match="unknown stage"):
        stage_parameters(model, "pretrain")


def test_algorithm1_joint_training_lowers_the_loss(scene):
    torch.manual_seed(0)
    model = SyncMV4DModel.from_config({"num_tracks": 64})
    batch = _batch(scene)
    opt = torch.optim.AdamW(stage_parameters(model, "joint"), lr=2e-3)
    losses = []
    for _ in range(25):
        terms = compute_loss(model, batch, "joint", torch.Generator().manual_seed(1))  # same t and noise each step
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses


def test_pipeline_outputs_are_deterministic_and_shaped(model, scene):
    pipe = SyncMV4DPipeline(model)
    cams = [scene.cameras[i] for i in VIEWS]
    images = [scene.videos[i, 0] for i in VIEWS]
    images[1] = None  # a view without reference image is generated from scratch
    steps = []
    out = pipe(images, cams, scene.text, num_frames=9, num_steps=3, seed=7, callback=lambda s, t: steps.append((s, t)))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert out.videos.shape == (3, 9, 64, 64, 3) and out.videos.dtype == np.uint8
    assert out.pseudo_videos.shape == (3, 9, 64, 64, 3)
    assert out.depth_ranges.shape == (3, 2) and (out.depth_ranges[:, 0] < out.depth_ranges[:, 1]).all()
    assert out.tracks_world.shape[0] == 9 and np.isfinite(out.tracks_world).all()
    assert out.track_anchors.shape == (out.num_points, 3)
    again = pipe(images, cams, scene.text, num_frames=9, num_steps=3, seed=7)
    np.testing.assert_array_equal(out.videos, again.videos)
    np.testing.assert_array_equal(out.tracks_world, again.tracks_world)
    other = pipe(images, cams, scene.text, num_frames=9, num_steps=3, seed=8)
    assert not np.array_equal(out.videos, other.videos)


@pytest.mark.parametrize("kwargs", [{"use_dpa": False}, {"cycle": False}, {"single_view": True}])
def test_pipeline_ablation_switches_run(model, scene, kwargs):
    cams = [scene.cameras[i] for i in VIEWS]
    out = SyncMV4DPipeline(model)([scene.videos[i, 0] for i in VIEWS], cams, scene.text, num_frames=5, num_steps=2,
                                  **kwargs)
    assert out.videos.shape == (3, 5, 64, 64, 3) and out.tracks_world.shape[0] == 5
    assert out.meta["use_dpa"] == kwargs.get("use_dpa", True)


def test_pipeline_rejects_bad_input_before_compute(model, scene):
    pipe = SyncMV4DPipeline(model)
    cams = [scene.cameras[i] for i in VIEWS]
    images = [scene.videos[i, 0] for i in VIEWS]
    with pytest.raises(ValueError, match="3 cameras"):
        pipe(images[:2], cams, scene.text)
    with pytest.raises(ValueError, match="4n\\+1"):
        pipe(images, cams, scene.text, num_frames=8)
    with pytest.raises(ValueError, match="must be \\(64, 64, 3\\) uint8"):
        pipe([images[0][:32]] + images[1:], cams, scene.text)
    with pytest.raises(ValueError, match="same image size"):
        pipe(images, cams[:2] + [cams[2].resize(128, 128)], scene.text)
    with pytest.raises(ValueError, match="multiple of"):
        pipe([np.zeros((36, 36, 3), np.uint8)] * 3, [c.resize(36, 36) for c in cams], scene.text)
    with pytest.raises(ValueError, match="non-finite"):
        Camera("bad", np.full((3, 3), np.nan), np.eye(4), 64, 64)


def test_checkpoint_round_trip_and_missing_checkpoint(model, scene, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    loaded = SyncMV4DModel.from_pretrained(tmp_path / "ckpt")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SyncMV4DPipeline.from_checkpoint(tmp_path / "missing")


def test_extended_from_pretrained_adds_modules_and_keeps_the_trained_ones(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    extended = SyncMV4DModel.extended_from_pretrained(tmp_path / "ckpt", mjd={"pooled_text": True})
    assert extended.config["mjd"]["pooled_text"] and not model.config["mjd"].get("pooled_text", False)
    trained, new = model.state_dict(), extended.state_dict()
    assert sorted(k for k in new if k not in trained) == [f"mjd.pooled_text_embedder.{i}.{p}" for i in (0, 2)
                                                          for p in ("bias", "weight")]
    for name, tensor in trained.items():
        assert torch.equal(new[name], tensor), name
    assert not new["mjd.pooled_text_embedder.2.weight"].any()  # starts silent
    with pytest.raises(ValueError, match=r"\{'mjd': \{'motion': False\}\} removes trained tensors of .*model.safetensors"):
        SyncMV4DModel.extended_from_pretrained(tmp_path / "ckpt", mjd={"motion": False})
    with pytest.raises(ValueError, match="model config entry 'num_tracks' is not a mapping"):
        SyncMV4DModel.extended_from_pretrained(tmp_path / "ckpt", num_tracks={"x": 1})


@pytest.mark.parametrize("change, layers", [("camera_rays", ("ray_embedding", "camera_embedding")),
                                           ("motion_reference", ("motion_reference_embedding",))])
def test_mjd_extension_trains_its_new_layers_and_generates(model, scene, tmp_path, change, layers):
    """camera_rays / motion_reference added to trained weights: the MJD losses reach the new layers,
    and the pipeline feeds them (a silent start generates what the model without them does)."""
    model.save_pretrained(tmp_path / "ckpt")
    conditioned = SyncMV4DModel.extended_from_pretrained(tmp_path / "ckpt", mjd={change: True})
    for stage in ("warmup_mjd", "joint"):
        conditioned.zero_grad(set_to_none=True)
        compute_loss(conditioned, _batch(scene), stage, torch.Generator().manual_seed(0))["loss"].backward()
        for name in layers:
            assert getattr(conditioned.mjd, name).weight.grad.abs().sum() > 0, (stage, name)
    conditioned.zero_grad(set_to_none=True)
    cams = [scene.cameras[i] for i in VIEWS]
    images = [scene.videos[i, 0] for i in VIEWS]
    plain = SyncMV4DPipeline(model)(images, cams, scene.text, num_frames=5, num_steps=2)
    with_cameras = SyncMV4DPipeline(conditioned)(images, cams, scene.text, num_frames=5, num_steps=2)
    np.testing.assert_array_equal(with_cameras.videos, plain.videos)
    np.testing.assert_allclose(with_cameras.tracks_world, plain.tracks_world, atol=1e-5)


def test_fusion_and_anchor_identity(scene):
    cams = [scene.cameras[i] for i in VIEWS]
    ranges = pseudo_video.depth_range_from_tracks(scene.tracks_world, cams)
    anchors, _ = pseudo_video.anchors_for_views(scene.tracks_world, cams)
    coarse, valid = pseudo_video.decode_views(pseudo_video.encode_views(scene.tracks_world, cams, ranges), cams, ranges, anchors)
    fused, source = fuse_coarse_tracks(np.nan_to_num(coarse), valid, 50)
    assert fused.shape == (9, 50, 3) and np.isfinite(fused).all()
    # every fused track is a ground-truth track (the decoded copy of track `source[:, 1]`)
    err = np.linalg.norm(fused - scene.tracks_world[:, source[:, 1]], axis=-1)
    assert np.median(err) < 0.01
    ids = track_anchors(scene.tracks_world, cams)
    seen = ids[:, 0] >= 0
    assert seen.any() and np.isfinite(ids[seen]).all() and np.isnan(ids[~seen, 1]).all()
    for v in range(3):
        rows = seen & (ids[:, 0] == v)
        np.testing.assert_allclose(ids[rows, 1:], anchors[v][rows], atol=1e-3)
    with pytest.raises(ValueError, match="nothing to fuse"):
        fuse_coarse_tracks(np.zeros_like(coarse), np.zeros_like(valid), 5)
    logging.getLogger(__name__).debug("fused %d tracks", fused.shape[1])


def test_video_only_model_trains_video_and_generates_no_tracks(scene):
    torch.manual_seed(0)
    model = SyncMV4DModel.from_config({"mjd": {"preset": "tiny", "motion": False}})
    params = stage_parameters(model, "joint")
    assert {id(p) for p in params} == {id(p) for p in model.mjd.parameters()}  # no DPA without motion
    terms = compute_loss(model, _batch(scene), "joint", torch.Generator().manual_seed(0))
    assert float(terms["motion"]) == 0 and float(terms["scale"]) == 0 and terms["loss"] > 0
    out = SyncMV4DPipeline(model)([scene.videos[i, 0] for i in VIEWS], [scene.cameras[i] for i in VIEWS], scene.text,
                                  num_frames=5, num_steps=2)
    assert out.videos.shape == (3, 5, 64, 64, 3) and out.tracks_world.shape == (5, 0, 3)
    assert out.pseudo_videos is None and out.meta["video_only"]


def test_final_sigma_ends_early_with_the_clean_estimate(model, scene):
    pipe = SyncMV4DPipeline(model)
    cams = [scene.cameras[i] for i in VIEWS]
    images = [scene.videos[i, 0] for i in VIEWS]
    steps = []
    out = pipe(images, cams, scene.text, num_frames=5, num_steps=10, final_sigma=0.7,
               callback=lambda s, t: steps.append((s, t)))
    run = out.meta["steps_run"]
    assert 1 <= run < 10 and steps[-1] == (run, run) and out.meta["final_sigma"] == 0.7
    np.testing.assert_array_equal(out.videos[:, 0], np.stack(images))  # the lossless codec keeps the references
    with pytest.raises(ValueError, match="final_sigma"):
        pipe(images, cams, scene.text, num_frames=5, num_steps=2, final_sigma=1.5)


def test_single_view_progress_counts_every_view_to_the_end(model, scene):
    steps = []
    SyncMV4DPipeline(model)([scene.videos[i, 0] for i in VIEWS], [scene.cameras[i] for i in VIEWS], scene.text,
                            num_frames=5, num_steps=6, final_sigma=0.7, single_view=True,
                            callback=lambda s, t: steps.append((s, t)))
    total = steps[-1][1]
    assert steps == [(s, total) for s in range(1, total + 1)] and total % 3 == 0 and total < 18


def test_labels_come_from_the_dpa_label_head_and_are_saved(scene, tmp_path):
    torch.manual_seed(0)
    model = SyncMV4DModel.from_config({"num_tracks": 32, "dpa": {"preset": "tiny", "num_labels": 4},
                                       "mjd": {"preset": "tiny", "prediction_type": "sample",
                                               "video_from_reference": True}})
    with torch.no_grad():  # a head that calls every track a tool (label 2) with probability ~0.9
        model.dpa.label_head[1].weight.zero_()
        model.dpa.label_head[1].bias.copy_(torch.tensor([0.0, 0.0, 3.0, 0.0]))
    terms = compute_loss(model, _batch(scene), "joint", torch.Generator().manual_seed(0))
    assert terms["dpa_label"] > 0 and torch.isfinite(terms["loss"])
    out = SyncMV4DPipeline(model)([scene.videos[i, 0] for i in VIEWS], [scene.cameras[i] for i in VIEWS], scene.text,
                                  num_frames=9, num_steps=3)
    assert (out.labels == 2).all()
    np.testing.assert_allclose(out.label_confidence, np.exp(3) / (np.exp(3) + 3), rtol=1e-5)
    out.save(tmp_path / "scene")
    np.testing.assert_array_equal(Scene.load(tmp_path / "scene").label_confidence, out.label_confidence)


def test_planned_steps_is_the_number_of_steps_the_callback_counts(model, scene):
    pipe = SyncMV4DPipeline(model)
    images, cams = [scene.videos[i, 0] for i in VIEWS], [scene.cameras[i] for i in VIEWS]
    for final_sigma in (0.0, 0.7):
        steps = []
        pipe(images, cams, scene.text, num_frames=9, num_steps=6, final_sigma=final_sigma,
             callback=lambda s, t: steps.append(t))
        assert set(steps) == {pipe.planned_steps(6, final_sigma=final_sigma)} and len(steps) == steps[0]
    assert pipe.planned_steps(6, final_sigma=0.7) < pipe.planned_steps(6, final_sigma=0.0) == 6
