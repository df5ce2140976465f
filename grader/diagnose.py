"""Misconception detectors: recompute the quantity under a classic wrong assumption and compare.

Each detector gets a Context (the question, the student's answer, the reference run) and yields an
explanation for EVERY wrong assumption that reproduces the student's answer: a Diagnosis, or a tuple of
Diagnosis objects for mistakes that only together give the answer (padding ignored AND the layout swapped).
Shapes are recomputed with cnnspec.shapes (never a formula of our own), values with the engine (a one-layer
model with an attribute changed, the loss with the other reduction, the optimizer with a flipped sign, ...).
A detector that fails for any reason is skipped: diagnosing never stops grading.

A detector that cannot tell two causes apart names both as possible: when several explanations (of the
fewest mistakes) reproduce the answer, `diagnose` returns each of them marked with the others' codes in
`alternatives` and says so in the message ("possibly (1 of 2 causes that give this answer): ..."). When
there are more than `limit` of them it names none. Every detector compares with the REFERENCE's upstream
values: when the answer is right for the student's own wrong upstream answer (error carried forward) the
grader does not diagnose it at all (grading.py), since each of these explanations would presume the
upstream answer was right.

The wording is generic; an assignment adds its own (a lecture's notes) through `hints:` (assignment.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import numpy as np

from cnnspec import shapes
from cnnspec.losses import LOSSES
from cnnspec.schema import INPUT_NAME

from .compare import Tolerance, fmt_shape, matches
from .reference import ModelRun, bn_axes, kernel_shape


@dataclass(frozen=True)
class Diagnosis:
    code: str
    message: str
    alternatives: tuple[str, ...] = ()   # codes of other explanations that give the same answer


# Every code a detector can give, by question kind (assignment `hints:` are checked against it; the tests check
# that it lists every code in this file).
CODES: dict[str, tuple[str, ...]] = {
    "output_shape": ("no_plus_one", "padding_ignored", "padding_one_side", "stride_ignored", "dilation_ignored",
                     "rounded_up", "layout_swapped", "channels_from_input", "batch_dim_included"),
    "param_count": ("bias_forgotten", "one_filter_only", "kernel_depth_forgotten", "one_bias_for_all",
                    "buffers_counted", "bn_params_forgotten"),
    "kernel_shape": ("layout_swapped", "kernel_depth_forgotten", "depth_from_filters", "all_kernels"),
    "weight_shape": ("tensorflow_order", "in_out_swapped", "layout_swapped", "one_kernel_only", "transposed"),
    "activation": ("layout_swapped", "layer_not_applied", "softmax_given", "abs_not_relu", "bn_unbiased_variance",
                   "bn_epsilon_forgotten", "bn_divided_by_variance", "bn_scale_shift_forgotten", "bias_forgotten",
                   "kernel_flipped", "wrong_pooling", "too_few_digits"),
    "bn_mean": ("one_sample_only", "channels_pooled", "too_few_digits"),
    "bn_var": ("bn_unbiased_variance", "std_not_var", "var_plus_eps", "mean_not_subtracted", "one_sample_only",
               "channels_pooled", "too_few_digits"),
    "prediction": ("one_based", "scores_not_class", "argmin"),
    "loss": ("sum_vs_mean", "half_mse", "not_squared", "rmse", "log_base", "sign", "softmax_twice",
             "probability_not_loss", "no_softmax", "too_few_digits"),
    "gradient": ("wrong_sign", "transposed", "factor_two", "sum_vs_mean", "dloss_dout", "input_gradient",
                 "too_few_digits"),
    "param_after_steps": ("wrong_sign", "no_learning_rate", "step_not_weight", "gradient_not_weight", "unchanged",
                          "weight_decay_forgotten", "one_step_only", "momentum_forgotten", "too_few_digits"),
}
CODES["output"] = CODES["activation"]


@dataclass
class Context:
    q: Any
    answer: np.ndarray           # as the student gave it (not reshaped)
    expected: Any                # after the question's index
    full: Any                    # before the index
    run: ModelRun
    tol: Optional[Tolerance]     # None: exact comparison

    def select(self, candidate):
        index = getattr(self.q, "index", None)
        if candidate is None or index is None:
            return candidate
        c = np.asarray(candidate)
        return c[tuple(index)] if c.shape == np.shape(self.full) else None

    def same(self, candidate, exact: bool = False) -> bool:
        """Does the answer equal `candidate` (a full-size quantity), but not the right answer?"""
        c = self.select(candidate)
        if c is None:
            return False
        tol = None if exact else self.tol
        return matches(self.answer, c, tol) and not matches(np.asarray(c), self.expected, tol)

    @property
    def ints(self) -> Optional[list[int]]:
        a = np.asarray(self.answer).reshape(-1)
        if a.dtype.kind in "iu" or (a.size and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            return [int(v) for v in a]
        return None


Detector = Callable[[Context], Iterable[Diagnosis]]
DETECTORS: dict[str, list[Detector]] = {}


def detector(*kinds: str):
    def register(fn):
        for k in kinds:
            DETECTORS.setdefault(k, []).append(fn)
        return fn
    return register


def diagnose(ctx: Context, limit: int = 4) -> list[Diagnosis]:
    """The recognised mistakes behind a wrong answer. One explanation: its diagnoses. Several that reproduce the
    answer equally well (the fewest mistakes each): all of them, each marked as one possible cause with the
    others' codes in `alternatives`; more than `limit`: none (the answer says too little to tell)."""
    explanations: list[list[Diagnosis]] = []
    seen: set[frozenset] = set()
    detectors = list(DETECTORS.get(ctx.q.kind, []))
    if ctx.tol is not None:
        detectors.append(lambda c: [d for d in [rounding_mistake(c)] if d])
    for fn in detectors:
        try:
            for item in fn(ctx) or ():
                parts = list(item) if isinstance(item, (list, tuple)) else [item]
                key = frozenset(d.code for d in parts)
                if parts and key not in seen:
                    seen.add(key)
                    explanations.append(parts)
        except Exception:  # noqa: BLE001 - a detector that cannot run explains nothing; grading goes on
            continue
    if not explanations:
        return []
    fewest = min(len(e) for e in explanations)
    explanations = [e for e in explanations if len(e) == fewest]   # a single slip before two at once
    if len(explanations) == 1:
        return explanations[0]
    if len(explanations) > limit:
        return []
    n = len(explanations)
    out: list[Diagnosis] = []
    for i, parts in enumerate(explanations):
        others = tuple(d.code for j, e in enumerate(explanations) if j != i for d in e)
        for k, d in enumerate(parts):
            lead = f"possibly ({i + 1} of {n} causes that give this answer): " if k == 0 else "together with: "
            out.append(Diagnosis(d.code, lead + d.message, others))
    return out


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _swap_layout(shape: list[int], layout: str) -> list[int]:
    """A per-sample [H, W, C] <-> [C, H, W] in the other order than the spec declares."""
    if layout == "HWC":
        h, w, c = shape
        return [c, h, w]
    c, h, w = shape
    return [h, w, c]


def _other(layout: str) -> str:
    return "CHW" if layout == "HWC" else "HWC"


def softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(a - a.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


# ============================================================================ shapes


def _window_axes(node) -> Optional[list[tuple]]:
    """[(size, kernel, stride, pad_begin, pad_end, dilation, ceil_mode)] for height and width, or None."""
    _, h, w = node.in_shapes[0]
    a = node.attrs
    if node.type == "conv2d":
        kh, kw = node.params["weight"][2:]
        ceil = False
    elif node.type in ("maxpool", "avgpool"):
        kh, kw = a["kernel"]
        ceil = a["ceil_mode"]
    else:
        return None
    sh, sw = a["stride"]
    pt, pl, pb, pr = a["pads"]
    dh, dw = a.get("dilation", (1, 1))
    return [(h, kh, sh, pt, pb, dh, ceil), (w, kw, sw, pl, pr, dw, ceil)]


_AXIS_MISTAKES: list[tuple[str, Callable[[tuple], Optional[tuple]], Callable[[tuple], bool]]] = [
    # (code, how the wrong size is computed (None: use out-1), when it differs from the right one)
    ("no_plus_one", lambda ax: None, lambda ax: True),
    ("padding_ignored", lambda ax: (ax[0], ax[1], ax[2], 0, 0, ax[5], ax[6]), lambda ax: ax[3] + ax[4] > 0),
    ("padding_one_side", lambda ax: (ax[0], ax[1], ax[2], ax[3], 0, ax[5], ax[6]), lambda ax: ax[4] > 0),
    ("stride_ignored", lambda ax: (ax[0], ax[1], 1, ax[3], ax[4], ax[5], ax[6]), lambda ax: ax[2] > 1),
    ("dilation_ignored", lambda ax: (ax[0], ax[1], ax[2], ax[3], ax[4], 1, ax[6]), lambda ax: ax[5] > 1),
    ("rounded_up", lambda ax: ax[:6] + (not ax[6],), lambda ax: True),
]


def _axis_message(code: str, ax: tuple, wrong: int, node) -> str:
    right = shapes.window_out_text(*ax)
    size, k, s, p0, p1, d, ceil = ax
    what = "conv" if node.type == "conv2d" else node.type
    if code == "no_plus_one":
        return (f'the "+1" is missing from the output size: out = floor((in + 2p - k)/s) + 1 counts the first '
                f"window position too; here {right}, you gave {wrong}")
    if code == "padding_ignored":
        return f"the padding was ignored: {what} '{node.name}' pads {p0} pixel(s) on each side, so {right}"
    if code == "padding_one_side":
        return f"the padding was counted on one side only: padding p adds p pixels on BOTH sides (2p); {right}"
    if code == "stride_ignored":
        return f"the stride was ignored: the window moves {s} pixels at a time, so {right}"
    if code == "dilation_ignored":
        return f"the dilation was ignored: a {k}-wide kernel with dilation {d} spans {d * (k - 1) + 1} pixels; {right}"
    if code == "rounded_up":
        how = "down (floor)" if not ceil else "up (ceil_mode: true)"
        return f"the division was rounded the wrong way: {what} output sizes round {how}; {right}"
    return right


@detector("output_shape")
def shape_mistakes(ctx: Context):
    r, q = ctx.run, ctx.q
    a = ctx.ints
    expected = list(ctx.expected)
    if a is None:
        return
    layout = r.layout
    node = r.graph.nodes[q.layer]
    if len(a) == len(expected) + 1 and a[1:] == expected:
        yield Diagnosis("batch_dim_included", f"the batch dimension was included ({a[0]}); output_shape is per "
                        f"sample: {fmt_shape(expected)}")
        return
    three_d = len(expected) == 3
    if three_d and a == _swap_layout(expected, layout) and a != expected:
        yield Diagnosis("layout_swapped", f"the shape is in {_other(layout)} order; the spec's layout is {layout}, "
                        f"so give [{', '.join(layout)}] = {fmt_shape(expected)}")
    axes = _window_axes(node)
    if axes is None or not three_d:
        return
    c_out, oh, ow = node.shape
    c_in = node.in_shapes[0][0]
    channel_choices = [(c_out, None)]
    if node.type == "conv2d" and c_in != c_out:
        channel_choices.append((c_in, Diagnosis("channels_from_input", f"a conv layer outputs one channel per "
                                                f"filter ({c_out}), not the input's {c_in} channels")))
    mistakes = [("none", (oh, ow), [])]
    for code, change, applies in _AXIS_MISTAKES:
        sizes, msgs = [], []
        for ax, right in zip(axes, (oh, ow)):
            if not applies(ax):
                sizes.append(right)
                continue
            wrong = right - 1 if change(ax) is None else shapes.window_out(*change(ax))
            sizes.append(wrong)
            if wrong != right:
                msgs.append((ax, wrong))
        if msgs:
            ax, wrong = msgs[0]
            mistakes.append((code, tuple(sizes), [Diagnosis(code, _axis_message(code, ax, wrong, node))]))
    # Every combination that gives the answer is an explanation; diagnose() keeps those of the fewest
    # mistakes and names all of them when several coincide (no "+1" and padding ignored can give one number).
    for code, (h, w), diags in mistakes:
        for c, cdiag in channel_choices:
            for swapped in (False, True):
                internal = [c, h, w]
                cand = list(r.graph.declared(tuple(internal)))
                if swapped:
                    cand = _swap_layout(cand, layout)
                if cand != a or cand == expected:
                    continue
                out = list(diags)
                if cdiag:
                    out.append(cdiag)
                if swapped:
                    out.append(Diagnosis("layout_swapped", f"the shape is in {_other(layout)} order; the spec's "
                                         f"layout is {layout} ([{', '.join(layout)}])"))
                if out:
                    yield tuple(out)


@detector("param_count")
def count_mistakes(ctx: Context):
    r, q = ctx.run, ctx.q
    a = ctx.ints
    if a is None or len(a) != 1:
        return
    a = a[0]
    e = int(ctx.expected)
    g = r.graph
    nodes = [g.nodes[q.layer]] if q.layer else list(g.nodes.values())
    bias = sum(math.prod(n.params["bias"]) for n in nodes if "bias" in n.params and n.type in ("conv2d", "dense"))
    if bias and a == e - bias:
        yield Diagnosis("bias_forgotten", f"the biases were left out: each filter/unit has one bias ({bias} in "
                        f"all); {_count_formula(nodes)}")
    if q.layer is None:
        bn = [n for n in nodes if n.type == "batchnorm"]
        running = sum(math.prod(n.buffers["running_mean"]) + math.prod(n.buffers["running_var"]) for n in bn)
        bn_params = sum(n.param_count for n in bn)
        if running and a == e + running:
            yield Diagnosis("buffers_counted", "batch norm's running_mean and running_var were counted: they are "
                            "buffers (statistics), not trained parameters; only gamma and beta are")
        if bn_params and a == e - bn_params:
            yield Diagnosis("bn_params_forgotten", "batch norm's gamma and beta (2 per channel) were left out; they "
                            "are trained parameters")
        return
    node = nodes[0]
    if node.type == "conv2d":
        f, c, kh, kw = node.params["weight"]
        has_bias = "bias" in node.params
        one = c * kh * kw + (1 if has_bias else 0)
        if f > 1 and a in (one, c * kh * kw):
            yield Diagnosis("one_filter_only", f"that counts a single filter; the layer has {f} filters, each with "
                            f"{c}x{kh}x{kw} weights{' and a bias' if has_bias else ''}: {_count_formula(nodes)}")
        if c > 1 and a in (f * kh * kw + (f if has_bias else 0), f * kh * kw):
            yield Diagnosis("kernel_depth_forgotten", f"each kernel is {kh}x{kw}x{c}: its depth equals the input's "
                            f"channels ({c}); {_count_formula(nodes)}")
        if has_bias and f > 1 and a == e - f + 1:
            yield Diagnosis("one_bias_for_all", f"each filter has its own bias ({f} biases, not 1); "
                            f"{_count_formula(nodes)}")


def _count_formula(nodes) -> str:
    if len(nodes) != 1:
        return "the model's count is the sum over its layers"
    n = nodes[0]
    if n.type == "conv2d":
        f, c, kh, kw = n.params["weight"]
        b = f" + {f}" if "bias" in n.params else ""
        return f"filters x (in_channels/groups x kh x kw){' + filters' if b else ''} = {f} x ({c} x {kh} x {kw}){b} = {n.param_count}"
    if n.type == "dense":
        units, inp = n.params["weight"]
        b = f" + {units}" if "bias" in n.params else ""
        return f"units x in_features{' + units' if b else ''} = {units} x {inp}{b} = {n.param_count}"
    return f"{n.param_count} parameters"


@detector("kernel_shape")
def kernel_mistakes(ctx: Context):
    r, q = ctx.run, ctx.q
    a = ctx.ints
    if a is None:
        return
    node = r.graph.nodes[q.layer]
    wshape = node.params["weight"]
    f, c, kh, kw = wshape
    e = list(ctx.expected)
    other = kernel_shape(wshape, _other(r.layout))
    if a == e:
        return
    if a == other:
        yield Diagnosis("layout_swapped", f"the kernel is given in {_other(r.layout)} order; with the spec's "
                        f"{r.layout} layout one kernel is {fmt_shape(e)}")
    if a == [kh, kw]:
        yield Diagnosis("kernel_depth_forgotten", f"a kernel has a depth too: it spans all {c} input channels, so it "
                        f"is {fmt_shape(e)}")
    if f != c and a in (kernel_shape((f, f, kh, kw), r.layout), [kh, kw, f], [f, kh, kw]):
        yield Diagnosis("depth_from_filters", f"the kernel's depth is the number of INPUT channels ({c}), not the "
                        f"number of filters ({f})")
    if a in ([f, c, kh, kw], [kh, kw, c, f], [f, kh, kw, c]):
        yield Diagnosis("all_kernels", f"that is the whole weight tensor ({f} kernels); one kernel is {fmt_shape(e)}")


@detector("weight_shape")
def weight_mistakes(ctx: Context):
    r, q = ctx.run, ctx.q
    a = ctx.ints
    if a is None:
        return
    e = list(ctx.expected)
    layer, local = q.param.rsplit(".", 1)
    node = r.graph.nodes[layer]
    if a == e:
        return
    if node.type == "conv2d" and local == "weight":
        f, c, kh, kw = e
        if a == [kh, kw, c, f]:
            yield Diagnosis("tensorflow_order", f"that is TensorFlow/Keras order (kh, kw, in, out); cnnspec and "
                            f"PyTorch store conv weights as (filters, in_channels/groups, kh, kw) = {fmt_shape(e)}")
        if a == [c, f, kh, kw] and c != f:
            yield Diagnosis("in_out_swapped", f"in and out channels are swapped: conv weights are (filters, "
                            f"in_channels/groups, kh, kw) = {fmt_shape(e)}")
        if a == [f, kh, kw, c]:
            yield Diagnosis("layout_swapped", f"the kernel axes are in HWC order; weights are (filters, "
                            f"in_channels/groups, kh, kw) = {fmt_shape(e)} whatever the input layout")
        if a in (kernel_shape(tuple(e), "HWC"), kernel_shape(tuple(e), "CHW")):
            yield Diagnosis("one_kernel_only", f"that is one kernel; the weight holds all {f}: {fmt_shape(e)}")
    elif node.type == "dense" and local == "weight" and a == e[::-1] and e[0] != e[1]:
        yield Diagnosis("transposed", f"dense weights are stored (out_features, in_features) as in PyTorch's "
                        f"nn.Linear: {fmt_shape(e)}")


# ============================================================================ values


def _input_of(r: ModelRun, layer: str) -> Optional[np.ndarray]:
    node = r.graph.nodes[layer]
    return r.activation(node.inputs[0]) if len(node.inputs) == 1 else None


@detector("activation", "output")
def tensor_mistakes(ctx: Context):
    r, q = ctx.run, ctx.q
    layer = q.layer if q.kind == "activation" else r.graph.output
    node = r.graph.nodes[layer]
    e = np.asarray(ctx.full)
    if e.ndim == 4:
        other = e.transpose(0, 3, 1, 2) if r.layout == "HWC" else e.transpose(0, 2, 3, 1)
        if matches(ctx.answer, other, ctx.tol) and ctx.select(other) is not None and getattr(q, "index", None) is None \
                and not matches(ctx.answer, e, ctx.tol):
            yield Diagnosis("layout_swapped", f"the values are in {_other(r.layout)} order; the spec's layout is "
                            f"{r.layout}, so give them as (N, {', '.join(r.layout)})")
    x = _input_of(r, layer)
    if x is not None and x.shape == e.shape and node.type not in ("dropout", "flatten") and ctx.same(x):
        msg = {"relu": "the ReLU was not applied: these are its inputs; ReLU(x) = max(0, x) turns negatives into 0",
               "leaky_relu": "the leaky ReLU was not applied: negatives are multiplied by the slope",
               "softmax": "these are the logits (softmax inputs); the layer outputs probabilities softmax(z)",
               "batchnorm": "these values were not normalised: batch norm gives gamma*(x - mean)/sqrt(var + eps) "
                            "+ beta"}.get(node.type, f"these are the values entering '{layer}', not its output")
        yield Diagnosis("layer_not_applied", msg)
    if node.type != "softmax" and e.ndim == 2 and e.shape[1] > 1 and ctx.same(softmax(e, axis=1)):
        yield Diagnosis("softmax_given", "these are softmax probabilities; the question asks for the logits (the "
                        "values before softmax)")
    if node.type == "relu" and x is not None and ctx.same(np.abs(x)):
        yield Diagnosis("abs_not_relu", "ReLU is max(0, x): negative values become 0, not positive")
    if node.type == "batchnorm" and r.ref.train and x is not None:
        yield from _bn_value_mistakes(ctx, node, x)
    if node.type == "conv2d" and x is not None:
        p = {k: r.initial_params[f"{layer}.{k}"] for k in node.params}
        if "bias" in p and np.any(p["bias"] != 0) and ctx.same(r.layer_forward(layer, x, params={"bias": p["bias"] * 0})):
            yield Diagnosis("bias_forgotten", "the bias was not added: every output value of a filter gets that "
                            "filter's bias")
        flipped = p["weight"][:, :, ::-1, ::-1]
        if ctx.same(r.layer_forward(layer, x, params={"weight": flipped})):
            yield Diagnosis("kernel_flipped", "the kernel was flipped (textbook convolution); CNN layers compute "
                            "cross-correlation: slide the kernel as it is, without flipping")
    if node.type in ("maxpool", "avgpool") and x is not None:
        other = "avgpool" if node.type == "maxpool" else "maxpool"
        if ctx.same(r.layer_forward(layer, x, changes={"type": other})):
            yield Diagnosis("wrong_pooling", f"that is {'average' if other == 'avgpool' else 'max'} pooling; "
                            f"'{layer}' takes the {'maximum' if node.type == 'maxpool' else 'average'} of each window")


def _bn_value_mistakes(ctx: Context, node, x: np.ndarray):
    r = ctx.run
    axes = bn_axes(x.ndim, r.layout)
    shape = [1] * x.ndim
    shape[1 if (x.ndim == 2 or r.layout == "CHW") else -1] = -1
    mean = x.mean(axis=axes).reshape(shape)
    var = x.var(axis=axes).reshape(shape)
    var1 = x.var(axis=axes, ddof=1).reshape(shape)
    eps = node.attrs["eps"]
    gamma = r.initial_params[f"{node.name}.weight"].reshape(shape)
    beta = r.initial_params[f"{node.name}.bias"].reshape(shape)
    cases = [
        ("bn_unbiased_variance", gamma * (x - mean) / np.sqrt(var1 + eps) + beta,
         "the batch variance was computed with n-1; batch norm normalises with the biased variance (divide by n, "
         "the number of values per channel); only running_var uses n-1"),
        ("bn_epsilon_forgotten", gamma * (x - mean) / np.sqrt(var) + beta,
         f"epsilon was left out: divide by sqrt(var + eps) with eps = {eps:g}"),
        ("bn_divided_by_variance", gamma * (x - mean) / (var + eps) + beta,
         "divided by the variance; normalise by the standard deviation sqrt(var + eps)"),
        ("bn_scale_shift_forgotten", (x - mean) / np.sqrt(var + eps),
         "gamma and beta were not applied: after normalising, scale by gamma and shift by beta"),
    ]
    yield from _all(ctx, cases)


@detector("bn_mean", "bn_var")
def bn_stat_mistakes(ctx: Context):
    r, q = ctx.run, ctx.q
    x = r.bn_input(q.layer)
    axes = bn_axes(x.ndim, r.layout)
    eps = r.graph.nodes[q.layer].attrs["eps"]
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    first = x[:1]
    n_per_channel = x.size // mean.size
    if q.kind == "bn_var":
        cases = [
            ("bn_unbiased_variance", x.var(axis=axes, ddof=1),
             f"computed with n-1 (unbiased); the batch statistic divides by n = {n_per_channel} (values per "
             "channel: batch x height x width); PyTorch uses n-1 only for running_var"),
            ("std_not_var", np.sqrt(var), "that is the standard deviation; the variance is its square"),
            ("std_not_var", np.sqrt(var + eps), "that is sqrt(var + eps), the denominator; the variance is without "
             "the square root and eps"),
            ("var_plus_eps", var + eps, f"eps ({eps:g}) is added only when normalising, not to the variance itself"),
            ("mean_not_subtracted", (x ** 2).mean(axis=axes), "the mean was not subtracted: var = mean((x - mean)^2)"),
            ("one_sample_only", first.var(axis=axes), f"that uses only the first sample; batch statistics average "
             f"over all {x.shape[0]} samples in the batch"),
        ]
    else:
        cases = [("one_sample_only", first.mean(axis=axes), f"that uses only the first sample; batch statistics "
                  f"average over all {x.shape[0]} samples in the batch")]
    yield from _all(ctx, cases)
    a = np.asarray(ctx.answer)
    if a.size == 1 and mean.size > 1:
        whole = x.mean() if q.kind == "bn_mean" else x.var()
        if matches(a, whole, ctx.tol):
            yield Diagnosis("channels_pooled", f"that pools all channels; batch norm keeps one {q.kind[3:]} per "
                            f"channel ({mean.size} values)")


@detector("prediction")
def prediction_mistakes(ctx: Context):
    r = ctx.run
    r.ensure_computed()
    e = np.asarray(ctx.expected)
    a = np.asarray(ctx.answer)
    if a.shape == r.output.shape or a.size == r.output.size and a.size != e.size:
        yield Diagnosis("scores_not_class", "give the predicted class index (argmax over classes), not the scores")
        return
    if ctx.same(e + 1, exact=True):
        yield Diagnosis("one_based", "class indices count from 0; subtract 1")
    if ctx.same(np.argmin(r.output, axis=1), exact=True):
        yield Diagnosis("argmin", "that is the class with the LOWEST score; the prediction is the argmax")


@detector("loss")
def loss_mistakes(ctx: Context):
    r = ctx.run
    r.ensure_computed()
    loss = r.spec.loss
    fn = LOSSES[loss.type]
    out, t = r.output, r.target
    other = "sum" if loss.reduction == "mean" else "mean"
    alt = fn(out, t, other)[0]
    if ctx.same(alt):
        n = out.shape[0] if loss.type == "cross_entropy" else out.size
        what = "the batch size N" if loss.type == "cross_entropy" else "the number of elements"
        yield Diagnosis("sum_vs_mean", f"that is the {other} over the batch; the spec's loss uses reduction "
                        f"'{loss.reduction}' ({'divide the sum by ' + what + f' = {n}' if loss.reduction == 'mean' else 'no division'})")
    e = float(ctx.expected)
    cases: list[tuple[str, Any, str]] = []
    if loss.type == "mse":
        d = out - t
        div = d.size if loss.reduction == "mean" else 1
        cases += [
            ("half_mse", 0.5 * e, "a factor 1/2 was added; the spec's MSE is mean((y_hat - y)^2) without 1/2"),
            ("not_squared", np.abs(d).sum() / div, "the error was not squared: MSE = mean((y_hat - y)^2)"),
            ("not_squared", d.sum() / div, "the difference was not squared: MSE = mean((y_hat - y)^2)"),
            ("not_squared", -d.sum() / div, "the difference was not squared: MSE = mean((y_hat - y)^2)"),
            ("rmse", math.sqrt(e), "that is the root of the MSE; the loss is the mean SQUARED error itself"),
        ]
    elif loss.type == "cross_entropy":
        cases += [
            ("log_base", e / math.log(10), "log base 10 was used; cross-entropy uses the natural log (ln)"),
            ("log_base", e / math.log(2), "log base 2 was used; cross-entropy uses the natural log (ln)"),
            ("sign", -e, "the minus sign is missing: cross-entropy is -log(p_true), a positive number"),
            ("softmax_twice", fn(softmax(out, axis=1), t, loss.reduction)[0],
             "softmax was applied twice: the model outputs logits, and cross-entropy applies softmax itself"),
        ]
        if t.ndim == 1:
            rows = np.arange(out.shape[0])
            p = softmax(out, axis=1)[rows, t]
            agg = (lambda v: v.mean()) if loss.reduction == "mean" else (lambda v: v.sum())
            cases.append(("probability_not_loss", agg(p), "that is the probability of the true class; the loss is "
                          "-log of it"))
            if np.all(out[rows, t] > 0):
                cases.append(("no_softmax", agg(-np.log(out[rows, t])), "the logits were used as probabilities: "
                              "apply softmax first (cross-entropy = -log softmax(z)[true class])"))
    yield from _all(ctx, cases)


@detector("gradient")
def gradient_mistakes(ctx: Context):
    r, q = ctx.run, ctx.q
    r.ensure_computed()
    g = np.asarray(ctx.full)
    loss = r.spec.loss
    n = r.output.shape[0]
    m = r.output.size
    yield from _all(ctx, [
        ("wrong_sign", -g, "the sign is flipped: the gradient is dL/dw itself (it points uphill); the minus sign "
         "belongs to the update w - lr * dL/dw"),
        ("transposed", g.T if g.ndim == 2 and g.shape[0] != g.shape[1] else None,
         f"the gradient is transposed: it has the parameter's shape {fmt_shape(g.shape)}"),
        ("factor_two", g / 2 if loss.type == "mse" else None,
         "the factor 2 is missing: d/dy_hat (y_hat - y)^2 = 2 (y_hat - y)"),
        ("sum_vs_mean", g * (n if loss.type == "cross_entropy" else m) if loss.reduction == "mean" else None,
         f"that is the gradient of the summed loss; the loss is a mean, so divide by "
         f"{'N = ' + str(n) if loss.type == 'cross_entropy' else 'the number of elements = ' + str(m)}"),
        ("sum_vs_mean", g / (n if loss.type == "cross_entropy" else m) if loss.reduction == "sum" else None,
         "the gradient was averaged; the spec's loss is a sum (reduction 'sum'), so do not divide"),
    ])
    if q.param != INPUT_NAME:
        dout = LOSSES[loss.type](r.output, r.target, loss.reduction)[1]
        a = np.asarray(ctx.answer)
        if a.size == dout.size and matches(a.reshape(-1), dout.reshape(-1), ctx.tol) and a.size != np.size(ctx.expected):
            yield Diagnosis("dloss_dout", "that is dL/dy_hat, the gradient at the output; the chain rule multiplies "
                            "it by dy_hat/dw (for a dense layer: the layer's input x)")
        if r.input_grad is not None and ctx.same(r.input_grad):
            yield Diagnosis("input_gradient", "that is the gradient with respect to the input x, not the parameter")


def _all(ctx: Context, cases):
    """A Diagnosis for every case whose candidate is the answer (the first message of each code)."""
    done = set()
    for code, cand, msg in cases:
        if code not in done and cand is not None and ctx.same(cand):
            done.add(code)
            yield Diagnosis(code, msg)


@detector("param_after_steps")
def update_mistakes(ctx: Context):
    r, q = ctx.run, ctx.q
    r.ensure_computed()
    o = r.spec.optimizer
    theta = r.initial_params[q.param]
    sgd = o.type == "sgd"  # the formula-level slips below are SGD's (w - lr g); other optimizers get the generic ones
    if q.steps == 1:
        g = r.grads[q.param]
        lr = o.lr
        if sgd:
            cases = [
                ("wrong_sign", r.step_from_grad(q.param, -g), f"the step went uphill: gradient descent SUBTRACTS lr "
                 f"x gradient (w_new = w - {lr:g} x dL/dw)"),
                ("no_learning_rate", theta - g if o.weight_decay == 0 and o.momentum == 0 else None,
                 f"the learning rate was left out: w_new = w - lr x dL/dw with lr = {lr:g}"),
                ("step_not_weight", -lr * g, "that is the step (-lr x gradient); add it to the old weight"),
                ("step_not_weight", lr * g, "that is lr x gradient; the new weight is w - lr x gradient"),
            ]
        else:
            cases = [("wrong_sign", r.step_from_grad(q.param, -g), f"the step went uphill: {o.type} moves the weight "
                      "against the gradient, you moved it along")]
        cases += [
            ("gradient_not_weight", g, "that is the gradient; the question asks for the updated weight"),
            ("unchanged", theta, "that is the weight before the update"),
            ("weight_decay_forgotten", theta - lr * g if sgd and o.weight_decay > 0 else None,
             f"weight decay was left out: the gradient gets + weight_decay x w ({o.weight_decay:g} x w) first"),
        ]
        yield from _all(ctx, cases)
        return
    cases = [("one_step_only", r.params_after(1)[q.param], f"that is the weight after ONE step; the question asks "
              f"for {q.steps} steps (forward, backward, update, repeated)")]
    if sgd and o.momentum > 0:
        cases.append(("momentum_forgotten", r.params_after_with(q.steps, momentum=0.0, nesterov=False)[q.param],
                      f"momentum was left out: from the second step on, the velocity b = {o.momentum:g} b + g "
                      "carries the earlier gradients"))
    yield from _all(ctx, cases)


def rounding_mistake(ctx: Context) -> Optional[Diagnosis]:
    """Right value, written with too few significant figures (checked for every float kind)."""
    e = np.asarray(ctx.expected, dtype=np.float64)
    a = np.asarray(ctx.answer)
    if ctx.tol is None or a.size != e.size or not np.all(np.isfinite(e)):
        return None
    for digits in (1, 2, 3):
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = np.where(e == 0, 0, np.floor(np.log10(np.abs(e))))
            scale = 10.0 ** (digits - 1 - mag)
            rounded = np.round(e * scale) / scale
            truncated = np.trunc(e * scale) / scale
        for cand in (rounded, truncated):
            if matches(a, cand, Tolerance(1e-9, 1e-12)) and not matches(a, e, ctx.tol):
                how = "rounded" if cand is rounded else "cut off"
                return Diagnosis("too_few_digits", f"the value is right but {how} at {digits} significant "
                                 f"figure{'s' if digits > 1 else ''}; keep at least 4 (the tolerance is "
                                 f"{ctx.tol.text()})")
    return None


__all__ = ["Diagnosis", "Context", "diagnose", "rounding_mistake", "DETECTORS", "softmax"]
