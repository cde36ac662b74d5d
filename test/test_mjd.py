"""MJD transformer, latent codecs, text encoders and MJD sampling."""

import numpy as np
import pytest
import torch

from syncmv4d_core.cameras import Camera
from syncmv4d_core.diffusion.flow import (add_noise, mjd_loss, mjd_velocity, preconditioned_velocity, sample_timesteps,
                                          velocity_target)
from syncmv4d_core.diffusion.sampling import impose_reference, make_scheduler, mjd_denoise_step
from syncmv4d_core.models.codec import PatchifyCodec, WanVAECodec, codec_to_frames, frames_to_codec
from syncmv4d_core.models.mjd import MJDTransformer, camera_features, camera_rays, preset, wan_reference_model
from syncmv4d_core.models.text import TinyTextEncoder, load_umt5

torch.set_flush_denormal(True)

B, V, C, FL, H, W = 1, 3, 48, 3, 8, 8  # latent shape of 3 views x 9 frames x 32x32 px (patchify codec)
TEXT_DIM = 32


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    """A tiny random Wan2.2 transformer saved in the Wan2.2-TI2V-5B-Diffusers layout."""
    torch.manual_seed(0)
    wan = wan_reference_model(preset("tiny")).eval()
    root = tmp_path_factory.mktemp("wan")
    wan.save_pretrained(str(root / "transformer"))
    return root, wan


def _inputs(seed=0, b=B, v=V):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, v, C, FL, H, W, generator=g)
    motion = torch.randn(b, v, C, FL, H, W, generator=g)
    text = torch.randn(b, 7, TEXT_DIM, generator=g)
    return video, motion, text


def _wan_per_view(wan, video, timestep, text):
    return torch.stack([wan(video[:, i], timestep, text).sample for i in range(video.shape[1])], dim=1)


def _ti2v_timesteps(t, frames, h, w):
    """Wan2.2 TI2V per-token timesteps (B, F'*h'*w'): 0 on frame-0 tokens, t elsewhere (as the pipeline)."""
    mask = torch.ones(1, frames, h, w)
    mask[:, 0] = 0
    return (mask[0][:, ::2, ::2] * t).flatten()[None]


@torch.no_grad()
def test_single_view_video_only_equals_wan(wan_dir):
    root, wan = wan_dir
    model = MJDTransformer.from_wan(root, motion=False).eval()
    video, _, text = _inputs(v=1)
    t = torch.tensor([731.0])
    out = model(video, None, t, text)
    assert out.motion_velocity is None and out.depth_range is None
    ref = wan(video[:, 0], t, text).sample
    assert (out.video_velocity[:, 0] - ref).abs().max() <= 1e-5
    # TI2V: reference in frame 0 -> per-token timesteps (B, L), 0 on frame-0 tokens
    out = model(video, None, t, text, ref_mask=torch.ones(1, 1, dtype=torch.bool))
    ref_tok = wan(video[:, 0], _ti2v_timesteps(731.0, FL, H, W), text).sample
    assert (out.video_velocity[:, 0] - ref_tok).abs().max() <= 1e-5
    assert (ref_tok - ref).abs().max() > 1e-3  # the per-token path really differs


@torch.no_grad()
@pytest.mark.parametrize("motion", [False, True])
def test_three_views_equal_wan_view_by_view_at_init(wan_dir, motion):
    root, wan = wan_dir
    model = MJDTransformer.from_wan(root, motion=motion).eval()
    video, mot, text = _inputs(1)
    t = torch.tensor([412.0])
    out = model(video, mot if motion else None, t, text)
    assert (out.video_velocity - _wan_per_view(wan, video, t, text)).abs().max() <= 1e-5


@torch.no_grad()
def test_ref_mask_selects_per_view_frame0_timestep(wan_dir):
    root, wan = wan_dir
    model = MJDTransformer.from_wan(root).eval()
    video, mot, text = _inputs(2)
    t = torch.tensor([500.0])
    out = model(video, mot, t, text, ref_mask=torch.tensor([[True, False, True]]))
    per_token = _ti2v_timesteps(500.0, FL, H, W)
    for i, has_ref in enumerate([True, False, True]):
        ref = wan(video[:, i], per_token if has_ref else t, text).sample
        assert (out.video_velocity[:, i] - ref).abs().max() <= 1e-5


def _trained_like(model, seed=0):
    """Perturb the zero-initialised gates/embeddings so the new paths are active."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("view_gate", "cross_modal_gate", "view_embedding")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@torch.no_grad()
def test_inter_view_attention_couples_views_only_when_enabled():
    torch.manual_seed(0)
    joint = _trained_like(MJDTransformer(preset("tiny")).eval())
    single = MJDTransformer(preset("tiny", inter_view=False)).eval()
    single.load_state_dict(joint.state_dict(), strict=False)
    video, mot, text = _inputs(3)
    t = torch.tensor([600.0])
    video2 = video.clone()
    video2[:, 2] += torch.randn_like(video2[:, 2])
    for model, coupled in ((joint, True), (single, False)):
        a, b = model(video, mot, t, text), model(video2, mot, t, text)
        diff = (a.video_velocity[:, 0] - b.video_velocity[:, 0]).abs().max()
        diff_s = (a.depth_range[:, 0] - b.depth_range[:, 0]).abs().max()
        assert (diff > 1e-4) == coupled and (diff_s > 1e-6) == coupled


@torch.no_grad()
def test_motion_changes_video_only_through_gate_and_guidance_is_added():
    torch.manual_seed(0)
    model = MJDTransformer(preset("tiny")).eval()
    video, mot, text = _inputs(4)
    t = torch.tensor([300.0])
    base = model(video, mot, t, text)
    other = model(video, mot * 2.0, t, text)
    assert torch.allclose(base.video_velocity, other.video_velocity, atol=1e-6)  # zero cross-modal gate
    assert not torch.allclose(base.motion_velocity, other.motion_velocity, atol=1e-4)
    _trained_like(model)
    a, b = model(video, mot, t, text), model(video, mot * 2.0, t, text)
    assert not torch.allclose(a.video_velocity, b.video_velocity, atol=1e-4)
    guide = torch.randn_like(mot)
    g1 = model(video, mot, t, text, motion_guidance=guide)
    g2 = model(video, mot + guide, t, text)
    assert torch.allclose(g1.motion_velocity, g2.motion_velocity, atol=1e-6)
    assert g1.depth_range.shape == (B, V, 2)


def test_bad_inputs_raise_value_error(tmp_path):
    model = MJDTransformer(preset("tiny"))
    video, mot, text = _inputs()
    t = torch.tensor([10.0])
    with pytest.raises(ValueError, match="motion_latents"):
        model(video, None, t, text)
    with pytest.raises(ValueError, match="timestep"):
        model(video, mot, torch.tensor([1.0, 2.0]), text)
    with pytest.raises(ValueError, match="ref_mask"):
        model(video, mot, t, text, ref_mask=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="video_latents"):
        model(video[..., :7], mot[..., :7], t, text)
    with pytest.raises(ValueError, match="unknown MJD preset"):
        preset("huge")
    with pytest.raises(FileNotFoundError, match="transformer"):
        MJDTransformer.from_wan(tmp_path)


def test_5b_preset_on_meta_device_counts_wan_parameters():
    cfg = preset("wan22-5b")
    with torch.device("meta"):
        model = MJDTransformer(cfg)
        wan = wan_reference_model(cfg)
    n_wan = sum(p.numel() for p in wan.parameters())
    assert 4.9e9 < n_wan < 5.1e9
    assert model.num_parameters() > n_wan
    assert {k for k in wan.state_dict()} <= {k for k in model.state_dict()}


def test_bf16_autocast_close_to_fp32_and_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = _trained_like(MJDTransformer(preset("tiny")))
    video, mot, text = _inputs(5)
    t = torch.tensor([250.0])
    with torch.no_grad():
        ref = model(video, mot, t, text)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(video, mot, t, text)
    rel = (low.video_velocity.float() - ref.video_velocity).norm() / ref.video_velocity.norm()
    assert rel < 0.05
    grads = []
    for ckpt in (False, True):
        model.config = model.config.replace(gradient_checkpointing=ckpt)
        model.zero_grad()
        out = model(video, mot, t, text)
        (out.video_velocity.square().mean() + out.motion_velocity.square().mean() + out.depth_range.sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_tiny_mjd_training_loss_falls_and_sampling_shapes():
    torch.manual_seed(0)
    codec = PatchifyCodec()
    text_encoder = TinyTextEncoder(dim=TEXT_DIM, max_length=32)
    text = text_encoder.encode(["pour water into the bowl"])
    model = MJDTransformer(preset("tiny"))
    g = torch.Generator().manual_seed(0)
    # structured data: smooth colour ramps moving over 9 frames, 3 views, 32x32 px
    ramp = torch.linspace(0, 1, 32)
    frames = torch.stack([(ramp[None, :, None] + 0.1 * f) % 1 * ramp[None, None, :] for f in range(9)], 1)
    videos = frames[None].expand(V, 3, 9, 32, 32) * 2 - 1  # (V, 3, F, H, W)
    z_video = codec.encode(videos)[None]  # (1, V, 48, 3, 8, 8)
    z_motion = codec.encode(videos.flip(-1))[None]
    depth = torch.tensor([[[0.4, 1.2], [0.5, 1.1], [0.3, 1.0]]])
    noise_v, noise_m = torch.randn(z_video.shape, generator=g), torch.randn(z_motion.shape, generator=g)
    t = sample_timesteps(1, shift=3.0, generator=g)
    ref_mask = torch.ones(1, V, dtype=torch.bool)
    x_v = impose_reference(add_noise(z_video, noise_v, t), z_video[:, :, :, :1], ref_mask)
    x_m = add_noise(z_motion, noise_m, t)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(60):
        out = model(x_v, x_m, t * 1000, text, ref_mask)
        terms = mjd_loss(out.video_velocity, velocity_target(z_video, noise_v), out.motion_velocity,
                         velocity_target(z_motion, noise_m), out.depth_range, depth, ref_mask)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.6 * losses[0]  # measured: 3.83 -> 1.76
    model.eval()
    latent_shape = tuple(z_video.shape[1:])  # (V, 48, 3, 16, 16)
    video_sched, motion_sched = make_scheduler("unipc", 3.0), make_scheduler("unipc", 3.0)
    for sched in (video_sched, motion_sched):
        sched.set_timesteps(3)
    g = torch.Generator().manual_seed(1)
    video, motion = torch.randn((1, *latent_shape), generator=g), torch.randn((1, *latent_shape), generator=g)
    for step in range(3):
        res = mjd_denoise_step(model, video_sched, motion_sched, step, video, motion, text, text_encoder.encode([""]),
                               z_video[:, :, :, :1], ref_mask, None, 3.0)
        video, motion = res.video_latents, res.motion_latents
    assert video.shape == motion.shape == res.video_x0.shape == (1, *latent_shape)
    assert res.depth_range.shape == (1, V, 2)
    assert torch.equal(video[:, :, :, 0], z_video[:, :, :, 0])
    assert codec.decode(video[0]).shape == (V, 3, 9, 32, 32)


# ---------------------------------------------------------------- codecs
def test_patchify_codec_is_exactly_invertible():
    codec = PatchifyCodec()
    x = torch.rand(2, 3, 9, 32, 48) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, codec.channels, 3, 16, 24) and codec.channels == 48
    assert torch.equal(codec.decode(z), x)
    img = x[:, :, :1]
    assert torch.equal(codec.decode(codec.encode(img)), img)  # a reference image: F = 1 -> F' = 1
    assert torch.equal(z[:, :, 1:], codec.encode(x)[:, :, 1:])
    frames = torch.rand(2, 9, 32, 48, 3)
    assert torch.allclose(codec_to_frames(frames_to_codec(frames)), frames)
    with pytest.raises(ValueError, match="frames=8"):
        codec.encode(x[:, :, :8])
    with pytest.raises(ValueError, match="divisible"):
        codec.encode(x[..., :31])


@torch.no_grad()
def test_wan_vae_codec_shapes_and_normalisation():
    codec = WanVAECodec.tiny()
    codec.latents_mean.fill_(0.5)
    codec.latents_std.fill_(2.0)
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (1, 48, 2, 2, 2)
    raw = codec.vae.encode(x).latent_dist.mode()
    assert torch.allclose(z, (raw - 0.5) / 2.0, atol=1e-6)
    y = codec.decode(z)
    assert y.shape == x.shape
    assert torch.allclose(y, codec.vae.decode(raw).sample, atol=1e-5)


# ---------------------------------------------------------------- text
def test_tiny_text_encoder_is_deterministic_distinct_and_saveable():
    enc = TinyTextEncoder(dim=TEXT_DIM, max_length=24, seed=3)
    texts = ["stir the bowl with the spoon", "pour the cup into the bowl", ""]
    e = enc.encode(texts)
    assert e.shape == (3, 24, TEXT_DIM)
    assert (e[0] - e[1]).abs().max() > 1e-3
    assert e[2, 1:].abs().max() == 0 and e[2, 0].abs().max() > 0  # empty text: EOS token then zeros
    copy = TinyTextEncoder(**enc.config())
    assert torch.equal(copy.encode(texts), e)
    other = TinyTextEncoder(dim=TEXT_DIM, max_length=24, seed=4)
    other.load_state_dict(enc.state_dict())
    assert torch.equal(other.encode(texts), e)


def test_load_umt5_missing_directory_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="text_encoder"):
        load_umt5(tmp_path)


def test_preconditioned_velocity_is_the_best_linear_predictor_plus_unit_residual():
    g = torch.Generator().manual_seed(0)
    s = 0.5
    for t in (0.05, 0.5, 0.95):
        x0 = s * torch.randn(200_000, generator=g)
        eps = torch.randn(200_000, generator=g)
        x_t = (1 - t) * x0 + t * eps
        v = eps - x0
        skip = preconditioned_velocity(x_t, torch.zeros_like(x_t), torch.tensor(t), s)
        c_out = preconditioned_velocity(torch.zeros(1), torch.ones(1), torch.tensor(t), s)
        residual = v - skip
        assert abs(float((residual * x_t).mean())) < 0.01  # uncorrelated with the input: the linear optimum
        assert float(residual.std()) == pytest.approx(float(c_out), rel=0.02)  # F's target has unit variance


def test_sigma_data_passes_the_noise_through_the_skip():
    """mjd_velocity preconditions MJD's output: a zero network output leaves the skip c_skip(t) x_t."""
    cfg = preset("tiny", sigma_data=0.5)
    torch.manual_seed(0)
    model = MJDTransformer(cfg)
    with torch.no_grad():
        model.proj_out.weight.zero_(), model.proj_out.bias.zero_()
        model.motion_proj_out.weight.zero_(), model.motion_proj_out.bias.zero_()
    video = torch.randn(1, 2, 48, 3, 4, 4)
    motion = torch.randn(1, 2, 48, 3, 4, 4)
    t = torch.tensor([800.0])
    out = mjd_velocity(model, video, motion, t, torch.randn(1, 7, cfg.text_dim), torch.tensor([[True, False]]))
    assert torch.equal(model(video, motion, t, torch.randn(1, 7, cfg.text_dim)).motion_velocity,
                       torch.zeros_like(motion))  # the network itself never reads the noise level
    skip = (0.8 - 0.2 * 0.25) / (0.04 * 0.25 + 0.64)
    torch.testing.assert_close(out.motion_velocity, skip * motion)
    torch.testing.assert_close(out.video_velocity[:, 1], skip * video[:, 1])
    torch.testing.assert_close(out.video_velocity[:, 0, :, 1:], skip * video[:, 0, :, 1:])
    torch.testing.assert_close(out.video_velocity[:, 0, :, :1], -video[:, 0, :, :1])  # reference frame: t = 0


def test_sample_prediction_turns_the_clean_estimate_into_a_velocity():
    """prediction_type='sample': v = (x_t - x_0) / max(t, MIN_SAMPLE_T); with video_from_reference
    a zero network output predicts the reference frame held still in views that have one."""
    from syncmv4d_core.diffusion.flow import MIN_SAMPLE_T

    cfg = preset("tiny", prediction_type="sample", video_from_reference=True)
    torch.manual_seed(0)
    model = MJDTransformer(cfg)
    with torch.no_grad():
        model.proj_out.weight.zero_(), model.proj_out.bias.zero_()
        model.motion_proj_out.weight.zero_(), model.motion_proj_out.bias.zero_()
    video, motion = torch.randn(1, 2, 48, 3, 4, 4), torch.randn(1, 2, 48, 3, 4, 4)
    ref_mask = torch.tensor([[True, False]])
    out = mjd_velocity(model, video, motion, torch.tensor([600.0]), torch.randn(1, 7, cfg.text_dim), ref_mask)
    torch.testing.assert_close(out.motion_velocity, motion / 0.6)
    torch.testing.assert_close(out.video_velocity[:, 0, :, 1:], (video[:, 0, :, 1:] - video[:, 0, :, :1]) / 0.6)
    torch.testing.assert_close(out.video_velocity[:, 1], video[:, 1] / 0.6)  # no reference: x_0 = 0
    tiny_t = mjd_velocity(model, video, motion, torch.tensor([1.0]), torch.randn(1, 7, cfg.text_dim), ref_mask)
    torch.testing.assert_close(tiny_t.motion_velocity, motion / MIN_SAMPLE_T)  # t = 0.001 is clipped


def test_prediction_type_is_validated():
    with pytest.raises(ValueError, match="prediction_type='eps'"):
        preset("tiny", prediction_type="eps")
    with pytest.raises(ValueError, match="sigma_data"):
        preset("tiny", prediction_type="sample", sigma_data=0.5)
    with pytest.raises(ValueError, match="video_from_reference"):
        preset("tiny", video_from_reference=True)


def test_pooled_text_modulation_starts_silent_and_then_steers_every_token():
    """pooled_text: the mean of each text's own tokens (padding excluded) modulates the blocks; its
    zero-initialised output layer leaves a trained model's outputs unchanged until it is trained."""
    from syncmv4d_core.models.mjd import pool_text

    tokens = torch.zeros(2, 5, 3)
    tokens[0, :2] = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 1.0]])
    torch.testing.assert_close(pool_text(tokens), torch.tensor([[2.0, 1.0, 2.0], [0.0, 0.0, 0.0]]))

    torch.manual_seed(0)
    plain = MJDTransformer(preset("tiny")).eval()
    pooled = MJDTransformer(preset("tiny", pooled_text=True)).eval()
    missing, unexpected = pooled.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [f"pooled_text_embedder.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")]
    assert not unexpected
    video, motion, text = _inputs()
    t = torch.tensor([500.0])
    with torch.no_grad():
        before = plain(video, motion, t, text)
        torch.testing.assert_close(pooled(video, motion, t, text).video_velocity, before.video_velocity)
        torch.nn.init.normal_(pooled.pooled_text_embedder[-1].weight, std=0.5)
        after = pooled(video, motion, t, text)
        shifted = pooled(video, motion, t, text * 2.0)  # another pooled text
    for field in ("video_velocity", "motion_velocity", "depth_range"):
        assert not torch.allclose(getattr(after, field), getattr(before, field), atol=1e-4)
        assert not torch.allclose(getattr(shifted, field), getattr(after, field), atol=1e-4)


def _camera(width=64, height=48):
    return Camera.look_at("cam", [0.6, -0.5, 0.5], [0.0, 0.0, 0.05], fov_y_deg=60.0, width=width, height=height)


def test_camera_rays_pass_through_the_token_centres_in_the_world_frame():
    """camera_rays: the ray of token (i, j) of a rows x cols grid leaves the camera centre and passes
    through the 3D point Camera.unproject gives for that token's centre pixel; the features do not
    depend on the image resolution."""
    cam = _camera()
    feats = camera_features(torch.tensor(cam.K)[None], torch.tensor(cam.world_T_cam)[None], cam.width, cam.height)
    half = cam.resize(32, 24)
    feats_half = camera_features(torch.tensor(half.K)[None], torch.tensor(half.world_T_cam)[None], 32, 24)
    torch.testing.assert_close(feats, feats_half)
    rows, cols = 3, 4
    rays = camera_rays(feats.double(), rows, cols)[0]  # (rows*cols, 9)
    for i, j in [(0, 0), (1, 2), (2, 3)]:
        u, v = (j + 0.5) / cols * cam.width - 0.5, (i + 0.5) / rows * cam.height - 0.5
        point = cam.unproject(np.array([[u, v]]), np.array([0.7]))[0]
        direction = (point - cam.position) / np.linalg.norm(point - cam.position)
        ray = rays[i * cols + j].numpy()
        np.testing.assert_allclose(ray[:3], direction, atol=1e-6)
        np.testing.assert_allclose(ray[6:], cam.position, atol=1e-6)
        np.testing.assert_allclose(ray[3:6], np.cross(cam.position, direction), atol=1e-6)


def test_camera_conditioning_starts_silent_then_follows_the_camera():
    """camera_rays: zero-initialised embeddings leave a trained model's outputs unchanged; once trained,
    another camera changes the video, motion and depth range; without the camera it is an error."""
    torch.manual_seed(0)
    plain = MJDTransformer(preset("tiny")).eval()
    conditioned = MJDTransformer(preset("tiny", camera_rays=True)).eval()
    missing, unexpected = conditioned.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [f"{m}.{p}" for m in ("camera_embedding", "ray_embedding") for p in ("bias", "weight")]
    assert not unexpected
    video, motion, text = _inputs()
    t = torch.tensor([500.0])
    cam = _camera()
    one = camera_features(torch.tensor(cam.K), torch.tensor(cam.world_T_cam), cam.width, cam.height)
    camera = one.expand(B, V, -1).clone()
    moved = camera.clone()
    moved[..., 9:12] += torch.tensor([0.1, 0.0, 0.2])  # the camera centres shifted
    with torch.no_grad():
        before = plain(video, motion, t, text)
        silent = conditioned(video, motion, t, text, camera=camera)
        for field in ("video_velocity", "motion_velocity", "depth_range"):
            torch.testing.assert_close(getattr(silent, field), getattr(before, field))
        for layer in (conditioned.ray_embedding, conditioned.camera_embedding):
            torch.nn.init.normal_(layer.weight, std=0.5)
        after = conditioned(video, motion, t, text, camera=camera)
        other = conditioned(video, motion, t, text, camera=moved)
    for field in ("video_velocity", "motion_velocity", "depth_range"):
        assert not torch.allclose(getattr(other, field), getattr(after, field), atol=1e-4)
    with pytest.raises(ValueError, match=r"camera_rays=True: camera must be \(B, V, 16\) = \(1, 3, 16\).*got None"):
        conditioned(video, motion, t, text)
    with pytest.raises(ValueError, match=r"camera must be .*got \(1, 2, 16\)"):
        conditioned(video, motion, t, text, camera=camera[:, :2])


def test_motion_reference_starts_silent_and_reads_only_views_with_a_reference():
    """motion_reference: the zero-initialised shortcut leaves a trained model's outputs unchanged; once
    trained, the reference frame reaches the motion of the views that have one and nothing else; it
    needs the motion modality."""
    torch.manual_seed(0)
    plain = MJDTransformer(preset("tiny")).eval()
    shortcut = MJDTransformer(preset("tiny", motion_reference=True)).eval()
    missing, unexpected = shortcut.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["motion_reference_embedding.bias", "motion_reference_embedding.weight"]
    assert not unexpected
    video, motion, text = _inputs()
    t = torch.tensor([500.0])
    with_ref = torch.tensor([[True, False, True]])
    no_ref = torch.zeros(B, V, dtype=torch.bool)
    with torch.no_grad():
        for mask in (with_ref, no_ref):
            before, silent = plain(video, motion, t, text, mask), shortcut(video, motion, t, text, mask)
            for field in ("video_velocity", "motion_velocity", "depth_range"):
                torch.testing.assert_close(getattr(silent, field), getattr(before, field))
        torch.nn.init.normal_(shortcut.motion_reference_embedding.weight, std=0.5)
        torch.nn.init.normal_(shortcut.motion_reference_embedding.bias, std=0.5)
        torch.testing.assert_close(shortcut(video, motion, t, text, no_ref).motion_velocity,
                                   plain(video, motion, t, text, no_ref).motion_velocity)
        changed = shortcut(video, motion, t, text, with_ref).motion_velocity
        reference = plain(video, motion, t, text, with_ref).motion_velocity
    # a fresh model's inter-view gates are zero, so each view sees its own reference only
    change = (changed - reference).abs().amax(dim=(2, 3, 4, 5))[0]  # (V,)
    assert change[0] > 1e-2 and change[2] > 1e-2 and change[1] == 0
    with pytest.raises(ValueError, match=r"motion_reference needs the motion modality \(motion=True\)"):
        preset("tiny", motion=False, motion_reference=True)
