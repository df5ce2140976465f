"""Export a compiled model to ONNX: one ONNX node per layer, named after the layer.

The only module that imports onnx (the CLI imports it lazily). Conventions convert here and nowhere else:

- layout: the engine is NCHW; an HWC spec gets a Transpose after the graph input (NHWC -> NCHW) and, when the
  output is 4-D, one before the graph output (back to NHWC), so the file takes and returns the declared layout;
- batch norm momentum: ONNX's is 1 - PyTorch's (an attribute only; the export is inference mode); epsilon is a
  float32 attribute, so a float64 model adds the remainder eps - float32(eps) to running_var in the graph;
- pads: cnnspec's (top, left, bottom, right) is already ONNX's [x1_begin, x2_begin, x1_end, x2_end];
- conv padding_mode reflect/replicate/circular: a Pad node (reflect/edge/wrap) before a Conv with zero pads;
- pools: kernel/stride/pads/dilation map one to one, count_include_pad is the AveragePool attribute; ceil_mode
  is written as extra end padding that never counts (runtimes disagree on ceil_mode; see _pool);
- leaky_relu: LeakyRelu, whose `alpha` attribute is a float32; a float64 model with a slope float32 cannot hold
  exactly uses PRelu with a float64 slope tensor instead, so float64 verification stays exact;
- dense: Gemm with transB=1 (weight (out, in) as in PyTorch); flatten: Flatten(axis=1) of NCHW (CHW order);
- dropout: a Dropout node (identity at inference).

Names: node and tensor names are the layer names; the graph input is `input`; initializers holding weights
are the PyTorch state_dict names (`conv1.weight`, `bn1.running_var`); the few helper tensors and nodes an
export needs carry a `/` (`conv1/pad`, `input/nchw`), which layer names cannot contain, so they never clash.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import __version__
from .files import write_files
from .errors import CnnspecError, Problem, SpecError
from .schema import INPUT_NAME

DEFAULT_OPSET = 21
MIN_OPSET = 13
# The newest opset this module was verified against (onnx 1.23, onnxruntime 1.32), capped by the installed onnx.
MAX_OPSET = min(25, onnx.defs.onnx_opset_version())
BATCH_DIM = "N"
TEXT_SUFFIX = ".onnxtxt"
TEXT_INLINE_VALUES = 16  # the textual form shows tensors up to this many values; larger ones by reference
MAX_PROTO_BYTES = 2**31 - 2**20  # protobuf's 2 GiB message limit, with room for the graph itself

_ELEM_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}
# Ops of an export that onnxruntime's CPU provider implements for float32 only (NOT_IMPLEMENTED for double,
# onnxruntime 1.32, every opset 13-25): a float64 file using one of them does not load in onnxruntime.
ORT_NO_FLOAT64_OPS = ("Conv", "AveragePool", "GlobalAveragePool", "LeakyRelu", "PRelu", "HardSwish", "HardSigmoid",
                      "LRN", "Gelu")  # Gelu: the exact (erf) form only; approximate='tanh' runs
_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
# Opset needed by a feature, and why.
_NEEDS = {
    "circular": (19, "padding_mode 'circular' exports as Pad mode 'wrap', added in opset 19"),
    "hardswish": (14, "it exports as HardSwish, added in opset 14"),
    "gelu": (20, "it exports as Gelu, added in opset 20"),
    "layernorm": (17, "it exports as LayerNormalization, added in opset 17"),
    "groupnorm": (21, "it exports as GroupNormalization with one scale and bias per channel, as in opset 21 "
                      "(opset 18's has one per group)"),
}


class ExportError(CnnspecError):
    """The model cannot be exported as asked (opset out of range, a layer the opset cannot express, too big)."""


@dataclass
class _Builder:
    model: object
    opset: int
    dtype: np.dtype
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    value_info: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    @property
    def elem(self) -> int:
        return _ELEM_TYPE[self.dtype]

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, doc: str | None = None, **attrs):
        n = helper.make_node(op, inputs, outputs, name=name, **attrs)
        if doc:
            n.doc_string = doc
        self.nodes.append(n)
        return outputs[0]

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, store: dict) -> str:
        return self.const(name, np.asarray(store[name], dtype=self.dtype))

    def need(self, node, feature: str, path_key: str) -> bool:
        """Record a problem (and return False) if the opset is too old for `feature` of this layer."""
        minimum, why = _NEEDS[feature]
        if self.opset >= minimum:
            return True
        msg = (f"layer '{node.name}' ({node.type}) needs opset {minimum} or later (exporting at opset {self.opset}): "
               f"{why}")
        doc = self.model.spec.document
        path = ("layers", node.index, path_key)
        self.problems.append(doc.problem(msg, path, key=True) if doc else Problem(msg))
        return False


# ---------------------------------------------------------------- one function per layer type
# Each takes (builder, node, input tensor names, output tensor name) and returns the output tensor name.


def _conv2d(b: _Builder, node, xs, out):
    a = node.attrs
    x, pads = xs[0], list(a["pads"])
    if a["padding_mode"] != "zeros" and any(pads):
        if a["padding_mode"] == "circular" and not b.need(node, "circular", "padding_mode"):
            return out
        t, l, bt, r = pads
        pad_amounts = b.const(f"{node.name}/pads", np.array([0, 0, t, l, 0, 0, bt, r], dtype=np.int64))
        x = b.node("Pad", [x, pad_amounts], [f"{node.name}/padded"], f"{node.name}/pad",
                   f"padding_mode '{a['padding_mode']}' (PyTorch) = Pad mode '{_PAD_MODE[a['padding_mode']]}'",
                   mode=_PAD_MODE[a["padding_mode"]])
        pads = [0, 0, 0, 0]
    inputs = [x, b.weight(f"{node.name}.weight", b.model.params)]
    if "bias" in node.params:
        inputs.append(b.weight(f"{node.name}.bias", b.model.params))
    kh, kw = node.params["weight"][2:]
    return b.node("Conv", inputs, [out], node.name, _doc(node), kernel_shape=[kh, kw], strides=list(a["stride"]),
                  pads=pads, dilations=list(a["dilation"]), group=a["groups"])


def _batchnorm(b: _Builder, node, xs, out):
    p, s = b.model.params, b.model.buffers
    n, eps = node.name, float(node.attrs["eps"])
    var = b.weight(f"{n}.running_var", s)
    eps32 = float(np.float32(eps))
    if b.dtype == np.float64 and eps32 != eps:
        # `epsilon` is a float32 attribute: 1e-5 becomes 9.99999997e-06, an error of up to 1e-9 relative when a
        # channel's variance is near 0. Adding the remainder to the variance keeps float64 exact.
        rest = b.const(f"{n}/eps_remainder", np.array([eps - eps32], dtype=b.dtype))
        var = b.node("Add", [var, rest], [f"{n}/running_var_plus_remainder"], f"{n}/eps_remainder_add",
                     f"running_var + (eps - float32(eps)) = running_var + {eps - eps32:.3g}: BatchNormalization's "
                     "epsilon attribute is float32")
    scale, shift = _affine(b, node, (node.buffers["running_mean"][0],))
    inputs = [xs[0], scale, shift, b.weight(f"{n}.running_mean", s), var]
    return b.node("BatchNormalization", inputs, [out], n,
                  _doc(node, f"momentum {node.attrs['momentum']} (PyTorch) = {1 - node.attrs['momentum']:g} (ONNX)"
                       + ("" if "weight" in node.params else "; affine: false as scale 1 and bias 0")),
                  epsilon=eps32, momentum=float(1.0 - node.attrs["momentum"]))


def _affine(b: _Builder, node, shape) -> tuple[str, str]:
    """The layer's weight and bias initializers; with affine: false, constants 1 and 0 of `shape`."""
    if "weight" in node.params:
        return b.weight(f"{node.name}.weight", b.model.params), b.weight(f"{node.name}.bias", b.model.params)
    return (b.const(f"{node.name}/scale", np.ones(shape, b.dtype)),
            b.const(f"{node.name}/bias", np.zeros(shape, b.dtype)))


def _scalar(b: _Builder, name: str, value: float) -> str:
    return b.const(name, np.array(value, dtype=b.dtype))


def _ints(b: _Builder, name: str, values) -> str:
    return b.const(name, np.array(list(values), dtype=np.int64))


def _relu6(b: _Builder, node, xs, out):
    lo, hi = _scalar(b, f"{node.name}/min", 0.0), _scalar(b, f"{node.name}/max", 6.0)
    return b.node("Clip", [xs[0], lo, hi], [out], node.name, _doc(node, "Clip to [0, 6]"))


def _silu(b: _Builder, node, xs, out):
    s = b.node("Sigmoid", [xs[0]], [f"{node.name}/sigmoid"], f"{node.name}/sigmoid", "sigmoid(x) for x * sigmoid(x)")
    return b.node("Mul", [xs[0], s], [out], node.name, _doc(node, "SiLU = x * Sigmoid(x) (ONNX has no SiLU op)"))


def _hardsigmoid(b: _Builder, node, xs, out):
    if b.dtype == np.float32:
        return b.node("HardSigmoid", [xs[0]], [out], node.name, _doc(node, "alpha 1/6, beta 0.5: relu6(x + 3)/6"),
                      alpha=1 / 6, beta=0.5)
    # HardSigmoid's alpha is a float32 attribute (1/6 is not exact): a float64 model spells out PyTorch's formula.
    n = node.name
    shifted = b.node("Add", [xs[0], _scalar(b, f"{n}/three", 3.0)], [f"{n}/plus3"], f"{n}/plus3", "x + 3")
    clipped = b.node("Clip", [shifted, _scalar(b, f"{n}/min", 0.0), _scalar(b, f"{n}/max", 6.0)], [f"{n}/relu6"],
                     f"{n}/relu6", "relu6(x + 3)")
    return b.node("Div", [clipped, _scalar(b, f"{n}/six", 6.0)], [out], n,
                  _doc(node, "relu6(x + 3) / 6 in float64 (HardSigmoid's alpha attribute is float32)"))


def _hardswish(b: _Builder, node, xs, out):
    if not b.need(node, "hardswish", "type"):
        return out
    return b.node("HardSwish", [xs[0]], [out], node.name, _doc(node, "x * relu6(x + 3) / 6"))


def _gelu(b: _Builder, node, xs, out):
    if not b.need(node, "gelu", "type"):
        return out
    return b.node("Gelu", [xs[0]], [out], node.name, _doc(node), approximate=node.attrs["approximate"])


def _eps_exact(b: _Builder, node, x: str) -> tuple[str, float]:
    """(input, epsilon attribute) for a normalisation whose `epsilon` is a float32 attribute. A float64 model
    whose eps float32 cannot hold scales its input by c = sqrt(float32(eps) / eps) first: normalising c*x with
    c^2 * eps gives the same result, and c^2 * eps = float32(eps) is exact."""
    eps = float(node.attrs["eps"])
    eps32 = float(np.float32(eps))
    if b.dtype == np.float32 or eps32 == eps:
        return x, eps32
    c = b.const(f"{node.name}/eps_scale", np.array(np.sqrt(eps32 / eps), dtype=b.dtype))
    x = b.node("Mul", [x, c], [f"{node.name}/scaled"], f"{node.name}/eps_scale",
               f"x * sqrt(float32(eps) / eps): normalising that with float32(eps) = normalising x with eps {eps:g} "
               "(the epsilon attribute is float32)")
    return x, eps32


def _stash(b: _Builder) -> int:
    """stash_type: the precision of the mean and variance; float64 models compute them in float64."""
    return TensorProto.DOUBLE if b.dtype == np.float64 else TensorProto.FLOAT


def _layernorm(b: _Builder, node, xs, out):
    if not b.need(node, "layernorm", "type"):
        return out
    scale, bias = _affine(b, node, node.shape)
    x, eps = _eps_exact(b, node, xs[0])
    # stash_type stays its default: onnx.reference implements only that (onnxruntime and the evaluator compute a
    # float64 model's statistics in float64 all the same).
    return b.node("LayerNormalization", [x, scale, bias], [out], node.name, _doc(node, "axis 1: over C, H, W"),
                  axis=1, epsilon=eps)


def _groupnorm(b: _Builder, node, xs, out):
    if not b.need(node, "groupnorm", "type"):
        return out
    scale, bias = _affine(b, node, (node.shape[0],))
    x, eps = _eps_exact(b, node, xs[0])
    return b.node("GroupNormalization", [x, scale, bias], [out], node.name, _doc(node),
                  num_groups=node.attrs["groups"], epsilon=eps, stash_type=_stash(b))


def _exact32(*values) -> bool:
    return all(float(np.float32(v)) == v for v in values)


def _lrn(b: _Builder, node, xs, out):
    """LRN when its window is PyTorch's (odd size: ONNX centres an even window one channel later) and its float
    attributes hold the values (float32 models, or float32-exact values); else PyTorch's own formula: an average
    pool of x^2 over `size` zero-padded channels (a 3-D AveragePool), then (k + alpha * avg)^beta."""
    a, n = node.attrs, node.name
    size = a["size"]
    if size % 2 and (b.dtype == np.float32 or _exact32(a["alpha"], a["beta"], a["k"])):
        return b.node("LRN", [xs[0]], [out], n, _doc(node, "k is ONNX's bias"), size=size, alpha=float(a["alpha"]),
                      beta=float(a["beta"]), bias=float(a["k"]))
    why = ("an even size: ONNX's LRN centres the window one channel later than PyTorch" if size % 2 == 0 else
           "alpha, beta or k is not exact in LRN's float32 attributes")
    sq = b.node("Mul", [xs[0], xs[0]], [f"{n}/square"], f"{n}/square", "x^2")
    axis1 = _ints(b, f"{n}/axis1", [1])
    sq5 = b.node("Unsqueeze", [sq, axis1], [f"{n}/square5d"], f"{n}/unsqueeze", "(N, 1, C, H, W) for a 3-D pool")
    avg5 = b.node("AveragePool", [sq5], [f"{n}/avg5d"], f"{n}/avg", "mean of x^2 over the channel window, zeros "
                  "counted", kernel_shape=[size, 1, 1], strides=[1, 1, 1],
                  pads=[size // 2, 0, 0, (size - 1) // 2, 0, 0], count_include_pad=1)
    avg = b.node("Squeeze", [avg5, axis1], [f"{n}/avg"], f"{n}/squeeze")
    scaled = b.node("Mul", [avg, _scalar(b, f"{n}/alpha", a["alpha"])], [f"{n}/alpha_avg"], f"{n}/alpha_mul")
    div = b.node("Add", [scaled, _scalar(b, f"{n}/k", a["k"])], [f"{n}/div"], f"{n}/k_add")
    powed = b.node("Pow", [div, _scalar(b, f"{n}/beta", a["beta"])], [f"{n}/div_pow"], f"{n}/pow")
    return b.node("Div", [xs[0], powed], [out], n, _doc(node, f"PyTorch's formula instead of LRN: {why}"))


def _reduce_mean(b: _Builder, x: str, axis: int, out: str, name: str) -> str:
    if b.opset >= 18:  # axes became an input in opset 18
        return b.node("ReduceMean", [x, _ints(b, f"{name}/axes", [axis])], [out], name, keepdims=1)
    return b.node("ReduceMean", [x], [out], name, axes=[axis], keepdims=1)


def _adaptive_avgpool(b: _Builder, node, xs, out):
    """AveragePool when the windows along both axes are uniform (one length, one stride); else each non-uniform
    axis as Slice + ReduceMean per window and a Concat (an average over a rectangle is a mean of means)."""
    from .shapes import adaptive_uniform, adaptive_window
    n, (_, h, w) = node.name, node.in_shapes[0]
    oh, ow = node.attrs["output_size"]
    uh, uw = adaptive_uniform(h, oh), adaptive_uniform(w, ow)
    if uh and uw:
        return b.node("AveragePool", [xs[0]], [out], n, _doc(node, "uniform windows: an AveragePool"),
                      kernel_shape=[uh[0], uw[0]], strides=[uh[1], uw[1]], pads=[0, 0, 0, 0])
    x = xs[0]
    for axis, size, k, uniform, last in ((2, h, oh, uh, False), (3, w, ow, uw, True)):
        target = out if last else f"{n}/rows"
        tag = "rows" if axis == 2 else "cols"
        if uniform:
            kernel, stride = ([uniform[0], 1], [uniform[1], 1]) if axis == 2 else ([1, uniform[0]], [1, uniform[1]])
            x = b.node("AveragePool", [x], [target], n if last else f"{n}/{tag}",
                       _doc(node, "uniform windows along the width") if last else "uniform windows along the height",
                       kernel_shape=kernel, strides=stride, pads=[0, 0, 0, 0])
            continue
        axes = _ints(b, f"{n}/{tag}_axis", [axis])
        parts = []
        for i in range(k):
            s, e = adaptive_window(i, size, k)
            part = b.node("Slice", [x, _ints(b, f"{n}/{tag}{i}_start", [s]), _ints(b, f"{n}/{tag}{i}_end", [e]), axes],
                          [f"{n}/{tag}{i}"], f"{n}/{tag}{i}_slice", f"window {i}: [{s}, {e})")
            parts.append(_reduce_mean(b, part, axis, f"{n}/{tag}{i}_mean", f"{n}/{tag}{i}_mean"))
        x = b.node("Concat", parts, [target], n if last else f"{n}/{tag}",
                   _doc(node, "adaptive windows as Slice + ReduceMean + Concat") if last else None, axis=axis)
    return x


def _multiply(b: _Builder, node, xs, out):
    xs = list(xs)
    gate = node.attrs["gate"]
    if gate is not None and len(node.in_shapes[gate]) == 1:
        xs[gate] = b.node("Unsqueeze", [xs[gate], _ints(b, f"{node.name}/gate_axes", [2, 3])],
                          [f"{node.name}/gate"], f"{node.name}/gate", "gate (N, C) -> (N, C, 1, 1) to broadcast")
    return b.node("Mul", xs, [out], node.name, _doc(node))


def _channel_split(b: _Builder, node, xs, out):
    a, n = node.attrs, node.name
    return b.node("Slice", [xs[0], _ints(b, f"{n}/start", [a["start"]]), _ints(b, f"{n}/stop", [a["stop"]]),
                            _ints(b, f"{n}/axis", [1])], [out], n, _doc(node, "channels start:stop"))


def _channel_shuffle(b: _Builder, node, xs, out):
    n, g, shape = node.name, node.attrs["groups"], node.shape
    grouped = _ints(b, f"{n}/grouped_shape", [0, g, shape[0] // g, *shape[1:]])
    x = b.node("Reshape", [xs[0], grouped], [f"{n}/grouped"], f"{n}/group", "(N, g, C/g, ...)")
    perm = [0, 2, 1, *range(3, len(shape) + 2)]
    x = b.node("Transpose", [x], [f"{n}/transposed"], f"{n}/transpose", "(N, C/g, g, ...)", perm=perm)
    return b.node("Reshape", [x, _ints(b, f"{n}/shape", [0, *shape])], [out], n,
                  _doc(node, "PyTorch's ChannelShuffle: Reshape, Transpose, Reshape"))


def _simple(op: str, **attrs):
    def emit(b: _Builder, node, xs, out):
        return b.node(op, list(xs), [out], node.name, _doc(node), **attrs)
    return emit


def _leaky_relu(b: _Builder, node, xs, out):
    slope = float(node.attrs["slope"])
    if b.dtype == np.float64 and float(np.float32(slope)) != slope:
        alpha = b.const(f"{node.name}/slope", np.array([slope], dtype=b.dtype))
        return b.node("PRelu", [xs[0], alpha], [out], node.name,
                      _doc(node, "PRelu with a float64 slope: LeakyRelu's alpha attribute is float32"))
    return b.node("LeakyRelu", [xs[0]], [out], node.name, _doc(node), alpha=slope)


def _pool(b: _Builder, node, xs, out):
    """MaxPool/AveragePool without ceil_mode: where PyTorch's ceil_mode adds a last window that hangs past the
    padded input, that overhang becomes extra end padding that is never counted (max ignores it, average
    excludes it). Runtimes disagree on ceil_mode (onnx's reference evaluator shifts such average windows;
    ONNX's size rule ignores PyTorch's 'no window may start in the end padding', per axis); floor mode with
    explicit padding is computed alike everywhere."""
    a = node.attrs
    kernel, stride = list(a["kernel"]), list(a["stride"])
    t, l, bt, r = a["pads"]
    eh, ew = _ceil_overhang(node)
    note = (f"ceil_mode as {eh} extra bottom row(s) and {ew} extra right column(s) of padding that never count"
            if eh or ew else None)
    x = xs[0]
    if node.type == "maxpool":
        pads = [t, l, bt + eh, r + ew]
        if any(p >= k for p, k in zip(pads, kernel + kernel)):
            # A dilated kernel allows padding up to half its span, but onnxruntime wants pads < kernel_shape:
            # pad explicitly with -inf (what max-pool padding means) instead.
            amounts = b.const(f"{node.name}/pads", np.array([0, 0, *pads[:2], 0, 0, *pads[2:]], dtype=np.int64))
            x = b.node("Pad", [x, amounts, b.const(f"{node.name}/pad_value", np.array(-np.inf, dtype=b.dtype))],
                       [f"{node.name}/padded"], f"{node.name}/pad", "padding of -inf, as max-pool padding is")
            pads = [0, 0, 0, 0]
            note = "padding (and ceil_mode) done by the Pad node before it, as onnxruntime needs pads < kernel"
        return b.node("MaxPool", [x], [out], node.name, _doc(node, note), kernel_shape=kernel, strides=stride,
                      pads=pads, dilations=list(a["dilation"]), ceil_mode=0)
    cip = int(a["count_include_pad"])
    pads = [t, l, bt, r]
    if eh or ew:
        if cip and any(pads):  # the declared padding counts and the overhang does not: make the former real zeros
            amounts = b.const(f"{node.name}/pads", np.array([0, 0, t, l, 0, 0, bt, r], dtype=np.int64))
            x = b.node("Pad", [x, amounts], [f"{node.name}/padded"], f"{node.name}/pad",
                       "count_include_pad with ceil_mode: the declared padding as zeros that count")
            pads = [0, 0, 0, 0]
        pads = [pads[0], pads[1], pads[2] + eh, pads[3] + ew]
        cip = 0
    return b.node("AveragePool", [x], [out], node.name, _doc(node, note), kernel_shape=kernel, strides=stride,
                  pads=pads, count_include_pad=cip, ceil_mode=0)


def _ceil_overhang(node) -> tuple[int, int]:
    """Rows/columns the last window reaches past the padded input (0 when it does not), per axis."""
    a = node.attrs
    dil = a.get("dilation", (1, 1))
    extra = []
    for axis in (0, 1):
        size = node.in_shapes[0][1 + axis] + a["pads"][axis] + a["pads"][axis + 2]
        reach = (node.shape[1 + axis] - 1) * a["stride"][axis] + dil[axis] * (a["kernel"][axis] - 1) + 1
        extra.append(max(reach - size, 0))
    return extra[0], extra[1]


def _dropout(b: _Builder, node, xs, out):
    ratio = b.const(f"{node.name}/ratio", np.array(node.attrs["rate"], dtype=b.dtype))
    return b.node("Dropout", [xs[0], ratio], [out], node.name, _doc(node, "identity at inference"))


def _dense(b: _Builder, node, xs, out):
    inputs = [xs[0], b.weight(f"{node.name}.weight", b.model.params)]
    if "bias" in node.params:
        inputs.append(b.weight(f"{node.name}.bias", b.model.params))
    return b.node("Gemm", inputs, [out], node.name, _doc(node, "weight (out, in) as PyTorch: transB=1"), transB=1)


def _add(b: _Builder, node, xs, out):
    return b.node("Add" if len(xs) == 2 else "Sum", list(xs), [out], node.name, _doc(node))


EMITTERS = {
    "conv2d": _conv2d,
    "batchnorm": _batchnorm,
    "relu": _simple("Relu"),
    "leaky_relu": _leaky_relu,
    "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"),
    "softmax": _simple("Softmax", axis=1),
    "maxpool": _pool,
    "avgpool": _pool,
    "global_avgpool": _simple("GlobalAveragePool"),
    "flatten": _simple("Flatten", axis=1),
    "dropout": _dropout,
    "dense": _dense,
    "add": _add,
    "concat": _simple("Concat", axis=1),
    "relu6": _relu6,
    "silu": _silu,
    "hardswish": _hardswish,
    "hardsigmoid": _hardsigmoid,
    "gelu": _gelu,
    "layernorm": _layernorm,
    "groupnorm": _groupnorm,
    "lrn": _lrn,
    "adaptive_avgpool": _adaptive_avgpool,
    "multiply": _multiply,
    "channel_split": _channel_split,
    "channel_shuffle": _channel_shuffle,
}


def _doc(node, extra: str | None = None) -> str:
    """The layer as written in the spec (shown by Netron), plus a note on any conversion."""
    fields = node.layer.model_dump(exclude_none=True, exclude={"name"})
    text = f"{node.name}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
    if node.line:
        text += f" (spec line {node.line})"
    return text + (f"; {extra}" if extra else "")


# ---------------------------------------------------------------- the model


def check_opset(opset) -> int:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset!r} is not supported: cnnspec exports opsets {MIN_OPSET} to {MAX_OPSET} "
                          f"(default {DEFAULT_OPSET})")
    return int(opset)


def live_layers(graph) -> list:
    """The nodes the output depends on, in declaration order (layers after `output:` are not exported)."""
    need, stack = set(), [graph.output]
    while stack:
        name = stack.pop()
        if name in need or name == INPUT_NAME:
            continue
        need.add(name)
        stack.extend(graph.nodes[name].inputs)
    return [n for n in graph.nodes.values() if n.name in need]


def spec_sha256(spec) -> str:
    doc = spec.document
    text = doc.source if doc is not None else spec.model_dump_json()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def to_onnx(model, opset: int = DEFAULT_OPSET, *, metadata: dict | None = None) -> onnx.ModelProto:
    """Build the ONNX model (no file written). Raises ExportError/SpecError when the opset cannot express it."""
    opset = check_opset(opset)
    graph, spec = model.graph, model.spec
    dtype = np.dtype(model.dtype)
    if dtype not in _ELEM_TYPE:
        raise ExportError(f"cannot export dtype {dtype}: float32 or float64 only")
    weight_bytes = sum(np.asarray(v).nbytes for v in (*model.params.values(), *model.buffers.values()))
    if weight_bytes > MAX_PROTO_BYTES:
        raise ExportError(f"the weights take {weight_bytes / 2**30:.2f} GiB; one .onnx file holds at most 2 GiB "
                          "(protobuf's limit)")
    b = _Builder(model, opset, dtype)
    hwc = graph.layout == "HWC" and len(graph.input_shape) == 3
    tensor = {INPUT_NAME: INPUT_NAME}
    if hwc:
        tensor[INPUT_NAME] = b.node("Transpose", [INPUT_NAME], [f"{INPUT_NAME}/nchw"], f"{INPUT_NAME}/to_nchw",
                                    "HWC layout: NHWC input -> NCHW", perm=[0, 3, 1, 2])
    out_node = graph.nodes[graph.output]
    out_hwc = hwc and len(out_node.shape) == 3
    for node in live_layers(graph):
        name = f"{node.name}/nchw" if out_hwc and node.name == graph.output else node.name
        tensor[node.name] = EMITTERS[node.type](b, node, [tensor[i] for i in node.inputs], name)
        if node.name != graph.output:
            b.value_info.append(helper.make_tensor_value_info(name, b.elem, [BATCH_DIM, *node.shape]))
    if b.problems:
        doc = spec.document
        raise SpecError(b.problems, doc.filename if doc else "<spec>", doc.source if doc else None)
    if out_hwc:
        b.value_info.append(helper.make_tensor_value_info(f"{graph.output}/nchw", b.elem,
                                                          [BATCH_DIM, *out_node.shape]))
        b.node("Transpose", [f"{graph.output}/nchw"], [graph.output], f"{graph.output}/to_hwc",
               "HWC layout: NCHW output -> NHWC", perm=[0, 2, 3, 1])
    g = helper.make_graph(
        b.nodes, spec.name,
        [helper.make_tensor_value_info(INPUT_NAME, b.elem, [BATCH_DIM, *spec.input.shape])],
        [helper.make_tensor_value_info(graph.output, b.elem, [BATCH_DIM, *graph.declared(out_node.shape)])],
        b.inits, doc_string=spec.description or "", value_info=b.value_info)
    opsets = [helper.make_opsetid("", opset)]
    m = helper.make_model(g, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                          producer_name="cnnspec", producer_version=__version__, doc_string=spec.description or "")
    props = {"cnnspec.spec_name": spec.name, "cnnspec.version": __version__, "cnnspec.spec_sha256": spec_sha256(spec),
             "cnnspec.init_seed": str(spec.init.seed), "cnnspec.init_scheme": spec.init.scheme,
             "cnnspec.layout": graph.layout, "cnnspec.dtype": dtype.name}
    if spec.source_path:
        props["cnnspec.spec_file"] = Path(spec.source_path).name
    props.update({k: str(v) for k, v in (metadata or {}).items()})
    helper.set_model_props(m, props)
    onnx.checker.check_model(m, full_check=True)  # a failure here is a bug in this module, not the user's
    return m


def cast_model(m: onnx.ModelProto, dtype) -> onnx.ModelProto:
    """A copy of `m` whose floating-point tensors (initializers, inputs, outputs, value_info) are `dtype`.

    Used to run a float64 export through onnxruntime, whose CPU provider has no float64 Conv."""
    elem = _ELEM_TYPE[np.dtype(dtype)]
    floats = set(_ELEM_TYPE.values())
    out = onnx.ModelProto()
    out.CopyFrom(m)
    g = out.graph
    for i, t in enumerate(g.initializer):
        if t.data_type in floats and t.data_type != elem:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(dtype), t.name))
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.type.tensor_type.elem_type in floats:
            vi.type.tensor_type.elem_type = elem
    for n in g.node:
        for a in n.attribute:  # the precision of a normalisation's statistics follows the model's
            if a.name == "stash_type" and a.i in floats:
                a.i = elem
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type in floats and a.t.data_type != elem:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(dtype), a.t.name))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i in floats:
                    a.i = elem
    return out


def to_text(m: onnx.ModelProto, data_file: str | None = None, inline: int = TEXT_INLINE_VALUES) -> str:
    """ONNX's textual form (onnx.printer) for reading: tensors of more than `inline` values are shown as
    `["location": data_file]` (where their values are) instead of every number."""
    if data_file is not None:
        shown = onnx.ModelProto()
        shown.CopyFrom(m)
        for t in shown.graph.initializer:
            if prod(t.dims) > inline:
                for name in ("raw_data", "float_data", "double_data", "int32_data", "int64_data"):
                    t.ClearField(name)
                t.data_location = TensorProto.EXTERNAL
                t.external_data.add(key="location", value=data_file)
        m = shown
    return onnx.printer.to_text(m) + "\n"


def text_path(path) -> Path:
    return Path(path).with_suffix(TEXT_SUFFIX)


def export_onnx(model, path, opset: int = DEFAULT_OPSET, text: bool = False, *,
                metadata: dict | None = None) -> onnx.ModelProto:
    """Write `model` as ONNX to `path` (atomically); with text=True also its textual form at path.onnxtxt.

    Returns the ModelProto. Nothing is written unless everything succeeds."""
    m = to_onnx(model, opset, metadata=metadata)
    path = Path(path)
    files = {path: m.SerializeToString()}
    if text:
        tpath = text_path(path)
        if tpath == path:
            raise ExportError(f"{path}: the model file cannot end in {TEXT_SUFFIX}, which --text uses for the "
                              "textual form; name it .onnx")
        files[tpath] = to_text(m, path.name).encode("utf-8")
    write_files(files)
    return m


def ort_float64_missing(m: onnx.ModelProto) -> list[str]:
    """The ops of a float64 model that onnxruntime's CPU provider cannot run in float64 (empty: it can)."""
    if not any(i.type.tensor_type.elem_type == TensorProto.DOUBLE for i in m.graph.input):
        return []
    used = {n.op_type for n in m.graph.node if n.domain in ("", "ai.onnx")
            and not (n.op_type == "Gelu" and any(a.name == "approximate" and a.s == b"tanh" for a in n.attribute))}
    return [op for op in ORT_NO_FLOAT64_OPS if op in used]


def summary(m: onnx.ModelProto) -> dict:
    """A few facts about an exported model, for the CLI."""
    weights = [t for t in m.graph.initializer if "/" not in t.name]  # helper constants carry a '/'
    stats = sum(prod(t.dims) for t in weights if t.name.endswith(("running_mean", "running_var")))
    return {"opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
            "ir_version": m.ir_version, "nodes": len(m.graph.node),
            "parameters": int(sum(prod(t.dims) for t in weights) - stats), "buffers": int(stats)}


__all__ = ["export_onnx", "to_onnx", "cast_model", "ExportError", "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET"]
