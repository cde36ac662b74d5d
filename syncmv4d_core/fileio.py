"""The one atomic-write helper (files) and small file utilities shared by the library.

``atomic_write(path, write)`` calls ``write(tmp_path)`` on a temporary sibling of ``path`` (same
directory, so ``os.replace`` is atomic) and renames it onto ``path`` only when ``write`` returned;
on any error (including a full disk) the temporary file is removed and ``path`` is unchanged.
A process killed mid-write leaves at most a ``.<name>.tmp<pid>`` sibling that ``clean_temp_files``
removes (and that no reader ever opens).

``load_pickle`` / ``SafeUnpickler`` read data pickles (MANO models, TACO annotations) with an
allow-list: numpy arrays and plain containers plus the stand-ins a caller names; any other class or
function is refused with an error naming the file and the class, so no code runs from a data file.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import json
import os
import pickle
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
