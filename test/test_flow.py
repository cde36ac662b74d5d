"""Rectified flow: noising, targets, timestep shift, Euler steps, the MJD loss, schedulers."""

import pytest
import torch

from syncmv4d_core.diffusion.flow import (add_noise, estimate_x0, euler_step, mjd_loss, sample_timesteps,
                                          shift_timesteps, velocity_target, video_loss_mask)
from syncmv4d_core.diffusion.sampling import classifier_free_guidance, impose_reference, make_scheduler


def test_noising_endpoints_velocity_and_estimate_on_track_shapes():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 9, 50, 3, generator=g)  # (N, F, K, 3) world tracks, metres
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0.0, 0.25, 0.7, 1.0])
    xt = add_noise(x0, eps, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[3], eps[3])
    v = velocity_target(x0, eps)
    dt = 1e-3  # finite-difference derivative of x_t along t equals the velocity
    assert torch.allclose((add_noise(x0, eps, t + dt) - xt) / dt, v, atol=1e-2)
    assert torch.allclose(estimate_x0(xt, v, t), x0, atol=1e-5)
    # Euler steps along the exact velocity land on x0 (straight paths)
    x = add_noise(x0, eps, torch.ones(4))
    grid = torch.linspace(1, 0, 6)
    for a, b in zip(grid[:-1], grid[1:]):
        x = euler_step(x, v, a.expand(4), b.expand(4))
    assert torch.allclose(x, x0, atol=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        add_noise(x0, eps[:, :3], t)


def test_timestep_shift_matches_diffusers_flow_sigmas():
    u = torch.linspace(0, 1, 11)
    s = shift_timesteps(u, 3.0)
    assert torch.equal(shift_timesteps(u, 1.0), u)
    assert s[0] == 0 and s[-1] == 1 and torch.all(s[1:-1] > u[1:-1]) and torch.all(s.diff() > 0)
    sched = make_scheduler("unipc", flow_shift=3.0)
    sched.set_timesteps(10)
    # UniPC's flow sigmas are the shifted linear grid; the model timestep is 1000 sigma
    raw = torch.linspace(1, 1 / 1000, 11)[:-1].double()
    assert torch.allclose(sched.sigmas[:-1].double(), shift_timesteps(raw, 3.0), atol=1e-6)
    assert torch.equal(sched.timesteps, (sched.sigmas[:-1] * 1000).to(torch.int64))
    t = sample_timesteps(2000, shift=3.0, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < 1 and t.median() > 0.6  # shift 3 moves the median 0.5 -> 0.75
    with pytest.raises(ValueError, match="shift"):
        shift_timesteps(u, 0.0)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("ddim")


def test_mjd_loss_terms_and_reference_frame_exclusion():
    g = torch.Generator().manual_seed(1)
    shape = (2, 3, 4, 3, 2, 2)  # (B, V, C, F', h, w)
    pred, target = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mp, mt = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    s_hat, s = torch.rand(2, 3, 2, generator=g), torch.rand(2, 3, 2, generator=g)
    ref = torch.tensor([[True, False, True], [False, False, False]])
    terms = mjd_loss(pred, target, mp, mt, s_hat, s, ref)
    mask = video_loss_mask(ref, pred.shape).expand(shape).bool()
    assert torch.allclose(terms["video"], ((pred - target) ** 2)[mask].mean())
    assert torch.allclose(terms["motion"], ((mp - mt) ** 2).mean())
    assert torch.allclose(terms["scale"], ((s_hat - s) ** 2).mean())
    assert torch.allclose(terms["loss"], terms["video"] + terms["motion"] + terms["scale"])
    changed = pred.clone()
    changed[0, 0, :, 0] += 10.0  # frame 0 of a view with a reference: not in the loss
    assert torch.equal(mjd_loss(changed, target, mp, mt, s_hat, s, ref)["video"], terms["video"])
    changed[0, 1, :, 0] += 10.0  # frame 0 of a view without a reference: in the loss
    assert mjd_loss(changed, target, mp, mt, s_hat, s, ref)["video"] > terms["video"] + 1
    video_only = mjd_loss(pred, target, None, None, None, None)
    assert video_only["motion"] == 0 and torch.allclose(video_only["loss"], ((pred - target) ** 2).mean())
    with pytest.raises(ValueError, match="both"):
        mjd_loss(pred, target, mp, None, None, None)


def test_reference_imposition_and_guidance():
    lat = torch.zeros(1, 3, 4, 3, 2, 2)
    ref = torch.ones(1, 3, 4, 1, 2, 2)
    out = impose_reference(lat, ref, torch.tensor([[True, False, True]]))
    assert out[0, 0, :, 0].eq(1).all() and out[0, 1, :, 0].eq(0).all() and out[0, 2, :, 0].eq(1).all()
    assert out[:, :, :, 1:].eq(0).all() and lat.eq(0).all()
    with pytest.raises(ValueError, match="ref_latents"):
        impose_reference(lat, ref[..., :1], torch.ones(1, 3, dtype=torch.bool))
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert classifier_free_guidance(c, u, 1.0) == c and classifier_free_guidance(c, u, 5.0) == 6.0
