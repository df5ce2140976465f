"""benchmarks/bench.py: the measuring method's logic on synthetic data (paired ratios, spread, busy rounds, the
docs section it rewrites) and its workers on a tiny batch. No timing is asserted: these pass on a busy machine."""
from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402


# ---------------------------------------------------------------- the workers

@pytest.mark.parametrize("runtime", ["cnnspec", "gemm_floor"])
@pytest.mark.parametrize("task", ["forward", "train_step"])
def test_steps_run(runtime, task):
    """The GEMM floor reads the conv op's cache: an engine change can break it without any timing involved."""
    fn = bench.make_step(runtime, "bench_cnn", 4, task, "float64")
    block = bench.time_block(fn, 2)
    assert len(block["times_ms"]) == 2 and all(t > 0 for t in block["times_ms"])
    assert block["cpu_s"] >= 0 and block["wall_s"] > 0


@pytest.mark.parametrize("runtime", ["cnnspec", "cnnspec_onnxruntime"])
def test_evaluate_steps_run(runtime):
    """The fast path's comparison: `cnnspec evaluate` with either backend on a data set."""
    fn = bench.make_step(runtime, "lenet5", 20, "evaluate", "float32")
    assert fn().samples == 20


def test_the_gemm_floor_keeps_freed_memory_like_cnnspec(monkeypatch):
    """The floor is cnnspec's own: its worker runs with cnnspec's allocator setting, PyTorch's does not."""
    import cnnspec.memory
    calls = []
    monkeypatch.setattr(cnnspec.memory, "keep_freed_memory", lambda *a: calls.append(1) or True)
    bench.make_step("gemm_floor", "lenet5", 2, "forward", "float32")
    bench.make_step("cnnspec", "lenet5", 2, "forward", "float32")
    assert len(calls) == 2
    source = Path(bench.__file__).read_text()
    assert source.count("keep_freed_memory()") == 1  # called once, for cnnspec and the floor, never for peers


def test_worker_protocol():
    """The worker: ready with a call time, one block per request, its peak memory when told to quit."""
    requests = io.StringIO(json.dumps({"calls": 3}) + "\n" + json.dumps({"quit": True}) + "\n")
    out = io.StringIO()
    bench.serve("cnnspec", "lenet5", 2, "forward", "float32", inp=requests, out=out)
    ready, block, bye = [json.loads(line) for line in out.getvalue().splitlines()]
    assert ready["ready"] and ready["call_ms"] > 0
    assert len(block["times_ms"]) == 3 and block["wall_s"] >= sum(block["times_ms"]) / 1000 * 0.99
    assert bye["peak_mib"] >= 0


# ---------------------------------------------------------------- the arithmetic

def test_others_share_is_the_machine_minus_our_own_cpu():
    # 2 cores for 1 s: 2 s of capacity; the machine was busy 1.5 s, the worker and driver used 1.2 s
    assert bench.others_share((100.0, 1000.0), (101.5, 1002.0), 1.2) == pytest.approx(0.15)
    assert bench.others_share((100.0, 1000.0), (101.0, 1002.0), 1.2) == 0.0  # tick rounding: never negative
    assert bench.others_share(None, (1.0, 2.0), 0.1) is None
    assert bench.others_share((1.0, 2.0), (1.0, 2.0), 0.0) is None


def test_machine_cpu_reads_proc_stat():
    got = bench.machine_cpu()
    if not Path("/proc/stat").exists():
        assert got is None
        return
    busy, total = got
    assert 0 <= busy <= total


def _rounds(speeds, busy=()):
    """Synthetic rounds: the machine's speed drifts from round to round (the factor), cnnspec always takes 0.9
    of PyTorch's time in the same round, the GEMMs 0.4."""
    return [{"busy": i in busy, "ms": {"cnnspec": 9.0 * f, "torch": 10.0 * f, "gemm_floor": 4.0 * f}}
            for i, f in enumerate(speeds)]


def test_ratios_are_paired_within_rounds():
    rounds = _rounds([1.0, 1.3, 0.8, 2.0, 1.1])
    assert bench.paired_ratios(rounds, "cnnspec", "torch") == pytest.approx([0.9] * 5)
    s = bench.spread(bench.paired_ratios(rounds, "cnnspec", "torch"))
    assert s["median"] == pytest.approx(0.9) and s["max"] - s["min"] == pytest.approx(0, abs=1e-12)
    # Unpaired, the ratio of the medians would carry the drift between the rounds each was timed in:
    ours = sorted(r["ms"]["cnnspec"] for r in rounds[:2])
    theirs = sorted(r["ms"]["torch"] for r in rounds[2:4])
    assert ours[0] / theirs[-1] != pytest.approx(0.9)


def test_busy_rounds_are_left_out():
    rounds = _rounds([1.0, 1.0, 1.0, 1.0], busy={1, 2})
    rounds[1]["ms"]["torch"] = 50.0  # a busy round's numbers are anything
    assert bench.paired_ratios(rounds, "cnnspec", "torch") == pytest.approx([0.9, 0.9])
    assert bench.enough_quiet(rounds, 4)
    assert not bench.enough_quiet(rounds, 5)
    assert not bench.enough_quiet(_rounds([1.0] * 6, busy={0, 1, 2, 3, 4}), 6)


def test_spread():
    s = bench.spread([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s["n"], s["median"], s["q1"], s["q3"], s["min"], s["max"]) == (5, 3.0, 2.0, 4.0, 1.0, 5.0)
    assert bench.spread([0.7])["q1"] == bench.spread([0.7])["q3"] == 0.7
    assert bench.spread([])["n"] == 0
    assert bench.fmt_spread(s) == "2.00–4.00 (min–max 1.00–5.00)"


def test_summarize_marks_a_busy_comparison():
    quiet = {"rounds": _rounds([1.0, 1.2, 0.9]), "peak_mib": {"cnnspec": 10.0, "torch": 12.0}}
    rows = bench.summarize(quiet, "bench_cnn", 32, "train_step", "float64", ["torch"], 3)
    (row,) = rows
    assert row["reliable"] and row["quiet"] == 3 and row["ratio"]["median"] == pytest.approx(0.9)
    assert row["floor_ratio"]["median"] == pytest.approx(0.4)
    assert row["cnnspec_ms"] == pytest.approx(9.0) and row["peer_ms"] == pytest.approx(10.0)
    assert "0.90x" in bench.row_line(row)
    busy = {"rounds": _rounds([1.0] * 6, busy={0, 1, 2, 3, 4}), "peak_mib": {}}
    (row,) = bench.summarize(busy, "bench_cnn", 32, "train_step", "float64", ["torch"], 6)
    assert not row["reliable"]
    assert bench.row_line(row).endswith("machine busy: 5 of 6 rounds dropped, no numbers")
    table = bench.markdown([row], {"rounds": 6, "sessions": 2, "block": 0.4, "busy": 0.1, "baseline": None,
                                   "minutes": 1.0, "dropped": 5, "total": 6})
    assert "machine was busy: 5 of 6 rounds dropped" in table
    assert "| machine busy |" in table and "**" not in table.split("| model |")[1]  # no ratio printed as if quiet
    assert "not measured: the machine was busy" in table


def test_markdown_puts_the_evaluate_speedups_in_their_own_table():
    rows = bench.summarize({"rounds": _rounds([1.0, 1.0]), "peak_mib": {}}, "bench_cnn", 32, "train_step",
                           "float64", ["torch"], 2)
    fast = [{"busy": False, "ms": {"cnnspec": 1000.0 * f, "onnxruntime": 250.0 * f}} for f in (1.0, 1.2, 0.9)]
    rows += bench.summarize({"rounds": fast, "peak_mib": {}}, "bench_cnn", 3000, "evaluate", "float32",
                            ["onnxruntime"], 3)
    table = bench.markdown(rows, {"rounds": 2, "sessions": 1, "block": 0.4, "busy": 0.1, "baseline": None,
                                  "minutes": 1.0, "dropped": 0, "total": 5})
    main, speedups = table.split("`cnnspec evaluate` on a data set")
    assert "| bench_cnn | 32 | train_step | float64 | torch | 9.00 | 10.00 | **0.90** |" in main
    assert "evaluate" not in main.split("| model |")[1]
    assert "| bench_cnn | 3000 | float32 | 1000 | 250 | **4.0x** |" in speedups


def test_run_comparison_drops_rounds_the_machine_was_busy_in(monkeypatch):
    """The driver end to end with real workers on a tiny batch; /proc/stat is faked so that other processes
    take the whole machine during every fifth block."""
    reads = {"n": 0}

    def fake_machine_cpu():  # (busy, total) seconds before and after each block: 2 s of capacity per block
        k, after = divmod(reads["n"], 2)
        reads["n"] += 1
        if not after:
            return 0.0, 0.0
        return (2.0 if k % 5 == 4 else 0.0), 2.0  # every fifth block: other processes took the whole machine

    monkeypatch.setattr(bench, "machine_cpu", fake_machine_cpu)
    options = [bench.Option("cnnspec", "cnnspec", str(ROOT)), bench.Option("gemm_floor", "gemm_floor", str(ROOT))]
    result = bench.run_comparison(options, "lenet5", 2, "forward", "float32", rounds=4, block_seconds=0.01,
                                  rng=random.Random(0), busy_share=0.1, sessions=2)
    rounds = result["rounds"]
    assert sum(not r["busy"] for r in rounds) == 4 and any(r["busy"] for r in rounds)
    assert {r["session"] for r in rounds} == {0, 1}
    assert all(set(r["ms"]) == {"cnnspec", "gemm_floor"} for r in rounds)
    assert set(result["peak_mib"]) == {"cnnspec", "gemm_floor"}


# ---------------------------------------------------------------- docs/benchmarks.md

def test_target_status_reads_the_bench_cnn_rows():
    def row(model, task, dtype, peer, ratios, floor=()):
        return {"model": model, "task": task, "dtype": dtype, "peer": peer, "reliable": True, "rounds": 5,
                "quiet": 5, "ratio": bench.spread(ratios), "floor_ratio": bench.spread(list(floor))}
    rows = [row("bench_cnn", "train_step", "float64", "torch", [0.85, 0.88, 0.9, 0.95], [0.4]),
            row("bench_cnn", "forward", "float32", "onnxruntime", [3.5, 3.6], [2.0]),
            row("lenet5", "forward", "float32", "onnxruntime", [1.0]),
            row("lenet5", "train_step", "float64", "baseline", [0.97, 1.0, 1.01])]
    status = bench._target_status(rows)
    assert status[0].startswith("- bench-cnn train_step float64 vs torch: **0.89x** (spread 0.87–0.91 "
                                "(min–max 0.85–0.95); target <= 0.9x, met, the target inside the spread)")
    assert status[0].endswith("the GEMMs alone are 0.40x.")
    assert status[1].startswith("- bench-cnn forward float32 vs onnxruntime: **3.55x**") and "not met" in status[1]
    assert status[2].startswith("- lenet5 train_step float64 vs the baseline engine: **1.00x**")
    assert len(status) == 3


def test_targets_are_issue_13s():
    assert bench.TARGETS == [("train_step", "float64", "torch", 0.9), ("train_step", "float32", "torch", 0.85),
                             ("forward", "float32", "onnxruntime", 3.0)]
    assert set(bench.NO_SLOWER) == {"lecture_cnn", "lenet5"}


def test_the_section_rewrite_keeps_everything_else():
    doc = (f"# Benchmarks\n\nintro\n\n{bench.BEGIN}\nold table\n{bench.END}\n\n## How it is measured\n\nprose\n\n"
           "## Grading service under load\n\n| a | b |\n")
    new = bench.replace_section(doc, "## Engine\n\nnew table\n")
    assert new == doc.replace("old table", "## Engine\n\nnew table")
    assert bench.replace_section(new, "## Engine\n\nnew table") == new  # idempotent
    bare = "# Benchmarks\n\n## Grading service under load\n\ntext\n"
    assert bench.replace_section(bare, "x").endswith(bare)  # no markers: nothing dropped
    assert bench.replace_section("", "x") == f"{bench.BEGIN}\nx\n{bench.END}\n"


def test_the_doc_has_the_markers_and_other_sections_outside_them():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    start, end = text.index(bench.BEGIN), text.index(bench.END)
    assert start < end
    assert text.index("## Grading service under load") > end
    assert "0.9x PyTorch in float64" in text and "0.85x in float32" in text and "3x of onnxruntime" in text


def test_profile_ops_prints_every_op_of_the_step(capsys):
    """Every op of the model's plan (fused ops of the exact rewrites included) gets its forward and backward."""
    import cnnspec
    import profile_ops
    from cnnspec.ops import OPS
    from cnnspec.ops.fused import FUSED
    before, fused_before = dict(OPS), dict(FUSED)
    profile_ops.main(["--batch", "4", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bench_cnn, batch 4, float64 train_step:")
    timed = {tuple(line.split()[:2]) for line in lines[1:]}
    plan = {step.type for step in cnnspec.compile(ROOT / "specs" / "bench_cnn.yaml").plan.steps}
    assert {"conv2d", "dense", "flatten"} <= plan
    for op in plan:
        assert {(op, "forward"), (op, "backward")} <= timed, op
    assert OPS == before and FUSED == fused_before  # the timers are taken off again


def test_rewrite_shares_adds_the_passes_one_at_a_time(capsys):
    """One row per pass, cumulative in PASSES order, after the plan without rewrites; the plans it times are
    the ones those passes build (bench-cnn: both relu moves, then both batch-norm moves)."""
    import rewrite_shares
    from cnnspec import rewrite
    graph = __import__("cnnspec").load_spec(ROOT / "specs" / "bench_cnn.yaml").graph
    assert not rewrite_shares.plan_with(graph, ()).applied
    assert rewrite_shares.plan_with(graph, rewrite.PASSES).applied == rewrite.build(graph).applied
    rewrite_shares.main(["--batch", "2", "--rounds", "2", "--block", "0.001", "--dtypes", "float32"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "bench_cnn, batch 2, float32 train_step (2 rounds):"
    labels = [line.split()[0] + (" " + line.split()[1] if line.split()[0] == "+" else "") for line in lines[1:5]]
    assert labels == ["no", *(f"+ {p.__name__}" for p in rewrite.PASSES)]
    assert "1.000x of no rewrite" in lines[1] and all("this pass:" in line for line in lines[2:5])
    assert lines[5].startswith("bench_cnn, batch 2, float32 forward")


def test_a_tiny_full_run_rewrites_only_its_part_of_the_doc(monkeypatch, tmp_path, capsys):
    """bench.py end to end (2 rounds of short blocks, busy rounds kept: no timing is judged here) on a copy of
    docs/benchmarks.md: its part is replaced, everything else stays byte for byte."""
    doc = tmp_path / "benchmarks.md"
    original = (ROOT / "docs" / "benchmarks.md").read_text()
    doc.write_text(original)
    monkeypatch.setattr(bench, "DOC", doc)
    monkeypatch.setattr(bench, "PEERS", {"forward": ["onnxruntime"], "train_step": []})
    code = bench.main(["--models", "lenet5", "--tasks", "forward", "--dtypes", "float32", "--rounds", "2",
                       "--sessions", "1", "--block", "0.02", "--busy", "1.0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "lenet5       b64  forward    float32 vs onnxruntime:" in out and "busy rounds not detected (--busy 1): all 2 rounds kept" in out
    new = doc.read_text()
    start, end = original.index(bench.BEGIN), original.index(bench.END) + len(bench.END)
    assert new.startswith(original[:start]) and new.endswith(original[end:])
    part = new[start:len(new) - (len(original) - end)]
    assert part.startswith(bench.BEGIN) and part.endswith(bench.END)
    assert "| lenet5 | 64 | forward | float32 | onnxruntime |" in part and "2 of 2" in part
    assert "Not yet measured" not in part
    assert "Written by `python benchmarks/bench.py --models lenet5 --tasks forward" in part  # the command, as run


@pytest.mark.parametrize("script", ["profile_ops.py", "rewrite_shares.py"])
def test_the_profiling_scripts_refuse_a_bad_spec_with_its_message_and_exit_2(tmp_path, script):
    import subprocess
    bad = tmp_path / "bad.yaml"
    bad.write_text("cnnspec: 1\nname: x\n")
    for spec in (bad, tmp_path / "missing.yaml"):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), str(spec)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert str(spec) in done.stderr and done.stdout == ""
