"""Each exact rewrite's share of a model's time: the plan without rewrites against the plan with the passes
of cnnspec/rewrite.py added one at a time, in PASSES order, paired in rounds in one process.

    python benchmarks/rewrite_shares.py                       # bench-cnn, batch 32, both dtypes and tasks
    python benchmarks/rewrite_shares.py specs/lenet5.yaml --batch 64 --dtypes float32 --tasks forward

Every plan is a model of the same weights; each round times one block of back-to-back calls per plan, the
blocks in random order, and the ratio to the plan without rewrites is taken within the round (median over
rounds, with the interquartile range), as benchmarks/bench.py does for runtimes. A row's share is its ratio
minus the row above's: what that pass adds on top of the passes before it. Freed memory is kept, as the CLI
does. A pass that does not apply to the spec leaves the plan as it was: its row times the plan above again,
and its "share" is the noise of the measurement, which the output says.
"""
from __future__ import annotations

import argparse
import sys
import random
import statistics
import time
from pathlib import Path

import cnnspec  # before NumPy, so its OpenBLAS setting applies
import numpy as np
from cnnspec import rewrite
from cnnspec.memory import keep_freed_memory

ROOT = Path(__file__).resolve().parent.parent


def plan_with(graph, passes) -> rewrite.Plan:
    plan = rewrite.plain(graph)
    for rewrite_pass in passes:
        rewrite_pass(plan, graph)
    return plan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "bench_cnn.yaml"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--tasks", nargs="+", default=["train_step", "forward"], choices=["train_step", "forward"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=float, default=0.3, help="seconds per timed block (default 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or not args.block > 0:
        parser.error("--batch and --rounds must be at least 1 and --block above 0")

    keep_freed_memory()
    order = random.Random(args.seed)
    for dtype in args.dtypes:
        for task in args.tasks:
            rows = [("no rewrite", ())] + [(f"+ {p.__name__}", rewrite.PASSES[:i + 1])
                                           for i, p in enumerate(rewrite.PASSES)]
            steps, applied = [], []
            for _, passes in rows:
                model = cnnspec.compile(args.spec, dtype=dtype)
                model.plan = plan_with(model.graph, passes)
                applied.append(len(model.plan.applied))
                rng = np.random.default_rng(0)
                x = rng.standard_normal((args.batch, *model.spec.input.shape)).astype(dtype)
                y = rng.integers(0, model.shapes[model.output_name][0], args.batch)
                steps.append((lambda m=model, x=x, y=y: m.train_step(x, y)) if task == "train_step"
                             else (lambda m=model, x=x: m.forward(x)))
            per_call = []
            for step in steps:  # warm up, and size the blocks
                t0 = time.perf_counter()
                for _ in range(3):
                    step()
                per_call.append((time.perf_counter() - t0) / 3)
            calls = [max(1, round(args.block / s)) for s in per_call]
            times: list[list[float]] = [[] for _ in steps]
            for _ in range(args.rounds):
                idx = list(range(len(steps)))
                order.shuffle(idx)
                for i in idx:
                    t0 = time.perf_counter()
                    for _ in range(calls[i]):
                        steps[i]()
                    times[i].append((time.perf_counter() - t0) / calls[i] * 1000)
            print(f"{Path(args.spec).stem}, batch {args.batch}, {dtype} {task} ({args.rounds} rounds):")
            previous = 1.0
            for i, ((label, _), t) in enumerate(zip(rows, times)):
                ratios = [a / b for a, b in zip(t, times[0])]
                q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
                med = statistics.median(ratios)
                share = "" if i == 0 else f"  this pass: {med - previous:+.1%}"
                if i and applied[i] == applied[i - 1]:
                    share += " (does not apply here: the plan above again, so this is the noise)"
                print(f"  {label:28s} {statistics.median(t):8.2f} ms  {med:.3f}x of no rewrite "
                      f"[IQR {q[0]:.3f}-{q[2]:.3f}]{share}")
                previous = med


if __name__ == "__main__":
    try:
        main()
    except cnnspec.CnnspecError as exc:  # a spec or data the engine refuses: its message, exit 2
        from cnnspec.text import printable
        print("\n".join(printable(line) for line in str(exc).splitlines()) or type(exc).__name__, file=sys.stderr)
        sys.exit(2)
