"""Verify an ONNX export against the NumPy engine, layer by layer.

Seeded inputs go through the engine's forward (eval mode) and through the ONNX model, with every layer's
tensor added as an extra graph output (in a copy made for verification; the exported file is unchanged).
Which runtime checks what:

- a float64 model runs in onnx's reference evaluator at float64 tolerance, and a float32 copy of it runs in
  onnxruntime at float32 tolerance (onnxruntime's CPU provider has no float64 Conv);
- a float32 model runs in onnxruntime at float32 tolerance.

Every run is compared with the engine's forward in the model's own dtype (so the float32 copy of a float64
model is measured against float64 values). onnxruntime runs with graph optimisation off, so every node keeps
its layer's name and no fusion changes the arithmetic being checked.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .onnx_export import DEFAULT_OPSET, cast_model, live_layers, spec_sha256, to_onnx

REFERENCE = "onnx.reference"
ONNXRUNTIME = "onnxruntime"
# rtol, atol by dtype, applied per layer as max|onnx - engine| <= atol + rtol * max|engine|.
# float64: engine and runtimes differ only in summation order, ~1e-16 per op (the test suite's largest is
# 7e-16), so 1e-10 leaves room for deep or ill-conditioned models while a wrong convention is off by >1e-3.
# float32: weights and inputs rounded to float32 (6e-8) before sums of up to ~1e5 terms; the suite's
# largest is 5e-7, so 1e-4 is a wide margin that still catches every wrong convention we tried.
TOLERANCES = {"float64": (1e-10, 1e-12), "float32": (1e-4, 1e-5)}


@dataclass
class LayerCheck:
    """One layer's output from one runtime, compared with the engine's (both in the declared layout)."""

    layer: str
    type: str
    runtime: str
    dtype: str
    shape: list
    max_abs: float | None   # None when not compared (skipped, or shapes differ)
    max_rel: float | None   # max_abs / largest |expected| of the layer (0 when both are all zeros)
    ok: bool
    note: str = ""


@dataclass
class RuntimeRun:
    runtime: str
    dtype: str
    rtol: float
    atol: float
    ok: bool = True


@dataclass
class VerifyResult:
    spec: str
    onnx: str
    batch: int
    seed: int
    runs: list[RuntimeRun]
    layers: list[LayerCheck]
    ok: bool
    first_divergence: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain data for --json; non-finite numbers become None so the JSON is strict."""
        def clean(v):
            if isinstance(v, float) and not np.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v
        return {**clean(asdict(self)), "failure": self.failure}

    @property
    def failure(self) -> str | None:
        """A sentence naming the first diverging layer and how far off it is, or None when all agree."""
        if self.first_divergence is None:
            return None
        row = next(r for r in self.layers if r.layer == self.first_divergence and not r.ok)
        run = next(r for r in self.runs if r.runtime == row.runtime)
        why = row.note or (f"max abs error {row.max_abs:.3g} exceeds atol {run.atol:g} + rtol {run.rtol:g} * "
                           f"max |expected| (max rel error {row.max_rel:.3g})")
        return f"first divergence at layer '{row.layer}' ({row.type}), {row.runtime} {row.dtype}: {why}"


def verify_onnx(model, onnx_path_or_proto=None, *, batch: int = 2, rtol: float | None = None,
                atol: float | None = None, seed: int = 0, opset: int = DEFAULT_OPSET,
                label: str | None = None) -> VerifyResult:
    """Compare every layer of an ONNX model with the engine's forward pass (eval mode) on seeded inputs.

    onnx_path_or_proto: a .onnx path, a ModelProto, or None to export `model` now (at `opset`).
    rtol/atol: override the per-dtype defaults (TOLERANCES) for every comparison.
    label: how reports name the ONNX model (default: its path, or a placeholder).
    Runs model.forward(train=False), so model.activations afterwards hold this check's batch."""
    import onnx

    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise DataError(f"batch must be a positive integer, got {batch!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise DataError(f"{name} must be a finite number >= 0, got {value!r}")
    spec, graph = model.spec, model.graph
    notes: list[str] = []
    if onnx_path_or_proto is None:
        proto, label_default = to_onnx(model, opset), f"an export made now (opset {opset})"
    elif isinstance(onnx_path_or_proto, onnx.ModelProto):
        proto, label_default = onnx_path_or_proto, "the given ModelProto"
    else:
        label_default = str(onnx_path_or_proto)
        proto = load_onnx(onnx_path_or_proto)
        meta = {p.key: p.value for p in proto.metadata_props}
        if "cnnspec.spec_sha256" in meta and meta["cnnspec.spec_sha256"] != spec_sha256(spec):
            notes.append(f"{label or label_default} was exported from a different text of the spec "
                         "(its spec hash differs); comparing anyway")
    label = label or label_default
    file_dtype = _check_interface(proto, model, label)
    fixed = _dims(_graph_input(proto))[:1]
    if fixed and isinstance(fixed[0], int) and fixed[0] > 0 and fixed[0] != batch:
        notes.append(f"{label} has a fixed batch size of {fixed[0]}; verifying with batch {fixed[0]}")
        batch = fixed[0]

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec.input.shape)).astype(model.dtype)
    model.forward(x, train=False)
    expected = dict(model.activations)

    if file_dtype == "float64":
        plan = [(REFERENCE, "float64", proto), (ONNXRUNTIME, "float32", cast_model(proto, np.float32))]
    else:
        plan = [(ONNXRUNTIME, "float32", proto)]
    if file_dtype == "float64" and model.dtype == np.float32 and (rtol is None or atol is None):
        notes.append(f"the engine runs in float32 (the spec's dtype or --dtype), so {label}, a float64 model, is "
                     "compared at float32 tolerance; build the model in float64 (--dtype float64) for a "
                     "float64 check")
    layers = live_layers(graph)
    runs, rows = [], []
    for runtime, dtype, m in plan:
        # the engine's own precision bounds the comparison too: float32 engine values are float32-rounded
        r_tol, a_tol = TOLERANCES["float32" if model.dtype == np.float32 else dtype]
        run = RuntimeRun(runtime, dtype, r_tol if rtol is None else float(rtol),
                         a_tol if atol is None else float(atol))
        runs.append(run)
        names = _tensor_names(m, layers, graph.output)
        outputs = _run(runtime, _with_outputs(m, [n for n in names.values() if n]), x.astype(dtype), label)
        for node in layers:
            tensor = names[node.name]
            if tensor is None:
                rows.append(LayerCheck(node.name, node.type, runtime, dtype, list(graph.declared(node.shape)),
                                       None, None, True, "skipped: no tensor of this name in the model"))
                continue
            # cnnspec's exports keep intermediates in NCHW; only the graph output is in the declared layout
            nchw = graph.layout == "HWC" and len(node.shape) == 3 and node.name != graph.output
            rows.append(_compare(node, runtime, dtype, outputs[tensor], expected[node.name], run, nchw))
            run.ok &= rows[-1].ok
    order = {node.name: i for i, node in enumerate(layers)}
    rows.sort(key=lambda r: order[r.layer])  # stable: per layer, the runtimes in plan order
    first = next((r.layer for r in rows if not r.ok), None)
    return VerifyResult(spec.name, label, int(batch), int(seed), runs, rows, first is None, first, notes)


MAX_ONNX_BYTES = 2 * 1024**3  # protobuf's own limit


def load_onnx(path):
    """Read a .onnx file for verification; anything that is not a loadable ONNX model is a DataError."""
    import onnx

    from .files import read_input
    from .text import printable

    data = read_input(path, "ONNX", MAX_ONNX_BYTES)
    path = printable(str(path))
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # DecodeError, and a few private protobuf types for truncated input
        raise DataError(f"{path}: not an ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not proto.graph.node or not proto.opset_import:
        raise DataError(f"{path}: not an ONNX model (no graph nodes or no opset; is it an ONNX file?)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise DataError(f"{path}: not a valid ONNX model ({first})") from None
    return proto


def _dims(value_info) -> list:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _check_interface(proto, model, label: str) -> str:
    """The model's single input and first output must fit the spec; returns the file's float dtype."""
    from onnx import TensorProto

    spec, graph = model.spec, model.graph
    inputs = _graph_inputs(proto)
    want_out = graph.declared(graph.nodes[graph.output].shape)
    layout = f" ({graph.layout})" if len(spec.input.shape) == 3 else ""
    if len(inputs) != 1 or not proto.graph.output:
        raise DataError(f"{label}: has {len(inputs)} input(s) and {len(proto.graph.output)} output(s); a model of "
                        f"spec '{spec.name}' has one input (N, {_fmt(spec.input.shape)}){layout} and one output")
    types = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}
    problems = []
    for what, vi, want in (("input", inputs[0], spec.input.shape), ("output", proto.graph.output[0], want_out)):
        elem = vi.type.tensor_type.elem_type
        if elem not in types:
            problems.append(f"its {what} '{vi.name}' has element type "
                            f"{TensorProto.DataType.Name(elem) if elem else 'unknown'}, not float or double")
            continue
        dims = _dims(vi)
        if dims and (len(dims) != len(want) + 1 or any(isinstance(d, int) and d and d != w
                                                       for d, w in zip(dims[1:], want))):
            problems.append(f"its {what} '{vi.name}' has shape ({_fmt(dims)}), the spec's is (N, {_fmt(want)})"
                            + (layout if what == "input" else ""))
    if problems:
        raise DataError(f"{label}: does not match spec '{spec.name}': " + "; ".join(problems))
    in_type = types[inputs[0].type.tensor_type.elem_type]
    if in_type != types[proto.graph.output[0].type.tensor_type.elem_type]:
        raise DataError(f"{label}: input and output element types differ; expected both float or both double")
    return in_type


def _graph_inputs(proto) -> list:
    """The graph inputs that are not initializers (old IR versions list initializers as inputs too)."""
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def _graph_input(proto):
    return _graph_inputs(proto)[0]


def _fmt(dims) -> str:
    return ", ".join(str(d) for d in dims)


def _tensor_names(proto, layers, output: str) -> dict[str, str | None]:
    """Layer -> the model's tensor holding its output: a tensor of the layer's name (cnnspec's exports),
    and for the output layer the first graph output whatever its name."""
    produced = {o for n in proto.graph.node for o in n.output}
    names = {node.name: node.name if node.name in produced else None for node in layers}
    names[output] = proto.graph.output[0].name
    return names


def _with_outputs(proto, tensors: list[str]):
    """A copy of `proto` that also outputs `tensors` (a verification copy; shapes left to the runtime)."""
    from onnx import ModelProto, helper

    m = ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    elem = _graph_input(m).type.tensor_type.elem_type
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*m.graph.value_info, *m.graph.output)}
    for name in tensors:
        if name not in have:
            m.graph.output.append(helper.make_tensor_value_info(name, types.get(name, elem), None))
            have.add(name)
    return m


def _run(runtime: str, proto, x: np.ndarray, label: str) -> dict[str, np.ndarray]:
    names = [o.name for o in proto.graph.output]
    feed = {_graph_input(proto).name: x}
    try:
        if runtime == REFERENCE:
            from onnx.reference import ReferenceEvaluator
            values = ReferenceEvaluator(proto, new_ops=_reference_fixes(proto)).run(names, feed)
        else:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            opts.log_severity_level = 3
            session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            values = session.run(names, feed)
    except Exception as exc:  # a runtime refusing a model it was handed: report which and why
        text = str(exc).strip().splitlines()
        raise DataError(f"{label}: {runtime} ({x.dtype}) could not run the model: "
                        f"{(text[0] if text else type(exc).__name__)[:400]}") from None
    return dict(zip(names, values))


def _reference_fixes(proto) -> list:
    """Op implementations replacing the reference evaluator's where it departs from the ONNX spec.

    - BatchNormalization-9 (opsets 9-13) with one output is inference, but the evaluator fills in the momentum
      default and then computes training-mode batch statistics.
    - LRN: the evaluator loops over the batch instead of the channels (only the first N channels get their
      sums; onnx 1.23).
    - Gelu and HardSwish: the evaluator runs their function bodies with float32 constants and a float32 erf
      (errors of 1e-8 in float64 models); these compute the spec's formulas in the tensor's own precision."""
    from .onnx_fixes import reference_ops
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return reference_ops(opset)


def _compare(node, runtime, dtype, got, want, run: RuntimeRun, nchw: bool) -> LayerCheck:
    """got: the runtime's tensor (NCHW if `nchw`); want: the engine's activation in the declared layout."""
    got = np.asarray(got)
    want = np.asarray(want)
    shape = list(want.shape[1:])
    if nchw and got.ndim == 4:
        got = got.transpose(0, 2, 3, 1)
    if got.shape != want.shape:
        return LayerCheck(node.name, node.type, runtime, dtype, shape, None, None, False,
                          f"shape {list(got.shape)} from the model, the engine's is {list(want.shape)}")
    g, w = got.astype(np.float64), want.astype(np.float64)
    both_nan = np.isnan(g) & np.isnan(w)
    same_inf = np.isinf(w) & (g == w)
    with np.errstate(invalid="ignore"):  # inf - inf: handled by same_inf
        diff = np.where(both_nan | same_inf, 0.0, np.abs(g - w))
    bad_nan = bool(np.isnan(diff).any())  # a NaN (or an infinity) on one side only
    max_abs = float(diff[~np.isnan(diff)].max()) if diff.size and not bad_nan else (float("nan") if bad_nan else 0.0)
    finite = np.abs(w[np.isfinite(w)])
    scale = float(finite.max()) if finite.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    # Layer-scaled: the error is measured against the layer's largest value, not each element's own, because
    # float32 rounding errors are absolute at that scale (a value that cancels to ~0 keeps the error of its
    # parts, and batch norm divides every error by a possibly tiny std).
    ok = not bad_nan and max_abs <= run.atol + run.rtol * scale
    note = "NaN or infinity where the engine has a number (or the reverse)" if bad_nan else ""
    return LayerCheck(node.name, node.type, runtime, dtype, shape, max_abs, max_rel, ok, note)


__all__ = ["verify_onnx", "VerifyResult", "LayerCheck", "RuntimeRun", "TOLERANCES", "load_onnx"]
