"""The exact rewrites (cnnspec/rewrite.py) change no observable number: every output, loss, gradient, input
gradient, running statistic, parameter after SGD steps and activation is compared BIT FOR BIT (NaN payloads
and signed zeros included) between compile(rewrite=True) and compile(rewrite=False), over seeded random
specs and inputs made to hit the hard cases: max-pool ties, all-negative windows, -0.0, infinities, NaN.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec import rewrite
from cnnspec.graph import loads_spec

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ bit-for-bit comparison


def bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view({8: np.uint64, 4: np.uint32}[a.itemsize]) if a.dtype.kind == "f" else a


def assert_same(a, b, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    if not np.array_equal(bits(a), bits(b)):
        diff = np.flatnonzero(bits(a) != bits(b))
        raise AssertionError(f"{what}: {diff.size} of {a.size} values differ in their bits, first at flat index "
                             f"{diff[0]}: {a.reshape(-1)[diff[0]]!r} vs {b.reshape(-1)[diff[0]]!r}")


def observe(model, x, target, steps: int = 3, touch_order=None) -> dict[str, object]:
    """Everything a user can read, over `steps` training steps and then an evaluation-mode pass."""
    seen: dict[str, object] = {}
    names = list(model.graph.nodes)
    order = touch_order(names) if touch_order else names
    for s in range(steps):
        out = model.forward(x, train=True)
        acts = {name: np.array(model.activations[name]) for name in order}  # in a scrambled order too
        seen[f"{s}/out"] = np.array(out)
        seen[f"{s}/loss"] = np.float64(model.loss(out, target))
        for name, g in model.backward().items():
            seen[f"{s}/grad/{name}"] = np.array(g)
        seen[f"{s}/input_grad"] = np.array(model.input_grad)
        for name, v in acts.items():
            seen[f"{s}/act/{name}"] = v
        for name, v in model.buffers.items():
            seen[f"{s}/buffer/{name}"] = np.array(v)
        model.step()
    for name, v in model.params.items():
        seen[f"after/{name}"] = np.array(v)
    out = model.forward(x, train=False)
    seen["eval/out"] = np.array(out)
    seen["eval/loss"] = np.float64(model.loss(out, target))
    for name, g in model.backward().items():  # backward through the evaluation-mode caches
        seen[f"eval/grad/{name}"] = np.array(g)
    seen["eval/input_grad"] = np.array(model.input_grad)
    for name in order:
        seen[f"eval/act/{name}"] = np.array(model.activations[name])
    return seen


def compare(text: str, x, target, dtype="float64", weights=None, steps: int = 3) -> rewrite.Plan:
    """Build the spec both ways, run both on the same data, compare everything; the rewritten plan."""
    spec = loads_spec(text)
    plain, fast = (cnnspec.compile(spec, dtype=dtype, rewrite=r) for r in (False, True))
    assert not plain.plan.applied and not plain.plan.deferred
    if weights:
        w = weights(plain)
        plain.set_weights(w)
        fast.set_weights(w)
    rng = np.random.default_rng(5)
    a = observe(plain, x, target, steps)
    b = observe(fast, x, target, steps, touch_order=lambda names: list(rng.permutation(names)))
    assert a.keys() == b.keys()
    for key in a:
        assert_same(a[key], b[key], f"{key} (rewrites: {fast.plan.applied})")
    return fast.plan


# ------------------------------------------------------------------ hard inputs


def hard_values(rng, shape, dtype, nan: bool = True) -> np.ndarray:
    """Few distinct values (max-pool ties), whole blocks negative (all-negative windows), -0.0 and +0.0,
    +-inf and, optionally, NaN."""
    x = rng.integers(-3, 4, size=shape) * 0.5
    n = x.shape[0]
    x[: max(n // 3, 1), ..., :2, :2] = -rng.integers(1, 3, size=x[: max(n // 3, 1), ..., :2, :2].shape)  # all < 0
    flat = x.reshape(-1)
    k = flat.size
    flat[rng.choice(k, k // 10, replace=False)] = -0.0
    flat[rng.choice(k, k // 10, replace=False)] = 0.0
    flat[rng.choice(k, 2, replace=False)] = -np.inf
    flat[rng.choice(k, 1, replace=False)] = np.inf
    if nan:
        flat[rng.choice(k, 3, replace=False)] = np.nan
        flat[rng.choice(k, 1, replace=False)] = -np.nan
    return x.astype(dtype)


def quantised_weights(rng):
    """Parameters in quarter steps: sums of quantised inputs stay exact, so ties and exact zeros survive
    convolutions and batch norm (equal inputs give equal outputs)."""
    def make(model):
        out = {k: rng.integers(-2, 3, size=v.shape) * 0.25 for k, v in model.params.items()}
        out.update({k: np.ones_like(v) for k, v in model.params.items() if k.endswith("weight") and v.ndim == 1})
        return out
    return make


# ------------------------------------------------------------------ hand-made cases


RELU_POOL = """
cnnspec: 1
name: relu-pool
input: {{shape: [2, 6, 6]}}
layers:
  - {{name: act, type: {act}}}
  - {{name: pool, type: maxpool, kernel: {kernel}, stride: {stride}{extra}}}
  - {{name: flatten, type: flatten}}
  - {{name: fc, type: dense, units: 3}}
loss: {{type: mse}}
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kernel, stride, extra, fires", [
    (2, 2, "", True),
    (3, 3, "", True),                       # 6x6 -> 2x2, disjoint
    (2, 3, "", True),                       # gaps between windows: some values in no window
    (2, 2, ", padding: 1", True),           # -inf padding: windows of one real value
    (3, 2, ", ceil_mode: true", False),     # overlapping windows: not rewritten (still compared)
    (3, 1, "", False),
])
@pytest.mark.parametrize("act", ["relu", "relu6", "leaky_relu"])
def test_relu_then_maxpool_on_hard_inputs(dtype, kernel, stride, extra, fires, act):
    rng = np.random.default_rng(kernel * 10 + stride)
    x = hard_values(rng, (6, 2, 6, 6), dtype)
    # the windows of sample 1 hold NaN, -NaN, -0.0, +0.0 and negatives side by side
    x[1, 0, :2, :2] = [[np.nan, -0.0], [0.0, -1.0]]
    x[1, 0, 2:4, 2:4] = [[-0.0, -5.0], [0.0, -0.0]]
    x[1, 1, :3, :3] = -np.inf
    target = rng.standard_normal((6, 3))
    plan = compare(RELU_POOL.format(act=act, kernel=kernel, stride=stride, extra=extra), x, target, dtype)
    assert bool(plan.applied) == (fires and act == "relu"), plan.applied
    assert ("act" in plan.deferred) == (fires and act == "relu")


@pytest.mark.parametrize("kernel", [9, 12, 16])  # 81, 144, 256 window offsets: the index types' edges
def test_relu_then_maxpool_with_large_windows(kernel):
    rng = np.random.default_rng(kernel)
    text = RELU_POOL.format(act="relu", kernel=kernel, stride=kernel, extra="").replace("[2, 6, 6]", "[2, 16, 16]")
    x = hard_values(rng, (3, 2, 16, 16), "float64")
    x[0, 0] = -1.0  # an all-negative window whose maximum is its last value: argmax + kh*kw must not wrap
    x[0, 0, kernel - 1, kernel - 1] = -0.5
    plan = compare(text, x, rng.standard_normal((3, 3)), "float64")
    assert plan.applied


def test_a_pool_whose_window_sees_only_padding_keeps_its_relu_first():
    # dilation 2 over a 1-wide input padded by 1: the first window's taps are both padding (-inf), and
    # relu(-inf) = 0 would replace the unrewritten -inf
    text = RELU_POOL.format(act="relu", kernel="[1, 2]", stride="[1, 3]",
                            extra=", padding: [0, 1], dilation: [1, 2]").replace("[2, 6, 6]", "[2, 1, 1]")
    rng = np.random.default_rng(3)
    plan = compare(text, rng.standard_normal((3, 2, 1, 1)), rng.standard_normal((3, 3)))
    assert not plan.applied
    assert rewrite._every_window_sees_input({"kernel": [2, 2], "pads": [1, 1, 1, 1]}, (4, 4))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_sends_negative_zero_to_positive_zero_at_every_length(dtype):
    """The rewrites' proofs rest on relu(-0.0) = +0.0 (np.maximum(x, 0) returns the second operand of a
    tie); every length class of NumPy's loops (scalar tail, one and several SIMD vectors, strided)."""
    from cnnspec.ops.activations import relu
    for n in (1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64, 1000, 4099):
        x = np.full((n, 1), -0.0, dtype)
        for view in (x, np.full((n, 2), -0.0, dtype)[:, :1]):
            out = relu.forward({}, [view], {}, {}, True, None)[0]
            assert not np.signbit(out).any(), (n, view.strides)


def test_nan_gradient_reaches_the_input_in_both_plans():
    # relu's backward passes the gradient through NaN (PyTorch); the pool sends it to the window's last NaN
    x = np.zeros((2, 2, 6, 6))
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = np.nan
    target = np.zeros((2, 3))
    compare(RELU_POOL.format(act="relu", kernel=2, stride=2, extra=""), x, target, steps=1)
    for r in (False, True):
        m = cnnspec.compile(loads_spec(RELU_POOL.format(act="relu", kernel=2, stride=2, extra="")), rewrite=r)
        m.forward(x)
        m.backward(np.ones((2, 3)))
        g = m.input_grad[0, 0, :2, :2]
        # the window's last NaN (PyTorch's max-pool rule) gets dense's (finite) gradient, through relu
        expected = m.params["fc.weight"].sum(axis=0)[0]
        assert g.tolist() == [[0.0, 0.0], [0.0, expected]] and expected != 0


BN_RELU = """
cnnspec: 1
name: bn-relu
input: {{shape: [3, 5, 5]}}
layers:
  - {{name: conv, type: conv2d, filters: 4, kernel: 3, padding: 1}}
  - {{name: bn, type: batchnorm{bn}}}
  - {{name: act, type: relu}}
{tail}
loss: {{type: mse}}
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bn, tail", [
    ("", "  - {name: conv2, type: conv2d, filters: 2, kernel: 1}"),
    (", affine: false, momentum: 0.5, eps: 0.001", "  - {name: conv2, type: conv2d, filters: 2, kernel: 1}"),
    ("", ""),                                              # the relu is the output
    ("", "  - {name: pool, type: maxpool, kernel: 2}"),     # the relu moves after the pool instead
    ("", "  - {name: twice, type: add, inputs: [act, bn]}"),  # bn has two readers: no fusion
])
def test_batchnorm_relu_bit_for_bit(dtype, bn, tail):
    rng = np.random.default_rng(len(tail))
    text = BN_RELU.format(bn=bn, tail=tail)
    spec = loads_spec(text)
    out_shape = spec.graph.nodes[spec.graph.output].shape
    for quantise in (False, True):
        x = (hard_values(rng, (4, 3, 5, 5), dtype, nan=False) if quantise
             else rng.standard_normal((4, 3, 5, 5)).astype(dtype))
        target = rng.standard_normal((4, *out_shape))
        plan = compare(text, x, target, dtype, weights=quantised_weights(rng) if quantise else None)
        kinds = [s.type for s in plan.steps]
        assert ("batchnorm_relu" in kinds) == ("pool" not in tail and "twice" not in tail), kinds
        assert ("batchnorm_maxpool_relu" in kinds) == ("pool" in tail)  # the relu moves after the pool


BN_RELU_POOL = """
cnnspec: 1
name: bn-relu-pool
input: {{shape: [4, 6, 6]}}
layers:
  - {{name: bn, type: batchnorm{bn}}}
  - {{name: act, type: relu}}
  - {{name: pool, type: maxpool, kernel: {kernel}{extra}}}
  - {{name: flatten, type: flatten}}
  - {{name: fc, type: dense, units: 3}}
loss: {{type: mse}}
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bn, kernel, extra", [("", 2, ""), (", affine: false", 2, ""), ("", 3, ", padding: 1"),
                                               ("", 2, ", stride: 3"), ("", 2, ", ceil_mode: true")])
@pytest.mark.parametrize("weights", ["positive", "one negative", "one zero", "one huge"])
def test_batchnorm_after_maxpool_in_evaluation_mode(dtype, bn, kernel, extra, weights):
    """The pool runs first in evaluation mode only when every channel's map is increasing; either way every
    number is the unfused model's, on inputs with ties, signed zeros, infinities and NaN."""
    text = BN_RELU_POOL.format(bn=bn, kernel=kernel, extra=extra)
    rng = np.random.default_rng(kernel + len(extra) + len(weights))
    plain, fast = (cnnspec.compile(loads_spec(text), dtype=dtype, rewrite=r) for r in (False, True))
    assert [s.type for s in fast.plan.steps][0] == "batchnorm_maxpool_relu"
    params = {k: rng.integers(-2, 3, size=v.shape) * 0.25 for k, v in plain.params.items()}
    buffers = {"bn.running_mean": rng.integers(-2, 3, size=4) * 0.5, "bn.running_var": np.array([0.25, 1, 4, 2.0])}
    if "bn.weight" in params:
        params["bn.weight"] = np.array([0.5, 1.0, 2.0, 0.25])
        params["bn.bias"] = np.array([0.0, -0.0, 0.5, -1.0])
        if weights != "positive":
            params["bn.weight"][1] = {"one negative": -1.0, "one zero": 0.0, "one huge": 1e300}[weights]
    elif weights == "one huge":
        buffers["bn.running_var"][2] = -1e-5  # running_var + eps = 0: an infinite scale
    for model in (plain, fast):
        model.set_weights({**params, **buffers})
    x = hard_values(rng, (5, 4, 6, 6), dtype)
    target = rng.standard_normal((5, 3))
    seen = []
    for model in (plain, fast):
        with np.errstate(all="ignore"):
            out = model.forward(x, train=False)
            loss = model.loss(out, target)
            grads = model.backward()
        seen.append([np.array(out), np.float64(loss), *(np.array(grads[k]) for k in sorted(grads)),
                     np.array(model.input_grad), *(np.array(model.activations[n]) for n in model.graph.nodes)])
    for i, (a, b) in enumerate(zip(*seen)):
        assert_same(a, b, f"observable {i}")
    # Which order ran: the pool first unless a channel's map is not increasing (a weight <= 0, or an infinite
    # scale: 1e300 in float32, or running_var + eps == 0); without affine parameters the weights play no part.
    affine = "bn.weight" in params
    increasing = {"positive": True, "one negative": not affine, "one zero": not affine,
                  "one huge": affine and dtype == "float64"}[weights]
    assert (fast._tape[0][1][0] == "pooled") == increasing


def test_nothing_the_caller_holds_changes_what_backward_reads():
    """The engine copies its input and hands out read-only views: a caller reusing its input buffer between
    forward and backward changes no gradient (the fused op's evaluation-mode cache keeps its input), and
    activations and the output cannot be written through."""
    text = BN_RELU_POOL.format(bn="", kernel=2, extra="")
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((2, 4, 6, 6))
    target = rng.standard_normal((2, 3))
    seen = []
    for rewrite_ in (False, True):
        model = cnnspec.compile(loads_spec(text), rewrite=rewrite_)
        x = x0.copy()  # C-contiguous float64 in the declared layout: nothing to convert
        out = model.forward(x, train=False)
        model.loss(out, target)
        x[...] = -x0  # the caller's next batch, in the same buffer
        grads = model.backward()
        seen.append([np.array(out), *(np.array(grads[k]) for k in sorted(grads)), np.array(model.input_grad),
                     *(np.array(model.activations[n]) for n in model.graph.nodes)])
        for name in model.graph.nodes:
            with pytest.raises(ValueError, match="read-only"):
                model.activations[name][...] = 0
        with pytest.raises(ValueError, match="read-only"):
            out -= 1
    for i, (a, b) in enumerate(zip(*seen)):
        assert_same(a, b, f"observable {i}")


def test_a_padded_gradient_is_cropped_into_new_memory():
    from cnnspec.ops.windows import unpad_grad
    dtp = np.arange(1 * 6 * 4 * 2, dtype=float).reshape(1, 6, 4, 2)  # one channel: the crop is contiguous
    dt = unpad_grad(dtp, (4, 4), (1, 0, 1, 0), "zeros")
    assert not np.shares_memory(dt, dtp) and np.array_equal(dt, dtp[:, 1:5])
    assert unpad_grad(dtp, (6, 4), (0, 0, 0, 0), "zeros") is dtp


# ------------------------------------------------------------------ random specs


def random_spec(rng, index: int) -> tuple[str, tuple[int, ...], tuple[int, ...] | int]:
    """A seeded random spec mixing conv, batch norm, activations, max/avg pools, add and concat branches,
    dropout and dense layers: (YAML text, input shape, output: class count or mse shape)."""
    c, h = int(rng.integers(1, 4)), int(rng.choice([6, 8, 9]))
    lines, prev, shape = [], "input", (c, h, h)
    n = 0

    def add(text):
        nonlocal n
        n += 1
        lines.append("  - {" + text + "}")
        return f"l{n}"

    def name():
        return f"l{n + 1}"

    for _ in range(int(rng.integers(1, 4))):
        block = rng.choice(["conv", "conv", "branch_add", "branch_concat", "act_first"])
        if block == "act_first" or (block == "conv" and rng.random() < 0.2):
            act = rng.choice(["relu", "relu", "relu6", "leaky_relu"])
            prev = add(f"name: {name()}, type: {act}, inputs: [{prev}]")
        if block in ("conv", "act_first"):
            f = int(rng.integers(2, 6))
            k, p = (int(v) for v in rng.choice([(1, 0), (3, 1), (3, 0)]))
            if shape[1] - k + 1 + 2 * p < 2:
                k, p = 1, 0
            prev = add(f"name: {name()}, type: conv2d, filters: {f}, kernel: {k}, padding: {p}, inputs: [{prev}]")
            shape = (f, shape[1] - k + 1 + 2 * p, shape[2] - k + 1 + 2 * p)
            if rng.random() < 0.7:
                prev = add(f"name: {name()}, type: batchnorm, inputs: [{prev}]")
        else:  # two paths from prev, joined
            a = add(f"name: {name()}, type: conv2d, filters: {shape[0]}, kernel: 3, padding: 1, inputs: [{prev}]")
            a = add(f"name: {name()}, type: batchnorm, inputs: [{a}]")
            if rng.random() < 0.5:
                a = add(f"name: {name()}, type: relu, inputs: [{a}]")
            b = prev if rng.random() < 0.5 else add(f"name: {name()}, type: relu, inputs: [{prev}]")
            if block == "branch_add":
                prev = add(f"name: {name()}, type: add, inputs: [{a}, {b}]")
            else:
                prev = add(f"name: {name()}, type: concat, inputs: [{a}, {b}]")
                shape = (2 * shape[0],) + shape[1:]
        if rng.random() < 0.8:
            act = rng.choice(["relu", "relu", "relu", "relu6", "tanh"])
            prev = add(f"name: {name()}, type: {act}, inputs: [{prev}]")
        if rng.random() < 0.25:
            prev = add(f"name: {name()}, type: dropout, rate: 0.3, inputs: [{prev}]")
        if shape[1] >= 4 and rng.random() < 0.8:
            kind = rng.choice(["maxpool", "maxpool", "maxpool", "maxpool_overlap", "avgpool"])
            if kind == "maxpool_overlap":
                prev = add(f"name: {name()}, type: maxpool, kernel: 3, stride: 2, inputs: [{prev}]")
                shape = (shape[0], (shape[1] - 3) // 2 + 1, (shape[2] - 3) // 2 + 1)
            else:
                ceil = rng.random() < 0.3
                prev = add(f"name: {name()}, type: {kind}, kernel: 2, inputs: [{prev}]"
                           + (", ceil_mode: true" if ceil else ""))
                shape = (shape[0],) + tuple(-(-s // 2) if ceil else s // 2 for s in shape[1:])
        if rng.random() < 0.2:  # a second reader of the relu (or whatever came last): no swap there
            prev = add(f"name: {name()}, type: add, inputs: [{prev}, {prev}]")
    prev = add(f"name: {name()}, type: flatten, inputs: [{prev}]")
    classification = rng.random() < 0.5
    units = int(rng.integers(2, 5))
    add(f"name: {name()}, type: dense, units: {units}, inputs: [{prev}]")
    loss = "cross_entropy" if classification else "mse"
    text = (f"cnnspec: 1\nname: random-{index}\ninput: {{shape: [{c}, {h}, {h}]}}\nlayers:\n" + "\n".join(lines)
            + f"\nloss: {{type: {loss}}}\noptimizer: {{type: sgd, lr: 0.05, momentum: 0.9}}\n"
            + f"init: {{seed: {index}}}\n")
    return text, (c, h, h), units if classification else (units,)


@pytest.mark.parametrize("index", range(24))
def test_random_specs_bit_for_bit(index):
    rng = np.random.default_rng(1000 + index)
    text, in_shape, out = random_spec(rng, index)
    dtype = "float32" if index % 3 == 0 else "float64"
    batch = int(rng.integers(2, 6))
    case = index % 4
    if case == 0:
        x = rng.standard_normal((batch, *in_shape)).astype(dtype)
    else:
        x = hard_values(rng, (batch, *in_shape), dtype, nan=case == 3)
    target = rng.integers(0, out, batch) if isinstance(out, int) else rng.standard_normal((batch, *out))
    compare(text, x, target, dtype, weights=quantised_weights(rng) if case in (1, 3) else None)


def test_random_specs_exercise_every_pass():
    """The generator above is worth something only if the passes fire on its specs."""
    fired = set()
    for index in range(24):
        text, *_ = random_spec(np.random.default_rng(1000 + index), index)
        plan = rewrite.build(loads_spec(text).graph)
        fired |= {line.split(":")[0] for line in plan.applied}
    assert fired == {p.__name__ for p in rewrite.PASSES}


# ------------------------------------------------------------------ the passes fire where they should


def test_passes_fire_on_bench_cnn():
    """If a pass silently stopped applying, the benchmark would lose its speed and nothing else would say so."""
    model = cnnspec.compile(ROOT / "specs" / "bench_cnn.yaml")
    kinds = [s.type for s in model.plan.steps]
    assert kinds == ["conv2d", "batchnorm_maxpool_relu", "conv2d", "batchnorm_maxpool_relu", "flatten", "dense"]
    assert set(model.plan.deferred) == {"relu1", "relu2", "bn1", "bn2"}
    assert [line.split(":")[0] for line in model.plan.applied] == (["relu_after_maxpool"] * 2
                                                                   + ["batchnorm_after_maxpool"] * 2)
    off = cnnspec.compile(ROOT / "specs" / "bench_cnn.yaml", rewrite=False)
    assert [s.type for s in off.plan.steps] == [n.type for n in off.graph.nodes.values()]


def test_batchnorm_relu_fires_on_resnet_block():
    model = cnnspec.compile(ROOT / "specs" / "resnet_basic_block.yaml")
    assert [s.type for s in model.plan.steps][:2] == ["conv2d", "batchnorm_relu"]
    assert set(model.plan.deferred) == {"bn1"}


@pytest.mark.parametrize("spec", sorted((ROOT / "specs").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_specs_bit_for_bit(spec):
    loaded = cnnspec.load_spec(spec)
    graph = loaded.graph
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *loaded.input.shape)).astype(loaded.input.dtype)
    out = graph.nodes[graph.output].shape
    if loaded.loss is None:
        pytest.skip("no loss")
    target = rng.integers(0, out[0], 3) if loaded.loss.type == "cross_entropy" else \
        (rng.random((3, *out)) > 0.5).astype(float)
    compare(spec.read_text(), x, target, loaded.input.dtype, steps=2)


# ------------------------------------------------------------------ deferred activations


def test_deferred_activations_are_computed_on_demand_and_kept():
    model = cnnspec.compile(ROOT / "specs" / "bench_cnn.yaml")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    model.forward(x)
    acts = model.activations
    assert list(acts) == list(model.graph.nodes) and len(acts) == len(model.graph.nodes)
    assert "relu1" in acts and "nope" not in acts
    assert "relu1" not in acts.computed()
    first = acts["relu1"]
    assert "relu1" in acts.computed() and acts["relu1"] is first
    assert set(dict(acts)) == set(model.graph.nodes)
    np.testing.assert_array_equal(first, np.maximum(acts["bn1"], 0))
    with pytest.raises(KeyError):
        acts["nope"]
    model.forward(x)  # a new pass: nothing of the old one is kept
    assert "relu1" not in model.activations.computed()


def test_deferred_activations_in_hwc_layout():
    text = (ROOT / "specs" / "bench_cnn.yaml").read_text().replace("shape: [3, 32, 32]",
                                                                  "shape: [32, 32, 3]\n  layout: HWC")
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3))
    target = np.array([1, 2])
    compare(text, x, target, steps=1)
    model = cnnspec.compile(loads_spec(text))
    model.forward(x)
    assert model.activations["relu1"].shape == (2, 30, 30, 32)


# ------------------------------------------------------------------ memory: the estimate still bounds the peak

KERNEL_ONE_POOL = """
cnnspec: 1
name: kernel-one-pool
input: {shape: [3, 8, 8]}
layers:
  - {name: conv, type: conv2d, filters: 8, kernel: 3, padding: 1}
  - {name: bn, type: batchnorm}
  - {name: act, type: relu}
  - {name: pool, type: maxpool, kernel: 1}
  - {name: act2, type: relu, inputs: [pool]}
  - {name: pool2, type: maxpool, kernel: 2, padding: 1}
  - {name: flatten, type: flatten}
  - {name: fc, type: dense, units: 3}
loss: {type: cross_entropy}
optimizer: {type: sgd, lr: 0.1, momentum: 0.9}
"""


@pytest.mark.parametrize("name, batch, dtype", [
    ("bench_cnn", 8, "float64"), ("resnet_basic_block", 4, "float64"), ("vgg_blocks", 2, "float32"),
    ("kernel_one_pool", 16, "float64"),
])
def test_estimate_bounds_the_rewritten_peak_with_every_activation_read(name, batch, dtype):
    """limits.estimate counts every layer's output and one op per layer; a rewritten plan must stay under it
    even when the deferred activations are all computed before the backward pass."""
    import gc
    import tracemalloc
    spec = loads_spec(KERNEL_ONE_POOL) if name == "kernel_one_pool" else cnnspec.load_spec(ROOT / "specs" /
                                                                                           f"{name}.yaml")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *spec.input.shape)).astype(dtype)
    classes = spec.graph.nodes[spec.graph.output].shape[0]
    y = rng.integers(0, classes, batch)
    gc.collect()
    tracemalloc.start()
    try:
        model = cnnspec.compile(spec, dtype=dtype)
        assert model.plan.deferred
        for _ in range(2):
            out = model.forward(x, train=True)
            dict(model.activations)  # every deferred activation computed, and kept
            model.loss(out, y)
            model.backward()
            model.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    estimate = model.memory_estimate(batch, train=True, backward=True, step=True).total
    assert peak <= estimate, (peak, estimate)


def test_the_comparison_catches_the_swap_on_overlapping_windows(monkeypatch):
    """Why overlapping windows are left alone, and a check of the checker: forced onto 3x3 windows with stride
    1, the swap changes the sign of zero gradients (a value in several all-negative windows)."""
    monkeypatch.setattr(rewrite, "_disjoint_windows", lambda attrs: True)
    rng = np.random.default_rng(3)
    x = hard_values(rng, (6, 2, 6, 6), "float64")
    with pytest.raises(AssertionError, match="differ in their bits"):
        compare(RELU_POOL.format(act="relu", kernel=3, stride=1, extra=""), x, rng.standard_normal((6, 3)))
