"""SceneDataset: splits, subsets, view sampling, crops, resizing, ground truth, batching."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from syncmv4d_core.cameras import CLUSTERS
from syncmv4d_core.data.dataset import SceneDataset, collate_scenes, find_scenes, scene_split
from syncmv4d_core.data.synthetic import SynthConfig, generate_scene, write_scenes
from syncmv4d_core.scene import Scene
from syncmv4d_core.pseudo_video import encode_views

CONFIG = SynthConfig(num_frames=9, height=32, width=32, num_points=128)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """3 train scenes (meta split), 1 held-out test scene, 1 scene whose split is its folder name."""
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root / "synth", 3, seed=0, config=CONFIG, split="train")
    generate_scene(7, CONFIG, split="test").save(root / "synth" / "heldout")
    folder_scene = generate_scene(11, CONFIG, split="train")
    folder_scene.meta.pop("split")
    folder_scene.save(root / "val" / "clip_00")
    return root


def test_split_filtering(root):
    assert len(find_scenes(root)) == 5
    assert scene_split(root / "val" / "clip_00") == "val"
    train = SceneDataset(root, split="train")
    assert len(train) == 3 and all(scene_split(d) == "train" for d in train.scene_dirs)
    assert root / "synth" / "heldout" not in train.scene_dirs
    assert [d.name for d in SceneDataset(root, split="test").scene_dirs] == ["heldout"]
    assert [d.name for d in SceneDataset(root, split="val").scene_dirs] == ["clip_00"]
    assert len(SceneDataset(root, split=None)) == 5
    with pytest.raises(ValueError, match="split"):
        SceneDataset(root, split="training")
    with pytest.raises(ValueError, match="no scenes"):
        SceneDataset(root / "val", split="train")


def test_fraction_is_a_deterministic_subset(root):
    full = SceneDataset(root, split=None)
    part = SceneDataset(root, split=None, fraction=0.4, seed=3)
    assert len(part) == 2 and set(part.scene_dirs) <= set(full.scene_dirs)
    assert part.scene_dirs == SceneDataset(root, split=None, fraction=0.4, seed=3).scene_dirs
    with pytest.raises(ValueError, match="fraction"):
        SceneDataset(root, fraction=0.0)


def test_sample_ground_truth(root):
    ds = SceneDataset(root, split="train", num_frames=5)
    item = ds[1]
    scene = Scene.load(ds.scene_dirs[1])
    V, F, K = 3, 5, scene.num_points
    assert item["videos"].shape == (V, F, 32, 32, 3) and item["videos"].dtype == torch.float32
    assert item["pseudo_videos"].shape == (V, F, 32, 32, 3) and item["pseudo_videos"].dtype == torch.float32
    assert item["depth_ranges"].shape == (V, 2) and item["tracks_world"].shape == (F, K, 3)
    assert item["anchors_uv"].shape == (V, K, 2) and item["anchor_visible"].dtype == torch.bool
    assert item["intrinsics"].shape == (V, 3, 3) and item["world_T_cam"].shape == (V, 4, 4)
    assert item["labels"].dtype == torch.int64 and item["text"] == scene.text
    # one camera per cluster, in cluster order
    assert [c.cluster for c in item["cameras"]] == list(CLUSTERS)
    names = [c.name for c in scene.cameras]
    picks = [names.index(c.name) for c in item["cameras"]]
    # the temporal window is a contiguous crop of the scene, the same for tracks and videos
    starts = [s for s in range(scene.num_frames - F + 1)
              if np.array_equal(scene.tracks_world[s:s + F], item["tracks_world"].numpy())]
    assert len(starts) == 1
    s = starts[0]
    assert torch.equal(item["videos"], torch.from_numpy(scene.videos[picks, s:s + F]).float() / 255)
    # pseudo videos: the float (unquantised) encoding of the cropped tracks with these depth ranges
    expected = encode_views(scene.tracks_world[s:s + F], item["cameras"], item["depth_ranges"].numpy(),
                            item["anchors_uv"].numpy())
    np.testing.assert_array_equal(item["pseudo_videos"].numpy(), expected)
    assert len(np.unique(item["pseudo_videos"].numpy())) > 256  # not 8-bit quantised
    # anchors: NaN exactly where not visible; visible anchors are frame-0 projections
    nan = torch.isnan(item["anchors_uv"]).any(-1)
    assert torch.equal(nan, ~item["anchor_visible"]) and item["anchor_visible"].any(1).all()
    uv0, _ = item["cameras"][0].project(item["tracks_world"][0].numpy())
    vis = item["anchor_visible"][0].numpy()
    np.testing.assert_allclose(item["anchors_uv"][0].numpy()[vis], uv0[vis], atol=1e-4)
    zmin, zmax = item["depth_ranges"].unbind(-1)
    assert (zmin > 0).all() and (zmax > zmin).all()


def test_views_are_deterministic_per_epoch(root):
    ds = SceneDataset(root, split="train", seed=5)
    names = lambda item: [c.name for c in item["cameras"]]  # noqa: E731
    first = names(ds[0])
    assert names(SceneDataset(root, split="train", seed=5)[0]) == first
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        seen.add(tuple(names(ds[0])))
    ds.set_epoch(0)
    assert names(ds[0]) == first and len(seen) > 1


def test_resize_and_num_views(root):
    ds = SceneDataset(root, split="train", size=(16, 24), num_views=2)
    item = ds[0]
    scene = Scene.load(ds.scene_dirs[0])
    assert item["videos"].shape == (2, 9, 16, 24, 3) and item["pseudo_videos"].shape == (2, 9, 16, 24, 3)
    cam = item["cameras"][0]
    assert (cam.width, cam.height) == (24, 16)
    original = next(c for c in scene.cameras if c.name == cam.name)
    np.testing.assert_allclose(item["intrinsics"][0].numpy(), original.resize(24, 16).K, rtol=1e-6)
    view = [c.name for c in scene.cameras].index(cam.name)
    resized = cv2.resize(scene.videos[view, 4], (24, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal((item["videos"][0, 4].numpy() * 255).round().astype(np.uint8), resized)
    assert item["pseudo_videos"].amax() > 0


def test_bad_num_frames_and_crop_longer_than_scene(root):
    for bad in (4, 6, 0):
        with pytest.raises(ValueError, match="4n\\+1"):
            SceneDataset(root, split="train", num_frames=bad)
    with pytest.raises(ValueError, match="13"):
        SceneDataset(root, split="train", num_frames=13)[0]


def test_collate_and_shape_mismatch(root):
    ds = SceneDataset(root, split="train", num_frames=5)
    batch = collate_scenes([ds[0], ds[1]])
    assert batch["videos"].shape == (2, 3, 5, 32, 32, 3) and batch["labels"].shape[0] == 2
    assert len(batch["cameras"]) == 2 and len(batch["text"]) == 2 and len(batch["scene_dir"]) == 2
    other = SceneDataset(root, split="train", size=(16, 16))[2]
    with pytest.raises(ValueError, match=ds.scene_dirs[0].name):
        collate_scenes([ds[0], other])


def test_scene_cache_is_bounded_and_shared(root):
    cache = OrderedDict()
    ds = SceneDataset(root, split="train", cache_size=2, cache=cache)
    for i in range(len(ds)):
        ds.load_scene(i)
    assert len(cache) == 2 and list(cache) == [str(d) for d in ds.scene_dirs[1:]]
    other = SceneDataset(root, split="train", cache_size=2, cache=cache)
    assert other.load_scene(2) is ds.load_scene(2)
