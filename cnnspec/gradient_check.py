"""`cnnspec.gradcheck`: compare the engine's gradients with central differences, on any spec.

Runs in float64 on a copy of the model. The checked function is the spec's loss on seeded data (or,
without a loss, sum(output * g) for a random upstream g). Batch norm runs in train mode and dropout
reuses one mask for every evaluation, so the function is smooth and deterministic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .model import Model, compile as compile_model
from .ops.gradcheck_util import evaluate_around, rel_error


@dataclass
class GradcheckRow:
    name: str             # parameter name, or "input"
    checked: int          # elements compared
    max_rel_error: float  # max |analytic - numeric| / largest magnitude (ops.gradcheck_util.rel_error)
    max_abs_error: float  # max |analytic - numeric|
    kinks: int            # elements skipped because the perturbation crossed a kink (ReLU at 0, max-pool tie)
    ok: bool              # rel error < tol, or abs error < atol (a gradient that is truly ~0, e.g. a conv
                          # bias before batch norm, has only rounding noise to be relative to)
    max_magnitude: float = 0.0  # the largest |analytic| or |numeric| value compared: the scale of max_rel_error

    def near_zero(self, atol: float) -> bool:
        """Both gradients are ~0 (below atol): the relative error compares rounding noise with rounding
        noise (often exactly 1.0) and means nothing; the row passes or fails on the absolute error."""
        return self.checked > 0 and self.max_magnitude < atol


@dataclass
class GradcheckResult:
    rows: list[GradcheckRow] = field(default_factory=list)
    tol: float = 1e-7
    atol: float = 1e-8

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "tol": self.tol, "atol": self.atol,
                "rows": [{**asdict(r), "near_zero": r.near_zero(self.atol)} for r in self.rows]}


def _seeded_data(model: Model, batch: int, rng: np.random.Generator):
    spec = model.spec
    x = rng.standard_normal((batch, *spec.input.shape))
    out_shape = (batch, *model.shapes[model.output_name])
    if spec.loss is None:
        return x, None, rng.standard_normal(out_shape)
    if spec.loss.type == "cross_entropy" and len(out_shape) == 2:
        return x, rng.integers(0, out_shape[1], batch), None
    if spec.loss.type == "bce_with_logits":
        return x, rng.integers(0, 2, out_shape).astype(np.float64), None
    return x, rng.standard_normal(out_shape), None


def gradcheck(spec_or_model, x=None, target=None, *, batch: int = 2, seed: int = 0, eps: float = 1e-6,
              tol: float = 1e-7, atol: float = 1e-8, max_elements: int = 24, check_input: bool = True) -> GradcheckResult:
    """Check d(loss)/d(param) for every parameter (and the input) on up to `max_elements` entries each."""
    base = spec_or_model if isinstance(spec_or_model, Model) else compile_model(spec_or_model)
    model = base.astype(np.float64)
    rng = np.random.default_rng(seed)
    gx, gt, g = _seeded_data(model, batch, rng)
    x = np.array(gx if x is None else x, dtype=np.float64)
    target = gt if target is None else target
    buffers = {k: v.copy() for k, v in model.buffers.items()}
    dropout_seed = int(rng.integers(2**32))

    def run() -> float:
        model.buffers = {k: v.copy() for k, v in buffers.items()}
        model._rng = np.random.default_rng(dropout_seed)  # the same dropout mask every time
        out = model.forward(x, train=True)
        return model.loss(out, target) if g is None else float(np.sum(out * g))

    run()
    analytic = model.backward(None if g is None else g)
    analytic_x = model.input_grad
    result = GradcheckResult(tol=tol, atol=atol)
    targets = [(name, model.params[name], analytic[name]) for name in model.params]
    if check_input and analytic_x is not None:
        targets.append(("input", x, analytic_x))
    for name, array, grad in targets:
        flat = array.reshape(-1)
        assert np.shares_memory(flat, array), f"{name} must be contiguous to perturb"
        picked, numeric, kinks = [], [], 0
        f0 = run()
        for i in rng.permutation(flat.size):
            if len(picked) == max_elements or kinks > 4 * max_elements:
                break
            plus, minus = evaluate_around(run, flat, i, eps)
            # One-sided slopes that disagree mean f is not smooth within +-eps of this point (a ReLU input
            # at 0 or a max-pool tie): central differences are meaningless there, so check another element.
            right, left = (plus - f0) / eps, (f0 - minus) / eps
            if abs(right - left) > 1e-3 * max(abs(right), abs(left)) + 1e-6:
                kinks += 1
                continue
            picked.append(i)
            numeric.append((plus - minus) / (2 * eps))
        analytic_values = grad.reshape(-1)[np.array(picked, dtype=int)]
        numeric = np.array(numeric)
        err = rel_error(analytic_values, numeric) if picked else float("nan")
        abs_err = float(np.abs(analytic_values - numeric).max(initial=0.0))
        ok = bool(picked) and (err < tol or abs_err < atol)
        magnitude = float(max(np.abs(analytic_values).max(initial=0.0), np.abs(numeric).max(initial=0.0)))
        result.rows.append(GradcheckRow(name, len(picked), err, abs_err, kinks, ok, magnitude))
    return result
