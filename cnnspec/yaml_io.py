"""Safe YAML loading that keeps every node's position and refuses YAML's silent surprises.

- Duplicate keys are errors (PyYAML keeps the last one silently).
- Scalars resolve as in YAML 1.2's core schema: `1e-3` is a float, `yes`/`no`/`on`/`off` stay strings,
  `010` is ten; only `true`/`false` are booleans and only `null`/`~`/empty are null.
- Only plain data: no Python tags, no arbitrary objects (built on SafeLoader's composer).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import DataError, Problem, SpecError

Position = tuple[int, int]  # 1-based line, column
PathKey = tuple  # ("layers", 0, "kernel")

_INT = re.compile(r"^[-+]?(?:[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}
MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
# Aliases (`*name`) may repeat a subtree; this bounds how many values they may add ("billion laughs").
MAX_ALIAS_VALUES = 100_000


class Document:
    """Loaded YAML data plus the positions of every value and mapping key, addressed by path tuples."""

    def __init__(self, data: Any, filename: str, source: str, values: dict, keys: dict):
        self.data = data
        self.filename = filename
        self.source = source
        self._values = values
        self._keys = keys

    def position(self, path: PathKey, key: bool = False) -> Position | None:
        """Position of the value at `path` (or of its key), falling back to the nearest enclosing node."""
        path = tuple(path)
        while True:
            table = self._keys if key else self._values
            if path in table:
                return table[path]
            if key and path in self._values:
                return self._values[path]
            if not path:
                return None
            path = path[:-1]
            key = False

    def sub(self, prefix: PathKey) -> "Document":
        """The part of this document under `prefix` as a Document of its own, whose positions still point
        into this file (an inline spec inside an assignment)."""
        n = len(prefix)
        data = self.data
        for part in prefix:
            data = data[part]
        return Document(data, self.filename, self.source,
                        {k[n:]: v for k, v in self._values.items() if k[:n] == tuple(prefix)},
                        {k[n:]: v for k, v in self._keys.items() if k[:n] == tuple(prefix) and len(k) > n})

    def problem(self, message: str, path: PathKey = (), key: bool = False) -> Problem:
        pos = self.position(path, key)
        return Problem(message, *(pos if pos else (None, None)))

    def error(self, problems: list[Problem], cls: type[SpecError] = SpecError) -> SpecError:
        return cls(problems, self.filename, self.source)


class _ScalarProblem(Exception):
    pass


def _scalar(node: yaml.ScalarNode) -> Any:
    value = node.value
    if node.style:  # quoted or block scalar: always a string (plain is None in PyYAML, "" in libyaml)
        return value
    if value in ("", "~", "null", "Null", "NULL"):
        return None
    if value in ("true", "True", "TRUE"):
        return True
    if value in ("false", "False", "FALSE"):
        return False
    if _INT.match(value):
        if len(value) > 100:
            raise _ScalarProblem(f"integer with {len(value)} digits is too long")
        # base 0 would reject '010'; YAML 1.2 reads it as decimal ten, not octal eight.
        return int(value, 0) if ("0o" in value or "0x" in value) else int(value, 10)
    if _FLOAT.match(value):
        if len(value) > 400:
            raise _ScalarProblem(f"number with {len(value)} characters is too long")
        return float(value)
    if value.lower() in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value.lower()]
    return value


def _pos(mark) -> Position:
    return mark.line + 1, mark.column + 1


def _expanded_sizes(root, problems: list[Problem]) -> bool:
    """Check depth, recursive aliases and alias amplification before building anything.

    A node reached twice is an alias; counting its subtree's size (and height) again for every reuse
    bounds what building (which copies aliased subtrees) will produce. Returns False when building
    is unsafe.
    """
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (values in its subtree, its height)
    active: set[int] = set()
    unique = 0

    def visit(node, depth: int, parent_mark=None) -> tuple[int, int] | None:
        nonlocal unique
        key = id(node)
        if key in active:
            problems.append(Problem("recursive YAML alias: a node contains itself", *_pos(node.start_mark)))
            return None
        if key not in memo:
            if depth > MAX_DEPTH:
                problems.append(Problem(f"YAML nesting deeper than {MAX_DEPTH} levels", *_pos(node.start_mark)))
                return None
            unique += 1
            n, height = 1, 0
            if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
                active.add(key)
                children = node.value if isinstance(node, yaml.SequenceNode) else \
                    [c for pair in node.value for c in pair]
                for child in children:
                    sub = visit(child, depth + 1, node.start_mark)
                    if sub is None:
                        active.discard(key)
                        return None
                    n, height = n + sub[0], max(height, sub[1] + 1)
                active.discard(key)
            memo[key] = (n, height)
        n, height = memo[key]
        if depth + height > MAX_DEPTH:  # an alias can put a deep subtree deeper still
            problems.append(Problem(f"YAML nesting deeper than {MAX_DEPTH} levels (through an alias)",
                                    *_pos(parent_mark or node.start_mark)))
            return None
        return n, height

    found = visit(root, 0)
    if found is None:
        return False
    total = found[0]
    if total - unique > MAX_ALIAS_VALUES:
        problems.append(Problem(f"YAML aliases expand to {total:,} values ({total - unique:,} repeated); "
                                f"the limit for repeated values is {MAX_ALIAS_VALUES:,}", 1, 1))
        return False
    return True


_FAILED = object()


def _compose_fast(text: str):
    """Compose with libyaml when PyYAML has it (about 15x faster; same nodes and positions), or _FAILED
    when it is missing or the text has any problem, which the pure-Python composer then reports."""
    cloader = getattr(yaml, "CSafeLoader", None)
    if cloader is None:
        return _FAILED
    loader = cloader(text)
    try:
        return loader.get_single_node()
    except (yaml.YAMLError, RecursionError, ValueError):
        return _FAILED
    finally:
        loader.dispose()


def loads(text: str, filename: str = "<string>") -> Document:
    """Parse YAML text into plain dict/list/scalars with positions; raise SpecError on any YAML problem."""
    problems: list[Problem] = []
    values: dict = {}
    keys: dict = {}
    root = _compose_fast(text)
    loader = None
    try:
        if root is _FAILED:  # parse again in Python for its precise, tested error messages
            loader = yaml.SafeLoader(text)
            root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context
        if context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            context += f" (started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        what = " ".join(s for s in (context, exc.problem) if s)
        if "'\\t'" in what:
            what += " (indent with spaces, not tabs)"
        line, col = _pos(mark) if mark else (None, None)
        raise SpecError([Problem(f"YAML syntax error: {what}", line, col)], filename, text) from None
    except yaml.reader.ReaderError as exc:
        # A control character or similar that YAML forbids; point at it.
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise SpecError([Problem(f"character {char!r} (U+{ord(char):04X}) is not allowed in YAML; "
                                 "is this a text file?", line, col)], filename, text) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(f"YAML error: {exc}")], filename, text) from None
    except RecursionError:
        raise SpecError([Problem(f"YAML nesting is far deeper than {MAX_DEPTH} levels", *_pos(loader.get_mark()))],
                        filename, text) from None
    finally:
        if loader is not None:
            loader.dispose()

    if root is not None and not _expanded_sizes(root, problems):
        raise SpecError(problems, filename, text)

    def build(node, path: PathKey) -> Any:
        values[path] = _pos(node.start_mark)
        if node.tag.startswith("!") or node.tag.startswith("tag:yaml.org,2002:python"):
            problems.append(Problem(f"YAML tag {node.tag!r} is not allowed; write plain values", *_pos(node.start_mark)))
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                return _scalar(node)
            except _ScalarProblem as exc:
                problems.append(Problem(str(exc), *_pos(node.start_mark)))
                return None
        if isinstance(node, yaml.SequenceNode):
            return [build(child, path + (i,)) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.MappingNode), f"unexpected YAML node {node!r}"
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem("YAML merge keys ('<<') are not supported; write the keys out",
                                        *_pos(key_node.start_mark)))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem("mapping keys must be plain names, not lists or mappings",
                                        *_pos(key_node.start_mark)))
                continue
            key = key_node.value
            if key in out or path + (key,) in keys:
                first = keys[path + (key,)]
                problems.append(Problem(f"duplicate key '{key}' (first given at line {first[0]}); "
                                        "each key may appear once", *_pos(key_node.start_mark)))
                continue
            keys[path + (key,)] = _pos(key_node.start_mark)
            out[key] = build(value_node, path + (key,))
        return out

    data = build(root, ()) if root is not None else None
    if problems:
        raise SpecError(problems, filename, text)
    return Document(data, filename, text, values, keys)


def read_text(path: str | Path, what: str = "spec") -> str:
    """Read a UTF-8 text file (a regular file of at most MAX_BYTES) with a clear SpecError for every way
    that can fail."""
    from .files import read_input
    from .text import printable

    name = printable(str(path))
    try:
        raw = read_input(path, what, MAX_BYTES)
    except DataError as exc:
        raise SpecError(str(exc).removeprefix(f"{name}: "), name) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError(f"UTF-16 text (it starts with a UTF-16 byte-order mark); save the {what} as UTF-8", name)
    if b"\x00" in raw:
        offset = raw.index(b"\x00")
        raise SpecError(f"binary data (a zero byte at offset {offset}), expected a YAML text file; "
                        f"is this the right file?", name)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError([Problem(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                                 f"save the {what} as UTF-8", line, col)], name) from None
    if not text.strip():
        raise SpecError(f"{what} file is empty", name)
    return text


def load(path: str | Path, what: str = "spec") -> Document:
    from .text import printable

    return loads(read_text(path, what), printable(str(path)))
