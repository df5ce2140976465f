"""Speed and memory of the NumPy engine against PyTorch and onnxruntime on this machine, paired in rounds.

    python benchmarks/bench.py                     # 21 quiet rounds per comparison; rewrites its part of docs/benchmarks.md
    python benchmarks/bench.py --quick             # 10 rounds of shorter blocks; prints only
    python benchmarks/bench.py --baseline 9387546  # also the engine of that commit, paired ("no slower than before")
    python benchmarks/bench.py --quick --models bench_cnn --tasks train_step

The question answered: "is my training (inference) faster here or in PyTorch (onnxruntime) on this machine?"
So each runtime runs as its users run it by default: cnnspec as the `cnnspec` CLI runs it (glibc told to keep
freed memory, cnnspec/memory.py), PyTorch and onnxruntime with their default allocators. The GEMM floor is
cnnspec's own floor, so its worker keeps freed memory like cnnspec.

Method (docs/benchmarks.md says why):
- one long-lived worker process per option (runtime, or the GEMM floor, or the baseline engine) of a
  comparison (model, batch, task, dtype), each with the same thread count, seeded data and weights; the rounds
  are split over a few sets (sessions) of fresh workers, so process-to-process differences show in the spread;
- rounds: in each round every worker times one block of back-to-back calls (about --block seconds), the
  blocks in a fresh random order; a warm-up round is discarded;
- the ratio is taken within each round (cnnspec's block median / the peer's block median), so drifts of the
  machine's speed between rounds cancel; the reported ratio is the median over rounds, with its spread
  (interquartile range and min-max over rounds) next to it;
- busy rounds are dropped: during each block the CPU time used by the whole machine (/proc/stat, steal
  included) minus the worker's own and this driver's is CPU taken by other processes; a block where that is
  more than --busy of the machine's capacity makes its round busy. Busy rounds are replaced by extra rounds (up
  to as many again); a comparison with fewer than half its rounds quiet prints "machine busy", not numbers.

Ratios are cnnspec / peer: below 1.0 cnnspec is faster. Peak memory is the worker's peak RSS minus its RSS
once the model and data are ready, before the first call: the working memory of the computation.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
THREADS = 2

# (spec, batch): the lecture CNN with the notes' batch of 10, LeNet-5, and bench-cnn.
MODELS = [("lecture_cnn", 10), ("lenet5", 64), ("bench_cnn", 32)]
TASKS = [("forward", "float32"), ("forward", "float64"), ("train_step", "float32"), ("train_step", "float64")]
PEERS = {"forward": ["onnxruntime", "torch"], "train_step": ["torch"]}
# `cnnspec evaluate` on a data set of (spec, samples) in batches of EVAL_BATCH: the NumPy engine against
# --backend onnxruntime (export and session included, as the command pays them): the fast path's speedup.
EVALUATE = [("lecture_cnn", 200), ("lenet5", 5000), ("bench_cnn", 3000)]
EVAL_BATCH = 256

FULL = {"rounds": 21, "sessions": 3, "block": 0.4}
QUICK = {"rounds": 10, "sessions": 2, "block": 0.2}
BUSY_SHARE = 0.10      # other processes' CPU during a block, as a share of the machine's capacity: busy above
SETTLE_SECONDS = 0.02  # between blocks: a finished worker's idle threads stop spinning

# Issue 13's targets, on bench-cnn by this method: (task, dtype, peer, ratio at or below).
TARGETS = [("train_step", "float64", "torch", 0.9), ("train_step", "float32", "torch", 0.85),
           ("forward", "float32", "onnxruntime", 3.0)]
# ... and the lecture CNN and LeNet-5 no slower than before the exact rewrites (--baseline REV, paired).
NO_SLOWER = ("lecture_cnn", "lenet5")

BEGIN = "<!-- begin: written by benchmarks/bench.py; everything outside these markers is kept -->"
END = "<!-- end: written by benchmarks/bench.py -->"


# ============================================================================ the worker process

def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_step(runtime: str, spec_name: str, batch: int, task: str, dtype: str):
    """The call one option times: a forward or a training step of `spec_name`, on seeded data and the
    cnnspec model's seeded weights. runtime: cnnspec (also the baseline engine, which is cnnspec imported
    from another folder), gemm_floor, onnxruntime or torch; for the task "evaluate" (Model.evaluate of
    `batch` samples), cnnspec or cnnspec_onnxruntime (cnnspec.onnx_runtime.evaluate)."""
    import cnnspec  # before NumPy, so its OpenBLAS setting applies (see cnnspec/__init__.py)
    import numpy as np
    if runtime in ("cnnspec", "gemm_floor"):
        from cnnspec.memory import keep_freed_memory
        keep_freed_memory()  # as the `cnnspec` CLI does (cnnspec/cli/__init__.py); the floor is cnnspec's own
    model = cnnspec.compile(ROOT / "specs" / f"{spec_name}.yaml", dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *model.spec.input.shape)).astype(dtype)
    classes = model.shapes[model.output_name][0]
    y = rng.integers(0, classes, batch)

    if task == "evaluate":
        if runtime == "cnnspec":
            return lambda: model.evaluate(x, y, EVAL_BATCH)
        from cnnspec import onnx_runtime
        return lambda: onnx_runtime.evaluate(model, x, y, EVAL_BATCH)
    if runtime == "cnnspec":
        return (lambda: model.forward(x)) if task == "forward" else (lambda: model.train_step(x, y))
    if runtime == "gemm_floor":
        return _gemm_floor(model, x, y, task)
    if runtime == "onnxruntime":
        import onnxruntime as ort

        from cnnspec.onnx_export import to_onnx
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(to_onnx(model).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda: session.run(None, {name: x})
    if runtime != "torch":
        raise ValueError(f"unknown runtime {runtime!r}")
    import torch
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))   # the PyTorch rebuild the fixtures are made with
    from torch_layers import torch_forward, torch_loss
    torch.set_num_threads(THREADS)
    tdtype = getattr(torch, dtype)
    params = {k: torch.tensor(v, dtype=tdtype, requires_grad=True) for k, v in model.params.items()}
    buffers = {k: torch.tensor(v, dtype=tdtype) for k, v in model.buffers.items()
               if not k.endswith("num_batches_tracked")}
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    o = model.spec.optimizer
    opt = torch.optim.SGD(list(params.values()), lr=o.lr, momentum=o.momentum)
    if task == "forward":
        def fn():
            with torch.no_grad():
                return torch_forward(model.graph, xt, params, buffers, train=False)[0]
    else:
        def fn():
            opt.zero_grad(set_to_none=True)
            out = torch_forward(model.graph, xt, params, buffers, train=True)[0]
            torch_loss(model.spec, out, yt).backward()
            opt.step()
    return fn


def _gemm_floor(model, x, y, task):
    """Only the matrix products the engine performs for this model and task, on the same operands:
    a lower bound for any im2col design on this machine's BLAS."""
    import numpy as np
    out = model.forward(x, train=task != "forward")
    model.loss(out, y)
    products = []
    for node, cache in model._tape:
        if node.type == "conv2d":
            cols, w = cache[0], cache[1]
            w2 = np.ones((w.shape[0], cols.shape[0]), cols.dtype)  # with the bias column when cols has ones
            d = np.ones((w2.shape[0], cols.shape[1]), cols.dtype)
            products.append((w2, cols))
            if task != "forward":
                products.append((d, cols.T))
                if node.inputs != ("input",):
                    products.append((w.reshape(w.shape[0], -1).T, d))
        elif node.type == "dense":
            xin, w = cache[0], cache[1]
            products.append((xin, w.T))
            if task != "forward":
                d = np.ones((xin.shape[0], w.shape[0]), xin.dtype)
                products += [(d.T, xin), (d, w)]
    return lambda: [a @ b for a, b in products]


def time_block(fn, calls: int) -> dict:
    """`calls` back-to-back calls of fn: each call's wall time, and the process's CPU time over the block
    (all its threads)."""
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"times_ms": [1000 * t for t in times], "cpu_s": time.process_time() - cpu0,
            "wall_s": time.perf_counter() - wall0}


def serve(runtime: str, spec_name: str, batch: int, task: str, dtype: str, inp=sys.stdin, out=sys.stdout) -> None:
    """The worker's loop: set up, warm up, say ready, then time a block per request until told to quit."""
    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    fn = make_step(runtime, spec_name, batch, task, dtype)
    before = _current_rss_mib()  # after imports, model and data: what follows is the computation's memory
    warm = []  # allocator pools, BLAS threads, onnxruntime arenas: 3 calls and at least half a second
    t0, least = time.perf_counter(), 1 if task == "evaluate" else 3
    while len(warm) < least or time.perf_counter() - t0 < 0.5:
        warm += time_block(fn, 1)["times_ms"]
    send({"ready": True, "call_ms": statistics.median(warm[len(warm) // 2:]), "pid": os.getpid(),
          "cnnspec": sys.modules["cnnspec"].__file__})
    for line in inp:
        request = json.loads(line)
        if "calls" in request:
            send(time_block(fn, int(request["calls"])))
        else:
            send({"peak_mib": max(_peak_rss_mib() - before, 0.0)})
            return


# ============================================================================ the method's arithmetic

def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot from /proc/stat (busy includes steal: time
    the hypervisor gave to someone else), or None where there is no /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal (guest is in user)
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - v[4]) / ticks, sum(v) / ticks


def others_share(machine_before, machine_after, own_cpu_s: float) -> float | None:
    """The share of the machine's CPU capacity used during a block by processes other than the worker and
    this driver (own_cpu_s: their CPU seconds during the block). None where it cannot be read."""
    if machine_before is None or machine_after is None:
        return None
    busy = machine_after[0] - machine_before[0]
    total = machine_after[1] - machine_before[1]
    if total <= 0:
        return None
    return max(0.0, busy - own_cpu_s) / total


def spread(values: list[float]) -> dict:
    """Median, quartiles and extremes of per-round values (quartiles by the inclusive method: with few
    rounds they stay inside the observed range)."""
    values = sorted(values)
    if not values:
        return {"n": 0, "median": float("nan"), "q1": float("nan"), "q3": float("nan"),
                "min": float("nan"), "max": float("nan")}
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"n": len(values), "median": statistics.median(values), "q1": q1, "q3": q3,
            "min": values[0], "max": values[-1]}


def paired_ratios(rounds: list[dict], num: str, den: str) -> list[float]:
    """Per quiet round, the median call time of option `num` over that of option `den`, both measured in
    that round. rounds: [{"busy": bool, "ms": {option: block median}}]."""
    return [r["ms"][num] / r["ms"][den] for r in rounds
            if not r["busy"] and num in r["ms"] and den in r["ms"] and r["ms"][den] > 0]


def enough_quiet(rounds: list[dict], wanted: int) -> bool:
    """A comparison's numbers are printed only when at least half the rounds asked for were quiet."""
    return sum(not r["busy"] for r in rounds) >= max(2, (wanted + 1) // 2)


def fmt_spread(s: dict) -> str:
    return f"{s['q1']:.2f}–{s['q3']:.2f} (min–max {s['min']:.2f}–{s['max']:.2f})"


# ============================================================================ the driver

@dataclass
class Option:
    key: str       # the column it is reported under: cnnspec, gemm_floor, torch, onnxruntime, baseline
    runtime: str
    pythonpath: str


class Worker:
    """One long-lived worker process for one option of one comparison."""

    def __init__(self, option: Option, spec_name: str, batch: int, task: str, dtype: str):
        self.option = option
        self.least = 1 if task == "evaluate" else 3  # a whole data set per call: one is a block
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(THREADS), "OMP_NUM_THREADS": str(THREADS),
               "MKL_NUM_THREADS": str(THREADS), "CNNSPEC_NUM_THREADS": str(THREADS),
               "PYTHONPATH": option.pythonpath}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", option.runtime, spec_name, str(batch),
               task, dtype]
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env, cwd=ROOT)
        self.call_ms = None
        self.calls = 0

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.stderr.seek(0)
            raise RuntimeError(f"{self.option.key} worker exited ({self.proc.returncode}):\n{self.stderr.read()[-2000:]}")
        return json.loads(line)

    def _send(self, obj) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def ready(self, block_seconds: float) -> None:
        hello = self._read()
        where = Path(hello["cnnspec"]).resolve()
        first = Path(self.option.pythonpath.split(os.pathsep)[0]).resolve()
        if first not in where.parents:  # e.g. the baseline engine shadowed by an installed cnnspec
            raise RuntimeError(f"{self.option.key} worker imported cnnspec from {where}, not from {first}")
        self.calibrate(hello["call_ms"], block_seconds)

    def calibrate(self, call_ms: float, block_seconds: float) -> None:
        """Calls per block: about block_seconds of them, at least 3 (1 for a whole data set)."""
        self.call_ms = call_ms
        self.calls = max(self.least, min(5000, round(block_seconds * 1000 / max(call_ms, 1e-3))))

    def block(self) -> dict:
        self._send({"calls": self.calls})
        return self._read()

    def close(self) -> float | None:
        try:
            self._send({"quit": True})
            peak = self._read()["peak_mib"]
        except (OSError, RuntimeError, ValueError):
            peak = None
        self.proc.wait(timeout=30)
        self.stderr.close()
        return peak

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_comparison(options: list[Option], spec_name: str, batch: int, task: str, dtype: str, rounds: int,
                   block_seconds: float, rng: random.Random, busy_share: float, sessions: int = 1) -> dict:
    """Blocks of every option's worker in random order, round after round; returns the per-round block
    medians and busy flags, and every worker's peak memory.

    The rounds are split over `sessions` sets of fresh workers: a process's own speed (where its arrays and
    threads landed) differs from process to process, and the spread over rounds should show that too. Each
    session runs a discarded warm-up round, then rounds until its share of quiet rounds is in, or twice as
    many rounds were tried (a busy machine)."""
    per_session = -(-rounds // sessions)
    done: list[dict] = []
    peaks: dict[str, float | None] = {}
    calls: dict[str, list[int]] = {}
    for session in range(sessions):
        workers = [Worker(o, spec_name, batch, task, dtype) for o in options]
        try:
            for w in workers:
                w.ready(block_seconds)
            mine: list[dict] = []
            attempt = -1  # round -1 is the warm-up round: every worker once, after the others, then discarded
            while attempt < 2 * per_session and sum(not r["busy"] for r in mine) < per_session:
                order = workers[:]
                rng.shuffle(order)
                record = {"session": session, "busy": False, "ms": {}, "others": {}}
                for w in order:
                    time.sleep(SETTLE_SECONDS)
                    m0, d0 = machine_cpu(), time.process_time()
                    b = w.block()
                    m1, d1 = machine_cpu(), time.process_time()
                    share = others_share(m0, m1, b["cpu_s"] + (d1 - d0))
                    record["ms"][w.option.key] = statistics.median(b["times_ms"])
                    record["others"][w.option.key] = share
                    if share is not None and share > busy_share:
                        record["busy"] = True
                if attempt >= 0:
                    mine.append(record)
                else:  # the warm-up round's times, with every other worker set up, fix the block lengths
                    for w in workers:
                        w.calibrate(min(w.call_ms, record["ms"][w.option.key]), block_seconds)
                attempt += 1
            done += mine
            for w in workers:
                peak = w.close()
                if peak is not None:
                    peaks[w.option.key] = max(peak, peaks.get(w.option.key) or 0.0)
                calls.setdefault(w.option.key, []).append(w.calls)
        finally:
            for w in workers:
                w.kill()
    return {"rounds": done, "peak_mib": peaks, "calls": calls, "wanted": per_session * sessions}


def summarize(result: dict, spec_name: str, batch: int, task: str, dtype: str, peers: list[str],
              wanted: int) -> list[dict]:
    """One row per peer (and one for the baseline): medians of the block times, the paired ratios' spread."""
    rounds = result["rounds"]
    quiet = [r for r in rounds if not r["busy"]]
    ok = enough_quiet(rounds, wanted)
    ms = {k: statistics.median([r["ms"][k] for r in quiet]) if quiet else float("nan")
          for k in (rounds[0]["ms"] if rounds else {})}
    base = {"model": spec_name, "batch": batch, "task": task, "dtype": dtype, "rounds": len(rounds),
            "quiet": len(quiet), "reliable": ok, "cnnspec_ms": ms.get("cnnspec"),
            "cnnspec_peak_mib": result["peak_mib"].get("cnnspec")}
    rows = []
    for peer in [*peers, *(["baseline"] if "baseline" in ms else [])]:
        ratios = paired_ratios(rounds, "cnnspec", peer)
        floor = paired_ratios(rounds, "gemm_floor", peer) if "gemm_floor" in ms and peer != "baseline" else []
        rows.append({**base, "peer": peer, "peer_ms": ms.get(peer), "peer_peak_mib": result["peak_mib"].get(peer),
                     "gemm_ms": ms.get("gemm_floor"), "ratio": spread(ratios), "floor_ratio": spread(floor)})
    return rows


def have(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def baseline_tree(rev: str) -> Path:
    """cnnspec/ of commit `rev` in a temporary folder (git archive: the repository is not touched)."""
    where = Path(tempfile.mkdtemp(prefix="cnnspec-baseline-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "cnnspec"], capture_output=True, check=False)
    if archive.returncode != 0:
        shutil.rmtree(where)
        raise SystemExit(f"--baseline {rev}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def quiet_check(seconds: float = 1.0) -> float | None:
    """Other processes' share of the machine over `seconds` while this benchmark does nothing."""
    m0, d0 = machine_cpu(), time.process_time()
    time.sleep(seconds)
    return others_share(m0, machine_cpu(), time.process_time() - d0)


def row_line(r: dict) -> str:
    head = f"{r['model']:12s} b{r['batch']:<3d} {r['task']:10s} {r['dtype']:7s} vs {r['peer']:11s}:"
    if not r["reliable"]:
        return f"{head} machine busy: {r['rounds'] - r['quiet']} of {r['rounds']} rounds dropped, no numbers"
    s, f = r["ratio"], r["floor_ratio"]
    text = (f"{head} {r['cnnspec_ms']:8.2f} ms / {r['peer_ms']:8.2f} ms = {s['median']:.2f}x "
            f"[IQR {s['q1']:.2f}-{s['q3']:.2f}, {s['min']:.2f}-{s['max']:.2f}]")
    if f["n"]:
        text += f"  GEMMs {r['gemm_ms']:.2f} ms = {f['median']:.2f}x"
    if r["rounds"] > r["quiet"]:
        text += f"  ({r['rounds'] - r['quiet']} of {r['rounds']} rounds busy, dropped)"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['rounds']} rounds of {QUICK['block']} s blocks; print only (docs untouched)")
    parser.add_argument("--rounds", type=int, help=f"quiet rounds per comparison (default {FULL['rounds']})")
    parser.add_argument("--sessions", type=int, help="sets of fresh worker processes the rounds are split over "
                        f"(default {FULL['sessions']}; --quick {QUICK['sessions']})")
    parser.add_argument("--block", type=float, help=f"seconds per timed block (default {FULL['block']})")
    parser.add_argument("--busy", type=float, default=BUSY_SHARE,
                        help="a round is busy when other processes used more than this share of the machine's "
                        f"CPU during one of its blocks (default {BUSY_SHARE})")
    parser.add_argument("--models", nargs="+", choices=[m for m, _ in MODELS], help="only these models")
    parser.add_argument("--tasks", nargs="+", choices=sorted({t for t, _ in TASKS} | {"evaluate"}),
                        help="only these tasks (evaluate: `cnnspec evaluate` with --backend numpy against onnxruntime)")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], help="only these dtypes")
    parser.add_argument("--baseline", metavar="REV", help="also time cnnspec of this git commit (paired, as "
                        "another option of every comparison): the 'no slower than before' rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the blocks' random order")
    parser.add_argument("--json", metavar="OUT.json", help="also write every row (and every round) as JSON")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        runtime, spec_name, batch, task, dtype = args.worker
        serve(runtime, spec_name, int(batch), task, dtype)
        return 0
    preset = QUICK if args.quick else FULL
    rounds = args.rounds or preset["rounds"]
    block = args.block or preset["block"]
    sessions = max(1, min(args.sessions or preset["sessions"], rounds))
    peers = {task: [p for p in names if have(p)] for task, names in PEERS.items()}
    here = str(ROOT)
    options_base = [Option("cnnspec", "cnnspec", here), Option("gemm_floor", "gemm_floor", here)]
    tree = baseline_tree(args.baseline) if args.baseline else None
    if tree:
        options_base.append(Option("baseline", "cnnspec", f"{tree}{os.pathsep}{here}"))
    idle = quiet_check()
    if idle is None:
        print("note: no /proc/stat; busy rounds cannot be detected on this system", file=sys.stderr)
    elif idle > args.busy:
        print(f"warning: other processes use {100 * idle:.0f}% of this machine's CPU before the start; busy "
              "rounds will be dropped (and replaced, up to as many again)", file=sys.stderr)
    rng = random.Random(args.seed)
    rows, raw, failed = [], [], []
    started = time.time()
    try:
        for spec_name, batch in MODELS:
            if args.models and spec_name not in args.models:
                continue
            for task, dtype in TASKS:
                if (args.tasks and task not in args.tasks) or (args.dtypes and dtype not in args.dtypes):
                    continue
                these = [p for p in peers[task] if not (p == "onnxruntime" and dtype == "float64")]
                # onnxruntime's CPU provider has no float64 Conv
                options = options_base + [Option(p, p, here) for p in these]
                try:
                    result = run_comparison(options, spec_name, batch, task, dtype, rounds, block, rng, args.busy,
                                            sessions)
                except RuntimeError as exc:  # a worker failed: say which and why, measure the rest
                    failed.append(f"{spec_name} {task} {dtype}")
                    print(f"{spec_name} {task} {dtype} failed: {exc}", file=sys.stderr)
                    continue
                raw.append({"model": spec_name, "batch": batch, "task": task, "dtype": dtype, **result})
                for row in summarize(result, spec_name, batch, task, dtype, these, result["wanted"]):
                    rows.append(row)
                    print(row_line(row), flush=True)
        for spec_name, samples in EVALUATE:
            if (args.models and spec_name not in args.models) or (args.tasks and "evaluate" not in args.tasks):
                continue
            for dtype in ("float32", "float64"):
                if args.dtypes and dtype not in args.dtypes:
                    continue
                options = [Option("cnnspec", "cnnspec", here), Option("onnxruntime", "cnnspec_onnxruntime", here)]
                try:
                    result = run_comparison(options, spec_name, samples, "evaluate", dtype, rounds, block, rng,
                                            args.busy, sessions)
                except RuntimeError as exc:
                    failed.append(f"{spec_name} evaluate {dtype}")
                    print(f"{spec_name} evaluate {dtype} failed: {exc}", file=sys.stderr)
                    continue
                raw.append({"model": spec_name, "batch": samples, "task": "evaluate", "dtype": dtype, **result})
                for row in summarize(result, spec_name, samples, "evaluate", dtype, ["onnxruntime"],
                                     result["wanted"]):
                    rows.append(row)
                    print(row_line(row), flush=True)
    finally:
        if tree:
            shutil.rmtree(tree, ignore_errors=True)
    minutes = (time.time() - started) / 60
    total = sum(len(r["rounds"]) for r in raw)
    dropped = sum(r["busy"] for c in raw for r in c["rounds"])
    print(busy_line(dropped, total, args.busy) + f"; {minutes:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "comparisons": raw}, indent=1, default=str))
    if not args.quick and not args.no_doc:
        meta = {"rounds": rounds, "sessions": sessions, "block": block, "busy": args.busy, "baseline": args.baseline,
                "minutes": minutes, "dropped": dropped, "total": total,
                "command": shlex.join(["python", "benchmarks/bench.py", *(sys.argv[1:] if argv is None else argv)])}
        DOC.write_text(replace_section(DOC.read_text() if DOC.exists() else "", markdown(rows, meta)))
        print(f"wrote its part of {DOC}")
    if failed:
        print(f"failed, not measured: {', '.join(failed)}", file=sys.stderr)
    return 0 if all(r["reliable"] for r in rows) and not failed else 1


def busy_line(dropped: int, total: int, busy: float) -> str:
    if busy >= 1.0:
        return f"busy rounds not detected (--busy {busy:g}): all {total} rounds kept, quiet or not"
    if dropped == 0:
        return f"machine quiet: 0 of {total} rounds dropped (other processes under {100 * busy:.0f}% of the CPU in every block)"
    return (f"machine was busy: {dropped} of {total} rounds dropped (other processes used more than "
            f"{100 * busy:.0f}% of the CPU during a block)")


# ============================================================================ docs/benchmarks.md

def replace_section(text: str, section: str) -> str:
    """`text` with the part between the BEGIN and END markers replaced by `section`; everything else (the
    title, the hand-written method notes, other benchmarks' sections) is kept byte for byte. Without the
    markers the section goes first and nothing of `text` is dropped."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(END):]
    return block + "\n\n" + text if text else block + "\n"


def _target_status(rows) -> list[str]:
    """One line per issue-13 target this run measured: the paired ratio with its spread, met or not."""
    lines = []
    for task, dtype, peer, target in TARGETS:
        row = next((r for r in rows if (r["model"], r["task"], r["dtype"], r["peer"]) == ("bench_cnn", task, dtype, peer)),
                   None)
        if row is None:
            continue
        lines.append(f"- bench-cnn {task} {dtype} vs {peer}: " + _verdict(row, target))
    for model in NO_SLOWER:
        for r in rows:
            if r["model"] == model and r["peer"] == "baseline":
                lines.append(f"- {model} {r['task']} {r['dtype']} vs the baseline engine: " + _verdict(r, 1.0))
    return lines


def _verdict(row, target: float) -> str:
    if not row["reliable"]:
        return (f"not measured: the machine was busy ({row['rounds'] - row['quiet']} of {row['rounds']} rounds "
                "dropped)")
    s, f = row["ratio"], row["floor_ratio"]
    verdict = "met" if s["median"] <= target else "not met"
    if s["q1"] <= target <= s["q3"] and s["q1"] != s["q3"]:
        verdict += ", the target inside the spread"
    text = f"**{s['median']:.2f}x** (spread {fmt_spread(s)}; target <= {target:g}x, {verdict})"
    if f["n"]:
        text += f"; the GEMMs alone are {f['median']:.2f}x"
    return text + "."


def _cell(value, fmt="{:.2f}") -> str:
    return "" if value is None else fmt.format(value)


def markdown(rows, meta) -> str:
    import numpy as np
    versions = [f"numpy {np.__version__}"]
    for module in ("onnxruntime", "torch"):
        if have(module):
            versions.append(f"{module} {__import__(module).__version__}")
    command = meta.get("command") or ("python benchmarks/bench.py"
                                      + (f" --baseline {meta['baseline']}" if meta["baseline"] else ""))
    lines = [
        "## The NumPy engine against PyTorch and onnxruntime",
        "",
        f"Written by `{command}` ({meta['minutes']:.0f} minutes; do not edit by hand). "
        f"{meta['rounds']} quiet rounds per comparison, over {meta['sessions']} sets of fresh worker processes; "
        f"in each round every option times a block of about {meta['block']:g} s of back-to-back calls in its own "
        f"long-lived process with {THREADS} threads, the blocks in random order; **ratio = cnnspec / peer within each round, median over rounds**, with the "
        "interquartile range and min–max over rounds as its spread (below 1.0 cnnspec is faster). How and why: "
        "below the table.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        + ", ".join(versions) + ". " + busy_line(meta["dropped"], meta["total"], meta["busy"]) + ".",
        "",
        "Targets (issue 13): bench-cnn's training step at or below 0.9x PyTorch in float64 and 0.85x in float32; "
        "its float32 forward within 3x of onnxruntime; the lecture CNN and LeNet-5 no slower than before the "
        "exact rewrites" + ("" if meta["baseline"] else " (measured with `--baseline REV`; not in this run)")
        + ". In this run:",
        "",
        *_target_status(rows),
        "",
        "| model | batch | task | dtype | peer | cnnspec ms | peer ms | ratio | spread: IQR (min–max) | GEMM floor "
        "ratio | quiet rounds | cnnspec peak MiB | peer peak MiB |",
        "|---|---:|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["task"] == "evaluate":
            continue
        head = f"| {r['model']} | {r['batch']} | {r['task']} | {r['dtype']} | {r['peer']} |"
        if not r["reliable"]:
            lines.append(f"{head} | | machine busy | | | {r['quiet']} of {r['rounds']} | | |")
            continue
        s, f = r["ratio"], r["floor_ratio"]
        lines.append(f"{head} {_cell(r['cnnspec_ms'])} | {_cell(r['peer_ms'])} | **{s['median']:.2f}** | "
                     f"{fmt_spread(s)} | {_cell(f['median'] if f['n'] else None)} | {r['quiet']} of {r['rounds']} | "
                     f"{_cell(r['cnnspec_peak_mib'], '{:.1f}')} | {_cell(r['peer_peak_mib'], '{:.1f}')} |")
    evaluations = [r for r in rows if r["task"] == "evaluate"]
    if evaluations:
        lines += ["", f"`cnnspec evaluate` on a data set, in batches of {EVAL_BATCH}: the NumPy engine (`--backend "
                  "numpy`) against `--backend onnxruntime` (the float32 export in onnxruntime; exporting and "
                  "creating the session included, as the command pays them; a float64 model runs in float32 "
                  "there). **speedup = NumPy engine time / onnxruntime time**, paired within rounds like the ratios "
                  "above.", "",
                  "| model | samples | dtype | NumPy engine ms | onnxruntime ms | speedup | spread: IQR (min–max) "
                  "| quiet rounds |", "|---|---:|---|---:|---:|---:|---|---:|"]
        for r in evaluations:
            head = f"| {r['model']} | {r['batch']} | {r['dtype']} |"
            if not r["reliable"]:
                lines.append(f"{head} | | machine busy | | {r['quiet']} of {r['rounds']} |")
                continue
            s = r["ratio"]
            lines.append(f"{head} {_cell(r['cnnspec_ms'], '{:.0f}')} | {_cell(r['peer_ms'], '{:.0f}')} | "
                         f"**{s['median']:.1f}x** | {fmt_spread(s)} | {r['quiet']} of {r['rounds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
