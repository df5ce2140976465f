"""Shape inference: a validated Spec becomes a Graph of Nodes with resolved attributes and shapes.

Everything here is integer arithmetic on shapes (via shapes.py); nothing is allocated, so absurd sizes
are rejected before any array exists. Shapes are per sample and internal (CHW); `Graph.declared`
converts to the spec's layout for users. Problems are collected across independent layers and raised
together as one ShapeError, each with the layer's position in the YAML file.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable

from . import shapes
from .errors import Problem, ShapeError, SpecError
from .schema import INPUT_NAME, Spec

# Per-sample limit on any one tensor (activation or parameter): 2**28 values is 2 GiB in float64.
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
    """Raised by an inference rule; the builder adds the layer's name, type and position."""


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


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
                            f"{shapes.window_out_text(size, k, s, p0, p1, d, ceil).split(' = ', 1)[1]} < 1")
    return out


def _conv2d(layer, in_shapes, srcs, graph):
    c, h, w = _need_chw("conv2d", in_shapes[0], srcs[0], graph)
    kh, kw = _pair(layer.kernel)
    sh, sw = _pair(layer.stride)
    dh, dw = _pair(layer.dilation)
    g, f = layer.groups, layer.filters
    if c % g or f % g:
        raise _LayerProblem(f"groups {g} must divide both the input channels ({c}) and filters ({f})")
    if layer.padding == "same":
        if (sh, sw) != (1, 1):
            raise _LayerProblem(f"padding 'same' needs stride 1 (as in PyTorch), got stride {[sh, sw]}; "
                                "give the padding as numbers instead")
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
                                    f"{axis} {n} ({'must be < input size' if layer.padding_mode == 'reflect' else 'must be <= input size'})")
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
    for p, k, d, axis in ((ph, kh, dh, "height"), (pw, kw, dw, "width")):
        if 2 * p > d * (k - 1) + 1:
            raise _LayerProblem(f"padding {p} must be at most half the kernel {axis} ({d * (k - 1) + 1}), as in PyTorch")
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
    return shape, attrs, {"weight": (c,), "bias": (c,)}, \
        {"running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}, 0


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


def default_names(spec: Spec) -> list[str]:
    """Each layer's name: its own, or '<type>_<k>' for the k-th layer of that type (skipping taken names)."""
    taken = {layer.name for layer in spec.layers if layer.name}
    seen: dict[str, int] = {}
    names = []
    for layer in spec.layers:
        seen[layer.type] = seen.get(layer.type, 0) + 1
        if layer.name:
            names.append(layer.name)
            continue
        k = seen[layer.type]
        while f"{layer.type}_{k}" in taken:
            k += 1
        taken.add(f"{layer.type}_{k}")
        names.append(f"{layer.type}_{k}")
    return names


def build_graph(spec: Spec) -> Graph:
    """Infer every layer's shape; raise ShapeError listing every independent problem."""
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

    names = default_names(spec)
    declared_at: dict[str, int] = {}
    for i, (layer, name) in enumerate(zip(spec.layers, names)):
        if name == INPUT_NAME:
            problem(f"layer name '{INPUT_NAME}' is reserved for the model input; choose another", ("layers", i, "name"))
        elif name in declared_at:
            line = doc.position(("layers", declared_at[name])) if doc else None
            problem(f"duplicate layer name '{name}'" + (f" (first declared at line {line[0]})" if line else "")
                    + "; names must be unique", ("layers", i, "name"))
        else:
            declared_at[name] = i

    failed: set[str] = set()
    for i, (layer, name) in enumerate(zip(spec.layers, names)):
        if declared_at.get(name) != i:
            continue
        where = ("layers", i)
        if layer.inputs is None:
            srcs = [names[i - 1] if i else INPUT_NAME]
        else:
            srcs = list(layer.inputs)
        ok = True
        for j, src in enumerate(srcs):
            if src == INPUT_NAME or (src in declared_at and declared_at[src] < i):
                continue
            ok = False
            ipath = where + ("inputs", j)
            if src == name:
                problem(f"layer '{name}' cannot take its own output as input", ipath)
            elif src in declared_at:
                line = doc.position(("layers", declared_at[src]))[0] if doc else "?"
                problem(f"layer '{name}': input '{src}' is declared later (line {line}); a layer can only take "
                        "inputs from layers above it (this also rules out cycles)", ipath)
            else:
                known = [INPUT_NAME] + names[:i]
                close = difflib.get_close_matches(src, known, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problem(f"layer '{name}': unknown input '{src}'{hint} (layers above: {', '.join(known)})", ipath)
        if not ok:
            failed.add(name)
            continue
        if layer.type not in MERGE_TYPES and len(srcs) != 1:
            problem(f"layer '{name}' ({layer.type}) takes exactly one input, got {len(srcs)}; "
                    "combine them first with an add or concat layer", where + ("inputs",))
            failed.add(name)
            continue
        if any(s in failed for s in srcs):
            failed.add(name)  # the cause was already reported upstream
            continue
        in_shapes = tuple(graph.shape_of(s) for s in srcs)
        try:
            shape, attrs, params, buffers, macs = RULES[layer.type](layer, in_shapes, srcs, graph)
            for what, s in [("output", shape)] + [(f"parameter '{name}.{p}'", s) for p, s in params.items()]:
                if prod(s) > MAX_ELEMENTS:
                    raise _LayerProblem(f"{what} {_fmt(s)} has {prod(s):,} values; the limit is {MAX_ELEMENTS:,} "
                                        f"per tensor ({MAX_ELEMENTS * 8 // 2**30} GiB in float64)")
        except _LayerProblem as exc:
            problem(f"layer '{name}' ({layer.type}): {exc}", where + ("type",), key=True)
            failed.add(name)
            continue
        pos = doc.position(where) if doc else None
        graph.nodes[name] = Node(i, name, layer.type, layer, tuple(srcs), in_shapes, tuple(shape), attrs,
                                 params, buffers, macs, pos[0] if pos else None)

    if spec.output is not None:
        if spec.output not in declared_at:
            close = difflib.get_close_matches(spec.output, names, n=1, cutoff=0.6)
            problem(f"output '{spec.output}' is not a layer" + (f"; did you mean '{close[0]}'?" if close else "")
                    + f" (layers: {', '.join(names)})", ("output",))
        graph.output = spec.output
    else:
        graph.output = names[-1]
    if problems:
        raise ShapeError(problems, doc.filename if doc else "<spec>", doc.source if doc else None)
    return graph


def loads_spec(text: str, filename: str = "<string>") -> Spec:
    """Parse, validate and shape-check a spec given as YAML text; raise SpecError with every problem."""
    from . import yaml_io
    from .schema import validate
    spec = validate(yaml_io.loads(text, filename))
    spec._graph = build_graph(spec)
    return spec


def load_spec(path) -> Spec:
    """Read, validate and shape-check a spec file; raise SpecError (file:line:col) on any problem."""
    from . import yaml_io
    return loads_spec(yaml_io.read_text(path, "spec"), str(path))


__all__ = ["Graph", "Node", "build_graph", "load_spec", "loads_spec", "SpecError"]
