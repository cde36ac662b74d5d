"""DPA: spconv on CPU, Eq. 4 loss pieces, network contract, symmetries and a small overfit."""

import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

from syncmv4d_core.diffusion.flow import add_noise, estimate_x0, model_timestep
from syncmv4d_core.diffusion.track_flow import chamfer_distance, coarse_track_frame, dpa_loss, sample_track_noise
from syncmv4d_core.models.dpa import DPA, DPAConfig, patch_partition, preset
from syncmv4d_core.models.spconv_cpu import SubMConv3d


@pytest.fixture(autouse=True)
def _no_denormals():
    torch.set_flush_denormal(True)  # tiny weights: keep CPU math fast (denormals)


def _sparse_grid(seed: int, edge: int, channels: int):
    g = torch.Generator().manual_seed(seed)
    voxels = (torch.rand(edge, edge, edge, generator=g) < 0.3).nonzero()
    feat = torch.randn(len(voxels), channels, generator=g, requires_grad=True)
    indices = torch.cat([torch.zeros(len(voxels), 1, dtype=torch.long), voxels], 1).int()
    return spconv.SparseConvTensor(feat, indices, [edge] * 3, 1), voxels, feat


def _dense_reference(conv: SubMConv3d, voxels: torch.Tensor, feat: torch.Tensor, edge: int) -> torch.Tensor:
    """Submanifold conv = dense conv3d over the zero-filled grid, read at the active voxels."""
    dense = feat.new_zeros(1, feat.shape[1], edge, edge, edge)
    dense[0, :, voxels[:, 0], voxels[:, 1], voxels[:, 2]] = feat.T
    weight = conv.conv.weight.permute(0, 4, 1, 2, 3)  # spconv (out, k, k, k, in) -> (out, in, k, k, k)
    out = F.conv3d(dense, weight, conv.bias, padding=1)
    return out[0][:, voxels[:, 0], voxels[:, 1], voxels[:, 2]].T


def test_spconv_forward_backward_on_cpu_matches_dense_conv_repeatedly():
    # 8K voxels x 32 channels with 2 torch threads: large enough to expose spconv's CPU race
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        conv = SubMConv3d(32, 32, 3)
        torch.nn.init.normal_(conv.bias)
        sparse, voxels, feat = _sparse_grid(0, edge=30, channels=32)
        feat_ref = feat.detach().clone().requires_grad_(True)
        reference = _dense_reference(conv, voxels, feat_ref, 30)
        grad_out = torch.randn_like(reference)
        (reference * grad_out).sum().backward()
        weight_grad_ref = conv.conv.weight.grad.clone()
        for _ in range(4):
            feat.grad, conv.conv.weight.grad = None, None
            out = conv(sparse).features
            assert torch.get_num_threads() == 2
            (out * grad_out).sum().backward()
            assert torch.get_num_threads() == 2
            assert torch.allclose(out, reference, atol=1e-4)
            assert torch.isfinite(feat.grad).all()
            assert torch.allclose(feat.grad, feat_ref.grad, atol=1e-4)
            assert torch.allclose(conv.conv.weight.grad, weight_grad_ref, rtol=1e-4, atol=1e-2)
    finally:
        torch.set_num_threads(threads)


def test_spconv_eval_mode_with_bias_runs_on_cpu():
    torch.manual_seed(0)
    conv = SubMConv3d(2, 3, 3).eval()
    torch.nn.init.normal_(conv.bias)
    sparse, voxels, feat = _sparse_grid(1, edge=6, channels=2)
    with torch.no_grad():
        out = conv(sparse).features
        assert torch.allclose(out, _dense_reference(conv, voxels, feat, 6), atol=1e-5)


def test_chamfer_matches_brute_force_and_ignores_order():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 5, 7, 3, generator=g), torch.rand(2, 5, 4, 3, generator=g)
    d = ((a[..., :, None, :] - b[..., None, :, :]) ** 2).sum(-1)  # (2, 5, 7, 4)
    expected = d.min(-1).values.mean(-1) + d.min(-2).values.mean(-1)
    assert torch.allclose(chamfer_distance(a, b), expected, atol=1e-5)
    assert torch.allclose(chamfer_distance(a, a), torch.zeros(2, 5), atol=1e-6)
    perm = torch.randperm(7, generator=g)
    assert torch.allclose(chamfer_distance(a[..., perm, :], b), expected, atol=1e-5)


def test_coarse_frame_uses_only_valid_points():
    coarse = torch.zeros(1, 2, 1, 2, 3)
    coarse[0, 0, 0, 0] = torch.tensor([1.0, 0, 0])
    coarse[0, 1, 0, 0] = torch.tensor([-1.0, 0, 0])
    coarse[0, :, 0, 1] = 50.0  # invalid outliers
    mask = torch.tensor([[[[True, False]], [[True, False]]]])
    centre, scale = coarse_track_frame(coarse, mask)
    assert torch.allclose(centre, torch.zeros(1, 3)) and torch.allclose(scale, torch.ones(1))
    with pytest.raises(ValueError, match="no valid coarse point"):
        coarse_track_frame(coarse, torch.zeros_like(mask))
    noise = sample_track_noise((1, 50, 40, 3), centre + 2.0, scale * 0.5, torch.Generator().manual_seed(0))
    assert abs(noise.mean().item() - 2.0) < 0.05 and abs(noise.std().item() - 0.5) < 0.05


def test_loss_vanishes_at_the_true_velocity_and_grows_with_error():
    g = torch.Generator().manual_seed(0)
    tracks, noise = torch.rand(2, 3, 16, 3, generator=g), torch.randn(2, 3, 16, 3, generator=g)
    t = torch.tensor([0.2, 0.9])
    noisy = add_noise(tracks, noise, t)
    scale = torch.tensor([0.1, 0.5])
    exact = dpa_loss(noise - tracks, noisy, tracks, noise, t, scale)
    assert torch.allclose(estimate_x0(noisy, noise - tracks, t), tracks, atol=1e-6)
    assert exact.total.item() < 1e-10
    off = dpa_loss(noise - tracks + 0.01, noisy, tracks, noise, t, scale)
    # constant error 0.01 per coordinate: MSE 1e-4 / s^2, averaged over the two samples
    assert off.velocity_mse.item() == pytest.approx(0.5 * (1e-4 / 0.01 + 1e-4 / 0.25), rel=1e-3)
    assert off.chamfer.item() > 0


def test_patch_partition_never_crosses_segments():
    offset = torch.tensor([5, 5 + 12, 5 + 12 + 1])
    index, valid = patch_partition(offset, 4)
    assert index.shape == (2 + 3 + 1, 4)
    segment_of = torch.repeat_interleave(torch.arange(3), torch.tensor([5, 12, 1]))
    for row, ok in zip(index, valid):
        assert len(set(segment_of[row].tolist())) == 1
    assert torch.equal(torch.sort(index[valid]).values, torch.arange(18))


def _inputs(seed: int, b=2, v=3, f=9, k=256, kc=200):
    g = torch.Generator().manual_seed(seed)
    centre = torch.tensor([0.5, 0.0, 0.8])
    coarse = centre + 0.1 * torch.randn(b, v, f, kc, 3, generator=g)
    mask = torch.rand(b, v, f, kc, generator=g) > 0.2
    noisy = centre + 0.15 * torch.randn(b, f, k, 3, generator=g)
    t = torch.rand(b, generator=g)
    return noisy, coarse, t, mask


def _randomized_model(config: DPAConfig = preset("tiny")) -> DPA:
    """A DPA whose zero-initialised gates and head are perturbed, so every path is active."""
    torch.manual_seed(0)
    model = DPA(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_forward_shapes_and_gradients_reach_every_parameter():
    model = _randomized_model().train()
    noisy, coarse, t, mask = _inputs(0)
    velocity = model(noisy, coarse, t, mask)
    assert velocity.shape == (2, 9, 256, 3)
    assert torch.isfinite(velocity).all() and velocity.abs().mean() > 0
    velocity.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_fresh_model_is_the_zero_velocity():
    model = DPA(preset("tiny"))
    noisy, coarse, t, mask = _inputs(1, f=3, k=32, kc=16)
    assert torch.equal(model(noisy, coarse, t, mask), torch.zeros_like(noisy))


def test_velocity_is_equivariant_to_track_permutation():
    model = _randomized_model()
    noisy, coarse, t, mask = _inputs(2, f=5, k=128, kc=100)
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(noisy, coarse, t, mask)
        out_perm = model(noisy[:, :, perm], coarse, t, mask)
    assert torch.allclose(out_perm, out[:, :, perm], atol=1e-5)


def test_velocity_is_invariant_to_coarse_track_order_and_invalid_points():
    model = _randomized_model()
    noisy, coarse, t, mask = _inputs(3, f=5, k=128, kc=100)
    kc = coarse.shape[3]
    perm = torch.randperm(kc, generator=torch.Generator().manual_seed(1))
    moved = coarse.clone()
    moved[~mask] = 7.0  # invalid coarse points carry arbitrary values
    with torch.no_grad():
        out = model(noisy, coarse, t, mask)
        out_perm = model(noisy, moved[:, :, :, perm], t, mask[:, :, :, perm])
    assert torch.allclose(out_perm, out, atol=1e-5)


def test_bad_inputs_raise_value_error():
    model = DPA(preset("tiny"))
    noisy, coarse, t, mask = _inputs(4, f=3, k=16, kc=8)
    with pytest.raises(ValueError, match="noisy_tracks"):
        model(noisy[..., :2], coarse, t, mask)
    with pytest.raises(ValueError, match="coarse_tracks"):
        model(noisy, coarse[:, :, :2], t, mask)
    with pytest.raises(ValueError, match="timestep"):
        model(noisy, coarse, t[:1], mask)
    with pytest.raises(ValueError, match="no valid coarse point"):
        model(noisy, coarse, t, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="unknown DPAConfig"):
        preset("tiny", width=3)
    assert DPAConfig.from_dict(preset("small").to_dict()) == preset("small")


def _rotating_scene(b=2, v=3, f=5, k=64, coarse_noise=0.015):
    """Ground-truth tracks of a rotating 8 cm blob and per-view coarse copies with noise."""
    g = torch.Generator().manual_seed(0)
    base = 0.08 * torch.randn(b, 1, k, 3, generator=g)
    angle = torch.linspace(0, 0.5, f)[None, :, None]
    x, y, z = base.unbind(-1)
    tracks = torch.stack([angle.cos() * x - angle.sin() * y, angle.sin() * x + angle.cos() * y,
                          z.expand(b, f, k)], -1) + torch.tensor([0.5, 0.0, 0.8])
    coarse = tracks[:, None] + coarse_noise * torch.randn(b, v, f, k, 3, generator=g)
    mask = torch.ones(b, v, f, k, dtype=torch.bool)
    source = ((torch.arange(k) % v) * k + torch.arange(k)).expand(b, k)  # track i drawn from view i % V
    return tracks, coarse, mask, source, g


@pytest.fixture
def _one_thread():
    """One torch thread: the training trajectory (float reduction order) does not depend on the
    machine, and a loaded 2-core machine does not stall on thread barriers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_overfitting_a_small_set_beats_the_coarse_tracks(_one_thread):
    tracks, coarse, mask, source, g = _rotating_scene(coarse_noise=0.03)
    b, f, k, _ = tracks.shape
    centre, scale = coarse_track_frame(coarse, mask)
    timesteps = torch.tensor([[0.3, 0.6], [0.5, 0.8]])
    noises = [sample_track_noise((b, f, k, 3), centre, scale, g) for _ in timesteps]
    cases = [(t, noise, add_noise(tracks, noise, t)) for t, noise in zip(timesteps, noises)]
    torch.manual_seed(0)
    model = DPA(preset("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            results = []
            for t, noise, noisy in cases:
                velocity = model(noisy, coarse, model_timestep(t), mask)
                loss = dpa_loss(velocity, noisy, tracks, noise, t, scale).total.item()
                error = (estimate_x0(noisy, velocity, t) - tracks).norm(dim=-1).mean().item()
                results.append((loss, error))
        return tuple(sum(r[i] for r in results) / len(results) for i in range(2))

    loss_before, _ = evaluate()
    for step in range(120):
        t, noise, noisy = cases[step % len(cases)]
        loss = dpa_loss(model(noisy, coarse, model_timestep(t), mask), noisy, tracks, noise, t, scale).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss_after, error_after = evaluate()

    coarse_source = coarse.permute(0, 2, 1, 3, 4).reshape(b, f, -1, 3)[:, :, source[0]]  # (B, F, K, 3)
    coarse_error = (coarse_source - tracks).norm(dim=-1).mean().item()
    assert loss_after < 0.25 * loss_before
    assert error_after < 0.85 * coarse_error


def test_label_head_gives_per_track_logits_and_needs_num_labels():
    model = _randomized_model(preset("tiny", num_labels=4))
    noisy, coarse, t, mask = _inputs(5, f=3, k=32, kc=16)
    with torch.no_grad():
        velocity, logits = model(noisy, coarse, t, mask, return_labels=True)
        assert torch.equal(velocity, model(noisy, coarse, t, mask))
        perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
        _, logits_perm = model(noisy[:, :, perm], coarse, t, mask, return_labels=True)
    assert logits.shape == (2, 32, 4)
    torch.testing.assert_close(logits_perm, logits[:, perm], atol=1e-5, rtol=1e-5)  # one label per track identity
    with pytest.raises(ValueError, match="num_labels"):
        DPA(preset("tiny"))(noisy, coarse, t, mask, return_labels=True)
    with pytest.raises(ValueError, match="num_labels=-1"):
        preset("tiny", num_labels=-1)


def test_point_block_keeps_the_spconv_tensor_in_step_with_the_features():
    """After a block, ``sparse_conv_feat`` holds the voxel means of the block's output ``feat``
    (PTv3 re-syncs them), not the stale conv output of its xCPE."""
    from syncmv4d_core.models.dpa import PointBlock
    from syncmv4d_core.models.point import Point

    torch.manual_seed(0)
    cfg = preset("tiny")
    block = PointBlock(32, 64, cfg, level=0, order=0)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))  # open the zero-init gates so the features change
        coord = torch.rand(200, 3) * 0.2
        point = Point.from_points(coord=coord, feat=torch.randn(200, 32), batch=torch.zeros(200, dtype=torch.long),
                                  grid_size=cfg.grid_size).serialize(cfg.orders).sparsify()
        before = point.feat.clone()
        point = block(point, torch.randn(1, 64))
    assert not torch.allclose(point.feat, before)
    torch.testing.assert_close(point.sparse_conv_feat.features, point.voxel_features(point.feat))


def test_gradient_checkpointing_gives_the_same_velocity_and_gradients():
    """Recomputing each point block in backward changes nothing but memory (docs/paper-scale.md)."""
    noisy, coarse, t, mask = _inputs(2, f=3, k=64, kc=32)
    grads = []
    for checkpointing in (False, True):
        model = _randomized_model(preset("small", gradient_checkpointing=checkpointing)).train()
        velocity = model(noisy, coarse, t, mask)
        velocity.square().mean().backward()
        grads.append((velocity.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (v0, g0), (v1, g1) = grads
    torch.testing.assert_close(v1, v0, rtol=0, atol=0)
    assert g0.keys() == g1.keys() and all(g1[n] is not None for n in g1)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-7, msg=name)
