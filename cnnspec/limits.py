"""Size and memory limits: estimate from the graph alone what the engine will allocate, and refuse first.

Two limits, both set by one number, the memory limit (`max_memory`, bytes):

- total parameters: at most max_memory / 8, the parameters' float64 values must fit in the limit
  (2**29 = 536,870,912 with the default; VGG-16 has 138M). Checked when a spec is loaded.
- working memory: the estimate below for what a command will do must be at most max_memory
  (default 4 GiB). Loading a spec (`check`, `summary`, `explain`, `compile`) checks inference at a
  batch of 1 in the spec's dtype; `compile()` checks its dtype; `run`, `train`, `verify`, `gradcheck`
  and Model.forward / backward check the real batch and what they do (forward, backward, SGD step).

The limit comes from, in order: an explicit value (`--max-memory SIZE`, `max_memory=`), the
environment variable CNNSPEC_MAX_MEMORY, DEFAULT_MAX_MEMORY. A SIZE is bytes, or a number with a unit:
KiB/MiB/GiB/TiB (or K/M/G/T), binary; kB/MB/GB/TB, decimal.

The estimate (docs/spec-language.md#the-memory-estimate has the per-layer table) is integer arithmetic
on shapes, in the engine's dtype, for a batch of N:

    total = weights + gradients + momentum + input + max(init, forward, loss, backward, step)
            + objects + extra
    init     = 8 x the largest parameter tensor's values (init.py draws it in float64)
    forward  = max over layers i of (kept(1..i) + forward temporaries of i)
    loss     = kept(all) + 8 x the output (the loss's temporaries, dloss and the target)
    backward = kept(all) + dloss + max over layers, in reverse, of (the pending input gradients +
               the layer's own backward temporaries + its input gradients + its parameter gradients)
    step     = kept(all) + dloss + the old parameters (the layer caches hold them until the next
               forward) + 4 x the largest parameter tensor
    kept(i)  = layer i's output + what it keeps for backward (im2col columns of a convolution, masks,
               batch norm's centred input)
    objects  = Python objects and NumPy's ufunc buffers (`overhead`); the spec-level check leaves
               them out (arrays only)

Each term is what cnnspec/ops allocate, counted generously (a copy that happens only for some memory
layouts is always counted), so the estimate is an upper bound of the engine's real peak; the tests
measure it with tracemalloc. Pure Python: loading a spec does not import NumPy.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from math import prod
from typing import TYPE_CHECKING

from .errors import CnnspecError, DataError

if TYPE_CHECKING:
    from .graph import Graph, Node

GiB = 2**30
# A laptop or CI runner has 8-16 GiB; 4 GiB leaves room for the OS, the editor and the browser, and is
# far more than any spec in specs/ needs (a training step of bench-cnn on a batch of 32: ~90 MiB).
DEFAULT_MAX_MEMORY = 4 * GiB
ENV_VAR = "CNNSPEC_MAX_MEMORY"
PARAM_BYTES = 8  # the parameter limit counts float64 values: max_params = max_memory // 8

_ITEMSIZE = {"float64": 8, "float32": 4}
_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30,
          "t": 2**40, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


class MemoryLimitError(DataError):
    """What a command would do needs more memory (estimated before allocating) than the limit allows."""


# ---------------------------------------------------------------- the limit


def parse_size(value) -> int:
    """'8GiB', '512 MiB', '1.5G', '4000000000', 4096 -> bytes. ValueError saying what is valid."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size like 8GiB, 512MiB or a number of bytes, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.fullmatch(value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read {value!r} as a size; write e.g. 8GiB, 512MiB, 2G or a number of bytes "
                             "(units: KiB, MiB, GiB, TiB or K, M, G, T are powers of 1024; kB, MB, GB, TB of 1000)")
        size = int(Fraction(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < 1:
        raise ValueError(f"a memory limit must be at least 1 byte, got {value!r}")
    return size


def resolve(max_memory=None) -> int:
    """The memory limit in bytes: `max_memory` if given (bytes or a SIZE text), else CNNSPEC_MAX_MEMORY,
    else DEFAULT_MAX_MEMORY."""
    if max_memory is not None:
        try:
            return parse_size(max_memory)
        except ValueError as exc:
            raise DataError(f"max_memory: {exc}") from None
    env = os.environ.get(ENV_VAR, "").strip()
    if not env:
        return DEFAULT_MAX_MEMORY
    try:
        return parse_size(env)
    except ValueError as exc:
        raise CnnspecError(f"environment variable {ENV_VAR}={env!r}: {exc}") from None


def max_params(limit: int) -> int:
    """The total-parameter limit that goes with a memory limit."""
    return limit // PARAM_BYTES


def fmt(n: int) -> str:
    """Bytes for people: '1,000 bytes', '12.50 KiB', '3.20 MiB', '60.00 GiB' (never larger units)."""
    if n < 1024:
        return f"{n:,} bytes"
    for unit, scale in (("KiB", 2**10), ("MiB", 2**20)):
        if n < 1024 * scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / GiB:,.2f} GiB"


def limit_text(limit: int) -> str:
    return fmt(limit) + (f" ({limit:,} bytes)" if limit >= 1024 else "")


def raise_hint(need: int) -> str:
    """How to allow `need` bytes: the three ways to set the limit, with a SIZE that is enough."""
    size = f"{-(-need // GiB)}GiB" if need > 2**30 else f"{max(-(-need // 2**20), 1)}MiB"
    return (f"raise the limit (--max-memory {size}, {ENV_VAR}={size} or compile(..., max_memory=\"{size}\")) "
            "if the machine has that much memory to spare")


# ---------------------------------------------------------------- per-layer costs


@dataclass(frozen=True)
class LayerCost:
    """Bytes one layer needs for a batch: its output (kept until the next forward), what its forward keeps
    for backward, and the short-lived arrays of its forward and its backward (besides the gradients the
    backward returns, which the simulation in `estimate` counts)."""

    name: str
    output: int
    cache: int
    forward: int
    backward: int
    params: int        # bytes of its parameters (as many again for their gradients)
    buffers: int
    largest_param: int


def _reach(size, k, s, p0, d, out) -> int:
    """Padding the pool windows reach past the input's end (ceil_mode overhang included); ops/pooling.py."""
    return max((out - 1) * s + d * (k - 1) + 1 - p0 - size, 0)


def layer_cost(node: "Node", batch: int, itemsize: int, in_bytes: list[int], train: bool) -> LayerCost:
    """What cnnspec/ops/<op>.py allocates for `node`, in bytes, counted generously (see the module doc)."""
    N, s, a, t = batch, itemsize, node.attrs, node.type
    X = sum(in_bytes)                      # all inputs
    V = N * prod(node.shape)               # output values
    Y = V * s                              # output bytes
    cache = fwd = bwd = 0
    if t == "conv2d":
        c, h, w = node.in_shapes[0]
        _, oh, ow = node.shape
        f, cg, kh, kw = node.params["weight"]
        pt, pl, pb, pr = a["pads"]
        rows = c * kh * kw
        fused = "bias" in node.params and a["groups"] == 1
        padded = N * c * (h + pt + pb) * (w + pl + pr) * s if (pt or pl or pb or pr) else 0
        cache = (rows + fused) * oh * ow * N * s                 # im2col columns (+ the bias's row of ones)
        fwd = X + padded + f * (cg * kh * kw + 1) * s             # batch-last copy, padded copy, [W | b]
        bwd = Y + rows * oh * ow * N * s + padded                # batch-last dout, column gradient, col2im target
        if a["padding_mode"] != "zeros":
            bwd += X                                              # folding the border back (windows.unpad_grad)
        if a["groups"] > 1:
            bwd += Y                                              # the stacked matmuls' operand copy
    elif t in ("maxpool", "avgpool"):
        c, h, w = node.in_shapes[0]
        _, oh, ow = node.shape
        (kh, kw), (sh, sw), (pt, pl, _, _) = a["kernel"], a["stride"], a["pads"]
        dh, dw = a.get("dilation", (1, 1))
        hr, wr = _reach(h, kh, sh, pt, dh, oh), _reach(w, kw, sw, pl, dw, ow)
        full = N * c * (pt + h + hr) * (pl + w + wr) * s
        padded = full if (pt or pl or hr or wr) else 0
        if t == "maxpool":
            idx = 1 if kh * kw <= 256 else 4                      # argmax dtype
            argmax_pass = padded + 3 * V * idx                    # padded copy, winners, the index array
            cache = V * idx if train else 0
            fwd = argmax_pass if train else padded
            bwd = padded + Y + V + (0 if train else argmax_pass)  # target, g * (argmax == k), the mask
        else:
            fwd = padded
            bwd = padded + Y                                      # target, dout / divisor
    elif t == "batchnorm":
        cache = X                                                 # centred input (train), channel rows (eval)
        fwd = X                                                   # channel rows of a batch-first input
        bwd = Y + X + (0 if train else 2 * X)                     # channel rows of dout, a reduction's; eval: x_hat
    elif t == "relu":
        bwd = V                                                   # out > 0
    elif t == "leaky_relu":
        cache, fwd, bwd = V, Y, Y                                 # the x > 0 mask; slope * x; slope * dout
    elif t == "sigmoid":
        fwd, bwd = 4 * Y, 2 * Y                                   # exp(-|x|), 1/(1 + e), e * r, the x >= 0 mask
    elif t == "tanh":
        bwd = 2 * Y
    elif t == "softmax":
        bwd = Y
    elif t == "dropout" and train and a["rate"] > 0:
        cache, fwd = V, 8 * V                                     # the keep mask; the float64 random draws
    elif t == "global_avgpool":
        bwd = Y
    elif t == "relu6":
        bwd = 3 * V                                               # out > 0, out < 6, their conjunction
    elif t == "silu":
        cache, fwd, bwd = Y, 4 * Y + V, 2 * Y                      # sigmoid(x) kept; exp, 1/(1 + e), e * r, mask
    elif t == "hardsigmoid":
        fwd, bwd = 2 * Y, 3 * V + Y                                # x + 3, clip; the interval masks, dout / 6
    elif t == "hardswish":
        fwd, bwd = 3 * Y, 2 * V + 3 * Y                            # x + 3, clip, x * clip; masks, the slope pieces
    elif t == "gelu":
        cache = Y                                                  # Phi(x) or the tanh term
        if a["approximate"] == "tanh":
            fwd, bwd = 3 * Y, 4 * Y
        else:
            # x / sqrt(2), erf in float64 (+ a chunk of Python floats and their list: 48 bytes a value), 0.5 * (1 + erf)
            fwd, bwd = 3 * Y + 8 * V + 48 * min(V, 1 << 16), 3 * Y
    elif t in ("layernorm", "groupnorm"):
        cache, fwd, bwd = Y, 3 * X + Y, 5 * Y                      # x_hat; a contiguous copy, x - mean, its square
    elif t == "lrn":
        c = node.shape[0]
        padded = Y * (c + a["size"] - 1) // c                      # x^2 with size - 1 zero channels
        cache, fwd, bwd = Y, 4 * Y + padded, 6 * Y + padded        # the divisor; x^2, the window sums, powers
    elif t == "adaptive_avgpool":
        c, h, w = node.in_shapes[0]
        rows = N * c * node.shape[1] * w * s                       # the means along the height, before the width
        fwd, bwd = rows + X, rows + Y
    elif t == "multiply":
        bwd = Y                                                    # dout * the other input, before the gate's sum
    # channel_split (a view), channel_shuffle (one copy): their output only.
    # dense: out = x @ w.T only; its gradients are counted by `estimate`. flatten, add, concat: their output.
    params = sum(prod(p) for p in node.params.values()) * s
    buffers = sum(prod(b) * s if b else 8 for b in node.buffers.values())
    largest = max((prod(p) * s for p in node.params.values()), default=0)
    return LayerCost(node.name, Y, cache, fwd, bwd, params, buffers, largest)


# ---------------------------------------------------------------- the estimate


def threads() -> int:
    """How many threads the engine's passes use (ops/parallel.py asks here too): CNNSPEC_NUM_THREADS or
    OMP_NUM_THREADS, else the cores this process may run on."""
    for var in ("CNNSPEC_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def overhead(graph: "Graph", largest: int) -> int:
    """Memory besides the arrays: Python objects (array headers, dicts, the tape: 32 KiB and 4 KiB per
    layer) and NumPy's ufunc buffers (up to 8192 values of 8 bytes for 4 operands, in each thread that
    ops/parallel.py starts: one per 32768 values of the largest array). largest: values of the largest array."""
    threads_used = max(1, min(threads(), largest // 32768))
    return 32 * 2**10 + 4 * 2**10 * len(graph.nodes) + threads_used * 4 * min(largest, 8192) * 8


@dataclass(frozen=True)
class Estimate:
    """Peak bytes the engine needs for one pass over a batch, by part. `total` is what the limit checks."""

    batch: int
    dtype: str
    task: str                        # "a forward pass", "a forward and backward pass", "a training step (...)"
    weights: int                     # parameters and buffers
    gradients: int
    momentum: int                    # the optimizer's state: SGD's velocity (with momentum > 0), Adam's moments
    input: int                       # the input batch as the engine holds it (+ the caller's copy if converted)
    activations: int                 # every layer's output, kept until the next forward
    caches: int                      # what layers keep for backward besides their outputs
    temporaries: int                 # short-lived arrays at the peak
    peak_at: str                     # where the peak is: "the forward of 'conv1'", "the backward of 'fc'", ...
    overhead: int = 0                # Python objects and NumPy's buffers (see `overhead`)
    extra: tuple[tuple[str, int], ...] = ()

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.momentum + self.input + self.activations + self.caches
                + self.temporaries + self.overhead + sum(v for _, v in self.extra))

    def parts(self) -> list[tuple[str, int]]:
        return [("parameters and buffers", self.weights), ("gradients", self.gradients),
                ("optimizer state", self.momentum), ("input", self.input), ("activations", self.activations),
                ("layer caches for backward (im2col columns, masks)", self.caches),
                (f"temporaries (peak in {self.peak_at})", self.temporaries),
                ("Python objects and NumPy buffers", self.overhead), *self.extra]

    def describe(self) -> str:
        """'1.20 MiB of parameters and buffers, 30.00 GiB of activations, ...' (non-zero parts)."""
        return ", ".join(f"{fmt(v)} of {label}" for label, v in self.parts() if v)


def optimizer_copies(opt) -> int:
    """Arrays of each parameter's size the optimizer keeps: SGD's velocity (with momentum), Adam's and AdamW's
    two moments (three with amsgrad), RMSprop's square average (+ momentum buffer, + gradient average)."""
    if opt.type == "sgd":
        return 1 if opt.momentum != 0 else 0
    if opt.type in ("adam", "adamw"):
        return 3 if opt.amsgrad else 2
    return 1 + (opt.momentum > 0) + bool(opt.centered)


def _itemsize(dtype) -> int:
    name = getattr(dtype, "name", dtype)
    return _ITEMSIZE[str(name)]


def estimate(graph: "Graph", batch: int = 1, dtype=None, *, train: bool = False, backward: bool = False,
             step: bool = False, gradients: int | None = None, momentum: int | None = None,
             given_input: int = 0, extra: tuple[tuple[str, int], ...] | list = (),
             objects: bool = True) -> Estimate:
    """Peak memory of the engine for a batch of `batch`, from shapes only (nothing is allocated).

    train: the forward runs in train mode (batch statistics, dropout); backward: a loss and a backward
    pass follow; step: then an SGD step (training). gradients / momentum: bytes of those arrays when
    known (Model passes what it holds); by default gradients exist with backward or step, momentum
    buffers with step and a momentum > 0. given_input: bytes of the caller's input array when the engine
    converts it (a copy). extra: labelled bytes the caller adds (data sets, ONNX copies). objects: add
    `overhead(graph)` (the spec-level check counts arrays only)."""
    dtype = dtype or graph.spec.input.dtype
    s = _itemsize(dtype)
    N = batch
    nodes = list(graph.nodes.values())
    size = {"input": N * prod(graph.input_shape) * s}
    costs = []
    for node in nodes:
        c = layer_cost(node, N, s, [size[i] for i in node.inputs], train)
        size[node.name] = c.output
        costs.append(c)
    weights = sum(c.params + c.buffers for c in costs)
    params = sum(c.params for c in costs)
    grads = (params if backward or step else 0) if gradients is None else gradients
    opt = graph.spec.optimizer
    mom = (params * optimizer_copies(opt) if step else 0) if momentum is None else momentum

    # initialisation (init.py) draws each parameter tensor in float64 before converting it
    kept, peak, peak_at = 0, 0, "the forward"
    largest = max(costs, key=lambda c: c.largest_param, default=None)
    if largest is not None and largest.largest_param:
        peak, peak_at = largest.largest_param // s * 8, f"the initialisation of '{largest.name}'"
    # forward: outputs and caches accumulate; each layer's temporaries come on top while it runs
    for c in costs:
        kept += c.output + c.cache
        if kept + c.forward > peak:
            peak, peak_at = kept + c.forward, f"the forward of '{c.name}'"
    out = size[graph.output]
    dloss = out if backward or step else 0
    if backward or step:
        loss = kept + 8 * out                                     # cross_entropy/mse/bce temporaries, dloss, target
        if loss > peak:
            peak, peak_at = loss, "the loss"
        pending: dict[str, int] = {graph.output: 0}               # input gradients waiting (dloss: counted above)
        for node, c in zip(reversed(nodes), reversed(costs)):
            if node.name not in pending:
                continue                                          # not upstream of the output
            g = pending.pop(node.name)
            dx = sum(size[i] for i in node.inputs)
            accumulate = max((size[i] for i in node.inputs if i in pending), default=0)
            live = kept + dloss + sum(pending.values()) + g + c.backward + dx + c.params + accumulate
            if live > peak:
                peak, peak_at = live, f"the backward of '{c.name}'"
            for i in node.inputs:
                pending[i] = size[i]
    if step:
        # new values one tensor at a time (Model.step), while the tape still holds the old ones; the adaptive
        # optimizers' formulas make a few more temporaries of that tensor's size than SGD's
        temps = 4 if opt.type == "sgd" else 10
        upd = kept + dloss + params + temps * max((c.largest_param for c in costs), default=0)
        if upd > peak:
            peak, peak_at = upd, "the SGD step"
    activations = sum(c.output for c in costs)
    caches = sum(c.cache for c in costs)
    task = "a training step (forward, backward, SGD)" if step else "a forward and backward pass" if backward \
        else "a forward pass"
    return Estimate(batch=N, dtype=str(getattr(dtype, "name", dtype)), task=task, weights=weights, gradients=grads,
                    momentum=mom, input=size["input"] + given_input, activations=activations, caches=caches,
                    temporaries=max(peak - activations - caches, 0), peak_at=peak_at,
                    overhead=overhead(graph, max(size.values()) // s) if objects else 0, extra=tuple(extra))


def refusal(est: Estimate, limit: int, advice: str = "use a smaller batch") -> str:
    """The message of a MemoryLimitError: what was asked, the estimate by part, the limit, what to do."""
    return (f"{est.task} on a batch of {est.batch:,} in {est.dtype} needs an estimated {fmt(est.total)} "
            f"({est.total:,} bytes): {est.describe()}; the limit is {limit_text(limit)}. "
            f"{advice[:1].upper() + advice[1:]}, or {raise_hint(est.total)}")


def require(est: Estimate, limit: int, advice: str = "use a smaller batch") -> Estimate:
    """est itself when it fits in `limit`; MemoryLimitError with the numbers otherwise."""
    if est.total > limit:
        raise MemoryLimitError(refusal(est, limit, advice))
    return est


def largest_batch(graph: "Graph", limit: int, dtype=None, cap: int = 2**40, **kwargs) -> int:
    """The largest batch whose estimate fits in `limit` (0 if not even 1 does), by bisection."""
    if estimate(graph, 1, dtype, **kwargs).total > limit:
        return 0
    lo, hi = 1, 2
    while hi < cap and estimate(graph, hi, dtype, **kwargs).total <= limit:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate(graph, mid, dtype, **kwargs).total <= limit:
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------- the spec-level check


def _key(node: "Node") -> str | None:
    """The layer key that sets its size, for the caret: filters, units; else the layer's type."""
    key = {"conv2d": "filters", "dense": "units"}.get(node.type)
    return key if key and key in node.layer.model_fields_set else None


def _located(message: str, node: "Node | None") -> tuple[str, tuple, bool]:
    if node is None:
        return message, ("input", "shape"), False
    key = _key(node)
    return f"layer '{node.name}' ({node.type}): {message}", ("layers", node.index, key or "type"), key is None


def spec_problem(graph: "Graph", limit: int, dtype=None) -> tuple[str, tuple, bool] | None:
    """(message, path in the spec, caret on the key) when the model is too big to load and run one sample
    in `dtype`, else None.

    The path points at the input shape when one sample of the input alone is too big, else at the layer
    from which on the model up to that layer is too big: the first layer that crosses the parameter limit,
    else the memory limit. Inference at a batch of 1 is the least any command does; the whole-model
    numbers are `estimate(graph, 1, dtype, objects=False)`'s (arrays only)."""
    dtype = str(getattr(dtype, "name", dtype or graph.spec.input.dtype))
    s = _itemsize(dtype)
    nodes = list(graph.nodes.values())
    pmax = max_params(limit)
    total_params = graph.param_count
    whole = estimate(graph, 1, dtype, objects=False)
    if total_params <= pmax and whole.total <= limit:
        return None
    tail = (f"The whole model has {total_params:,} parameters and needs an estimated {fmt(whole.total)} to run "
            f"one sample in {dtype} ({whole.describe()}). Make the model smaller, or "
            f"{raise_hint(max(whole.total, total_params * PARAM_BYTES))}")
    if total_params > pmax:
        count = 0
        for node in nodes:
            count += node.param_count
            if count > pmax:
                return _located(f"the model up to this layer has {count:,} parameters ({fmt(count * PARAM_BYTES)} "
                                f"in float64); the limit is {pmax:,} parameters (the memory limit {fmt(limit)} / "
                                f"{PARAM_BYTES} bytes). {tail}", node)
        raise AssertionError("the parameter count crossed the limit nowhere")
    size = {"input": prod(graph.input_shape) * s}
    if size["input"] > limit:
        return _located(f"one sample of this input is {fmt(size['input'])} in {dtype}; the memory limit is "
                        f"{limit_text(limit)}. {tail}", None)
    weights = kept = peak = init = 0
    for node in nodes:
        c = layer_cost(node, 1, s, [size[i] for i in node.inputs], False)
        size[node.name] = c.output
        weights += c.params + c.buffers
        kept += c.output + c.cache
        peak = max(peak, kept + c.forward)
        init = max(init, c.largest_param // s * 8)
        need = weights + size["input"] + max(peak, init)
        if need > limit:
            return _located(f"running one sample in {dtype} through the model up to this layer needs an estimated "
                            f"{fmt(need)} ({fmt(weights)} of parameters and buffers, {fmt(need - weights)} "
                            f"of input, activations and temporaries); the memory limit is {limit_text(limit)}. "
                            f"{tail}", node)
    raise AssertionError("the estimate crossed the limit nowhere")


def check_spec(graph: "Graph", limit: int, dtype=None) -> None:
    """Raise a positioned ShapeError when `spec_problem` finds one (Model uses this for its own dtype)."""
    found = spec_problem(graph, limit, dtype)
    if found is None:
        return
    from .errors import Problem, ShapeError
    message, path, key = found
    doc = graph.spec.document
    problem = doc.problem(message, path, key) if doc else Problem(message)
    raise ShapeError([problem], doc.filename if doc else "<spec>", doc.source if doc else None)
