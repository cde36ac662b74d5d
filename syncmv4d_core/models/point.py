"""The Point structure that flows through DPA, and point-cloud serialization.

A batch of point clouds is stored without padding: all points are concatenated, sorted by their
segment (one segment = one point cloud, for DPA one frame of one sample) and described either
by ``batch`` (segment index per point) or by ``offset`` (cumulative point counts, the end index
of every segment); each is derived from the other.

Serialization (as in Point Transformer V3) maps integer voxel coordinates to a space-filling
curve code, so that sorting points by code places spatially close points next to each other;
attention then runs over patches of consecutive serialized points. The orders form a closed
set, :data:`ORDERS`: ``"z"`` (Morton code), ``"hilbert"`` (Hilbert curve, Skilling's
algorithm), and their ``-trans`` variants, which swap the x and y axes before encoding. A code
is a signed 64-bit integer: ``3 * depth`` low bits hold the curve index, the bits above hold the
segment index, so that sorting by code also groups points by segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import spconv.pytorch as spconv
import torch
from torch import Tensor

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
"""Serialization orders, in the order DPA's blocks cycle through them."""

MAX_DEPTH = 16
"""Bits per axis of a curve code. 16 bits leave 63 - 48 = 15 bits (32768 segments) for the
segment index, and cover 2^16 voxels per axis: 655 m at a 1 cm grid, far beyond a tabletop
scene (~1.5 m) even with the flow-matching noise spread around it."""

_CODE_BITS = 63  # int64 without the sign bit


def batch_to_offset(batch: Tensor) -> Tensor:
    """Segment end indices from per-point segment indices.

    Args:
        batch: (N,) int64 segment index per point, non-decreasing, starting at 0.

    Returns:
        (S,) int64 cumulative point counts; segment s spans ``offset[s-1]:offset[s]``.
    """
    if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (points grouped by segment)")
    return torch.bincount(batch).cumsum(0)


def offset_to_batch(offset: Tensor) -> Tensor:
    """Per-point segment indices from segment end indices.

    Args:
        offset: (S,) int64 cumulative point counts.

    Returns:
        (N,) int64 segment index per point, N = offset[-1].
    """
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(offset), device=offset.device), counts)


def _check_grid_coord(grid_coord: Tensor, depth: int) -> None:
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be in [1, {MAX_DEPTH}], got {depth}")
    if grid_coord.ndim != 2 or grid_coord.shape[1] != 3:
        raise ValueError(f"grid_coord must have shape (N, 3), got {tuple(grid_coord.shape)}")
    if grid_coord.numel() and (int(grid_coord.min()) < 0 or int(grid_coord.max()) >= 1 << depth):
        raise ValueError(
            f"grid_coord must lie in [0, 2^{depth}); got range "
            f"[{int(grid_coord.min())}, {int(grid_coord.max())}]"
        )


def _interleave(x: Tensor, y: Tensor, z: Tensor, depth: int) -> Tensor:
    """Interleave the low ``depth`` bits of three (N,) int64 tensors, x most significant."""
    code = torch.zeros_like(x)
    for bit in range(depth):
        shift = 3 * bit
        code |= ((x >> bit) & 1) << (shift + 2)
        code |= ((y >> bit) & 1) << (shift + 1)
        code |= ((z >> bit) & 1) << shift
    return code


def z_order_encode(grid_coord: Tensor, depth: int) -> Tensor:
    """Morton (z-order) code of voxel coordinates.

    Args:
        grid_coord: (N, 3) int64 voxel coordinates in [0, 2^depth).
        depth: bits per axis, at most :data:`MAX_DEPTH`.

    Returns:
        (N,) int64 codes in [0, 2^(3 depth)), one distinct code per voxel.
    """
    _check_grid_coord(grid_coord, depth)
    grid_coord = grid_coord.long()
    return _interleave(grid_coord[:, 0], grid_coord[:, 1], grid_coord[:, 2], depth)


def hilbert_encode(grid_coord: Tensor, depth: int) -> Tensor:
    """Hilbert-curve index of voxel coordinates (Skilling, "Programming the Hilbert curve", 2004).

    Consecutive indices are face-adjacent voxels, which z-order does not guarantee.

    Args:
        grid_coord: (N, 3) int64 voxel coordinates in [0, 2^depth).
        depth: bits per axis, at most :data:`MAX_DEPTH`.

    Returns:
        (N,) int64 codes in [0, 2^(3 depth)), one distinct code per voxel.
    """
    _check_grid_coord(grid_coord, depth)
    axes = [grid_coord[:, i].long().clone() for i in range(3)]
    # 1. Inverse undo: walk from the top bit down, reflecting / exchanging the low bits.
    q = 1 << (depth - 1)
    while q > 1:
        low = q - 1
        for i in range(3):
            bit_set = (axes[i] & q) != 0
            flip = axes[0] ^ low
            swap = (axes[0] ^ axes[i]) & low
            new_first = torch.where(bit_set, flip, axes[0] ^ swap)
            if i > 0:
                axes[i] = torch.where(bit_set, axes[i], axes[i] ^ swap)
            axes[0] = new_first
        q >>= 1
    # 2. Gray encode.
    axes[1] = axes[1] ^ axes[0]
    axes[2] = axes[2] ^ axes[1]
    t = torch.zeros_like(axes[0])
    q = 1 << (depth - 1)
    while q > 1:
        t = torch.where((axes[2] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    axes = [a ^ t for a in axes]
    # 3. The transposed index, read bit-plane by bit-plane, is the Hilbert index.
    return _interleave(axes[0], axes[1], axes[2], depth)


def encode(grid_coord: Tensor, batch: Tensor, depth: int, order: str) -> Tensor:
    """Serialization code with the segment index in the high bits.

    Args:
        grid_coord: (N, 3) int64 voxel coordinates in [0, 2^depth).
        batch: (N,) int64 segment index per point.
        depth: bits per axis, at most :data:`MAX_DEPTH`.
        order: one of :data:`ORDERS`.

    Returns:
        (N,) int64 codes; equal codes mean the same voxel of the same segment.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order.endswith("-trans"):
        grid_coord = grid_coord[:, [1, 0, 2]]
    curve = z_order_encode if order.startswith("z") else hilbert_encode
    code = curve(grid_coord, depth)
    segments = int(batch.max()) + 1 if batch.numel() else 0
    if segments.bit_length() > _CODE_BITS - 3 * depth:
        raise ValueError(
            f"{segments} segments do not fit in the {_CODE_BITS - 3 * depth} bits left by depth {depth}"
        )
    return (batch.long() << (3 * depth)) | code


def _segment_mean(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Mean of (N, C) values per group index (N,) in [0, size): (size, C)."""
    total = values.new_zeros(size, values.shape[1]).index_add_(0, index, values)
    count = torch.bincount(index, minlength=size).clamp_min(1).to(values.dtype)
    return total / count[:, None]


@dataclass
class Point:
    """A batch of point clouds in one structure, without padding.

    Keys (N points, S segments, C channels, O serialization orders):
        coord: (N, 3) float positions, metres.
        feat: (N, C) float features.
        batch: (N,) int64 segment index per point, non-decreasing (derived from ``offset``).
        offset: (S,) int64 cumulative point counts (derived from ``batch``).
        grid_size: voxel edge, metres.
        grid_coord: (N, 3) int64 voxel coordinates, relative to each segment's minimum corner.
        frame: (N,) int64 frame index of each point, or None.
        view: (N,) int64 source view of each point (-1 for points of no view), or None.
        track: (N,) int64 track index of each point (-1 for points of no track), or None.
        serialized_depth: bits per axis of the codes (0 before :meth:`serialize`).
        serialized_code: (O, N) int64 codes, one row per order, or None.
        serialized_order: (O, N) int64 permutation sorting the points by each code, or None.
        serialized_inverse: (O, N) int64 inverse permutation of ``serialized_order``, or None.
        sparse_conv_feat: spconv tensor over the occupied voxels (V voxels), or None.
        voxel_inverse: (N,) int64 index of each point's voxel in ``sparse_conv_feat``, or None.

    Build one with :meth:`from_points`; :meth:`serialize` and :meth:`sparsify` fill the derived
    keys, :meth:`grid_pool` builds the next coarser level.
    """

    coord: Tensor
    feat: Tensor
    batch: Tensor
    offset: Tensor
    grid_size: float
    grid_coord: Tensor
    frame: Tensor | None = None
    view: Tensor | None = None
    track: Tensor | None = None
    serialized_depth: int = 0
    serialized_code: Tensor | None = None
    serialized_order: Tensor | None = None
    serialized_inverse: Tensor | None = None
    sparse_conv_feat: spconv.SparseConvTensor | None = None
    voxel_inverse: Tensor | None = None

    @classmethod
    def from_points(
        cls,
        coord: Tensor,
        feat: Tensor,
        batch: Tensor,
        grid_size: float,
        frame: Tensor | None = None,
        view: Tensor | None = None,
        track: Tensor | None = None,
    ) -> Point:
        """Voxelise point clouds.

        Args:
            coord: (N, 3) positions, metres.
            feat: (N, C) features.
            batch: (N,) int64 segment index per point, non-decreasing, every segment non-empty.
            grid_size: voxel edge, metres (> 0).
            frame, view, track: optional (N,) int64 per-point labels carried along.

        Returns:
            A Point with ``grid_coord = floor((coord - segment minimum) / grid_size)``.
        """
        if grid_size <= 0:
            raise ValueError(f"grid_size must be positive, got {grid_size}")
        if coord.ndim != 2 or coord.shape[1] != 3:
            raise ValueError(f"coord must have shape (N, 3), got {tuple(coord.shape)}")
        if feat.shape[0] != coord.shape[0] or batch.shape != coord.shape[:1]:
            raise ValueError(
                f"coord {tuple(coord.shape)}, feat {tuple(feat.shape)} and batch "
                f"{tuple(batch.shape)} disagree on the number of points"
            )
        if not bool(torch.isfinite(coord).all()):
            raise ValueError("coord contains NaN or infinite values")
        offset = batch_to_offset(batch)
        if bool((torch.diff(offset, prepend=offset.new_zeros(1)) == 0).any()):
            raise ValueError("every segment must hold at least one point")
        segment_min = coord.new_full((len(offset), 3), float("inf"))
        segment_min = segment_min.scatter_reduce(
            0, batch[:, None].expand(-1, 3), coord.detach(), "amin"
        )
        grid_coord = torch.floor((coord.detach() - segment_min[batch]) / grid_size).long()
        return cls(coord, feat, batch, offset, grid_size, grid_coord, frame, view, track)

    @property
    def num_segments(self) -> int:
        """Number of segments S."""
        return len(self.offset)

    def serialize(self, orders: tuple[str, ...] = ORDERS) -> Point:
        """Compute codes, sorting permutations and their inverses for the given orders.

        The depth is the smallest that holds the largest grid coordinate. Points of the same
        voxel share a code; their relative order is decided by their x coordinate (then
        index), so that the serialized sequence does not depend on how the input points were
        numbered.

        Args:
            orders: subset of :data:`ORDERS`.

        Returns:
            self, with ``serialized_*`` filled (O = len(orders) rows).
        """
        if not orders:
            raise ValueError("at least one serialization order is needed")
        depth = max(int(self.grid_coord.max()).bit_length(), 1)
        if depth > MAX_DEPTH:
            raise ValueError(
                f"point spread of {int(self.grid_coord.max())} voxels at grid size "
                f"{self.grid_size} m needs {depth} bits per axis, more than {MAX_DEPTH} "
                f"(range {self.grid_size * 2**MAX_DEPTH:.1f} m); use a coarser grid"
            )
        tie_break = torch.argsort(self.coord[:, 0].detach(), stable=True)
        codes, sort_orders = [], []
        for order in orders:
            code = encode(self.grid_coord, self.batch, depth, order)
            sort_order = tie_break[torch.argsort(code[tie_break], stable=True)]
            codes.append(code)
            sort_orders.append(sort_order)
        self.serialized_depth = depth
        self.serialized_code = torch.stack(codes)
        self.serialized_order = torch.stack(sort_orders)
        self.serialized_inverse = torch.argsort(self.serialized_order, dim=1)
        return self

    def sparsify(self) -> Point:
        """Index the occupied voxels for spconv (several points may share a voxel).

        Returns:
            self, with ``voxel_inverse`` and ``sparse_conv_feat`` (voxel features = mean of
            the features of the points inside) filled.
        """
        depth = max(int(self.grid_coord.max()).bit_length(), 1)
        key = encode(self.grid_coord, self.batch, depth, "z")
        voxel_key, voxel_inverse = torch.unique(key, return_inverse=True)
        indices = self.grid_coord.new_zeros(len(voxel_key), 4)
        indices[voxel_inverse, 0] = self.batch
        indices[voxel_inverse, 1:] = self.grid_coord
        spatial_shape = (self.grid_coord.max(0).values + 1).tolist()
        self.voxel_inverse = voxel_inverse
        self.sparse_conv_feat = spconv.SparseConvTensor(
            self.voxel_features(self.feat), indices.int(), spatial_shape, self.num_segments
        )
        return self

    def voxel_features(self, feat: Tensor) -> Tensor:
        """Average per-point features (N, C) into the voxels of :meth:`sparsify`: (V, C)."""
        if self.voxel_inverse is None:
            raise ValueError("call sparsify() before voxel_features()")
        return _segment_mean(feat, self.voxel_inverse, int(self.voxel_inverse.max()) + 1)

    def grid_pool(self, feat: Tensor, reduce: str = "amax") -> tuple[Point, Tensor]:
        """Merge the points of every 2 x 2 x 2 voxel block (drop 3 code bits).

        Args:
            feat: (N, C') per-point features to reduce into the pooled points.
            reduce: "amax" or "mean" (torch ``scatter_reduce`` names).

        Returns:
            pooled: a Point at grid size 2 x grid_size, one point per occupied block, coord =
                mean of the merged coords, frame carried over, view/track dropped (None).
            cluster: (N,) int64 index of each point's pooled point (for unpooling).
        """
        if reduce not in ("amax", "mean"):
            raise ValueError(f"reduce must be 'amax' or 'mean', got {reduce!r}")
        grid_coord = self.grid_coord >> 1
        depth = max(int(grid_coord.max()).bit_length(), 1)
        key = encode(grid_coord, self.batch, depth, "z")
        cluster_key, cluster = torch.unique(key, return_inverse=True)
        size = len(cluster_key)
        pooled_feat = feat.new_zeros(size, feat.shape[1]).scatter_reduce(
            0, cluster[:, None].expand_as(feat), feat, reduce, include_self=False
        )
        pooled_batch = cluster_key >> (3 * depth)
        pooled_grid = self.grid_coord.new_zeros(size, 3)
        pooled_grid[cluster] = grid_coord
        frame = None
        if self.frame is not None:
            frame = self.frame.new_zeros(size)
            frame[cluster] = self.frame
        pooled = Point(
            coord=_segment_mean(self.coord, cluster, size),
            feat=pooled_feat,
            batch=pooled_batch,
            offset=batch_to_offset(pooled_batch),
            grid_size=self.grid_size * 2,
            grid_coord=pooled_grid,
            frame=frame,
        )
        return pooled, cluster
