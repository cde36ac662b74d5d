"""Point structure and serialization: codes, orders, segments, pooling, voxels."""

import pytest
import torch

from syncmv4d_core.models.point import (
    MAX_DEPTH,
    ORDERS,
    Point,
    batch_to_offset,
    encode,
    hilbert_encode,
    offset_to_batch,
    z_order_encode,
)


def _cube(edge: int) -> torch.Tensor:
    """All voxels of an edge^3 grid, (edge^3, 3) int64."""
    axes = [torch.arange(edge)] * 3
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _random_point(seed: int = 0, segments: int = 3, per_segment: int = 400, grid_size: float = 0.02) -> Point:
    g = torch.Generator().manual_seed(seed)
    coord = 0.3 * torch.rand(segments * per_segment, 3, generator=g)
    batch = torch.arange(segments).repeat_interleave(per_segment)
    feat = torch.randn(len(coord), 4, generator=g)
    return Point.from_points(coord, feat, batch, grid_size)


@pytest.mark.parametrize("curve", [z_order_encode, hilbert_encode])
def test_curve_is_a_bijection_on_the_cube(curve):
    codes = curve(_cube(8), depth=3)
    assert torch.equal(torch.sort(codes).values, torch.arange(512))


def test_hilbert_steps_to_face_neighbours_and_z_order_jumps():
    grid = _cube(8)
    hilbert_path = grid[torch.argsort(hilbert_encode(grid, 3))]
    z_path = grid[torch.argsort(z_order_encode(grid, 3))]
    hilbert_steps = (hilbert_path[1:] - hilbert_path[:-1]).abs().sum(1)
    z_steps = (z_path[1:] - z_path[:-1]).abs().sum(1)
    assert int(hilbert_steps.max()) == 1
    assert int(z_steps.max()) > 1
    assert not torch.equal(hilbert_encode(grid, 3), z_order_encode(grid, 3))


def test_z_order_interleaves_bits_x_most_significant():
    grid = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 3, 3]])
    assert z_order_encode(grid, 2).tolist() == [4, 2, 1, 63]


def test_trans_orders_swap_x_and_y():
    grid = torch.randint(0, 64, (100, 3), generator=torch.Generator().manual_seed(1))
    batch = torch.zeros(100, dtype=torch.long)
    for curve in ("z", "hilbert"):
        swapped = encode(grid[:, [1, 0, 2]], batch, 6, curve)
        assert torch.equal(encode(grid, batch, 6, f"{curve}-trans"), swapped)


def test_codes_are_unique_per_voxel_and_segment():
    g = torch.Generator().manual_seed(2)
    grid = torch.randint(0, 6, (2000, 3), generator=g)  # many points share voxels
    batch = torch.randint(0, 3, (2000,), generator=g).sort().values
    voxels = torch.unique(torch.cat([batch[:, None], grid], 1), dim=0, return_inverse=True)[1]
    for order in ORDERS:
        codes = encode(grid, batch, 3, order)
        code_ids = torch.unique(codes, return_inverse=True)[1]
        # same code <=> same (segment, voxel)
        assert torch.equal(code_ids[:, None] == code_ids[None], voxels[:, None] == voxels[None])


def test_serialize_orders_are_inverse_permutations_and_sort_codes():
    point = _random_point().serialize()
    n = len(point.coord)
    assert point.serialized_code.shape == (len(ORDERS), n)
    for row in range(len(ORDERS)):
        order, inverse = point.serialized_order[row], point.serialized_inverse[row]
        assert torch.equal(order[inverse], torch.arange(n))
        assert torch.equal(inverse[order], torch.arange(n))
        assert bool((torch.diff(point.serialized_code[row][order]) >= 0).all())
        # segments stay contiguous and in order: batch sits in the high bits
        assert torch.equal(point.batch[order], point.batch)


def test_serialization_keeps_neighbours_close():
    point = _random_point(per_segment=2000, segments=1, grid_size=0.005).serialize()
    random_order = torch.randperm(len(point.coord), generator=torch.Generator().manual_seed(0))
    random_gap = (point.coord[random_order][1:] - point.coord[random_order][:-1]).norm(dim=1).mean()
    for row in range(len(ORDERS)):
        path = point.coord[point.serialized_order[row]]
        gap = (path[1:] - path[:-1]).norm(dim=1).mean()
        assert gap < 0.25 * random_gap


def test_serialized_sequence_does_not_depend_on_point_numbering():
    point = _random_point(grid_size=0.05).serialize()  # coarse grid: many points share a voxel
    perm = torch.randperm(len(point.coord), generator=torch.Generator().manual_seed(3))
    perm = perm[torch.argsort(point.batch[perm], stable=True)]  # keep segments grouped
    shuffled = Point.from_points(point.coord[perm], point.feat[perm], point.batch[perm], 0.05).serialize()
    assert torch.equal(shuffled.coord[shuffled.serialized_order], point.coord[point.serialized_order])


def test_offset_and_batch_are_derived_from_each_other():
    batch = torch.tensor([0, 0, 1, 2, 2, 2])
    offset = batch_to_offset(batch)
    assert offset.tolist() == [2, 3, 6]
    assert torch.equal(offset_to_batch(offset), batch)
    with pytest.raises(ValueError, match="sorted"):
        batch_to_offset(torch.tensor([1, 0]))


def test_user_errors_raise_value_error():
    grid = torch.zeros(3, 3, dtype=torch.long)
    batch = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="order"):
        encode(grid, batch, 4, "peano")
    with pytest.raises(ValueError, match="depth"):
        z_order_encode(grid, MAX_DEPTH + 1)
    with pytest.raises(ValueError, match="grid_coord"):
        hilbert_encode(torch.full((1, 3), 16), 4)
    with pytest.raises(ValueError, match="grid_size"):
        Point.from_points(torch.zeros(3, 3), torch.zeros(3, 1), batch, 0.0)
    # 100 m of spread at 1 mm needs 17 bits per axis
    far = Point.from_points(torch.tensor([[0.0, 0, 0], [100.0, 0, 0]]), torch.zeros(2, 1), batch[:2], 0.001)
    with pytest.raises(ValueError, match="coarser grid"):
        far.serialize()


def test_sparsify_averages_points_of_a_voxel():
    point = _random_point(grid_size=0.1).serialize().sparsify()
    voxels = torch.unique(torch.cat([point.batch[:, None], point.grid_coord], 1), dim=0)
    sparse = point.sparse_conv_feat
    assert sparse.features.shape[0] == len(voxels)
    assert torch.equal(torch.unique(sparse.indices.long(), dim=0), voxels)
    first = point.voxel_inverse == point.voxel_inverse[0]
    assert torch.allclose(sparse.features[point.voxel_inverse[0]], point.feat[first].mean(0), atol=1e-6)
    # every point's voxel holds its own grid coordinate
    assert torch.equal(sparse.indices[point.voxel_inverse, 1:].long(), point.grid_coord)


def test_grid_pool_merges_2x2x2_blocks_per_segment():
    point = _random_point(grid_size=0.02)
    pooled, cluster = point.grid_pool(point.feat, "amax")
    blocks = torch.unique(torch.cat([point.batch[:, None], point.grid_coord >> 1], 1), dim=0)
    assert len(pooled.coord) == len(blocks)
    assert pooled.grid_size == pytest.approx(0.04)
    assert torch.equal(pooled.batch[cluster], point.batch)
    assert torch.equal(pooled.grid_coord[cluster], point.grid_coord >> 1)
    assert bool((torch.diff(pooled.batch) >= 0).all())
    members = cluster == 5
    assert torch.allclose(pooled.feat[5], point.feat[members].max(0).values)
    assert torch.allclose(pooled.coord[5], point.coord[members].mean(0), atol=1e-6)
    assert pooled.offset.tolist() == batch_to_offset(pooled.batch).tolist()
