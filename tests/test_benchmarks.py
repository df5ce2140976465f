"""benchmarks/bench.py stays runnable: its GEMM floor reads the conv op's cache, so an engine change can
break it without any timing being involved. These run one repeat in process; no timing is asserted."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench  # noqa: E402


@pytest.mark.parametrize("runtime", ["cnnspec", "gemm_floor"])
@pytest.mark.parametrize("task", ["forward", "train_step"])
def test_workers_run(runtime, task):
    result = bench.worker(runtime, "bench_cnn", 4, task, "float64", 1)
    assert result["median_ms"] > 0 and result["min_ms"] <= result["median_ms"]


def test_target_status_reads_the_bench_cnn_rows():
    rows = [{"model": "bench_cnn", "task": "train_step", "dtype": "float64", "peer": "torch", "ratio": 0.9,
             "gemm_ms": 4.0, "peer_ms": 10.0},
            {"model": "bench_cnn", "task": "forward", "dtype": "float32", "peer": "onnxruntime", "ratio": 5.0,
             "gemm_ms": 1.5, "peer_ms": 1.0},
            {"model": "lenet5", "task": "forward", "dtype": "float32", "peer": "onnxruntime", "ratio": 1.0,
             "gemm_ms": 0.1, "peer_ms": 1.0}]
    status = bench._target_status(rows)
    assert status == [
        "- bench-cnn train_step float64 vs torch: **0.90x** (target <= 1.0x, met); the GEMMs alone are 0.40x.",
        "- bench-cnn forward float32 vs onnxruntime: **5.00x** (target <= 2.0x, not met); the GEMMs alone are 1.50x.",
    ]
    assert bench._target_status(rows[2:]) == []


def test_profile_ops_prints_every_op_of_the_step(capsys):
    import profile_ops
    from cnnspec.ops import OPS
    before = dict(OPS)
    profile_ops.main(["--batch", "4", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bench_cnn, batch 4, float64 train_step:")
    timed = {tuple(line.split()[:2]) for line in lines[1:]}
    for op in ("conv2d", "batchnorm", "relu", "maxpool", "flatten", "dense"):
        assert {(op, "forward"), (op, "backward")} <= timed
    assert OPS == before  # the timers are taken off again
