"""The one atomic-write helper (files) and small file utilities shared by the library.

``atomic_write(path, write)`` calls ``write(tmp_path)`` on a temporary sibling of ``path`` (same
directory, so ``os.replace`` is atomic) and renames it onto ``path`` only when ``write`` returned;
on any error (including a full disk) the temporary file is removed and ``path`` is unchanged.
A process killed mid-write leaves at most a ``.<name>.tmp<pid>`` sibling that ``clean_temp_files``
removes (and that no reader ever opens).

Folders: ``new_temp_dir`` + ``replace_dir`` swap a complete folder into place, ``repair_dir``
undoes what a kill in between left, ``output_dir`` wraps a command's whole output folder (locked,
refused if non-empty without ``overwrite``, nothing left behind by a failing run).

``load_pickle`` / ``SafeUnpickler`` read data pickles (MANO models, TACO annotations) with an
allow-list: numpy arrays and plain containers plus the stand-ins a caller names; any other class or
function is refused with an error naming the file and the class, so no code runs from a data file.
"""

from __future__ import annotations

import _compat_pickle
import fcntl
import importlib
import json
import logging
import os
import pickle
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

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
        if pid.isdigit() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (this process counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------- safe pickles
# (module, name) -> object for the globals a data pickle may reference: numpy arrays / scalars /
# dtypes and plain containers. Everything else is refused (no code runs from a data file).
_NUMPY_GLOBALS = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")} | {
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_BUILTIN_GLOBALS = {
    ("builtins", n) for n in ("set", "frozenset", "complex", "slice", "range", "bytearray", "bytes", "object",
                              "list", "dict", "tuple", "int", "float", "bool", "str")
} | {("collections", "OrderedDict"), ("copyreg", "_reconstructor"), ("_codecs", "encode")}


class RefusedPickleError(pickle.UnpicklingError):
    """A data pickle referenced a global outside the allow-list."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickler with an allow-list: numpy arrays, plain containers, plus ``extra`` stand-ins.

    ``extra`` maps ``(module, name)`` (or ``(module_prefix, None)`` for a whole package) to the
    object returned in its place. Any other global raises ``RefusedPickleError`` naming the file
    and the refused class, before anything is called.
    """

    def __init__(self, fh, path: Path, extra: dict | None = None, **kwargs):
        super().__init__(fh, **kwargs)
        self.path = path
        self.extra = dict(extra or {})

    def find_class(self, module: str, name: str):
        # Python 2 names (``__builtin__``, ``copy_reg``) as ``fix_imports`` maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in self.extra:
            return self.extra[(module, name)]
        if (module.split(".")[0], None) in self.extra:
            return self.extra[(module.split(".")[0], None)]
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _BUILTIN_GLOBALS:
            return getattr(importlib.import_module(module), name)
        raise RefusedPickleError(f"{self.path}: refusing to unpickle {module}.{name} (a data file may hold only "
                                 "numpy arrays, sparse matrices, tensors and plain containers)")


def load_pickle(path: str | Path, extra: dict | None = None, encoding: str = "ASCII"):
    """Read a data pickle with ``SafeUnpickler``; FileNotFoundError / ValueError naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        with path.open("rb") as fh:
            return SafeUnpickler(fh, path, extra, encoding=encoding).load()
    except RefusedPickleError as exc:
        raise ValueError(str(exc)) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError, IndexError,
            KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


# ---------------------------------------------------------------------------------- atomic folders
OLD_SUFFIX = ".old"  # ``.<name>.old``: the previous folder while ``replace_dir`` swaps in a new one


def new_temp_dir(target: str | Path) -> Path:
    """A new empty sibling ``.<name>.tmp<pid>.<token>`` of ``target``, created with the user's umask."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}.{secrets.token_hex(4)}")
    os.mkdir(tmp)  # mode 0o777 & ~umask (tempfile.mkdtemp would force 0o700)
    return tmp


def replace_dir(tmp: str | Path, target: str | Path) -> Path:
    """Move the complete folder ``tmp`` onto ``target`` (replacing an existing ``target``).

    Two renames (``target`` -> ``.<name>.old``, ``tmp`` -> ``target``), then the old folder is
    deleted. A kill at any point leaves ``target`` or ``.<name>.old`` complete; ``repair_dir``
    puts things right afterwards.
    """
    tmp, target = Path(tmp), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}{OLD_SUFFIX}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old)
    else:
        os.rename(tmp, target)
    return target


def repair_dir(target: str | Path, clean: bool) -> None:
    """Recover ``target`` after a ``new_temp_dir`` / ``replace_dir`` sequence was killed part-way.

    ``.<name>.old`` without ``<name>``: the kill came between the two renames; the old folder is
    complete and is renamed back (logged). With ``clean`` (writers do this before writing), a
    ``.<name>.old`` beside an existing ``target`` (a kill while deleting it) and the temporary
    folders of processes no longer running are removed.
    """
    target = Path(target)
    old = target.with_name(f".{target.name}{OLD_SUFFIX}")
    if old.is_dir() and not target.exists():
        logger.warning("%s: restoring it from %s (an earlier write was interrupted)", target, old.name)
        os.rename(old, target)
    if not clean or not target.parent.is_dir():
        return
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    prefix = f".{target.name}{TMP_MARK}"
    for tmp in target.parent.iterdir():
        if tmp.name.startswith(prefix) and tmp.is_dir():
            pid = tmp.name[len(prefix):].split(".", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def output_dir(out: str | Path, overwrite: bool = False, known: tuple[str, ...] | None = None):
    """Write a command's outputs into ``out`` all at once, with ``out`` locked against other runs.

    Yields a temporary sibling folder to write into; when the block ends without an error it
    replaces ``out`` (``replace_dir``), otherwise it is deleted and ``out`` is untouched (a
    failing run leaves nothing behind). Refuses (ValueError) when another process holds the lock
    (``.<name>.lock`` beside ``out``), when ``out`` is a non-empty folder and ``overwrite`` is
    false, and, with ``overwrite``, when ``out`` holds entries other than ``known`` (so a
    mistyped ``--out`` never replaces an unrelated folder).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.with_name(f".{out.name}.lock")
    fd = _lock(lock_path, out)
    try:
        repair_dir(out, clean=True)
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        if entries and not overwrite:
            raise ValueError(f"output folder {out} is not empty: pass --overwrite to replace it")
        foreign = [e for e in entries if known is not None and e not in known]
        if foreign:
            raise ValueError(f"refusing to overwrite {out}: it holds {foreign[:5]}, which this command did not write")
        tmp = new_temp_dir(out)
        try:
            yield tmp
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        lock_path.unlink(missing_ok=True)  # while still locked: a waiting run re-checks the inode
        os.close(fd)


def _lock(lock_path: Path, out: Path) -> int:
    """An exclusive ``flock`` on ``lock_path`` (a file descriptor); ValueError if another run holds it."""
    for _ in range(5):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"output folder {out} is being written by another run (lock {lock_path})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder finished and removed the file between our open and lock: retry
    raise ValueError(f"output folder {out}: could not take the lock {lock_path}")
