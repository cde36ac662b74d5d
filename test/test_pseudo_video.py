"""Motion pseudo videos: encoding semantics, round-trip accuracy, robustness, batched helpers."""

import logging

import cv2
import numpy as np
import pytest

from syncmv4d_core import pseudo_video
from syncmv4d_core.cameras import Camera


def moving_shapes(num_points: int, num_frames: int, seed: int = 0) -> np.ndarray:
    """(F, K, 3) points on two translating spheres and a rotating, rising box (metres, z up)."""
    rng = np.random.default_rng(seed)
    n1 = n2 = num_points // 3
    n3 = num_points - n1 - n2
    t = np.linspace(0.0, 1.0, num_frames)[:, None, None]                  # (F, 1, 1)

    def sphere(n, centre, radius, velocity):
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return np.asarray(centre) + radius * d + t * np.asarray(velocity)

    box = rng.uniform(-1.0, 1.0, size=(n3, 3))
    face = rng.integers(0, 3, n3)
    box[np.arange(n3), face] = np.sign(box[np.arange(n3), face])          # on the surface
    box *= (0.15, 0.1, 0.06)
    angle = 1.2 * t[..., 0]                                                # (F, 1) radians
    c, s = np.cos(angle), np.sin(angle)
    rotated = np.stack([c * box[:, 0] - s * box[:, 1], s * box[:, 0] + c * box[:, 1],
                        np.broadcast_to(box[:, 2], c.shape * np.array([1, n3]))], axis=-1)
    box_track = rotated + np.array([0.25, -0.2, 0.06]) + t * np.array([-0.1, 0.2, 0.3])
    parts = [sphere(n1, (0.0, 0.0, 0.05), 0.12, (0.15, 0.05, 0.2)),
             sphere(n2, (-0.2, 0.25, 0.08), 0.08, (0.0, -0.3, 0.1)), box_track]
    return np.concatenate(parts, axis=1).astype(np.float32)


def view(width: int = 704, height: int = 480, name: str = "cam0", eye=(0.0, -0.8, 0.7)) -> Camera:
    """A camera 0.6-1.3 m from the shapes."""
    return Camera.look_at(name, eye=eye, target=(0.0, 0.0, 0.1), fov_y_deg=50.0, width=width, height=height)


def round_trip_errors(video, tracks, cam, depth_range, anchors):
    """Relative errors (camera frame) of the recovered points and the recovered fraction of in-image points."""
    rec, valid = pseudo_video.decode_pseudo_video(video, cam, depth_range, anchors)
    visible = np.isfinite(anchors).all(axis=1)
    uv, depth = cam.project(tracks)
    drawable = visible[None] & cam.in_image(uv, depth)
    assert not (valid & ~drawable).any(), "decoded a track that was never drawn"
    p, g = cam.to_camera(rec[valid].astype(np.float64)), cam.to_camera(tracks[valid].astype(np.float64))
    rel = np.linalg.norm(p - g, axis=-1) / np.linalg.norm(g, axis=-1)
    return rel, valid.sum() / drawable.sum()


@pytest.fixture(scope="module")
def scene_480():
    tracks = moving_shapes(1600, 5)
    cam = view()
    depth_range = pseudo_video.depth_range_from_tracks(tracks, [cam])[0]
    anchors, visible = pseudo_video.anchors_for_views(tracks, [cam])
    video = pseudo_video.encode_pseudo_video(tracks, cam, depth_range)
    return tracks, cam, depth_range, anchors[0], video


# ----------------------------------------------------------------------------- encoding semantics
def test_single_point_colour_and_position():
    cam = view(64, 48)
    point = cam.unproject(np.array([20.0, 10.0]), np.array(1.0))
    later = cam.unproject(np.array([40.0, 30.0]), np.array(1.5))
    tracks = np.stack([point, later])[:, None, :].astype(np.float32)      # (F=2, K=1, 3)
    video = pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0), radius=0)
    expected = np.array([(20 + 0.5) / 64, (10 + 0.5) / 48], np.float32)
    np.testing.assert_allclose(video[0, 10, 20, :2], expected, atol=1e-6)
    np.testing.assert_allclose(video[0, 10, 20, 2], (1.0 - 0.5) / 1.5, atol=1e-5)
    # Frame 1: drawn at the current pixel, same anchor colour, current depth.
    np.testing.assert_allclose(video[1, 30, 40, :2], expected, atol=1e-6)
    np.testing.assert_allclose(video[1, 30, 40, 2], (1.5 - 0.5) / 1.5, atol=1e-5)
    assert np.count_nonzero(video.max(-1)) == 2                            # background stays black


def test_default_radius_scales_with_image_size():
    assert pseudo_video.default_radius(480, 704) == 2 and pseudo_video.default_radius(256, 384) == 1 and pseudo_video.default_radius(64, 64) == 1


def test_splat_radius_and_image_border():
    cam = view(64, 48)
    tracks = cam.unproject(np.array([[10.0, 10.0], [0.0, 47.0]]), np.array([1.0, 1.0]))[None].astype(np.float32)
    video = pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0), radius=2)
    drawn = video[0].max(-1) > 0
    assert drawn[8:13, 8:13].all() and drawn.sum() == 25 + 3 * 3       # full 5x5 plus a corner-clipped 3x3


def test_nearest_point_wins():
    cam = view(64, 48)
    uv = np.array([[30.0, 20.0], [31.0, 20.0]])
    tracks = cam.unproject(uv, np.array([1.2, 0.8]))[None].astype(np.float32)  # second is nearer
    video = pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0), radius=1)
    # Pixels covered by both splats (u = 30, 31) carry the nearer point's anchor colour.
    np.testing.assert_allclose(video[0, 20, 30, 0], (31 + 0.5) / 64, atol=1e-6)
    np.testing.assert_allclose(video[0, 20, 29, 0], (30 + 0.5) / 64, atol=1e-6)


def test_points_behind_or_outside_are_skipped_and_unanchored_tracks_never_drawn():
    cam = view(64, 48)
    inside = cam.unproject(np.array([32.0, 24.0]), np.array(1.0))
    behind = cam.unproject(np.array([32.0, 24.0]), np.array(-1.0))
    outside = cam.unproject(np.array([100.0, 24.0]), np.array(1.0))
    # Track 0: inside, then behind the camera; track 1: outside in frame 0, inside in frame 1.
    tracks = np.array([[inside, outside], [behind, inside]], np.float32)
    anchors, visible = pseudo_video.anchors_for_views(tracks, [cam])
    assert visible.tolist() == [[True, False]] and np.isnan(anchors[0, 1]).all()
    video = pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0), radius=0)
    assert np.count_nonzero(video[0].max(-1)) == 1
    assert np.count_nonzero(video[1].max(-1)) == 0                         # track 1 has no anchor here


def test_depth_range_keeps_drawn_pixels_off_the_background(scene_480):
    tracks, cam, depth_range, anchors, video = scene_480
    _, depth = cam.project(tracks)
    assert depth_range[0] < depth.min() and depth.max() < depth_range[1]
    drawn = video.max(-1) > 0
    assert video[..., 2][drawn].min() >= pseudo_video.DEFAULT_MARGIN / (1 + 2 * pseudo_video.DEFAULT_MARGIN) - 1e-6
    assert video[drawn].max(-1).min() > 2 * pseudo_video.FOREGROUND_THRESHOLD


def test_depth_range_errors_and_flat_sets():
    cam = view(64, 48)
    behind = cam.unproject(np.zeros((3, 2)), -np.ones(3))[None]
    with pytest.raises(ValueError, match="cam0"):
        pseudo_video.depth_range_from_tracks(behind, [cam])
    flat = cam.unproject(np.array([[10.0, 10.0], [20.0, 20.0]]), np.ones(2))[None]
    zmin, zmax = pseudo_video.depth_range_from_tracks(flat, [cam])[0]
    assert zmin < 1.0 < zmax and zmax - zmin >= pseudo_video.MIN_DEPTH_SPAN
    with pytest.raises(ValueError, match="margin"):
        pseudo_video.depth_range_from_tracks(flat, [cam], margin=-0.1)


def test_out_of_range_depth_is_clipped_and_logged(caplog):
    cam = view(64, 48)
    tracks = cam.unproject(np.array([[10.0, 10.0]]), np.array([3.0]))[None].astype(np.float32)
    with caplog.at_level(logging.DEBUG, logger="syncmv4d_core.pseudo_video"):
        video = pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0), radius=0)
    assert "outside the range" in caplog.text
    assert video[0, 10, 10, 2] == 1.0


def test_tracking_video_keeps_frame0_inverse_depth():
    cam = view(64, 48)
    uv = np.array([[20.0, 20.0], [40.0, 20.0]])
    tracks = np.stack([cam.unproject(uv, np.array([0.6, 1.0])), cam.unproject(uv, np.array([1.8, 1.0]))]).astype(np.float32)
    das = pseudo_video.encode_tracking_video(tracks, cam, (0.5, 2.0), radius=0)
    ours = pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0), radius=0)
    expected = (1 / 0.6 - 1 / 2.0) / (1 / 0.5 - 1 / 2.0)
    np.testing.assert_allclose(das[:, 20, 20, 2], [expected, expected], atol=1e-5)
    np.testing.assert_allclose(ours[:, 20, 20, 2], [(0.6 - 0.5) / 1.5, (1.8 - 0.5) / 1.5], atol=1e-5)
    np.testing.assert_array_equal(das[..., :2], ours[..., :2])


# ----------------------------------------------------------------------------- round trip
def test_round_trip_float_and_uint8_at_480x704(scene_480):
    """Acceptance: K = 1600 at 480x704, mean relative error < 1 %, > 99 % under 0.25.

    Recovered fractions: some points are hidden behind nearer splats (back faces of the spheres)
    and in 8-bit storage anchors closer than W/255 = 2.8 px share a colour, so only one of them is
    decoded; on this set about 0.87 (float) and 0.76 (uint8) are recovered.
    """
    tracks, cam, depth_range, anchors, video = scene_480
    for pseudo, min_recovered in ((video, 0.8), (pseudo_video.to_uint8(video), 0.7)):
        rel, recovered = round_trip_errors(pseudo, tracks, cam, depth_range, anchors)
        assert rel.mean() < 0.01 and (rel < 0.25).mean() > 0.99, (pseudo.dtype, rel.mean())
        assert recovered > min_recovered, (pseudo.dtype, recovered)
    rel_float, _ = round_trip_errors(video, tracks, cam, depth_range, anchors)
    assert rel_float.max() < 0.01                                          # float: no misidentified pixel at all


def test_round_trip_degrades_gracefully_under_noise_and_blur(scene_480):
    """Gaussian blur + noise stand in for a VAE round trip.

    Thresholds: a blur of sigma 0.5 px with 1/255 noise leaves the 5x5 splats' centres nearly
    intact, so the mean error stays a few percent (bench: ~2 %) and almost all recovered points
    stay under 0.25; a stronger blur (sigma 1 px, 2/255 noise) must not collapse (bench: ~6-7 %).
    """
    tracks, cam, depth_range, anchors, video = scene_480
    rng = np.random.default_rng(0)
    means = []
    for sigma_blur, sigma_noise, max_mean, min_pi in ((0.5, 1.0, 0.04, 0.98), (1.0, 2.0, 0.10, 0.97)):
        blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), sigma_blur) for frame in video])
        noisy = np.clip(blurred + rng.normal(0.0, sigma_noise / 255.0, video.shape), 0.0, 1.0).astype(np.float32)
        for pseudo in (noisy, pseudo_video.to_uint8(noisy)):
            rel, recovered = round_trip_errors(pseudo, tracks, cam, depth_range, anchors)
            assert rel.mean() < max_mean and (rel < 0.25).mean() > min_pi, (sigma_blur, rel.mean(), (rel < 0.25).mean())
            assert recovered > 0.6, (sigma_blur, recovered)
        means.append(rel.mean())
    clean, _ = round_trip_errors(video, tracks, cam, depth_range, anchors)
    assert clean.mean() < means[0] < means[1]


def test_wrong_depth_range_scales_depth():
    """Decoding with a different range maps B linearly: the metric scale s matters."""
    tracks = moving_shapes(300, 2)
    cam = view(256, 192)
    depth_range = pseudo_video.depth_range_from_tracks(tracks, [cam])[0]
    anchors, _ = pseudo_video.anchors_for_views(tracks, [cam])
    video = pseudo_video.encode_pseudo_video(tracks, cam, depth_range)
    rec, valid = pseudo_video.decode_pseudo_video(video, cam, depth_range * 2, anchors[0])
    ratio = cam.to_camera(rec[valid].astype(np.float64))[:, 2] / cam.to_camera(tracks[valid].astype(np.float64))[:, 2]
    np.testing.assert_allclose(np.median(ratio), 2.0, rtol=0.02)


# ----------------------------------------------------------------------------- batched helpers
def test_views_match_single_view_functions():
    tracks = moving_shapes(400, 3)
    cams = [view(128, 96, "left", eye=(-0.7, -0.5, 0.7)), view(128, 96, "center"), view(128, 96, "right", eye=(0.7, -0.5, 0.7))]
    ranges = pseudo_video.depth_range_from_tracks(tracks, cams)
    anchors, visible = pseudo_video.anchors_for_views(tracks, cams)
    assert anchors.shape == (3, 400, 2) and visible.shape == (3, 400)
    videos = pseudo_video.encode_views(tracks, cams, ranges)
    assert videos.shape == (3, 3, 96, 128, 3) and videos.dtype == np.float32
    np.testing.assert_array_equal(videos[2], pseudo_video.encode_pseudo_video(tracks, cams[2], ranges[2]))
    rec, valid = pseudo_video.decode_views(videos, cams, ranges, anchors)
    assert rec.shape == (3, 3, 400, 3) and valid.shape == (3, 3, 400)
    single, single_valid = pseudo_video.decode_pseudo_video(videos[1], cams[1], ranges[1], anchors[1])
    np.testing.assert_array_equal(valid[1], single_valid)
    np.testing.assert_array_equal(rec[1][single_valid], single[single_valid])
    assert np.isnan(rec[~valid]).all()
    # Decoded positions are splat centres on the pixel grid; partly hidden splats pull them by up
    # to the 1 px radius (default at 128x96), so the median reprojection error stays near 1 px.
    for i, cam in enumerate(cams):
        uv_rec, _ = cam.project(rec[i][valid[i]])
        uv_gt, _ = cam.project(tracks[valid[i]])
        assert np.median(np.linalg.norm(uv_rec - uv_gt, axis=-1)) < 1.25, cam.name


def test_invalid_inputs_raise_value_errors():
    cam = view(64, 48)
    tracks = moving_shapes(30, 2)
    with pytest.raises(ValueError, match="tracks_world"):
        pseudo_video.encode_pseudo_video(tracks[0], cam, (0.5, 2.0))
    with pytest.raises(ValueError, match="depth_range"):
        pseudo_video.encode_pseudo_video(tracks, cam, (2.0, 0.5))
    with pytest.raises(ValueError, match="radius"):
        pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0), radius=-1)
    with pytest.raises(ValueError, match="outside"):
        pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0), anchors_uv=np.full((30, 2), 100.0))
    with pytest.raises(ValueError, match="non-finite"):
        pseudo_video.encode_pseudo_video(np.full((2, 3, 3), np.nan), cam, (0.5, 2.0))
    video = pseudo_video.encode_pseudo_video(tracks, cam, (0.5, 2.0))
    with pytest.raises(ValueError, match="pseudo video is 64x48"):
        pseudo_video.decode_pseudo_video(video, view(32, 24), (0.5, 2.0), np.zeros((30, 2)))
    with pytest.raises(ValueError, match="anchors_uv"):
        pseudo_video.decode_pseudo_video(video, cam, (0.5, 2.0), np.zeros((30, 3)))
    with pytest.raises(ValueError, match="image size"):
        pseudo_video.encode_views(tracks, [cam, view(32, 24, "small")], np.ones((2, 2)) * (0.5, 2.0))
