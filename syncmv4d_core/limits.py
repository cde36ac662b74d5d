"""Every input limit in one place, with the small validators that enforce them.

Each limit is a named constant; each validator raises ``ValueError`` with a one-line message that
names the offending value (and ``what`` it is: an option, a config field, a file) and what is
expected. Callers check inputs with these *before* allocating anything sized by them.
``docs/limits.md`` lists every limit and what happens past it.
"""

from __future__ import annotations

import math
import operator
import re

# Frames per clip: F = 4n + 1 (the codec's temporal packing). Wan2.2 TI2V-5B generates at most
# 121 frames (5 s at 24 fps); the paper trains on 49.
MAX_FRAMES = 121
TEMPORAL_COMPRESSION = 4  # the Wan VAE's (and the patchify codec's default) temporal compression

# Denoising steps per generation (schedulers are defined on 1000 training timesteps).
MAX_STEPS = 1000

# Task text, characters (same as the ROS node's max_task_length default; umT5 reads at most 512
# tokens and the tiny byte-level encoder 63 bytes, longer text is truncated with a warning).
MAX_TEXT_CHARS = 1000

# Image side in pixels (Wan2.2 TI2V-5B's largest output is 1280 x 704).
MAX_IMAGE_SIDE = 1280

# Cameras (views) per scene / rig.
MAX_CAMERAS = 64

# Scenes per `syncmv4d synth` run.
MAX_SCENES = 1_000_000

# Tracked points K per scene.
MAX_POINTS = 65536

# Classifier-free guidance scale.
MAX_GUIDANCE = 100.0

# Frame rate, frames per second.
MAX_FPS = 1000.0

# Parameters of one network (MJD or DPA) built from a model config: 4x Wan2.2 TI2V-5B's transformer.
MAX_MODEL_PARAMETERS = 20_000_000_000

# Names that become file or directory names (camera names, scene names): letters, digits, '_',
# '-', '.', starting with a letter or digit (so never '.', '..', a hidden file or an option).
MAX_NAME_CHARS = 64
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,%d}" % (MAX_NAME_CHARS - 1))


def _as_int(value, expected: str) -> int:
    """``value`` as an int (Python or numpy integer, not bool); ValueError ``expected, got value``."""
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{expected}, got {value!r}") from None


def check_int(value, what: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high]; ValueError naming ``what`` and the value otherwise."""
    value = _as_int(value, f"{what} must be an integer in [{low}, {high}]")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value}")
    return value


def check_float(value, what: str, low: float, high: float) -> float:
    """``value`` as a finite float in [low, high]; ValueError naming ``what`` and the value otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number in [{low:g}, {high:g}], got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [{low:g}, {high:g}], got {value!r}") from None
    if not math.isfinite(out) or not low <= out <= high:
        raise ValueError(f"{what} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    return out


def check_num_frames(num_frames, temporal_compression: int = TEMPORAL_COMPRESSION, max_frames: int = MAX_FRAMES,
                     min_frames: int = 1, what: str = "num_frames") -> int:
    """``num_frames`` if it is ``temporal_compression * n + 1`` within [min_frames, max_frames].

    The one home of the 4n+1 check (codec temporal packing). ValueError otherwise, e.g.
    ``num_frames must be 4n+1 in [1, 121] (e.g. 9, 13, 49), got 4001``.
    """
    tc = int(temporal_compression)
    examples = ", ".join(str(tc * n + 1) for n in (2, 3, 12) if min_frames <= tc * n + 1 <= max_frames)
    expected = f"{what} must be {tc}n+1 in [{min_frames}, {max_frames}]" + (f" (e.g. {examples})" if examples else "")
    num_frames = _as_int(num_frames, expected)
    if num_frames < min_frames or num_frames > max_frames or (num_frames - 1) % tc:
        raise ValueError(f"{expected}, got {num_frames}")
    return num_frames


def check_steps(num_steps, what: str = "num_steps") -> int:
    """Denoising steps in [1, MAX_STEPS]."""
    return check_int(num_steps, what, 1, MAX_STEPS)


def check_guidance(scale, what: str = "guidance_scale") -> float:
    """A finite classifier-free guidance scale in [0, MAX_GUIDANCE]."""
    return check_float(scale, what, 0.0, MAX_GUIDANCE)


def check_fps(fps, what: str = "fps") -> float:
    """A finite frame rate in (0, MAX_FPS]."""
    out = check_float(fps, what, 0.0, MAX_FPS)
    if out <= 0:
        raise ValueError(f"{what} must be a finite number in (0, {MAX_FPS:g}], got {fps!r}")
    return out


def check_image_size(height, width, what: str = "image size") -> tuple[int, int]:
    """(height, width), each in [1, MAX_IMAGE_SIDE] pixels."""
    h = check_int(height, f"{what}: height", 1, MAX_IMAGE_SIDE)
    w = check_int(width, f"{what}: width", 1, MAX_IMAGE_SIDE)
    return h, w


def check_points(num_points, what: str = "num_points") -> int:
    """Tracked points K in [1, MAX_POINTS]."""
    return check_int(num_points, what, 1, MAX_POINTS)


def check_text(text, what: str = "text", max_chars: int = MAX_TEXT_CHARS) -> str:
    """A task text of at most ``max_chars`` characters (a str)."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise ValueError(f"{what} has {len(text)} characters, more than the limit of {max_chars}")
    return text


def check_name(name, what: str = "name") -> str:
    """A name that is safe as a file or directory name (see ``NAME_PATTERN``).

    ValueError e.g. ``camera name '../../escape' is not allowed: use 1-64 letters, digits, '_', '-',
    '.', starting with a letter or digit``.
    """
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(f"{what} {name!r} is not allowed: use 1-{MAX_NAME_CHARS} letters, digits, '_', '-', '.', "
                         "starting with a letter or digit")
    return name
