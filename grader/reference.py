"""Reference answers, computed through cnnspec's public API (compile, forward, loss, backward, step).

One `Reference` per assignment variant (the data one student sees); the grader caches it by variant key,
so a class of 500 students with shared data runs each model once. Everything is computed lazily: an
assignment of shape questions never runs a forward pass.

Also the recomputations that "error carried forward" needs: a loss for the student's own output, gradients
for it, a layer applied to the student's own upstream activation, an SGD step with the student's gradient.
"""
from __future__ import annotations

from functools import cache, cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

import cnnspec
from cnnspec.errors import CnnspecError, DataError
from cnnspec import optim
from cnnspec.schema import INPUT_NAME

from .assignment import Assignment, Variant


def bn_axes(ndim: int, layout: str) -> tuple[int, ...]:
    """Axes of a batch (declared layout) that batch norm averages over: all but the channel axis."""
    if ndim == 2:
        return (0,)
    return (0, 1, 2) if layout == "HWC" else (0, 2, 3)


def layer_chain(graph, src: str, layer: str) -> Optional[list[str]]:
    """The layers from `src` (exclusive) to `layer` (inclusive) when each takes the one before it as its only
    input (a plain sequence, e.g. relu1, pool1 from conv1 to pool1); None otherwise."""
    path = [layer]
    node = graph.nodes[layer]
    while True:
        if len(node.inputs) != 1:
            return None
        prev = node.inputs[0]
        if prev == src:
            return path[::-1]
        if prev == INPUT_NAME or prev not in graph.nodes:
            return None
        path.append(prev)
        node = graph.nodes[prev]


def kernel_shape(weight_shape: tuple[int, ...], layout: str) -> list[int]:
    """One conv kernel in the declared layout: (F, C/g, kh, kw) -> [kh, kw, C/g] (HWC) or [C/g, kh, kw] (CHW)."""
    _, c, kh, kw = weight_shape
    return [kh, kw, c] if layout == "HWC" else [c, kh, kw]


def _array_bytes(obj, depth: int = 0) -> int:
    """nbytes of the NumPy arrays in `obj`, looking into dicts, lists, tuples and a Model's own attributes."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth > 4:
        return 0
    if isinstance(obj, dict):
        return sum(_array_bytes(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_array_bytes(v, depth + 1) for v in obj)
    from cnnspec.model import Model
    if isinstance(obj, Model):
        return _array_bytes(vars(obj), depth + 1)
    return 0


class ModelRun:
    """One model of the assignment on one variant's data: a forward, loss and backward pass, done once."""

    def __init__(self, assignment: Assignment, name: str, variant: Variant):
        self.name = name
        self.spec = assignment.specs[name]
        self.ref = assignment.refs[name]
        self.graph = self.spec.graph
        self.layout = self.spec.input.layout
        self.variant = variant
        self._steps: list[dict[str, np.ndarray]] = []
        self._layer_models: dict[str, Any] = {}

    # -------------------------------------------------------------- data
    def _compile(self):
        model = cnnspec.compile(self.spec)
        if self.ref.weights:
            model.set_weights({p: self.variant.data[d] for p, d in self.ref.weights.items()},
                              source=f"model '{self.name}' weights")
        return model

    @cached_property
    def x(self) -> np.ndarray:
        return np.asarray(self.variant.data[self.ref.input], dtype=np.float64)

    @cached_property
    def target(self) -> np.ndarray:
        t = np.asarray(self.variant.data[self.ref.target])
        loss = self.spec.loss.type if self.spec.loss else None
        if loss == "cross_entropy" and t.ndim == 1:
            if t.dtype.kind == "f" and not np.all(t == np.round(t)):
                raise DataError(f"model '{self.name}': cross-entropy class indices must be integers, got {t}")
            return t.astype(np.int64)
        return t.astype(np.float64)

    # -------------------------------------------------------------- one pass
    @cached_property
    def model(self):
        """The compiled model, after forward (train per the assignment), loss and backward when there is a target."""
        model = self._compile()
        self.initial_params = {k: v.copy() for k, v in model.params.items()}
        self.initial_buffers = {k: v.copy() for k, v in model.buffers.items()}
        out = model.forward(self.x, train=self.ref.train)
        self.output = np.array(out)
        self.activations = {k: np.array(v) for k, v in model.activations.items()}
        self.loss_value: Optional[float] = None
        self.grads: dict[str, np.ndarray] = {}
        self.input_grad: Optional[np.ndarray] = None
        if self.ref.target is not None and self.spec.loss is not None:
            self.loss_value = model.loss(out, self.target)
            self.grads = {k: np.array(v) for k, v in model.backward().items()}
            self.input_grad = np.array(model.input_grad)
        return model

    def ensure_computed(self) -> None:
        """Run forward, loss and backward once: `model` fills output, activations, loss_value, grads,
        input_grad and initial_params as it is built."""
        self.model  # noqa: B018 - the cached property does the work

    def nbytes(self) -> int:
        """Bytes of the arrays this run keeps (its model's included): what caching it costs."""
        return _array_bytes(self.__dict__)

    def activation(self, layer: str) -> np.ndarray:
        self.ensure_computed()
        return self.x if layer == INPUT_NAME else self.activations[layer]

    def bn_input(self, layer: str) -> np.ndarray:
        return self.activation(self.graph.nodes[layer].inputs[0])

    def bn_stats(self, layer: str, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
        x = self.bn_input(layer)
        axes = bn_axes(x.ndim, self.layout)
        return x.mean(axis=axes), x.var(axis=axes, ddof=ddof)

    def params_after(self, steps: int) -> dict[str, np.ndarray]:
        """Parameters after `steps` optimizer steps on this batch (forward, loss, backward, step each time)."""
        if len(self._steps) < steps:
            model = self._compile()
            snapshots = []
            for _ in range(steps):
                model.loss(model.forward(self.x, train=self.ref.train), self.target)
                model.backward()
                model.step()
                snapshots.append({k: v.copy() for k, v in model.params.items()})
            self._steps = snapshots
        return self._steps[steps - 1]

    # -------------------------------------------------------------- recomputations (error carried forward)
    def loss_of(self, out: np.ndarray) -> float:
        """The spec's loss of the student's output against the target."""
        return self.model.loss(np.asarray(out, dtype=np.float64), self.target)

    def grads_for_output(self, out: np.ndarray) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
        """Gradients backpropagated from the loss of the student's output (through the reference pass)."""
        model = self.model
        model.loss(np.asarray(out, dtype=np.float64), self.target)
        grads = {k: np.array(v) for k, v in model.backward().items()}
        return grads, (np.array(model.input_grad) if model.input_grad is not None else None)

    def step_from_grad(self, param: str, grad: np.ndarray) -> np.ndarray:
        """One step of the spec's optimizer (SGD, Adam, AdamW, RMSprop; with the parameter's lr_mult/decay_mult
        and the schedule's first learning rate) from the initial parameters, with the student's gradient."""
        self.ensure_computed()
        o = self.spec.optimizer
        theta = self.initial_params[param]
        lr_mult, decay_mult = optim.multipliers(o, param)
        lr = optim.scheduled_lr(o, 0, 0, base=o.lr * lr_mult)
        new, _ = optim.update(o, param, theta, np.asarray(grad, dtype=theta.dtype), {}, lr,
                              o.weight_decay * decay_mult)
        return new

    def _layers(self, layer: str, src: Optional[str]) -> Optional[list[str]]:
        """The layers a recomputation runs: `layer` alone (src None: from its own input), or the chain from `src`."""
        if src is None:
            return [layer] if len(self.graph.nodes[layer].inputs) == 1 else None
        return layer_chain(self.graph, src, layer)

    def _chain_text(self, names: list[str], in_shape, title: str, changes: Optional[dict] = None) -> str:
        """A spec (YAML text) of the layers `names` in sequence on an input of `in_shape` (declared layout)."""
        layers = []
        for name in names:
            node = self.graph.nodes[name]
            d = node.layer.model_dump(exclude_none=True, exclude={"inputs"})
            if name == names[-1]:
                d.update(changes or {})
            d["name"] = name
            if d["type"] == "avgpool":
                d.pop("dilation", None)
            if d["type"] == "maxpool":
                d.pop("count_include_pad", None)
            layers.append(d)
        return yaml.safe_dump({"cnnspec": 1, "name": title,
                               "input": {"shape": [int(v) for v in in_shape], "layout": self.layout,
                                         "dtype": self.spec.input.dtype},
                               "layers": layers}, sort_keys=False)

    def layer_model(self, layer: str, changes: Optional[dict] = None, src: Optional[str] = None):
        """A model of `layer` alone (optionally with some attributes changed), or of the chain of layers from
        `src` (exclusive) to `layer`; None if none fits (dropout in training mode is random: never recomputed)."""
        key = (layer, src, repr(sorted((changes or {}).items())))
        if key in self._layer_models:
            return self._layer_models[key]
        names = self._layers(layer, src)
        model = None
        if names and not (self.ref.train and any(self.graph.nodes[n].type == "dropout" for n in names)) \
                and not (src is None and self.graph.nodes[layer].type == "dropout"):
            first = self.graph.nodes[names[0]]
            in_shape = self.graph.declared(self.graph.shape_of(first.inputs[0]))
            try:
                model = cnnspec.compile(cnnspec.loads_spec(self._chain_text(names, in_shape, "recomputed", changes),
                                                           f"<{layer}>"))
            except CnnspecError:
                model = None
        self._layer_models[key] = model
        return model

    def layer_forward(self, layer: str, upstream: np.ndarray, changes: Optional[dict] = None,
                      params: Optional[dict] = None, src: Optional[str] = None) -> Optional[np.ndarray]:
        """`layer` applied to an input activation (N, ...): the student's own upstream answer (error carried
        forward), or the true input under a wrong assumption (changed attributes or parameters). With `src`,
        `upstream` is the output of `src` and every layer between `src` and `layer` is applied too (with the
        reference's weights; batch norm in training mode uses the batch statistics of these values)."""
        model = self.layer_model(layer, changes, src)
        if model is None:
            return None
        self.ensure_computed()
        weights = {}
        for name in self._layers(layer, src) or []:
            node = self.graph.nodes[name]
            weights.update({f"{name}.{k}": self.initial_params[f"{name}.{k}"] for k in node.params})
            weights.update({f"{name}.{k}": self.initial_buffers[f"{name}.{k}"] for k in node.buffers
                            if f"{name}.{k}" in self.initial_buffers})
        weights.update({f"{layer}.{k}": v for k, v in (params or {}).items()})
        try:
            model.set_weights({k: v for k, v in weights.items() if k in model.params or k in model.buffers})
            return np.array(model.forward(np.asarray(upstream, dtype=np.float64), train=self.ref.train))
        except CnnspecError:
            return None

    def params_after_with(self, steps: int, **optimizer) -> dict[str, np.ndarray]:
        """Parameters after `steps` steps with some optimizer settings changed (e.g. momentum=0)."""
        model = self._compile()
        spec = self.spec.model_copy(update={"optimizer": self.spec.optimizer.model_copy(update=optimizer)})
        model.spec = spec
        for _ in range(steps):
            model.loss(model.forward(self.x, train=self.ref.train), self.target)
            model.backward()
            model.step()
        return {k: v.copy() for k, v in model.params.items()}

    def _graph_from(self, layer: str, upstream_shape: list[int], src: Optional[str]):
        names = self._layers(layer, src)
        if not names:
            return None
        try:
            spec = cnnspec.loads_spec(self._chain_text(names, upstream_shape, "carried-forward"), f"<{layer}>")
        except (CnnspecError, ValueError, TypeError):
            return None
        return spec.graph

    def shape_from(self, layer: str, upstream_shape: list[int], src: Optional[str] = None) -> Optional[list[int]]:
        """`layer`'s output shape if its input (with `src`: the output of `src`, through the layers between)
        had the student's upstream shape (None if impossible)."""
        g = self._graph_from(layer, upstream_shape, src)
        return None if g is None else list(g.declared(g.nodes[layer].shape))

    def param_count_from(self, layer: str, upstream_shape: list[int], src: Optional[str] = None) -> Optional[int]:
        """`layer`'s trainable parameters if the output of `src` (None: its own input) had the student's shape:
        a dense layer's weights follow its in_features, a conv layer's its input channels."""
        g = self._graph_from(layer, upstream_shape, src)
        return None if g is None else int(g.nodes[layer].param_count)


class Reference:
    """Every reference answer of one assignment variant."""

    def __init__(self, assignment: Assignment, variant: Variant):
        self.assignment = assignment
        self.variant = variant
        self._runs: dict[str, ModelRun] = {}
        self._expected: dict[str, Any] = {}
        self.loaded = False   # load_expected has given it its answers

    def nbytes(self) -> int:
        """Bytes of the arrays kept for this variant (model runs and answers): the Grader's cache is bounded
        by it as well as by count."""
        return sum(r.nbytes() for r in self._runs.values()) + _array_bytes(self._expected)

    def run(self, model: str) -> ModelRun:
        if model not in self._runs:
            self._runs[model] = ModelRun(self.assignment, model, self.variant)
        return self._runs[model]

    def run_for(self, q) -> ModelRun:
        return self.run(self.assignment.model_of[q.id])

    def expected(self, q) -> Any:
        """The right answer: list[int] for shapes, int for counts, float for a loss, ndarray otherwise."""
        if q.id not in self._expected:
            value = self.full(q)
            index = getattr(q, "index", None)
            self._expected[q.id] = np.asarray(value)[tuple(index)] if index is not None else value
        return self._expected[q.id]

    def full(self, q) -> Any:
        """The whole quantity a question is about (before its `index`)."""
        key = ("full", q.id)
        if key not in self._expected:
            self._expected[key] = self._compute(q)
        return self._expected[key]

    def _compute(self, q) -> Any:
        r = self.run_for(q)
        g = r.graph
        k = q.kind
        if k == "output_shape":
            return list(g.declared(g.nodes[q.layer].shape))
        if k == "param_count":
            return int(g.nodes[q.layer].param_count if q.layer else g.param_count)
        if k == "kernel_shape":
            return kernel_shape(g.nodes[q.layer].params["weight"], r.layout)
        if k == "weight_shape":
            layer, local = q.param.rsplit(".", 1)
            node = g.nodes[layer]
            return list(node.params.get(local, node.buffers.get(local)))
        if k == "activation":
            return r.activation(q.layer)
        if k == "bn_mean":
            return r.bn_stats(q.layer)[0]
        if k == "bn_var":
            return r.bn_stats(q.layer)[1]
        if k == "output":
            r.ensure_computed()
            return r.output
        if k == "prediction":
            r.ensure_computed()
            return np.argmax(r.output, axis=1).astype(np.int64)
        if k == "loss":
            r.ensure_computed()
            return float(r.loss_value)
        if k == "gradient":
            r.ensure_computed()
            return r.input_grad if q.param == INPUT_NAME else r.grads[q.param]
        if k == "param_after_steps":
            return r.params_after(q.steps)[q.param]
        raise AssertionError(f"unknown question kind {k!r}")

    def pack_expected(self) -> bytes:
        """Every question's expected answer as bytes, their types kept (list, int, float, NumPy scalar or
        array), for another process to load with load_expected instead of running the models: a JSON header
        (length-prefixed) with the engine_stamp() that computed them and each answer's type, dtype and shape,
        then the raw array bytes. A question whose answer cannot be computed is left out (grading it reports
        the problem, as without packing)."""
        import json

        header, blobs, offset = [], [], 0
        for q in self.assignment.questions:
            try:
                value = self.expected(q)
            except CnnspecError:
                continue
            kind = {list: "list", int: "int", float: "float", np.ndarray: "array"}.get(type(value), "scalar")
            if kind == "scalar" and not isinstance(value, np.generic):
                continue   # nothing else is expected; such a question is computed where it is graded
            arr = np.asarray(value)   # (not ascontiguousarray: it makes a scalar 1-d); tobytes is C order
            header.append({"id": q.id, "kind": kind, "dtype": arr.dtype.str, "shape": list(arr.shape),
                           "offset": offset})
            blobs.append(arr.tobytes())
            offset += arr.nbytes
        head = json.dumps({"engine": engine_stamp(), "answers": header}).encode()
        return len(head).to_bytes(4, "little") + head + b"".join(blobs)

    def load_expected(self, data: bytes) -> bool:
        """Take the expected answers from pack_expected's bytes (of this same variant): grading then runs a
        model only where a diagnosis needs one (a wrong answer's recomputations). Values are bit for bit
        those pack_expected saw. False, and nothing taken, when another engine packed them (another cnnspec,
        grader or NumPy: its numbers could differ); this reference then computes its answers itself."""
        import json

        self.loaded = True  # tried: not again
        n = int.from_bytes(data[:4], "little")
        head = json.loads(data[4:4 + n])
        if not isinstance(head, dict) or head.get("engine") != engine_stamp():
            return False
        body = memoryview(data)[4 + n:]
        ids = {q.id for q in self.assignment.questions}
        for item in head["answers"]:
            dtype = np.dtype(item["dtype"])
            if item["id"] not in ids or dtype.kind not in "biuf":
                continue
            count = int(np.prod(item["shape"], dtype=np.int64))
            arr = np.frombuffer(body, dtype, count, item["offset"]).reshape(item["shape"]).copy()
            kind = item["kind"]
            self._expected[item["id"]] = (arr.tolist() if kind == "list" else int(arr) if kind == "int" else
                                          float(arr) if kind == "float" else arr[()] if kind == "scalar" else arr)
        return True

    def solution(self) -> dict[str, Any]:
        """{question id: expected answer} for every question."""
        return {q.id: self.expected(q) for q in self.assignment.questions}


@cache
def engine_stamp() -> str:
    """What computes reference answers, as one hash: the source of the cnnspec and grader packages (the
    service's own code aside) and the NumPy version. Packed answers carry it (Reference.pack_expected), so
    answers packed before an upgrade that could change a number are computed again rather than trusted."""
    import hashlib

    h = hashlib.sha256(f"numpy {np.__version__}\n".encode())
    for package in (Path(cnnspec.__file__).parent, Path(__file__).parent):
        for path in sorted(package.rglob("*.py")):
            rel = path.relative_to(package.parent).as_posix()
            if not rel.startswith("grader/service/"):
                h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:32]
