"""peak_bytes: how much memory a piece of work allocated, the bound tests use where a time limit would flake."""
from __future__ import annotations

import tracemalloc


def peak_bytes(action) -> int:
    """The most memory Python allocated while running action(): a bound on its work that no machine load can flake."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
