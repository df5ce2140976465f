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

from .errors import Problem, SpecError

Position = tuple[int, int]  # 1-based line, column
PathKey = tuple  # ("layers", 0, "kernel")

_INT = re.compile(r"^[-+]?(?:[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}
MAX_BYTES = 16 * 1024 * 1024


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

    def problem(self, message: str, path: PathKey = (), key: bool = False) -> Problem:
        pos = self.position(path, key)
        return Problem(message, *(pos if pos else (None, None)))

    def error(self, problems: list[Problem], cls: type[SpecError] = SpecError) -> SpecError:
        return cls(problems, self.filename, self.source)


def _scalar(node: yaml.ScalarNode) -> Any:
    value = node.value
    if node.style is not None:  # quoted or block scalar: always a string
        return value
    if value in ("", "~", "null", "Null", "NULL"):
        return None
    if value in ("true", "True", "TRUE"):
        return True
    if value in ("false", "False", "FALSE"):
        return False
    if _INT.match(value):
        # base 0 would reject '010'; YAML 1.2 reads it as decimal ten, not octal eight.
        return int(value, 0) if ("0o" in value or "0x" in value) else int(value, 10)
    if _FLOAT.match(value):
        return float(value)
    if value.lower() in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value.lower()]
    return value


def _pos(mark) -> Position:
    return mark.line + 1, mark.column + 1


def loads(text: str, filename: str = "<string>") -> Document:
    """Parse YAML text into plain dict/list/scalars with positions; raise SpecError on any YAML problem."""
    problems: list[Problem] = []
    values: dict = {}
    keys: dict = {}
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(s for s in (exc.context, exc.problem) if s)
        line, col = _pos(mark) if mark else (None, None)
        raise SpecError([Problem(f"YAML syntax error: {what}", line, col)], filename, text) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(f"YAML error: {exc}")], filename, text) from None

    def build(node, path: PathKey, depth: int) -> Any:
        if depth > 64:
            problems.append(Problem("YAML nesting deeper than 64 levels", *_pos(node.start_mark)))
            return None
        values[path] = _pos(node.start_mark)
        if node.tag.startswith("!") or node.tag.startswith("tag:yaml.org,2002:python"):
            problems.append(Problem(f"YAML tag {node.tag!r} is not allowed; write plain values", *_pos(node.start_mark)))
            return None
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.MappingNode), f"unexpected YAML node {node!r}"
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem("YAML merge keys ('<<') are not supported; write the keys out",
                                        *_pos(key_node.start_mark)))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem("mapping keys must be plain names", *_pos(key_node.start_mark)))
                continue
            key = key_node.value
            if key in out:
                first = keys[path + (key,)]
                problems.append(Problem(f"duplicate key '{key}' (first given at line {first[0]}); "
                                        "each key may appear once", *_pos(key_node.start_mark)))
                continue
            keys[path + (key,)] = _pos(key_node.start_mark)
            out[key] = build(value_node, path + (key,), depth + 1)
        return out

    data = build(root, (), 0) if root is not None else None
    if problems:
        raise SpecError(problems, filename, text)
    return Document(data, filename, text, values, keys)


def read_text(path: str | Path, what: str = "spec") -> str:
    """Read a UTF-8 text file with a clear SpecError for every way that can fail."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise SpecError(f"{what} file not found", name)
    if p.is_dir():
        raise SpecError(f"is a directory, expected a {what} file (.yaml)", name)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise SpecError(f"{what} file is {size} bytes; the limit is {MAX_BYTES} bytes", name)
        raw = p.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read {what} file: {exc.strerror or exc}", name) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError([Problem(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                                 f"save the {what} as UTF-8", line, None)], name) from None
    if not text.strip():
        raise SpecError(f"{what} file is empty", name)
    return text


def load(path: str | Path, what: str = "spec") -> Document:
    return loads(read_text(path, what), str(path))
