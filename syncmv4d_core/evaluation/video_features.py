"""Video metrics that need pretrained feature networks, loaded only from local directories.

* Subject consistency (VBench): features f_i of a DINO ViT per frame;
  mean over i >= 1 of (max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))) / 2, averaged over views.
* CLIP-V (SynCamMaster): CLIP image-embedding cosine between every pair of views of the same
  frame, x100, averaged.
* Dynamic degree (VBench) needs RAFT optical flow, which ships with torchvision; torchvision is
  not part of this environment, so it is reported as unavailable.

Without a weights directory a metric is reported as ``None`` with the reason in ``unavailable``;
it is never approximated by another network.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

_MEAN = {"dino": (0.485, 0.456, 0.406), "clip": (0.48145466, 0.4578275, 0.40821073)}
_STD = {"dino": (0.229, 0.224, 0.225), "clip": (0.26862954, 0.26130258, 0.27577711)}


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what} weights not found: {path} must be a transformers model directory with config.json")
    return path


def _prepare(frames: np.ndarray, size: int, kind: str) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) normalised float."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(_MEAN[kind]).view(1, 3, 1, 1)
    std = torch.tensor(_STD[kind]).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def subject_consistency(videos: np.ndarray, dino_dir: str | Path) -> float:
    """VBench subject consistency of (V, F, H, W, 3) uint8 videos with a local DINO ViT."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(_require_dir(dino_dir, "DINO"), local_files_only=True).eval()
    size = model.config.image_size
    scores = []
    for video in videos:
        feats = F.normalize(model(pixel_values=_prepare(video, size, "dino")).last_hidden_state[:, 0], dim=-1)
        prev = (feats[:-1] * feats[1:]).sum(-1).clamp(min=0)
        first = (feats[:1] * feats[1:]).sum(-1).clamp(min=0)
        scores.append(((prev + first) / 2).mean().item())
    return float(np.mean(scores))


@torch.no_grad()
def clip_views(videos: np.ndarray, clip_dir: str | Path) -> float:
    """Mean CLIP image-embedding cosine (x100) across views of the same frame, (V, F, H, W, 3) uint8."""
    from transformers import CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(_require_dir(clip_dir, "CLIP"), local_files_only=True).eval()
    size = model.config.image_size
    V, Fn = videos.shape[:2]
    emb = model(pixel_values=_prepare(videos.reshape(V * Fn, *videos.shape[2:]), size, "clip")).image_embeds
    emb = F.normalize(emb, dim=-1).view(V, Fn, -1)  # (V, F, D)
    sims = [(emb[i] * emb[j]).sum(-1).mean().item() for i, j in itertools.combinations(range(V), 2)]
    return 100.0 * float(np.mean(sims))


def video_feature_metrics(videos: np.ndarray, dino_dir: str | Path | None = None, clip_dir: str | Path | None = None) -> tuple[dict, dict]:
    """All feature-network metrics that the given local weights allow.

    Returns:
        (metrics, unavailable): metric name -> value (None when unavailable), and name -> reason.
    """
    metrics: dict = {"SubjectConsistency": None, "DynamicDegree": None, "CLIP-V": None}
    unavailable = {"DynamicDegree": "needs RAFT optical flow (torchvision), which this environment does not provide"}
    if dino_dir is not None:
        metrics["SubjectConsistency"] = subject_consistency(videos, dino_dir)
    else:
        unavailable["SubjectConsistency"] = "no DINO weights directory given (--dino)"
    if clip_dir is not None and videos.shape[0] >= 2:
        metrics["CLIP-V"] = clip_views(videos, clip_dir)
    else:
        unavailable["CLIP-V"] = "no CLIP weights directory given (--clip)" if clip_dir is None else "needs two or more views"
    return metrics, unavailable
