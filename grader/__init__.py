"""cnnspec's grader: check students' hand-computed answers against the engine and explain the mistakes.

Public API:
    load_assignment(path) -> Assignment          (raises cnnspec.SpecError with file:line:col)
    load_submission(path) -> Submission          (never executes anything: no pickle)
    parse_submission(data, name) -> Submission    the same from an upload's bytes (Grader.grade_bytes grades them)
    grade(assignment, submission, ...) -> SubmissionResult
    Grader(assignment)                            grades many submissions, one reference per variant
    render(results, fmt, audience=...) -> str     text | json | junit | gradescope | markdown
    for_student(result, now) -> SubmissionResult  the student's view (withheld questions emptied)
    flag_copying(results, grader) -> results      answers matching another student's reference (staff view)
    find_copying(results, grader) -> matches      the same, without changing anything
    question_text(question, assignment) -> str    a question's text as reports show it
    template(assignment, student, out)            a student's answers template (tools.template)

See docs/grading.md.
"""
from __future__ import annotations

import importlib

# Imported on first use, so `cnnspec check` (whose parser also registers the grader's commands) stays light.
_LAZY = {
    "Assignment": "assignment", "load_assignment": "assignment", "loads_assignment": "assignment",
    "Grader": "grading", "grade": "grading", "flag_copying": "grading", "find_copying": "grading",
    "question_text": "grading",
    "SubmissionResult": "report", "render": "report", "for_student": "report",
    "template": "tools",
    "Submission": "submission", "load_submission": "submission", "parse_submission": "submission",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'grader' has no attribute {name!r}")


__all__ = list(_LAZY)
