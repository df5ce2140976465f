"""Shape inference: a validated Spec becomes a Graph of Nodes with resolved attributes and shapes.

Everything here is integer arithmetic on shapes (via shapes.py); nothing is allocated, so absurd sizes
are rejected before any array exists. Shapes are per sample and internal (CHW); `Graph.declared`
converts to the spec's layout for users. Problems are collected across independent layers and raised
together as one ShapeError, each with the layer's position in the YAML file.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from math import isfinite, prod
from pathlib import Path
from typing import Any

from . import limits, shapes
from .errors import Problem, ShapeError, SpecError
from .schema import INPUT_NAME, Spec, closest

# Per-sample limit on any one tensor (activation or parameter): 2**28 values is 2 GiB in float64.
# The whole model's parameters and memory have limits too, set by the memory limit (limits.py).
MAX_ELEMENTS = 2**28
MERGE_TYPES = ("add", "concat")

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Node:
    """One layer after inference. Shapes are per sample, internal layout (C, H, W) or (F,)."""

    index: int
    name: str
    type: str
    layer: Any                      # the pydantic layer model
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    shape: Shape
    attrs: dict                     # resolved attributes the ops use (see cnnspec/ops)
    params: dict[str, Shape]        # local name -> shape ("weight", "bias")
    buffers: dict[str, Shape]       # local name -> shape ("running_mean", ...)
    macs: int
    line: int | None

    @property
    def param_count(self) -> int:
        return sum(prod(s) for s in self.params.values())


@dataclass
class Graph:
    spec: Spec
    input_shape: Shape              # internal layout
    nodes: dict[str, Node] = field(default_factory=dict)   # declaration (= topological) order
    output: str = ""

    @property
    def layout(self) -> str:
        return self.spec.input.layout

    def declared(self, shape: Shape) -> Shape:
        """Internal (C, H, W) -> the spec's layout; 1-D shapes are the same in both."""
        if self.layout == "HWC" and len(shape) == 3:
            return (shape[1], shape[2], shape[0])
        return tuple(shape)

    def shape_of(self, name: str) -> Shape:
        return self.input_shape if name == INPUT_NAME else self.nodes[name].shape

    @property
    def param_count(self) -> int:
        return sum(n.param_count for n in self.nodes.values())

    @property
    def buffer_count(self) -> int:
        return sum(prod(s) for n in self.nodes.values() for s in n.buffers.values())


class _LayerProblem(Exception):
    """Raised by an inference rule; the builder adds the layer's name, type and position.

    `key`: the layer key the problem is about (the caret points at its value when the spec gives it)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _listing(names: list[str], limit: int = 12) -> str:
    """'a, b, c' - or, for long lists, the first and the last few: messages stay readable."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:2]) + f", ... ({len(names) - limit + 2} more), " + ", ".join(names[-(limit - 2):])


def _need_chw(ltype: str, shape: Shape, src: str, graph: Graph) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise _LayerProblem(f"{ltype} needs a 3-D input ({'[H, W, C]' if graph.layout == 'HWC' else '[C, H, W]'}), "
                            f"got {_fmt(graph.declared(shape))} from '{src}'")
    return shape  # type: ignore[return-value]


def _window_axis(axis: str, size: int, k: int, s: int, p0: int, p1: int, d: int, ceil: bool,
                 ctx: str) -> int:
    out = shapes.window_out(size, k, s, p0, p1, d, ceil)
    if out <= 0:
        eff = d * (k - 1) + 1
        raise _LayerProblem(f"kernel {axis} {k}{f' (dilated to {eff})' if d > 1 else ''} exceeds the padded input "
                            f"{axis} {size + p0 + p1} ({ctx}): output {axis} = "
                            f"{shapes.window_out_text(size, k, s, p0, p1, d, ceil).split(' = ', 1)[1]} < 1",
                            "kernel")
    return out


def _conv2d(layer, in_shapes, srcs, graph):
    c, h, w = _need_chw("conv2d", in_shapes[0], srcs[0], graph)
    kh, kw = _pair(layer.kernel)
    sh, sw = _pair(layer.stride)
    dh, dw = _pair(layer.dilation)
    g, f = layer.groups, layer.filters
    if c % g or f % g:
        bad = f"{c} % {g} = {c % g}" if c % g else f"{f} % {g} = {f % g}"
        raise _LayerProblem(f"groups {g} must divide both the input channels and the filters, got {c} channels "
                            f"(input {_fmt(graph.declared(in_shapes[0]))} from '{srcs[0]}') and {f} filters: {bad}",
                            "groups")
    if layer.padding == "same":
        if (sh, sw) != (1, 1):
            raise _LayerProblem(f"padding 'same' needs stride 1 (as in PyTorch), got stride {layer.stride}; "
                                "give the padding as numbers instead", "padding")
        (pt, pb), (pl, pr) = shapes.same_pads(kh, dh), shapes.same_pads(kw, dw)
    elif layer.padding == "valid":
        pt = pl = pb = pr = 0
    else:
        pt, pl = _pair(layer.padding)
        pb, pr = pt, pl
    if layer.padding_mode != "zeros":
        limit = {"reflect": lambda p, n: p < n, "replicate": lambda p, n: True, "circular": lambda p, n: p <= n}
        for p, n, axis in ((max(pt, pb), h, "height"), (max(pl, pr), w, "width")):
            if not limit[layer.padding_mode](p, n):
                raise _LayerProblem(f"padding {p} is too large for padding_mode '{layer.padding_mode}' on input "
                                    f"{axis} {n} ({'must be < input size' if layer.padding_mode == 'reflect' else 'must be <= input size'})",
                                    "padding")
    ctx = f"input {_fmt(graph.declared(in_shapes[0]))} from '{srcs[0]}'"
    oh = _window_axis("height", h, kh, sh, pt, pb, dh, False, ctx)
    ow = _window_axis("width", w, kw, sw, pl, pr, dw, False, ctx)
    params = {"weight": (f, c // g, kh, kw)}
    if layer.bias:
        params["bias"] = (f,)
    attrs = {"stride": (sh, sw), "pads": (pt, pl, pb, pr), "dilation": (dh, dw), "groups": g,
             "padding_mode": layer.padding_mode}
    out = (f, oh, ow)
    return out, attrs, params, {}, shapes.conv_macs(c, out, (kh, kw), g)


def _pool(layer, in_shapes, srcs, graph):
    c, h, w = _need_chw(layer.type, in_shapes[0], srcs[0], graph)
    kh, kw = _pair(layer.kernel)
    sh, sw = _pair(layer.stride if layer.stride is not None else layer.kernel)
    ph, pw = _pair(layer.padding)
    dh, dw = _pair(getattr(layer, "dilation", 1))
    for p, k, axis in ((ph, kh, "height"), (pw, kw, "width")):
        if p > k // 2:  # PyTorch: "pad should be at most half of effective kernel size" checks kernel // 2
            raise _LayerProblem(f"padding {p} must be at most half the kernel {axis}: {p} > {k} // 2 = {k // 2} "
                                "(PyTorch's rule; a window would see only padding)", "padding")
    ctx = f"input {_fmt(graph.declared(in_shapes[0]))} from '{srcs[0]}'"
    oh = _window_axis("height", h, kh, sh, ph, ph, dh, layer.ceil_mode, ctx)
    ow = _window_axis("width", w, kw, sw, pw, pw, dw, layer.ceil_mode, ctx)
    attrs = {"kernel": (kh, kw), "stride": (sh, sw), "pads": (ph, pw, ph, pw), "ceil_mode": layer.ceil_mode}
    if layer.type == "maxpool":
        attrs["dilation"] = (dh, dw)
    else:
        attrs["count_include_pad"] = layer.count_include_pad
    return (c, oh, ow), attrs, {}, {}, 0


def _global_avgpool(layer, in_shapes, srcs, graph):
    c, _, _ = _need_chw("global_avgpool", in_shapes[0], srcs[0], graph)
    return (c, 1, 1), {}, {}, {}, 0


def _batchnorm(layer, in_shapes, srcs, graph):
    shape = in_shapes[0]
    if len(shape) not in (1, 3):
        raise _LayerProblem(f"batchnorm needs a [C, H, W] or [features] input, got {_fmt(shape)}")
    c = shape[0]
    attrs = {"eps": layer.eps, "momentum": layer.momentum}
    if not layer.affine:
        attrs["affine"] = False  # no weight and bias (the ops see it from the params too)
    params = {"weight": (c,), "bias": (c,)} if layer.affine else {}
    return shape, attrs, params, {"running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}, 0


def _elementwise(layer, in_shapes, srcs, graph):
    attrs = {"slope": layer.slope} if layer.type == "leaky_relu" else {}
    if layer.type == "dropout":
        attrs = {"rate": layer.rate}
    return in_shapes[0], attrs, {}, {}, 0


def _flatten(layer, in_shapes, srcs, graph):
    return (prod(in_shapes[0]),), {}, {}, {}, 0


def _dense(layer, in_shapes, srcs, graph):
    shape = in_shapes[0]
    if len(shape) != 1:
        raise _LayerProblem(f"dense needs a [features] input, got {_fmt(graph.declared(shape))} from '{srcs[0]}'; "
                            f"add a {{type: flatten}} layer before it (it would give [{prod(shape)}])")
    params = {"weight": (layer.units, shape[0])}
    if layer.bias:
        params["bias"] = (layer.units,)
    return (layer.units,), {}, params, {}, layer.units * shape[0]


def _merge(layer, in_shapes, srcs, graph):
    listing = " and ".join(f"{_fmt(graph.declared(s))} from '{n}'" for s, n in zip(in_shapes, srcs))
    first = in_shapes[0]
    if layer.type == "add":
        if any(s != first for s in in_shapes):
            raise _LayerProblem(f"add needs inputs of the same shape, got {listing}")
        return first, {}, {}, {}, 0
    if any(len(s) != len(first) or s[1:] != first[1:] for s in in_shapes):
        raise _LayerProblem(f"concat joins along channels, so all other dimensions must match; got {listing}")
    return (sum(s[0] for s in in_shapes),) + first[1:], {"axis": 1}, {}, {}, 0


RULES: dict[str, Callable] = {
    "conv2d": _conv2d, "batchnorm": _batchnorm, "relu": _elementwise, "leaky_relu": _elementwise,
    "sigmoid": _elementwise, "tanh": _elementwise, "softmax": _elementwise, "maxpool": _pool, "avgpool": _pool,
    "global_avgpool": _global_avgpool, "flatten": _flatten, "dropout": _elementwise, "dense": _dense,
    "add": _merge, "concat": _merge,
}
from .layer_rules import MULTI_INPUT, RULES as _MORE_RULES  # noqa: E402 - it reads _LayerProblem from here

RULES.update(_MORE_RULES)
MERGE_TYPES = MERGE_TYPES + MULTI_INPUT


def _default_names(layers: list[tuple[str | None, str | None]]) -> list[str | None]:
    """(type, name) pairs -> each layer's name: its own, or '<type>_<k>' for the k-th layer of that type
    (skipping names given explicitly). None where neither is known (a layer without a valid type)."""
    taken = {name for _, name in layers if name}
    seen: dict[str, int] = {}
    names: list[str | None] = []
    for ltype, name in layers:
        if ltype is not None:
            seen[ltype] = seen.get(ltype, 0) + 1
        if name:
            names.append(name)
            continue
        if ltype is None:
            names.append(None)
            continue
        k = seen[ltype]
        while f"{ltype}_{k}" in taken:
            k += 1
        taken.add(f"{ltype}_{k}")
        names.append(f"{ltype}_{k}")
    return names


def default_names(spec: Spec) -> list[str]:
    """Each layer's name: its own, or '<type>_<k>' for the k-th layer of that type (skipping taken names)."""
    return _default_names([(layer.type, layer.name) for layer in spec.layers])  # type: ignore[return-value]


_INVALID = object()  # a value the schema rejects (and reports); reference checks skip it


SUGGEST_PER_FILE = 100  # "did you mean" for at most this many unknown layer names per spec


def _resolve_references(layers: list[tuple[str | None, str | None, Any]], doc, problem) -> tuple[list, list]:
    """Names unique and not 'input'; every `inputs` entry names the model input or a layer above.

    layers: (type, explicit name, explicit inputs) per layer; None = not given, _INVALID = rejected by the
    schema. Returns (names, sources): sources[i] is a list of (name, index) pairs (index -1 = model input),
    or None when layer i cannot be built (its own problem was reported, here or by the schema).
    """
    names = _default_names([(t, n if isinstance(n, str) else None) for t, n, _ in layers])
    names = [None if given is _INVALID else n for n, (_, given, _) in zip(names, layers)]
    names_known = all(n is not None for n in names) and all(n is not _INVALID for _, n, _ in layers)
    declared_at: dict[str, int] = {}
    duplicate: set[int] = set()
    for i, name in enumerate(names):
        if name is None:
            continue
        if name == INPUT_NAME:
            problem(f"layer name '{INPUT_NAME}' is reserved for the model input; choose another", ("layers", i, "name"))
            duplicate.add(i)
        elif name in declared_at:
            line = doc.position(("layers", declared_at[name])) if doc else None
            problem(f"duplicate layer name '{name}'" + (f" (first declared at line {line[0]})" if line else "")
                    + "; names must be unique", ("layers", i, "name"))
            duplicate.add(i)
        else:
            declared_at[name] = i

    sources: list = []
    suggestions = [0]  # did-you-mean work is bounded per file, not only per word
    for i, ((ltype, _, inputs), name) in enumerate(zip(layers, names)):
        if name is None or i in duplicate or inputs is _INVALID:
            sources.append(None)
            continue
        if inputs is None:
            sources.append([(names[i - 1], i - 1) if i else (INPUT_NAME, -1)])
            if i and names[i - 1] is None:
                sources[-1] = None
            continue
        srcs = []
        for j, src in enumerate(inputs):
            ipath = ("layers", i, "inputs", j)
            if src == INPUT_NAME:
                srcs.append((src, -1))
            elif src in declared_at and declared_at[src] < i:
                srcs.append((src, declared_at[src]))
            elif src == name:
                problem(f"layer '{name}' cannot take its own output as input", ipath)
            elif src in declared_at:
                line = doc.position(("layers", declared_at[src]))[0] if doc else "?"
                problem(f"layer '{name}': input '{src}' is declared later (line {line}); a layer can only take "
                        "inputs from layers above it (this also rules out cycles)", ipath)
            elif names_known:
                above = [n for n in names[:i] if n]
                known = [INPUT_NAME] + above[:SUGGEST_PER_FILE] if len(above) > SUGGEST_PER_FILE else \
                    list(dict.fromkeys([INPUT_NAME] + above))
                suggestions[0] += 1
                close = closest(src, known) if suggestions[0] <= SUGGEST_PER_FILE else None
                hint = f"; did you mean '{close}'?" if close else ""
                listing = _listing(known) + (f", ... ({len(above):,} in all)" if len(above) > SUGGEST_PER_FILE else "")
                problem(f"layer '{name}': unknown input '{src}'{hint} (layers above: {listing})", ipath)
        if len(srcs) != len(inputs):
            sources.append(None)
            continue
        if ltype is not None and ltype not in MERGE_TYPES and len(srcs) != 1:
            problem(f"layer '{name}' ({ltype}) takes exactly one input, got {len(srcs)}; "
                    "combine them first with an add or concat layer", ("layers", i, "inputs"))
            sources.append(None)
            continue
        sources.append(srcs)
    return names, sources


def reference_problems(doc) -> list[Problem]:
    """Layer-name and `inputs` problems found in raw YAML data, for a spec the schema rejected.

    So one run reports a duplicate name in layer 7 together with a wrong type in layer 2. Values the
    schema rejects are skipped here (the schema reports them)."""
    from .schema import LAYER_TYPES, NAME_PATTERN
    data = doc.data
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        return []
    pattern = re.compile(NAME_PATTERN)

    def ok_name(v) -> bool:
        return isinstance(v, str) and bool(pattern.match(v))

    entries = []
    for d in layers:
        if not isinstance(d, dict):
            entries.append((None, _INVALID, _INVALID))
            continue
        ltype = d.get("type") if d.get("type") in LAYER_TYPES else None
        name = d.get("name")
        name = name if name is None or ok_name(name) else _INVALID
        inputs = d.get("inputs")
        if inputs is not None and not (isinstance(inputs, list) and inputs and all(ok_name(x) for x in inputs)):
            inputs = _INVALID
        if ltype in MERGE_TYPES and (inputs is None or inputs is _INVALID or len(inputs) < 2):
            inputs = _INVALID
        entries.append((ltype, name, inputs))
    problems: list[Problem] = []
    _resolve_references(entries, doc, lambda msg, path: problems.append(doc.problem(msg, path)))
    return problems


def _nested_shape(value) -> tuple[tuple[int, ...] | None, str]:
    """Shape of inline weight values (nested lists of numbers), or (None, what is wrong)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list)):
        return None, f"{value!r} is not a number"
    if not isinstance(value, list):
        return ((), "") if isfinite(value) else (None, f"{value} is not a finite number")
    if not value:
        return None, "an empty list"
    shapes_ = []
    for item in value:
        sub, why = _nested_shape(item)
        if sub is None:
            return None, why
        shapes_.append(sub)
    if any(sh != shapes_[0] for sh in shapes_):
        kinds = ", ".join("a number" if not sh else f"a list of shape {_fmt(sh)}" for sh in dict.fromkeys(shapes_))
        return None, f"items of different shapes side by side ({kinds}); every row must have the same shape"
    return (len(value),) + shapes_[0], ""


# How PyTorch lays out weights, for shape-mismatch messages (spec weights here, checkpoints in model.py).
PARAM_LAYOUT = {("conv2d", "weight"): "[filters, in_channels/groups, kh, kw]",
                ("dense", "weight"): "[units, in_features]"}


def _check_weights(spec: Spec, graph: Graph, failed_names: set[str], problem) -> None:
    """Inline weights: names exist, values are numbers of the right shape; files exist. No NumPy here."""
    doc = spec.document
    base = Path(doc.filename).parent if doc is not None and doc.filename != "<string>" else None
    known: dict[str, tuple[Shape, str]] = {}
    for node in graph.nodes.values():
        for local, shape in {**node.params, **node.buffers}.items():
            known[f"{node.name}.{local}"] = (shape, PARAM_LAYOUT.get((node.type, local), ""))

    def missing_file(value: str, path: tuple, what: str) -> None:
        if base is None:
            return
        try:
            found = (base / value).is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL character
            found = False
        if not found:
            problem(f"{what} file '{value}' not found (paths are relative to the spec's folder, {base})", path)

    if isinstance(spec.weights, str):
        missing_file(spec.weights, ("weights",), "weights")
        return
    for name, value in spec.weights.items():
        path = ("weights", name)
        if name not in known:
            layer_name, _, local = name.rpartition(".")
            if layer_name in failed_names:
                continue  # that layer's own problem is already reported
            node = graph.nodes.get(layer_name)
            if node is not None:
                has = [*node.params, *node.buffers]
                why = " (it has bias: false)" if local == "bias" and getattr(node.layer, "bias", True) is False else ""
                close = closest(local, has)
                hint = f"; did you mean '{layer_name}.{close}'?" if close else ""
                problem(f"weights: layer '{layer_name}' ({node.type}) has no parameter '{local}'{why}{hint} "
                        f"(its parameters: {', '.join(has) or 'none'})", path, True)
                continue
            close = closest(name, known)
            problem(f"weights: unknown parameter '{name}'" + (f"; did you mean '{close}'?" if close else "")
                    + f" (parameters: {_listing(list(known)) or 'none'})", path, True)
            continue
        if isinstance(value, str):
            missing_file(value, path, f"weights: '{name}':")
            continue
        want, layout = known[name]
        got, why = _nested_shape(value)
        if got is None:
            problem(f"weights: '{name}' must be numbers; found {why}", path)
        elif got != want:
            problem(f"weights: '{name}' has shape {_fmt(got)}, the model expects {_fmt(want)}"
                    + (f" ({layout})" if layout else ""), path)


def build_graph(spec: Spec, max_memory=None) -> Graph:
    """Infer every layer's shape; raise ShapeError listing every independent problem.

    max_memory: the memory limit (bytes or a SIZE text like "8GiB"; default CNNSPEC_MAX_MEMORY, else 4 GiB).
    A model whose parameters or whose estimated memory for one sample exceed it is an error at the layer
    where it becomes too big (see limits.py)."""
    limit = limits.resolve(max_memory)
    doc = spec.document
    problems: list[Problem] = []

    def problem(msg: str, path: tuple, key: bool = False):
        problems.append(doc.problem(msg, path, key) if doc else Problem(msg))

    ishape = tuple(spec.input.shape)
    if spec.input.layout == "HWC" and len(ishape) == 3:
        ishape = (ishape[2], ishape[0], ishape[1])
    graph = Graph(spec=spec, input_shape=ishape)
    if prod(ishape) > MAX_ELEMENTS:
        problem(f"input shape {spec.input.shape} has {prod(ishape):,} values per sample; the limit is "
                f"{MAX_ELEMENTS:,} ({MAX_ELEMENTS * 8 // 2**30} GiB in float64)", ("input", "shape"))
        raise ShapeError(problems, doc.filename if doc else "<spec>", doc.source if doc else None)

    names, sources = _resolve_references([(layer.type, layer.name, layer.inputs) for layer in spec.layers],
                                         doc, problem)
    failed: set[int] = set()
    hinted = False
    for i, (layer, name, srcs) in enumerate(zip(spec.layers, names, sources)):
        if srcs is None or any(j in failed for _, j in srcs):
            failed.add(i)  # its own problem, or its input's, is already reported
            continue
        where = ("layers", i)
        src_names = [n for n, _ in srcs]
        in_shapes = tuple(graph.input_shape if j < 0 else graph.nodes[n].shape for n, j in srcs)
        try:
            shape, attrs, params, buffers, macs = RULES[layer.type](layer, in_shapes, src_names, graph)
            for what, s in [("output", shape)] + [(f"parameter '{name}.{p}'", s) for p, s in params.items()]:
                if prod(s) > MAX_ELEMENTS:
                    raise _LayerProblem(f"{what} {_fmt(s)} has {prod(s):,} values; the limit is {MAX_ELEMENTS:,} "
                                        f"per tensor ({MAX_ELEMENTS * 8 // 2**30} GiB in float64)")
        except _LayerProblem as exc:
            given = exc.key is not None and exc.key in layer.model_fields_set
            hint = "" if hinted else _layout_hint(spec)  # once, at the first layer whose shape fails
            hinted = True
            problem(f"layer '{name}' ({layer.type}): {exc}{hint}", where + ((exc.key,) if given else ("type",)),
                    key=not given)
            failed.add(i)
            continue
        pos = doc.position(where) if doc else None
        graph.nodes[name] = Node(i, name, layer.type, layer, tuple(src_names), in_shapes, tuple(shape), attrs,
                                 params, buffers, macs, pos[0] if pos else None)

    if spec.output is not None:
        if spec.output not in names:
            close = closest(spec.output, names)
            problem(f"output '{spec.output}' is not a layer" + (f"; did you mean '{close}'?" if close else "")
                    + f" (layers: {_listing(names)})", ("output",))
        graph.output = spec.output
    else:
        graph.output = names[-1]
    out_node = graph.nodes.get(graph.output)
    if spec.loss is not None and spec.loss.type in ("cross_entropy", "multi_margin") and out_node is not None \
            and len(out_node.shape) != 1:
        problem(f"loss {spec.loss.type} needs class scores [classes] per sample from the output layer, got "
                f"{_fmt(graph.declared(out_node.shape))} from '{graph.output}'; end with a flatten (or "
                "global_avgpool + flatten) and a dense layer", ("loss", "type"))
    if spec.weights is not None:
        _check_weights(spec, graph, {names[i] for i in failed}, problem)
    if not failed:
        from .layer_rules import optimizer_problems
        for msg, path in optimizer_problems(spec, graph):
            problem(msg, path, True)
    if not failed and out_node is not None and len(graph.nodes) == len(spec.layers):
        found = limits.spec_problem(graph, limit)
        if found is not None:
            problem(*found)
    if problems:
        raise ShapeError(problems, doc.filename if doc else "<spec>", doc.source if doc else None)
    return graph


def _layout_hint(spec: Spec) -> str:
    """When a CHW input shape looks like height, width, channels ([28, 28, 1], [32, 32, 3]), the likely
    mistake is the layout, not the layer that fails: say so."""
    shape = tuple(spec.input.shape)
    if spec.input.layout != "CHW" or len(shape) != 3 or shape[2] not in (1, 2, 3, 4) or shape[0] <= 4:
        return ""
    h, w, c = shape
    written = "layout" in spec.input.model_fields_set
    how = "change `layout: CHW` to `layout: HWC`" if written else "add `layout: HWC` to `input:`"
    return (f". The input shape {_fmt(shape)} is read as [channels, height, width] (layout CHW"
            f"{'' if written else ', the default'}): "
            f"{h} channels of {w}x{c} pixels. If it is {h}x{w} pixels with {c} channel{'s' if c != 1 else ''}, "
            f"{how} (or write the shape as {_fmt((c, h, w))})")


def loads_spec(text: str, filename: str = "<string>", max_memory=None) -> Spec:
    """Parse, validate and shape-check a spec given as YAML text; raise SpecError with every problem.

    max_memory: the memory limit the model must fit (see build_graph)."""
    from . import yaml_io
    from .schema import validate
    doc = yaml_io.loads(text, filename)
    try:
        spec = validate(doc)
    except SpecError as exc:
        extra = reference_problems(doc)
        if extra:
            raise doc.error(exc.problems + extra) from None
        raise
    spec._graph = build_graph(spec, max_memory)
    return spec


def load_spec(path, max_memory=None) -> Spec:
    """Read, validate and shape-check a spec file; raise SpecError (file:line:col) on any problem.

    max_memory: the memory limit the model must fit (see build_graph)."""
    from . import yaml_io
    return loads_spec(yaml_io.read_text(path, "spec"), str(path), max_memory)


__all__ = ["Graph", "Node", "SpecError", "build_graph", "load_spec", "loads_spec"]
