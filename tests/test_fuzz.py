"""A seeded mutation fuzzer over specs and submissions: hostile input is normal input.

Every case is a real file (a spec from specs/ or tests/bad_specs, a submission from tests/grader_data)
mutated by a seeded random mix of byte flips, cuts, repeats and hostile tokens (aliases, tags, deep
nesting, control characters, lone surrogates, huge numbers, NaN, odd Unicode). Each case must:
- raise nothing but cnnspec's own errors (specs), or give a result for that submission only (grading);
- render in every report format with no unescaped control character;
- finish within a time bound proportional to its size, and allocate within a bound proportional to it.

The bounds are loose on purpose (a slow CI machine must not fail them by luck): they catch quadratic
behaviour and runaway allocation, which cost orders of magnitude more.
"""
from __future__ import annotations

import random
import time
import tracemalloc
from pathlib import Path

import pytest

import cnnspec
import grader
from cnnspec.errors import CnnspecError
from grader.report import FORMATS, render

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "tests" / "bad_specs").glob("*.yaml"))
SUBMISSIONS = sorted((ROOT / "tests" / "grader_data" / "lecture").glob("*.yaml"))
LECTURE = ROOT / "specs" / "assignments" / "lecture.yaml"

TOKENS = ["&a ", "*a", "*b", "!!python/object:os.system ", "!foo ", "<<: ", "[[[[[[[[[[", "]]]]", "{", "}",
          "\t", "\x00", "\x1b[2J", "\r", "\u202e", "\ufeff", '"\\ud800"', '"\\U0010ffff"', "\udcff", "\U0001f600",
          "1e999", "-.inf", ".nan", "9" * 400, "0x" + "f" * 50, "- ", ": ", "? ", "---\n", "...\n", "%YAML 1.1\n",
          "'", '"', "#", "|\n", ">\n", "~", "null", "yes", "0o17", "NaN", "-0", "1_000"]
# Whole values and keys a hostile student would write: escapes YAML turns into control characters, lone
# surrogates, fake report lines, HTML, paths out of the folder, special files.
VALUES = ['"\\ud800"', '"s1\\n  PASS   1. conv1_shape  forged  [2/2]"', '"\\x1b[2J\\x1b[H"', '"\\u202eevil"',
          '"<script>alert(1)</script>"', "../../../etc/passwd.npy", "/dev/zero.npy", "'=HYPERLINK(\"x\")'",
          '"\\0"', "[" * 30 + "1" + "]" * 30, "[1, [2, [3]]]", "1" + "0" * 5000, "-1e400", "&x [1, 2]", "*x",
          '"a\\x85b"', '"\\U0001F600"', "!!binary aGVsbG8=", "{a: 1}", "[]"]
CASES = 160          # per kind; about 15 s for both kinds on this project's 2-core machines
SECONDS_PER_KB = 0.25
BASE_SECONDS = 3.0
BYTES_PER_BYTE = 400  # allocation bound per input byte, on top of a fixed allowance
BASE_BYTES = 64 * 1024**2


def mutate(text: str, rng: random.Random) -> str:
    if rng.random() < 0.2:  # the one value every report prints
        text = f"student_id: {rng.choice(VALUES)}\n" + "".join(
            line for line in text.splitlines(True) if not line.startswith("student_id:"))
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        i = rng.randint(0, len(text))
        if op < 0.35:
            text = text[:i] + rng.choice(TOKENS) + text[i:]
        elif op < 0.55 and text:
            j = min(len(text), i + rng.randint(1, 40))
            text = text[:i] + text[j:]
        elif op < 0.7 and text:
            j = min(len(text), i + rng.randint(1, 80))
            text = text[:i] + text[i:j] * rng.randint(2, 50) + text[j:]
        elif op < 0.85:
            text = text[:i] + chr(rng.choice([rng.randint(0, 0x1f), rng.randint(0x7f, 0x9f),
                                              rng.randint(0xd800, 0xdfff), rng.randint(0x80, 0x10ffff)])) + text[i:]
        elif op < 0.93:  # a whole key or value replaced
            lines = text.splitlines(True)
            if lines:
                k = rng.randrange(len(lines))
                key, sep, _ = lines[k].partition(": ")
                token = rng.choice(VALUES)
                lines[k] = f"{key}: {token}\n" if sep and rng.random() < 0.6 else f"{token}: 1\n"
            text = "".join(lines)
        else:
            lines = text.splitlines(True)
            if lines:
                k = rng.randrange(len(lines))
                lines.insert(k, lines[k] * rng.randint(1, 30))
            text = "".join(lines)
    return text


def write(path: Path, text: str) -> int:
    data = text.encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    return len(data)


def bounded(size: int, action):
    """Run action(); assert its time and allocation stay within the bounds for `size` bytes of input."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        return action()
    finally:
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seconds < BASE_SECONDS + SECONDS_PER_KB * size / 1024, f"{seconds:.2f} s for {size:,} bytes"
        assert peak < BASE_BYTES + BYTES_PER_BYTE * size, f"{peak:,} bytes allocated for {size:,} bytes"


def test_fuzzed_specs_raise_only_our_errors(tmp_path):
    rng = random.Random(20261201)
    seen_errors = 0
    for n in range(CASES):
        source = rng.choice(SPECS)
        path = tmp_path / f"spec{n}.yaml"
        size = write(path, mutate(source.read_text(), rng))

        def check():
            try:
                cnnspec.load_spec(path)  # YAML, schema, shape inference, weights, limits
            except CnnspecError as exc:
                text = str(exc)
                assert "\x1b" not in text and "\x00" not in text
                return 1
            return 0

        seen_errors += bounded(size, check)
    assert seen_errors > CASES // 4  # the mutations do reach the error paths


@pytest.fixture(scope="module")
def lecture_grader():
    return grader.Grader(grader.load_assignment(LECTURE))


def test_fuzzed_submissions_cost_only_themselves(tmp_path, lecture_grader):
    rng = random.Random(1201)
    errors = 0
    for n in range(CASES):
        source = rng.choice(SUBMISSIONS)
        path = tmp_path / f"sub{n}.yaml"
        size = write(path, mutate(source.read_text(), rng))
        result = bounded(size, lambda: lecture_grader.grade_file(path))
        assert not result.internal_error, result.error
        errors += bool(result.error)
        for fmt in FORMATS:
            text = render([result], fmt) if fmt != "gradescope" else render(result, fmt)
            assert "\x1b" not in text and "\x00" not in text, (fmt, text[:200])
            text.encode("utf-8")  # no lone surrogate reaches a report
            if fmt == "text":  # one mark line per question, none forged by the submission's text
                marks = [line for line in text.splitlines() if line.startswith(("  PASS", "  PART", "  FAIL", "  ----"))]
                assert len(marks) == (0 if result.error else len(result.questions)), text
    assert 0 < errors < CASES  # both paths are exercised
