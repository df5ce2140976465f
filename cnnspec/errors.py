"""User-facing errors. Every one is a ValueError subclass that carries where in the user's file it happened.

A user's mistake is an exception that says what was received, what is valid, and where; the CLI prints
`str(error)` and exits 2. Bugs in cnnspec itself are assertions, never these.
"""
from __future__ import annotations

import re
from array import array
from dataclasses import dataclass

SNIPPET_WIDTH = 100
MAX_RENDERED = 50  # problems shown per file; the rest are counted ("and 7,950 more problems")
MAX_MESSAGE = 2_000  # characters a problem's message keeps (the middle of a longer one is cut)
# What str.splitlines() splits on, so a SpecError numbers lines as it always has.
_LINE_BREAK = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_OTHER_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def shorten(text: str, limit: int = 100) -> str:
    """User text as a message quotes it: whole when short, else its start and its length (a key of a
    million characters, or one repeated by YAML aliases, must not make a million-character message)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _printable(text: str, replacement: str | None = None) -> str:
    """`text` with every character a terminal would act on (control characters, escapes, lone surrogates)
    replaced: by `replacement`, or else by its Python escape. Costs the length of `text`."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else (replacement or repr(c)[1:-1]) for c in text)


class SourceLines:
    """The lines of a source text, numbered as str.splitlines() numbers them, found lazily without copying
    the text: rendering a problem on a line costs its snippet, not the whole line or the whole file.

    Text whose lines end in "\\n" or "\\r\\n" only (nearly all) is searched with str.count in chunks, at C
    speed; other text is scanned once for its line breaks, as far as the last line asked for."""

    def __init__(self, source: str):
        self.source = source
        self._simple = _OTHER_BREAKS.search(source) is None
        self._at = (0, 0)  # (line index, its start offset) of the last line found: problems come in order
        self._starts = array("q", [0])  # general text: start offset of each line found so far,
        self._ends = array("q")  # and its end (before the line break)
        self._breaks = None if self._simple else _LINE_BREAK.finditer(source)
        self._done = False
        self._count: int | None = None

    def __bool__(self) -> bool:
        return bool(self.source)  # any text has a line

    def __len__(self) -> int:
        if self._count is None:
            if self._simple:
                text = self.source
                self._count = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
            else:
                self._scan(None)
                self._count = len(self._ends)
        return self._count

    def _scan(self, count: int | None) -> None:
        """General text: find line breaks until `count` lines are known (None: all of them)."""
        while not self._done and (count is None or len(self._ends) < count):
            found = next(self._breaks, None)
            if found is None:
                self._done = True
                if self._starts[-1] < len(self.source):
                    self._ends.append(len(self.source))
                else:
                    self._starts.pop()  # a final line break does not start an empty line
            else:
                self._ends.append(found.start())
                self._starts.append(found.end())

    def clamp(self, line: int) -> int:
        """The index of 1-based `line`, or of the last line when the text has fewer (what min(line, len)
        - 1 gives, without counting every line of a long text)."""
        if line < 1:
            return line - 1 + len(self)
        if self._simple:
            return line - 1 if self._start(line - 1) is not None else len(self) - 1
        self._scan(line)
        return min(line, len(self._ends)) - 1

    def _start(self, index: int) -> int | None:
        """Simple text: the start offset of line `index`, or None past the last line."""
        text = self.source
        line, offset = self._at if index >= self._at[0] else (0, 0)
        step = 1 << 16
        while line < index:  # pass whole chunks of lines, halving the chunk near the line wanted
            end = min(offset + step, len(text))
            passed = text.count("\n", offset, end)
            if line + passed < index:
                if end == len(text):
                    return None
                line, offset = line + passed, end
            elif step > 64:
                step //= 2
            else:
                for _ in range(index - line):
                    offset = text.index("\n", offset) + 1
                line = index
        if offset >= len(text) and (index or not text):
            return None  # after the final line break: no line there
        self._at = (line, offset)
        return offset

    def _bounds(self, index: int) -> tuple[int, int]:
        if index < 0:
            index += len(self)
        if self._simple:
            start = self._start(index) if index >= 0 else None
            if start is None:
                raise IndexError("line index out of range")
            end = self.source.find("\n", start)
            end = len(self.source) if end < 0 else end
            return start, (end - 1 if end > start and self.source[end - 1] == "\r" else end)
        self._scan(index + 1)
        if not 0 <= index < len(self._ends):
            raise IndexError("line index out of range")
        return self._starts[index], self._ends[index]

    def length(self, index: int) -> int:
        start, end = self._bounds(index)
        return end - start

    def span(self, index: int, start: int, stop: int) -> str:
        """Characters start:stop of a line (without its line break)."""
        begin, end = self._bounds(index)
        return self.source[min(begin + start, end):min(begin + stop, end)]

    def __getitem__(self, index: int) -> str:
        begin, end = self._bounds(index)
        return self.source[begin:end]


@dataclass(frozen=True)
class Problem:
    """One mistake: a message and, when known, its 1-based line and column in `source`."""

    message: str
    line: int | None = None
    col: int | None = None

    def __post_init__(self):
        message = self.message
        if isinstance(message, str) and len(message) > MAX_MESSAGE:  # whatever it quotes, a message stays small
            cut = f" [... {len(message) - MAX_MESSAGE:,} characters cut ...] "
            object.__setattr__(self, "message", message[:MAX_MESSAGE * 2 // 3] + cut + message[-(MAX_MESSAGE // 3):])

    def render(self, filename: str, lines: "list[str] | SourceLines | None") -> str:
        """`file:line:col: message`, then the line (a window of SNIPPET_WIDTH around the column when it is
        long) and a caret; costs the message and the snippet, however long the line."""
        # Messages quote the user's text; control characters in it are shown escaped, not sent to a terminal.
        message = "\n".join(_printable(part) for part in self.message.split("\n"))
        if self.line is None:
            return f"{filename}: {message}"
        head = f"{filename}:{self.line}:{self.col or 1}: {message}"
        if not lines:
            return head
        # A parser error at end of input points one line past the text: show the last line.
        if isinstance(lines, SourceLines):
            index = lines.clamp(self.line)
            size, cut = lines.length(index), lambda a, b: lines.span(index, a, b)
        else:
            line = lines[min(self.line, len(lines)) - 1].rstrip("\n")
            size, cut = len(line), lambda a, b: line[a:b]
        col = max(self.col or 1, 1)
        # The window is cut from the raw line first: expandtabs(1) makes each tab one space, and each
        # unprintable character becomes one '?', so columns are the same before and after cleaning.
        if size > SNIPPET_WIDTH:  # a long line (inline weights): show a window around the column
            start = max(0, min(col - SNIPPET_WIDTH // 2, size - SNIPPET_WIDTH))
            text = ("..." if start else "") + _clean(cut(start, start + SNIPPET_WIDTH)) + \
                ("..." if start + SNIPPET_WIDTH < size else "")
            col = col - start + (3 if start else 0)
        else:
            text = _clean(cut(0, size))
        caret = " " * (col - 1) + "^"
        return f"{head}\n    {text}\n    {caret}"


def _clean(text: str) -> str:
    """A source snippet safe for a terminal: tabs as one space, no control characters (one '?' each)."""
    return _printable(text.expandtabs(1), "?")


class CnnspecError(ValueError):
    """Base class of every error caused by a user's input (spec, data, weights, assignment, submission)."""


class SpecError(CnnspecError):
    """One or more problems in a YAML file (spec or assignment), each with file:line:col and a caret snippet."""

    def __init__(self, problems: list[Problem] | str, filename: str = "<string>", source: str | None = None,
                 count: int | None = None):
        """`problems`: all of them, or the first ones when `count` says how many there are in all (a
        hostile file can have millions; the YAML reader keeps the first few thousand)."""
        if isinstance(problems, str):
            problems = [Problem(problems)]
        assert problems, "SpecError needs at least one problem"
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.col or 0))
        self.count = max(count or 0, len(self.problems))  # problems in all, shown or not
        self.filename = _printable(str(filename))  # a file name can print no escape and no fake line
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        """The first MAX_RENDERED problems by position, each with its snippet, then how many more there are."""
        lines = SourceLines(self.source) if self.source is not None else None
        shown = self.problems[:MAX_RENDERED]
        body = "\n".join(p.render(self.filename, lines) for p in shown)
        more = self.count - len(shown)
        if more:
            body += f"\nand {more:,} more problem{'' if more == 1 else 's'}"
        if self.count > 1:
            body += f"\n{self.count:,} errors in {self.filename}"
        return body


class ShapeError(SpecError):
    """A spec that is well-formed but whose shapes cannot work (kernel larger than input, mismatched add, ...)."""


class DataError(CnnspecError):
    """Arrays given by the user (inputs, targets, weights, answers) that are unreadable or do not fit."""
