"""`cnnspec explain`: a step-by-step derivation of every shape and parameter count, numbers substituted.

The formulas come from shapes.py (the same functions inference uses), so what a student reads is what
the tool computed.
"""
from __future__ import annotations

from math import prod

from . import shapes
from .graph import Graph, Node
from .layer_rules import EXPLAIN
from .schema import INPUT_NAME


def _dims(graph: Graph, shape) -> str:
    shape = graph.declared(shape)
    if len(shape) == 1:
        return _n(shape[0], "feature")
    labels = "H x W x C" if graph.layout == "HWC" else "C x H x W"
    return " x ".join(map(str, shape)) + f" ({labels})"


def _n(count: int, word: str) -> str:
    """'1 filter', '6 filters', '1,024 features'."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _each(count: int, word: str) -> str:
    """'each of the 6 channels', or 'the 1 channel'."""
    return f"the {_n(count, word)}" if count == 1 else f"each of the {_n(count, word)}"


def _kernel_dims(graph: Graph, kh: int, kw: int, c: int) -> str:
    return f"{kh}x{kw}x{c}" if graph.layout == "HWC" else f"{c}x{kh}x{kw}"


def explain(graph: Graph) -> str:
    spec = graph.spec
    n = len(graph.nodes)
    out = [f"Model {spec.name!r}: {n} layer{'s' if n != 1 else ''}, layout {graph.layout}, {spec.input.dtype}.",
           f"Input: one sample is {_dims(graph, graph.input_shape)}; a batch of N adds a first dimension.", ""]
    for step, node in enumerate(graph.nodes.values(), 1):
        src = ", ".join("the input" if s == INPUT_NAME else f"'{s}'" for s in node.inputs)
        out.append(f"{step}. {node.name} ({node.type}, line {node.line}) takes {src}: "
                   f"{' + '.join(_dims(graph, s) for s in node.in_shapes)}")
        out.extend("   " + line for line in _RULES.get(node.type, _same)(graph, node))
        out.append(f"   -> output {_dims(graph, node.shape)}")
        out.append("")
    total = graph.param_count
    out.append(f"Total: {_n(total, 'trainable parameter')} = "
               + " + ".join(f"{n.param_count:,} ({n.name})" for n in graph.nodes.values() if n.param_count)
               if total else "Total: no trainable parameters.")
    return "\n".join(out)


def _padding(node: Node) -> str:
    """The padding as the spec wrote it ('same', [1, 2], 1, or nothing), then the pixels it adds per side."""
    pt, pl, pb, pr = node.attrs["pads"]
    written = node.layer.padding
    if "padding" not in node.layer.model_fields_set:
        return f"padding {written} (default)"
    if isinstance(written, str):
        shown = f"padding '{written}'"
    elif isinstance(written, int):
        return f"padding {written}" + (" on every side" if written else "")
    else:
        shown = f"padding {list(written)}"
    if len({pt, pl, pb, pr}) == 1:
        return f"{shown} -> {pt} on every side"
    if pt == pb and pl == pr:
        return f"{shown} -> {pt} top and bottom, {pl} left and right"
    return (f"{shown} -> top {pt}, bottom {pb}, left {pl}, right {pr} (the odd pixel goes to the bottom and "
            "right, as in PyTorch)")


def _conv2d(graph: Graph, node: Node) -> list[str]:
    c, h, w = node.in_shapes[0]
    f, kh, kw = node.shape[0], *node.params["weight"][2:]
    a = node.attrs
    (sh, sw), (pt, pl, pb, pr), (dh, dw), g = a["stride"], a["pads"], a["dilation"], a["groups"]
    lines = [f"{_n(f, 'filter')}, kernel {kh}x{kw}, stride {sh if sh == sw else (sh, sw)}, {_padding(node)}"
             + (f", dilation {(dh, dw)}" if (dh, dw) != (1, 1) else "")
             + (f", groups {g}" if g > 1 else "")
             + (f", padding_mode {a['padding_mode']}" if a["padding_mode"] != "zeros" else ""),
             "output size per axis: " + ("floor((in + 2p - k)/s) + 1" if (dh, dw) == (1, 1)
                                         else "floor((in + 2p - d*(k-1) - 1)/s) + 1"),
             f"height: {shapes.window_out_text(h, kh, sh, pt, pb, dh)}",
             f"width:  {shapes.window_out_text(w, kw, sw, pl, pr, dw)}"]
    cin = c // g
    lines.append(f"each kernel is {_kernel_dims(graph, kh, kw, cin)}: its depth equals the "
                 + (f"{_n(cin, 'channel')} of its group ({c} channels / {g} groups)" if g > 1
                    else f"{_n(c, 'input channel')}"))
    bias = "bias" in node.params
    lines.append(f"channels: one output channel per filter -> {f}")
    lines.append(f"parameters: {f}*({kh}*{kw}*{cin})" + (f" + {f}" if bias else "") + f" = {node.param_count:,}"
                 + (" (weights + one bias per filter)" if bias else " (weights, no bias)"))
    lines.append(f"multiply-accumulates: {prod(node.shape):,} outputs x {cin * kh * kw} = {node.macs:,}")
    return lines


def _pool(graph: Graph, node: Node) -> list[str]:
    c, h, w = node.in_shapes[0]
    a = node.attrs
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = a["kernel"], a["stride"], a["pads"]
    dh, dw = a.get("dilation", (1, 1))
    what = "the largest value" if node.type == "maxpool" else (
        "the average (padded zeros count)" if a.get("count_include_pad", True) else "the average of real pixels")
    return [f"window {kh}x{kw}, stride {sh if sh == sw else (sh, sw)}, {_padding(node)}"
            + (", ceil_mode" if a["ceil_mode"] else "") + f": keeps {what} of each window",
            f"height: {shapes.window_out_text(h, kh, sh, pt, pb, dh, a['ceil_mode'])}",
            f"width:  {shapes.window_out_text(w, kw, sw, pl, pr, dw, a['ceil_mode'])}",
            f"channels unchanged ({c}): pooling works on each channel separately; no parameters"]


def _batchnorm(graph: Graph, node: Node) -> list[str]:
    c = node.shape[0]
    over = "N x H x W values (every pixel of every image in the batch)" if len(node.shape) == 3 else "the N samples"
    what = "channels" if len(node.shape) == 3 else "features"
    return [f"for {_each(c, what[:-1])}: mean and variance over {over}",
            f"x_hat = (x - mean) / sqrt(var + eps), eps = {node.attrs['eps']}; "
            + ("y = gamma * x_hat + beta" if node.attrs.get("affine", True) else "y = x_hat"),
            "training uses the batch's statistics (biased variance); evaluation uses the running ones",
            f"running = (1 - {node.attrs['momentum']}) * running + {node.attrs['momentum']} * batch "
            "(running variance uses the unbiased n-1 estimate, as PyTorch)",
            f"parameters: gamma and beta per {what[:-1]} = 2*{c} = {2 * c}; running mean and variance "
            f"({2 * c} values) are buffers, not trained; shape unchanged"
            if node.attrs.get("affine", True) else
            f"affine: false: no gamma and beta (y = x_hat), no parameters; running mean and variance "
            f"({2 * c} values) are buffers; shape unchanged"]


def _same(graph: Graph, node: Node) -> list[str]:
    text = {
        "relu": "max(0, x) for every value: negatives become 0; shape unchanged, no parameters",
        "leaky_relu": f"x if x > 0 else {node.attrs.get('slope')}*x for every value; shape unchanged",
        "sigmoid": "1 / (1 + exp(-x)) for every value; shape unchanged",
        "tanh": "tanh(x) for every value; shape unchanged",
        "softmax": "exp(x_i) / sum_j exp(x_j) across the channels/features: outputs are positive and sum to 1",
        "dropout": f"training: each value is zeroed with probability {node.attrs.get('rate')} and the rest scaled "
                   f"by 1/(1 - {node.attrs.get('rate')}); evaluation: unchanged",
    }
    return [text.get(node.type, "shape unchanged")]


def _flatten(graph: Graph, node: Node) -> list[str]:
    s = node.in_shapes[0]
    if len(s) == 1:
        return [f"the input is already a vector of {_n(s[0], 'feature')}: unchanged"]
    return [f"{' * '.join(map(str, s))} = {_n(prod(s), 'value')} in one vector "
            "(in C, H, W order, as PyTorch, whatever the layout)"]


def _dense(graph: Graph, node: Node) -> list[str]:
    units, fin = node.params["weight"]
    bias = "bias" in node.params
    return [f"{_each(units, 'unit')} takes a weighted sum of {'the 1 input' if fin == 1 else f'all {fin:,} inputs'}"
            + (" plus a bias" if bias else ""),
            f"weight matrix {units} x {fin} (units x inputs, as PyTorch)",
            f"parameters: {units}*{fin}" + (f" + {units}" if bias else "") + f" = {node.param_count:,}",
            f"multiply-accumulates: {units} x {fin:,} = {node.macs:,}"]


def _global_avgpool(graph: Graph, node: Node) -> list[str]:
    c, h, w = node.in_shapes[0]
    return [f"the average of each channel's {h}x{w} = {_n(h * w, 'value')} -> one value per channel"]


def _add(graph: Graph, node: Node) -> list[str]:
    return [f"elementwise sum of {len(node.inputs)} inputs of the same shape (a residual/skip connection)"]


def _concat(graph: Graph, node: Node) -> list[str]:
    chans = " + ".join(str(s[0]) for s in node.in_shapes)
    if len(node.shape) == 1:
        return [f"joins the input vectors end to end: {chans} = {_n(node.shape[0], 'feature')}"]
    return [f"stacks the inputs along channels: {chans} = {node.shape[0]}; height and width must match"]


_RULES = {"conv2d": _conv2d, "maxpool": _pool, "avgpool": _pool, "batchnorm": _batchnorm, "flatten": _flatten,
          "dense": _dense, "global_avgpool": _global_avgpool, "add": _add, "concat": _concat}
_RULES.update(EXPLAIN)  # the layers of layer_rules.py
