"""The contract every layer implementation follows, in one small class.

forward(attrs, xs, params, buffers, train, rng) -> (out, cache, buffer_updates)
backward(attrs, dout, cache) -> (dxs, dparams)
backward(attrs, dout, cache, need_dx=False) -> ([None], dparams)    only ops with skips_dx=True

`attrs` are the schema's resolved attributes; `params` and `buffers` use local names ("weight", "bias",
"running_mean", ...) and are never mutated: an op that changes state (batchnorm) returns the new arrays in
`buffer_updates`. Outputs keep the input's dtype (float32 or float64). Arrays are indexed (N, C, H, W)
or (N, F) whatever their strides; 4-D outputs and gradients are stored batch-last (see parallel.py).
Gradients returned by backward may share memory with `dout` or with each other (add hands every input
the same `dout`), so callers must treat them as read-only and accumulate out of place (`g = g + dx`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Forward = Callable[[dict, list, dict, dict, bool, np.random.Generator], tuple[np.ndarray, Any, dict]]
Backward = Callable[[dict, np.ndarray, Any], tuple[list, dict]]


@dataclass(frozen=True)
class Op:
    """One layer type: its name in the spec and its two pure functions."""

    name: str
    forward: Forward
    backward: Backward
    n_inputs: int | None = 1  # None: two or more (add, concat)
    skips_dx: bool = False    # backward accepts need_dx=False and then returns [None] for dx (saves work
                              # for a first layer when no input gradient is wanted, as in training)

    def __repr__(self) -> str:
        return f"Op({self.name!r})"
