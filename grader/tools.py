"""Instructor tools behind `cnnspec assignment`: check, template, solution, Gradescope bundle."""
from __future__ import annotations

import io
import json
import re
import shlex
import stat
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

import cnnspec
from cnnspec.errors import CnnspecError, DataError
from cnnspec.text import printable

from .assignment import FLOAT_KINDS, Assignment
from .grading import question_text
from .reference import Reference

SAMPLE_STUDENT = "sample-student"
INLINE_DATA_LIMIT = 1000        # template: arrays up to this many values are shown inline, larger go to .npy


def _sid(a: Assignment, student: Optional[str]) -> Optional[str]:
    return student or (SAMPLE_STUDENT if a.has_variants else None)


def check_assignment(a: Assignment, student: Optional[str] = None) -> dict:
    """Compute every reference answer of one variant; flag those that cannot be graded."""
    sid = _sid(a, student)
    ref = Reference(a, a.variant(sid))
    out = []
    for i, q in enumerate(a.questions):
        problem = None
        try:
            e = ref.expected(q)
            if q.kind in FLOAT_KINDS and a.setting(q, "nonfinite") == "reject" and \
                    not np.all(np.isfinite(np.asarray(e, dtype=np.float64))):
                problem = "the reference answer is not finite (NaN/Inf); use nonfinite: match or change the data"
        except CnnspecError as exc:
            problem = f"the reference answer cannot be computed: {exc}"
        out.append({"number": i + 1, "id": q.id, "kind": q.kind, "points": q.points, "visibility": q.visibility,
                    "depends_on": a.upstream.get(q.id, []), "ok": problem is None, "problem": problem})
    return {"assignment": a.name, "variant": ref.variant.key, "student_id": sid, "max_score": a.max_score,
            "questions": out}


# ---------------------------------------------------------------------------- template

_FORMS = {
    "output_shape": "a shape: a list of sizes",
    "param_count": "a whole number",
    "kernel_shape": "a shape: a list of sizes",
    "weight_shape": "a shape: a list of sizes",
    "prediction": "a list of class indices (from 0), one per sample",
    "loss": "a number",
}


def _form(q, a: Assignment) -> str:
    spec = a.specs[a.model_of[q.id]]
    layout = spec.input.layout
    letters = "[" + ", ".join(layout) + "]"
    if getattr(q, "index", None) is not None:
        return "a number"
    if q.kind in ("output_shape",):
        node = spec.graph.nodes[q.layer]
        return f"a shape, e.g. {letters} in the spec's {layout} layout" if len(node.shape) == 3 else \
            "a shape: a list of sizes"
    if q.kind == "kernel_shape":
        return "a shape: [kh, kw, depth]" if layout == "HWC" else "a shape: [depth, kh, kw]"
    if q.kind in _FORMS:
        return _FORMS[q.kind]
    if q.kind in ("activation", "output"):
        node = spec.graph.nodes[q.layer if q.kind == "activation" else spec.graph.output]
        return f"nested lists (batch first, then {'the ' + layout + ' layout' if len(node.shape) == 3 else 'features'})"
    if q.kind in ("bn_mean", "bn_var"):
        return "a list of numbers, one per channel"
    if q.kind == "gradient":
        return "nested lists shaped like the input batch" if q.param == "input" else \
            f"nested lists shaped like {q.param}"
    if q.kind == "param_after_steps":
        return f"nested lists shaped like {q.param}"
    return "numbers"


def _comment(text: str, indent: str = "# ") -> list[str]:
    return [(indent + line).rstrip() for line in text.splitlines()]


def _flow(value: Any) -> str:
    """A value as one line of YAML flow (numbers exact enough to score 100%)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        return _flow(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if np.isnan(v):
        return ".nan"
    if np.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    return repr(v)


def template(a: Assignment, student: Optional[str], out: Optional[Path]) -> tuple[str, dict[Path, np.ndarray]]:
    """The answers file a student fills in: questions, the student's data, the models - never an answer."""
    sid = _sid(a, student) if a.has_variants else student
    variant = a.variant(sid)
    files: dict[Path, np.ndarray] = {}
    lines = [f"# {a.title}", "#"]
    if a.file.description:
        lines += _comment(a.file.description.strip()) + ["#"]
    lines += [f"# Assignment {a.name}" + (f", due {a.file.due_date}" if a.file.due_date else "")
              + (f". This is the data of student {sid}: answers are graded against it." if a.has_variants else "."),
              "# Answer under each question: a number, [a, list], [[nested], [lists]], or the name of a .npy file",
              "# next to this file. Leave no answer empty. Grade it with: cnnspec grade ASSIGNMENT THIS_FILE", "#"]
    used = {n for r in a.refs.values() for n in (r.input, r.target, *r.weights.values()) if n}
    if variant.data:
        lines.append("# ---- data")
        for name, arr in variant.data.items():
            if name not in used:
                continue
            arr = np.asarray(arr)
            lines.append(f"# {name}: shape {list(arr.shape)}")
            if arr.size <= INLINE_DATA_LIMIT:
                lines += _comment(_pretty(arr), "#   ")
            else:
                if out is None:
                    path = Path(f"{name}.npy")
                else:
                    path = out.with_name(f"{out.stem}.{name}.npy")
                files[path] = arr
                lines.append(f"#   (in {path.name}: numpy.load('{path.name}'))")
        lines.append("#")
    lines.append("# ---- models")
    for name, ref in a.refs.items():
        spec = a.specs[name]
        roles = ", ".join(f"{k} {getattr(ref, k)}" for k in ("input", "target") if getattr(ref, k))
        where = ref.spec if isinstance(ref.spec, str) else "inline"
        lines.append(f"# {name}: {where}" + (f" ({roles})" if roles else "")
                     + ("" if ref.train else " - run in evaluation mode"))
        if ref.weights:
            lines.append("#   weights from the data: " + ", ".join(f"{p} = {d}" for p, d in ref.weights.items()))
        lines += _comment(_spec_text(spec, ref).rstrip(), "#   | ")
    lines.append("#")
    lines.append(f"student_id: {json.dumps(sid) if sid else ''}".rstrip())
    lines.append("")
    for i, q in enumerate(a.questions):
        extra = {"hidden": ", result hidden", "after_due_date": ", result shown after the due date"}.get(
            q.visibility, "")
        lines.append(f"# {i + 1}. {question_text(q, a)}")
        lines.append(f"#    {q.points:g} point{'s' if q.points != 1 else ''}{extra}; answer: {_form(q, a)}")
        lines.append(f"{q.id}:")
        lines.append("")
    return "\n".join(lines), files


def _pretty(arr: np.ndarray) -> str:
    return np.array2string(arr, separator=", ", max_line_width=100, threshold=INLINE_DATA_LIMIT + 1,
                           floatmode="maxprec")


def _spec_text(spec, ref) -> str:
    """The spec as data, without its comments (an instructor's comments may give answers away)."""
    data = spec.document.data if spec.document is not None else ref.spec
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


# ---------------------------------------------------------------------------- solution


def solution(a: Assignment, student: Optional[str]) -> tuple[Optional[str], dict[str, Any]]:
    sid = _sid(a, student)
    ref = Reference(a, a.variant(sid))
    return sid, ref.solution()


def solution_text(a: Assignment, student: Optional[str], as_json: bool = False) -> str:
    sid, sol = solution(a, student)
    if as_json:
        doc = {"student_id": sid} if sid else {}
        doc.update({k: (np.asarray(v).tolist() if not isinstance(v, list) else v) for k, v in sol.items()})
        return json.dumps(doc, indent=1) + "\n"
    lines = [f"# Solution of {a.name} (INSTRUCTOR DATA: includes hidden answers)"]
    if sid:
        lines.append(f"student_id: {json.dumps(sid)}")
    lines += [f"{k}: {_flow(v)}" for k, v in sol.items()]
    return "\n".join(lines) + "\n"


def solution_npz(a: Assignment, student: Optional[str]) -> bytes:
    sid, sol = solution(a, student)
    arrays = {k: np.asarray(v) for k, v in sol.items()}
    if sid:
        arrays["student_id"] = np.array(sid)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ---------------------------------------------------------------------------- Gradescope bundle

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
cd /autograder/source
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  apt-get update && apt-get install -y python3 python3-pip
fi
python3 -m pip install --upgrade pip
python3 -m pip install {install}
cnnspec assignment check "assignment/{assignment}"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grade /autograder/submission into results.json.
set -u
cd /autograder/source
mkdir -p /autograder/results
STUDENT=""
{student_block}
cnnspec grade "assignment/{assignment}" /autograder/submission --format gradescope \\
  -o /autograder/results/results.json ${{STUDENT:+--student "$STUDENT"}}
status=$?
if [ ! -s /autograder/results/results.json ]; then
  printf '{{"score": 0, "output": "The autograder could not run (exit %s); please tell your instructor."}}\\n' \\
    "$status" > /autograder/results/results.json
fi
exit 0
"""

STUDENT_BLOCK = """# Per-student data: the student is who Gradescope says submitted (sid, else email), not what the file claims.
STUDENT=$(python3 -c 'import json
try:
    u = (json.load(open("/autograder/submission_metadata.json")).get("users") or [{}])[0]
    print(u.get("sid") or u.get("email") or "")
except Exception:
    print("")')"""


def _spec_files(spec_data: Any, spec_dir: Path, prefix: str) -> tuple[Any, dict[str, Path]]:
    """A spec's data with its weight paths renamed to `prefix`-based names, and {new name: file} to bundle."""
    weights = spec_data.get("weights") if isinstance(spec_data, dict) else None
    files: dict[str, Path] = {}
    if isinstance(weights, str):
        files[f"{prefix}.weights.npz"] = _path(weights, spec_dir)
        spec_data = {**spec_data, "weights": f"{Path(prefix).name}.weights.npz"}
    elif isinstance(weights, dict) and any(isinstance(v, str) for v in weights.values()):
        renamed = {}
        for param, value in weights.items():
            if isinstance(value, str):
                files[f"{prefix}.{param}.npy"] = _path(value, spec_dir)
                value = f"{Path(prefix).name}.{param}.npy"
            renamed[param] = value
        spec_data = {**spec_data, "weights": renamed}
    return spec_data, files


def _path(name: str, base: Path) -> Path:
    p = Path(name)
    return p if p.is_absolute() else base / p


_SAFE_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # a model name that is also a safe file name
BUNDLED_ASSIGNMENT = "assignment.yaml"  # the bundled assignment's own name: the scripts never quote a user's


class _Dumper(yaml.SafeDumper):
    """YAML as cnnspec reads it (1.2): a string that cnnspec would read as a number, a boolean or null
    ('1e5', '0o17', 'yes' is fine) is written quoted."""


def _str(dumper, value):
    from cnnspec import yaml_io
    try:
        plain = yaml_io.loads(f"v: {value}\n").data == {"v": value} if value and "\n" not in value else False
    except Exception:  # noqa: BLE001 - anything that does not read back as itself is quoted
        plain = False
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else "'")


_Dumper.add_representer(str, _str)


def _dump(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100, allow_unicode=True)


def bundled_assignment(a: Assignment) -> tuple[str, dict[str, Path]]:
    """The assignment as the bundle holds it: every file it names (spec files, their weights, .npy data) gets
    a fixed name inside the bundle's assignment/ folder, and the assignment and specs say those names. So
    absolute paths, symlinks and files outside the assignment's folder all work from wherever Gradescope
    unpacks the zip. Returns (assignment YAML text, {bundle-relative name: file on this machine})."""
    data = json.loads(json.dumps(a.doc.data))  # a deep copy of plain data
    files: dict[str, Path] = {}
    texts: dict[str, str] = {}
    ref_keys = [("model",)] if "model" in data else [("models", n) for n in data["models"]]
    for key in ref_keys:
        ref = data[key[0]] if len(key) == 1 else data[key[0]][key[1]]
        name = key[-1] if len(key) == 2 else "model"
        stem = name if _SAFE_STEM.fullmatch(str(name)) else f"model-{ref_keys.index(key) + 1}"
        spec = ref.get("spec")
        if isinstance(spec, str):
            src = _path(spec, a.base)
            spec_data, weight_files = _spec_files(a.specs[name].document.data, src.parent, f"specs/{stem}")
            if weight_files:  # the spec names files: write it with the new names (its comments are lost)
                texts[f"specs/{stem}.yaml"] = f"# {printable(src.name)}, as bundled by cnnspec\n" + _dump(spec_data)
            else:  # keep the instructor's text as it is
                files[f"specs/{stem}.yaml"] = src
            files.update(weight_files)
            ref["spec"] = f"specs/{stem}.yaml"
        elif isinstance(spec, dict):  # inline: its weight files are relative to the assignment
            ref["spec"], weight_files = _spec_files(spec, a.base, f"specs/{stem}")
            ref["spec"] = _relative_weights(ref["spec"], "specs/")
            files.update(weight_files)
    for dname, entry in a.entries.items():
        if entry.npy:
            files[f"data/{dname}.npy"] = _path(entry.npy, a.base)
            raw = data["data"][dname]
            data["data"][dname] = {**raw, "npy": f"data/{dname}.npy"} if isinstance(raw, dict) else f"data/{dname}.npy"
    header = f"# {printable(a.path.name if a.path else a.name)}, as bundled by cnnspec (paths renamed into the bundle)\n"
    text = header + _dump(data)
    return text, {**files, **{k: v for k, v in texts.items()}}


def _relative_weights(spec_data: Any, folder: str) -> Any:
    """An inline spec's renamed weight files live in `folder` (relative to the assignment)."""
    w = spec_data.get("weights") if isinstance(spec_data, dict) else None
    if isinstance(w, str):
        return {**spec_data, "weights": folder + w}
    if isinstance(w, dict):
        return {**spec_data, "weights": {k: folder + v if isinstance(v, str) else v for k, v in w.items()}}
    return spec_data


def _source_tree() -> Optional[Path]:
    root = Path(cnnspec.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "grader" / "__init__.py").is_file():
        return root
    return None


def installed_wheel() -> tuple[str, bytes]:
    """A wheel of the installed cnnspec, re-packed from the files pip recorded (for a bundle made after
    `pip install .`, where there is no source tree and this version may not be on PyPI)."""
    import base64
    import hashlib
    from importlib import metadata

    try:
        dist = metadata.distribution("cnnspec")
    except metadata.PackageNotFoundError:
        raise DataError("cnnspec is not installed as a package: give --wheel WHEEL (build one with 'pip wheel .' "
                        "in a checkout) or --from-pypi") from None
    version = dist.version
    info = f"cnnspec-{version}.dist-info"
    members: dict[str, bytes] = {}
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if not parts or parts[0] == ".." or "__pycache__" in parts or str(f).endswith((".pyc", ".pyo")):
            continue
        if parts[0].endswith(".dist-info") and parts[-1] in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
            continue
        name = "/".join((info,) + parts[1:]) if parts[0].endswith(".dist-info") else "/".join(parts)
        members[name] = Path(dist.locate_file(f)).read_bytes()
    if not any(n.startswith("grader/") for n in members) or f"{info}/METADATA" not in members:
        raise DataError("the installed cnnspec is incomplete (no grader package or METADATA): give --wheel WHEEL")
    members.setdefault(f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: cnnspec\nRoot-Is-Purelib: true\n"
                                        b"Tag: py3-none-any\n")
    record = []
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
        zf.writestr(zipfile.ZipInfo(f"{info}/RECORD", date_time=(2024, 1, 1, 0, 0, 0)), "\n".join(record) + "\n")
    return f"cnnspec-{version}-py3-none-any.whl", buf.getvalue()


def bundle(a: Assignment, wheel: Optional[str] = None, from_pypi: bool = False) -> tuple[bytes, list[str]]:
    """A Gradescope autograder zip: setup.sh, run_autograder, assignment/..., and cnnspec itself (its source
    tree, --wheel, the installed package re-packed as a wheel, or --from-pypi)."""
    from cnnspec.files import read_input

    if a.path is None:
        raise DataError("bundle needs an assignment file (not text)")
    notes: list[str] = []
    text, files = bundled_assignment(a)
    rel = BUNDLED_ASSIGNMENT
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, data: bytes, executable: bool = False):
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)

        add(f"assignment/{rel}", text.encode("utf-8"))
        for name, f in sorted(files.items()):
            data = f.encode("utf-8") if isinstance(f, str) else read_input(f, "bundled", 2 * 1024**3)
            add(f"assignment/{name}", data)
        if wheel:
            w = Path(wheel)
            if w.suffix != ".whl":
                raise DataError(f"--wheel {wheel}: not a .whl file")
            add(f"dist/{w.name}", read_input(w, "wheel", 2 * 1024**3))
            install = shlex.quote(f"./dist/{w.name}")
        elif from_pypi:
            install = shlex.quote(f"cnnspec=={cnnspec.__version__}")
            notes.append(f"setup.sh installs cnnspec=={cnnspec.__version__} from PyPI: make sure that release exists "
                         "there, or bundle this installation (leave out --from-pypi)")
        else:
            src = _source_tree()
            if src is None:
                name, data = installed_wheel()
                add(f"dist/{name}", data)
                install = shlex.quote(f"./dist/{name}")
                notes.append(f"bundled the installed cnnspec as dist/{name}")
            else:
                for p in sorted(src.iterdir()):
                    if p.is_file() and (p.name in ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in")
                                        or p.name.upper().startswith(("README", "LICENSE"))):
                        add(f"cnnspec-src/{p.name}", p.read_bytes())
                for pkg in ("cnnspec", "grader"):
                    for p in sorted((src / pkg).rglob("*")):
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"):
                            add(f"cnnspec-src/{p.relative_to(src).as_posix()}", p.read_bytes())
                install = "./cnnspec-src"
        add("setup.sh", SETUP_SH.format(install=install, assignment=rel).encode(), executable=True)
        add("run_autograder", RUN_AUTOGRADER.format(
            assignment=rel, student_block=STUDENT_BLOCK if a.has_variants else "").encode(), executable=True)
    return buf.getvalue(), notes
