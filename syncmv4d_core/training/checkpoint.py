"""Checkpoints: safetensors weights + a weights-only-loadable training state, written atomically.

Layout of ``<out_dir>/checkpoints``::

    latest                       name of the newest complete checkpoint (rewritten last)
    step_0000200/
        model.safetensors        model state_dict (never pickle)
        state.pt                 step / stage counters, optimizer state, config; torch.save of plain
                                 tensors, numbers, strings, lists and dicts (torch.load(weights_only=True))
        rng_rank<r>.pt           RNG states of process r: torch (CPU + CUDA), numpy, python ``random``,
                                 the loss generator; numpy / python states converted to tensors and lists
        config.json              the run's config, human-readable

A checkpoint is written into a hidden sibling directory that is renamed into place when complete,
and every file inside is itself written as a temp file + ``os.replace``; ``latest`` is updated
after the rename. A process killed at any moment therefore leaves the previous checkpoint (and
its ``latest``) intact; ``latest_checkpoint`` ignores half-written directories. A checkpoint that
is complete but does not load (a corrupt ``state.pt``, a truncated ``model.safetensors``: disk
errors, copies) is skipped by ``load_resume_point`` with a warning naming the file, which resumes
from the previous complete one.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write
from ..models.syncmv4d import CONFIG_FILE, LATEST, MODEL_FILE, load_weights, save_weights

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
STATE_KEYS = ("stage_index", "stage_step", "global_step")  # counters every state.pt holds
PARTIAL_PREFIX = ".partial_"


def checkpoint_name(global_step: int) -> str:
    """Directory name of the checkpoint after ``global_step`` optimizer steps."""
    return f"step_{global_step:07d}"


def rng_file(rank: int) -> str:
    """File name of process ``rank``'s RNG states."""
    return f"rng_rank{rank}.pt"


# ---------------------------------------------------------------------------------- files
def save_state(path: str | Path, state: dict) -> None:
    """``torch.save`` a dict of tensors / numbers / strings / lists / dicts atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict:
    """Inverse of ``save_state``; refuses anything but plain data (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / EOFError for broken files
        raise ValueError(f"cannot read training state {path}: {' '.join(str(exc).split())[:200]} "
                         "(truncated or corrupt)") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of training state, got {type(state).__name__}")
    return state


# ---------------------------------------------------------------------------------- RNG states
def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every RNG state of this process as weights-only-loadable data.

    Returns:
        dict with ``torch`` (uint8 tensor), ``cuda`` (list of uint8 tensors, one per device),
        ``numpy`` (MT19937 key as int64 tensor + pos / gauss fields), ``python`` (state as int64
        tensor + gauss_next) and ``generator`` (the loss generator's uint8 state, if given).
    """
    _, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "generator": None if generator is None else generator.get_state(),
    }


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore what ``rng_state`` captured (and the loss generator when both exist)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    if generator is not None:
        if state["generator"] is None:
            raise ValueError("the checkpoint holds no generator state to restore")
        generator.set_state(state["generator"])


# ---------------------------------------------------------------------------------- directories
def partial_dir(root: str | Path, name: str) -> Path:
    """The hidden directory checkpoint ``name`` is written into before ``commit_checkpoint``."""
    return Path(root) / f"{PARTIAL_PREFIX}{name}"


def begin_checkpoint(root: str | Path, name: str) -> Path:
    """Create a fresh ``partial_dir`` for checkpoint ``name`` (a stale one is removed) and return it."""
    partial = partial_dir(root, name)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def commit_checkpoint(partial: str | Path, keep: int) -> Path:
    """Rename a completed ``begin_checkpoint`` directory into place, point ``latest`` at it, prune.

    Args:
        partial: the directory returned by ``begin_checkpoint``, with all files written.
        keep: how many of the newest checkpoints to keep (>= 1).
    Returns:
        The final checkpoint directory.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    partial = Path(partial)
    root = partial.parent
    final = root / partial.name[len(PARTIAL_PREFIX):]
    if final.exists():  # the same step written again (e.g. a stage end that is also a ckpt_every step)
        shutil.rmtree(final)
    os.replace(partial, final)
    atomic_write(root / LATEST, lambda tmp: tmp.write_text(final.name + "\n"))
    complete = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_latest(root: str | Path) -> Path:
    """The checkpoint directory named by ``root/latest`` (FileNotFoundError if missing)."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        raise FileNotFoundError(f"{pointer} not found: no complete checkpoint under {root}")
    path = root / pointer.read_text().strip()
    if not (path / MODEL_FILE).is_file() or not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is incomplete or missing")
    return path


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None when there is none yet."""
    return resolve_latest(root) if (Path(root) / LATEST).is_file() else None


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Step directories under ``root`` with weights and state, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_")
             and (p / MODEL_FILE).is_file() and (p / STATE_FILE).is_file()]
    return sorted(found, reverse=True)


def load_checkpoint(ckpt: str | Path, rank: int = 0) -> tuple[dict, dict, dict]:
    """(state, weights, RNG states of process ``rank``) of one checkpoint directory.

    ValueError naming the file that does not load (corrupt state.pt, truncated safetensors, a
    state without its counters); FileNotFoundError when ``rng_rank<rank>.pt`` is missing (a
    resume with another number of processes than the saved run).
    """
    ckpt = Path(ckpt)
    state = load_state(ckpt / STATE_FILE)
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"{ckpt / STATE_FILE}: missing {missing}")
    weights = load_weights(ckpt / MODEL_FILE)
    rng_path = ckpt / rng_file(rank)
    if not rng_path.is_file():
        raise FileNotFoundError(f"{rng_path} not found: resume with the number of processes of the saved run")
    return state, weights, load_state(rng_path)


def load_resume_point(root: str | Path, rank: int = 0) -> tuple[Path, dict, dict, dict] | None:
    """The newest checkpoint under ``root`` that loads: (directory, state, weights, RNG states).

    Starts at the one ``latest`` names; if it does not load, takes the previous complete one with
    a warning that names the broken file (and so on). None when ``root`` holds no checkpoint;
    ValueError listing every failure when none loads.
    """
    root = Path(root)
    candidates = complete_checkpoints(root)
    if (root / LATEST).is_file():
        try:
            latest = resolve_latest(root)
        except FileNotFoundError as exc:
            logger.warning("%s; looking for the previous complete checkpoint", exc)
        else:  # ``latest`` first, then the older ones (never a newer, uncommitted one)
            candidates = [latest] + [c for c in candidates if c.name < latest.name]
    if not candidates:
        return None
    failures = []
    for ckpt in candidates:
        try:
            state, weights, rng = load_checkpoint(ckpt, rank)
        except ValueError as exc:
            failures.append(str(exc))
            logger.warning("checkpoint %s does not load (%s)%s", ckpt.name, exc,
                           "; trying the previous complete one" if ckpt != candidates[-1] else "")
            continue
        if failures:
            logger.warning("resuming from %s, the newest checkpoint that loads (%d newer one(s) skipped)",
                           ckpt.name, len(failures))
        return ckpt, state, weights, rng
    raise ValueError(f"no checkpoint under {root} loads: " + "; ".join(failures))


__all__ = [
    "save_weights", "load_weights", "save_state", "load_state", "rng_state", "set_rng_state",
    "partial_dir", "begin_checkpoint", "commit_checkpoint", "resolve_latest", "latest_checkpoint",
    "complete_checkpoints", "load_checkpoint", "load_resume_point",
    "checkpoint_name", "rng_file", "MODEL_FILE", "STATE_FILE", "CONFIG_FILE",
]
