"""Submissions: a YAML/JSON mapping (or an .npz) of question ids to answers, plus an optional student_id.

Loading never executes anything: YAML is read with a safe loader (plain data only), .npy/.npz with
allow_pickle=False after checking the header, paths must stay inside the submission's folder, and sizes
are bounded. A file that cannot be read at all raises DataError; a single bad answer is recorded on that
answer (Answer.error) so that every other answer is still graded.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cnnspec import arrays, yaml_io
from cnnspec.errors import DataError, SpecError
from cnnspec.files import open_input, read_input
from cnnspec.text import printable

MAX_TEXT_BYTES = 4 * 1024 * 1024           # a YAML or JSON submission (large arrays belong in .npy or .npz files:
                                           # text costs ~25-75x its size in memory as Python lists)
MAX_ANSWERS = 10_000                       # keys in one submission
MAX_NPZ_BYTES = 64 * 1024 * 1024           # an .npz submission or one .npy answer, on disk
MAX_NPZ_UNPACKED = 256 * 1024 * 1024       # all members of an .npz, uncompressed
MAX_ANSWER_ELEMENTS = 4_000_000            # one answer (32 MiB of float64)
MAX_DEPTH = 8                              # nesting of lists
SUBMISSION_NAMES = ("answers.yaml", "answers.yml", "answers.json", "answers.npz", "submission.yaml",
                    "submission.yml", "submission.json", "submission.npz")
SUFFIXES = (".yaml", ".yml", ".json", ".npz")
MAX_FOLDER_ENTRIES = 10_000                # files and folders looked at in a submission folder


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
    """A directory (Gradescope's /autograder/submission) -> the one answers file in it. Symlinked folders are
    not followed (no loops), and at most MAX_FOLDER_ENTRIES entries are looked at."""
    for name in SUBMISSION_NAMES:
        if (path / name).is_file():
            return path / name
    found, seen = [], 0
    for root, dirs, files in os.walk(path, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        seen += len(dirs) + len(files)
        if seen > MAX_FOLDER_ENTRIES:
            raise DataError(f"{printable(str(path))}: more than {MAX_FOLDER_ENTRIES:,} files and folders; upload "
                            "the answers file (answers.yaml, .json or .npz) alone")
        found += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in SUFFIXES
                  and (Path(root) / f).is_file()]
    found.sort()
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{printable(str(path))}: no submission file found (expected answers.yaml, answers.json "
                        "or answers.npz)")
    listing = ", ".join(printable(str(p.relative_to(path))) for p in found[:8])
    raise DataError(f"{printable(str(path))}: {len(found)} candidate submission files ({listing}); name the one to "
                    "grade answers.yaml (or .json/.npz)")


def load_submission(path) -> Submission:
    """Read a submission file (or the one answers file inside a directory); DataError if unreadable."""
    p = Path(path)
    shown = printable(str(path))
    try:
        if p.is_dir():
            folder = p
            p = find_submission_file(folder)
            if not p.resolve().is_relative_to(folder.resolve()):  # a symlink out of an uploaded folder
                raise DataError(f"{printable(str(p))}: points outside the submission folder {shown}; upload the "
                                "answers file itself")
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder
        raise DataError(f"{shown}: cannot read the submission folder ({printable(str(exc))})") from None
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _load_npz(p)
    if suffix == ".json":
        return _from_mapping(_read_json(p), p, None)
    try:
        doc = yaml_io.loads(yaml_io.read_text(p, "submission", MAX_TEXT_BYTES), printable(str(p)))
    except SpecError as exc:
        raise DataError(str(exc)) from None
    return _from_mapping(doc.data, p, doc)


def parse_submission(data: bytes, name: str) -> Submission:
    """An answers file's bytes (an upload to the grading service) -> Submission, read exactly as
    load_submission reads that file; `name`'s suffix picks the format, and messages name it. An upload is
    one file: an answer that names a .npy file is refused (put the arrays in an .npz instead)."""
    p = Path(name)
    suffix = p.suffix.lower()
    limit = MAX_NPZ_BYTES if suffix == ".npz" else MAX_TEXT_BYTES
    if len(data) > limit:
        raise DataError(f"{printable(name)}: larger than the limit of {limit:,} bytes")
    if suffix == ".npz":
        return _npz_submission(io.BytesIO(data), p)
    if suffix == ".json":
        return _from_mapping(_parse_json(data, printable(name)), p, None, base=None)
    try:
        doc = yaml_io.loads(yaml_io.decode_text(data, printable(name), "submission"), printable(name))
    except SpecError as exc:
        raise DataError(str(exc)) from None
    return _from_mapping(doc.data, p, doc, base=None)


def _read_json(p: Path) -> Any:
    return _parse_json(read_input(p, "submission", MAX_TEXT_BYTES), printable(str(p)))


def _parse_json(raw: bytes, shown: str) -> Any:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{shown}: not UTF-8 text") from None

    def no_duplicates(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise DataError(f"{shown}: duplicate key '{printable(k)}'; each question may be answered "
                                "once")
            out[k] = v
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise DataError(f"{shown}:{exc.lineno}:{exc.colno}: JSON syntax error: {exc.msg}") from None
    except RecursionError:
        raise DataError(f"{shown}: nesting is too deep") from None


def _json_int(text: str):
    """Long integers are read as floats (1e400 is Inf), as JSON's own 1e400 is: that answer is wrong, not the
    file unreadable (Python refuses int() on more than 4300 digits)."""
    return int(text) if len(text.lstrip("-")) <= 19 else float(text)


def _from_mapping(data: Any, p: Path, doc, base: Optional[Path] = ...) -> Submission:
    """base: the folder .npy answers are read from (default: the file's); None: none (an uploaded file)."""
    shown = printable(str(p))
    base = p.parent if base is ... else base
    if not isinstance(data, dict):
        raise DataError(f"{shown}: a submission is a mapping of question ids to answers (e.g. 'q1: [98, 98, 6]'), "
                        f"got {type(data).__name__}")
    student = data.get("student_id")
    if student is not None and not isinstance(student, (str, int)) or isinstance(student, bool):
        raise DataError(f"{shown}: student_id must be text or a number, got {printable(repr(student))[:80]}")
    if isinstance(student, str) and not student.isprintable():
        raise DataError(f"{shown}: student_id '{printable(student)[:80]}' contains control characters or invalid "
                        "text; write the id as plain text")
    if len(data) > MAX_ANSWERS:
        raise DataError(f"{shown}: {len(data):,} keys; a submission answers at most {MAX_ANSWERS:,} questions")
    answers = {}
    for key in list(data):
        raw = data.pop(key)  # each answer's lists are freed once read as an array
        if key == "student_id":
            continue
        where = shown
        if doc is not None:
            pos = doc.position((key,))
            if pos:
                where = f"{shown}:{pos[0]}:{pos[1]}"
        answers[printable(str(key))] = parse_answer(raw, base, where)
    return Submission(shown, None if student is None else str(student), answers)


def parse_answer(raw: Any, base: Optional[Path], where: str = "") -> Answer:
    """A number, nested lists of numbers, or a path to a .npy file in `base` (None: no files) -> Answer (with
    .error on failure)."""
    if raw is None:
        return Answer(raw=None, error="no answer given (the value is empty)", where=where, missing=True)
    ans = Answer(raw=raw, where=where)
    try:
        ans.value = _value(raw, base, ans)
        if isinstance(raw, list):
            ans.raw = None  # the array holds it now; keep no second copy as Python lists
    except DataError as exc:
        ans.error = str(exc)
    return ans


def _value(raw: Any, base: Optional[Path], ans: Answer) -> np.ndarray:
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


_NUMBER_TYPES = frozenset({int, float})


def _nested(raw: list) -> np.ndarray:
    """Nested lists of numbers -> an array. Each list's item types are read as a set (a C-speed pass), so the
    cost is one pass over the values; positions are worked out only for the message when something is wrong."""
    count = 0
    is_int = True
    stack = [(raw, (), 1)]
    while stack:
        v, idx, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DataError(f"lists are nested more than {MAX_DEPTH} deep")
        types = set(map(type, v))
        if types <= _NUMBER_TYPES:
            count += len(v)
            is_int = is_int and float not in types
        else:
            for i, item in enumerate(v):
                if isinstance(item, list):
                    stack.append((item, idx + (i,), depth + 1))
                elif type(item) not in _NUMBER_TYPES:
                    at = "".join(f"[{j}]" for j in idx + (i,))
                    if item is None:
                        raise DataError(f"missing value at {at}")
                    raise DataError(f"expected numbers, got {printable(repr(item))[:60]} at {at}")
                else:
                    count += 1
                    is_int = is_int and type(item) is int
        if count > MAX_ANSWER_ELEMENTS:
            raise DataError(f"more than {MAX_ANSWER_ELEMENTS:,} values; the limit per answer is "
                            f"{MAX_ANSWER_ELEMENTS:,}")
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


def _inside(base: Path, name: str, shown: str) -> Path:
    """name (relative, no way out of `base` - also not through a symlink) -> the resolved path."""
    p = Path(name)
    if p.is_absolute():
        raise DataError(f"'{shown}': give a path relative to the submission's folder, not an absolute path")
    try:
        full = (base / p).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise DataError(f"'{shown}': cannot be resolved (a symlink loop?)") from None
    if not full.is_relative_to(base.resolve()):
        raise DataError(f"'{shown}': paths must stay inside the submission's folder")
    return full


def _load_npy(base: Optional[Path], name: str) -> np.ndarray:
    shown = printable(name if len(name) <= 80 else name[:60] + "..." + name[-8:])
    label = f"'{shown}'"
    if base is None:
        raise DataError(f"{label}: an uploaded answers file cannot name other files; put the arrays in an .npz "
                        "(numpy.savez) or write them as lists")
    try:
        p = _inside(base, name, shown)
        if not p.exists():
            raise DataError(f"{label}: file not found next to the submission")
        with open_input(p, "answer", MAX_NPZ_BYTES) as f:
            arrays.check_npy_header(f, label, MAX_ANSWER_ELEMENTS, "the limit per answer")
            f.seek(0)
            a = np.load(f, allow_pickle=False)
    except DataError as exc:
        message = str(exc)
        if not message.startswith(label):  # open_input names the resolved path; the student wrote `name`
            message = label + message[message.find(": "):] if ": " in message else f"{label}: {message}"
        raise DataError(message) from None
    except ValueError as exc:  # also a NUL byte in the name
        raise arrays.npy_error(label, exc) from None
    except (OSError, EOFError) as exc:  # a name too long, a file that cannot be opened
        raise DataError(f"{label}: not a readable .npy file ({exc.strerror or exc})") from None
    return _numeric(a, label)


def _numeric(a: np.ndarray, label: str) -> np.ndarray:
    if a.dtype.kind == "b":
        raise DataError(f"{label}: expected numbers, got booleans")
    if a.dtype.kind not in "fiu":
        raise DataError(f"{label}: expected numbers, got an array of dtype {a.dtype}")
    if a.size > MAX_ANSWER_ELEMENTS:
        raise DataError(f"{label}: {a.size:,} values; the limit per answer is {MAX_ANSWER_ELEMENTS:,}")
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        return a.astype(np.float64)  # uint64 beyond int64 would wrap to a negative number
    return a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float64)


def _load_npz(p: Path) -> Submission:
    with open_input(p, "submission", MAX_NPZ_BYTES) as f:
        return _npz_submission(f, p)


def _npz_submission(f, p: Path) -> Submission:
    """An .npz archive open as the binary file f (named p in messages) -> Submission."""
    shown = printable(str(p))
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        f.seek(0)
        if f.read(1) == b"\x80":
            raise DataError(f"{shown}: is a Python pickle, not an .npz archive; pickles are refused (they can "
                            "run code) - save answers with numpy.savez") from None
        why = "member names are not UTF-8" if isinstance(exc, UnicodeDecodeError) else \
            "save answers with numpy.savez(path, q1=..., q2=...)"
        raise DataError(f"{shown}: not a readable .npz archive ({why})") from None
    with zf:
        return _npz_answers(zf, p, shown)


def _npz_answers(zf: zipfile.ZipFile, p: Path, shown: str) -> Submission:
    infos = zf.infolist()
    if len(infos) > MAX_ANSWERS:
        raise DataError(f"{shown}: {len(infos):,} members; a submission answers at most {MAX_ANSWERS:,} questions")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_NPZ_UNPACKED:
        raise DataError(f"{shown}: unpacks to {unpacked:,} bytes; the limit is {MAX_NPZ_UNPACKED:,}")
    answers: dict[str, Answer] = {}
    student = None
    converted = 0  # bytes of the answers as float64/int64: small dtypes grow up to 8x, bounded here
    for info in infos:
        if info.is_dir():
            continue
        key = printable(info.filename[:-4] if info.filename.endswith(".npy") else info.filename)
        where = f"{shown}['{key}']"
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
            if not student.isprintable():
                raise DataError(f"{where}: student_id '{printable(student)[:80]}' contains control characters or "
                                "invalid text; write the id as plain text")
            continue
        converted += 8 * a.size
        if converted > MAX_NPZ_UNPACKED:
            answers[key] = Answer(raw=None, error=f"the answers so far hold {converted // 8:,} values; a submission "
                                  f"may hold {MAX_NPZ_UNPACKED // 8:,} in all", where=where)
            continue
        try:
            answers[key] = Answer(raw=f"<array {list(a.shape)}>", value=_numeric(a, where), where=where)
        except DataError as exc:
            answers[key] = Answer(raw=None, error=str(exc), where=where)
    return Submission(shown, student, answers)
