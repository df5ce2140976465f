"""Exact rewrites: the execution plan a Model runs, made from its Graph by a few passes.

A spec compiler may change how a graph is computed as long as every number a user can observe stays the
same: the output, the loss, every gradient (parameters and input), the running statistics, and every
layer's activation (`model.activations`, `cnnspec run --dump`, the grader). The Graph (layer names,
shapes, parameters) is never changed; the passes rewrite only the plan, a list of Steps the Model runs
in order. Each pass's docstring gives its proof of exactness, and tests/test_rewrite.py compares every
observable bit for bit with the plan of `rewrite=False` (one Step per layer, the unoptimised model) over
random specs and inputs with ties, all-negative windows, signed zeros, infinities and NaN.

A layer whose activation a rewritten plan no longer computes is `deferred`: model.activations computes
it on demand, from values the plan keeps, with the same operations the unrewritten model runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .graph import Graph
from .shapes import window_out

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Step:
    """One op call of the plan. `name` is the value it produces (a layer's name: a fused step produces its
    last layer's output), `type` an OPS name or an ops/fused.py name, `layer` the layer whose parameters and
    buffers (`params`, `buffers`: local names) the op reads and updates."""

    name: str
    type: str
    inputs: tuple[str, ...]
    attrs: dict
    layer: str
    params: tuple[str, ...]
    buffers: tuple[str, ...]
    shape: Shape                     # per sample, internal layout (as Node.shape)


@dataclass(frozen=True)
class Deferred:
    """How to compute a layer's activation the plan does not keep, from `source`: with kind "op", the layer's
    own op (`op`, `attrs`) applied to the value named `source`; with kind "inner", the batch norm output
    inside the fused step named `source`, of fused op `op` (recomputed from its cache)."""

    kind: str
    source: str
    reason: str
    op: str = ""
    attrs: dict = field(default_factory=dict)

    def compute(self, value: Callable[[str], Any], caches: dict[str, Any]):
        """The activation in internal layout. value(name) gives a value of the plan (a step's output, the
        input, or another deferred activation); caches maps step names to their forward's caches."""
        if self.kind == "op":
            from .ops import OPS
            return OPS[self.op].forward(self.attrs, [value(self.source)], {}, {}, False, None)[0]
        from .ops.fused import inner_output
        return inner_output(self.op, caches[self.source])


@dataclass
class Plan:
    """What a Model runs: `steps` in order; `deferred` layers (not computed by any step) by name; `applied`,
    one line per rewrite made (empty for rewrite=False)."""

    steps: list[Step]
    deferred: dict[str, Deferred] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)


def plain(graph: Graph) -> Plan:
    """One step per layer, in declaration order: exactly the Graph (rewrite=False)."""
    return Plan([Step(n.name, n.type, tuple(n.inputs), n.attrs, n.name, tuple(n.params), tuple(n.buffers),
                      tuple(n.shape)) for n in graph.nodes.values()])


def build(graph: Graph, rewrite: bool = True) -> Plan:
    """The plan a Model runs: plain(graph), then every pass of PASSES in order when `rewrite`."""
    plan = plain(graph)
    if rewrite:
        for rewrite_pass in PASSES:
            rewrite_pass(plan, graph)
    return plan


def _readers(plan: Plan, name: str) -> list[Step]:
    """Steps that read value `name`, once per input slot (add(x, x) reads x twice)."""
    return [s for s in plan.steps for i in s.inputs if i == name]


def _only_reader(plan: Plan, graph: Graph, step: Step, kind: str) -> Step | None:
    """The one step of type `kind` that reads `step`'s value, if it is its only reader and the value is not
    the model's output (whose value forward returns)."""
    if step.name == graph.output:
        return None
    readers = _readers(plan, step.name)
    return readers[0] if len(readers) == 1 and readers[0].type == kind else None


def _fuse_pairs(plan: Plan, graph: Graph, first: str, reader: str, fuse: Callable[[Step, Step], Step | None]) -> None:
    """Every step of type `first` whose only reader is a step of type `reader` (_only_reader): fuse(a, b)
    returns the step that replaces b, having recorded what the pass defers and applied, and a goes; or None
    to leave the pair as it is. A fused step can itself be the next pair's reader (steps are revisited)."""
    i = 0
    while i < len(plan.steps):
        a = plan.steps[i]
        b = _only_reader(plan, graph, a, reader) if a.type == first else None
        fused = fuse(a, b) if b is not None else None
        if fused is None:
            i += 1
            continue
        plan.steps[plan.steps.index(b)] = fused
        del plan.steps[i]


def _disjoint_windows(attrs: dict) -> bool:
    """Every input value is in at most one pooling window (the windows' span fits in the stride)."""
    kernel, stride = tuple(attrs["kernel"]), tuple(attrs.get("stride") or attrs["kernel"])
    dilation = tuple(attrs.get("dilation", (1, 1)))
    return all(d * (k - 1) + 1 <= s for k, s, d in zip(kernel, stride, dilation))


def _every_window_sees_input(attrs: dict, in_hw: Shape) -> bool:
    """Every pooling window covers at least one input value (not only padding: a dilated window's taps can
    all fall in the padding, and such a window's maximum is the padding's -inf)."""
    kernel, stride = tuple(attrs["kernel"]), tuple(attrs.get("stride") or attrs["kernel"])
    pads, dilation = tuple(attrs.get("pads", (0, 0, 0, 0))), tuple(attrs.get("dilation", (1, 1)))
    for axis, size in enumerate(in_hw):
        k, st, d, p0, p1 = kernel[axis], stride[axis], dilation[axis], pads[axis], pads[axis + 2]
        n = window_out(size, k, st, p0, p1, d, bool(attrs.get("ceil_mode", False)))
        if any(all(not 0 <= o * st - p0 + d * t < size for t in range(k)) for o in range(n)):
            return False
    return True


def relu_after_maxpool(plan: Plan, graph: Graph) -> None:
    """relu -> maxpool becomes maxpool -> relu, fused in one op (ops/fused.maxpool_relu): the relu runs on
    a quarter of the values (2x2 windows) in place on the pooled output. Applies where the relu's only
    reader is a maxpool whose windows do not overlap and each cover an input value (a dilated window can
    fall wholly in the padding: its maximum is -inf, and relu(-inf) is 0); the relu's activation is then
    deferred.

    Proof, per window w of the input x (values x_i, NaN included), with the engine's definitions: relu(x)
    = np.maximum(x, 0), which is +0.0 for every x <= 0 (-0.0 and -inf included: NumPy's float32 and float64
    loops return the second operand of a tie, which tests/test_rewrite.py checks at every array length
    class), x for x > 0 and x for NaN; maxpool's value is np.maximum over the window (which holds at least
    one value of x: padding, -inf, is never the only one) and its argmax the first maximum, or the last NaN
    when the window has one; relu's backward is dout * (out != 0); maxpool's backward writes dout *
    (argmax == k) at window offset k (disjoint windows: each value is written once, by its window, or left 0
    when no window covers it). Three cases:
      (a) w has a NaN: relu keeps NaN as NaN and non-NaN as non-NaN, so both orders pick the same NaN (the
          last) with the same bits, and relu(NaN) = NaN; relu's mask is 1 at a NaN output, so both send dout
          to that element, times 1.
      (b) no NaN, max > 0: relu is the identity on the values equal to the max and maps everything else below
          it, so the maximum, its value and its first position agree; relu's mask is 1 there.
      (c) no NaN, max <= 0: relu(x_i) = +0.0 for all i, so the unrewritten pool returns +0.0, and relu of the
          rewritten maximum (<= 0) is +0.0 too. The positions may differ (the first +0.0 against the
          first maximum of x), but relu's mask is 0 everywhere in the window in either order.
    In both orders each input value's gradient is dout_w times two factors in {0, 1}, the argmax test and
    relu's mask: that is dout_w when both are 1 and dout_w * 0 otherwise (multiplying by 1 is exact, and
    dout_w * 0 * 0 = dout_w * 0, the same signed zero, or NaN for a non-finite dout_w), and the cases show
    the products agree at every position. Values in no window get 0 in both. Overlapping windows are left
    alone: there a value's gradient is a sum over windows, and in case (c) the sign of a zero sum could
    differ (tests/test_rewrite.py shows one).
    """
    def fuse(relu: Step, pool: Step) -> Step | None:
        if not _disjoint_windows(pool.attrs) or not _every_window_sees_input(pool.attrs, relu.shape[1:]):
            return None
        (source,) = relu.inputs
        plan.deferred[relu.name] = Deferred("op", source, f"relu_after_maxpool: computed from '{source}'",
                                            op="relu", attrs=relu.attrs)
        plan.applied.append(f"relu_after_maxpool: '{relu.name}' runs after '{pool.name}' (fused), on "
                            f"{_fraction(relu.shape, pool.shape)} of the values")
        return replace(pool, type="maxpool_relu", inputs=(source,))

    _fuse_pairs(plan, graph, "relu", "maxpool", fuse)


def batchnorm_relu(plan: Plan, graph: Graph) -> None:
    """batchnorm -> relu becomes one op (ops/fused.batchnorm_relu): each slice of channels gets its relu
    while it is in cache, in place, forward and backward. Applies where the relu is the batch norm's only
    reader; the batch norm's activation is then deferred (recomputed from the fused op's cache).

    Proof: the fused op runs batchnorm's own code (ops/batchnorm.py, relu=True) on the same slices of
    channels, and adds relu's element operations (np.maximum(out, 0) forward, dout * (out != 0) backward)
    on each slice. Element operations give the same bits whatever slice they run on; the batch norm
    reductions (means, dot products, sums) run on the same channel rows, contiguous in both, as before.
    The deferred activation repeats the forward's last two operations, xc * scale + b (or x * scale +
    shift in evaluation), on the arrays the forward used.
    """
    def fuse(norm: Step, relu: Step) -> Step:
        plan.deferred[norm.name] = Deferred("inner", relu.name,
                                            f"batchnorm_relu: recomputed from the cache of '{relu.name}'",
                                            op="batchnorm_relu")
        plan.applied.append(f"batchnorm_relu: '{norm.name}' and '{relu.name}' in one op")
        return replace(norm, name=relu.name, type="batchnorm_relu", shape=relu.shape)

    _fuse_pairs(plan, graph, "batchnorm", "relu", fuse)


def batchnorm_after_maxpool(plan: Plan, graph: Graph) -> None:
    """batchnorm -> maxpool_relu (a relu moved after its pool by relu_after_maxpool) becomes one op
    (ops/fused.batchnorm_maxpool_relu) that, in evaluation mode, pools first and normalises a quarter of the
    values (2x2 windows). Applies where the pool is the batch norm's only reader; the batch norm's
    activation is then deferred (recomputed from the fused op's cache). In training the op runs the batch
    norm and then the pool, as before: batch statistics are not elementwise.

    Proof, for evaluation mode. The batch norm there is f(x) = fl(fl(x * s) + t) per channel, with s and t
    computed once from the parameters and running statistics. The op pools first only when every channel
    has a finite s > 0 and a finite t (otherwise it runs the two layers in order). Then f is non-decreasing
    over the extended reals (each rounding is), sends NaN to a NaN of the same bits (x * s and + t return
    the NaN operand) and no number to NaN (+-inf * s = +-inf, and +-inf + t = +-inf for a finite t); the
    pool's -inf padding maps to -inf, so the padding may be added before or after f. Per window, with the
    relu after the pool (np.maximum(v, 0), +0.0 for every v <= 0):
      (a) the window has a NaN: f keeps NaN positions as NaN, so np.maximum propagates a NaN in both
          orders, from the same position (which NaN it propagates depends on the positions alone), with the
          same bits; relu keeps it.
      (b) no NaN: f(max x) and max f(x) are equal numbers (f is non-decreasing), so they differ at most in
          the sign of a zero, and relu sends both zeros to +0.0; a non-zero result has the same bits.
    The forward's output is therefore the same bits. The backward recomputes the batch norm's full output
    from x with the same operations and then runs the two layers' backward passes, as evaluation mode's
    max pool always recomputes its argmax; the deferred activation is that same recomputation.
    """
    def fuse(norm: Step, pool: Step) -> Step:
        plan.deferred[norm.name] = Deferred("inner", pool.name,
                                            f"batchnorm_after_maxpool: recomputed from the cache of '{pool.name}'",
                                            op="batchnorm_maxpool_relu")
        plan.applied.append(f"batchnorm_after_maxpool: '{norm.name}' and '{pool.name}' in one op; in "
                            f"evaluation mode the batch norm runs after the pool, on "
                            f"{_fraction(norm.shape, pool.shape)} of the values")
        return replace(pool, type="batchnorm_maxpool_relu", inputs=norm.inputs,
                       attrs={"batchnorm": norm.attrs, "maxpool": pool.attrs}, layer=norm.layer,
                       params=norm.params, buffers=norm.buffers)

    _fuse_pairs(plan, graph, "batchnorm", "maxpool_relu", fuse)


PASSES: tuple[Callable[[Plan, Graph], None], ...] = (relu_after_maxpool, batchnorm_after_maxpool, batchnorm_relu)


def _fraction(before: Shape, after: Shape) -> str:
    from math import prod
    a, b = prod(after), prod(before)
    return f"{a}/{b}" if b % a else f"1/{b // a}"


__all__ = ["Deferred", "PASSES", "Plan", "Step", "batchnorm_after_maxpool", "batchnorm_relu", "build", "plain",
           "relu_after_maxpool"]
