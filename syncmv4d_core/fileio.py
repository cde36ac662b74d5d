"""The one atomic-write helper (files) and small file utilities shared by the library.

``atomic_write(path, write)`` calls ``write(tmp_path)`` on a temporary sibling of ``path`` (same
directory, so ``os.replace`` is atomic) and renames it onto ``path`` only when ``write`` returned;
on any error (including a full disk) the temporary file is removed and ``path`` is unchanged.
A process killed mid-write leaves at most a ``.<name>.tmp<pid>`` sibling that ``clean_temp_files``
removes (and that no reader ever opens).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

TMP_MARK = ".tmp"


def temp_path(path: str | Path) -> Path:
    """The temporary sibling ``atomic_write`` uses for ``path`` in this process."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}{path.suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` then atomically replace ``path`` by ``tmp``; returns ``path``.

    ``tmp`` keeps ``path``'s suffix (writers that pick a format by extension, e.g. matplotlib or
    imageio, still work).
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, data, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (serialised first: a TypeError writes nothing)."""
    text = json.dumps(data, indent=indent)
    return atomic_write_text(path, text)


def clean_temp_files(directory: str | Path) -> list[Path]:
    """Remove ``atomic_write`` leftovers (``.<name>.tmp<pid>...`` of processes no longer running) in ``directory``."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if not (p.name.startswith(".") and TMP_MARK in p.name and p.is_file()):
            continue
        pid = p.name.split(TMP_MARK, 1)[1].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
