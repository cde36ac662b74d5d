"""Training configuration: dataclasses with commented defaults, YAML loading, typed ``key=value`` overrides.

A run is a list of stages executed in order (paper Sec. 4.2): a 5K-step warm-up on 10 % of the
data that trains the Diffusion Points Aligner and the single-view video model separately, then
30K steps of joint training, at 256x384 first and 480x704 later (progressive resolution).

Overrides (``syncmv4d train --set key=value``) address fields with dots: ``batch_size=2``,
``stages.joint.steps=500`` (a stage by name or by index), ``model.mjd.num_layers=4`` (a key that
already exists in the ``model`` dict). Values are parsed as YAML scalars / lists (never
evaluated) and must have the type of the field they replace; unknown keys raise ValueError.
Booleans are YAML 1.2's ``true`` / ``false`` only: ``mixed_precision=no`` is the string "no"
(PyYAML's YAML 1.1 default would read yes / no / on / off as booleans).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.dataset import SPLITS
from ..limits import check_num_frames

MIXED_PRECISION = ("no", "bf16")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans: only true / false (any case), not yes / no / on / off."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _load_yaml(text: str):
    """YAML text -> Python data (safe: plain data only; YAML 1.2 booleans)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


@dataclass
class StageConfig:
    """One training stage: its own AdamW over ``stage_parameters(model, name)``, warm-up + cosine LR."""

    name: str  # one of objectives.STAGES: vae, warmup_dpa, warmup_mjd, joint
    steps: int = 100  # optimizer steps (paper: 5K warm-up, 30K joint)
    lr: float = 1e-4  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decay floor, as a fraction of lr
    warmup_steps: int = 10  # linear warm-up from lr / (warmup_steps + 1)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    data_fraction: float = 1.0  # share of the training scenes (paper warm-up: 0.1)
    # Progressive resolution: [[start_step, height, width], ...], first start 0, increasing
    # (paper: [[0, 256, 384], [20000, 480, 704]]). Empty: the scenes' own size.
    resolution: list[list[int]] = field(default_factory=list)
    num_views: int = 3  # views per sample (one camera per cluster; 1 = single-view warm-up)

    def size_at(self, step: int) -> tuple[int, int] | None:
        """(height, width) used at stage step ``step`` (0-based), or None for the scenes' size."""
        size = None
        for start, height, width in self.resolution:
            if start <= step:
                size = (height, width)
        return size

    def next_switch(self, step: int) -> int:
        """The first stage step after ``step`` where the resolution changes (``steps`` if none)."""
        return min([start for start, _, _ in self.resolution if start > step] + [self.steps])

    def validate(self, stages: tuple[str, ...]) -> None:
        """ValueError naming the stage and the bad field."""
        where = f"stage {self.name!r}"
        if self.name not in stages:
            raise ValueError(f"unknown stage {self.name!r}; choose from {stages}")
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"{where}: steps={self.steps} must be >= 1 and warmup_steps={self.warmup_steps} >= 0")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.weight_decay < 0:
            raise ValueError(f"{where}: need lr > 0 (got {self.lr}), min_lr_ratio in [0, 1] (got {self.min_lr_ratio}) "
                             f"and weight_decay >= 0 (got {self.weight_decay})")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"{where}: betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 < self.data_fraction <= 1:
            raise ValueError(f"{where}: data_fraction must be in (0, 1], got {self.data_fraction}")
        if self.num_views < 1:
            raise ValueError(f"{where}: num_views must be >= 1, got {self.num_views}")
        starts = []
        for entry in self.resolution:
            if len(entry) != 3 or not all(isinstance(v, int) for v in entry) or entry[1] < 1 or entry[2] < 1:
                raise ValueError(f"{where}: resolution entries are [start_step, height, width] integers, got {entry}")
            starts.append(entry[0])
        if starts and (starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= self.steps):
            raise ValueError(f"{where}: resolution start steps must begin at 0, increase and stay below "
                             f"steps={self.steps}, got {starts}")

    def check_resolution(self, multiple: int) -> None:
        """ValueError if a configured height or width is not a multiple of ``multiple`` pixels."""
        for _, height, width in self.resolution:
            if height % multiple or width % multiple:
                raise ValueError(f"stage {self.name!r}: resolution {height}x{width} must be a multiple of {multiple} "
                                 f"pixels (latent codec compression x transformer patch size)")


@dataclass
class TrainConfig:
    """A training run (see ``config/train/*.yaml`` and docs/training.md)."""

    # ---- data
    data_root: str = "data/synth"  # scene directories (``syncmv4d synth`` / ``syncmv4d taco`` output)
    train_split: str = "train"  # scenes used for training (held-out "test" scenes never are)
    val_root: str | None = None  # scenes for the validation loss; None: no validation
    val_split: str | None = None  # split filter under val_root (None: every scene there)
    val_samples: int = 8  # validation scenes (the first ones, fixed views and noise)
    num_frames: int | None = None  # temporal crop, 4n+1 (paper: 49); None: the scenes' length
    cache_size: int = 64  # decoded scenes kept in memory
    preload: bool = False  # decode every training scene before the first step
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    # ---- run
    out_dir: str = "runs/tiny"  # checkpoints/, log.csv, val_log.csv, loss.png, tensorboard/
    seed: int = 0  # model init, data order, views, noise
    # trained weights that start a fresh run (fine-tuning): a weights directory (save_pretrained), a
    # checkpoint or a checkpoints root; their model config must be ``model``'s. Unused on resume.
    init_weights: str | None = None
    model: dict = field(default_factory=dict)  # passed to SyncMV4DModel.from_config
    stages: list[StageConfig] = field(default_factory=list)  # run in order
    # End the run after this stage (its checkpoint is written); --resume then starts the next one.
    # Under DeepSpeed, whose engine is built once per process, launch once per stage this way.
    stop_after_stage: str | None = None
    # ---- optimisation
    batch_size: int = 1  # samples per process and micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    grad_clip: float = 1.0  # max global grad norm after unscaling; 0 disables
    mixed_precision: str = "no"  # "no" or "bf16" (paper: bf16)
    gradient_checkpointing: bool = False  # recompute activations in backward (paper: on)
    # Moving average of the weights (training/ema.py), saved beside each checkpoint in ``<step>/ema/``;
    # about 1 / (1 - ema_decay) steps are averaged. None: off. Not under DeepSpeed.
    ema_decay: float | None = None
    # ---- logging and checkpoints
    log_every: int = 1  # optimizer steps between log.csv / TensorBoard rows
    ckpt_every: int = 100  # optimizer steps between checkpoints (also written at each stage end)
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk
    eval_every: int = 100  # optimizer steps between validation losses (0: only at stage ends)

    def validate(self) -> None:
        """ValueError for any bad field (stage names are checked against ``objectives.STAGES``)."""
        from .objectives import STAGES

        if self.num_frames is not None:
            check_num_frames(self.num_frames)
        if self.train_split not in SPLITS or (self.val_split is not None and self.val_split not in SPLITS):
            raise ValueError(f"train_split / val_split must be in {SPLITS}, got "
                             f"{self.train_split!r} / {self.val_split!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        positive = {k: getattr(self, k) for k in ("batch_size", "grad_accum", "log_every", "ckpt_every",
                                                   "keep_checkpoints", "val_samples")}
        bad = {k: v for k, v in positive.items() if v < 1}
        if bad:
            raise ValueError(f"these fields must be >= 1: {bad}")
        if self.grad_clip < 0 or self.eval_every < 0 or self.num_workers < 0 or self.cache_size < 0:
            raise ValueError(f"grad_clip, eval_every, num_workers and cache_size must be >= 0, got "
                             f"{self.grad_clip}, {self.eval_every}, {self.num_workers}, {self.cache_size}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) (or null: off), got {self.ema_decay}")
        if not self.stages:
            raise ValueError("the config has no stages")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for stage in self.stages:
            stage.validate(STAGES)
        if self.stop_after_stage is not None and self.stop_after_stage not in names:
            raise ValueError(f"stop_after_stage={self.stop_after_stage!r} is not one of the stages {names}")

    def to_dict(self) -> dict:
        """Plain JSON/YAML-ready dict (inverse of ``from_dict``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Build from a dict; unknown keys raise ValueError naming them."""
        data = dict(data)
        _check_keys(cls, data, "config")
        stages = []
        for i, stage in enumerate(data.pop("stages", [])):
            if not isinstance(stage, dict) or "name" not in stage:
                raise ValueError(f"stages[{i}] must be a mapping with a 'name', got {stage!r}")
            _check_keys(StageConfig, stage, f"stages[{i}] ({stage['name']})")
            stages.append(StageConfig(**stage))
        config = cls(**{k: _typed(cls, k, v, k) for k, v in data.items()}, stages=stages)
        for i, stage in enumerate(config.stages):
            for name in _field_names(StageConfig):
                setattr(stage, name, _typed(StageConfig, name, getattr(stage, name), f"stages[{i}].{name}"))
        return config


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _check_keys(cls, data: dict, where: str) -> None:
    unknown = sorted(set(data) - set(_field_names(cls)))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {_field_names(cls)}")


def _allowed_types(cls, name: str) -> tuple[type, ...]:
    """Runtime types a field accepts (``int`` also accepted where ``float`` is)."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    allowed = tuple(typing.get_origin(a) or a for a in args)
    return allowed + (int,) if float in allowed else allowed


def _typed(cls, name: str, value, where: str):
    """``value`` checked against field ``name``'s type; ints and numeric strings become floats for float
    fields (PyYAML reads ``1e-4`` as a string: YAML 1.1 floats need a dot)."""
    allowed = _allowed_types(cls, name)
    if float in allowed and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
        names = sorted({t.__name__ for t in allowed})
        raise ValueError(f"{where}: expected {' or '.join(names)}, got {value!r} ({type(value).__name__})")
    return value


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate.

    Args:
        path: YAML file with the fields of ``TrainConfig`` (stages as a list of mappings).
        overrides: ``"a.b=value"`` strings (module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found")
    try:
        data = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    config = TrainConfig.from_dict(data)
    for item in overrides:
        apply_override(config, item)
    config.validate()
    return config


def apply_override(config: TrainConfig, item: str) -> None:
    """Apply one ``a.b=value`` override in place, keeping the replaced value's type."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r} must look like key=value")
    try:
        value = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"override {item!r}: invalid YAML value ({' '.join(str(exc).split())})") from None
    parts = key.split(".")
    target = config
    for depth, part in enumerate(parts[:-1]):
        target = _child(target, part, ".".join(parts[:depth + 1]))
    last = parts[-1]
    if dataclasses.is_dataclass(target):
        if last not in _field_names(type(target)):
            raise ValueError(f"override {key!r}: unknown key {last!r}; known: {_field_names(type(target))}")
        if last == "stages":
            raise ValueError(f"override {key!r}: set stage fields one by one, e.g. stages.joint.steps=100")
        setattr(target, last, _typed(type(target), last, value, f"override {key!r}"))
    else:  # a key of the free-form model dict: must exist, keeps its type
        if last not in target:
            raise ValueError(f"override {key!r}: unknown key {last!r}; known: {sorted(target)}")
        old = target[last]
        if old is not None:
            if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not type(old):
                raise ValueError(f"override {key!r}: expected {type(old).__name__}, got {value!r}")
        target[last] = value


def _child(target, part: str, where: str):
    """The object named ``part`` inside ``target`` (dataclass field, stage by name / index, dict key)."""
    if isinstance(target, list):  # the stages list
        for i, stage in enumerate(target):
            if stage.name == part or part == str(i):
                return stage
        raise ValueError(f"override {where!r}: no stage {part!r}; stages: {[s.name for s in target]}")
    if dataclasses.is_dataclass(target):
        if part not in _field_names(type(target)):
            raise ValueError(f"override {where!r}: unknown key {part!r}; known: {_field_names(type(target))}")
        child = getattr(target, part)
    elif isinstance(target, dict) and part in target:
        child = target[part]
    else:
        raise ValueError(f"override {where!r}: unknown key {part!r}")
    if not (dataclasses.is_dataclass(child) or isinstance(child, (dict, list))):
        raise ValueError(f"override {where!r}: {part!r} holds a value, not a group of fields")
    return child


__all__ = ["TrainConfig", "StageConfig", "load_config", "apply_override", "MIXED_PRECISION"]
