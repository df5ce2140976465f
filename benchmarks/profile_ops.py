"""Where a model's time goes: milliseconds per op type and direction, for one spec and task.

    python benchmarks/profile_ops.py                          # bench-cnn, float64 training step
    python benchmarks/profile_ops.py specs/lenet5.yaml --batch 64 --dtype float32 --task forward
    python benchmarks/profile_ops.py --no-rewrite             # one op per layer: each rewrite's share

Each op's forward and backward are wrapped with a timer (the whole call, including its threads), the fused
ops of the exact rewrites (cnnspec/rewrite.py) under their own names (batchnorm_relu, maxpool_relu); "other"
is the rest of the step (loss, SGD, the model's bookkeeping). Times are means over the timed runs after
3 warm-ups, with freed memory kept as the CLI does; threads as in the engine (CNNSPEC_NUM_THREADS, else
OMP_NUM_THREADS, else every CPU).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cnnspec  # before NumPy, so its OpenBLAS setting applies
import numpy as np
from cnnspec.memory import keep_freed_memory
from cnnspec.ops import OPS
from cnnspec.ops.fused import FUSED

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "bench_cnn.yaml"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--task", default="train_step", choices=["train_step", "forward"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-rewrite", action="store_true", help="one op per layer (compile(rewrite=False)): "
                        "with and without, the rows show each exact rewrite's share")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be at least 1")

    keep_freed_memory()
    model = cnnspec.compile(args.spec, dtype=args.dtype, rewrite=not args.no_rewrite)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *model.spec.input.shape)).astype(args.dtype)
    y = rng.integers(0, model.shapes[model.output_name][0], args.batch)
    step = (lambda: model.train_step(x, y)) if args.task == "train_step" else (lambda: model.forward(x))

    times: dict[tuple[str, str], float] = {}

    def timed(key, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[key] = times.get(key, 0.0) + time.perf_counter() - t0
        return wrapper

    originals = {table_name: dict(table) for table_name, table in (("OPS", OPS), ("FUSED", FUSED))}
    for table_name, table in (("OPS", OPS), ("FUSED", FUSED)):
        for name, op in originals[table_name].items():
            table[name] = type(op)(op.name, timed((name, "forward"), op.forward),
                                   timed((name, "backward"), op.backward), op.n_inputs, op.skips_dx)
    try:
        for _ in range(3):
            step()
        times.clear()
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            step()
        total = (time.perf_counter() - t0) / args.repeats * 1000
    finally:
        OPS.update(originals["OPS"])
        FUSED.update(originals["FUSED"])

    print(f"{Path(args.spec).stem}, batch {args.batch}, {args.dtype} {args.task}: {total:.2f} ms per step")
    for (name, direction), seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {name:22s} {direction:9s} {seconds / args.repeats * 1000:7.2f} ms")
    print(f"  {'other':32s} {total - sum(times.values()) / args.repeats * 1000:7.2f} ms")


if __name__ == "__main__":
    try:
        main()
    except cnnspec.CnnspecError as exc:  # a spec or data the engine refuses: its message, exit 2
        from cnnspec.text import printable
        print("\n".join(printable(line) for line in str(exc).splitlines()) or type(exc).__name__, file=sys.stderr)
        sys.exit(2)
