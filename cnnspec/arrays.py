"""Reading and writing user arrays (.npy/.npz) safely: no pickle, clear errors, atomic writes (files.py)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError
from .files import atomic_write

MAX_FILE_BYTES = 2 * 1024**3


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a {what} file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {what} file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}")


def check_numeric(a: np.ndarray, label: str, finite: bool = True) -> np.ndarray:
    """Reject object/string/bool arrays and (optionally) NaN/Inf, naming where the first bad value is."""
    if a.dtype.kind not in "fiu":
        raise DataError(f"{label}: expected numbers, got an array of dtype {a.dtype}")
    if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise DataError(f"{label}: contains {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}; "
                        "values must be finite numbers")
    return a


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(6)


def load_npy(path, what: str = "array", finite: bool = True) -> np.ndarray:
    path = Path(path)
    _check_file(path, what)
    head = _magic(path)
    if head.startswith(b"PK"):
        raise DataError(f"{path}: is an .npz archive; expected a single .npy array")
    if head != b"\x93NUMPY":
        raise DataError(f"{path}: not a readable .npy file (no NumPy header; save arrays with numpy.save)")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{path}: holds Python objects (pickled); only numeric arrays are accepted") from None
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        a.close()
        raise DataError(f"{path}: is an .npz archive; expected a single .npy array")
    return check_numeric(a, str(path), finite)


def load_npz(path, what: str = "arrays", finite: bool = True) -> dict[str, np.ndarray]:
    path = Path(path)
    _check_file(path, what)
    if not _magic(path).startswith(b"PK"):
        raise DataError(f"{path}: not a readable .npz file (not a zip archive; save with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: is a single .npy array; expected an .npz archive of named arrays")
            out = {k: z[k] for k in z.files}
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{path}: holds Python objects (pickled); only numeric arrays are accepted") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    for k, v in out.items():
        check_numeric(v, f"{path}['{k}']", finite)
    return out


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)
