"""Deterministic parameter initialisation from the spec's `init: {seed, scheme}`.

Values come from NumPy's PCG64 seeded with `seed`, drawn layer by layer in declaration order, weight then
bias, so a spec always produces the same model. The distributions are PyTorch's (torch_default is
nn.Conv2d/nn.Linear's reset_parameters); the random streams are not PyTorch's - to reproduce a PyTorch
model, load its state_dict. Biases are zero for the he_* and xavier_* schemes; batch, layer and group
norm start with weight (gamma) 1, bias (beta) 0; batch norm's running mean 0, running var 1.
"""
from __future__ import annotations

from math import prod, sqrt

import numpy as np

from .graph import Graph

NORMS = ("batchnorm", "layernorm", "groupnorm")  # their weight is a scale (1) and their bias a shift (0)


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """PyTorch's fan_in/fan_out: conv (F, C/g, kh, kw) -> (C/g*kh*kw, F*kh*kw); dense (out, in) -> (in, out)."""
    receptive = prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def init_state(graph: Graph, dtype, seed: int, scheme: str) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    buffers: dict[str, np.ndarray] = {}
    for node in graph.nodes.values():
        if node.type in NORMS:  # gamma 1, beta 0 (PyTorch's reset_parameters), whatever the scheme
            if "weight" in node.params:
                params[f"{node.name}.weight"] = np.ones(node.params["weight"], dtype)
                params[f"{node.name}.bias"] = np.zeros(node.params["bias"], dtype)
            if node.type == "batchnorm":
                c = node.buffers["running_mean"][0]
                buffers[f"{node.name}.running_mean"] = np.zeros(c, dtype)
                buffers[f"{node.name}.running_var"] = np.ones(c, dtype)
                buffers[f"{node.name}.num_batches_tracked"] = np.zeros((), np.int64)
            continue
        if "weight" not in node.params:
            continue
        wshape = node.params["weight"]
        fan_in, fan_out = _fans(wshape)
        if scheme == "torch_default":   # kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in))
            w = rng.uniform(-1 / sqrt(fan_in), 1 / sqrt(fan_in), wshape)
        elif scheme == "he_normal":
            w = rng.normal(0.0, sqrt(2.0 / fan_in), wshape)
        elif scheme == "he_uniform":
            w = rng.uniform(-sqrt(6.0 / fan_in), sqrt(6.0 / fan_in), wshape)
        elif scheme == "xavier_normal":
            w = rng.normal(0.0, sqrt(2.0 / (fan_in + fan_out)), wshape)
        elif scheme == "xavier_uniform":
            bound = sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-bound, bound, wshape)
        else:
            assert scheme == "zeros", f"unknown init scheme {scheme!r}"
            w = np.zeros(wshape)
        params[f"{node.name}.weight"] = w.astype(dtype)
        if "bias" in node.params:
            bshape = node.params["bias"]
            b = rng.uniform(-1 / sqrt(fan_in), 1 / sqrt(fan_in), bshape) if scheme == "torch_default" \
                else np.zeros(bshape)
            params[f"{node.name}.bias"] = b.astype(dtype)
    return params, buffers
