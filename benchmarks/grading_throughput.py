"""Batch-grading throughput: submissions per second on the lecture assignment (and on a per-student one).

    python benchmarks/grading_throughput.py            # 500 generated submissions
    python benchmarks/grading_throughput.py --n 2000 --json

Generates N YAML submissions in a temporary folder (a mix of correct answers, the lecture's slips, classic
mistakes, carried-forward errors and random wrong numbers), then times:
  - in-process: Grader.grade_file over every file (load + grade + diagnose), one reference per variant;
  - end to end: `cnnspec grade ASSIGNMENT files... --format json --gradebook` in this process (rendering
    and writing included);
  - per-student data (bn_pool_ce.yaml): every submission has its own variant, so each needs its own
    reference (a forward/backward pass and two optimizer runs).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grader  # noqa: E402
from cnnspec.cli import main  # noqa: E402
from grader.tools import solution_text  # noqa: E402

LECTURE = ROOT / "specs" / "assignments" / "lecture.yaml"
BN = ROOT / "specs" / "assignments" / "bn_pool_ce.yaml"
EXAMPLES = ROOT / "tests" / "grader_data" / "lecture"


def make_lecture_submissions(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    bases = [(EXAMPLES / f"{k}.yaml").read_text() for k in ("correct", "lecture_slips", "classic_mistakes",
                                                             "carried_forward")]
    paths = []
    for i in range(n):
        text = bases[i % len(bases)].replace("student_id: s00", f"student_id: b{i}-")
        if rng.random() < 0.3:  # a random wrong output and loss: exercises comparison and every detector
            text += f"\ny_hat: {rng.uniform(0, 1):.4f}\nloss: {rng.uniform(0, 10):.4f}\n"
            text = _dedupe(text)
        p = folder / f"sub{i:04d}.yaml"
        p.write_text(text)
        paths.append(p)
    return paths


def _dedupe(text: str) -> str:
    """Keep the last value of each key (the generated override wins)."""
    lines, seen = [], {}
    for line in text.splitlines():
        key = line.split(":", 1)[0] if ":" in line and not line.startswith("#") else None
        if key in seen:
            lines[seen[key]] = None
        if key:
            seen[key] = len(lines)
        lines.append(line)
    return "\n".join(line for line in lines if line is not None) + "\n"


def bench(n: int) -> dict:
    out = {"submissions": n}
    a = grader.load_assignment(LECTURE)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_lecture_submissions(folder, n)
        g = grader.Grader(a)
        t0 = time.perf_counter()
        results = [g.grade_file(p) for p in paths]
        dt = time.perf_counter() - t0
        out["lecture_in_process_per_s"] = round(n / dt, 1)
        out["lecture_references_computed"] = len(g._refs)
        out["lecture_mean_score"] = round(sum(r.score for r in results) / n, 3)
        t0 = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            code = main(["grade", str(LECTURE), *map(str, paths), "--format", "json", "--gradebook",
                         str(folder / "grades.csv"), "-q"])
        dt = time.perf_counter() - t0
        assert code in (0, 1), code
        out["lecture_cli_end_to_end_per_s"] = round(n / dt, 1)

        bn = grader.load_assignment(BN)
        m = max(n // 5, 10)
        bn_paths = []
        for i in range(m):
            p = folder / f"bn{i:04d}.yaml"
            p.write_text(solution_text(bn, f"student{i}"))
            bn_paths.append(p)
        gb = grader.Grader(bn)
        t0 = time.perf_counter()
        for p in bn_paths:
            gb.grade_file(p)
        dt = time.perf_counter() - t0
        out["per_student_submissions"] = m
        out["per_student_in_process_per_s"] = round(m / dt, 1)
    return out


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="number of lecture submissions (default 500)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = p.parse_args()
    res = bench(args.n)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"lecture assignment, {res['submissions']} submissions (references computed: "
          f"{res['lecture_references_computed']}, mean score {res['lecture_mean_score']}):")
    print(f"  in-process grading:       {res['lecture_in_process_per_s']:8.1f} submissions/s")
    print(f"  cnnspec grade end to end: {res['lecture_cli_end_to_end_per_s']:8.1f} submissions/s")
    print(f"per-student assignment (bn_pool_ce), {res['per_student_submissions']} students, one reference each:")
    print(f"  in-process grading:       {res['per_student_in_process_per_s']:8.1f} submissions/s")


if __name__ == "__main__":
    run()
