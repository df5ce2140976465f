"""cnnspec: write a CNN as YAML; see every shape explained; run it in NumPy; export it to ONNX; grade answers.

Public API (see docs/python-api.md): load_spec, loads_spec, SpecError, compile, gradcheck, export_onnx,
verify_onnx. Heavy parts (the NumPy engine, onnx, onnxruntime) are imported on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# OpenBLAS's idle worker threads busy-wait ~2**28 cycles after every matmul, taking the core that
# cnnspec's own threads (cnnspec/ops/parallel.py) need for the passes between matmuls. 2**4 cycles
# lets them sleep at once. Takes effect if NumPy is not imported yet; a value the user set wins.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .errors import CnnspecError, DataError, ShapeError, SpecError
from .graph import load_spec, loads_spec

_LAZY = {
    "compile": ("cnnspec.model", "compile"),
    "Model": ("cnnspec.model", "Model"),
    "gradcheck": ("cnnspec.gradient_check", "gradcheck"),
    "export_onnx": ("cnnspec.onnx_export", "export_onnx"),
    "verify_onnx": ("cnnspec.onnx_verify", "verify_onnx"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnspec' has no attribute {name!r}")


__all__ = ["__version__", "load_spec", "loads_spec", "SpecError", "ShapeError", "DataError", "CnnspecError",
           *_LAZY]
