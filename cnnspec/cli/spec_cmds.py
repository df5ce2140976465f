"""check, summary, explain, schema: everything that needs only the spec (no NumPy engine, no onnx)."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import SpecError
from ..graph import load_spec


def register(sub) -> None:
    p = sub.add_parser("check", help="validate specs (exit 0 when all are valid, 2 otherwise)",
                       description="Validate one or more model specs: YAML syntax, keys, types, ranges, layer "
                       "names and inputs, and every shape. All problems are listed as file:line:col.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (.yaml)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=run_check)

    p = sub.add_parser("summary", help="Keras-style table: shapes, parameters, MACs, YAML lines",
                       description="Print every layer's output shape (in the spec's layout, batch as None), "
                       "parameter count, multiply-accumulates and the line it is declared on, with totals.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help='print data: {"name", "layers": [...], "totals": {...}}')
    p.set_defaults(func=run_summary)

    p = sub.add_parser("explain", help="step-by-step derivation of every shape and parameter count",
                       description="Explain each layer: the output-size formula with the numbers substituted, "
                       "kernel dimensions, parameter counts, and what batch norm, activations and pooling do.")
    p.add_argument("spec", metavar="SPEC")
    p.set_defaults(func=run_explain)

    p = sub.add_parser("schema", help="print the JSON Schema of the spec format",
                       description="Print the JSON Schema of model specs (generated from the pydantic models). "
                       "Save it and add '# yaml-language-server: $schema=PATH' as a spec's first line for "
                       "completion and checking in editors.")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run_schema)


def run_check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            g = spec.graph
            print(f"{path}: ok ({spec.name}: {len(g.nodes)} layers, output {list(g.declared(g.nodes[g.output].shape))}, "
                  f"{g.param_count:,} parameters)")
    if failed and len(args.specs) > 1:
        print(f"{failed} of {len(args.specs)} specs invalid", file=sys.stderr)
    return 2 if failed else 0


def run_summary(args: argparse.Namespace) -> int:
    from ..summary import render_summary, summarize
    data = summarize(load_spec(args.spec).graph)
    print(json.dumps(data, indent=2) if args.json else render_summary(data))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from ..explain import explain
    print(explain(load_spec(args.spec).graph))
    return 0


def run_schema(args: argparse.Namespace) -> int:
    from ..schema import json_schema
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        from ..arrays import atomic_write
        atomic_write(args.output, lambda tmp: open(tmp, "w", encoding="utf-8").write(text))
    else:
        sys.stdout.write(text)
    return 0
