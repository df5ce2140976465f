"""Assignment uploads: the same YAML (with its spec and data files) that `cnnspec grade` takes.

An upload is a zip, or several files whose names are paths relative to a common root (e.g.
`assignments/lecture.yaml` next to `lecture_conv1.yaml`, which the assignment names as `../lecture_conv1.yaml`).
Paths are checked (relative, no `..` out of the root, no links, bounded count and size) before anything
is written. The assignment is validated by grader.load_assignment on a private copy, so errors are the
grader's own file:line:col messages, with the upload's paths.

Each process keeps the versions it grades unpacked in a private temporary folder (by sha256: a version's
files never change).
"""
from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from cnnspec.text import printable

from .security import sha256_bytes

MAX_FILES = 200
SUFFIXES = (".yaml", ".yml", ".json", ".npy", ".npz", ".txt", ".md", ".csv")


class UploadError(ValueError):
    """What is wrong with an upload, in words for its author (answered as 422)."""


def clean_path(name: str) -> str:
    name = (name or "").replace("\\", "/").strip()
    p = PurePosixPath(name)
    if not name or p.is_absolute() or any(part in ("..", "") for part in p.parts) or name.startswith("./"):
        raise UploadError(f"'{printable(name)}': give paths relative to the assignment's folder, without '..'")
    if not all(part.isprintable() and not part.startswith(".") for part in p.parts):
        raise UploadError(f"'{printable(name)}': hidden files and unprintable names are not accepted")
    if p.suffix.lower() not in SUFFIXES:
        raise UploadError(f"'{printable(name)}': not an assignment file (expected {', '.join(SUFFIXES)})")
    return str(p)


def unpack(files: list[tuple[str, bytes]], max_bytes: int) -> dict[str, bytes]:
    """[(name, bytes)] (one zip, or plain files) -> {relative path: bytes}."""
    out: dict[str, bytes] = {}
    if len(files) == 1 and files[0][0].lower().endswith(".zip"):
        try:
            zf = zipfile.ZipFile(io.BytesIO(files[0][1]))
        except zipfile.BadZipFile:
            raise UploadError(f"'{printable(files[0][0])}': not a readable zip archive") from None
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_FILES:
            raise UploadError(f"the zip holds {len(infos)} files; at most {MAX_FILES}")
        total = 0
        for info in infos:
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UploadError(f"'{printable(info.filename)}': symbolic links are not accepted")
            total += info.file_size
            if total > max_bytes:
                raise UploadError(f"the zip unpacks to more than {max_bytes:,} bytes")
            path = clean_path(info.filename)
            with zf.open(info) as f:
                data = f.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise UploadError(f"'{printable(info.filename)}': its size does not match the zip's directory")
            out[path] = data
    else:
        if len(files) > MAX_FILES:
            raise UploadError(f"{len(files)} files; at most {MAX_FILES}")
        for name, data in files:
            path = clean_path(name)
            if path in out:
                raise UploadError(f"'{printable(path)}' given twice")
            out[path] = data
    # A common leading folder (a zipped directory) is dropped, so 'hw1/hw1.yaml' and 'hw1.yaml' are one upload.
    parts = {PurePosixPath(p).parts[0] for p in out}
    if len(parts) == 1 and all(len(PurePosixPath(p).parts) > 1 for p in out):
        root = parts.pop()
        out = {str(PurePosixPath(*PurePosixPath(p).parts[1:])): d for p, d in out.items()}
        del root
    if not out:
        raise UploadError("no files uploaded")
    return out


def find_main(files: dict[str, bytes], main: Optional[str]) -> str:
    if main:
        main = clean_path(main)
        if main not in files:
            raise UploadError(f"'{printable(main)}' (main) is not among the uploaded files")
        return main
    cands = [p for p, d in files.items() if p.lower().endswith((".yaml", ".yml")) and b"cnnspec_assignment" in d]
    if len(cands) != 1:
        raise UploadError("say which file is the assignment (form field 'main')" if cands else
                          "no assignment file (a .yaml starting with 'cnnspec_assignment: 1') among the uploaded files")
    return cands[0]


def manifest_sha(files: dict[str, bytes]) -> str:
    text = "".join(f"{p}\0{sha256_bytes(d)}\n" for p, d in sorted(files.items()))
    return sha256_bytes(text.encode())


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def validate(files: dict[str, bytes], main: str):
    """Load the assignment from a private copy: (Assignment-independent summary, problems). Raises UploadError
    with the grader's file:line:col messages (paths as uploaded)."""
    from cnnspec.errors import CnnspecError
    import grader

    with tempfile.TemporaryDirectory(prefix="cnnspec-upload-") as tmp:
        write_tree(Path(tmp), files)
        try:
            a = grader.load_assignment(Path(tmp) / main)
        except CnnspecError as exc:
            raise UploadError(str(exc).replace(tmp + os.sep, "")) from None
        return summarize(a)


def summarize(a) -> dict:
    from grader.grading import question_text
    return {"name": a.name, "title": a.title, "has_variants": a.has_variants, "due_date": a.file.due_date,
            "max_score": a.max_score,
            "questions": [{"id": q.id, "number": i + 1, "kind": q.kind, "points": q.points,
                           "visibility": q.visibility, "text": question_text(q, a)}
                          for i, q in enumerate(a.questions)]}


def private_dir(prefix: str, where: Optional[str]) -> str:
    """A new 0700 folder `<prefix>-<pid>-<random>` in `where` (default: the temporary folder); the folders of
    processes that are gone (killed before their exit handlers ran) are removed first."""
    import re

    base = where or tempfile.gettempdir()
    pattern = re.compile(re.escape(prefix) + r"-(\d+)-")
    try:
        names = os.listdir(base)
    except OSError:
        names = []
    for name in names:
        found = pattern.match(name)
        if found and int(found.group(1)) != os.getpid() and not _alive(int(found.group(1))):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=base)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:      # another user's process: alive
        return True
    return True


class Unpacked:
    """This process's private copies of assignment versions, by sha256."""

    def __init__(self):
        self._root: Optional[Path] = None
        self._lock = threading.Lock()

    def path(self, sha: str, main: str, load_files) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(private_dir("cnnspec-service", None))
                atexit.register(shutil.rmtree, self._root, True)
            target = self._root / sha
            if not target.exists():
                tmp = self._root / f".{sha}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                write_tree(tmp, load_files())
                tmp.rename(target)
            return target / main


UNPACKED = Unpacked()


def assignment_files(path) -> tuple[dict[str, bytes], str]:
    """An assignment file on disk and the spec and .npy files it names -> ({upload path: bytes}, main path), the
    paths relative to their common folder (what an instructor would zip)."""
    import yaml

    main = Path(path).resolve()
    doc = yaml.safe_load(main.read_text(encoding="utf-8")) or {}
    refs = [doc.get("model")] if doc.get("model") else list((doc.get("models") or {}).values())
    named = [main]
    for ref in refs:
        if isinstance(ref, dict) and isinstance(ref.get("spec"), str):
            named.append((main.parent / ref["spec"]).resolve())
    for entry in (doc.get("data") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("npy"), str):
            named.append((main.parent / entry["npy"]).resolve())
    root = Path(os.path.commonpath([str(p.parent) for p in named]))
    files = {str(p.relative_to(root)): p.read_bytes() for p in named}
    return files, str(main.relative_to(root))
