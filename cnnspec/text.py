"""Text a user controls, made safe to print: no terminal escapes, no fake lines, no unencodable characters."""
from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character a terminal or a report would act on (control characters, newlines, escape
    sequences, bidi overrides, lone surrogates, unassigned code points) shown as a Python escape, so a file
    name, key or id can never print a fake line or hide the rest of the output."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
