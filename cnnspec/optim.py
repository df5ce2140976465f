"""Stochastic gradient descent exactly as torch.optim.SGD updates, on dicts of named arrays."""
from __future__ import annotations

import numpy as np


def sgd_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], velocity: dict[str, np.ndarray], *,
             lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
             weight_decay: float = 0.0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One step. Returns (new_params, new_velocity); the inputs are left untouched.

    Per parameter theta with gradient g (PyTorch's order of operations):
        g = g + weight_decay * theta
        b = g on the first step (no entry in `velocity`), else momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b            (only when momentum != 0)
        theta = theta - lr * g
    A parameter with no gradient is kept unchanged, as PyTorch skips parameters whose .grad is None.
    """
    if lr < 0 or momentum < 0 or weight_decay < 0:
        raise ValueError(f"sgd: lr, momentum and weight_decay must be >= 0, got lr={lr}, momentum={momentum}, "
                         f"weight_decay={weight_decay}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"sgd: nesterov needs momentum > 0 and dampening 0, got momentum={momentum}, "
                         f"dampening={dampening}")
    new_params = dict(params)
    new_velocity = dict(velocity)
    for name, theta in params.items():
        g = grads.get(name)
        if g is None:
            continue
        if g.shape != theta.shape:
            raise ValueError(f"sgd: gradient of '{name}' has shape {g.shape}, parameter has {theta.shape}")
        if weight_decay != 0:
            g = g + weight_decay * theta
        if momentum != 0:
            if name in velocity:
                b = momentum * velocity[name]
                b += (1 - dampening) * g
            else:
                b = np.array(g, dtype=theta.dtype, copy=True)
            new_velocity[name] = b
            g = g + momentum * b if nesterov else b
        new_params[name] = theta - lr * g
    return new_params, new_velocity
