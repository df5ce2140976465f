"""Writing output files so that no reader ever sees half of one. No NumPy here: `cnnspec schema -o` uses it.

Each file is written to a temporary sibling (same folder, so the rename is atomic) with the permissions a
new file would get, and renamed into place only when written completely.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import DataError


def _temp_sibling(path: Path) -> str:
    """A new empty temporary file next to `path` (same filesystem, so the final rename is atomic)."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"{path}: cannot write, directory {parent} does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should be as readable as any new file
    os.close(fd)
    return tmp


def write_files(files: dict) -> None:
    """Write {path: bytes or str}: each goes to a temporary sibling and is renamed into place only when
    every one was written, so no reader ever sees a partial file and a failed write changes nothing.
    Each rename is atomic; the renames together are not (an interrupt between them leaves the first
    file new and the others as they were)."""
    temps: dict[Path, str] = {}
    try:
        for path, data in files.items():
            path = Path(path)
            temps[path] = tmp = _temp_sibling(path)
            try:
                with open(tmp, "wb") as f:
                    f.write(data.encode("utf-8") if isinstance(data, str) else data)
            except OSError as exc:
                raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
        for path, tmp in temps.items():
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


def atomic_write(path, write) -> None:
    """Call write(tmp_path) to produce the file, then rename it over `path` (see write_files)."""
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
