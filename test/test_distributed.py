"""Two CPU processes (gloo): DDP wraps SyncMV4DObjective, so its backward all-reduces the gradients.

Each process computes the loss of a different batch (different noise draws); after backward every
trained parameter's gradient must be the same on both processes and equal the mean of the two
processes' local gradients (computed on the unwrapped model, which does not synchronise).
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from syncmv4d_core.data.synthetic import SynthConfig, generate_scene
from syncmv4d_core.models.syncmv4d import SyncMV4DModel
from syncmv4d_core.training.objectives import SyncMV4DObjective, compute_loss, stage_parameters

from test_pipeline import _batch

WORLD = 2


def _worker(rank: int, init_file: str, stage: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)  # the same initial weights on both processes
    model = SyncMV4DModel.from_config({"num_tracks": 32})
    with torch.no_grad():  # open the zero-init output projections so every trained module gets a gradient
        for p in model.parameters():
            p.add_(1e-2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    params = stage_parameters(model, stage)
    batch = _batch(generate_scene(3, SynthConfig(num_frames=5, height=32, width=32, num_points=128)))
    local = compute_loss(model, batch, stage, torch.Generator().manual_seed(100 + rank))["loss"]
    local_grads = torch.autograd.grad(local, params, allow_unused=True)
    ddp = torch.nn.parallel.DistributedDataParallel(SyncMV4DObjective(model), find_unused_parameters=True)
    ddp(batch, stage, torch.Generator().manual_seed(100 + rank))["loss"].backward()
    torch.save({"local": [None if g is None else g.clone() for g in local_grads],
                "synced": [None if p.grad is None else p.grad.clone() for p in params]},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("stage", ["joint", pytest.param("warmup_dpa", marks=pytest.mark.slow)])
def test_ddp_synchronises_the_gradients_of_the_objective(tmp_path, stage):
    mp.start_processes(_worker, args=(str(tmp_path / "init"), stage, str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    pairs = [(a, b, la, lb) for a, b, la, lb in zip(ranks[0]["synced"], ranks[1]["synced"], ranks[0]["local"],
                                                     ranks[1]["local"]) if la is not None and lb is not None]
    assert len(pairs) > 10
    differing = 0
    for a, b, la, lb in pairs:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)  # the same on both processes
        torch.testing.assert_close(a, (la + lb) / 2, rtol=1e-4, atol=1e-6)  # = mean of the local gradients
        differing += not torch.allclose(la, lb)
    assert differing > len(pairs) // 2  # the local gradients differ, so the equality above is the all-reduce
