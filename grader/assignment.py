"""Assignments: the YAML file an instructor writes, validated with file:line:col errors, and per-student data.

An assignment names one or more models (a spec path relative to the assignment, or an inline spec), the
data the questions are about (inline values, .npy paths, seeded random tensors) and the questions. See
docs/grading.md for the format. No NumPy engine work happens here; reference.py runs the models.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import cnnspec
from cnnspec import arrays, yaml_io
from cnnspec.errors import CnnspecError, DataError, Problem, SpecError
from cnnspec.schema import INPUT_NAME, Vocabulary, describe_value, did_you_mean, lookup
from cnnspec.schema import problems_from_validation as schema_problems

FORMAT_VERSION = 1
ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*$"
RESERVED_IDS = ("student_id",)
MAX_DATA_ELEMENTS = 10_000_000
MAX_SUGGESTIONS = 100          # "did you mean" for at most this many unknown names per assignment file

Visibility = Literal["visible", "hidden", "after_due_date"]
NonFinite = Literal["reject", "match"]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Tol = Annotated[float, Field(ge=0.0)]
HintText = Annotated[str, Field(min_length=1, max_length=2000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Grading(_Model):
    """Assignment-wide defaults; every question may override them."""

    rtol: Tol = Field(1e-3, description="relative tolerance of float answers: |a - e| <= atol + rtol*|e|")
    atol: Tol = Field(1e-6, description="absolute tolerance of float answers")
    carry_forward: Unit = Field(0.5, description="fraction of the points for an answer that is wrong, but right "
                                "for the student's own (wrong) upstream answers")
    nonfinite: NonFinite = Field("reject", description="reject: NaN/Inf answers are wrong; match: NaN matches NaN "
                                 "and Inf matches Inf of the same sign")
    partial_credit: bool = Field(False, description="tensor answers earn points * fraction of elements within "
                                 "tolerance")


class DataEntry(_Model):
    """One named array: exactly one of value, npy, random."""

    value: Optional[Any] = Field(None, description="a number or nested lists of numbers")
    npy: Optional[str] = Field(None, description="path to a .npy file, relative to the assignment")
    random: Optional[Literal["normal", "uniform", "integers"]] = None
    shape: Optional[list[Annotated[int, Field(ge=1)]]] = Field(None, description="shape of random data")
    mean: float = 0.0
    std: Annotated[float, Field(gt=0.0)] = 1.0
    low: Optional[float] = Field(None, description="uniform: lower bound; integers: smallest value")
    high: Optional[float] = Field(None, description="uniform: upper bound; integers: largest value (inclusive)")
    decimals: Optional[Annotated[int, Field(ge=0, le=12)]] = Field(
        None, description="round random values to this many decimals (hand computation)")
    per_student: bool = Field(True, description="random data differs per student (derived from the assignment "
                              "seed and the student id)")

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("value", "npy", "random") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'value', 'npy' or 'random'"
                             + (f", got {' and '.join(given)}" if given else ""))
        if self.random is not None:
            if self.shape is None:
                raise ValueError("random data needs a 'shape'")
            if self.random in ("uniform", "integers"):
                low = 0.0 if self.low is None else self.low
                high = 1.0 if self.high is None else self.high
                if high < low:
                    raise ValueError(f"high ({high}) must be >= low ({low})")
                if self.random == "integers" and (self.low is None or self.high is None):
                    raise ValueError("random integers need 'low' and 'high' (both inclusive)")
        elif self.shape is not None or self.decimals is not None:
            raise ValueError("'shape' and 'decimals' are only for random data")
        return self


class ModelRef(_Model):
    spec: Any = Field(description="path to a spec (relative to the assignment) or an inline spec mapping")
    input: Optional[str] = Field(None, description="data name of the input batch (N, *input.shape)")
    target: Optional[str] = Field(None, description="data name of the loss target")
    train: bool = Field(True, description="forward in training mode (batch-norm batch statistics, dropout)")
    weights: dict[str, str] = Field(default_factory=dict, description="parameter name -> data name; overrides the "
                                    "spec's weights (per-student weights)")


class _Question(_Model):
    id: str = Field(pattern=ID_PATTERN)
    text: Optional[str] = None
    points: Annotated[float, Field(ge=0.0)] = 1.0
    visibility: Visibility = "visible"
    model: Optional[str] = Field(None, description="which model (needed when the assignment has several)")
    depends_on: Optional[list[str]] = Field(None, description="questions whose student answers this one is also "
                                            "graded against (error carried forward); [] turns it off")
    carry_forward: Optional[Unit] = None
    hints: Optional[dict[str, HintText]] = Field(None, description="diagnosis code -> a sentence added to that "
                                                 "diagnosis for this question (overrides the assignment's hints)")


class _Numeric(_Question):
    index: Optional[list[Annotated[int, Field(ge=0)]]] = Field(
        None, description="ask for one element, e.g. [0, 0] for w1 of fc.weight (batch index first for activations)")
    rtol: Optional[Tol] = None
    atol: Optional[Tol] = None
    nonfinite: Optional[NonFinite] = None
    partial_credit: Optional[bool] = None


class OutputShape(_Question):
    kind: Literal["output_shape"]
    layer: str


class ParamCount(_Question):
    kind: Literal["param_count"]
    layer: Optional[str] = Field(None, description="a layer, or none for the whole model")


class KernelShape(_Question):
    kind: Literal["kernel_shape"]
    layer: str


class WeightShape(_Question):
    kind: Literal["weight_shape"]
    param: str


class Activation(_Numeric):
    kind: Literal["activation"]
    layer: str


class BnMean(_Numeric):
    kind: Literal["bn_mean"]
    layer: str


class BnVar(_Numeric):
    kind: Literal["bn_var"]
    layer: str


class Output(_Numeric):
    kind: Literal["output"]


class Prediction(_Question):
    kind: Literal["prediction"]
    partial_credit: Optional[bool] = None


class Loss(_Numeric):
    kind: Literal["loss"]


class Gradient(_Numeric):
    kind: Literal["gradient"]
    param: str = Field(description="a parameter name (fc.weight) or 'input' for dloss/dx")


class ParamAfterSteps(_Numeric):
    kind: Literal["param_after_steps"]
    param: str
    steps: Annotated[int, Field(ge=1, le=1000)] = 1


QUESTION_CLASSES: dict[str, type[_Question]] = {
    cls.model_fields["kind"].annotation.__args__[0]: cls
    for cls in (OutputShape, ParamCount, KernelShape, WeightShape, Activation, BnMean, BnVar, Output, Prediction,
                Loss, Gradient, ParamAfterSteps)
}
KINDS = tuple(QUESTION_CLASSES)
Question = Annotated[Union[tuple(QUESTION_CLASSES.values())], Field(discriminator="kind")]
SHAPE_KINDS = ("output_shape", "param_count", "kernel_shape", "weight_shape")
FLOAT_KINDS = ("activation", "bn_mean", "bn_var", "output", "loss", "gradient", "param_after_steps")
NEEDS_INPUT = ("activation", "bn_mean", "bn_var", "output", "prediction", "loss", "gradient", "param_after_steps")
NEEDS_TARGET = ("loss", "gradient", "param_after_steps")


class AssignmentFile(_Model):
    cnnspec_assignment: Literal[1] = Field(description="format version")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: Optional[str] = None
    description: Optional[str] = None
    due_date: Optional[str] = Field(None, description="ISO 8601; after it, after_due_date questions are shown")
    seed: Annotated[int, Field(ge=0)] = 0
    grading: Grading = Field(default_factory=Grading)
    model: Optional[ModelRef] = None
    models: Optional[dict[str, ModelRef]] = None
    data: dict[str, Any] = Field(default_factory=dict)
    hints: dict[str, HintText] = Field(default_factory=dict, description="diagnosis code -> a sentence added to "
                                       "that diagnosis wherever it is made, e.g. a reference to the course's notes")
    questions: list[Question] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_model_key(self):
        if (self.model is None) == (self.models is None):
            raise ValueError("give either 'model' (one model) or 'models' (a mapping of names to models)")
        if self.models is not None and not self.models:
            raise ValueError("'models' is empty")
        return self


# ---------------------------------------------------------------------------- pydantic errors -> problems

def _where(path: tuple, data: Any) -> str:
    """How messages name a place: "question 3 ('q_loss', loss): rtol" or "grading.rtol"."""
    if len(path) >= 2 and path[0] == "questions" and isinstance(path[1], int):
        q = lookup(data, path[:2])
        bits = [repr(q["id"])] if isinstance(q, dict) and isinstance(q.get("id"), str) else []
        if isinstance(q, dict) and isinstance(q.get("kind"), str):
            bits.append(q["kind"])
        who = f"question {path[1] + 1}" + (f" ({', '.join(bits)})" if bits else "")
        rest = ".".join(str(p) for p in path[2:])
        return who + (f": {rest}" if rest else "")
    text = ""
    for p in path:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or "assignment"


def _model_for(path: tuple, data: Any):
    if not path:
        return AssignmentFile
    if path == ("grading",):
        return Grading
    if path == ("model",) or (len(path) == 2 and path[0] == "models"):
        return ModelRef
    if len(path) == 2 and path[0] == "questions":
        kind = lookup(data, path + ("kind",))
        return QUESTION_CLASSES.get(kind) if isinstance(kind, str) else None
    if len(path) == 2 and path[0] == "data":
        return DataEntry
    return None


VOCABULARY = Vocabulary("assignment", _where, _model_for,
                        {"questions": (QUESTION_CLASSES, "kind", "question kind", "kinds")})


def problems_from_validation(exc: ValidationError, doc: yaml_io.Document, prefix: tuple = ()) -> list[Problem]:
    """pydantic's errors -> positioned problems, worded as for specs (cnnspec.schema), in assignment terms."""
    return schema_problems(exc, doc, VOCABULARY, prefix)


# ---------------------------------------------------------------------------- loaded assignment


@dataclass
class Variant:
    """The data one student sees. key is 'shared' when the assignment has no per-student data."""

    key: str
    student_id: Optional[str]
    data: dict[str, np.ndarray]


@dataclass
class Assignment:
    file: AssignmentFile
    doc: yaml_io.Document
    path: Optional[Path]
    specs: dict[str, Any]                                  # model name -> cnnspec Spec
    refs: dict[str, ModelRef]
    questions: list                                        # pydantic question models, in file order
    model_of: dict[str, str]                               # question id -> model name
    upstream: dict[str, list[str]]                         # question id -> question ids (carried forward)
    fixed_data: dict[str, np.ndarray] = field(default_factory=dict)
    entries: dict[str, DataEntry] = field(default_factory=dict)   # every data entry, as declared

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def title(self) -> str:
        return self.file.title or self.file.name

    @property
    def base(self) -> Path:
        return self.path.parent if self.path else Path(".")

    @property
    def has_variants(self) -> bool:
        return any(e.random and e.per_student for e in self.entries.values())

    def question(self, qid: str):
        for q in self.questions:
            if q.id == qid:
                return q
        raise KeyError(qid)

    @property
    def max_score(self) -> float:
        return float(sum(q.points for q in self.questions))

    def hint(self, q, code: str) -> Optional[str]:
        """The assignment's own words for a diagnosis (the question's `hints:`, else the assignment's)."""
        own = getattr(q, "hints", None) or {}
        return own.get(code, self.file.hints.get(code))

    def setting(self, q, name: str):
        """A question's grading setting, falling back to the assignment's `grading:` defaults."""
        value = getattr(q, name, None)
        return getattr(self.file.grading, name) if value is None else value

    def due_passed(self, now: Optional[datetime] = None) -> bool:
        if not self.file.due_date:
            return False
        due = parse_due_date(self.file.due_date)
        now = now or datetime.now(timezone.utc)
        return now >= due

    def variant_key(self, student_id: Optional[str]) -> str:
        if not self.has_variants:
            return "shared"
        if not student_id or not normalize_student_id(student_id):
            raise DataError(f"assignment '{self.name}' gives each student their own data: a student id is needed "
                            "(student_id: in the submission, or --student ID)")
        return "student:" + normalize_student_id(student_id)

    def variant(self, student_id: Optional[str] = None) -> Variant:
        """The data for one student (deterministic in the assignment seed and the student id)."""
        key = self.variant_key(student_id)
        sid = normalize_student_id(student_id) if student_id else None
        data = dict(self.fixed_data)
        for name, entry in self.entries.items():
            if entry.random:
                data[name] = _generate(entry, _seed_for(self.file.seed, sid if entry.per_student else None, name))
        return Variant(key, sid, data)


def normalize_student_id(student_id: str) -> str:
    """Ids are compared case-insensitively without surrounding spaces: ' S123 ' and 's123' are one student."""
    return str(student_id).strip().casefold()


def parse_due_date(text: str) -> datetime:
    due = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return due if due.tzinfo else due.replace(tzinfo=timezone.utc)


def _seed_for(seed: int, student_id: Optional[str], name: str) -> int:
    """sha256('cnnspec-grader/1', seed, student id, data name) -> a 64-bit seed for numpy's Generator."""
    text = f"cnnspec-grader/1\0{seed}\0{student_id or ''}\0{name}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


def _generate(entry: DataEntry, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = tuple(entry.shape)
    if entry.random == "normal":
        a = rng.normal(entry.mean, entry.std, size=shape)
    elif entry.random == "uniform":
        a = rng.uniform(0.0 if entry.low is None else entry.low, 1.0 if entry.high is None else entry.high,
                        size=shape)
    else:
        return rng.integers(int(entry.low), int(entry.high), size=shape, endpoint=True).astype(np.int64)
    if entry.decimals is not None:
        a = np.round(a, entry.decimals)
        a[a == 0] = 0.0  # no -0.0 in templates
    return a


def inline_array(value: Any, label: str) -> np.ndarray:
    """A number or rectangular nested lists of numbers -> ndarray (int64 or float64); DataError otherwise."""
    def bad_leaf(v):
        return isinstance(v, bool) or not isinstance(v, (int, float, list))

    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif bad_leaf(v):
            raise DataError(f"{label}: expected numbers, got {describe_value(v)}")
    try:
        a = np.array(value)
    except ValueError:
        raise DataError(f"{label}: nested lists have unequal lengths; an array must be rectangular") from None
    if a.dtype == object or a.dtype.kind not in "fiu":
        raise DataError(f"{label}: nested lists have unequal lengths; an array must be rectangular")
    return a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float64)


# ---------------------------------------------------------------------------- loading


def load_assignment(path) -> Assignment:
    """Read, validate and cross-check an assignment file; raise SpecError listing every problem."""
    return loads_assignment(yaml_io.read_text(path, "assignment"), str(path))


def loads_assignment(text: str, filename: str = "<string>") -> Assignment:
    doc = yaml_io.loads(text, filename)
    if not isinstance(doc.data, dict):
        raise doc.error([doc.problem("an assignment is a mapping with keys cnnspec_assignment, name, model(s), "
                                     f"data, questions; got {describe_value(doc.data)}")])
    if "cnnspec" in doc.data and "cnnspec_assignment" not in doc.data:
        raise doc.error([doc.problem("this looks like a model spec (it has 'cnnspec:'); an assignment starts with "
                                     "'cnnspec_assignment: 1' and names its model under 'model: {spec: ...}'",
                                     ("cnnspec",), key=True)])
    try:
        parsed = AssignmentFile.model_validate(doc.data)
    except ValidationError as exc:
        raise doc.error(problems_from_validation(exc, doc)) from None
    return _Loader(parsed, doc, Path(filename) if filename != "<string>" else None).run()


class _Loader:
    def __init__(self, parsed: AssignmentFile, doc: yaml_io.Document, path: Optional[Path]):
        self.f, self.doc, self.path = parsed, doc, path
        self.base = path.parent if path else Path(".")
        self.problems: list[Problem] = []
        self.suggestions = 0

    def suggest(self, word, choices) -> str:
        """did_you_mean for the first MAX_SUGGESTIONS unknown names of the file; "" after (bounded work)."""
        self.suggestions += 1
        return did_you_mean(word, choices) if self.suggestions <= MAX_SUGGESTIONS else ""

    def problem(self, msg: str, path: tuple, key: bool = False):
        self.problems.append(self.doc.problem(msg, path, key))

    def fail(self):
        if self.problems:
            raise self.doc.error(self.problems)

    def run(self) -> Assignment:
        f = self.f
        if f.due_date is not None:
            try:
                parse_due_date(f.due_date)
            except ValueError:
                self.problem(f"due_date: expected an ISO 8601 date like 2025-01-31 or 2025-01-31T23:59:00+01:00, "
                             f"got {f.due_date!r}", ("due_date",))
        refs = {"model": f.model} if f.model is not None else dict(f.models)
        self.refs = refs
        ref_paths = {"model": ("model",)} if f.model is not None else {n: ("models", n) for n in refs}
        specs = {}
        for name, ref in refs.items():
            spec = self.load_spec(ref.spec, ref_paths[name] + ("spec",))
            if spec is not None:
                specs[name] = spec
        entries, fixed = self.load_data()
        self.entries, self.fixed = entries, fixed
        for name, ref in refs.items():
            where = ref_paths[name]
            for key in ("input", "target"):
                dname = getattr(ref, key)
                if dname is not None and dname not in entries:
                    self.problem(f"{key}: unknown data '{dname}'{self.suggest(dname, entries)} "
                                 f"(data: {', '.join(entries) or 'none'})", where + (key,))
            for pname, dname in ref.weights.items():
                if dname not in entries:
                    self.problem(f"weights: unknown data '{dname}'{self.suggest(dname, entries)}",
                                 where + ("weights", pname))
                if name in specs:
                    model_params = self.param_names(specs[name], buffers=True)
                    if pname not in model_params:
                        self.problem(f"weights: model '{name}' has no parameter '{pname}'"
                                     f"{self.suggest(pname, model_params)} (parameters: {', '.join(model_params)})",
                                     where + ("weights", pname), key=True)
            if name in specs and ref.input is not None and ref.input in entries:
                self.check_input_shape(specs[name], entries[ref.input], fixed.get(ref.input), where + ("input",))
        model_of = self.check_questions(refs, specs, ref_paths)
        self.check_hints()
        self.fail()
        upstream = self.resolve_upstream(specs, model_of)
        self.fail()
        return Assignment(f, self.doc, self.path, specs, refs, list(f.questions), model_of, upstream, fixed, entries)

    # --- models
    def load_spec(self, value: Any, where: tuple):
        if isinstance(value, str):
            p = Path(value)
            p = p if p.is_absolute() else self.base / p
            if not p.exists():
                self.problem(f"model spec file not found: {value} (looked for {p})", where)
                return None
            try:
                return cnnspec.load_spec(p)
            except SpecError as exc:
                self.problem(f"model spec {value} is invalid:\n{exc}", where)
                return None
        if isinstance(value, dict):
            # Validate the inline spec with positions in this assignment file.
            sub = self.doc.sub(where)
            from cnnspec.graph import build_graph
            from cnnspec.schema import validate
            try:
                spec = validate(sub)
                spec._graph = build_graph(spec)
                return spec
            except SpecError as exc:
                self.problems.extend(exc.problems)
                return None
        self.problem(f"spec: expected a path to a spec file or an inline spec mapping, got {describe_value(value)}",
                     where)
        return None

    @staticmethod
    def param_names(spec, buffers: bool = False) -> list[str]:
        names = []
        for node in spec.graph.nodes.values():
            names += [f"{node.name}.{k}" for k in node.params]
            if buffers:
                names += [f"{node.name}.{k}" for k in node.buffers]
        return names

    def check_input_shape(self, spec, entry: DataEntry, fixed: Optional[np.ndarray], where: tuple):
        shape = tuple(entry.shape) if entry.random else (fixed.shape if fixed is not None else None)
        want = tuple(spec.input.shape)
        if shape is not None and (len(shape) != len(want) + 1 or shape[1:] != want):
            hint = " (add a batch dimension: [[...]])" if shape == want else ""
            self.problem(f"input data has shape {list(shape)}; the model expects [N, {', '.join(map(str, want))}] "
                         f"({spec.input.layout if len(want) == 3 else 'features'} layout, batch first){hint}", where)

    # --- data
    def load_data(self) -> tuple[dict[str, DataEntry], dict[str, np.ndarray]]:
        entries: dict[str, DataEntry] = {}
        fixed: dict[str, np.ndarray] = {}
        for name, raw in self.f.data.items():
            where = ("data", name)
            if not isinstance(name, str) or not _valid_id(name):
                self.problem(f"data name {name!r} must match {ID_PATTERN}", where, key=True)
                continue
            if isinstance(raw, dict):
                try:
                    entry = DataEntry.model_validate(raw)
                except ValidationError as exc:
                    self.problems.extend(problems_from_validation(exc, self.doc, where))
                    continue
            elif isinstance(raw, str):
                entry = DataEntry(npy=raw)
            else:
                entry = DataEntry(value=raw)
            try:
                if entry.value is not None:
                    fixed[name] = inline_array(entry.value, f"data '{name}'")
                elif entry.npy is not None:
                    p = Path(entry.npy)
                    fixed[name] = arrays.load_npy(p if p.is_absolute() else self.base / p, "data")
                elif entry.shape is not None and int(np.prod(entry.shape)) > MAX_DATA_ELEMENTS:
                    raise DataError(f"data '{name}': {int(np.prod(entry.shape)):,} values; the limit is "
                                    f"{MAX_DATA_ELEMENTS:,}")
            except DataError as exc:
                self.problem(str(exc), where)
                continue
            if name in fixed and fixed[name].size > MAX_DATA_ELEMENTS:
                self.problem(f"data '{name}': {fixed[name].size:,} values; the limit is {MAX_DATA_ELEMENTS:,}",
                             where)
                continue
            entries[name] = entry
        self.check_data_memory(entries, fixed)
        return entries, fixed

    def check_data_memory(self, entries: dict[str, DataEntry], fixed: dict[str, np.ndarray]) -> None:
        """All data entries of one variant together (as float64) within the memory limit: each entry is bounded
        on its own, but twenty of them (used by no question or not) could fill the machine."""
        from cnnspec import limits

        values = sum(int(np.prod(e.shape)) for e in entries.values() if e.random and e.shape is not None)
        values += sum(a.size for a in fixed.values())
        limit = limits.resolve(None)
        if 8 * values > limit:
            self.problem(f"data: the entries hold {values:,} values together ({limits.fmt(8 * values)} as float64); "
                         f"the memory limit is {limits.limit_text(limit)} (raise it with {limits.ENV_VAR})", ("data",))

    # --- questions
    def check_questions(self, refs, specs, ref_paths) -> dict[str, str]:
        model_of: dict[str, str] = {}
        first_at: dict[str, int] = {}
        for i, q in enumerate(self.f.questions):
            where = ("questions", i)
            if q.id in RESERVED_IDS:
                self.problem(f"question id '{q.id}' is reserved (submissions use it for the student id)",
                             where + ("id",))
            if q.id in first_at:
                self.problem(f"duplicate question id '{q.id}' (first used by question {first_at[q.id] + 1}); ids "
                             "must be unique", where + ("id",))
                continue
            first_at[q.id] = i
            if q.model is None:
                if len(refs) != 1:
                    self.problem(f"question '{q.id}': say which model it is about (model: one of "
                                 f"{', '.join(refs)})", where, key=False)
                    continue
                mname = next(iter(refs))
            else:
                mname = q.model
                if mname not in refs:
                    self.problem(f"unknown model '{mname}'{self.suggest(mname, refs)} (models: {', '.join(refs)})",
                                 where + ("model",))
                    continue
            model_of[q.id] = mname
            spec = specs.get(mname)
            if spec is None:
                continue  # its problem is already reported
            self.check_target(q, spec, refs[mname], where, mname, ref_paths[mname])
        ids = set(first_at)
        for i, q in enumerate(self.f.questions):
            for j, dep in enumerate(q.depends_on or []):
                if dep == q.id:
                    self.problem(f"question '{q.id}' cannot depend on itself", ("questions", i, "depends_on", j))
                elif dep not in ids:
                    self.problem(f"depends_on: unknown question '{dep}'{self.suggest(dep, ids)}",
                                 ("questions", i, "depends_on", j))
        return model_of

    def check_hints(self):
        """`hints:` keys are diagnosis codes: known ones (with "did you mean"), and for a question, codes its kind
        can be diagnosed with."""
        from .diagnose import CODES
        every = sorted({c for codes in CODES.values() for c in codes})
        for code in self.f.hints:
            if code not in every:
                self.problem(f"hints: unknown diagnosis code '{code}'{self.suggest(code, every)} (the codes are "
                             "listed in docs/grading.md)", ("hints", code), key=True)
        for i, q in enumerate(self.f.questions):
            own = CODES.get(q.kind, ())
            where = _where(("questions", i, "hints"), self.doc.data)
            for code in q.hints or {}:
                if code in own:
                    continue
                if code in every:
                    msg = (f"{where}: '{code}' is not a diagnosis of {q.kind} questions (their codes: "
                           f"{', '.join(own) or 'none'})")
                else:
                    msg = (f"{where}: unknown diagnosis code '{code}'{self.suggest(code, own or every)} ({q.kind} "
                           f"questions have: {', '.join(own) or 'none'})")
                self.problem(msg, ("questions", i, "hints", code), key=True)

    def check_target(self, q, spec, ref: ModelRef, where, mname, ref_where):
        graph = spec.graph
        nodes = graph.nodes
        layer = getattr(q, "layer", None)
        if layer is not None and layer not in nodes:
            self.problem(f"model '{mname}' has no layer '{layer}'{self.suggest(layer, nodes)} (layers: "
                         f"{', '.join(nodes)})", where + ("layer",))
            return
        if q.kind == "kernel_shape" and nodes[layer].type != "conv2d":
            self.problem(f"kernel_shape is about conv2d layers; '{layer}' is {nodes[layer].type} (ask weight_shape "
                         "for other parameters)", where + ("layer",))
        if q.kind in ("bn_mean", "bn_var") and nodes[layer].type != "batchnorm":
            self.problem(f"{q.kind} is about batchnorm layers; '{layer}' is {nodes[layer].type}", where + ("layer",))
        param = getattr(q, "param", None)
        if param is not None:
            names = self.param_names(spec, buffers=q.kind == "weight_shape")
            if q.kind == "gradient":
                names = names + [INPUT_NAME]
            if param not in names:
                self.problem(f"model '{mname}' has no parameter '{param}'{self.suggest(param, names)} (parameters: "
                             f"{', '.join(names) or 'none'})", where + ("param",))
        if q.kind in NEEDS_INPUT and ref.input is None:
            self.problem(f"{q.kind} needs data: give model '{mname}' an 'input:' (a data name)", where + ("kind",))
        if q.kind in NEEDS_TARGET:
            if ref.target is None:
                self.problem(f"{q.kind} needs a loss target: give model '{mname}' a 'target:' (a data name)",
                             where + ("kind",))
            if spec.loss is None:
                self.problem(f"{q.kind} needs a loss: model '{mname}' has no 'loss:' in its spec",
                             where + ("kind",))
        if q.kind == "prediction" and len(nodes[graph.output].shape) != 1:
            self.problem(f"prediction (argmax over classes) needs a [classes] output; model '{mname}' outputs "
                         f"{list(graph.declared(nodes[graph.output].shape))}", where + ("kind",))
        index = getattr(q, "index", None)
        if index is not None:
            full = self.full_shape(q, spec, ref)
            if full is not None and (len(index) != len(full) or any(i >= d for i, d in zip(index, full))):
                self.problem(f"index {index} does not fit the {q.kind} of shape {list(full)} (indices count from 0)",
                             where + ("index",))

    def full_shape(self, q, spec, ref: ModelRef) -> Optional[tuple]:
        """The shape of the whole quantity a numeric question asks for (before `index`), when known."""
        g = spec.graph
        n = None
        if ref.input is not None and ref.input in self.entries:
            e = self.entries[ref.input]
            shape = tuple(e.shape) if e.random else self.fixed[ref.input].shape if ref.input in self.fixed else None
            n = shape[0] if shape else None
        k = q.kind
        if k == "loss":
            return ()
        if k in ("bn_mean", "bn_var"):
            return (g.nodes[q.layer].shape[0],)
        if k in ("gradient", "param_after_steps"):
            if q.param == INPUT_NAME:
                return None if n is None else (n, *spec.input.shape)
            layer, local = q.param.rsplit(".", 1)
            return tuple(g.nodes[layer].params[local])
        layer = q.layer if k == "activation" else g.output
        return None if n is None else (n, *g.declared(g.nodes[layer].shape))

    def resolve_upstream(self, specs, model_of) -> dict[str, list[str]]:
        """Which earlier answers each question is carried forward from: depends_on, or inferred."""
        qs = [q for q in self.f.questions if q.id in model_of]
        upstream: dict[str, list[str]] = {}
        for q in qs:
            if q.depends_on is not None:
                upstream[q.id] = list(q.depends_on)
                continue
            spec = specs.get(model_of[q.id])
            upstream[q.id] = (_infer_upstream(q, qs, model_of, spec, self.refs[model_of[q.id]].train)
                              if spec is not None else [])
        # No cycles: a depth-first walk over the dependency graph.
        state: dict[str, int] = {}
        order = {q.id: i for i, q in enumerate(self.f.questions)}

        def visit(qid, trail):
            if state.get(qid) == 2:
                return
            if state.get(qid) == 1:
                cycle = trail[trail.index(qid):] + [qid]
                self.problem(f"depends_on forms a cycle: {' -> '.join(cycle)}", ("questions", order[qid],
                                                                                 "depends_on"))
                return
            state[qid] = 1
            for dep in upstream.get(qid, []):
                visit(dep, trail + [qid])
            state[qid] = 2

        for q in qs:
            visit(q.id, [])
        return upstream


def _valid_id(name: str) -> bool:
    import re
    return re.match(ID_PATTERN, name) is not None


# Layers carried-forward credit follows the graph through (reference.layer_chain recomputes): their output keeps the
# shape of their input and, up to an elementwise function or a per-channel affine map, its meaning. A shape
# question after them depends on the shape question before them (conv -> relu -> pool), a value question on
# the values before them. Flatten keeps the values (a reshape), so values and parameter counts see through it.
SHAPE_KEEPING = ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "batchnorm", "dropout")


def _infer_upstream(q, qs, model_of, spec, train: bool = True) -> list[str]:
    """The classic chains: shape <- input's shape, activation <- input's activation, loss/prediction/gradient
    <- output, update <- gradient, bn_var <- bn_mean (and the batch-norm input), a layer's parameter count <-
    the shape of its input. "Input" looks back through layers that keep the shape (SHAPE_KEEPING; flatten too
    for values and parameter counts) to the nearest layer a question asks about."""
    graph = spec.graph
    same = [o for o in qs if model_of[o.id] == model_of[q.id] and o.id != q.id]

    def find(kind, **attrs):
        for o in same:
            if o.kind == kind and all(getattr(o, k, None) == v for k, v in attrs.items()):
                return [o.id]
        return []

    def input_of(layer):
        node = graph.nodes[layer]
        return node.inputs[0] if len(node.inputs) == 1 and node.inputs[0] != INPUT_NAME else None

    def nearest(kind, layer, through):
        """The `kind` question on the layer feeding `layer`, looking back through layers of types `through`."""
        src = input_of(layer)
        while src is not None:
            found = find(kind, layer=src)
            if found:
                return found
            if graph.nodes[src].type not in through:
                return []
            src = input_of(src)
        return []

    # Dropout in training mode draws a random mask: values cannot be recomputed through it.
    values_through = tuple(t for t in SHAPE_KEEPING if t != "dropout" or not train) + ("flatten",)
    if q.kind == "output_shape":
        return nearest("output_shape", q.layer, SHAPE_KEEPING)
    if q.kind == "param_count":
        if q.layer is None or not graph.nodes[q.layer].params:
            return []
        return nearest("output_shape", q.layer, SHAPE_KEEPING + ("flatten",))
    if q.kind in ("activation", "bn_mean"):
        return nearest("activation", q.layer, values_through)
    if q.kind == "bn_var":
        return find("bn_mean", layer=q.layer) + nearest("activation", q.layer, values_through)
    if q.kind == "output":
        return nearest("activation", graph.output, values_through)
    if q.kind in ("loss", "prediction", "gradient"):
        return find("output") or find("activation", layer=graph.output)
    if q.kind == "param_after_steps" and q.steps == 1:
        return find("gradient", param=q.param)
    return []


__all__ = ["Assignment", "AssignmentFile", "Variant", "load_assignment", "loads_assignment", "KINDS",
           "QUESTION_CLASSES", "SHAPE_KINDS", "FLOAT_KINDS", "CnnspecError"]
