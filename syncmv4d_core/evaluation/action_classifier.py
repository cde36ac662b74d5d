"""A small action classifier on 4D tracks: does the generated motion do what the text says?

Like the learned evaluators text-to-motion work scores R-precision with, it is trained on
ground-truth synthetic tracks only (never on generated ones) and then applied to generated
motion. Input: world tracks (F, K, 3) in metres (z up, table at z = 0) and optional per-track
labels (K,) (0 unknown, 1 hand, 2 tool, 3 target); output: one action of the synthetic vocabulary
``data.synthetic.ACTIONS`` (the task text's first word).

Network (PointNet-style, invariant to the order and number of tracks): every track becomes one
feature vector (``track_features``: its displacement from frame 0 at each of 8 later frames, its
frame-0 position relative to the set's frame-0 centroid, its frame-0 height and a one-hot label),
a shared MLP maps each to 128 values, max- and mean-pooling over tracks gives one 256-vector and a
small MLP gives the 11 action logits. Tracks of any length are resampled to 9 frames first.
Training augments with a rotation about the vertical axis (+-45 deg), a random subset of
``K in [32, min(128, K_max)]`` tracks, per-point jitter (0-6 mm) and label dropout (half the samples see
every label as unknown, as generated tracks may come without labels).

Shipped weights: ``syncmv4d_core/weights/action_classifier/`` (``load_classifier()``), trained
with ``syncmv4d action-classifier``; accuracy, chance level and confusion in docs/metrics.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.synthetic import ACTIONS, SPLITS, describe
from ..scene import Scene

logger = logging.getLogger(__name__)

ACTION_NAMES: tuple[str, ...] = tuple(sorted(ACTIONS))
NUM_FRAMES = 9               # tracks are resampled to this many frames
DISP_SCALE = 0.1             # metres: displacements and positions are fed in decimetres
NUM_LABELS = 4               # unknown, hand, tool, target
FEATURE_DIM = 3 * (NUM_FRAMES - 1) + 3 + 1 + NUM_LABELS
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "action_classifier"


def action_of_text(text: str) -> str:
    """The vocabulary action a task text names (its first word), e.g. "pour the cup into the bowl" -> "pour"."""
    word = text.strip().split(" ", 1)[0].lower() if text.strip() else ""
    if word not in ACTIONS:
        raise ValueError(f"text {text!r} does not start with an action of the vocabulary {ACTION_NAMES}")
    return word


def resample_frames(tracks: np.ndarray, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """(F, K, 3) tracks linearly resampled in time to (num_frames, K, 3) (first and last frame kept)."""
    F = tracks.shape[0]
    if F == num_frames:
        return tracks
    if F < 2:
        raise ValueError(f"tracks need at least 2 frames, got {F}")
    pos = np.linspace(0.0, F - 1, num_frames)
    lo = np.floor(pos).astype(int).clip(0, F - 2)
    w = (pos - lo)[:, None, None]
    return (1 - w) * tracks[lo] + w * tracks[lo + 1]


def track_features(tracks: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Per-track input features of the classifier.

    Args:
        tracks: (F, K, 3) world tracks, metres (finite).
        labels: optional (K,) int labels 0-3; None = all unknown.
    Returns:
        (K, FEATURE_DIM) float32: displacement from frame 0 at frames 1..8 (dm), frame-0 position
        minus the frame-0 centroid (dm), frame-0 height z (dm), one-hot label.
    """
    tracks = np.asarray(tracks, np.float64)
    if tracks.ndim != 3 or tracks.shape[-1] != 3 or tracks.shape[1] == 0:
        raise ValueError(f"tracks must be (F, K >= 1, 3), got {tracks.shape}")
    t = resample_frames(tracks)
    K = t.shape[1]
    p0 = t[0]
    disp = (t[1:] - p0).transpose(1, 0, 2).reshape(K, -1) / DISP_SCALE
    rel = (p0 - p0.mean(axis=0)) / DISP_SCALE
    onehot = np.zeros((K, NUM_LABELS))
    lab = np.zeros(K, int) if labels is None else np.clip(np.asarray(labels, int), 0, NUM_LABELS - 1)
    if lab.shape != (K,):
        raise ValueError(f"labels must be ({K},), got {lab.shape}")
    onehot[np.arange(K), lab] = 1.0
    return np.concatenate([disp, rel, p0[:, 2:3] / DISP_SCALE, onehot], axis=1).astype(np.float32)


@dataclass
class ClassifierConfig:
    """Network size. Attributes: width (per-track MLP), hidden (head), classes (vocabulary)."""

    width: int = 128
    hidden: int = 128
    classes: tuple[str, ...] = ACTION_NAMES


class ActionClassifier(nn.Module):
    """PointNet-style classifier: (B, K, FEATURE_DIM) track features -> (B, classes) logits."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        w, h = self.config.width, self.config.hidden
        self.point = nn.Sequential(nn.Linear(FEATURE_DIM, 64), nn.ReLU(), nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w))
        self.head = nn.Sequential(nn.Linear(2 * w, h), nn.ReLU(), nn.Dropout(0.1), nn.Linear(h, len(self.config.classes)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, K, FEATURE_DIM); mask: optional (B, K) bool of real tracks (padding False)."""
        f = self.point(x)                                                        # (B, K, w)
        if mask is None:
            pooled = torch.cat([f.max(dim=1).values, f.mean(dim=1)], dim=-1)
        else:
            m = mask[..., None]
            big = torch.finfo(f.dtype).max
            pooled = torch.cat([f.masked_fill(~m, -big).max(dim=1).values,
                                (f * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)], dim=-1)
        return self.head(pooled)

    @torch.no_grad()
    def predict_proba(self, tracks: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(classes,) probabilities for one (F, K, 3) track set; tracks with non-finite values are dropped."""
        tracks = np.asarray(tracks)
        finite = np.isfinite(tracks).all(axis=(0, 2))
        if not finite.any():
            raise ValueError("no finite track to classify")
        lab = None if labels is None else np.asarray(labels)[finite]
        x = torch.from_numpy(track_features(tracks[:, finite], lab))[None]
        self.eval()
        return torch.softmax(self(x), dim=-1)[0].numpy()

    def predict(self, tracks: np.ndarray, labels: np.ndarray | None = None) -> str:
        """The action name for one (F, K, 3) track set."""
        return self.config.classes[int(np.argmax(self.predict_proba(tracks, labels)))]

    def save(self, directory: str | Path, info: dict | None = None) -> Path:
        """Write ``config.json`` (+ ``info``) and ``model.pt`` (float32 state dict) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().float().clone() for k, v in self.state_dict().items()}, directory / "model.pt")
        config = {**asdict(self.config), "classes": list(self.config.classes), "feature_dim": FEATURE_DIM,
                  "num_frames": NUM_FRAMES}
        (directory / "config.json").write_text(json.dumps({"config": config, "info": info or {}}, indent=1))
        return directory


def load_classifier(directory: str | Path | None = None) -> ActionClassifier:
    """The classifier saved in ``directory`` (default: the shipped weights)."""
    directory = Path(directory) if directory is not None else DEFAULT_WEIGHTS
    if not (directory / "model.pt").is_file():
        raise FileNotFoundError(f"no action classifier in {directory} (model.pt); train one with `syncmv4d action-classifier`")
    cfg = json.loads((directory / "config.json").read_text())["config"]
    if cfg.get("feature_dim") != FEATURE_DIM or cfg.get("num_frames") != NUM_FRAMES:
        raise ValueError(f"{directory}: classifier features {cfg.get('feature_dim')}/{cfg.get('num_frames')} frames do not "
                         f"match this code's {FEATURE_DIM}/{NUM_FRAMES}")
    model = ActionClassifier(ClassifierConfig(cfg["width"], cfg["hidden"], tuple(cfg["classes"])))
    model.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


# ---------------------------------------------------------------------------------- data
@dataclass
class TrackSet:
    """Ground-truth examples: tracks (N, F, K, 3) metres, labels (N, K), actions (N,) int, names."""

    tracks: np.ndarray
    labels: np.ndarray
    actions: np.ndarray
    names: list[str]
    meta: list[dict]


def load_track_set(root: str | Path, split: str | None = None) -> TrackSet:
    """Tracks, labels and action of every scene under ``root`` (scene.json + tracks.npz; videos are not read).

    Args:
        root: directory of scene directories written by ``syncmv4d synth``.
        split: keep only scenes whose meta split is this ("train" / "test"), None for all.
    """
    root = Path(root)
    dirs = sorted(d for d in root.iterdir() if not d.name.startswith(".") and (d / "scene.json").is_file()) \
        if root.is_dir() else []
    tracks, labels, actions, names, metas = [], [], [], [], []
    for d in dirs:
        info = json.loads((d / "scene.json").read_text())
        meta = info.get("meta", {})
        if split is not None and meta.get("split") != split:
            continue
        with np.load(d / "tracks.npz") as z:
            tracks.append(z["tracks_world"].astype(np.float32))
            labels.append(z["labels"].astype(np.int64))
        actions.append(ACTION_NAMES.index(meta.get("action") or action_of_text(info["text"])))
        names.append(d.name)
        metas.append(meta)
    if not tracks:
        raise ValueError(f"no scene{'' if split is None else ' of split ' + split} under {root}")
    shapes = {t.shape for t in tracks}
    if len(shapes) != 1:
        raise ValueError(f"scenes under {root} have different track shapes {sorted(shapes)}")
    return TrackSet(np.stack(tracks), np.stack(labels), np.asarray(actions), names, metas)


class _Batcher:
    """Augmented training batches of ``track_features``, vectorised over scenes (module docstring)."""

    def __init__(self, data: TrackSet):
        t = np.stack([resample_frames(x.astype(np.float64)) for x in data.tracks])        # (N, 9, K, 3)
        self.tracks = t.transpose(0, 2, 1, 3)                                            # (N, K, 9, 3)
        self.labels = np.clip(data.labels, 0, NUM_LABELS - 1)
        self.actions = data.actions

    def __call__(self, idx: np.ndarray, k: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        B, K = len(idx), self.tracks.shape[1]
        pick = np.argsort(rng.random((B, K)), axis=1)[:, :min(k, K)]                     # (B, k)
        tr = np.take_along_axis(self.tracks[idx], pick[..., None, None], axis=1)          # (B, k, 9, 3)
        lab = np.take_along_axis(self.labels[idx], pick, axis=1)                          # (B, k)
        a = rng.uniform(-np.pi / 4, np.pi / 4, B)
        R = np.zeros((B, 3, 3))
        R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a), 1.0
        tr = np.einsum("bij,bktj->bkti", R, tr)            # about the world z axis: heights and shapes unchanged
        tr = tr + rng.normal(size=tr.shape) * rng.uniform(0.0, 0.006, B)[:, None, None, None]
        lab = np.where(rng.random(B)[:, None] < 0.5, 0, lab)
        p0 = tr[:, :, 0]                                                                  # (B, k, 3)
        disp = (tr[:, :, 1:] - p0[:, :, None]).reshape(B, tr.shape[1], -1) / DISP_SCALE
        rel = (p0 - p0.mean(axis=1, keepdims=True)) / DISP_SCALE
        onehot = np.eye(NUM_LABELS)[lab]
        x = np.concatenate([disp, rel, p0[..., 2:3] / DISP_SCALE, onehot], axis=-1).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(self.actions[idx])


def accuracy_report(true: np.ndarray, pred: np.ndarray, classes: tuple[str, ...] = ACTION_NAMES) -> dict:
    """Accuracy, chance levels and confusion of integer class predictions.

    Returns:
        {"n", "accuracy" (x100), "chance_uniform" (100 / classes), "chance_majority" (x100, share of
         the most frequent true class), "confusion": {true name: {predicted name: count}},
         "per_class": {name: accuracy x100 or None}}.
    """
    true, pred = np.asarray(true), np.asarray(pred)
    confusion = {classes[t]: {} for t in sorted(set(true.tolist()))}
    for t, p in zip(true, pred):
        row = confusion[classes[t]]
        row[classes[p]] = row.get(classes[p], 0) + 1
    per_class = {name: 100.0 * row.get(name, 0) / sum(row.values()) for name, row in confusion.items()}
    counts = np.bincount(true, minlength=len(classes))
    return {"n": int(true.size), "accuracy": 100.0 * float((true == pred).mean()),
            "chance_uniform": 100.0 / len(classes), "chance_majority": 100.0 * float(counts.max() / true.size),
            "confusion": confusion, "per_class": per_class}


@torch.no_grad()
def classify_set(model: ActionClassifier, data: TrackSet, num_tracks: int | None = None, with_labels: bool = False,
                 seed: int = 0) -> np.ndarray:
    """Predicted class index per scene of ``data`` (optionally on a random subset of ``num_tracks``)."""
    rng = np.random.default_rng(seed)
    model.eval()
    out = []
    for i in range(len(data.actions)):
        tr, lab = data.tracks[i], data.labels[i]
        if num_tracks is not None and num_tracks < tr.shape[1]:
            pick = rng.choice(tr.shape[1], size=num_tracks, replace=False)
            tr, lab = tr[:, pick], lab[pick]
        x = torch.from_numpy(track_features(tr, lab if with_labels else None))[None]
        out.append(int(model(x).argmax(dim=-1)))
    return np.asarray(out)


def train_classifier(train_root: str | Path, out_dir: str | Path | None = None, val_root: str | Path | None = None,
                     split: str | None = None, steps: int = 1500, batch_size: int = 48, lr: float = 2e-3,
                     seed: int = 0, threads: int = 1) -> tuple[ActionClassifier, dict]:
    """Train the classifier on the ground-truth scenes under ``train_root`` and save it to ``out_dir``.

    Args:
        train_root: scenes written by ``syncmv4d synth`` (their tracks and meta action are used).
        out_dir: where ``save`` writes the weights (None: not saved).
        val_root: scenes to report accuracy on after training (all of them, no augmentation).
        split: train only on scenes of this meta split (None: every triplet of the vocabulary).
        steps, batch_size, lr, seed: optimisation (AdamW, cosine decay).
        threads: torch CPU threads.
    Returns:
        The trained model (eval mode) and an info dict (data sizes, settings, validation report).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = load_track_set(train_root, split)
    model = ActionClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    k_max = data.tracks.shape[2]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    running = []
    batches = _Batcher(data)
    for step in range(steps):
        idx = rng.integers(len(data.actions), size=batch_size)
        x, y = batches(idx, int(rng.integers(min(32, k_max), min(128, k_max) + 1)), rng)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(float(loss.detach()))
        if (step + 1) % 250 == 0:
            logger.info("step %d/%d loss %.4f", step + 1, steps, float(np.mean(running[-250:])))
    model.eval()
    info = {"train_root": str(train_root), "train_scenes": int(len(data.actions)), "split": split, "steps": steps,
            "batch_size": batch_size, "lr": lr, "seed": seed, "final_loss": float(np.mean(running[-250:])),
            "train_actions": sorted({ACTION_NAMES[a] for a in data.actions.tolist()}),
            "parameters": int(sum(p.numel() for p in model.parameters()))}
    if val_root is not None:
        val = load_track_set(val_root)
        info["val"] = {"root": str(val_root), **accuracy_report(val.actions, classify_set(model, val))}
        logger.info("validation accuracy %.1f %% on %d scenes", info["val"]["accuracy"], info["val"]["n"])
    if out_dir is not None:
        model.save(out_dir, info)
    return model, info


# ---------------------------------------------------------------------------------- generated motion
def _tracks_of(item) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(item, Scene):
        labels = item.labels if np.any(item.labels > 0) else None
        return item.tracks_world, labels
    if isinstance(item, (str, Path)):
        return _tracks_of(Scene.load(item, load_depth=False))
    return np.asarray(item), None


def action_accuracy(items: list, texts: list[str], model: ActionClassifier | None = None) -> dict:
    """Accuracy of the classifier on (generated) motion against the actions the texts name.

    Args:
        items: scenes (``Scene`` or scene directories) or (F, K, 3) track arrays; a scene's labels are
            used when any is known.
        texts: the intended task text of each item (the text it was generated from).
        model: the classifier (default: the shipped weights).
    Returns:
        ``accuracy_report`` plus "predicted": the predicted action per item.
    """
    if len(items) != len(texts) or not items:
        raise ValueError(f"need one text per item and at least one item, got {len(items)} items and {len(texts)} texts")
    model = model or load_classifier()
    true = np.asarray([model.config.classes.index(action_of_text(t)) for t in texts])
    predicted = [model.predict(*_tracks_of(item)) for item in items]
    pred = np.asarray([model.config.classes.index(p) for p in predicted])
    return {**accuracy_report(true, pred, model.config.classes), "predicted": predicted}


def swapped_text(meta: dict, rng: np.random.Generator) -> str:
    """A task text of another action of the vocabulary that takes the scene's tool (and its target
    when that action takes it, else another of the action's targets), for "same scene, text swapped".
    A tool only one action uses (knife, hammer, brush, ruler) gets another action with its first tool."""
    tool, target = meta["tool"], meta.get("target")
    options = [a for a, (_, tools, _) in ACTIONS.items() if a != meta["action"] and tool in tools]
    if not options:
        options = [a for a in ACTIONS if a != meta["action"]]
    action = options[rng.integers(len(options))]
    _, tools, targets = ACTIONS[action]
    tool = tool if tool in tools else tools[0]
    if not targets:
        return describe(action, tool, None)
    if target in targets and target != tool:
        return describe(action, tool, target)
    choices = [t for t in targets if t != tool] or list(targets)
    return describe(action, tool, choices[rng.integers(len(choices))])


def text_swap_scores(own: list, own_texts: list[str], swapped: list, swapped_texts: list[str],
                     model: ActionClassifier | None = None) -> dict:
    """"Same scene, text swapped": the same references generated with their own and with another text.

    Args:
        own, swapped: generated scenes / track arrays, item i of both from the same references.
        own_texts, swapped_texts: the texts they were generated from.
    Returns:
        {"own": ``action_accuracy`` of the own-text results, "swapped": that of the swapped-text
         results against the swapped text, "swapped_as_own": % of swapped-text results classified as
         the scene's own action (high = the text is ignored), "changed": % of scenes whose predicted
         action changes with the text}.
    """
    model = model or load_classifier()
    a = action_accuracy(own, own_texts, model)
    b = action_accuracy(swapped, swapped_texts, model)
    own_actions = [action_of_text(t) for t in own_texts]
    return {"own": a, "swapped": b,
            "swapped_as_own": 100.0 * float(np.mean([p == o for p, o in zip(b["predicted"], own_actions)])),
            "changed": 100.0 * float(np.mean([p != q for p, q in zip(a["predicted"], b["predicted"])]))}


# ---------------------------------------------------------------------------------- command line
def evaluate_on(model: ActionClassifier, roots: list[str | Path], num_tracks: int | None = 128) -> dict:
    """Accuracy reports of ``model`` on ground-truth scene directories, without and with labels.

    Returns:
        {root: {"no_labels": ``accuracy_report``, "labels": ``accuracy_report``, "split_counts"}}, on a
        random subset of ``num_tracks`` tracks per scene (the generated scenes' K) where K is larger.
    """
    out = {}
    for root in roots:
        data = load_track_set(root)
        out[str(root)] = {
            "no_labels": accuracy_report(data.actions, classify_set(model, data, num_tracks), model.config.classes),
            "labels": accuracy_report(data.actions, classify_set(model, data, num_tracks, with_labels=True),
                                      model.config.classes),
            "splits": {s: sum(m.get("split") == s for m in data.meta) for s in SPLITS},
        }
    return out


def run_cli(train: str | None, out: str | None, val: str | None, tests: list[str], split: str | None,
            steps: int, seed: int) -> dict:
    """``syncmv4d action-classifier``: train (if ``train``), evaluate on ``tests``, save the reports with the weights."""
    if train:
        if not out:
            raise ValueError("--train needs --out (the weights directory)")
        model, info = train_classifier(train, None, val, split, steps=steps, seed=seed)
    else:
        model = load_classifier(out)
        info = json.loads((Path(out or DEFAULT_WEIGHTS) / "config.json").read_text()).get("info", {})
    if tests:
        info.setdefault("tests", {}).update(evaluate_on(model, tests))
    if train or tests:
        model.save(out or DEFAULT_WEIGHTS, info)
    return info


def format_report(info: dict) -> str:
    """Plain-text summary of ``run_cli``'s info: accuracy, chance and confusion per evaluated set."""
    lines = []
    if "val" in info:
        lines.append(f"val {info['val']['root']}: {info['val']['accuracy']:.1f} % of {info['val']['n']}")
    for root, rep in info.get("tests", {}).items():
        for key in ("no_labels", "labels"):
            r = rep[key]
            lines.append(f"{root} [{key}]: accuracy {r['accuracy']:.1f} % of {r['n']} (chance {r['chance_uniform']:.1f} % "
                         f"uniform, {r['chance_majority']:.1f} % majority)")
        lines.append("  confusion (true: predicted counts): ")
        for name, row in rep["no_labels"]["confusion"].items():
            lines.append(f"    {name:8s} " + ", ".join(f"{k} {v}" for k, v in sorted(row.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- text control end to end
def run_text_control(checkpoint: str | Path | None, scene_root: str | Path, out_dir: str | Path, num_scenes: int = 12,
                     num_steps: int = 20, guidance_scale: float = 3.0, seed: int = 0,
                     classifier: ActionClassifier | None = None) -> dict:
    """Generate every scene with its own text and with a swapped text, and score both with the classifier.

    For the first ``num_scenes`` scenes of ``scene_root`` (one view per cluster, chosen with
    ``seed`` as ``ablation.run_ablation`` does): the frame-0 images and cameras are generated once
    with the scene's text (``out_dir/own/<scene>``) and once with ``swapped_text`` of its meta
    (``out_dir/swapped/<scene>``); the views are saved under ``out_dir/gt``. Generated scenes already
    there are kept (an interrupted run continues).

    Returns:
        ``text_swap_scores`` plus "texts": {scene: (own text, swapped text)}; also written to
        ``out_dir/text_control.json``.
    """
    from ..cameras import one_view_per_cluster
    from ..data.dataset import find_scenes
    from ..pipeline import SyncMV4DPipeline
    from .evaluate import json_ready

    out_dir = Path(out_dir)
    scenes = find_scenes(scene_root)[:num_scenes]
    if not scenes:
        raise ValueError(f"no scenes under {scene_root}")
    pipe = SyncMV4DPipeline.from_checkpoint(checkpoint)
    rng, text_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    own, swapped, texts = [], [], {}
    for directory in scenes:
        gt = Scene.load(directory, load_depth=False)
        gt = gt.select_views(one_view_per_cluster(gt.cameras, rng))
        name = directory.name
        gt.save(out_dir / "gt" / name)
        other = swapped_text(gt.meta, text_rng)
        texts[name] = (gt.text, other)
        for row, text in (("own", gt.text), ("swapped", other)):
            path = out_dir / row / name
            if not (path / "scene.json").is_file():
                result = pipe([v[0] for v in gt.videos], gt.cameras, text, num_frames=gt.num_frames, num_steps=num_steps,
                              guidance_scale=guidance_scale, seed=seed)
                result.save(path)
            (own if row == "own" else swapped).append(path)
    scores = text_swap_scores(own, [t for t, _ in texts.values()], swapped, [t for _, t in texts.values()], classifier)
    scores["texts"] = texts
    (out_dir / "text_control.json").write_text(json.dumps(json_ready(scores), indent=1))
    return scores
