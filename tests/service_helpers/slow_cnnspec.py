"""A test-only entry point: `cnnspec serve` or `cnnspec worker` whose grading function sleeps first, so a test can
kill the process while a submission is being graded (in a request, or in a job).

    python tests/service_helpers/slow_cnnspec.py --grade-delay SECONDS serve|worker [their options]

The production commands have no such switch: the grading function is injected through run_serve/run_worker's
`grade` argument (Service(grade=...)), which only this file passes.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--grade-delay":
        print("usage: slow_cnnspec.py --grade-delay SECONDS serve|worker ...", file=sys.stderr)
        return 2
    delay = float(argv[1])
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the checkout under test
    from cnnspec.cli import build_parser
    from grader.service import grading

    def slow_grade(lv, filename, payload, key, now):
        time.sleep(delay)
        return grading.grade_payload(lv, filename, payload, key, now)

    args = build_parser().parse_args(argv[2:])
    if args.func.__name__ not in ("run_serve", "run_worker"):
        print("slow_cnnspec.py runs only serve and worker", file=sys.stderr)
        return 2
    return int(args.func(args, grade=slow_grade) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
