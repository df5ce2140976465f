"""check, summary, explain, schema: everything that needs only the spec (no NumPy engine, no onnx)."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import SpecError
from ..graph import load_spec
from .models import HelpFormatter, add_max_memory, spec_warnings

_RAW = HelpFormatter  # descriptions as written, defaults shown


def register(sub) -> None:
    p = sub.add_parser(
        "check", help="validate specs (exit 0 when all are valid, 2 otherwise)", formatter_class=_RAW,
        description="Validate one or more model specs without running anything: YAML syntax and duplicate\n"
        "keys, keys, types and ranges, layer names and inputs, every layer's shape, size limits (per tensor,\n"
        "total parameters, estimated memory for one sample) and inline weights. Every problem in every file\n"
        "is listed as FILE:LINE:COL: message, with the line and a caret. A valid spec that is almost surely\n"
        "not what was meant (a final softmax before cross_entropy, a sigmoid before bce_with_logits) gets a\n"
        "'FILE:LINE:COL: warning: ...' on stderr and still passes.",
        epilog="output: one 'FILE: ok (...)' line per valid spec on stdout; problems and warnings on stderr.\n"
               "exit codes: 0 all specs valid, 2 any spec invalid or unreadable.\n"
               "example: cnnspec check specs/*.yaml")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (.yaml)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    add_max_memory(p)
    p.set_defaults(func=run_check)

    p = sub.add_parser(
        "summary", help="Keras-style table: shapes, parameters, MACs, YAML lines", formatter_class=_RAW,
        description="Print every layer's output shape (in the spec's layout, batch as None), parameter count,\n"
        "multiply-accumulates per sample and the YAML line it is declared on, then totals: parameters,\n"
        "batch-norm buffers, memory of parameters and of activations per sample, and the estimated\n"
        "working memory of inference and of training for a batch of 1, with the largest batches that fit\n"
        "the memory limit.",
        epilog="exit codes: 0 printed, 2 the spec is invalid (problems on stderr).")
    p.add_argument("spec", metavar="SPEC", help="spec file (.yaml)")
    p.add_argument("--json", action="store_true",
                   help='print the same as JSON: {"name", "input_shape", "layout", "dtype", "output", '
                        '"layers": [{"name", "type", "inputs", "output_shape", "params", "macs", "line"}], '
                        '"totals": {...}}')
    add_max_memory(p)
    p.set_defaults(func=run_summary)

    p = sub.add_parser(
        "explain", help="step-by-step derivation of every shape and parameter count", formatter_class=_RAW,
        description="Explain each layer in order: the output-size formula with the numbers substituted,\n"
        "kernel dimensions, parameter counts with their arithmetic, and what batch norm, activations,\n"
        "pooling and flatten do to the shape.",
        epilog="exit codes: 0 printed, 2 the spec is invalid (problems on stderr).\n"
               "example: cnnspec explain specs/lecture_conv1.yaml")
    p.add_argument("spec", metavar="SPEC", help="spec file (.yaml)")
    add_max_memory(p)
    p.set_defaults(func=run_explain)

    p = sub.add_parser(
        "schema", help="print the JSON Schema of the spec format", formatter_class=_RAW,
        description="Print the JSON Schema (draft 2020-12) of model specs, generated from the models that\n"
        "validate them. Save it and add this line at the top of a spec for completion and checking in\n"
        "editors with a YAML language server:\n\n  # yaml-language-server: $schema=PATH/TO/cnnspec.schema.json",
        epilog="exit codes: 0 written, 2 the output file cannot be written.\n"
               "example: cnnspec schema -o docs/cnnspec.schema.json")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of stdout")
    p.set_defaults(func=run_schema)


def run_check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        try:
            spec = load_spec(path, args.max_memory)
        except SpecError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            g = spec.graph
            n = len(g.nodes)
            print(f"{path}: ok ({spec.name}: {n} layer{'s' if n != 1 else ''}, output "
                  f"{list(g.declared(g.nodes[g.output].shape))}, {g.param_count:,} "
                  f"parameter{'s' if g.param_count != 1 else ''})", flush=True)
        for warning in spec_warnings(spec):  # valid, so exit 0, but almost surely not what was meant
            print(warning, file=sys.stderr)
    if failed and len(args.specs) > 1:
        print(f"{failed} of {len(args.specs)} specs invalid", file=sys.stderr)
    return 2 if failed else 0


def run_summary(args: argparse.Namespace) -> int:
    from ..summary import render_summary, summarize
    data = summarize(load_spec(args.spec, args.max_memory).graph, args.max_memory)
    print(json.dumps(data, indent=2) if args.json else render_summary(data))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from ..explain import explain
    print(explain(load_spec(args.spec, args.max_memory).graph))
    return 0


def run_schema(args: argparse.Namespace) -> int:
    from ..schema import json_schema
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        from ..files import write_files
        write_files({args.output: text})
    else:
        sys.stdout.write(text)
    return 0
