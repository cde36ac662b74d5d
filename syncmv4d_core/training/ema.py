"""Exponential moving average of the trained weights (``TrainConfig.ema_decay``).

With batch 4 on a CPU the weights after any one step carry that step's gradient noise; the average
over the last few hundred steps is the usual remedy of diffusion training (diffusers' ``EMAModel``,
DiT, EDM). After every optimizer step

    shadow <- d_n shadow + (1 - d_n) weights,    d_n = min(decay, (1 + n) / (10 + n)),

n = optimizer steps before this one (the run's global step), so the average forgets the initial
weights quickly at the start and spans about 1 / (1 - decay) steps later on. It covers every
floating-point tensor the checkpoint stores (``model.trained_state_dict``: frozen ones stay equal to
the weights); integer buffers are taken from the model as they are.

Each checkpoint holds the average as a model directory of its own, ``<step>/ema/`` (``config.json`` +
``model.safetensors``), which ``SyncMV4DModel.from_pretrained`` and every ``--checkpoint`` option
read like any weights directory; resume restores it from there, so a resumed run repeats the
average exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

EMA_DIR = "ema"


def ema_decay_at(decay: float, num_updates: int) -> float:
    """The decay of update ``num_updates`` (0-based): ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


class WeightEMA:
    """The moving average of a model's trained weights.

    Args:
        model: the model whose ``trained_state_dict()`` is averaged (its names, its device).
        decay: in (0, 1); about 1 / (1 - decay) steps are averaged.
        state: a saved average (``state_dict()`` of an earlier run, e.g. from ``<ckpt>/ema/``) to
            continue; None: start at the model's current weights.
    """

    def __init__(self, model: nn.Module, decay: float, state: dict[str, Tensor] | None = None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        current = self._floating(model)
        if state is None:
            self.shadow = {k: v.detach().clone() for k, v in current.items()}
            return
        missing = sorted(set(current) - set(state))
        if missing:
            raise ValueError(f"the saved average lacks {len(missing)} of the model's weights (first: {missing[:3]})")
        bad = [k for k in current if state[k].shape != current[k].shape]
        if bad:
            raise ValueError(f"the saved average does not fit the model: {bad[0]} is {tuple(state[bad[0]].shape)}, "
                             f"the model's {tuple(current[bad[0]].shape)}")
        self.shadow = {k: state[k].to(current[k].device, current[k].dtype).clone() for k in current}

    @staticmethod
    def _floating(model: nn.Module) -> dict[str, Tensor]:
        return {k: v for k, v in model.trained_state_dict(model.state_dict()).items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        """Fold the model's weights in after optimizer step ``num_updates + 1`` (``num_updates`` before it)."""
        weight = 1.0 - ema_decay_at(self.decay, num_updates)
        current = self._floating(model)
        for key, shadow in self.shadow.items():
            shadow.lerp_(current[key].detach(), weight)

    @contextmanager
    @torch.no_grad()
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The averaged weights in ``model`` for the duration of the block (e.g. a validation pass)."""
        current = self._floating(model)  # state_dict tensors share the parameters' storage
        saved = {k: v.clone() for k, v in current.items()}
        for key, tensor in current.items():
            tensor.copy_(self.shadow[key])
        try:
            yield
        finally:
            for key, tensor in current.items():
                tensor.copy_(saved[key])

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """The averaged weights in ``trained_state_dict`` form (integer buffers from ``model``)."""
        out = dict(model.trained_state_dict(model.state_dict()))
        out.update(self.shadow)
        return {k: v.detach().cpu() for k, v in out.items()}


def ema_dir(checkpoint: str | Path) -> Path:
    """Where a checkpoint keeps its moving average."""
    return Path(checkpoint) / EMA_DIR


__all__ = ["WeightEMA", "ema_decay_at", "ema_dir", "EMA_DIR"]
