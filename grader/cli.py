"""`cnnspec grade` and `cnnspec assignment check|template|solution|bundle`: parse, call grader, write, exit code.

Exit codes: 0 every question of every submission passed (or the command succeeded); 1 some question did not
pass (or `assignment check` found reference answers that cannot be graded); 2 invalid input or usage
(assignment, submission file, options). Output files are written atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from cnnspec.errors import DataError
from cnnspec.text import printable

GRADE_EPILOG = """examples:
  cnnspec grade specs/assignments/lecture.yaml answers.yaml
  cnnspec grade hw1.yaml submissions/*.yaml --gradebook grades.csv --format junit -o grades.xml
  cnnspec grade hw1.yaml /autograder/submission --format gradescope -o /autograder/results/results.json

formats: text (terminal; colours only on a TTY without NO_COLOR), json (the result model of
docs/grading.md), junit (JUnit XML for CI), gradescope (results.json, one submission), markdown
(e.g. >> $GITHUB_STEP_SUMMARY).
Student-facing by default: hidden questions, and after_due_date ones before the due date, show no
expected value, message or score. --instructor shows everything.

exit codes: 0 every question passed, 1 some question did not pass (student-facing: of the questions
shown), 2 invalid input (the other
submissions are still graded and reported), 3 an internal error in cnnspec while grading some
submission (the others are still graded, reported and in the gradebook)."""

ASSIGNMENT_EPILOG = """examples:
  cnnspec assignment check specs/assignments/lecture.yaml
  cnnspec assignment template hw1.yaml --student s123 -o s123.yaml
  cnnspec assignment solution hw1.yaml --student s123 -o solution.yaml
  cnnspec assignment bundle hw1.yaml -o autograder.zip

exit codes: 0 success, 1 check found questions whose reference cannot be graded, 2 invalid input."""


def register(sub) -> None:
    p = sub.add_parser(
        "grade", help="grade submissions against an assignment (exit 0 all pass, 1 some fail, 2 invalid input)",
        description="Grade one or more submissions (YAML, JSON or .npz answers; a directory holding one answers "
        "file) against an assignment. Reference answers come from the cnnspec engine, computed once per "
        "student variant. Wrong answers are explained (classic mistakes by name) and graded against the "
        "student's own upstream answers too (error carried forward).",
        epilog=GRADE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("assignment", metavar="ASSIGNMENT", help="assignment file (.yaml)")
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="answers files (.yaml/.yml/.json/.npz) or directories holding one")
    p.add_argument("--format", choices=("text", "json", "junit", "gradescope", "markdown"), default="text",
                   help="report format (default: text)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--gradebook", metavar="CSV", help="also write a CSV gradebook: one row per submission, "
                   "one column per question (all scores, instructor data)")
    p.add_argument("--student", metavar="ID", help="grade as this student (chooses the data variant; overrides "
                   "the submission's student_id; one submission only)")
    p.add_argument("--instructor", action="store_true", help="show everything: expected values and results "
                   "of hidden and after_due_date questions")
    p.add_argument("--as-of", metavar="DATE", help="judge after_due_date visibility as if it were DATE "
                   "(ISO 8601; default: now)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    p.set_defaults(func=run_grade)

    a = sub.add_parser(
        "assignment", help="check an assignment; write a template, a solution or a Gradescope autograder",
        description="Work with assignment files: validate them (with every reference answer computed), write a "
        "student's template (questions and that student's data, no answers), write the solution (a submission "
        "that scores 100%), or build a Gradescope autograder zip.",
        epilog=ASSIGNMENT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = a.add_subparsers(title="subcommands", metavar="SUBCOMMAND")

    def common(sp, output_help):
        sp.add_argument("assignment", metavar="ASSIGNMENT", help="assignment file (.yaml)")
        sp.add_argument("--student", metavar="ID", help="the student whose data variant to use (needed when the "
                        "assignment has per-student data)")
        sp.add_argument("-o", "--output", metavar="OUT", help=output_help)

    sp = asub.add_parser("check", help="validate an assignment and compute every reference answer",
                         description="Validate the assignment (keys, types, models, data, question targets, "
                         "depends_on) with file:line:col errors, then compute every reference answer for one "
                         "variant (--student, or a sample student) and report non-finite ones.")
    common(sp, "write the check summary to OUT")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")
    sp.set_defaults(func=run_check)

    sp = asub.add_parser("template", help="write a student's answer template (no answers)",
                         description="Write a YAML answers template: every question with its text, points and the "
                         "expected form of the answer, plus the student's data and the model specs as comments. "
                         "It never contains an answer. Large data arrays are written as .npy files next to OUT.")
    common(sp, "write the template to OUT (default: stdout)")
    sp.set_defaults(func=run_template)

    sp = asub.add_parser("solution", help="write the full solution (a submission scoring 100%%)",
                         description="Write every reference answer of one variant as a submission (instructor "
                         "data: it contains hidden answers too).")
    common(sp, "write the solution to OUT (default: stdout; .json and .npz by extension)")
    sp.set_defaults(func=run_solution)

    sp = asub.add_parser("bundle", help="build a Gradescope autograder zip (setup.sh, run_autograder)",
                         description="Build a Gradescope autograder: setup.sh installs cnnspec (from this source "
                         "tree, or --wheel), run_autograder grades /autograder/submission into "
                         "/autograder/results/results.json. The assignment and every file it references are "
                         "included.")
    sp.add_argument("assignment", metavar="ASSIGNMENT", help="assignment file (.yaml)")
    sp.add_argument("-o", "--output", metavar="ZIP", help="zip to write (default: <assignment name>-autograder.zip)")
    sp.add_argument("--wheel", metavar="WHEEL", help="install cnnspec from this wheel instead of the source tree")
    sp.add_argument("--from-pypi", action="store_true", help="install cnnspec==<this version> from PyPI in "
                    "setup.sh instead of bundling it")
    sp.set_defaults(func=run_bundle)

    def no_subcommand(args):
        a.print_help(sys.stderr)
        return 2

    a.set_defaults(func=no_subcommand)


# ---------------------------------------------------------------------------- helpers


def _write(path, text: str | bytes) -> None:
    from cnnspec.files import atomic_write

    def write(tmp):
        if isinstance(text, bytes):
            Path(tmp).write_bytes(text)
        else:
            Path(tmp).write_text(text, encoding="utf-8")

    atomic_write(path, write)


def _emit(args, text: str) -> None:
    if args.output:
        _write(args.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _now(args):
    if not getattr(args, "as_of", None):
        return None
    from .assignment import parse_due_date
    try:
        return parse_due_date(args.as_of)
    except ValueError:
        raise DataError(f"--as-of: expected an ISO 8601 date like 2025-01-31T12:00:00+00:00, got {args.as_of!r}") \
            from None


# ---------------------------------------------------------------------------- grade


def run_grade(args: argparse.Namespace) -> int:
    from cnnspec.progress import progress, use_color

    from .assignment import load_assignment
    from .grading import Grader, flag_copying
    from .report import render, view

    if args.format == "gradescope" and len(args.submissions) != 1:
        raise DataError(f"--format gradescope writes one results.json: give one submission, got "
                        f"{len(args.submissions)}")
    if args.student and len(args.submissions) != 1:
        raise DataError("--student applies to one submission; each of several submissions names its own "
                        "student_id")
    from cnnspec.files import check_outputs
    check_outputs({"-o": args.output, "--gradebook": args.gradebook})  # before any work: nothing half-written
    now = _now(args)
    assignment = load_assignment(args.assignment)
    grader = Grader(assignment, now=now)
    results = []
    paths = progress(args.submissions, desc="grading") if len(args.submissions) > 1 else args.submissions
    for path in paths:
        results.append(grader.grade_file(path, args.student))
    copy_check_failed = None
    if len(results) > 1:  # answers matching another student's reference: staff view and gradebook only
        try:
            results = flag_copying(results, grader)
        except Exception as exc:  # noqa: BLE001 - a staff extra never costs the batch its report
            copy_check_failed = f"{type(exc).__name__}: {printable(str(exc))[:200]}"
    color = args.format == "text" and not args.output and use_color(sys.stdout)
    text = render(results, args.format, audience="instructor" if args.instructor else "student", color=color,
                  now=now)
    _emit(args, text)
    if args.gradebook:
        _write(args.gradebook, gradebook_csv(results, assignment))
    crashed = [r for r in results if r.internal_error]
    bad = [r for r in results if r.error and not r.internal_error]
    # The exit code is as student-facing as the report: it says nothing about questions the student may not see.
    seen = results if args.instructor else view(results, "student", now)
    failed = [r for r in seen if not r.error and any(q.status not in ("passed", "withheld") for q in r.questions)]
    if not args.quiet and (len(results) > 1 or args.output):
        print(f"graded {len(results)} submission(s): {len(results) - len(bad) - len(failed) - len(crashed)} passed "
              f"every question, {len(failed)} did not, {len(bad)} unreadable"
              + (f", {len(crashed)} not graded (internal error)" if crashed else ""), file=sys.stderr)
    for r in bad + crashed:
        print(r.error if r.error.startswith(str(r.submission)) else f"{r.submission}: {r.error}", file=sys.stderr)
    if copy_check_failed:
        print(f"internal error in the check for copying between students ({copy_check_failed}); the results above "
              "are reported without it; this is a bug in cnnspec, please report it", file=sys.stderr)
    if crashed or copy_check_failed:
        from cnnspec.cli import EXIT_INTERNAL
        return EXIT_INTERNAL
    if bad:
        return 2
    return 1 if failed else 0


def _cell(text: str) -> str:
    """Text a student controls (id, file name, error) as a CSV cell spreadsheets will not run as a formula
    (OWASP CSV injection): a leading = + - @ tab or CR gets a quote mark in front."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def gradebook_csv(results, assignment) -> str:
    """One row per submission: id, file, variant, score, max, percent, error, possible_copying (whose reference
    answers its wrong answers match: 's101: logits, loss'), then each question's score."""
    from .report import copying_summary

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    ids = [q.id for q in assignment.questions]
    w.writerow(["student_id", "submission", "variant", "score", "max_score", "percent", "error", "possible_copying",
                *ids])
    for r in results:
        scores = {q.id: q.score for q in r.questions}
        w.writerow([_cell(r.student_id or ""), _cell(str(r.submission)), _cell(r.variant or ""), f"{r.score:g}",
                    f"{r.max_score:g}", f"{r.percent:g}", _cell(r.error or ""), _cell(copying_summary(r)),
                    *(f"{scores[i]:g}" if scores.get(i) is not None else "" for i in ids)])
    return buf.getvalue()


# ---------------------------------------------------------------------------- assignment subcommands


def run_check(args: argparse.Namespace) -> int:
    import json

    from .assignment import load_assignment
    from .tools import check_assignment

    a = load_assignment(args.assignment)
    report = check_assignment(a, args.student)
    if args.json:
        text = json.dumps(report, indent=2) + "\n"
    else:
        bad = [q for q in report["questions"] if not q["ok"]]
        verdict = "ok" if not bad else f"{len(bad)} question{'s' if len(bad) != 1 else ''} cannot be graded"
        n_models = len(a.refs)
        variant = (f"per-student data, checked with student {report['student_id']}" if a.has_variants
                   else "the same data for everyone")
        lines = [f"{printable(str(args.assignment))}: {verdict} ({a.name}: {len(a.questions)} question"
                 f"{'s' if len(a.questions) != 1 else ''}, {a.max_score:g} point{'s' if a.max_score != 1 else ''}, "
                 f"{n_models} model{'s' if n_models != 1 else ''}, {variant})"]
        for q in report["questions"]:
            flag = "" if q["ok"] else f"  PROBLEM: {q['problem']}"
            lines.append(f"  {q['number']:>2}. {q['id']:<16} {q['kind']:<18} {q['points']:g} pt{'s' if q['points'] != 1 else ' '}"
                         f"  {q['visibility']}"
                         f"{'  <- ' + ', '.join(q['depends_on']) if q['depends_on'] else ''}{flag}")
        text = "\n".join(lines) + "\n"
    _emit(args, text)
    return 0 if all(q["ok"] for q in report["questions"]) else 1


def run_template(args: argparse.Namespace) -> int:
    from .assignment import load_assignment
    from .tools import template

    a = load_assignment(args.assignment)
    text, arrays = template(a, args.student, Path(args.output) if args.output else None)
    if arrays and not args.output:
        raise DataError("this template has large data arrays, written as .npy files next to it: give -o FILE")
    if arrays:   # the template and its data files are written together, or none of them (write_files)
        import io

        import numpy as np

        from cnnspec.files import check_outputs, write_files

        check_outputs({"-o": args.output, **{f"data file {p.name}": p for p in arrays}})
        files = {}
        for path, array in arrays.items():
            buf = io.BytesIO()
            np.save(buf, array)
            files[path] = buf.getvalue()
        write_files({**files, Path(args.output): text})
    else:
        _emit(args, text)
    if args.output:
        extra = f" and {len(arrays)} data file{'s' if len(arrays) != 1 else ''} next to it" if arrays else ""
        print(f"wrote the answer template {printable(args.output)}{extra}{_whose(a, args.student)}", file=sys.stderr)
    return 0


def _whose(a, student) -> str:
    """', with the data of student X' for per-student assignments (the sample student when none was given)."""
    if not a.has_variants:
        return ""
    from .tools import SAMPLE_STUDENT
    if student:
        return f", with the data of student {printable(student)}"
    return (f", with the data of the sample student '{SAMPLE_STUDENT}' (per-student data: give --student ID for "
            "a real student's)")


def run_solution(args: argparse.Namespace) -> int:
    from .assignment import load_assignment
    from .tools import solution_npz, solution_text

    a = load_assignment(args.assignment)
    out = args.output
    if out and out.lower().endswith(".npz"):
        _write(out, solution_npz(a, args.student))
    else:
        _emit(args, solution_text(a, args.student, as_json=bool(out and out.lower().endswith(".json"))))
    if out or a.has_variants:
        where = f"wrote the solution {printable(out)}" if out else "the solution above is"
        print(f"{where} (instructor data: it includes hidden answers){_whose(a, args.student)}", file=sys.stderr)
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    from .assignment import load_assignment
    from .tools import bundle

    a = load_assignment(args.assignment)
    out = args.output or f"{a.name}-autograder.zip"
    data, notes = bundle(a, wheel=args.wheel, from_pypi=args.from_pypi)
    _write(out, data)
    for n in notes:
        print(n, file=sys.stderr)
    print(f"wrote {printable(out)}: upload it as the Gradescope autograder (setup.sh, run_autograder)", file=sys.stderr)
    return 0


__all__ = ["register", "run_grade", "run_check", "run_template", "run_solution", "run_bundle"]
