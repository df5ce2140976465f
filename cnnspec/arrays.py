"""Reading and writing user arrays (.npy/.npz) safely: no pickle, clear errors, atomic writes (files.py)."""
from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError
from .files import atomic_write, open_input
from .text import printable

MAX_FILE_BYTES = 2 * 1024**3
MAX_ELEMENTS = MAX_FILE_BYTES // 8  # what the largest file could hold in float64


def check_numeric(a: np.ndarray, label: str, finite: bool = True) -> np.ndarray:
    """Reject object/string/bool arrays and (optionally) NaN/Inf, naming where the first bad value is."""
    if a.dtype.kind not in "fiu":
        raise DataError(f"{label}: expected numbers, got an array of dtype {a.dtype}")
    if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise DataError(f"{label}: contains {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}; "
                        "values must be finite numbers")
    return a


def check_npy_header(f, label: str, max_elements: int = MAX_ELEMENTS, limit_name: str = "the limit",
                     text_ok: bool = False) -> int:
    """Read only an .npy header from the open file `f` and refuse, before any data is read, what must not
    be loaded: Python objects (pickle), non-numeric dtypes, more than `max_elements` values (a header can
    claim any shape). text_ok: one short string is accepted too (an .npz's student_id). Returns the number
    of values the header declares."""
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
        return n
    if dtype.kind not in "biuf":
        raise DataError(f"{label}: expected numbers, got an array of dtype {dtype}")
    if n > max_elements:
        raise DataError(f"{label} has {n:,} values; {limit_name} is {max_elements:,}")
    return n


def _within_memory(label: str, values: int, max_bytes: int | None) -> None:
    """Refuse, from the headers alone, arrays that would not fit the memory limit once loaded as float64
    (a compressed .npz of zeros or a sparse .npy can declare gigabytes in a few kilobytes)."""
    from . import limits

    limit = limits.resolve(None) if max_bytes is None else max_bytes
    if 8 * values > limit:
        raise limits.MemoryLimitError(
            f"{label} holds {values:,} values ({limits.fmt(8 * values)} as float64) once loaded; the memory limit "
            f"is {limits.limit_text(limit)}: use a smaller file, or raise the limit (--max-memory, "
            f"{limits.ENV_VAR})")


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


def load_npy(path, what: str = "array", finite: bool = True, max_bytes: int | None = None) -> np.ndarray:
    """A numeric .npy array; refused before its data is read when it would not fit `max_bytes` (default:
    the memory limit, limits.resolve)."""
    label = printable(str(path))
    with open_input(path, what, MAX_FILE_BYTES) as f:
        try:
            head = f.read(6)
            if head.startswith(b"PK"):
                raise DataError(f"{label}: is an .npz archive; expected a single .npy array")
            if head != b"\x93NUMPY":
                raise DataError(f"{label}: not a readable .npy file (no NumPy header; save arrays with numpy.save)")
            f.seek(0)
            _within_memory(label, check_npy_header(f, label), max_bytes)
            f.seek(0)
            a = np.load(f, allow_pickle=False)
        except DataError:
            raise
        except ValueError as exc:
            raise npy_error(label, exc) from None
        except (OSError, EOFError) as exc:
            raise DataError(f"{label}: not a readable .npy file ({exc})") from None
    return check_numeric(a, label, finite)


def load_npz(path, what: str = "arrays", finite: bool = True, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz; refused from the members' headers, before any data is read, when together
    they would not fit `max_bytes` (default: the memory limit)."""
    label = printable(str(path))
    out = {}
    with open_input(path, what, MAX_FILE_BYTES) as f:
        try:
            if not f.read(2).startswith(b"PK"):
                raise DataError(f"{label}: not a readable .npz file (not a zip archive; save with numpy.savez)")
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                infos = zf.infolist()
                unpacked = sum(i.file_size for i in infos)
                if unpacked > MAX_FILE_BYTES:
                    raise DataError(f"{label}: unpacks to {unpacked:,} bytes; the limit is {MAX_FILE_BYTES:,}")
                values = 0
                for info in infos:
                    name = printable(info.filename)
                    if not info.filename.endswith(".npy"):
                        raise DataError(f"{label}: member '{name}' is not an array; save with numpy.savez")
                    with zf.open(info) as member:
                        values += check_npy_header(member, f"{label}['{name[:-4]}']")
                _within_memory(label, values, max_bytes)
                for info in infos:
                    key = info.filename[:-4]
                    out[key] = read_npz_member(zf, info, f"{label}['{printable(key)}']")
        except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, RuntimeError, NotImplementedError) as exc:
            raise DataError(f"{label}: not a readable .npz file ({printable(str(exc))})") from None
    for key, value in out.items():
        check_numeric(value, f"{label}['{printable(key)}']", finite)
    return out


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)
