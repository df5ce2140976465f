"""onnx.reference ops that compute what the ONNX spec says where onnx 1.23's evaluator does not (see
onnx_verify._reference_fixes). Imported only when a reference run is made: it imports onnx."""
from __future__ import annotations

import math

import numpy as np
from onnx.reference.op_run import OpRun


class LRN(OpRun):
    """square_sum[c] = sum of x[i]^2 for i in [c - floor((size-1)/2), c + ceil((size-1)/2)] (the spec's window),
    y = x / (bias + alpha/size * square_sum)^beta."""

    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        C = x.shape[1]
        alpha, beta, bias = float(alpha), float(beta), float(bias)  # attributes arrive as float32 scalars
        lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
        sq = x * x
        square_sum = np.zeros_like(x)
        for c in range(C):
            square_sum[:, c] = sq[:, max(0, c - lo):min(C, c + hi + 1)].sum(axis=1)
        return ((x / (bias + (alpha / size) * square_sum) ** beta).astype(x.dtype),)


class Gelu(OpRun):
    """0.5 x (1 + erf(x / sqrt(2))), or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with approximate='tanh'."""

    op_domain = ""

    def _run(self, x, approximate=None):
        if (approximate or "none") == "tanh":
            y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        else:
            erf = np.fromiter(map(math.erf, (x / math.sqrt(2)).ravel().tolist()), dtype=np.float64, count=x.size)
            y = 0.5 * x * (1 + erf.reshape(x.shape))
        return (y.astype(x.dtype),)


class HardSwish(OpRun):
    """x * max(0, min(1, x/6 + 1/2))."""

    op_domain = ""

    def _run(self, x):
        return ((x * np.clip(x / 6 + 0.5, 0, 1)).astype(x.dtype),)


def _batchnorm_inference():
    from onnx.reference.ops.op_batch_normalization import _batchnorm_test_mode

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None):
            return (_batchnorm_test_mode(x, scale, bias, mean, var, epsilon=epsilon).astype(x.dtype),)

    return BatchNormalization


def reference_ops(opset: int) -> list:
    """The replacements for a model of this opset (BatchNormalization only where the evaluator errs: 9-13)."""
    ops = [LRN, Gelu, HardSwish]
    if opset < 14:
        ops.append(_batchnorm_inference())
    return ops
