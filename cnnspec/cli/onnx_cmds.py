"""compile, verify: ONNX export and its layer-by-layer verification (onnx/onnxruntime imported lazily)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from .. import limits
from ..errors import DataError
from ..text import printable
from .models import WEIGHTS_HELP, HelpFormatter, add_max_memory, build_model, print_notes, sample_bytes, weight_bytes

_TOL_HELP = ("default: float64 rtol 1e-10, atol 1e-12 (onnx reference evaluator); float32 rtol 1e-4, atol 1e-5 "
             "(onnxruntime). A given value applies to every comparison")
_HOW = """how verification works:
  Seeded standard-normal inputs ({inputs}) go through the NumPy engine in eval mode and through the
  ONNX model, and every layer's output is compared, not only the last. A float64 model runs in onnx's
  reference evaluator at float64 tolerance, and a float32 copy of it runs in onnxruntime at float32
  tolerance (onnxruntime's CPU provider has no float64 Conv); a float32 model runs in onnxruntime.
  A layer passes when  max|onnx - engine| <= atol + rtol * max|engine|  over that layer's output.
  The table names the runtime and dtype of each check; the first layer that diverges is named.

exit codes: {exits}, 2 invalid input (spec, weights, opset, file)."""
_COMPILE_EPILOG = _HOW.format(
    inputs="batch 2, seed 0; 'cnnspec verify SPEC --onnx OUT.onnx' takes --batch, --seed, --rtol, --atol",
    exits="0 written (and verified with --verify), 1 --verify found a diverging layer (the file is still written)")
_VERIFY_EPILOG = _HOW.format(inputs="--batch, --seed", exits="0 all layers agree, 1 a layer diverges")


def register(sub) -> None:
    p = sub.add_parser(
        "compile", help="export a spec to ONNX (optionally verify it layer by layer)",
        description="Validate SPEC, build the model (seeded init, the spec's weights, or --weights) and write it "
        "as ONNX: node and tensor names from the layer names, dynamic batch dimension 'N', weights as "
        "initializers named like PyTorch's state_dict, the spec's layout (CHW or HWC) at the input and output, "
        "and metadata (spec name and hash, cnnspec version, init seed). The file passes onnx.checker with full "
        "checking. Nothing is written unless the export succeeds.",
        epilog=_COMPILE_EPILOG, formatter_class=HelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="model spec (.yaml)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the model")
    _model_args(p)
    p.add_argument("--opset", type=int, default=None, metavar="N",
                   help="ONNX opset (default 21, with IR version 10: onnxruntime 1.18 and later load it; "
                   "supported 13 to 25 (or the installed onnx's newest); a layer that needs a newer opset is reported)")
    p.add_argument("--text", action="store_true",
                   help="also write ONNX's textual form (onnx.printer) next to OUT.onnx as OUT.onnxtxt; "
                   "tensors of more than 16 values appear as references to OUT.onnx")
    p.add_argument("--verify", action="store_true",
                   help="then compare every layer with the NumPy engine (see below); exit 1 if one diverges")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object: {"onnx", "text", "opset", "ir_version", "dtype", "nodes", '
                   '"parameters", "buffers", "bytes", "verify": {...} or null, "ok"}')
    p.set_defaults(func=run_compile)

    p = sub.add_parser(
        "verify", help="check an ONNX export against the NumPy engine, layer by layer",
        description="Run seeded inputs through the NumPy engine and through an ONNX model of SPEC (the file "
        "given with --onnx, or an export made now) and compare every layer's output; print a table of "
        "maximum absolute and relative errors per layer and runtime.",
        epilog=_VERIFY_EPILOG, formatter_class=HelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="model spec (.yaml)")
    p.add_argument("--onnx", metavar="M.onnx", help="the ONNX file to check (default: export SPEC in memory)")
    _model_args(p)
    p.add_argument("--opset", type=int, default=None, metavar="N",
                   help="opset of the in-memory export when --onnx is not given (default 21)")
    p.add_argument("--batch", type=int, default=2, metavar="N", help="samples in the seeded input (default 2)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the input (default 0)")
    p.add_argument("--rtol", type=float, default=None, metavar="R", help=f"relative tolerance ({_TOL_HELP})")
    p.add_argument("--atol", type=float, default=None, metavar="A", help="absolute tolerance (see --rtol)")
    p.add_argument("--json", action="store_true",
                   help='print the result as JSON: {"ok", "first_divergence", "failure", "runs": [...], '
                   '"layers": [{"layer", "type", "runtime", "dtype", "shape", "max_abs", "max_rel", "ok", '
                   '"note"}], ...}')
    p.set_defaults(func=run_verify)


def _model_args(p) -> None:
    p.add_argument("--weights", metavar="W.npz", help=WEIGHTS_HELP)
    p.add_argument("--dtype", choices=("float32", "float64"),
                   help="override the spec's dtype; float32 gives a file onnxruntime can run (its CPU provider "
                   "has no float64 Conv)")
    add_max_memory(p)


def _check_memory(model, batch: int | None) -> None:
    """Refuse before exporting: the ONNX model and its serialized bytes each copy the weights; a
    verification (batch given) also runs the engine's forward pass and the runtimes hold their copies."""
    if batch is None:  # counted with a forward pass of one sample, as every model is (limits.spec_problem)
        est = model.memory_estimate(1, extra=(("ONNX copies of the weights (the model, its bytes)",
                                               2 * weight_bytes(model)),))
        limits.require(replace(est, task="an ONNX export"), model.max_memory, "make the model smaller")
    else:
        model.check_memory(batch, advice="use a smaller --batch", given_input=batch * sample_bytes(model, 8),
                           extra=(("ONNX copies of the weights (the model, its bytes, the runtimes')",
                                   4 * weight_bytes(model)),))


# ---------------------------------------------------------------- handlers


def run_compile(args: argparse.Namespace) -> int:
    from ..onnx_export import DEFAULT_OPSET, check_opset, export_onnx, ort_float64_missing, summary, text_path

    opset = check_opset(DEFAULT_OPSET if args.opset is None else args.opset)
    _not_an_input(args, [Path(args.output)] + ([text_path(args.output)] if args.text else []))
    model, notes = build_model(args.spec, args.dtype, args.weights, args.max_memory)
    _check_memory(model, 2 if args.verify else None)  # compile --verify checks a batch of 2 (verify's default)
    meta = {"cnnspec.weights_file": Path(args.weights).name} if args.weights else None
    m = export_onnx(model, args.output, opset=opset, text=args.text, metadata=meta)
    info = summary(m)
    out = Path(args.output)
    data = {"onnx": str(out), "text": str(text_path(out)) if args.text else None, "opset": info["opset"],
            "ir_version": info["ir_version"], "dtype": model.dtype.name, "nodes": info["nodes"],
            "parameters": info["parameters"], "buffers": info["buffers"], "bytes": out.stat().st_size,
            "verify": None, "ok": True}
    missing = ort_float64_missing(m)  # the exported nodes only: layers after `output:` are not in the file
    if missing:
        notes.append(f"onnxruntime's CPU provider has no float64 {', '.join(missing)}, so it cannot run this file; "
                     "onnx's reference evaluator and Netron can. For a file onnxruntime runs, add --dtype float32.")
    result = None
    if args.verify:
        from ..onnx_verify import verify_onnx
        result = verify_onnx(model, m, label=str(out))
        data["verify"], data["ok"] = result.to_dict(), result.ok
        notes.extend(result.notes)
    if args.json:
        print_notes(notes)
        print(json.dumps(data, indent=2))
    else:
        stats = f" + {data['buffers']:,} batch-norm statistics" if data["buffers"] else ""
        print(f"wrote {printable(str(out))}: opset {data['opset']} (IR version {data['ir_version']}), {data['dtype']}, "
              f"{data['nodes']} nodes, {data['parameters']:,} parameters{stats}, {_size(data['bytes'])}")
        if args.text:
            print(f"wrote {printable(str(data['text']))}: ONNX textual form")
        print_notes(notes)
        if result is not None:
            print()
            print(render_verify(result, pretty=_tty(), color=_color()))
    return 0 if data["ok"] else 1


def run_verify(args: argparse.Namespace) -> int:
    from ..onnx_export import DEFAULT_OPSET, check_opset
    from ..onnx_verify import verify_onnx

    opset = check_opset(DEFAULT_OPSET if args.opset is None else args.opset)
    if args.onnx and args.opset is not None:
        raise DataError("--opset applies to the in-memory export; with --onnx the file's own opset is used")
    _positive_batch(args.batch)
    model, notes = build_model(args.spec, args.dtype, args.weights, args.max_memory)
    _check_memory(model, args.batch)
    result = verify_onnx(model, args.onnx, batch=args.batch, rtol=args.rtol, atol=args.atol, seed=args.seed,
                         opset=opset)
    notes.extend(result.notes)
    print_notes(notes)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render_verify(result, pretty=_tty(), color=_color()))
    return 0 if result.ok else 1


def _positive_batch(batch: int) -> None:
    if batch < 1:
        raise DataError(f"--batch must be >= 1, got {batch}")


def _not_an_input(args, outputs) -> None:
    """Refuse to write over the spec or the weights being read (`-o model.yaml` would replace the spec)."""
    for out in outputs:
        for what, src in (("spec", args.spec), ("weights file", args.weights)):
            if src and out.exists() and Path(src).exists() and out.resolve() == Path(src).resolve():
                raise DataError(f"{out}: is the {what} this command reads; writing the model there would "
                                "replace it (give an .onnx path)")


# ---------------------------------------------------------------- rendering


def _tty() -> bool:
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def _color() -> bool:
    from ..progress import use_color
    return use_color(sys.stdout)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _num(v) -> str:
    if v is None:
        return "-"
    if v != v:  # NaN
        return "nan"
    return "0" if v == 0 else f"{v:.2e}"


def _skipped(row) -> bool:
    """A row that compared nothing (the model has no tensor for that layer)."""
    return row.ok and row.max_abs is None


def render_verify(result, pretty: bool = False, color: bool = False) -> str:
    """The per-layer table. pretty: a terminal (rules, layer shown once per group); plain otherwise
    (every row complete, so grep and diff work). color: ok green, FAIL red (only when pretty)."""
    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    lines = [f"verify {result.spec} against {result.onnx}: batch {result.batch}, seed {result.seed}"]
    for run in result.runs:
        why = ""
        if run.runtime == "onnxruntime" and any(r.runtime == "onnx.reference" for r in result.runs):
            why = "  (a float32 copy: onnxruntime's CPU provider has no float64 Conv)"
        lines.append(f"  {run.runtime:<15} {run.dtype}  rtol {run.rtol:g}  atol {run.atol:g}{why}")
    lines.append("  a layer passes when max abs <= atol + rtol * max|expected|; max rel = max abs / max|expected|")
    lines.append("")
    header = ["layer", "type", "shape", "runtime", "dtype", "max abs", "max rel", "result"]
    rows = []
    last = None
    for r in result.layers:
        if _skipped(r):
            status = r.note  # "skipped: ..." (not compared, so not "ok")
        else:
            status = "ok" if r.ok else "FAIL"
            if r.note:
                status += f" ({r.note})"
        first = r.layer != last or not pretty
        rows.append([r.layer if first else "", r.type if first else "", "[" + ", ".join(map(str, r.shape)) + "]"
                     if first else "", r.runtime, r.dtype, _num(r.max_abs), _num(r.max_rel), status])
        last = r.layer
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def fmt(row):
        return "  ".join(c.ljust(w) if i < 5 else c.rjust(w) if i < 7 else c
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    lines.append(paint(fmt(header), "1") if pretty else fmt(header))
    lines.append(("─" if pretty else "-") * len(fmt(header)))
    for row in rows:
        text = fmt(row)
        if pretty and color:
            st = row[-1]
            code = "32" if st.startswith("ok") else "33" if st.startswith("skipped") else "31;1"
            text = text[: len(text) - len(st)] + paint(st, code)
        lines.append(text)
    lines.append("")
    skipped = [name for name in dict.fromkeys(r.layer for r in result.layers)
               if all(_skipped(r) for r in result.layers if r.layer == name)]
    compared = len({r.layer for r in result.layers}) - len(skipped)
    if result.ok:
        msg = f"ok: all {compared} layers agree with the engine"
        if skipped:
            msg = (f"ok: {compared} compared layer{'s agree' if compared != 1 else ' agrees'} with the engine; "
                   f"{len(skipped)} not compared (no tensor of that name in the model): {', '.join(skipped)}")
        lines.append(paint(msg, "32") if pretty else msg)
    else:
        msg = f"FAILED: {result.failure}"
        lines.append(paint(msg, "31;1") if pretty else msg)
    return "\n".join(lines)
