"""Submissions: a YAML/JSON mapping (or an .npz) of question ids to answers, plus an optional student_id.

Loading never executes anything: YAML is read with a safe loader (plain data only), .npy/.npz with
allow_pickle=False after checking the header, paths must stay inside the submission's folder, and sizes
are bounded. A file that cannot be read at all raises DataError; a single bad answer is recorded on that
answer (Answer.error) so that every other answer is still graded.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cnnspec import arrays, yaml_io
from cnnspec.errors import DataError, SpecError

MAX_FILE_BYTES = 16 * 1024 * 1024          # a YAML/JSON submission
MAX_NPZ_BYTES = 64 * 1024 * 1024           # an .npz submission or one .npy answer, on disk
MAX_NPZ_UNPACKED = 256 * 1024 * 1024       # all members of an .npz, uncompressed
MAX_ANSWER_ELEMENTS = 4_000_000            # one answer (32 MiB of float64)
MAX_DEPTH = 8                              # nesting of lists
SUBMISSION_NAMES = ("answers.yaml", "answers.yml", "answers.json", "answers.npz", "submission.yaml",
                    "submission.yml", "submission.json", "submission.npz")
SUFFIXES = (".yaml", ".yml", ".json", ".npz")


@dataclass
class Answer:
    """One answer as given. value: ndarray (float64 or int64) when readable; error says why not."""

    raw: Any
    value: Optional[np.ndarray] = None
    error: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    where: str = ""
    missing: bool = False                   # the key is there but the value is empty (a template left blank)


@dataclass
class Submission:
    path: str
    student_id: Optional[str]
    answers: dict[str, Answer]


def find_submission_file(path: Path) -> Path:
    """A directory (Gradescope's /autograder/submission) -> the one answers file in it."""
    for name in SUBMISSION_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{path}: no submission file found (expected answers.yaml, answers.json or answers.npz)")
    listing = ", ".join(str(p.relative_to(path)) for p in found[:8])
    raise DataError(f"{path}: {len(found)} candidate submission files ({listing}); name the one to grade "
                    "answers.yaml (or .json/.npz)")


def load_submission(path) -> Submission:
    """Read a submission file (or the one answers file inside a directory); DataError if unreadable."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: submission file not found")
    if p.is_dir():
        folder = p
        p = find_submission_file(folder)
        if not p.resolve().is_relative_to(folder.resolve()):  # a symlink out of an uploaded folder
            raise DataError(f"{p}: points outside the submission folder {folder}; upload the answers file itself")
    suffix = p.suffix.lower()
    size = p.stat().st_size
    if suffix == ".npz":
        return _load_npz(p, size)
    if size > MAX_FILE_BYTES:
        raise DataError(f"{p}: submission is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} (put large arrays in "
                        ".npy files next to it, or submit an .npz)")
    if suffix == ".json":
        return _from_mapping(_read_json(p), p, None)
    try:
        doc = yaml_io.load(p, "submission")
    except SpecError as exc:
        raise DataError(str(exc)) from None
    return _from_mapping(doc.data, p, doc)


def _read_json(p: Path) -> Any:
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read the submission: {exc.strerror or exc}") from None

    def no_duplicates(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise DataError(f"{p}: duplicate key '{k}'; each question may be answered once")
            out[k] = v
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}:{exc.lineno}:{exc.colno}: JSON syntax error: {exc.msg}") from None
    except RecursionError:
        raise DataError(f"{p}: nesting is too deep") from None


def _json_int(text: str):
    """Long integers are read as floats (1e400 is Inf), as JSON's own 1e400 is: that answer is wrong, not the
    file unreadable (Python refuses int() on more than 4300 digits)."""
    return int(text) if len(text.lstrip("-")) <= 19 else float(text)


def _from_mapping(data: Any, p: Path, doc) -> Submission:
    if not isinstance(data, dict):
        raise DataError(f"{p}: a submission is a mapping of question ids to answers (e.g. 'q1: [98, 98, 6]'), "
                        f"got {type(data).__name__}")
    student = data.get("student_id")
    if student is not None and not isinstance(student, (str, int)) or isinstance(student, bool):
        raise DataError(f"{p}: student_id must be text or a number, got {student!r}")
    answers = {}
    for key, raw in data.items():
        if key == "student_id":
            continue
        where = f"{p}"
        if doc is not None:
            pos = doc.position((key,))
            if pos:
                where = f"{p}:{pos[0]}:{pos[1]}"
        answers[str(key)] = parse_answer(raw, p.parent, where)
    return Submission(str(p), None if student is None else str(student), answers)


def parse_answer(raw: Any, base: Path, where: str = "") -> Answer:
    """A number, nested lists of numbers, or a path to a .npy file -> Answer (with .error on failure)."""
    if raw is None:
        return Answer(raw=None, error="no answer given (the value is empty)", where=where, missing=True)
    ans = Answer(raw=raw, where=where)
    try:
        ans.value = _value(raw, base, ans)
    except DataError as exc:
        ans.error = str(exc)
    return ans


def _value(raw: Any, base: Path, ans: Answer) -> np.ndarray:
    if raw is None:
        raise DataError("the answer is empty")
    if isinstance(raw, bool):
        raise DataError(f"expected a number, got {str(raw).lower()}")
    if isinstance(raw, (int, float)):
        if isinstance(raw, int) and abs(raw) >= 2**62:
            try:
                return np.array(float(raw))
            except OverflowError:
                raise DataError(f"the number {_short(raw)} is too large") from None
        return np.array(raw, dtype=np.int64 if isinstance(raw, int) else np.float64)
    if isinstance(raw, str):
        text = raw.strip()
        if text.lower().endswith(".npy"):
            return _load_npy(base, text)
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"expected a number, a list of numbers or a .npy file name, got the text {raw!r}") from None
        ans.notes.append(f"the answer was text ({raw!r}); read it as the number {value:g} - write numbers without "
                         "quotes")
        return np.array(value)
    if isinstance(raw, dict):
        raise DataError("expected a number or (nested) list of numbers, got a mapping")
    if isinstance(raw, list):
        return _nested(raw)
    raise DataError(f"expected a number or list of numbers, got {type(raw).__name__}")


def _nested(raw: list) -> np.ndarray:
    count = 0
    stack = [(raw, (), 1)]
    is_int = True
    while stack:
        v, idx, depth = stack.pop()
        if isinstance(v, list):
            if depth > MAX_DEPTH:
                raise DataError(f"lists are nested more than {MAX_DEPTH} deep")
            stack.extend((item, idx + (i,), depth + 1) for i, item in enumerate(v))
            continue
        count += 1
        if count > MAX_ANSWER_ELEMENTS:
            raise DataError(f"more than {MAX_ANSWER_ELEMENTS:,} values; the limit per answer is "
                            f"{MAX_ANSWER_ELEMENTS:,}")
        at = "".join(f"[{i}]" for i in idx)
        if v is None:
            raise DataError(f"missing value at {at}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(f"expected numbers, got {v!r} at {at}")
        is_int = is_int and isinstance(v, int)
    try:
        a = np.array(raw, dtype=np.float64)
    except OverflowError:
        raise DataError("a number is too large (beyond about 1.8e308)") from None
    except ValueError:
        raise DataError("nested lists have unequal lengths; an answer must be a rectangular array "
                        f"({_ragged_hint(raw)})") from None
    if is_int and a.size and np.all(np.abs(a) < 2**53):
        return a.astype(np.int64)
    return a


def _short(n: int) -> str:
    text = str(n) if n.bit_length() < 4000 else "with more than 1,000 digits"
    return text if len(text) <= 30 else f"{text[:12]}...({len(text)} digits)"


def _ragged_hint(raw: list) -> str:
    if any(isinstance(v, list) for v in raw) and not all(isinstance(v, list) for v in raw):
        return "numbers and lists are mixed at the same level"
    lengths = [len(v) if isinstance(v, list) else "a number" for v in raw[:6]]
    return "row lengths " + ", ".join(map(str, lengths)) + (", ..." if len(raw) > 6 else "")


def _inside(base: Path, name: str) -> Path:
    """name (relative, no way out of `base` - also not through a symlink) -> the resolved path."""
    p = Path(name)
    if p.is_absolute():
        raise DataError(f"'{name}': give a path relative to the submission's folder, not an absolute path")
    full = (base / p).resolve()
    if not full.is_relative_to(base.resolve()):
        raise DataError(f"'{name}': paths must stay inside the submission's folder")
    return full


def _load_npy(base: Path, name: str) -> np.ndarray:
    shown = name if len(name) <= 80 else name[:60] + "..." + name[-8:]
    try:
        p = _inside(base, name)
        if not p.is_file():
            raise DataError(f"'{shown}': file not found next to the submission")
        size = p.stat().st_size
        if size > MAX_NPZ_BYTES:
            raise DataError(f"'{shown}' is {size:,} bytes; the limit is {MAX_NPZ_BYTES:,}")
        with open(p, "rb") as f:
            arrays.check_npy_header(f, f"'{shown}'", MAX_ANSWER_ELEMENTS, "the limit per answer")
        a = np.load(p, allow_pickle=False)
    except DataError:
        raise
    except ValueError as exc:  # also a NUL byte in the name
        raise arrays.npy_error(f"'{shown}'", exc) from None
    except (OSError, EOFError) as exc:  # a name too long, a file that cannot be opened
        raise DataError(f"'{shown}': not a readable .npy file ({exc.strerror or exc})") from None
    return _numeric(a, f"'{shown}'")


def _numeric(a: np.ndarray, label: str) -> np.ndarray:
    if a.dtype.kind == "b":
        raise DataError(f"{label}: expected numbers, got booleans")
    if a.dtype.kind not in "fiu":
        raise DataError(f"{label}: expected numbers, got an array of dtype {a.dtype}")
    if a.size > MAX_ANSWER_ELEMENTS:
        raise DataError(f"{label}: {a.size:,} values; the limit per answer is {MAX_ANSWER_ELEMENTS:,}")
    return a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float64)


def _load_npz(p: Path, size: int) -> Submission:
    if size > MAX_NPZ_BYTES:
        raise DataError(f"{p}: submission is {size:,} bytes; the limit is {MAX_NPZ_BYTES:,}")
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError):
        with open(p, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":
            raise DataError(f"{p}: is a Python pickle, not an .npz archive; pickles are refused (they can run "
                            "code) - save answers with numpy.savez") from None
        raise DataError(f"{p}: not an .npz archive (save answers with numpy.savez(path, q1=..., q2=...))") from None
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_NPZ_UNPACKED:
        raise DataError(f"{p}: unpacks to {unpacked:,} bytes; the limit is {MAX_NPZ_UNPACKED:,}")
    answers: dict[str, Answer] = {}
    student = None
    with zipfile.ZipFile(p) as zf:
        for info in infos:
            if info.is_dir():
                continue
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            where = f"{p}['{key}']"
            try:
                a = arrays.read_npz_member(zf, info, f"'{key}'", MAX_ANSWER_ELEMENTS, "the limit per answer",
                                           text_ok=key == "student_id")
            except DataError as exc:
                if key == "student_id":
                    raise DataError(f"{where}: {exc}") from None
                answers[key] = Answer(raw=None, error=str(exc), where=where)
                continue
            if key == "student_id":
                if a.dtype.kind not in "UiuS" or a.size != 1:
                    raise DataError(f"{where}: student_id must be one string or number")
                value = a.reshape(()).item()
                try:
                    student = value.decode("utf-8") if isinstance(value, bytes) else str(value)
                except UnicodeDecodeError:
                    raise DataError(f"{where}: student_id is not UTF-8 text") from None
                continue
            try:
                answers[key] = Answer(raw=f"<array {list(a.shape)}>", value=_numeric(a, where), where=where)
            except DataError as exc:
                answers[key] = Answer(raw=None, error=str(exc), where=where)
    return Submission(str(p), student, answers)
