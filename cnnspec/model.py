"""The executable NumPy model: `cnnspec.compile(spec)` -> Model.

State lives in dicts keyed by PyTorch state_dict names (params, buffers, optimizer velocity); ops in
cnnspec/ops are stateless. Arrays on the public boundary are in the spec's layout (CHW or HWC) with the
batch first; internally everything is indexed NCHW (stored batch-last in memory, see ops/parallel.py)
and the boundary transposes.

Memory: nothing is allocated before the limit is checked (limits.py). The constructor refuses a model
whose parameters or whose estimated memory for one sample exceed `max_memory`; forward and backward
refuse a batch whose estimated peak would exceed it, before allocating anything for it.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import arrays, limits, rewrite as rewrites
from .errors import DataError, Problem, SpecError
from .graph import PARAM_LAYOUT, Graph, load_spec
from .init import init_state
from .losses import LOSSES
from . import optim
from .ops import OPS, parallel
from .ops.fused import FUSED
from .schema import INPUT_NAME, Spec, closest


class Model:
    """A compiled spec. See docs/python-api.md; the attributes below are the public surface."""

    def __init__(self, spec: Spec, dtype=None, max_memory=None, rewrite: bool = True):
        self.spec = spec
        self.graph: Graph = spec.graph
        # What forward and backward run: the graph's layers, rewritten exactly (rewrite.py) unless rewrite=False.
        self.plan: rewrites.Plan = rewrites.build(self.graph, rewrite)
        self.dtype = np.dtype(dtype or spec.input.dtype)
        if self.dtype not in (np.float32, np.float64):
            raise DataError(f"dtype must be float32 or float64, got {self.dtype}")
        self.max_memory: int = limits.resolve(max_memory)  # bytes; see limits.py
        limits.check_spec(self.graph, self.max_memory, self.dtype)  # before allocating the parameters
        self.params, self.buffers = init_state(self.graph, self.dtype, spec.init.seed, spec.init.scheme)
        self.velocity: dict[str, np.ndarray] = {}  # optimizer state by name (optim.update)
        self.epoch = 0        # epochs completed: what a `per: epoch` schedule counts (train sets it)
        self.steps_taken = 0  # optimizer steps taken: what a `per: step` schedule counts
        self.grads: dict[str, np.ndarray] = {}
        self.input_grad: np.ndarray | None = None
        self.activations: Mapping[str, np.ndarray] = {}  # every layer's output of the last forward (Activations)
        self._rng = np.random.default_rng([spec.init.seed, 1])  # dropout masks; its own stream
        self._tape: list | None = None
        self._dloss: np.ndarray | None = None
        self._batch = (0, False, 0)  # the last forward's (batch, train, bytes of the caller's input copy)
        if spec.weights is not None:
            self._check_weights_memory()
            self._apply_spec_weights()

    # ------------------------------------------------------------------ introspection
    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """{layer: per-sample output shape in the declared layout}."""
        return {n.name: self.graph.declared(n.shape) for n in self.graph.nodes.values()}

    @property
    def output_name(self) -> str:
        return self.graph.output

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**self.params, **self.buffers}

    def _to_internal(self, a: np.ndarray) -> np.ndarray:
        return a.transpose(0, 3, 1, 2) if self.graph.layout == "HWC" and a.ndim == 4 else a

    def _to_declared(self, a: np.ndarray) -> np.ndarray:
        return a.transpose(0, 2, 3, 1) if self.graph.layout == "HWC" and a.ndim == 4 else a

    # ------------------------------------------------------------------ weights
    def set_weights(self, values: dict[str, np.ndarray], source: str = "weights", strict: bool = False) -> None:
        """Replace parameters/buffers by state_dict name; errors name the key and both shapes.

        strict: a full checkpoint: every parameter and running statistic must be present
        (num_batches_tracked may be missing, as in older PyTorch checkpoints).
        A checkpoint of another model gets one line per kind of problem (unknown names, wrong shapes,
        missing names), the first few named and the rest counted, not one line per parameter."""
        known = {**self.params, **self.buffers}
        unknown, wrong, problems = [], [], []
        for name, value in values.items():
            if name not in known:
                # did-you-mean for the first few only: the message names a few and counts the rest
                unknown.append((name, closest(name, known) if len(unknown) < 10 else None))
                continue
            a = np.asarray(value)
            if a.shape != known[name].shape:
                wrong.append((name, a.shape, known[name].shape))
                continue
            try:
                arrays.check_numeric(a, f"{source}: '{name}'")  # numbers, and finite: says where if not
            except DataError as exc:
                problems.append(str(exc))
        if len(unknown) == 1:
            (name, close), = unknown
            problems.append(f"{source}: unknown parameter '{name}'" + (f"; did you mean '{close}'?" if close else "")
                            + f" (parameters: {_first(list(known), ', ', 12)})")
        elif unknown:
            problems.append(f"{source}: {len(unknown)} unknown parameters: "
                            + _first([f"'{n}'" + (f" (did you mean '{c}'?)" if c else "") for n, c in unknown], ", ")
                            + f" (the model's: {_first(list(known), ', ', 12)})")
        if len(wrong) == 1:
            (name, got, want), = wrong
            problems.append(f"{source}: '{name}' has shape {got}, the model expects {want}"
                            + _shape_hint(name, self.graph))
        elif wrong:
            problems.append(f"{source}: {len(wrong)} parameters have the wrong shape: " + _first(
                [f"{n} (expected {list(want)}, got {list(got)})" for n, got, want in wrong], ", "))
        if strict:
            missing = [k for k in known if k not in values and not k.endswith(".num_batches_tracked")]
            if missing:
                problems.append(f"{source}: missing " + (missing[0] if len(missing) == 1 else
                                f"{len(missing)} of the model's {len(known)} arrays: {_first(missing, ', ', 8)}"))
        if problems:
            if len(unknown) + len(wrong) > 1 and len(unknown) + len(wrong) >= len(values) // 2:
                problems.append(f"{source}: is it a checkpoint of another spec? This model ('{self.spec.name}') "
                                f"has {len(self.params)} parameter{'s' if len(self.params) != 1 else ''} "
                                "(`cnnspec summary SPEC` lists them)")
            raise DataError("\n".join(problems))
        for name, value in values.items():
            target = self.params if name in self.params else self.buffers
            target[name] = np.array(value, dtype=target[name].dtype)  # a copy the model owns

    def _apply_spec_weights(self) -> None:
        """The spec's `weights:`. Names, shapes and inline values were checked when the spec was loaded
        (graph.py); what can still fail here is reading the .npy/.npz files they name."""
        spec, doc = self.spec, self.spec.document
        base = Path(spec.source_path).parent if spec.source_path else Path(".")
        problems: list[Problem] = []

        def bad(msg, path):
            problems.append(doc.problem(msg, path) if doc else Problem(msg))

        if isinstance(spec.weights, str):
            try:
                self.set_weights(arrays.load_npz(base / spec.weights, "weights"), source=spec.weights)
            except DataError as exc:
                bad(str(exc), ("weights",))
        else:
            for name, value in spec.weights.items():
                try:
                    array = arrays.load_npy(base / value, "weights") if isinstance(value, str) else np.array(value)
                    self.set_weights({name: array}, source="weights")
                except DataError as exc:
                    bad(f"weights '{name}': {exc}", ("weights", name))
        if problems:
            raise SpecError(problems, doc.filename if doc else "<spec>", doc.source if doc else None)

    def save(self, path) -> None:
        """Write params and buffers to .npz with PyTorch state_dict names (atomic)."""
        arrays.save_npz(path, self.state_dict())

    def load(self, path, strict: bool = True) -> None:
        """Load an .npz of state_dict names (from save(), or numpy-converted PyTorch state_dict)."""
        self.set_weights(arrays.load_npz(path, "weights"), source=str(path), strict=strict)

    def astype(self, dtype) -> "Model":
        """A copy of this model with params and buffers in another float dtype."""
        other = Model.__new__(Model)
        other.__dict__.update(self.__dict__)
        other.dtype = np.dtype(dtype)
        other.params = {k: v.astype(other.dtype) for k, v in self.params.items()}
        other.buffers = {k: (v if v.dtype.kind == "i" else v.astype(other.dtype)) for k, v in self.buffers.items()}
        other.velocity = {k: v.astype(other.dtype) for k, v in self.velocity.items()}
        other.activations, other._tape, other._dloss, other.grads = {}, None, None, {}
        other._rng = copy.deepcopy(self._rng)  # the same dropout stream, advancing independently
        return other

    # ------------------------------------------------------------------ memory
    def memory_estimate(self, batch: int, *, train: bool = False, backward: bool = False, step: bool = False,
                        given_input: int = 0, extra=()) -> limits.Estimate:
        """The estimated peak bytes of a forward (train mode or not), optionally with loss and backward
        (backward) and an SGD step (step), on a batch of `batch` in this model's dtype (limits.estimate)."""
        return limits.estimate(self.graph, batch, self.dtype, train=train, backward=backward, step=step,
                               given_input=given_input, extra=extra)

    def _pass_estimate(self, batch: int, **kwargs) -> limits.Estimate:
        """limits.estimate for forward's and backward's checks, remembered: it depends only on the graph, the
        dtype, the thread count and these arguments (ints and bools), and a training loop asks the same
        question every step."""
        key = (batch, str(self.dtype), limits.threads(), *sorted(kwargs.items()))
        memo = self.__dict__.setdefault("_estimates", {})  # shared with astype's copies: the dtype is in the key
        if key not in memo:
            if len(memo) >= 64:  # a few batch sizes in practice; never unbounded
                memo.clear()
            memo[key] = limits.estimate(self.graph, batch, self.dtype, **kwargs)
        return memo[key]

    def check_memory(self, batch: int, advice: str = "use a smaller batch", **kwargs) -> limits.Estimate:
        """memory_estimate(batch, **kwargs), or MemoryLimitError when it exceeds `max_memory`."""
        return limits.require(self.memory_estimate(batch, **kwargs), self.max_memory, advice)

    def input_copy_bytes(self, x: np.ndarray) -> int:
        """Bytes of the caller's array, which coexists with the engine's own copy of it: the engine always
        makes one (converted to its dtype and layout), so that a caller reusing its array between forward and
        backward changes nothing the backward reads."""
        return x.nbytes

    def _check_weights_memory(self) -> None:
        """Before reading weights files: they hold at most the model's parameters and buffers (counted in
        float64), loaded while the model's own arrays exist."""
        held = (self.graph.param_count + self.graph.buffer_count) * 8
        self.check_memory(1, advice="make the model smaller", extra=(("the weights file's arrays", held),))

    @staticmethod
    def _nbytes(arrays_: dict) -> int:
        return sum(a.nbytes for a in arrays_.values())

    # ------------------------------------------------------------------ forward / loss / backward / step
    def _check_input(self, x, train: bool) -> np.ndarray:
        x = np.asarray(x)
        want = tuple(self.spec.input.shape)
        if x.dtype.kind not in "fiu":
            raise DataError(f"input must be numbers, got dtype {x.dtype}")
        if x.shape[1:] != want or x.ndim != len(want) + 1:
            hint = " (add a batch dimension: x[None])" if x.shape == want else ""
            raise DataError(f"input has shape {x.shape}; the spec expects (N, {', '.join(map(str, want))}) "
                            f"in {self.graph.layout if len(want) == 3 else 'feature'} layout{hint}")
        if x.shape[0] == 0:
            raise DataError("input batch is empty (N = 0)")
        given = self.input_copy_bytes(x)
        # What the model holds now (gradients, momentum) stays while this forward runs.
        limits.require(self._pass_estimate(x.shape[0], train=train, gradients=self._nbytes(self.grads),
                                           momentum=self._nbytes(self.velocity), given_input=given), self.max_memory)
        self._batch = (x.shape[0], train, given)
        # The engine's own copy, stored batch-last as the ops store activations (ops/parallel.py): the first
        # layer reads it without a transposing copy of its own, and nothing the caller holds is kept.
        return parallel.batch_first(parallel.copy(parallel.batch_last(self._to_internal(x.astype(self.dtype,
                                                                                                  copy=False)))))

    def forward(self, x, train: bool = False) -> np.ndarray:
        """x: (N, *input.shape) in the declared layout -> output of the `output` layer, same layout rules.

        train=True uses batch statistics in batchnorm (and updates its running buffers) and applies dropout."""
        x = self._check_input(x, train)
        # The previous pass's arrays go first, so two passes never coexist.
        self._tape, self._dloss, self.activations = None, None, {}
        values = {INPUT_NAME: x}
        tape = []
        for step in self.plan.steps:
            layer = step.layer
            params = {k: self.params[f"{layer}.{k}"] for k in step.params}
            buffers = {k: self.buffers[f"{layer}.{k}"] for k in step.buffers}
            out, cache, updates = _op(step.type).forward(step.attrs, [values[i] for i in step.inputs], params,
                                                         buffers, train, self._rng)
            assert out.shape[1:] == step.shape, f"{step.name}: op gave {out.shape[1:]}, inference said {step.shape}"
            for k, v in updates.items():
                self.buffers[f"{layer}.{k}"] = v
            values[step.name] = out
            tape.append((step, cache))
        self._tape = tape
        self._dloss = None
        needed = {d.source for d in self.plan.deferred.values() if d.kind != "op"}  # what deferred ones read
        self.activations = Activations(self, values, {step.name: cache for step, cache in tape if step.name in needed})
        return self.activations[self.graph.output]

    def loss(self, out, target) -> float:
        """The spec's loss of `out` (as returned by forward) against `target`; remembers dloss/dout for backward."""
        if self.spec.loss is None:
            raise DataError("the spec has no `loss:`; add e.g. loss: {type: mse} to compute a loss")
        target = np.asarray(target)
        if target.dtype.kind == "f":
            target = target.astype(self.dtype, copy=False)
        pred = self._to_internal(np.asarray(out))
        if target.ndim == 4:
            target = self._to_internal(target)
        try:
            value, dpred = LOSSES[self.spec.loss.type](pred, target, self.spec.loss.reduction)
        except ValueError as exc:  # the loss functions' messages start with the loss's name
            msg, kind = str(exc), self.spec.loss.type
            raise DataError(f"loss {msg}" if msg.startswith(f"{kind}:") else f"loss {kind}: {msg}") from None
        self._dloss = dpred
        return float(value)

    def backward(self, dout=None, input_grad: bool = True) -> dict[str, np.ndarray]:
        """Gradients of the last loss (or of sum(out * dout)) w.r.t. every parameter.

        input_grad: also compute d(loss)/d(input) into `model.input_grad` (training skips it)."""
        if self._tape is None:
            raise DataError("call forward() before backward()")
        if dout is None:
            if self._dloss is None:
                raise DataError("call loss() before backward(), or pass dout")
            dout = self._dloss
        else:
            dout = self._to_internal(np.asarray(dout, dtype=self.dtype))
        batch, train, given = self._batch
        limits.require(self._pass_estimate(batch, train=train, backward=True, momentum=self._nbytes(self.velocity),
                                           given_input=given), self.max_memory)
        self.grads = {}  # the previous gradients go before the new ones are allocated
        douts: dict[str, np.ndarray] = {self.graph.output: dout}
        grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        for step, cache in reversed(self._tape):
            g = douts.pop(step.name, None)
            if g is None:  # not upstream of the output: no gradient flows here
                continue
            op = _op(step.type)
            if op.skips_dx and not input_grad and all(src == INPUT_NAME for src in step.inputs):
                dxs, dparams = op.backward(step.attrs, g, cache, need_dx=False)
            else:
                dxs, dparams = op.backward(step.attrs, g, cache)
            for k, v in dparams.items():
                key = f"{step.layer}.{k}"
                assert v.shape == grads[key].shape, f"{key}: grad {v.shape} vs param {grads[key].shape}"
                grads[key] = v
            for src, dx in zip(step.inputs, dxs):
                if dx is not None:
                    douts[src] = douts[src] + dx if src in douts else dx
        dx = douts.get(INPUT_NAME) if input_grad else None
        self.input_grad = self._to_declared(dx) if dx is not None else None
        self.grads = grads
        return grads

    def step(self, grads: dict[str, np.ndarray] | None = None) -> None:
        """One update of the spec's optimizer (PyTorch's formulas) with the last backward's gradients."""
        grads = grads if grads is not None else self.grads
        if not grads:
            raise DataError("call backward() before step()")
        for name, g in grads.items():
            if name in self.params and np.shape(g) != self.params[name].shape:
                raise ValueError(f"sgd: gradient of '{name}' has shape {np.shape(g)}, parameter has "
                                 f"{self.params[name].shape}")
        o = self.spec.optimizer
        # One parameter at a time, so the old and new values of only one tensor coexist (limits.py counts
        # that); new dicts, so dicts a caller holds keep the values from before the step. The optimizer's
        # state (SGD's velocity, Adam's moments, ...) lives in self.velocity, keyed by name (optim.update).
        params, velocity = dict(self.params), dict(self.velocity)
        self.params, self.velocity = params, velocity
        for name in list(params):
            if name not in grads:
                continue
            lr_mult, decay_mult = optim.multipliers(o, name)
            lr = optim.scheduled_lr(o, self.epoch, self.steps_taken, base=o.lr * lr_mult)  # as a param group
            params[name], new_state = optim.update(o, name, params[name], grads[name], velocity, lr,
                                                   o.weight_decay * decay_mult)
            velocity.update(new_state)
        self.steps_taken += 1

    def evaluate(self, x, target, batch_size: int = 32, forward=None) -> "Evaluation":
        """The loss over a whole data set in evaluation mode (batch norm's running statistics, no dropout),
        batch by batch, and for classification losses the accuracy and the confusion matrix.

        x: (M, *input.shape) in the declared layout; target: (M, ...) as loss() takes it. With reduction
        "mean" the loss is the mean over all M samples (as one batch of M would give), with "sum" the sum.
        forward: what computes a batch's output (default: this model's forward in evaluation mode; the
        onnxruntime backend passes its session's, cnnspec/onnx_runtime.py)."""
        forward = forward or (lambda xb: self.forward(xb, train=False))
        if self.spec.loss is None:
            raise DataError("the spec has no `loss:`; add e.g. loss: {type: cross_entropy} to evaluate a model")
        x, target = np.asarray(x), np.asarray(target)
        if len(x) != len(target):
            raise DataError(f"x has {len(x)} samples but the targets have {len(target)}")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        kind, reduction = self.spec.loss.type, self.spec.loss.reduction
        total, correct, labels, confusion = 0.0, 0, 0, None
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], target[start:start + batch_size]
            with np.errstate(over="ignore", invalid="ignore"):  # an overflowing loss is reported as inf
                out = forward(xb)
                value = self.loss(out, yb)
            total += value * len(xb) if reduction == "mean" else value
            found = predictions(kind, out, yb)
            if found is not None:
                true, pred, classes = found
                correct += int((true == pred).sum())
                labels += true.size
                counts = np.bincount(true * classes + pred, minlength=classes * classes).reshape(classes, classes)
                confusion = counts if confusion is None else confusion + counts
        self._tape, self._dloss, self.activations = None, None, {}  # nothing is kept for a backward pass
        return Evaluation(samples=len(x), loss=total / len(x) if reduction == "mean" else total, loss_type=kind,
                          reduction=reduction, correct=correct if confusion is not None else None,
                          labels=labels if confusion is not None else None, confusion=confusion)

    def train_step(self, x, target) -> float:
        """forward(train=True), loss, backward, step; returns the loss before the update."""
        value = self.loss(self.forward(x, train=True), target)
        self.backward(input_grad=False)
        self.step()
        return value


def _op(kind: str):
    """The op a step runs, looked up at call time (so a wrapped or patched OPS entry is used)."""
    return OPS[kind] if kind in OPS else FUSED[kind]


class Activations(Mapping):
    """model.activations: {layer: its output of the last forward}, every layer in declaration order, in the
    declared layout (views of the engine's arrays). A layer whose output the rewritten plan does not keep
    (rewrite.py: `deferred`) is computed when first asked for, bit for bit what the unrewritten model
    computes, and kept until the next forward. Read-only; dict(model.activations) gives a plain dict."""

    def __init__(self, model: "Model", values: dict, caches: dict):
        self._model, self._values, self._caches = model, values, caches
        self._names = list(model.graph.nodes)
        self._declared: dict[str, np.ndarray] = {}

    def _value(self, name: str) -> np.ndarray:
        """A value of the plan, or a deferred activation (computed once), in internal layout."""
        if name not in self._values:
            deferred = self._model.plan.deferred[name]
            self._values[name] = deferred.compute(self._value, self._caches)
        return self._values[name]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._declared:
            if name not in self._model.graph.nodes:
                raise KeyError(name)
            view = self._model._to_declared(self._value(name)).view()
            view.flags.writeable = False  # the engine's own memory: its backward reads some of it
            self._declared[name] = view
        return self._declared[name]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name) -> bool:
        return name in self._model.graph.nodes

    def computed(self) -> list[str]:
        """Layers whose outputs exist now (kept by the plan, or deferred and asked for)."""
        return [n for n in self._names if n in self._values]

    def __repr__(self) -> str:
        return f"Activations({', '.join(self._names)})"


def predictions(loss_type: str, out: np.ndarray, target: np.ndarray):
    """(true, predicted, classes) as flat integer arrays for a classification loss, None for regression (mse).

    cross_entropy, multi_margin: out (N, K) class scores, the class is the argmax; targets are indices or
    per-class probabilities (their argmax). bce_with_logits: every output is a yes/no label, predicted yes when the logit is > 0 and
    true when the target is > 0.5 (classes 0 and 1)."""
    if loss_type in ("cross_entropy", "multi_margin") and out.ndim == 2:
        true = target if target.ndim == 1 else target.argmax(axis=1)
        return true.astype(np.int64, copy=False), out.argmax(axis=1), out.shape[1]
    if loss_type == "bce_with_logits":
        return (np.asarray(target) > 0.5).reshape(-1).astype(np.int64), (out > 0).reshape(-1).astype(np.int64), 2
    return None


@dataclass
class Evaluation:
    """What Model.evaluate measured. For classification losses `correct` of `labels` predictions were right
    (labels = samples for cross_entropy, every output value for bce_with_logits) and `confusion[i, j]`
    counts the labels of true class i predicted as class j; for mse these are None."""

    samples: int
    loss: float
    loss_type: str
    reduction: str
    correct: int | None = None
    labels: int | None = None
    confusion: np.ndarray | None = None

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None or not self.labels else self.correct / self.labels

    def to_dict(self) -> dict:
        return {"samples": self.samples, "loss": self.loss, "loss_type": self.loss_type, "reduction": self.reduction,
                "accuracy": self.accuracy, "correct": self.correct, "labels": self.labels,
                "confusion": None if self.confusion is None else self.confusion.tolist()}


def _first(items: list[str], sep: str, shown: int = 3) -> str:
    """The first `shown` items joined by `sep`, then how many more (a message stays one readable line)."""
    more = len(items) - shown
    return sep.join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def _shape_hint(name: str, graph: Graph) -> str:
    layer, _, local = name.rpartition(".")
    node = graph.nodes.get(layer)
    layout = PARAM_LAYOUT.get((node.type, local), "") if node else ""
    return f" ({layout})" if layout else ""


def compile(spec, *, dtype=None, weights=None, max_memory=None, rewrite: bool = True) -> Model:  # noqa: A001
    """Build an executable model from a Spec or a spec path; `weights` is an optional .npz path or dict.

    max_memory: the memory limit in bytes or as text ("8GiB"); default CNNSPEC_MAX_MEMORY, else 4 GiB.
    The model must fit it for one sample; forward and backward refuse batches that would not.
    rewrite: run the exact rewrites of rewrite.py (every observable number is the same bit for bit;
    False runs one op per layer, for comparison)."""
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec, max_memory)
    if not isinstance(spec, Spec):
        raise TypeError(f"compile() takes a Spec or a path, got {type(spec).__name__}")
    model = Model(spec, dtype, max_memory, rewrite)
    if weights is not None:
        if isinstance(weights, (str, Path)):
            model._check_weights_memory()
            model.load(weights, strict=False)
        else:
            model.set_weights(weights)
    return model
