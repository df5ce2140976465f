"""User-facing errors. Every one is a ValueError subclass that carries where in the user's file it happened.

A user's mistake is an exception that says what was received, what is valid, and where; the CLI prints
`str(error)` and exits 2. Bugs in cnnspec itself are assertions, never these.
"""
from __future__ import annotations

from dataclasses import dataclass

SNIPPET_WIDTH = 100


@dataclass(frozen=True)
class Problem:
    """One mistake: a message and, when known, its 1-based line and column in `source`."""

    message: str
    line: int | None = None
    col: int | None = None

    def render(self, filename: str, lines: list[str] | None) -> str:
        # Messages quote the user's text; control characters in it are shown escaped, not sent to a terminal.
        message = "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in self.message)
        if self.line is None:
            return f"{filename}: {message}"
        head = f"{filename}:{self.line}:{self.col or 1}: {message}"
        if not lines:
            return head
        # A parser error at end of input points one line past the text: show the last line.
        text = lines[min(self.line, len(lines)) - 1].rstrip("\n").expandtabs(1)
        text = "".join(c if c.isprintable() else "?" for c in text)  # no control characters on a terminal
        col = max(self.col or 1, 1)
        if len(text) > SNIPPET_WIDTH:  # a long line (inline weights): show a window around the column
            start = max(0, min(col - SNIPPET_WIDTH // 2, len(text) - SNIPPET_WIDTH))
            text = ("..." if start else "") + text[start:start + SNIPPET_WIDTH] + \
                ("..." if start + SNIPPET_WIDTH < len(text) else "")
            col = col - start + (3 if start else 0)
        caret = " " * (col - 1) + "^"
        return f"{head}\n    {text}\n    {caret}"


class CnnspecError(ValueError):
    """Base class of every error caused by a user's input (spec, data, weights, assignment, submission)."""


class SpecError(CnnspecError):
    """One or more problems in a YAML file (spec or assignment), each with file:line:col and a caret snippet."""

    def __init__(self, problems: list[Problem] | str, filename: str = "<string>", source: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        assert problems, "SpecError needs at least one problem"
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.col or 0))
        self.filename = filename
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        lines = self.source.splitlines() if self.source is not None else None
        body = "\n".join(p.render(self.filename, lines) for p in self.problems)
        if len(self.problems) > 1:
            body += f"\n{len(self.problems)} errors in {self.filename}"
        return body


class ShapeError(SpecError):
    """A spec that is well-formed but whose shapes cannot work (kernel larger than input, mismatched add, ...)."""


class DataError(CnnspecError):
    """Arrays given by the user (inputs, targets, weights, answers) that are unreadable or do not fit."""
