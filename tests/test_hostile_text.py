"""Hostile text: a file's cost in time, memory and output is bounded by its size, whatever it holds.

No wall-clock timing here: work is counted (characters rendered, positions recorded, comparisons made).
"""
from __future__ import annotations

import difflib
import tracemalloc

import pytest

from cnnspec import errors, schema, yaml_io
from cnnspec.errors import Problem, SpecError


def load_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        yaml_io.loads(text, "x.yaml")
    return info.value


# ---------------------------------------------------------------- rendering problems


def test_many_problems_on_a_long_line_render_their_snippets_only(monkeypatch):
    line = "w: [" + ", ".join(["0.5"] * 40_000) + "]"  # 200 KB on one line
    problems = [Problem(f"bad value {i}", 1, 5 + 5 * i) for i in range(5_000)]
    cleaned = []
    real_clean = errors._clean
    monkeypatch.setattr(errors, "_clean", lambda text: cleaned.append(len(text)) or real_clean(text))
    out = str(SpecError(problems, "s.yaml", line + "\n"))
    rendered = out.split("\n")
    assert rendered[0] == "s.yaml:1:5: bad value 0"
    assert rendered[1].startswith("    w: [0.5, 0.5") and rendered[1].endswith("...")
    assert rendered[-2:] == ["and 4,950 more problems", "5,000 errors in s.yaml"]
    assert out.count("bad value") == errors.MAX_RENDERED
    # Each shown problem cleans its snippet only, not the 200 KB line: the work is the output's.
    assert len(cleaned) == errors.MAX_RENDERED and max(cleaned) == errors.SNIPPET_WIDTH
    assert len(out) < errors.MAX_RENDERED * 300


def test_one_more_problem_is_singular():
    problems = [Problem(f"p{i}", i + 1, 1) for i in range(errors.MAX_RENDERED + 1)]
    out = str(SpecError(problems, "s.yaml", "a: 1\n" * 60))
    assert out.endswith("\nand 1 more problem\n51 errors in s.yaml")
    assert len(SpecError(problems, "s.yaml").problems) == 51  # .problems stays complete


def test_a_count_beyond_the_problems_kept():
    err = SpecError([Problem("a", 1, 1), Problem("b", 2, 1)], "s.yaml", "x: 1\ny: 2\n", count=1_200)
    assert err.count == 1_200 and len(err.problems) == 2
    assert str(err).endswith("s.yaml:2:1: b\n    y: 2\n    ^\nand 1,198 more problems\n1,200 errors in s.yaml")


def test_a_line_deep_in_a_file_of_many_lines():
    """The line is found without splitting the file (and, for '\\n' or '\\r\\n' line ends, at C speed)."""
    for end in ("\n", "\r\n"):
        text = "".join(f"k{i}: {i}{end}" for i in range(200_000)) + "last: [1, oops]" + end
        lines = errors.SourceLines(text)
        assert lines.clamp(200_001) == 200_000 and lines.clamp(300_000) == 200_000
        assert lines[200_000] == "last: [1, oops]" and lines[7] == "k7: 7" and len(lines) == 200_001
        err = SpecError([Problem("bad", 200_001, 11)], "s.yaml", text)
        assert str(err) == "s.yaml:200001:11: bad\n    last: [1, oops]\n              ^"


@pytest.mark.parametrize("text", [
    "", "\n", "a", "a\n", "a\nb", "a\r\nb\r\n", "a\rb", "a\x0bb\x0c", "a\u2028b\x85c\n\n", "\r\n\r\n", "a\n\n\nb",
    "\t x\r\n\u2029", "é😀\nx",
])
def test_source_lines_number_lines_as_splitlines(text):
    lines = errors.SourceLines(text)
    expected = text.splitlines()
    assert len(lines) == len(expected) and bool(lines) == bool(expected)
    assert [lines[i] for i in range(len(expected))] == expected
    assert [lines[i] for i in reversed(range(len(expected)))] == expected[::-1]
    if expected:
        assert [errors.SourceLines(text).clamp(n) for n in (1, len(expected), len(expected) + 3)] == \
            [0, len(expected) - 1, len(expected) - 1]


def test_long_messages_are_cut_in_the_middle():
    problem = Problem("layer 'n" + "n" * 100_000 + "': unknown key 'x'", 1, 1)
    assert len(problem.message) < errors.MAX_MESSAGE + 50
    assert problem.message.startswith("layer 'nnn") and problem.message.endswith("': unknown key 'x'")
    assert "characters cut" in problem.message


def test_odd_unicode_never_reaches_the_terminal_raw():
    source = "a: \ud800\U0001F600\x1b[2J\n"
    out = str(SpecError([Problem("key '\ud800\u202e' \x1b[31m", 1, 4)], "s.yaml", source))
    out.encode("utf-8")  # no lone surrogate left
    assert "\x1b" not in out and "\u202e" not in out and "\\ud800" in out
    assert out.split("\n")[1] == "    a: ?\U0001F600?[2J"  # one '?' per character: the caret still fits
    # The same text given to the YAML reader (a lone surrogate cannot even be encoded for libyaml).
    for text in (source, "x: 1\n" * 60_000 + source):  # parsed again in Python, or too long for that
        err = load_error(text)
        (problem,) = err.problems
        assert problem.message == "character '\\ud800' (U+D800) is not allowed in YAML; is this a text file?"
        assert (problem.line, problem.col) == (text.count("\n"), 4)
        str(err).encode("utf-8")
    # Escapes in quoted text may spell lone surrogates (libyaml refuses them; Python's parser reads them).
    doc = yaml_io.loads('"\\ud800": 1\na: "x\\udfffy"\nb: "\\U0001F600"\n')
    assert doc.data == {"\ud800": 1, "a": "x\udfffy", "b": "\U0001F600"}
    out = str(load_error('"\\ud800": 1\n"\\ud800": 2\n'))
    out.encode("utf-8")
    assert out.startswith("x.yaml:2:1: duplicate key '\\ud800' (first given at line 1)")


# ---------------------------------------------------------------- the YAML reader


def test_a_1_mb_list_of_numbers_records_a_bounded_number_of_positions():
    n = 350_000
    doc = yaml_io.loads("w: [" + ", ".join(["1"] * n) + "]\nafter: 7\n", "x.yaml")
    assert doc.data["w"] == [1] * n and doc.data["after"] == 7
    assert len(doc._values) <= yaml_io.MAX_POSITIONS + 3
    assert doc.position(("w", 5)) == (1, 20)  # early numbers keep their own
    assert doc.position(("w", n - 1)) == (1, 4)  # later ones: the list's
    # Past the budget a top-level value is placed at its key (the same line).
    assert doc.position(("after",)) == (2, 1) and doc.position(("after",), key=True) == (2, 1)


def test_memory_of_a_long_list_is_a_small_multiple_of_the_list(monkeypatch):
    monkeypatch.setattr(yaml_io, "MAX_POSITIONS", 1_000)  # a small budget keeps tracemalloc quick
    text = "w:\n" + "- 0.25\n" * 20_000
    tracemalloc.start()
    try:
        doc = yaml_io.loads(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert doc.data["w"] == [0.25] * 20_000 and len(doc._values) <= 1_003
    # A node tree (the old way) costs ~350 bytes per number (7 MB here); the list costs 8.
    assert peak < 2 * 2**20


def test_many_keys_past_the_budget_keep_the_lines_of_their_keys():
    n = yaml_io.MAX_POSITIONS + 20_000
    doc = yaml_io.loads("".join(f"q{i}: {i}\n" for i in range(n)))
    assert len(doc._values) <= yaml_io.MAX_POSITIONS + 1 and len(doc._keys) == n
    assert doc.position((f"q{n - 1}",)) == (n, 1)  # its value is placed at its key
    assert doc.position(("q3",)) == (4, 5)


def test_deep_lists_past_the_budget_are_not_recorded():
    item = "[" * 30 + "1" + "]" * 30
    doc = yaml_io.loads("a: [" + ", ".join([item] * 5_000) + "]\n")
    assert len(doc.data["a"]) == 5_000
    assert len(doc._values) + len(doc._keys) <= yaml_io.MAX_POSITIONS + 3
    assert doc.position(("a", 4_999, 0, 0)) == (1, 4)


def test_many_aliases_are_counted_and_copied():
    text = "base: &b [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nuse: [" + ", ".join(["*b"] * 9_000) + "]\n"
    doc = yaml_io.loads(text)
    assert doc.data["use"][8_999] == list(range(1, 11)) and doc.data["use"][0] is not doc.data["base"]
    assert doc.position(("use", 3)) == (2, 19)  # the alias itself
    assert doc.position(("use", 3, 2)) == (1, 17)  # what it repeats: where that is written
    over = text.replace("9_000", "x").replace(", ".join(["*b"] * 9_000), ", ".join(["*b"] * 9_100))
    (problem,) = load_error(over).problems
    assert problem.message == ("YAML aliases expand to 100,115 values (100,100 repeated); "
                               "the limit for repeated values is 100,000")


def test_a_flood_of_yaml_problems_keeps_the_first_and_counts_the_rest():
    err = load_error("a: 1\n" * 5_000)
    assert err.count == 4_999 and len(err.problems) == yaml_io.MAX_PROBLEMS
    assert err.problems[0].line == 2 and err.problems[-1].line == yaml_io.MAX_PROBLEMS + 1
    assert str(err).endswith("\nand 4,949 more problems\n4,999 errors in x.yaml")


def test_an_aliased_long_key_makes_short_messages():
    key = "k" * 20_000
    text = f"a: &k {key}\nm:\n" + "".join(f"  - {{*k : 1, *k : 2}}\n" for _ in range(2_000))
    err = load_error(text)
    assert err.count == 2_000
    assert all(len(p.message) < 200 for p in err.problems)
    assert err.problems[0].message == (f"duplicate key '{'k' * 100}... (20,000 characters)' (first given at "
                                       "line 3); each key may appear once")


# ---------------------------------------------------------------- did you mean


def test_did_you_mean_skips_a_huge_word_without_comparing(monkeypatch):
    assert schema.did_you_mean("kernal", ["kernel", "stride", "padding"]) == "; did you mean 'kernel'?"
    assert schema.did_you_mean("strides", {"stride": 1, "kernel": 2}) == "; did you mean 'stride'?"
    assert schema.did_you_mean("zzz", ["kernel"]) == ""
    monkeypatch.setattr(difflib, "SequenceMatcher", None)  # any comparison would fail
    assert schema.did_you_mean("k" * 100_000, ["kernel", "stride"]) == ""
    assert schema.did_you_mean("kernal", [f"name{i}" for i in range(2_000)]) == ""


def test_did_you_mean_bounds_its_comparisons(monkeypatch):
    compared = []
    real = difflib.SequenceMatcher

    class Counting(real):
        def ratio(self):
            compared.append(len(self.a) * len(self.b))
            return super().ratio()

    monkeypatch.setattr(difflib, "SequenceMatcher", Counting)
    word = "ab" * 32  # 64 letters; 1,000 choices of the same two letters all pass the cheap filters
    choices = [("ba" * 60)[: 80 + i % 60] for i in range(1_000)]
    schema.did_you_mean(word, choices)
    assert sum(compared) <= schema.SUGGEST_MAX_WORK


def spec_with_unknown_keys(n: int, key_length: int = 8) -> str:
    # '? key' (an explicit key) may be longer than a plain key's 1,024 characters
    keys = "".join(f"    ? k{i}{'x' * key_length}\n    : 1\n" for i in range(n))
    return ("cnnspec: 1\nname: t\ninput: {shape: [1, 8, 8]}\nlayers:\n"
            f"  - {{type: conv2d, filters: 2, kernel: 3}}\n  - type: flatten\n{keys}")


def test_validation_makes_a_bounded_number_of_suggestions(monkeypatch):
    calls = []
    real = schema.did_you_mean
    monkeypatch.setattr(schema, "did_you_mean", lambda word, choices: calls.append(word) or real(word, choices))
    with pytest.raises(SpecError) as info:
        schema.validate(yaml_io.loads(spec_with_unknown_keys(10_000), "s.yaml"))
    assert info.value.count == 10_000 and len(calls) <= schema.MAX_SUGGESTIONS
    assert str(info.value).endswith("and 9,950 more problems\n10,000 errors in s.yaml")


def test_validation_quotes_long_names_short():
    with pytest.raises(SpecError) as info:
        schema.validate(yaml_io.loads(spec_with_unknown_keys(3, key_length=100_000), "s.yaml"))
    assert all(len(p.message) < 500 for p in info.value.problems)
    assert "(100,002 characters)" in info.value.problems[0].message
