"""The SyncMV4D training loop (paper Sec. 4.2, Algorithm 1): stages, progressive resolution, resume.

Reads top to bottom: learning-rate schedule, the data stream, logs and plots, checkpoints, and
``train``: model -> resume point -> per-process randomness -> data -> logs -> for each stage an
AdamW over ``stage_parameters`` and the loop with gradient accumulation, clipping after unscale,
validation and checkpoints.

The same code runs on CPU, one GPU or many (``accelerate launch``, e.g. DeepSpeed ZeRO-3 with
``config/accelerate/zero3.yaml``). A resumed run repeats an uninterrupted one exactly: the data
order is a pure function of (seed, stage, step), each sample's views and crop of (seed, epoch,
index), and every random draw of the objective comes from a generator whose state is saved with
the checkpoint together with the torch / numpy / python RNG states.

Outputs in ``out_dir``: ``checkpoints/`` (training/checkpoint.py; with ``ema_decay`` each holds the
moving average of the weights in ``ema/``, training/ema.py), ``log.csv`` (step, stage,
stage_step, every loss term, lr, seconds), ``val_log.csv``, ``loss.png`` and ``tensorboard/``.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import random
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedType
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.dataset import SceneDataset, collate_scenes
from ..fileio import atomic_write, atomic_write_json
from ..models.syncmv4d import check_same_networks, load_weights, saved_model_config
from .checkpoint import (
    CONFIG_FILE, MODEL_FILE, STATE_FILE, begin_checkpoint, checkpoint_name, commit_checkpoint, complete_checkpoints,
    load_resume_point, partial_dir, rng_file, rng_state, save_state, save_weights, set_rng_state,
)
from .config import StageConfig, TrainConfig
from .ema import EMA_DIR, WeightEMA, ema_dir

logger = logging.getLogger(__name__)

LOG_FILE, VAL_LOG_FILE, PLOT_FILE = "log.csv", "val_log.csv", "loss.png"
SMOOTH_LOGS = 10  # loss.png: training lines averaged over this many logged steps
# Validation columns of the moving average of the weights (``ema_<term>``).
EMA_PREFIX = "ema_"
# Columns of log.csv that are not loss terms.
META_COLUMNS = ("step", "stage", "stage_step", "lr", "seconds")


# ---------------------------------------------------------------------------------- learning rate
def get_lr(step: int, stage: StageConfig) -> float:
    """Learning rate at stage step ``step`` (0-based): linear warm-up, then cosine decay to ``min_lr_ratio * lr``.

    Warm-up: ``lr * (step + 1) / (warmup_steps + 1)`` for ``step < warmup_steps``; the decay reaches
    its floor at the stage's last step.
    """
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / (stage.warmup_steps + 1)
    min_lr = stage.lr * stage.min_lr_ratio
    decay_steps = max(1, stage.steps - 1 - stage.warmup_steps)
    progress = min(1.0, (step - stage.warmup_steps) / decay_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (stage.lr - min_lr)


# ---------------------------------------------------------------------------------- data stream
def process_seed(seed: int, rank: int) -> int:
    """Seed of process ``rank``'s own randomness (dropout, noise), distinct per process."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def stage_batches(dataset: SceneDataset, stage: StageConfig, stage_index: int, config: TrainConfig, start: int,
                  rank: int = 0, world: int = 1) -> Iterator[tuple[int, list[dict]]]:
    """The micro-batches of this process for stage steps ``start, ..., stage.steps - 1``.

    Every optimizer step consumes ``batch_size * grad_accum * world`` scenes of a per-epoch
    permutation drawn from (seed, stage_index, epoch) (the incomplete tail of an epoch is dropped);
    process ``rank`` takes every ``world``-th of them, split into ``grad_accum`` micro-batches.
    The dataset's epoch and size are set here (progressive resolution), so the stream depends
    on nothing but its arguments: resuming at ``start`` repeats an uninterrupted run.

    Yields:
        (step, micro_batches): ``grad_accum`` collated batches of ``batch_size`` samples.
    """
    per_step = config.batch_size * config.grad_accum * world
    steps_per_epoch = len(dataset) // per_step
    if steps_per_epoch == 0:
        raise ValueError(f"stage {stage.name!r}: {len(dataset)} training scenes are fewer than one optimizer step "
                         f"needs (batch_size x grad_accum x processes = {per_step})")
    step = start
    while step < stage.steps:
        epoch = step // steps_per_epoch
        end = min(stage.next_switch(step), (epoch + 1) * steps_per_epoch)
        order = np.random.default_rng([config.seed, stage_index, epoch]).permutation(len(dataset))
        dataset.set_epoch(epoch)
        dataset.set_size(stage.size_at(step))
        micro_batches = []
        for s in range(step, end):
            first = (s % steps_per_epoch) * per_step
            mine = order[first:first + per_step][rank::world].tolist()   # (batch_size * grad_accum,)
            micro_batches += [mine[i:i + config.batch_size] for i in range(0, len(mine), config.batch_size)]
        # An own generator: creating a DataLoader iterator must not draw from the global torch RNG.
        loader = iter(DataLoader(dataset, batch_sampler=micro_batches, collate_fn=collate_scenes,
                                 num_workers=config.num_workers, generator=torch.Generator().manual_seed(epoch)))
        for s in range(step, end):
            yield s, [next(loader) for _ in range(config.grad_accum)]
        step = end


# ---------------------------------------------------------------------------------- logs and plots
class CsvLog:
    """A CSV log kept in memory and on disk; a row with new columns rewrites the file with a wider header.

    Args:
        path: the CSV file.
        keep_until: keep existing rows with ``step <= keep_until`` (resume); None starts empty.
    """

    def __init__(self, path: Path, keep_until: int | None = None):
        self.path = Path(path)
        self.rows = [r for r in read_log(self.path) if r["step"] <= keep_until] if keep_until is not None else []
        self.columns: list[str] = []
        for row in self.rows:
            self.columns += [k for k in row if k not in self.columns]
        self._rewrite()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)

    def _rewrite(self) -> None:
        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, self.columns)
                writer.writeheader()
                writer.writerows(self.rows)

        atomic_write(self.path, write)


def read_log(path: str | Path) -> list[dict]:
    """Rows of a ``log.csv`` / ``val_log.csv``: numbers as float (step counters as int), empty cells dropped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if value in ("", None):
                    continue
                if key in ("step", "stage_step"):
                    row[key] = int(value)
                elif key == "stage":
                    row[key] = value
                else:
                    row[key] = float(value)
            rows.append(row)
    return rows


def plot_losses(out_dir: str | Path) -> Path:
    """``loss.png``: one panel per stage, one line per loss term (training solid, validation dashed,
    validation of the moving average of the weights dotted).

    Training lines are running means over ``SMOOTH_LOGS`` logged steps (single batches are noisy).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    train_rows, val_rows = read_log(out_dir / LOG_FILE), read_log(out_dir / VAL_LOG_FILE)
    stages = list(dict.fromkeys(r["stage"] for r in train_rows + val_rows)) or ["(no steps yet)"]
    fig, axes = plt.subplots(1, len(stages), figsize=(6.5 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        stage_rows = [[r for r in rows if r["stage"] == stage] for rows in (train_rows, val_rows)]
        terms = list(dict.fromkeys(k for rows in stage_rows for r in rows for k in r
                                   if k not in META_COLUMNS and not k.startswith(EMA_PREFIX)))
        for rows, style, prefix in zip(stage_rows, ("-", "--"), ("", "val ")):
            for i, term in enumerate(terms):
                # validation of the moving average (ema_<term>): dotted, in its term's colour
                for name, line in ((term, style), (EMA_PREFIX + term, ":")):
                    points = np.array([(r["step"], r[name]) for r in rows if name in r], dtype=float).reshape(-1, 2)
                    if style == "-" and len(points) > SMOOTH_LOGS:
                        kernel = np.full(SMOOTH_LOGS, 1.0 / SMOOTH_LOGS)
                        points = np.stack([points[SMOOTH_LOGS - 1:, 0], np.convolve(points[:, 1], kernel, "valid")], 1)
                    if len(points):
                        ax.plot(points[:, 0], points[:, 1], line, color=f"C{i % 10}",
                                marker="o" if style == "--" else None, markersize=3,
                                label=f"{prefix}{name}")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_yscale("log" if all(r.get("loss", 1) > 0 for r in train_rows) else "linear")
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    most_lines = max(len(ax.lines) for ax in axes[0])
    fig.set_size_inches(6.5 * len(stages), max(3.5, 0.14 * most_lines + 0.5))  # room for every legend entry
    fig.tight_layout()
    path = atomic_write(out_dir / PLOT_FILE, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- validation
@torch.no_grad()
def estimate_loss(model: torch.nn.Module, dataset: SceneDataset, stage: StageConfig, size: tuple[int, int] | None,
                  config: TrainConfig, accelerator: Accelerator) -> dict[str, float]:
    """Mean loss terms over the first ``val_samples`` validation scenes (eval mode, fixed views and noise).

    Every process evaluates the same samples (under ZeRO-3 all must run the forward). The global
    RNG states are restored afterwards, so validation never changes the training trajectory.
    """
    from . import objectives

    dataset.set_epoch(0)
    dataset.set_size(size)
    indices = list(range(min(config.val_samples, len(dataset))))
    generator = torch.Generator().manual_seed(config.seed)
    devices = [accelerator.device.index or 0] if accelerator.device.type == "cuda" else []
    sums: dict[str, float] = {}
    model.eval()
    with torch.random.fork_rng(devices=devices):
        for first in range(0, len(indices), config.batch_size):
            batch = collate_scenes([dataset[i] for i in indices[first:first + config.batch_size]])
            with autocast(accelerator, config):
                losses = objectives.compute_loss(model, batch, stage.name, generator)
            n = len(batch["text"])
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
    model.train()
    return {key: value / len(indices) for key, value in sums.items()}


# ---------------------------------------------------------------------------------- precision, DeepSpeed
def autocast(accelerator: Accelerator, config: TrainConfig):
    """The forward's autocast: accelerate's, and under DeepSpeed with bf16 (whose engine casts the
    weights to bf16 but, unlike accelerate's native AMP, leaves the inputs float32) torch's bf16
    autocast, so float32 inputs meet bf16 weights only inside autocast-aware ops."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED and config.mixed_precision == "bf16":
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
    return accelerator.autocast()


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The run's Accelerator. DeepSpeed launched on a machine without CUDA (the CPU test) gets the
    gloo backend named explicitly: otherwise accelerate 1.15 sets up DeepSpeed's process group but
    records one process (rank 0 everywhere)."""
    handlers = []
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and not torch.cuda.is_available():
        from accelerate.utils import InitProcessGroupKwargs

        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                       kwargs_handlers=handlers)


def _numel(param: torch.nn.Parameter) -> int:
    """Elements of a parameter, also when ZeRO-3 has partitioned it (``ds_numel``)."""
    return int(getattr(param, "ds_numel", param.numel()))


def _configure_deepspeed(accelerator: Accelerator, objective: torch.nn.Module, config: TrainConfig,
                         stage: StageConfig) -> None:
    """What ``accelerator.prepare`` needs under DeepSpeed without a DataLoader (the stream of
    ``stage_batches`` is this loop's own): the micro-batch size, and the config's grad_accum / grad_clip
    (so zero3.yaml need not repeat them).

    ZeRO-3 re-gathers a module's parameters for backward through hooks on the tensors its forward
    returns. MJD returns an ``MJDOutput`` and spconv a ``SparseConvTensor``, so: MJD's own (small)
    top-level parameters (token tables, output modulation) are registered as external parameters of
    the objective, and every DPA parameter as one of DPA (DPA is small; it also reads its view
    embedding table without calling that module); both are then gathered through backward."""
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = config.batch_size
    ds["gradient_accumulation_steps"] = config.grad_accum
    ds["train_batch_size"] = config.batch_size * config.grad_accum * accelerator.num_processes
    ds["gradient_clipping"] = config.grad_clip
    if ds.get("zero_optimization", {}).get("stage") == 3:
        import deepspeed

        model = objective.model
        for param in model.mjd.parameters(recurse=False):
            if param.requires_grad:  # an external parameter must get a gradient (frozen ones are read as usual)
                deepspeed.zero.register_external_parameter(objective, param)
        for param in model.dpa.parameters():
            deepspeed.zero.register_external_parameter(model.dpa, param)


# ---------------------------------------------------------------------------------- checkpoints
DEEPSPEED_DIR = "zero"  # under DeepSpeed: the engine's per-process partitions (optimizer moments, weights)


def _load_deepspeed_partitions(engine, ckpt: Path) -> None:
    """Restore this process's ZeRO partition of the optimizer state saved with checkpoint ``ckpt``
    (the same process count is required: each process reads its own partition)."""
    directory = ckpt / DEEPSPEED_DIR
    if not directory.is_dir():
        raise ValueError(f"checkpoint {ckpt} has no {DEEPSPEED_DIR}/ (saved without DeepSpeed): its optimizer state "
                         f"cannot be resumed under DeepSpeed mid-stage; resume it the way it was trained")
    path, _ = engine.load_checkpoint(str(directory), tag=DEEPSPEED_DIR, load_optimizer_states=True,
                                     load_lr_scheduler_states=False)
    if path is None:
        raise ValueError(f"DeepSpeed could not load the partitions in {directory}")


def save_checkpoint(accelerator: Accelerator, objective: torch.nn.Module, optimizer, config: TrainConfig,
                    counters: dict, generator: torch.Generator, ema: WeightEMA | None = None) -> Path:
    """Write checkpoint ``step_<global_step>`` (every process writes its RNG states) and plot the losses.

    ``objective``: the prepared ``SyncMV4DObjective``; its model's weights are saved, and ``ema``'s
    average as the model directory ``ema/``.
    """
    out_dir = Path(config.out_dir)
    root = out_dir / "checkpoints"
    name = checkpoint_name(counters["global_step"])
    if accelerator.is_main_process:
        begin_checkpoint(root, name)
    accelerator.wait_for_everyone()
    partial = partial_dir(root, name)
    save_state(partial / rng_file(accelerator.process_index), rng_state(generator))
    under_deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if under_deepspeed:  # every process writes its own ZeRO partition of the optimizer state (and of the weights)
        objective.save_checkpoint(str(partial / DEEPSPEED_DIR), tag=DEEPSPEED_DIR)
    weights = accelerator.get_state_dict(objective)  # gathers ZeRO-3 shards; keys "model.<name>"
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(objective).model
        # only what is trained: frozen umT5 / Wan VAE are referenced by path (model.referenced_modules)
        save_weights(partial / MODEL_FILE, model.trained_state_dict(weights, prefix="model."))
        save_state(partial / STATE_FILE, {**counters, "optimizer": None if under_deepspeed else optimizer.state_dict(),
                                          "config": config.to_dict(), "model_config": model.config})
        model_dir_config = {"train": config.to_dict(), "model": model.config, "referenced": model.referenced_modules()}
        atomic_write_json(partial / CONFIG_FILE, model_dir_config)
        if ema is not None:
            ema_dir(partial).mkdir()
            save_weights(ema_dir(partial) / MODEL_FILE, ema.state_dict(model))
            atomic_write_json(ema_dir(partial) / CONFIG_FILE, model_dir_config)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        commit_checkpoint(partial, config.keep_checkpoints)
        plot_losses(out_dir)
    accelerator.wait_for_everyone()
    return root / name


# ---------------------------------------------------------------------------------- training
def train(config: TrainConfig, resume: bool = False) -> Path:
    """Run every stage of ``config`` in order; returns the final checkpoint directory.

    Args:
        config: the run (validated here).
        resume: continue from ``<out_dir>/checkpoints/latest`` exactly where it stopped (a fresh
            start when there is no checkpoint yet). Without it, an out_dir that already holds
            checkpoints is refused rather than overwritten.
    """
    from . import objectives  # resolved at call time: a test may stand in a small objective

    config.validate()
    out_dir = Path(config.out_dir)
    ckpt_root = out_dir / "checkpoints"
    accelerator = make_accelerator(config)
    rank, world, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process

    # 1. Model: the same initial weights on every process.
    model_config = copy.deepcopy(config.model)
    if config.gradient_checkpointing:
        model_config["mjd"] = dict(model_config.get("mjd", {}), gradient_checkpointing=True)
        model_config["dpa"] = dict(model_config.get("dpa", {}), gradient_checkpointing=True)
    torch.manual_seed(config.seed)
    model = objectives.SyncMV4DModel.from_config(model_config)
    multiple = model.codec.spatial_compression * model.mjd.config.patch_size[-1]
    for stage in config.stages:
        stage.check_resolution(multiple)

    # 2. Resume point.
    existing = complete_checkpoints(ckpt_root)
    if existing and not resume:
        raise ValueError(f"{out_dir} already holds checkpoints ({existing[0].name}); pass resume (--resume) to "
                         f"continue that run or choose another out_dir")
    point = load_resume_point(ckpt_root, rank) if resume else None  # skips a corrupt newest one, warning
    if resume and point is None:
        logger.warning("no checkpoint under %s: starting from scratch", ckpt_root)
    ckpt, state, weights, saved_rng = point if point is not None else (None, {}, {}, {})
    counters = {"stage_index": 0, "stage_step": 0, "global_step": 0}
    if ckpt is not None:
        if state.get("model_config") != model.config:
            logger.warning("the checkpoint's model config differs from the current one; loading its weights anyway")
        model.load_trained_state_dict(weights, ckpt / MODEL_FILE)  # frozen Wan parts come from wan_dir
        counters = {k: int(state[k]) for k in counters}
        logger.info("resuming from %s (stage %d, step %d)", ckpt, counters["stage_index"], counters["stage_step"])
    elif config.init_weights is not None:  # fine-tuning: a fresh run from trained weights
        initial = load_weights(config.init_weights)
        if Path(config.init_weights).is_dir():  # a bare .safetensors file has no config to compare
            check_same_networks(saved_model_config(config.init_weights), model.config,
                                f"init_weights {config.init_weights}")
        model.load_trained_state_dict(initial, f"init_weights {config.init_weights}")
        logger.info("starting from the weights in %s", config.init_weights)

    # 2b. Moving average of the weights: continued from the checkpoint, else from the starting weights.
    ema = None
    if config.ema_decay is not None:
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise ValueError("ema_decay is not supported under DeepSpeed: ZeRO-3 partitions the weights it averages")
        saved_average = None
        if ckpt is not None:
            if not (ema_dir(ckpt) / MODEL_FILE).is_file():
                raise ValueError(f"checkpoint {ckpt} has no {EMA_DIR}/{MODEL_FILE} (saved without ema_decay): resume "
                                 f"it without ema_decay, or start a new run from it with init_weights")
            saved_average = load_weights(ema_dir(ckpt) / MODEL_FILE)
        ema = WeightEMA(model, config.ema_decay, saved_average)

    # 3. Per-process randomness (dropout: global torch RNG; the objective's draws: generator).
    seed = process_seed(config.seed, rank)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if ckpt is not None:
        set_rng_state(saved_rng, generator)

    # 4. Data: one scene cache shared by the stages' datasets.
    cache: OrderedDict = OrderedDict()
    val_set = None
    if config.val_root is not None:
        val_set = SceneDataset(config.val_root, split=config.val_split, num_frames=config.num_frames, seed=config.seed,
                               cache_size=config.val_samples)

    # 5. Logs (on resume, rows after the checkpoint are dropped: the resumed run writes them again).
    keep = counters["global_step"] if ckpt is not None else None
    log = val_log = writer = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        log, val_log = CsvLog(out_dir / LOG_FILE, keep), CsvLog(out_dir / VAL_LOG_FILE, keep)
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=None if keep is None else keep + 1)

    # 6. Stages.
    global_step, last_saved = counters["global_step"], ckpt
    for stage_index, stage in enumerate(config.stages):
        first = counters["stage_step"] if stage_index == counters["stage_index"] else 0
        if stage_index < counters["stage_index"] or first >= stage.steps:
            continue
        params = objectives.stage_parameters(model, stage.name, stage.num_views)
        if not params:
            logger.info("stage %s: the model has no parameters to train here (e.g. the fixed patchify codec): skipped",
                        stage.name)
            if stage.name == config.stop_after_stage:
                break
            continue
        optimizer = torch.optim.AdamW(params, lr=stage.lr, betas=tuple(stage.betas), weight_decay=stage.weight_decay)
        mid_stage = ckpt is not None and stage_index == counters["stage_index"] and first > 0
        if mid_stage and accelerator.distributed_type != DistributedType.DEEPSPEED:
            if state["optimizer"] is None:
                raise ValueError(f"checkpoint {ckpt} was saved under DeepSpeed (its optimizer state is in "
                                 f"{DEEPSPEED_DIR}/, one partition per process): resume it under DeepSpeed")
            optimizer.load_state_dict(state["optimizer"])
        if stage.name == "vae" and model.config["codec"]["kind"] == "wan":
            model.config["codec"]["finetuned"] = True  # checkpoints now store the VAE (not referenced)
        num_trained = sum(_numel(p) for p in params)  # before prepare: ZeRO-3 partitions the parameters
        objective = objectives.SyncMV4DObjective(model)
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            _configure_deepspeed(accelerator, objective, config, stage)
        # DDP / DeepSpeed wrap the objective: its forward returns the loss, so gradients are synchronised
        prepared, optimizer = accelerator.prepare(objective, optimizer)
        if mid_stage and accelerator.distributed_type == DistributedType.DEEPSPEED:
            _load_deepspeed_partitions(prepared, ckpt)
        dataset = SceneDataset(config.data_root, split=config.train_split, num_frames=config.num_frames,
                               fraction=stage.data_fraction, seed=config.seed, num_views=stage.num_views,
                               cache_size=config.cache_size, preload=config.preload, cache=cache)
        logger.info("stage %s: %d steps on %d scenes, %d trainable parameters", stage.name, stage.steps, len(dataset),
                    num_trained)
        model.train()
        with tqdm(total=stage.steps, initial=first, desc=stage.name, unit="step", disable=not is_main) as progress:
            for step, micro_batches in stage_batches(dataset, stage, stage_index, config, first, rank, world):
                # 6a. Learning rate, then grad_accum micro-batches -> one optimizer step.
                lr = get_lr(step, stage)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                started = time.perf_counter()
                totals: dict[str, torch.Tensor] = {}
                for batch in micro_batches:
                    with accelerator.accumulate(prepared):
                        with autocast(accelerator, config):
                            losses = prepared(batch, stage.name, generator)
                        if not torch.isfinite(losses["loss"]):
                            raise FloatingPointError(f"stage {stage.name!r} step {step}: non-finite loss "
                                                     f"{ {k: float(v) for k, v in losses.items()} }")
                        accelerator.backward(losses["loss"])
                        if accelerator.sync_gradients and config.grad_clip > 0:
                            accelerator.clip_grad_norm_(params, config.grad_clip)  # unscales first
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    for key, value in losses.items():
                        totals[key] = totals.get(key, 0.0) + value.detach().float() / config.grad_accum
                if ema is not None:
                    ema.update(model, global_step)
                global_step += 1
                done = step + 1 == stage.steps
                progress.update(1)
                progress.set_postfix(loss=f"{float(totals['loss']):.4g}", lr=f"{lr:.2e}")

                # 6b. Logs.
                if global_step % config.log_every == 0 or done:
                    values = {k: float(accelerator.reduce(v.to(accelerator.device), "mean")) for k, v in totals.items()}
                    if is_main:
                        log.append({"step": global_step, "stage": stage.name, "stage_step": step + 1, **values,
                                    "lr": lr, "seconds": round(time.perf_counter() - started, 4)})
                        for key, value in values.items():
                            writer.add_scalar(f"{stage.name}/{key}", value, global_step)
                        writer.add_scalar(f"{stage.name}/lr", lr, global_step)

                # 6c. Validation.
                if val_set is not None and (done or config.eval_every and global_step % config.eval_every == 0):
                    values = estimate_loss(model, val_set, stage, stage.size_at(step), config, accelerator)
                    if ema is not None:  # the same samples and noise on the averaged weights
                        with ema.applied(model):
                            averaged = estimate_loss(model, val_set, stage, stage.size_at(step), config, accelerator)
                        values.update({f"{EMA_PREFIX}{key}": value for key, value in averaged.items()})
                    if is_main:
                        val_log.append({"step": global_step, "stage": stage.name, "stage_step": step + 1, **values})
                        for key, value in values.items():
                            writer.add_scalar(f"{stage.name}/val_{key}", value, global_step)

                # 6d. Checkpoint (always at the stage's end, so the next stage starts from it).
                if done or global_step % config.ckpt_every == 0:
                    counters = {"stage_index": stage_index, "stage_step": step + 1, "global_step": global_step}
                    last_saved = save_checkpoint(accelerator, prepared, optimizer, config, counters, generator, ema)
        # The next stage prepares its own optimizer; a DeepSpeed engine left behind keeps its ZeRO-3 hooks
        # on the shared modules, beside the next engine's (they fetch the same partitioned parameters).
        prepared, optimizer = accelerator.free_memory(prepared, optimizer)
        if stage.name == config.stop_after_stage:
            logger.info("stopping after stage %s as configured; continue with --resume", stage.name)
            break

    if is_main:
        writer.close()
        plot_losses(out_dir)
    accelerator.end_training()
    if last_saved is None:
        raise ValueError("no stage trained anything: every stage was skipped (no trainable parameters)")
    return last_saved


__all__ = ["train", "get_lr", "stage_batches", "estimate_loss", "read_log", "plot_losses", "CsvLog",
           "save_checkpoint", "process_seed"]
