"""Inference over a large data set in onnxruntime: the exported float32 model, as an explicit choice.

`cnnspec evaluate --backend onnxruntime` and `cnnspec train --backend onnxruntime` (the validation pass after
every epoch) use it; the NumPy engine stays the default and the only backend of everything that shows a
layer's values (run, summary, grade, activations). Imported lazily: onnx and onnxruntime are never loaded
at CLI start-up.

What runs: `onnx_export.to_onnx` of a float32 copy of the model (the same export `cnnspec compile` writes,
evaluation mode: batch norm with its running statistics, dropout the identity), in an onnxruntime session
with the engine's thread count (limits.threads). onnxruntime's CPU provider has no float64 Conv, so a float64
model runs in float32 here: its outputs differ from the NumPy engine's by float32 rounding (relative ~1e-6,
more where a model amplifies it), and a prediction can flip where two class scores are that close. Model.evaluate
itself runs the evaluation with the session's forward: the loss is the spec's (Model.loss, cnnspec.losses) of
the runtime's outputs converted to the model's dtype, the accuracy and confusion matrix are its own.
"""
from __future__ import annotations

from math import prod

import numpy as np

from . import limits
from .errors import DataError
from .model import Evaluation, Model

BACKENDS = ("numpy", "onnxruntime")
RUN_DTYPE = np.dtype(np.float32)


def memory_estimate(model: Model, batch: int, *, given_input: int = 0, extra=()) -> limits.Estimate:
    """An upper bound of the memory an onnxruntime evaluation of `batch` samples needs: the engine's own
    evaluation-mode forward in float32 (onnxruntime keeps fewer activations than the engine), plus the copies
    of the weights an export makes (the float32 model, the serialised file, the session's initializers), plus
    the batch converted to float32 and the outputs converted back to the model's dtype."""
    values = sum(a.size for a in (*model.params.values(), *model.buffers.values()))
    weights = values * RUN_DTYPE.itemsize
    out = batch * prod(model.graph.nodes[model.graph.output].shape) * model.dtype.itemsize
    copies = [("the weights' float32 copies for onnxruntime (model, export, session)", 3 * weights),
              ("the batch in float32 for onnxruntime and its outputs", batch * prod(model.spec.input.shape) * 4 + out)]
    if model.dtype.itemsize > RUN_DTYPE.itemsize:  # the model's own float64 weights stay (counted above in float32)
        copies.append(("the rest of the model's float64 weights", values * (model.dtype.itemsize - RUN_DTYPE.itemsize)))
    return limits.estimate(model.graph, batch, RUN_DTYPE, train=False, given_input=given_input,
                           extra=(*extra, *copies))


def check_memory(model: Model, batch: int, advice: str = "use a smaller --batch-size", **kwargs) -> limits.Estimate:
    return limits.require(memory_estimate(model, batch, **kwargs), model.max_memory, advice)


class OrtModel:
    """A session running `model`'s current weights in onnxruntime (float32). Weights changed later (training)
    need a new OrtModel."""

    def __init__(self, model: Model, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # a dependency; only a broken installation lacks it
            raise DataError(f"--backend onnxruntime: onnxruntime cannot be imported ({exc}); use --backend numpy") \
                from None
        from .onnx_export import to_onnx
        self.model = model
        check_memory(model, 1, advice="use --backend numpy")  # the export's copies of the weights, before making them
        small = model if model.dtype == RUN_DTYPE else model.astype(RUN_DTYPE)
        proto = to_onnx(small).SerializeToString()  # ExportError / SpecError (exit 2) if the opset cannot say it
        del small
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or limits.threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # no warnings on the user's terminal
        try:
            self.session = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types are not importable portably
            raise DataError(f"--backend onnxruntime: onnxruntime could not load the exported model: "
                            f"{_first_line(exc)}; use --backend numpy") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def forward(self, x) -> np.ndarray:
        """The output for a batch x (N, *input.shape) in the declared layout, as float32."""
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise DataError(f"input must be numbers, got dtype {x.dtype}")
        want = tuple(self.model.spec.input.shape)
        if x.shape[1:] != want or x.ndim != len(want) + 1 or x.shape[0] == 0:
            raise DataError(f"input has shape {x.shape}; the spec expects (N, {', '.join(map(str, want))}) with N >= 1")
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, RUN_DTYPE)})
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"--backend onnxruntime: onnxruntime could not run the model: {_first_line(exc)}; "
                            "use --backend numpy") from None
        return out

    def evaluate(self, x, target, batch_size: int = 256) -> Evaluation:
        """Model.evaluate's result (loss over all samples, accuracy, confusion), from onnxruntime's outputs
        (converted to the model's dtype; the loss is the spec's, by Model.loss)."""
        return self.model.evaluate(x, target, batch_size,
                                   forward=lambda xb: self.forward(xb).astype(self.model.dtype, copy=False))


def evaluate(model: Model, x, target, batch_size: int = 256, threads: int | None = None) -> Evaluation:
    """Model.evaluate(x, target, batch_size) with the forward passes in onnxruntime (float32)."""
    return OrtModel(model, threads).evaluate(x, target, batch_size)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:400]
