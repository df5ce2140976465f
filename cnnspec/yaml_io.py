"""Safe YAML loading that keeps every node's position and refuses YAML's silent surprises.

- Duplicate keys are errors (PyYAML keeps the last one silently).
- Scalars resolve as in YAML 1.2's core schema: `1e-3` is a float, `yes`/`no`/`on`/`off` stay strings,
  `010` is ten; only `true`/`false` are booleans and only `null`/`~`/empty are null.
- Only plain data: no Python tags, no arbitrary objects (built from the safe parser's events).
- Hostile text costs time and memory in proportion to its size: nesting, alias repeats and the
  positions recorded are bounded.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import DataError, Problem, SpecError, shorten

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
            if not key and path in self._keys:  # a value past the recording budget: at its key
                return self._keys[path]
            if not path:
                return None
            path = path[:-1]
            key = False

    def sub(self, prefix: PathKey) -> "Document":
        """The part of this document under `prefix` as a Document of its own, whose positions still point
        into this file (an inline spec inside an assignment)."""
        n, prefix = len(prefix), tuple(prefix)
        data = self.data
        for part in prefix:
            data = data[part]
        values, keys = self._grouped(n)
        return Document(data, self.filename, self.source,
                        {k[n:]: v for k, v in values.get(prefix, ())},
                        {k[n:]: v for k, v in keys.get(prefix, ()) if len(k) > n})

    def _grouped(self, n: int) -> tuple[dict, dict]:
        """Positions grouped by their first n path parts, built once per n: sub() for every one of many
        inline specs costs the size of each, not of the whole file each time."""
        cache = self.__dict__.setdefault("_groups", {})
        if n not in cache:
            groups = []
            for table in (self._values, self._keys):
                g: dict = {}
                for k, v in table.items():
                    if len(k) >= n:
                        g.setdefault(k[:n], []).append((k, v))
                groups.append(g)
            cache[n] = tuple(groups)
        return cache[n]

    def problem(self, message: str, path: PathKey = (), key: bool = False) -> Problem:
        pos = self.position(path, key)
        return Problem(message, *(pos if pos else (None, None)))

    def error(self, problems: list[Problem], cls: type[SpecError] = SpecError) -> SpecError:
        return cls(problems, self.filename, self.source)


class _ScalarProblem(Exception):
    pass


_WORDS = {"": None, "~": None, "null": None, "Null": None, "NULL": None, "true": True, "True": True,
          "TRUE": True, "false": False, "False": False, "FALSE": False}
_MISSING = object()


def _scalar(value: str, style: str | None = None) -> Any:
    """A scalar's value as YAML 1.2's core schema reads it (`style` is the event's: quoted and block scalars,
    whatever their text, are strings)."""
    if style:  # quoted or block scalar: always a string (plain is None in PyYAML, "" in libyaml)
        return value
    word = _WORDS.get(value, _MISSING)
    if word is not _MISSING:
        return word
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


# Positions recorded in full: every value and mapping key, in document order, up to this many. Past it (a
# list of a million numbers would otherwise cost a path and a position per number, ten times the numbers
# themselves) only the keys of mappings at the first two levels are recorded, so an answer or a weight
# that follows a long list still has its line: a value is then placed at its key, anything else at the
# nearest enclosing value or key that was recorded.
MAX_POSITIONS = 100_000
# Problems kept from one file (in document order); the rest are counted.
MAX_PROBLEMS = 1_000
# libyaml's syntax errors are reported with the pure-Python parser's (tested, more precise) messages when
# the text is at most this long; a longer text would take a minute to parse again in Python.
REPARSE_LIMIT = 256 * 1024
_CACHE_SIZE = 10_000  # distinct short plain scalars remembered per load ('1', '0.5', 'relu')
_MERGE_TAG = "tag:yaml.org,2002:merge"
_DISCARD = object()  # the value of a refused key (merge, duplicate or complex key): built, then dropped
_ROOT, _ITEM, _VALUE, _KEY = range(4)


def _bad_tag(tag: str | None) -> bool:
    """An explicit local (`!name`) or Python tag; None and '!' mean untagged, `!!str` and the like are ignored."""
    return tag is not None and tag != "!" and (tag.startswith("!") or tag.startswith("tag:yaml.org,2002:python"))


def _copy(value: Any) -> Any:
    """A deep copy of plain data (an alias's value; its height is at most MAX_DEPTH)."""
    if type(value) is list:
        return [_copy(v) for v in value]
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    return value


class _Frame:
    """A sequence or mapping whose end event has not come yet. `path`: where it and its children are
    recorded, or None when they are not (past the budget, or in a dropped value); `keep`: whether problems
    inside are reported (not in a dropped value); `key`/`key_path`: a mapping's key waiting for its value."""
    __slots__ = ("data", "is_map", "role", "path", "keep", "pos", "mark", "start_total", "height", "anchor",
                 "vlog_at", "klog_at", "key", "key_path", "want_key", "bad_tag")


class _Anchor:
    """What an alias to `&name` repeats: the value (a scalar's text, tag and style, as a key may use them),
    how many values and levels it adds, and where its positions sit in the logs."""
    __slots__ = ("value", "size", "height", "mark", "raw", "style", "tag", "depth", "vlog", "klog")


def _build(loader, text: str, filename: str) -> Document:
    """Plain data and positions straight from the parser's events (no node tree), in one pass, with the
    work and memory of a value bounded by its text: depth, alias repeats and recorded positions are capped.

    A YAML syntax error propagates as the parser raised it; everything else raises SpecError."""
    problems: list[Problem] = []
    values: dict = {}
    keys: dict = {}
    anchors: dict[str, _Anchor] = {}
    open_anchors: dict[str, _Frame] = {}
    vlog: list = []  # paths recorded in `values` (and `keys`) while an anchor is open: an alias repeats them
    klog: list = []
    cache: dict = {}
    stack: list[_Frame] = []
    total = repeated = npos = 0  # values (aliases count what they repeat), repeated ones, recorded positions
    nproblems = 0
    root = None
    root_mark = None
    seen_document = False

    def fatal(message: str, pos: Position):
        raise SpecError([Problem(message, *pos)], filename, text)

    def counted() -> bool:
        """Count a problem; whether to keep it (only the first MAX_PROBLEMS are written out)."""
        nonlocal nproblems
        nproblems += 1
        return nproblems <= MAX_PROBLEMS

    def record(path: tuple, mark) -> None:
        nonlocal npos
        npos += 1
        values[path] = (mark.line + 1, mark.column + 1)
        if open_anchors:
            vlog.append(path)

    def resolve(raw: str, style, tag, mark, keep: bool) -> Any:
        if _bad_tag(tag):
            if keep and counted():
                problems.append(Problem(f"YAML tag {shorten(tag)!r} is not allowed; write plain values", *_pos(mark)))
            return None
        if style:
            return raw
        value = cache.get(raw, _MISSING)
        if value is _MISSING:
            try:
                value = _scalar(raw)
            except _ScalarProblem as exc:
                if keep and counted():
                    problems.append(Problem(str(exc), *_pos(mark)))
                return None
            if len(raw) <= 32 and len(cache) < _CACHE_SIZE:
                cache[raw] = value
        return value

    def check_depth(mark) -> None:
        if len(stack) > MAX_DEPTH:
            fatal(f"YAML nesting deeper than {MAX_DEPTH} levels", _pos(mark))

    def open_anchor(name: str, mark) -> None:
        old = anchors.get(name) or open_anchors.get(name)
        if old is not None:
            line = old.mark.line + 1
            fatal(f"duplicate YAML anchor '&{name}' (first defined at line {line}); each anchor may be defined "
                  f"once", _pos(mark))

    def take_key(top: _Frame, raw: str, style, tag, mark) -> None:
        """A scalar mapping key: refuse merge keys and duplicates, else remember it for the value to come."""
        nonlocal npos
        top.want_key = False
        top.key = top.key_path = _DISCARD
        if tag == _MERGE_TAG or (tag is None and not style and raw == "<<"):
            if top.keep and counted():
                problems.append(Problem("YAML merge keys ('<<') are not supported; write the keys out", *_pos(mark)))
        elif raw in top.data:
            if top.keep and counted():
                first = keys.get(top.path + (raw,)) if top.path is not None else None
                given = f"first given at line {first[0]}" if first else "given before in this mapping"
                problems.append(Problem(f"duplicate key '{shorten(raw)}' ({given}); each key may appear once",
                                        *_pos(mark)))
        else:
            top.key = raw = sys.intern(raw)  # a key repeated in a thousand mappings is stored once
            parent = top.path
            if parent is None or (npos >= MAX_POSITIONS and len(parent) >= 2):
                top.key_path = None
            else:
                top.key_path = path = parent + (raw,)
                npos += 1
                keys[path] = (mark.line + 1, mark.column + 1)
                if open_anchors:
                    klog.append(path)

    def refuse_key(top: _Frame, tag, mark) -> None:
        """A list, mapping or alias of one as a mapping key: its value is dropped."""
        top.want_key = False
        top.key = top.key_path = _DISCARD
        if top.keep and counted():
            problems.append(Problem("YAML merge keys ('<<') are not supported; write the keys out"
                                    if tag == _MERGE_TAG else "mapping keys must be plain names, not lists or mappings",
                                    *_pos(mark)))

    def place(value: Any, mark, height: int, recorded: bool):
        """Put a finished value into its parent. A container's position was recorded at its start; a
        scalar's or an alias's (at `mark`) is recorded here, and its path returned (None when it is not)."""
        nonlocal root
        if not stack:
            root = value
            if not recorded:
                record((), mark)
            return ()
        top = stack[-1]
        if top.height <= height:
            top.height = height + 1
        if top.is_map:
            top.want_key = True
            if top.key is _DISCARD:
                return None
            top.data[top.key] = value
            path = top.key_path
        else:
            top.data.append(value)
            path = top.path + (len(top.data) - 1,) if top.path is not None and npos < MAX_POSITIONS else None
        if recorded or path is None or npos >= MAX_POSITIONS:
            return None
        record(path, mark)
        return path

    def push(ev, is_map: bool) -> None:
        nonlocal total, root_mark
        mark = ev.start_mark
        check_depth(mark)
        total += 1
        f = _Frame()
        f.data, f.is_map, f.mark, f.pos = ({} if is_map else []), is_map, mark, (mark.line + 1, mark.column + 1)
        f.start_total, f.height, f.anchor, f.key, f.want_key, f.bad_tag = total, 0, ev.anchor, None, True, False
        if not stack:
            f.role, f.path, f.keep = _ROOT, (), True
            root_mark = mark
        else:
            top = stack[-1]
            if top.is_map and top.want_key:
                f.role, f.path, f.keep = _KEY, None, False
                refuse_key(top, ev.tag, mark)
            elif top.is_map:
                f.role, f.keep = _VALUE, top.keep and top.key is not _DISCARD
                f.path = top.key_path if f.keep else None
            else:
                f.role, f.keep = _ITEM, top.keep
                f.path = top.path + (len(top.data),) if top.path is not None and npos < MAX_POSITIONS else None
        if f.path is not None and (npos < MAX_POSITIONS or f.role == _ROOT):
            record(f.path, mark)
        if f.role != _KEY and _bad_tag(ev.tag):
            if f.keep and counted():
                problems.append(Problem(f"YAML tag {shorten(ev.tag)!r} is not allowed; write plain values", *f.pos))
            f.keep, f.bad_tag, f.path = False, True, None
        if ev.anchor is not None:
            open_anchor(ev.anchor, mark)
            open_anchors[ev.anchor] = f
            f.vlog_at, f.klog_at = len(vlog), len(klog)
        stack.append(f)

    def pop() -> None:
        f = stack.pop()
        height = f.height or (1 if total > f.start_total else 0)
        value = None if f.bad_tag else f.data
        if f.anchor is not None:
            a = _Anchor()
            a.value, a.size, a.height, a.mark, a.raw, a.style, a.tag = value, total - f.start_total + 1, height, \
                f.mark, None, None, None
            a.depth, a.vlog, a.klog = len(f.path or ()), (f.vlog_at, len(vlog)), (f.klog_at, len(klog))
            del open_anchors[f.anchor]
            anchors[f.anchor] = a
        if f.role == _KEY:
            top = stack[-1]
            top.height = max(top.height, height + 1)
            return
        place(value, None, height, recorded=True)

    def alias(ev) -> None:
        nonlocal total, repeated, npos
        name, mark = ev.anchor, ev.start_mark
        if name in open_anchors:
            fatal("recursive YAML alias: a node contains itself", _pos(mark))
        a = anchors.get(name)
        if a is None:
            fatal(f"undefined YAML alias '*{name}': an alias repeats a value marked '&{name}' before it", _pos(mark))
        if len(stack) + a.height > MAX_DEPTH:  # an alias can put a deep value deeper still
            fatal(f"YAML nesting deeper than {MAX_DEPTH} levels (through an alias)",
                  stack[-1].pos if stack else _pos(mark))
        total += a.size
        repeated += a.size
        top = stack[-1] if stack else None
        if top is not None and top.is_map and top.want_key:
            if a.raw is not None:
                take_key(top, a.raw, a.style, a.tag, mark)
            else:
                refuse_key(top, None, mark)
            top.height = max(top.height, a.height + 1)
            return
        dropped = top is not None and top.is_map and top.key is _DISCARD
        keep = top is None or top.keep and not dropped
        if repeated > MAX_ALIAS_VALUES or dropped:
            value = None  # too many: reported when the stream ends
        elif a.raw is not None:
            value = resolve(a.raw, a.style, a.tag, a.mark, keep)
        else:
            value = _copy(a.value)
        path = place(value, mark, a.height, recorded=False)
        if path is not None and repeated <= MAX_ALIAS_VALUES:
            n = a.depth
            for table, log, (start, end) in ((values, vlog, a.vlog), (keys, klog, a.klog)):
                for p in log[start:end]:
                    new = path + p[n:]
                    table[new] = table[p]
                    npos += 1
                    if open_anchors:
                        log.append(new)

    scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
    seq_start, seq_end = yaml.SequenceStartEvent, yaml.SequenceEndEvent
    map_start, map_end = yaml.MappingStartEvent, yaml.MappingEndEvent
    get_event = loader.get_event
    # The top frame when its children may be placed directly (no depth check needed): the hot path of
    # long lists and mappings, for scalars without tag or anchor; `place` and `take_key` do the rest.
    fast = fast_data = None
    fast_seq = False
    while True:
        ev = get_event()
        cls = ev.__class__
        if cls is scalar_event:
            if fast is not None and ev.anchor is None and ev.tag is None:
                raw = ev.value
                total += 1
                if not fast_seq and fast.want_key:
                    take_key(fast, raw, ev.style, None, ev.start_mark)
                    continue
                if ev.style:
                    value = raw
                else:
                    value = cache.get(raw, _MISSING)
                    if value is _MISSING:
                        try:
                            value = _scalar(raw)
                        except _ScalarProblem:  # reported unless the value is dropped
                            value = resolve(raw, None, None, ev.start_mark,
                                            fast.keep and (fast_seq or fast.key is not _DISCARD))
                        else:
                            if len(raw) <= 32 and len(cache) < _CACHE_SIZE:
                                cache[raw] = value
                if fast_seq:
                    fast_data.append(value)
                    if fast.path is not None and npos < MAX_POSITIONS:
                        record(fast.path + (len(fast_data) - 1,), ev.start_mark)
                else:
                    fast.want_key = True
                    if fast.key is not _DISCARD:
                        fast_data[fast.key] = value
                        if fast.key_path is not None and npos < MAX_POSITIONS:
                            record(fast.key_path, ev.start_mark)
                continue
            mark = ev.start_mark
            check_depth(mark)
            total += 1
            if not stack:
                root_mark = mark
            top = stack[-1] if stack else None
            raw, style, tag = ev.value, ev.style, ev.tag
            if ev.anchor is not None:
                open_anchor(ev.anchor, mark)
                a = anchors[ev.anchor] = _Anchor()
                a.value, a.size, a.height, a.mark, a.raw, a.style, a.tag = None, 1, 0, mark, raw, style, tag
                a.depth, a.vlog, a.klog = 0, (0, 0), (0, 0)
            if top is not None and top.is_map and top.want_key:
                take_key(top, raw, style, tag, mark)
                continue
            keep = top is None or top.keep and (not top.is_map or top.key is not _DISCARD)
            place(resolve(raw, style, tag, mark, keep), mark, 0, recorded=False)
            continue
        if cls is seq_start or cls is map_start:
            push(ev, cls is map_start)
        elif cls is seq_end or cls is map_end:
            pop()
        elif cls is alias_event:
            alias(ev)
            continue
        elif cls is yaml.DocumentStartEvent:
            if seen_document:
                raise SpecError([_syntax_problem(yaml.composer.ComposerError(
                    "expected a single document in the stream", root_mark or ev.start_mark,
                    "but found another document", ev.start_mark))], filename, text)
            seen_document = True
            continue
        elif cls is yaml.StreamEndEvent:
            break
        else:
            continue
        fast = stack[-1] if stack and len(stack) <= MAX_DEPTH else None
        if fast is not None:
            fast_data, fast_seq = fast.data, not fast.is_map

    if repeated > MAX_ALIAS_VALUES:
        raise SpecError([Problem(f"YAML aliases expand to {total:,} values ({repeated:,} repeated); "
                                 f"the limit for repeated values is {MAX_ALIAS_VALUES:,}", 1, 1)], filename, text)
    if problems:
        raise SpecError(problems, filename, text, count=nproblems)
    return Document(root, filename, text, values, keys)


# What PyYAML and libyaml say when a line is indented wrongly (a key too far right or left).
_INDENTATION_SIGNS = ("mapping values are not allowed here", "expected <block end>", "did not find expected key",
                      "could not find expected ':'", "did not find expected '-' indicator")


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    context = exc.context
    if context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
        context += f" (started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    what = " ".join(s for s in (context, exc.problem) if s)
    if "'\\t'" in what:
        what += " (indent with spaces, not tabs)"
    elif any(sign in what for sign in _INDENTATION_SIGNS):
        what += (" (check the indentation on this line and the one above: keys of one mapping start in the same "
                 "column, a nested mapping or list further right, with spaces; after 'key:' on the same line a "
                 "value cannot itself be 'other: value')")
    line, col = _pos(mark) if mark else (None, None)
    return Problem(f"YAML syntax error: {what}", line, col)


def _parse_error(exc: Exception, text: str, filename: str) -> SpecError:
    """The SpecError for an exception the YAML parser raised."""
    if isinstance(exc, yaml.MarkedYAMLError):
        return SpecError([_syntax_problem(exc)], filename, text)
    if isinstance(exc, (yaml.reader.ReaderError, UnicodeError)):
        # A control character or similar that YAML forbids (libyaml counts bytes, not characters: find it).
        found = yaml.reader.Reader.NON_PRINTABLE.search(text)
        if found is not None:
            at = found.start()
            line, col = text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1
            char = found.group()
            return SpecError([Problem(f"character {char!r} (U+{ord(char):04X}) is not allowed in YAML; "
                                      "is this a text file?", line, col)], filename, text)
    return SpecError([Problem(f"YAML error: {exc}")], filename, text)


def _load_with(loader_class, text: str, filename: str) -> Document:
    loader = loader_class(text)
    try:
        return _build(loader, text, filename)
    finally:
        loader.dispose()


def loads(text: str, filename: str = "<string>") -> Document:
    """Parse YAML text into plain dict/list/scalars with positions; raise SpecError on any YAML problem.

    libyaml parses when PyYAML has it (about 15x faster, same events and positions); a text it refuses is
    parsed again in Python, for its precise, tested messages, unless it is longer than REPARSE_LIMIT."""
    cloader = getattr(yaml, "CSafeLoader", None)
    if cloader is not None:
        try:
            return _load_with(cloader, text, filename)
        except SpecError:
            raise
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: a lone surrogate cannot be encoded for libyaml
            if len(text) > REPARSE_LIMIT:
                raise _parse_error(exc, text, filename) from None
    try:
        return _load_with(yaml.SafeLoader, text, filename)
    except yaml.YAMLError as exc:
        raise _parse_error(exc, text, filename) from None


def read_text(path: str | Path, what: str = "spec", max_bytes: int | None = None) -> str:
    """Read a UTF-8 text file (a regular file of at most `max_bytes`, default MAX_BYTES) with a clear
    SpecError for every way that can fail."""
    from .files import read_input
    from .text import printable

    name = printable(str(path))
    try:
        raw = read_input(path, what, MAX_BYTES if max_bytes is None else max_bytes)
    except DataError as exc:
        raise SpecError(str(exc).removeprefix(f"{name}: "), name) from None
    return decode_text(raw, name, what)


def decode_text(raw: bytes, name: str, what: str = "spec") -> str:
    """A YAML file's bytes -> its text, with a SpecError (named `name`) for UTF-16, binary data, bytes that
    are not UTF-8 (at line:col) and an empty file. read_text's checks, for bytes that are not in a file."""
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
