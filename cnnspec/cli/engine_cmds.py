"""run, train, gradcheck: commands that execute the NumPy engine."""
from __future__ import annotations

import argparse
import json
import sys
from math import prod

from ..errors import DataError
from .. import limits
from .models import WEIGHTS_HELP, add_max_memory, build_model, print_notes, sample_bytes, weight_bytes


def register(sub) -> None:
    p = sub.add_parser("run", help="forward (and backward/SGD) on given arrays; dump every array",
                       description="Run the model on X.npy and write the output, loss, every layer's activation, "
                       "every gradient and the parameters after K SGD steps to OUT.npz, so hand or code results "
                       "can be compared array by array. Arrays use the spec's layout, batch first.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--input", "-x", required=True, metavar="X.npy", help="input batch (N, *input.shape)")
    p.add_argument("--target", "-y", metavar="Y.npy", help="targets: enables loss and gradients")
    p.add_argument("--weights", metavar="W.npz", help=WEIGHTS_HELP)
    p.add_argument("--train", action="store_true", help="train mode: batch-norm batch statistics, dropout on")
    p.add_argument("--steps", type=int, default=0, metavar="K",
                   help="take K SGD steps (needs --target; implies --train semantics for the steps)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="override the spec's dtype")
    p.add_argument("--dump", metavar="OUT.npz", help="write all arrays here (keys: output, loss, act/<layer>, "
                   "grad/<param>, grad/input, param/<name>, buffer/<name>, loss_history)")
    add_max_memory(p)
    p.set_defaults(func=run_run)

    p = sub.add_parser("train", help="train on arrays x, y from an .npz; checkpoint every epoch",
                       description="Train with the spec's loss and optimizer on D.npz (arrays 'x' and 'y'). Prints "
                       "loss and accuracy per epoch; writes a checkpoint (.npz, state_dict names) after every "
                       "epoch, atomically, so an interrupt loses nothing already saved.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--data", required=True, metavar="D.npz", help="arrays x (M, *input.shape) and y (M, ...)")
    p.add_argument("--epochs", type=int, default=1, metavar="E")
    p.add_argument("--batch-size", type=int, default=32, metavar="B")
    p.add_argument("--weights", metavar="W.npz", help="start from these parameters: " + WEIGHTS_HELP)
    p.add_argument("--out", metavar="W.npz", help="checkpoint path (written after each epoch)")
    p.add_argument("--plot", metavar="LOSS.svg", help="save the loss curve as an SVG picture")
    p.add_argument("--dtype", choices=("float32", "float64"), help="override the spec's dtype")
    p.add_argument("--json", action="store_true", help="print per-epoch metrics as JSON lines")
    add_max_memory(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("gradcheck", help="check the engine's gradients against central differences",
                       description="Compare analytic gradients of every parameter (and the input) with float64 "
                       "central differences on seeded data. Exit 0 when all relative errors are below --tol, 1 if not.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--weights", metavar="W.npz", help=WEIGHTS_HELP)
    p.add_argument("--batch", type=int, default=2, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-7)
    p.add_argument("--json", action="store_true")
    add_max_memory(p)
    p.set_defaults(func=run_gradcheck)


def _positive(value: int, flag: str, allow_zero: bool = False) -> int:
    if value < (0 if allow_zero else 1):
        raise DataError(f"{flag} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")
    return value


def _model(args):
    model, notes = build_model(args.spec, getattr(args, "dtype", None), args.weights, args.max_memory)
    print_notes(notes)
    return model


def run_run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..arrays import load_npy, save_npz
    _positive(args.steps, "--steps", allow_zero=True)
    model = _model(args)
    x = load_npy(args.input, "input")
    y = load_npy(args.target, "target") if args.target else None
    if args.steps and y is None:
        raise DataError("--steps needs --target (a loss to take steps on)")
    train = args.train or args.steps > 0
    # Refuse before the first forward when what follows would not fit (Model checks each pass too).
    extra = [("target", y.nbytes)] if y is not None else []
    if args.dump and args.steps > 1 and y is not None:  # the dump keeps the first pass's arrays meanwhile
        kept = model.memory_estimate(len(x)).activations + model.graph.param_count * model.dtype.itemsize
        extra.append(("the first pass's activations and gradients, kept for --dump", kept))
    model.check_memory(len(x), advice=f"use fewer samples than {len(x):,} in {args.input}", train=train,
                       backward=y is not None, step=args.steps > 0, given_input=model.input_copy_bytes(x),
                       extra=extra)
    out = model.forward(x, train=train)
    dump = {"output": out, **{f"act/{k}": v for k, v in model.activations.items()}} if args.dump else {}
    lines = [f"output {model.output_name}: shape {out.shape}"]
    if y is not None:
        loss = model.loss(out, y)
        model.backward()
        if args.dump:
            dump["loss"] = np.array(loss)
            dump.update({f"grad/{k}": v for k, v in model.grads.items()})
            if model.input_grad is not None:
                dump["grad/input"] = model.input_grad
        lines.append(f"loss ({model.spec.loss.type}, {model.spec.loss.reduction}): {loss:.10g}")
        del out  # not needed during the steps
        history = []
        for k in range(args.steps):
            if k:  # step 0 reuses the forward/backward above
                history.append(model.loss(model.forward(x, train=True), y))
                model.backward()
            else:
                history.append(loss)
            model.step()
        if args.steps:
            dump["loss_history"] = np.array(history)
            lines.append(f"after {args.steps} SGD step(s): loss history {', '.join(f'{v:.6g}' for v in history)}")
    if args.dump:
        dump.update({f"param/{k}": v for k, v in model.params.items()})
        dump.update({f"buffer/{k}": v for k, v in model.buffers.items()})
        save_npz(args.dump, dump)
        lines.append(f"wrote {len(dump)} arrays to {args.dump}")
    print("\n".join(lines))
    return 0


def _accuracy(model, out, y):
    """Fraction correct for classification losses; None for regression (mse)."""
    kind = model.spec.loss.type
    if kind == "cross_entropy" and out.ndim == 2:
        labels = y if y.ndim == 1 else y.argmax(axis=1)
        return float((out.argmax(axis=1) == labels).sum())
    if kind == "bce_with_logits":
        return float(((out > 0) == (y > 0.5)).sum() / max(out[0].size, 1))
    return None


def run_train(args: argparse.Namespace) -> int:
    import numpy as np

    from ..arrays import load_npz
    from ..progress import progress
    _positive(args.epochs, "--epochs")
    _positive(args.batch_size, "--batch-size")
    model = _model(args)
    if model.spec.loss is None:
        raise DataError(f"{args.spec}: the spec has no `loss:`; training needs one (e.g. loss: {{type: cross_entropy}})")
    data = load_npz(args.data, "training data")
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise DataError(f"{args.data}: missing array(s) {', '.join(repr(k) for k in missing)} "
                        f"(found: {', '.join(data) or 'none'}); save with np.savez(path, x=..., y=...)")
    x, y = data["x"], data["y"]
    if len(x) != len(y):
        raise DataError(f"{args.data}: x has {len(x)} samples but y has {len(y)}")
    want = tuple(model.spec.input.shape)
    if x.shape[1:] != want:
        raise DataError(f"{args.data}: x has shape {x.shape}; the spec expects (M, {', '.join(map(str, want))})")
    n = len(x)
    batch = min(args.batch_size, n)
    # Refuse before the first step: the data set, a batch copied out of it, and a training step.
    model.check_memory(batch, advice="use a smaller --batch-size", train=True, backward=True, step=True,
                       given_input=batch * prod(x.shape[1:]) * x.itemsize,
                       extra=(("training data (x and y)", x.nbytes + y.nbytes),))
    rng = np.random.default_rng(model.spec.init.seed)
    history: list[dict] = []
    batches = -(-n // args.batch_size)
    try:
        for epoch in range(1, args.epochs + 1):
            order = rng.permutation(n)
            total, correct, seen = 0.0, 0.0, 0
            for b in progress(range(batches), total=batches, desc=f"epoch {epoch}/{args.epochs}"):
                idx = order[b * args.batch_size:(b + 1) * args.batch_size]
                xb, yb = x[idx], y[idx]
                with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported just below
                    out = model.forward(xb, train=True)
                    loss = model.loss(out, yb)
                if not np.isfinite(loss):
                    print(f"loss became {loss} at epoch {epoch}, batch {b + 1}: training diverged; "
                          "try a smaller optimizer.lr", file=sys.stderr)
                    return 1
                model.backward(input_grad=False)
                model.step()
                total += loss * len(idx)
                acc = _accuracy(model, out, yb)
                correct = None if acc is None else correct + acc
                seen += len(idx)
            row = {"epoch": epoch, "loss": total / seen}
            if correct is not None:
                row["accuracy"] = correct / seen
            history.append(row)
            if args.out:
                model.save(args.out)
            if args.plot:
                _save_plot(args.plot, [r["loss"] for r in history], model.spec.name)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                acc = f", accuracy {row['accuracy']:.4f}" if "accuracy" in row else ""
                saved = f" (saved {args.out})" if args.out else ""
                print(f"epoch {epoch}/{args.epochs}: loss {row['loss']:.6f}{acc}{saved}", flush=True)
    except KeyboardInterrupt:
        where = f"; the checkpoint of epoch {len(history)} is in {args.out}" if args.out and history else ""
        print(f"interrupted during epoch {len(history) + 1}{where}", file=sys.stderr)
        return 130
    return 0


def _save_plot(path: str, losses: list[float], title: str) -> None:
    """A loss curve as a small standalone SVG (no plotting library needed)."""
    from html import escape

    from ..files import write_files
    w, h, m = 480, 300, 48
    lo, hi = min(losses), max(losses)
    span = (hi - lo) or 1.0
    n = max(len(losses) - 1, 1)
    pts = " ".join(f"{m + (w - 2 * m) * i / n:.1f},{h - m - (h - 2 * m) * (v - lo) / span:.1f}"
                   for i, v in enumerate(losses))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">'
           f'<rect width="100%" height="100%" fill="white"/>'
           f'<text x="{w / 2}" y="20" text-anchor="middle">{escape(title)}: training loss per epoch</text>'
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>'
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>'
           f'<text x="{m - 4}" y="{m + 4}" text-anchor="end">{hi:.4g}</text>'
           f'<text x="{m - 4}" y="{h - m}" text-anchor="end">{lo:.4g}</text>'
           f'<text x="{w - m}" y="{h - m + 16}" text-anchor="end">epoch {len(losses)}</text>'
           f'<text x="{m}" y="{h - m + 16}">1</text>'
           f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/></svg>\n')
    write_files({path: svg})


def run_gradcheck(args: argparse.Namespace) -> int:
    from ..gradient_check import gradcheck
    _positive(args.batch, "--batch")
    model = _model(args)
    # gradcheck runs a float64 copy of the model, forward and backward, on seeded float64 data
    est = limits.estimate(model.graph, args.batch, "float64", train=True, backward=True,
                          given_input=args.batch * sample_bytes(model, 8),
                          extra=(("the model being checked, before its float64 copy", weight_bytes(model)),))
    limits.require(est, model.max_memory, "use a smaller --batch")
    result = gradcheck(model, batch=args.batch, seed=args.seed, tol=args.tol)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        width = max(len(r.name) for r in result.rows)
        for r in result.rows:
            kinks = f"  ({r.kinks} at kinks skipped)" if r.kinks else ""
            print(f"{r.name.ljust(width)}  {r.checked:3d} elements  max rel error {r.max_rel_error:.2e}  "
                  f"max abs error {r.max_abs_error:.2e}  {'ok' if r.ok else 'FAIL'}{kinks}")
        print(f"gradcheck {'passed' if result.ok else 'FAILED'} (relative tolerance {result.tol:g}, or absolute {result.atol:g})")
    return 0 if result.ok else 1
