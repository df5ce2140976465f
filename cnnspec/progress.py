"""A minimal progress bar that only draws on an interactive terminal.

CI logs have no terminal: when stderr is not a TTY, or CI / NO_PROGRESS is set, nothing is drawn and the
iterable passes through untouched. No colours, no cursor tricks beyond carriage return.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def enabled(stream=None) -> bool:
    stream = stream or sys.stderr
    if os.environ.get("CI") or os.environ.get("NO_PROGRESS"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(items: Iterable[T], total: int | None = None, desc: str = "", stream=None) -> Iterator[T]:
    """Yield from `items`, drawing `desc [#####.....] k/total` on stderr at most 10 times a second."""
    stream = stream or sys.stderr
    if not enabled(stream):
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    last = 0.0
    k = 0
    width = 30

    def draw():
        if total:
            filled = int(width * k / total)
            stream.write(f"\r{desc} [{'#' * filled}{'.' * (width - filled)}] {k}/{total}")
        else:
            stream.write(f"\r{desc} {k}")
        stream.flush()

    try:
        for item in items:
            yield item
            k += 1
            now = time.monotonic()
            if now - last > 0.1 or k == total:
                draw()
                last = now
    finally:
        stream.write("\n")
        stream.flush()


def use_color(stream=None) -> bool:
    """Colours only on a terminal, never with NO_COLOR (https://no-color.org) or in CI."""
    stream = stream or sys.stdout
    return enabled(stream) and not os.environ.get("NO_COLOR")
