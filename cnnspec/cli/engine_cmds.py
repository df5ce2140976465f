"""run, train, gradcheck: commands that execute the NumPy engine."""
from __future__ import annotations

import argparse
import json
import sys
from math import prod
from pathlib import Path

from ..errors import DataError
from ..text import printable
from .. import limits
from .models import (WEIGHTS_HELP, WrappingHelpFormatter, add_max_memory, add_no_rewrite, build_model, print_notes,
                     sample_bytes, spec_warnings, weight_bytes)


BACKEND_HELP = ("numpy, the NumPy engine (default; the reference); or onnxruntime, the exported model in float32 "
                "in onnxruntime, faster on large data sets (a float64 model runs in float32 there: the loss differs "
                "by float32 rounding). See docs/cli.md, 'Backends for large evaluations'")


def add_backend(p, what: str) -> None:
    p.add_argument("--backend", choices=("numpy", "onnxruntime"), default="numpy", help=f"{what}: {BACKEND_HELP}")


def register(sub) -> None:
    p = sub.add_parser("run", help="forward (and backward/SGD) on given arrays; dump every array",
                       formatter_class=WrappingHelpFormatter,
                       description="Run the model on X.npy and print the output (every value when there are "
                       "few, NumPy-style and shortened when there are many), the loss with --target, and write "
                       "the output, loss, every layer's activation, every gradient and the parameters after K SGD "
                       "steps to OUT.npz, so hand or code results can be compared array by array. Arrays use the "
                       "spec's layout, batch first.",
                       epilog="exit codes: 0 done, 2 invalid input (spec, arrays, weights, options), 3 internal error.\n"
                              "example: cnnspec run specs/lecture_linear.yaml -x x.npy -y y.npy --steps 1 --dump out.npz")
    p.add_argument("spec", metavar="SPEC", help="model spec (.yaml)")
    p.add_argument("--input", "-x", required=True, metavar="X.npy", help="input batch (N, *input.shape)")
    p.add_argument("--target", "-y", metavar="Y.npy", help="targets: enables loss and gradients")
    p.add_argument("--weights", metavar="W.npz", help=WEIGHTS_HELP)
    p.add_argument("--train", action="store_true", help="train mode: batch-norm batch statistics, dropout on")
    p.add_argument("--steps", type=int, default=0, metavar="K",
                   help="take K optimizer steps (needs --target; implies --train semantics for the steps)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="override the spec's dtype (default: the spec's)")
    p.add_argument("--dump", metavar="OUT.npz", help="write all arrays here (keys: output, loss, act/<layer>, "
                   "grad/<param>, grad/input, param/<name>, buffer/<name>, loss_history)")
    add_no_rewrite(p)
    add_max_memory(p)
    p.set_defaults(func=run_run)

    p = sub.add_parser("train", help="train on arrays x, y from an .npz; checkpoint every epoch",
                       formatter_class=WrappingHelpFormatter,
                       description="Train with the spec's loss and optimizer on D.npz (arrays 'x' and 'y'). Prints "
                       "loss and accuracy (classification losses) per epoch, for the training batches and for "
                       "the validation data (--val-split or --val-data); writes the checkpoint --out (.npz, "
                       "state_dict names) after every epoch, atomically, so an interrupt loses nothing already "
                       "saved, and with --plot the training curve (SVG: loss and accuracy per batch and per epoch).",
                       epilog="exit codes: 0 trained, 1 training diverged (the loss became NaN or infinite, or grew "
                              "a million-fold; the last good checkpoint is kept), 2 invalid input, 3 internal error, "
                              "130 interrupted (the last epoch's checkpoint is kept).\n"
                              "example: cnnspec train specs/lenet5.yaml --data d.npz --out lenet5.npz --epochs 5 "
                              "--val-split 0.1 --plot curve.svg")
    p.add_argument("spec", metavar="SPEC", help="model spec (.yaml) with a loss: and an optimizer:")
    p.add_argument("--data", required=True, metavar="D.npz", help="arrays x (M, *input.shape) and y (M, ...)")
    p.add_argument("--out", "-o", metavar="W.npz",
                   help="where to save the weights (state_dict names) after every epoch, replacing the file "
                   "(default: SPECNAME.weights.npz in the current folder, named after the spec file; when "
                   "that exists, SPECNAME.weights-2.npz, -3, ...: a default never replaces a file)")
    p.add_argument("--epochs", type=int, default=1, metavar="E", help="passes over the training data")
    p.add_argument("--batch-size", type=int, default=32, metavar="B",
                   help="samples per optimizer step (the last batch of an epoch may be smaller)")
    p.add_argument("--val-split", type=float, default=None, metavar="F",
                   help="hold out this fraction of D.npz (0 < F < 1; a seeded random choice, the same every run "
                   "with the spec's init.seed) and report val_loss and val_accuracy after every epoch "
                   "(default: no validation)")
    p.add_argument("--val-data", metavar="V.npz", help="validation arrays x, y, reported after every epoch "
                   "(instead of --val-split)")
    p.add_argument("--weights", metavar="W.npz", help="start from these parameters: " + WEIGHTS_HELP)
    p.add_argument("--plot", metavar="CURVE.svg", help="save the training curve as an SVG picture after every "
                   "epoch: loss (and accuracy) of every batch, per-epoch means and validation")
    p.add_argument("--dtype", choices=("float32", "float64"), help="override the spec's dtype (default: the spec's)")
    p.add_argument("--json", action="store_true", help='print one JSON object per epoch: {"epoch", "loss", '
                   '"accuracy", "val_loss", "val_accuracy"} (accuracy for classification losses, val_ with '
                   'validation data)')
    add_backend(p, "where the validation after every epoch runs (training always runs in the NumPy engine)")
    add_no_rewrite(p)
    add_max_memory(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("evaluate", help="loss, accuracy and confusion matrix of trained weights on a data set",
                       formatter_class=WrappingHelpFormatter,
                       description="Run the model in evaluation mode (batch norm's running statistics, no dropout) "
                       "on the arrays x, y of D.npz and print the loss (the spec's loss, over all samples), and for "
                       "classification losses the accuracy and the confusion matrix (rows: true class, columns: "
                       "predicted class). cross_entropy predicts the class with the largest score; "
                       "bce_with_logits predicts 1 where the logit is > 0, every output counting as one label.",
                       epilog="exit codes: 0 evaluated, 2 invalid input (spec, weights, data, options), 3 internal "
                              "error.\nexample: cnnspec evaluate specs/lenet5.yaml --weights lenet5.npz --data test.npz")
    p.add_argument("spec", metavar="SPEC", help="model spec (.yaml) with a loss:")
    p.add_argument("--weights", metavar="W.npz", help="the parameters to evaluate (from 'cnnspec train --out'); "
                   "without it, the spec's weights: or else its seeded initial values (a note says so)")
    p.add_argument("--data", required=True, metavar="D.npz", help="arrays x (M, *input.shape) and y (M, ...)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B",
                   help="samples per forward pass (changes the speed and memory, not the result)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="override the spec's dtype (default: the spec's)")
    p.add_argument("--json", action="store_true", help='print one JSON object: {"spec", "data", "weights", '
                   '"backend", "samples", "loss", "loss_type", "reduction", "accuracy", "correct", "labels", '
                   '"confusion"}')
    add_backend(p, "where the forward passes run")
    add_max_memory(p)
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("gradcheck", help="check the engine's gradients against central differences",
                       formatter_class=WrappingHelpFormatter,
                       description="Compare analytic gradients of every parameter (and the input) with float64 "
                       "central differences on seeded data. Exit 0 when all relative errors are below --tol, 1 if not. "
                       "A gradient that is ~0 both ways (e.g. a conv bias before batch norm) passes on the absolute "
                       "error and is shown as ~0.",
                       epilog="exit codes: 0 all gradients agree, 1 one does not, 2 invalid input, 3 internal error.")
    p.add_argument("spec", metavar="SPEC", help="model spec (.yaml)")
    p.add_argument("--weights", metavar="W.npz", help=WEIGHTS_HELP)
    p.add_argument("--batch", type=int, default=2, metavar="N", help="samples in the seeded input")
    p.add_argument("--seed", type=int, default=0, help="seed of the input, targets and the elements checked")
    p.add_argument("--tol", type=float, default=1e-7,
                   help="relative tolerance (a gradient also passes with an absolute error below 1e-08)")
    p.add_argument("--json", action="store_true", help='print the result as JSON: {"ok", "tol", "atol", "rows": '
                   '[{"name", "checked", "max_rel_error", "max_abs_error", "kinks", "ok", "max_magnitude", '
                   '"near_zero"}]}')
    add_max_memory(p)
    p.set_defaults(func=run_gradcheck)


def _positive(value: int, flag: str, allow_zero: bool = False) -> int:
    if value < (0 if allow_zero else 1):
        raise DataError(f"{flag} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")
    return value


def _model(args):
    model, notes = build_model(args.spec, getattr(args, "dtype", None), args.weights, args.max_memory,
                               rewrite=not getattr(args, "no_rewrite", False))
    print_notes(notes)
    return model


def fmt_loss(value: float) -> str:
    """A loss as people read it: 4 significant digits, exponent when small or large (2.3e-07, 1.808e+05)."""
    return f"{value:.4g}"


def show_values(a, max_lines: int = 12) -> str:
    """An array as NumPy prints it, shortened: every value of a small array; for a large one the corners
    (NumPy's summarisation) cut to `max_lines` lines, plus its range."""
    import numpy as np
    with np.printoptions(precision=4, threshold=100, edgeitems=3, linewidth=100):
        text = np.array2string(np.asarray(a))
    lines = text.splitlines()
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"  ... ({len(lines) - max_lines} more lines)"]
    if a.size > 100:
        with np.errstate(all="ignore"):
            lines.append(f"({a.size:,} values, min {a.min():.4g}, mean {a.mean():.4g}, max {a.max():.4g}; "
                         "--dump OUT.npz writes them all)")
    return "\n".join(lines)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def run_run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..arrays import load_npy, save_npz
    _positive(args.steps, "--steps", allow_zero=True)
    model = _model(args)
    x = load_npy(args.input, "input", max_bytes=model.max_memory)
    y = load_npy(args.target, "target", max_bytes=model.max_memory) if args.target else None
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
    lines = [f"output {model.output_name}: shape {out.shape}", show_values(out)]
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
            lines.append(f"after {_plural(args.steps, 'optimizer step')}: loss history "
                         f"{', '.join(f'{v:.6g}' for v in history)}")
    if args.dump:
        dump.update({f"param/{k}": v for k, v in model.params.items()})
        dump.update({f"buffer/{k}": v for k, v in model.buffers.items()})
        save_npz(args.dump, dump)
        lines.append(f"wrote {_plural(len(dump), 'array')} to {args.dump}")
    print("\n".join(lines))
    return 0


def _load_xy(path, model, what: str):
    """The arrays x, y of an .npz, checked against the spec's input shape."""
    from ..arrays import load_npz
    data = load_npz(path, what, max_bytes=model.max_memory)
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise DataError(f"{path}: missing {'arrays' if len(missing) > 1 else 'array'} "
                        f"{' and '.join(repr(k) for k in missing)} (found: {', '.join(data) or 'none'}); "
                        "save with np.savez(path, x=..., y=...)")
    x, y = data["x"], data["y"]
    if len(x) != len(y):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise DataError(f"{path}: x and y hold no samples")
    want = tuple(model.spec.input.shape)
    if x.shape[1:] != want:
        raise DataError(f"{path}: x has shape {x.shape}; the spec expects (M, {', '.join(map(str, want))})")
    return x, y


def _print_warnings(model) -> None:
    for w in spec_warnings(model.spec):
        print(w, file=sys.stderr)


def default_checkpoint(spec_path) -> str:
    """SPECNAME.weights.npz in the current folder, or the first of SPECNAME.weights-2.npz, -3, ... that does
    not exist: training without --out saves its work and never replaces a file nobody named."""
    stem = Path(spec_path).stem or "model"
    for k in range(1, 10_000):
        path = Path(f"{stem}.weights{'' if k == 1 else f'-{k}'}.npz")
        if not path.exists() and not path.is_symlink():
            return str(path)
    raise DataError(f"{stem}.weights.npz and 9,998 numbered variants exist; choose a name with --out")


DIVERGED_GROWTH = 1e6  # an epoch's mean loss this many times the first batch's: diverged, however finite


def run_train(args: argparse.Namespace) -> int:
    import numpy as np

    from ..files import check_outputs
    from ..model import predictions
    from ..plot import TrainingHistory
    from ..progress import progress
    _positive(args.epochs, "--epochs")
    _positive(args.batch_size, "--batch-size")
    if args.val_split is not None and args.val_data:
        raise DataError("give --val-split or --val-data, not both")
    if args.val_split is not None and not 0 < args.val_split < 1:
        raise DataError(f"--val-split must be a fraction between 0 and 1 (e.g. 0.1), got {args.val_split:g}")
    ort_validation = getattr(args, "backend", "numpy") == "onnxruntime"
    if ort_validation and args.val_split is None and not args.val_data:
        raise DataError("--backend onnxruntime runs the validation after every epoch; give --val-split or "
                        "--val-data (training itself always runs in the NumPy engine)")
    model = _model(args)
    _print_warnings(model)
    if model.spec.loss is None:
        raise DataError(f"{args.spec}: the spec has no `loss:`; training needs one (e.g. loss: {{type: cross_entropy}})")
    x, y = _load_xy(args.data, model, "training data")
    xv = yv = None
    if args.val_data:
        xv, yv = _load_xy(args.val_data, model, "validation data")
    elif args.val_split is not None:
        held = round(len(x) * args.val_split)
        if not 1 <= held < len(x):
            raise DataError(f"--val-split {args.val_split:g} of {_plural(len(x), 'sample')} in {args.data} holds out "
                            f"{held}; it must leave at least one sample for training and one for validation")
        pick = np.random.default_rng([model.spec.init.seed, 2]).permutation(len(x))  # its own seeded stream
        xv, yv, x, y = x[pick[:held]], y[pick[:held]], x[pick[held:]], y[pick[held:]]
    chosen = "" if args.out else " (named after the spec; --out chooses another)"
    if not args.out:
        args.out = default_checkpoint(args.spec)
    check_outputs({"--out": args.out, "--plot": args.plot})  # refuse a bad output now, not after an epoch
    n = len(x)
    batch = min(args.batch_size, n)
    # Refuse before the first step: the data sets, a batch copied out of them, and a training step.
    data = [("training data (x and y)", x.nbytes + y.nbytes)]
    if xv is not None:
        data.append(("validation data (x and y)", xv.nbytes + yv.nbytes))
    model.check_memory(batch, advice="use a smaller --batch-size", train=True, backward=True, step=True,
                       given_input=batch * prod(x.shape[1:]) * x.itemsize, extra=data)
    if ort_validation:  # the validation pass, with the training data still held
        from .. import onnx_runtime
        vbatch = min(args.batch_size, len(xv))
        onnx_runtime.check_memory(model, vbatch, given_input=vbatch * prod(xv.shape[1:]) * xv.itemsize, extra=data)
        if model.dtype != onnx_runtime.RUN_DTYPE:
            print_notes([f"--backend onnxruntime validates this {model.dtype} model in float32 (onnxruntime's CPU "
                         "provider has no float64 Conv): val_loss differs from --backend numpy's by float32 rounding"])
    rng = np.random.default_rng(model.spec.init.seed)
    history = TrainingHistory()
    batches = -(-n // args.batch_size)
    first_loss = None
    saved = 0  # the epoch whose checkpoint is in args.out

    def kept() -> str:
        return (f"the checkpoint of epoch {saved} is in {args.out}" if saved
                else f"nothing was saved ({args.out} is written after a completed epoch)")

    if args.json:
        print_notes([f"the weights are saved to {args.out} after every epoch{chosen}"])
    else:
        val = ""
        if xv is not None:
            val = (f", validation on {_plural(len(xv), 'sample')} " +
                   (f"of {args.val_data}" if args.val_data else f"held out of {args.data} (--val-split {args.val_split:g})"))
        print(f"training {model.spec.name} on {_plural(n, 'sample')} of {printable(args.data)}{val}: "
              f"{_plural(args.epochs, 'epoch')} of {_plural(batches, 'batch', 'batches')} "
              f"(batch size {args.batch_size}); the weights are saved to {args.out} after every epoch{chosen}",
              flush=True)
    try:
        for epoch in range(1, args.epochs + 1):
            model.epoch = epoch - 1  # epochs completed: what a `per: epoch` learning-rate schedule counts
            order = rng.permutation(n)
            total, correct, labels, seen = 0.0, 0, 0, 0
            for b in progress(range(batches), total=batches, desc=f"epoch {epoch}/{args.epochs}"):
                idx = order[b * args.batch_size:(b + 1) * args.batch_size]
                xb, yb = x[idx], y[idx]
                with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported just below
                    out = model.forward(xb, train=True)
                    loss = model.loss(out, yb)
                if not np.isfinite(loss):
                    last = f" (the batch before: {fmt_loss(history.batches[-1][1])})" if history.batches else ""
                    return _diverged(args, history, model, f"the loss became {loss} at epoch {epoch}, batch "
                                     f"{b + 1} of {batches}{last}", kept())
                first_loss = loss if first_loss is None else first_loss
                model.backward(input_grad=False)
                model.step()
                total += loss * len(idx)
                found = predictions(model.spec.loss.type, out, yb)
                acc = None
                if found is not None:
                    hits, count = int((found[0] == found[1]).sum()), found[0].size
                    correct, labels, acc = correct + hits, labels + count, hits / count
                seen += len(idx)
                history.batches.append((epoch - 1 + (b + 1) / batches, loss, acc))
            row = {"epoch": epoch, "loss": total / seen}
            if labels:
                row["accuracy"] = correct / labels
            if xv is not None:
                ev = (onnx_runtime.evaluate(model, xv, yv, args.batch_size) if ort_validation
                      else model.evaluate(xv, yv, args.batch_size))
                row["val_loss"] = ev.loss
                if ev.accuracy is not None:
                    row["val_accuracy"] = ev.accuracy
            history.epochs.append(row)
            if first_loss > 0 and row["loss"] > DIVERGED_GROWTH * first_loss:
                return _diverged(args, history, model, f"the loss grew from {fmt_loss(first_loss)} (first batch) "
                                 f"to {fmt_loss(row['loss'])} (mean of epoch {epoch}), more than a million-fold",
                                 kept())
            model.save(args.out)
            saved = epoch
            if args.plot:
                _save_plot(args, history, model)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                shown = ", ".join(f"{k} {fmt_loss(v) if 'loss' in k else f'{v:.4f}'}"
                                  for k, v in row.items() if k != "epoch")
                print(f"epoch {epoch}/{args.epochs}: {shown} (saved {printable(args.out)})", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted during epoch {len(history.epochs) + 1}; {kept()}", file=sys.stderr)
        return 130
    if args.plot and not args.json:
        print(f"training curve: {printable(args.plot)}")
    return 0


def _diverged(args, history, model, what: str, kept: str) -> int:
    """Training diverged: say so (and what to do), draw the curve so far, exit 1 (it did not pass)."""
    if args.plot and history.batches:
        _save_plot(args, history, model)
    print(f"training diverged: {what}. Try a smaller optimizer.lr (now {model.spec.optimizer.lr:g}) or "
          f"inputs scaled to about -1..1; {kept}" + (f"; the curve so far is in {args.plot}" if args.plot else ""),
          file=sys.stderr)
    return 1


def _save_plot(args, history, model) -> None:
    from ..files import write_files
    from ..plot import training_svg
    loss = model.spec.loss
    svg = training_svg(history, title=f"{model.spec.name}: training on {Path(args.data).name}",
                       loss_label=f"loss ({loss.type}, {loss.reduction})",
                       x_note=f" ({_plural(-(-len(history.batches) // max(len(history.epochs), 1)), 'batch', 'batches')}"
                              f" of {args.batch_size} per epoch)" if history.epochs else "")
    write_files({args.plot: svg})


def run_evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    _positive(args.batch_size, "--batch-size")
    model = _model(args)
    _print_warnings(model)
    if model.spec.loss is None:
        raise DataError(f"{args.spec}: the spec has no `loss:`; evaluating needs one (e.g. loss: {{type: cross_entropy}})")
    if not args.weights and model.spec.weights is None:
        print_notes(["no --weights and no `weights:` in the spec: evaluating the seeded initial parameters"])
    x, y = _load_xy(args.data, model, "data")
    batch = min(args.batch_size, len(x))
    given, data = batch * prod(x.shape[1:]) * x.itemsize, (("the data (x and y)", x.nbytes + y.nbytes),)
    backend = getattr(args, "backend", "numpy")
    if backend == "onnxruntime":
        from .. import onnx_runtime
        onnx_runtime.check_memory(model, batch, given_input=given, extra=data)
        if model.dtype != onnx_runtime.RUN_DTYPE:
            print_notes([f"--backend onnxruntime runs this {model.dtype} model in float32 (onnxruntime's CPU "
                         "provider has no float64 Conv): the loss differs from --backend numpy's by float32 "
                         "rounding, and a prediction can change where two scores are that close"])
        ev = onnx_runtime.evaluate(model, x, y, args.batch_size)
    else:
        model.check_memory(batch, advice="use a smaller --batch-size", given_input=given, extra=data)
        ev = model.evaluate(x, y, args.batch_size)
    if not np.isfinite(ev.loss):
        print_notes([f"the loss is {ev.loss} (the outputs overflow): are these the weights of a diverged run?"])
    if args.json:
        data = {"spec": str(args.spec), "data": str(args.data), "weights": args.weights, "backend": backend,
                **ev.to_dict()}
        if not np.isfinite(ev.loss):
            data["loss"] = None  # JSON has no NaN or Infinity
        print(json.dumps(data, indent=2))
        return 0
    lines = [f"evaluate {model.spec.name} on {_plural(ev.samples, 'sample')} of {args.data}"
             + (f" with {args.weights}" if args.weights else "")
             + (" in onnxruntime (float32)" if backend == "onnxruntime" else ""),
             f"loss ({ev.loss_type}, {ev.reduction}): {fmt_loss(ev.loss)}"]
    if ev.accuracy is not None:
        what = "samples" if ev.loss_type in ("cross_entropy", "multi_margin") else "labels"
        lines.append(f"accuracy: {ev.accuracy:.4f} ({ev.correct:,} of {ev.labels:,} {what} right)")
        lines.extend(render_confusion(ev.confusion))
    print("\n".join(lines))
    return 0


def render_confusion(confusion, max_classes: int = 20) -> list[str]:
    """The confusion matrix as a table (rows: true class, columns: predicted), or for many classes the most
    frequent confusions."""
    k = len(confusion)
    if k > max_classes:
        off = [(int(confusion[i, j]), i, j) for i in range(k) for j in range(k) if i != j and confusion[i, j]]
        off.sort(reverse=True)
        top = ", ".join(f"{i} as {j}: {c:,}" for c, i, j in off[:8]) or "none"
        return [f"confusion matrix: {k} classes, too many to print (--json has it); most frequent confusions "
                f"(true as predicted): {top}"]
    width = max(len(f"{int(confusion.max()):,}"), len(str(k - 1)), 3)
    head = "true \\ predicted"
    lines = ["confusion matrix (rows: true class, columns: predicted class):",
             f"  {head}  " + "  ".join(str(j).rjust(width) for j in range(k))]
    for i in range(k):
        lines.append(f"  {str(i).rjust(len(head))}  " + "  ".join(f"{int(c):,}".rjust(width) for c in confusion[i]))
    recall = [f"{i}: {confusion[i, i] / s:.2f}" if (s := confusion[i].sum()) else f"{i}: -" for i in range(k)]
    lines.append("  per-class recall (right / true samples of the class): " + ", ".join(recall))
    return lines


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
        print(render_gradcheck(result))
    return 0 if result.ok else 1


def render_gradcheck(result) -> str:
    """One row per tensor. A gradient that is ~0 both ways says so, with its absolute error, instead of a
    relative error of rounding noise to rounding noise (which is often exactly 1)."""
    width = max(len(r.name) for r in result.rows)
    lines = []
    for r in result.rows:
        kinks = f"  ({r.kinks} at kinks skipped)" if r.kinks else ""
        count = f"{r.checked:3d} {'element ' if r.checked == 1 else 'elements'}"
        if r.near_zero(result.atol):
            errors = f"gradient ~0 both ways (largest {r.max_magnitude:.1e}; abs error {r.max_abs_error:.1e})"
        else:
            errors = f"max rel error {r.max_rel_error:.2e}  max abs error {r.max_abs_error:.2e}"
        verdict = "FAIL" if not r.ok else "ok" if r.max_rel_error < result.tol or r.near_zero(result.atol) \
            else f"ok on the absolute error (< {result.atol:g})"
        lines.append(f"{r.name.ljust(width)}  {count}  {errors}  {verdict}{kinks}")
    lines.append(f"gradcheck {'passed' if result.ok else 'FAILED'} (relative tolerance {result.tol:g}, "
                 f"or absolute {result.atol:g})")
    return "\n".join(lines)
