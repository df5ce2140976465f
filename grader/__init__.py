"""cnnspec's grader: check students' hand-computed answers against the engine and explain the mistakes.

Public API:
    load_assignment(path) -> Assignment          (raises cnnspec.SpecError with file:line:col)
    load_submission(path) -> Submission          (never executes anything: no pickle)
    grade(assignment, submission, ...) -> SubmissionResult
    Grader(assignment)                            grades many submissions, one reference per variant
    render(results, fmt, audience=...) -> str     text | json | junit | gradescope | markdown

See docs/grading.md.
"""
from __future__ import annotations

from .assignment import Assignment, load_assignment, loads_assignment
from .grade import Grader, grade
from .report import SubmissionResult, render
from .submission import Submission, load_submission

__all__ = ["Assignment", "load_assignment", "loads_assignment", "Submission", "load_submission", "Grader",
           "grade", "SubmissionResult", "render"]
