"""Reading and writing user arrays (.npy/.npz) safely: no pickle, clear errors, atomic writes (files.py)."""
from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError
from .files import atomic_write

MAX_FILE_BYTES = 2 * 1024**3
MAX_ELEMENTS = MAX_FILE_BYTES // 8  # what the largest file could hold in float64


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


def check_npy_header(f, label: str, max_elements: int = MAX_ELEMENTS, limit_name: str = "the limit",
                     text_ok: bool = False) -> None:
    """Read only an .npy header from the open file `f` and refuse, before any data is read, what must not
    be loaded: Python objects (pickle), non-numeric dtypes, more than `max_elements` values (a header can
    claim any shape). text_ok: one short string is accepted too (an .npz's student_id)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as exc:
        raise DataError(f"{label}: not a .npy file ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{label} holds Python objects (pickled data); only numeric arrays are accepted")
    n = math.prod(shape)
    if text_ok and dtype.kind in "US" and n == 1 and dtype.itemsize <= 4096:
        return
    if dtype.kind not in "biuf":
        raise DataError(f"{label}: expected numbers, got an array of dtype {dtype}")
    if n > max_elements:
        raise DataError(f"{label} has {n:,} values; {limit_name} is {max_elements:,}")


def npy_error(label: str, exc: Exception) -> DataError:
    """What NumPy's ValueError while reading an .npy means, for users."""
    if "pickle" in str(exc).lower():
        return DataError(f"{label} holds Python objects (pickled data); only numeric arrays are accepted")
    return DataError(f"{label}: not a readable .npy file ({exc})")


def read_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, max_elements: int = MAX_ELEMENTS,
                    limit_name: str = "the limit", text_ok: bool = False) -> np.ndarray:
    """One member of an .npz, its header checked (check_npy_header) before any data is read."""
    try:
        with zf.open(info) as f:
            check_npy_header(f, label, max_elements, limit_name, text_ok)
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except DataError:
        raise
    except ValueError as exc:
        raise npy_error(label, exc) from None
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{label}: not a readable .npy array ({exc})") from None


def load_npy(path, what: str = "array", finite: bool = True) -> np.ndarray:
    path = Path(path)
    _check_file(path, what)
    head = _magic(path)
    if head.startswith(b"PK"):
        raise DataError(f"{path}: is an .npz archive; expected a single .npy array")
    if head != b"\x93NUMPY":
        raise DataError(f"{path}: not a readable .npy file (no NumPy header; save arrays with numpy.save)")
    try:
        with open(path, "rb") as f:
            check_npy_header(f, str(path))
        a = np.load(path, allow_pickle=False)
    except DataError:
        raise
    except ValueError as exc:
        raise npy_error(str(path), exc) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    return check_numeric(a, str(path), finite)


def load_npz(path, what: str = "arrays", finite: bool = True) -> dict[str, np.ndarray]:
    path = Path(path)
    _check_file(path, what)
    if not _magic(path).startswith(b"PK"):
        raise DataError(f"{path}: not a readable .npz file (not a zip archive; save with numpy.savez)")
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            unpacked = sum(i.file_size for i in infos)
            if unpacked > MAX_FILE_BYTES:
                raise DataError(f"{path}: unpacks to {unpacked:,} bytes; the limit is {MAX_FILE_BYTES:,}")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise DataError(f"{path}: member '{info.filename}' is not an array; save with numpy.savez")
                key = info.filename[:-4]
                out[key] = read_npz_member(zf, info, f"{path}['{key}']")
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    for key, value in out.items():
        check_numeric(value, f"{path}['{key}']", finite)
    return out


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)
