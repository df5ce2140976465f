"""The optimizers exactly as torch.optim defines them (SGD, Adam, AdamW, RMSprop), with per-parameter
multipliers (Caffe's lr_mult, decay_mult) and learning-rate schedules, on dicts of named arrays.

`sgd_step` updates a dict of parameters at once (the grader and older callers use it); `update` takes one
parameter through any optimizer, with its state in a dict keyed by name, so Model.step can update one tensor
at a time (only one tensor's old and new values coexist).
"""
from __future__ import annotations

import fnmatch
import math

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


# ---------------------------------------------------------------- every optimizer, per parameter


def multipliers(opt, name: str) -> tuple[float, float]:
    """(lr_mult, decay_mult) of parameter `name`: the first key of the spec's mapping that equals the name or
    matches it as a pattern (fnmatch: '*' any text, '?' one character), else 1 (Caffe's lr_mult, decay_mult)."""
    def pick(table) -> float:
        for key, value in (table or {}).items():
            if key == name or fnmatch.fnmatchcase(name, key):
                return float(value)
        return 1.0
    return pick(opt.lr_mult), pick(opt.decay_mult)


def scheduled_lr(opt, epoch: int = 0, steps: int = 0, base: float | None = None) -> float:
    """The learning rate for the next step: `base` (default opt.lr) under the spec's schedule, where t is
    `epoch` (epochs completed) or `steps` (optimizer steps taken) as the schedule's `per` says.

    step:   base * gamma ** (t // step_size)                                (torch.optim.lr_scheduler.StepLR)
    cosine: eta_min + (base - eta_min) * (1 + cos(pi * t / t_max)) / 2      (CosineAnnealingLR, closed form)"""
    base = opt.lr if base is None else base
    s = opt.schedule
    if s is None:
        return base
    t = epoch if s.per == "epoch" else steps
    if s.type == "step":
        return base * s.gamma ** (t // s.step_size)
    return s.eta_min + (base - s.eta_min) * (1 + math.cos(math.pi * t / s.t_max)) / 2


def update(opt, name: str, theta: np.ndarray, grad: np.ndarray, state: dict, lr: float,
           weight_decay: float) -> tuple[np.ndarray, dict]:
    """One step of the spec's optimizer for one parameter, as torch.optim defines it (single-tensor form).

    lr, weight_decay: already multiplied by the parameter's multipliers (and the schedule). state: the
    optimizer's state dict (read only); returns (new theta, the state entries to set). State keys: SGD's
    momentum buffer is `name` (as sgd_step); the others are `name.exp_avg`, `name.exp_avg_sq`,
    `name.max_exp_avg_sq`, `name.square_avg`, `name.grad_avg`, `name.momentum_buffer` and the step count
    `name.step`, PyTorch's names."""
    if grad.shape != theta.shape:
        raise ValueError(f"{opt.type}: gradient of '{name}' has shape {grad.shape}, parameter has {theta.shape}")
    if opt.type == "sgd":
        return _one(sgd_step({name: theta}, {name: grad}, {name: state[name]} if name in state else {}, lr=lr,
                             momentum=opt.momentum, dampening=opt.dampening, nesterov=opt.nesterov,
                             weight_decay=weight_decay), name)
    zeros = np.zeros_like(theta)
    step = int(state.get(f"{name}.step", 0)) + 1
    new = {f"{name}.step": np.asarray(step, dtype=np.int64)}
    if opt.type in ("adam", "adamw"):
        if opt.type == "adamw":
            theta = theta * (1 - lr * weight_decay)  # decoupled: the decay never enters the moments
        elif weight_decay != 0:
            grad = grad + weight_decay * theta
        beta1, beta2 = opt.betas
        m = _lerp(state.get(f"{name}.exp_avg", zeros), grad, 1 - beta1)
        v = state.get(f"{name}.exp_avg_sq", zeros) * beta2 + (1 - beta2) * grad * grad
        new[f"{name}.exp_avg"], new[f"{name}.exp_avg_sq"] = m, v
        if opt.amsgrad:
            v = np.maximum(state.get(f"{name}.max_exp_avg_sq", zeros), v)
            new[f"{name}.max_exp_avg_sq"] = v
        step_size = lr / (1 - beta1 ** step)
        denom = np.sqrt(v) / math.sqrt(1 - beta2 ** step) + opt.eps
        return (theta - step_size * (m / denom)).astype(theta.dtype, copy=False), new
    assert opt.type == "rmsprop", f"unknown optimizer {opt.type!r}"
    if weight_decay != 0:
        grad = grad + weight_decay * theta
    alpha = opt.alpha
    sq = state.get(f"{name}.square_avg", zeros) * alpha + (1 - alpha) * grad * grad
    new[f"{name}.square_avg"] = sq
    if opt.centered:
        g_avg = _lerp(state.get(f"{name}.grad_avg", zeros), grad, 1 - alpha)
        new[f"{name}.grad_avg"] = g_avg
        avg = np.sqrt(sq - g_avg * g_avg)
    else:
        avg = np.sqrt(sq)
    avg = avg + opt.eps
    if opt.momentum > 0:
        buf = state.get(f"{name}.momentum_buffer", zeros) * opt.momentum + grad / avg
        new[f"{name}.momentum_buffer"] = buf
        return (theta - lr * buf).astype(theta.dtype, copy=False), new
    return (theta - lr * (grad / avg)).astype(theta.dtype, copy=False), new


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch.lerp's formula (the two branches keep it exact at weight 0 and 1)."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def _one(result, name):
    params, velocity = result
    return params[name], ({name: velocity[name]} if name in velocity else {})
