"""Shape rules and `explain` lines for the activation, normalisation, pooling and channel layers added to
the first layer set (relu6, silu, hardswish, hardsigmoid, gelu, layernorm, groupnorm, lrn, adaptive_avgpool,
multiply, channel_split, channel_shuffle).

graph.py and explain.py register these (RULES, EXPLAIN) next to their own; the rules follow graph.py's
contract: rule(layer, in_shapes, srcs, graph) -> (shape, attrs, params, buffers, macs), raising graph's
_LayerProblem for a user's mistake. Pure Python (no NumPy), so `cnnspec check` stays light.
"""
from __future__ import annotations

from math import prod

from . import graph as _graph  # the module (not names from it): graph.py imports this module while loading
from . import shapes

ACTIVATIONS = ("relu6", "silu", "hardswish", "hardsigmoid", "gelu")


def _problem(message: str, key: str | None = None):
    return _graph._LayerProblem(message, key)


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _where(graph, shape, src) -> str:
    return f"input {_fmt(graph.declared(shape))} from '{src}'"


def _activation(layer, in_shapes, srcs, graph):
    attrs = {"approximate": layer.approximate} if layer.type == "gelu" else {}
    return in_shapes[0], attrs, {}, {}, 0


def _layernorm(layer, in_shapes, srcs, graph):
    shape = in_shapes[0]
    params = {"weight": shape, "bias": shape} if layer.affine else {}
    return shape, {"eps": layer.eps, "affine": layer.affine}, params, {}, 0


def _groupnorm(layer, in_shapes, srcs, graph):
    shape = in_shapes[0]
    c, g = shape[0], layer.groups
    if c % g:
        raise _problem(f"groups {g} must divide the {c} channels ({_where(graph, shape, srcs[0])}): "
                       f"{c} % {g} = {c % g}", "groups")
    params = {"weight": (c,), "bias": (c,)} if layer.affine else {}
    return shape, {"groups": g, "eps": layer.eps, "affine": layer.affine}, params, {}, 0


def _need_chw(ltype, shape, src, graph):
    if len(shape) != 3:
        raise _problem(f"{ltype} needs a 3-D input ({'[H, W, C]' if graph.layout == 'HWC' else '[C, H, W]'}), "
                       f"got {_fmt(graph.declared(shape))} from '{src}'")
    return shape


def _lrn(layer, in_shapes, srcs, graph):
    shape = _need_chw("lrn", in_shapes[0], srcs[0], graph)
    return shape, {"size": layer.size, "alpha": layer.alpha, "beta": layer.beta, "k": layer.k}, {}, {}, 0


def _adaptive_avgpool(layer, in_shapes, srcs, graph):
    c, _, _ = _need_chw("adaptive_avgpool", in_shapes[0], srcs[0], graph)
    oh, ow = _graph._pair(layer.output_size)
    return (c, oh, ow), {"output_size": (oh, ow)}, {}, {}, 0


def _multiply(layer, in_shapes, srcs, graph):
    a, b = in_shapes
    listing = " and ".join(f"{_fmt(graph.declared(s))} from '{n}'" for s, n in zip(in_shapes, srcs))
    if a == b:
        return a, {"gate": None}, {}, {}, 0
    for gate, (full, small) in enumerate(((a, b), (b, a))):
        if len(full) == 3 and small in ((full[0],), (full[0], 1, 1)):
            return full, {"gate": 1 - gate}, {}, {}, 0
    raise _problem(f"multiply needs two inputs of the same shape, or a [C, H, W] input and a per-channel gate "
                   f"[C] or [C, 1, 1] with the same C; got {listing}")


def _channel_split(layer, in_shapes, srcs, graph):
    shape = in_shapes[0]
    c, parts = shape[0], layer.parts
    if c % parts:
        raise _problem(f"parts {parts} must divide the {c} channels ({_where(graph, shape, srcs[0])}): "
                       f"{c} % {parts} = {c % parts}", "parts")
    size = c // parts
    return (size,) + tuple(shape[1:]), {"start": layer.index * size, "stop": (layer.index + 1) * size}, {}, {}, 0


def _channel_shuffle(layer, in_shapes, srcs, graph):
    shape = _need_chw("channel_shuffle", in_shapes[0], srcs[0], graph)  # as PyTorch's: > 2 dimensions
    c, g = shape[0], layer.groups
    if c % g:
        raise _problem(f"groups {g} must divide the {c} channels ({_where(graph, shape, srcs[0])}): "
                       f"{c} % {g} = {c % g}", "groups")
    return shape, {"groups": g}, {}, {}, 0


RULES = {
    **{t: _activation for t in ACTIVATIONS},
    "layernorm": _layernorm, "groupnorm": _groupnorm, "lrn": _lrn,
    "adaptive_avgpool": _adaptive_avgpool, "multiply": _multiply, "channel_split": _channel_split,
    "channel_shuffle": _channel_shuffle,
}
MULTI_INPUT = ("multiply",)  # besides add and concat: layers that take more than one input


# ---------------------------------------------------------------- explain


def _what(node) -> str:
    return "channels" if len(node.shape) == 3 else "features"


def _explain_activation(graph, node) -> list[str]:
    text = {
        "relu6": "min(max(0, x), 6) for every value: clipped to [0, 6]",
        "silu": "x * sigmoid(x) for every value (SiLU, also called swish)",
        "hardswish": "x * relu6(x + 3) / 6 for every value: 0 below -3, x above 3, a parabola between",
        "hardsigmoid": "relu6(x + 3) / 6 for every value: 0 below -3, 1 above 3, x/6 + 1/2 between (PyTorch's)",
        "gelu": ("x * Phi(x), Phi the standard normal CDF: 0.5x(1 + erf(x/sqrt(2)))"
                 if node.attrs.get("approximate") == "none" else
                 "0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), the tanh approximation of GELU"),
    }[node.type]
    return [text + "; shape unchanged, no parameters"]


def _explain_layernorm(graph, node) -> list[str]:
    n = prod(node.shape)
    dims = " x ".join(map(str, graph.declared(node.shape)))
    lines = [f"for each sample: mean and (biased) variance over all its {dims} = {n:,} values; the same in "
             "training and evaluation (no running statistics)",
             f"y = (x - mean) / sqrt(var + eps), eps = {node.attrs['eps']}"]
    if node.attrs["affine"]:
        lines.append(f"then y * weight + bias, one weight and one bias per value: parameters 2*{n:,} = {2 * n:,}")
    else:
        lines.append("affine: false: no parameters")
    return lines + ["shape unchanged"]


def _explain_groupnorm(graph, node) -> list[str]:
    c, g = node.shape[0], node.attrs["groups"]
    per = c // g
    rest = f" x {prod(node.shape[1:]):,} values" if len(node.shape) == 3 else ""
    lines = [f"{c} channels in {g} groups of {c} / {g} = {per}; for each sample and group: mean and (biased) "
             f"variance over {per} channels{rest}",
             f"y = (x - mean) / sqrt(var + eps), eps = {node.attrs['eps']}; the same in training and evaluation"]
    if node.attrs["affine"]:
        lines.append(f"then y * weight + bias per channel: parameters 2*{c} = {2 * c}")
    else:
        lines.append("affine: false: no parameters")
    return lines + ["shape unchanged"]


def _explain_lrn(graph, node) -> list[str]:
    a = node.attrs
    n = a["size"]
    return [f"each value is divided by (k + alpha/size * sum of squares of the {n} neighbouring channels)^beta, "
            f"k = {a['k']}, alpha = {a['alpha']}, beta = {a['beta']}",
            f"neighbours of channel c: c - {n // 2} to c + {(n - 1) // 2} (missing channels at the edges count as 0)",
            "no parameters; shape unchanged"]


def _explain_adaptive(graph, node) -> list[str]:
    _, h, w = node.in_shapes[0]
    oh, ow = node.attrs["output_size"]
    lines = [f"output grid {oh}x{ow}: window i of n over a length L spans floor(i*L/n) to ceil((i+1)*L/n)"]
    for axis, size, out in (("height", h, oh), ("width", w, ow)):
        uniform = shapes.adaptive_uniform(size, out)
        windows = [shapes.adaptive_window(i, size, out) for i in range(min(out, 3))]
        shown = ", ".join(f"[{s}, {e})" for s, e in windows) + (", ..." if out > 3 else "")
        lines.append(f"{axis}: {size} -> {out} windows {shown}"
                     + (f" (all {uniform[0]} long, {uniform[1]} apart: an average pool with kernel {uniform[0]}, "
                        f"stride {uniform[1]})" if uniform else " (of different lengths)"))
    return lines + [f"channels unchanged ({node.shape[0]}); no parameters"]


def _explain_multiply(graph, node) -> list[str]:
    gate = node.attrs["gate"]
    if gate is None:
        return [f"elementwise product of the two inputs; shape unchanged, no parameters"]
    c = node.shape[0]
    return [f"'{node.inputs[1 - gate]}' x '{node.inputs[gate]}': each of the {c} channels is multiplied by its "
            "gate value (squeeze-and-excitation); no parameters"]


def _explain_split(graph, node) -> list[str]:
    a, c = node.attrs, node.in_shapes[0][0]
    parts = node.layer.parts
    return [f"{c} channels in {parts} groups of {c} / {parts} = {c // parts}; keeps group {node.layer.index}: "
            f"channels {a['start']} to {a['stop'] - 1}"]


def _explain_shuffle(graph, node) -> list[str]:
    c, g = node.shape[0], node.attrs["groups"]
    per = c // g
    first = [(i % g) * per + i // g for i in range(min(c, 6))]
    return [f"{c} channels as {g} groups of {per}, transposed to {per} groups of {g}: output channel j is input "
            f"channel (j % {g}) * {per} + j // {g} -> " + ", ".join(map(str, first)) + (", ..." if c > 6 else ""),
            "no parameters; shape unchanged"]


EXPLAIN = {
    **{t: _explain_activation for t in ACTIVATIONS},
    "layernorm": _explain_layernorm, "groupnorm": _explain_groupnorm,
    "lrn": _explain_lrn, "adaptive_avgpool": _explain_adaptive, "multiply": _explain_multiply,
    "channel_split": _explain_split, "channel_shuffle": _explain_shuffle,
}


# ---------------------------------------------------------------- optimizer multipliers


def optimizer_problems(spec, graph) -> list[tuple[str, tuple]]:
    """(message, path) for every lr_mult / decay_mult key that names or matches no parameter (a typo would
    otherwise silently change nothing)."""
    import fnmatch
    names = [f"{n.name}.{p}" for n in graph.nodes.values() for p in n.params]
    found = []
    for table in ("lr_mult", "decay_mult"):
        for key in getattr(spec.optimizer, table) or {}:
            if key in names or any(fnmatch.fnmatchcase(n, key) for n in names):
                continue
            shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
            found.append((f"optimizer.{table}: '{key}' matches no parameter (a name like 'conv1.bias' or a pattern "
                          f"like '*.bias'; parameters: {shown or 'none'})", ("optimizer", table, key)))
    return found
