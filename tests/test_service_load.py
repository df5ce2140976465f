"""benchmarks/service_load.py stays runnable, bounded and loopback-only: a tiny rush end to end (no timing asserted;
the real numbers are in docs/benchmarks.md), and its arrival schedule."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from service_helpers import ROOT, pg_available  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import service_load  # noqa: E402


def test_arrivals_are_seeded_and_inside_the_window():
    a = service_load.arrivals(500, 10.0, "poisson", 7)
    assert a == service_load.arrivals(500, 10.0, "poisson", 7) and a == sorted(a)
    assert len(a) == 500 and 0.0 <= a[0] and a[-1] < 10.0
    u = service_load.arrivals(4, 2.0, "uniform", 0)
    assert u == [0.0, 0.5, 1.0, 1.5]


def test_every_upload_differs_and_requests_go_to_loopback_only():
    base = b"# header\nstudent_id: s002\ny_hat: 0.38\n"
    one, two = service_load.answers_of(1, 0, base), service_load.answers_of(1, 1, base)
    assert one != two and b"student_id: s00001" in one and b"s002" not in one
    data = service_load.request_bytes("/x", 8000, "tok", "k", one)
    assert b"Host: 127.0.0.1:8000" in data and b"Connection: close" in data
    assert service_load.HOST == "127.0.0.1"
    assert b"Connection: close" not in service_load.request_bytes("/x", 8000, "tok", "k", one, keep_alive=True)


@pytest.mark.skipif(not pg_available(), reason="PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
def test_a_tiny_rush_runs_end_to_end_and_counts_every_submission(tmp_path):
    out = tmp_path / "rush.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "service_load.py"), "--students", "6", "--seconds",
                        "2", "--rate", "6", "--web-processes", "1", "--max-minutes", "3", "--json", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(Path(out).read_text())
    assert result["submissions"] == result["accepted"] == result["stored"] == result["graded"] == result["grades"] == 12
    assert result["errors"] == 0 and result["graded_in_request"] == 12
    assert "| 12 | 6 | 6/s for 2 s (poisson) | 1 |" in r.stdout and "load average" in r.stdout


@pytest.mark.skipif(not pg_available(), reason="PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
def test_the_variations_run_per_student_data_browser_sessions_and_metrics_scrapes(tmp_path):
    out = tmp_path / "rush.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "service_load.py"), "--students", "4", "--seconds",
                        "2", "--rate", "4", "--web-processes", "1", "--max-minutes", "3", "--assignment",
                        "per-student", "--browser-share", "0.5", "--scrape-metrics", "0.5", "--json", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(Path(out).read_text())
    assert result["submissions"] == result["accepted"] == result["graded"] == result["grades"] == 8
    assert result["graded_in_request"] == 8 and result["errors"] == 0      # sessions' submits are graded too
    assert result["assignment"] == "per-student" and result["browser_share"] == 0.5
    assert result["metrics"]["scrapes"] >= 2 and result["metrics"]["errors"] == 0
    assert "2 of 4 students from the web page" in r.stdout
