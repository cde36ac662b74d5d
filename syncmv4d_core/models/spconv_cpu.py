"""spconv on machines without CUDA: the two workarounds DPA needs, in one place.

The spconv 2.3.8 CPU wheel runs sparse convolutions forward, but

1. its backward pass asks ``torch.cuda.current_stream()`` for a stream handle (through
   ``spconv.pytorch.ops.get_current_stream``), which fails when torch has no CUDA. The CPU
   kernels ignore the handle, so :func:`enable_cpu_backward` replaces the getter with one that
   returns the null stream ``0``. It only does so when CUDA is absent, so GPU runs are untouched.
2. in eval mode a convolution *with* bias passes the bias into the fused kernel, which asserts
   ``"cpu don't support act and bias"`` on CPU. :class:`SubMConv3d` therefore builds the spconv
   convolution without bias and adds its own bias parameter afterwards. This costs one add on a
   GPU too; it is kept on every device so that checkpoints have the same keys everywhere.

A third problem turned up on this project's 2-core machines: with more than one torch intra-op
thread, the CPU gather / matmul / scatter-add loop of spconv returns wrong values now and then
(differences of the order of the features themselves, different from run to run, in forward
and backward alike; exact with one thread). :class:`SubMConv3d` therefore runs spconv's forward
and backward with one torch thread on CPU tensors and restores the thread count afterwards.
"""

from __future__ import annotations

import logging
import contextlib
from contextlib import contextmanager

import spconv.pytorch as spconv
import spconv.pytorch.ops as spconv_ops
import torch
from torch import nn

logger = logging.getLogger(__name__)


def _null_stream() -> int:
    """The CUDA stream handle the CPU kernels receive (they ignore it)."""
    return 0


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run_backward_single_threaded(node: torch.autograd.graph.Node) -> None:
    """Make the autograd node of a spconv call run its backward with one torch thread."""
    threads: list[int] = []

    def before(grad_outputs):
        threads.append(torch.get_num_threads())
        torch.set_num_threads(1)

    def after(grad_inputs, grad_outputs):
        torch.set_num_threads(threads.pop())

    node.register_prehook(before)
    node.register_hook(after)


def enable_cpu_backward() -> bool:
    """Let spconv run backward passes when torch has no CUDA.

    Returns:
        True when the stream getter was replaced (no CUDA), False when CUDA is available and
        nothing was changed. Calling it again is harmless.
    """
    if torch.cuda.is_available():
        return False
    if spconv_ops.get_current_stream is not _null_stream:
        logger.debug("spconv: no CUDA, using the null stream for backward passes")
        spconv_ops.get_current_stream = _null_stream
    return True


class SubMConv3d(nn.Module):
    """Submanifold 3D convolution whose bias lives outside the spconv kernel.

    Args:
        in_channels: input feature width.
        out_channels: output feature width.
        kernel_size: cube edge in voxels (odd).
        indice_key: spconv rulebook cache key; convolutions on the same voxel set share it.
        bias: add a learned per-channel bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        indice_key: str | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        enable_cpu_backward()
        self.conv = spconv.SubMConv3d(
            in_channels, out_channels, kernel_size, bias=False, indice_key=indice_key
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        """Convolve a sparse tensor.

        Args:
            x: sparse tensor with features (N, in_channels) on N active voxels.

        Returns:
            Sparse tensor on the same voxels with features (N, out_channels).
        """
        dtype = x.features.dtype
        if dtype == torch.bfloat16 or torch.is_autocast_enabled(x.features.device.type):
            # bf16 training / inference: spconv's CPU kernels have no bf16 (KeyError: torch.bfloat16),
            # so the convolution runs in float32 (weights cast for the call) and returns the input dtype
            with torch.autocast(x.features.device.type, enabled=False):
                weights = {name: p.float() for name, p in self.conv.named_parameters()}
                with _one_thread() if not x.features.is_cuda else contextlib.nullcontext():
                    out = torch.func.functional_call(self.conv, weights, (x.replace_feature(x.features.float()),))
            if not x.features.is_cuda and out.features.grad_fn is not None:
                _run_backward_single_threaded(out.features.grad_fn)
            out = out.replace_feature(out.features.to(dtype))
        elif x.features.is_cuda:
            out = self.conv(x)
        else:
            with _one_thread():
                out = self.conv(x)
            if out.features.grad_fn is not None:
                _run_backward_single_threaded(out.features.grad_fn)
        if self.bias is not None:
            out = out.replace_feature(out.features + self.bias)
        return out
