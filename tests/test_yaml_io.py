"""The YAML reader: YAML 1.2 scalars, duplicate keys, positions, hostile input, unreadable files."""
from __future__ import annotations

import math
import os

import pytest
import yaml

from cnnspec import yaml_io
from cnnspec.errors import Problem, SpecError
from peak import peak_bytes  # tests/peak.py


def value(text: str):
    return yaml_io.loads(f"v: {text}\n").data["v"]


def problems(text: str) -> list[tuple[int | None, int | None, str]]:
    with pytest.raises(SpecError) as info:
        yaml_io.loads(text, "x.yaml")
    return [(p.line, p.col, p.message) for p in info.value.problems]


# ---------------------------------------------------------------- YAML 1.2 core schema, not PyYAML's 1.1


@pytest.mark.parametrize("text, expected", [
    ("1e-3", 1e-3), ("1E3", 1000.0), ("1.0e-5", 1e-5), ("-2.5", -2.5), (".5", 0.5), ("1.", 1.0),
    ("+3", 3), ("-7", -7), ("010", 10), ("0010", 10), ("0o10", 8), ("0x1F", 31), ("0", 0),
    ("true", True), ("false", False), ("True", True), ("FALSE", False),
    ("null", None), ("~", None), ("", None),
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"), ("n", "n"), ("Yes", "Yes"),
    ("'1'", "1"), ('"true"', "true"), ("'010'", "010"), ("1_000", "1_000"), ("0b101", "0b101"),
    ("12:30", "12:30"), ("2024-01-01", "2024-01-01"), (".inf", math.inf), ("-.inf", -math.inf),
    ("+.Inf", math.inf), ("conv2d", "conv2d"),
])
def test_scalars_follow_yaml_1_2(text, expected):
    got = value(text)
    assert got == expected and type(got) is type(expected)


def test_nan_is_a_float():
    assert math.isnan(value(".nan")) and math.isnan(value(".NaN"))


def test_yaml_11_traps_in_a_spec_are_not_surprising():
    doc = yaml_io.loads("eps: 1e-3\nbias: yes\nsize: 010\nflag: no\n")
    assert doc.data == {"eps": 0.001, "bias": "yes", "size": 10, "flag": "no"}


def test_only_plain_data_types():
    doc = yaml_io.loads("a: [1, {b: 2.5}, c]\n")
    assert doc.data == {"a": [1, {"b": 2.5}, "c"]}


# ---------------------------------------------------------------- positions


def test_positions_of_values_and_keys():
    doc = yaml_io.loads("cnnspec: 1\nlayers:\n  - {type: conv2d, kernel: 3}\n  - name: fc\n    units: 10\n")
    assert doc.position(("cnnspec",)) == (1, 10)
    assert doc.position(("cnnspec",), key=True) == (1, 1)
    assert doc.position(("layers", 0, "kernel")) == (3, 28)
    assert doc.position(("layers", 0, "kernel"), key=True) == (3, 20)
    assert doc.position(("layers", 1)) == (4, 5)
    assert doc.position(("layers", 1, "units")) == (5, 12)
    # A path that is not in the file falls back to the nearest enclosing node.
    assert doc.position(("layers", 1, "bias")) == (4, 5)
    assert doc.position(("layers", 1, "bias"), key=True) == (4, 5)
    assert doc.position(("nothing", 3)) == (1, 1)


def test_problem_renders_path_line_col_snippet_and_caret():
    doc = yaml_io.loads("a: 1\nb: [1, 2]\n", "spec.yaml")
    err = doc.error([doc.problem("something is wrong", ("b", 1))])
    assert str(err) == "spec.yaml:2:8: something is wrong\n    b: [1, 2]\n           ^"


def test_several_problems_are_sorted_and_counted():
    doc = yaml_io.loads("a: 1\nb: 2\n", "s.yaml")
    err = doc.error([doc.problem("second", ("b",)), doc.problem("first", ("a",))])
    assert [p.message for p in err.problems] == ["first", "second"]
    assert str(err).endswith("2 errors in s.yaml")


def test_long_lines_show_a_window_around_the_caret():
    line = "w: [" + ", ".join(["0.5"] * 200) + ", x]"
    text = Problem("bad", 1, line.index("x") + 1).render("s.yaml", [line])
    _head, snippet, caret = text.split("\n")
    assert len(snippet) < 120 and snippet.strip().startswith("...")
    assert snippet[len(caret) - 1] == "x"


def test_control_characters_are_not_printed_raw():
    text = Problem("bad", 1, 3).render("s.yaml", ["a:\x1b[31m red"])
    assert "\x1b" not in text


# ---------------------------------------------------------------- mistakes in the YAML itself


def test_duplicate_keys_are_errors_with_both_lines():
    assert problems("name: a\nlayers: []\nname: b\n") == [
        (3, 1, "duplicate key 'name' (first given at line 1); each key may appear once")]


def test_duplicate_keys_in_nested_flow_mappings():
    assert problems("layers:\n  - {type: conv2d, kernel: 3, kernel: 5}\n") == [
        (2, 31, "duplicate key 'kernel' (first given at line 2); each key may appear once")]


def test_every_duplicate_key_is_reported():
    found = problems("a: 1\na: 2\nb: {c: 1, c: 2}\n")
    assert [(line, col) for line, col, _ in found] == [(2, 1), (3, 11)]


def test_syntax_error_position_and_text():
    assert problems("a: [1, 2\nb: 3\n") == [
        (2, 2, "YAML syntax error: while parsing a flow sequence (started at line 1, column 4) "
               "expected ',' or ']', but got ':'")]


def test_tabs_get_a_hint():
    ((line, col, msg),) = problems("a:\n\tb: 1\n")
    assert (line, col) == (2, 1) and msg.endswith("(indent with spaces, not tabs)")


@pytest.mark.parametrize("text", ["layers:\n  - name: a\n     type: conv2d\n", "input:\n  shape: [1]\n layout: HWC\n",
                                  "a:\n  b: 1\n    c: 2\n"])
def test_indentation_errors_get_a_plain_words_hint(text):
    ((line, col, msg),) = problems(text)
    assert line == 3 and "check the indentation on this line and the one above" in msg


def test_truncated_document():
    ((line, _col, msg),) = problems("layers:\n  - {type: conv2d, kernel: [3,")
    assert line == 2 and msg.startswith("YAML syntax error") and "<stream end>" in msg


def test_second_document_is_an_error():
    ((line, col, msg),) = problems("a: 1\n---\nb: 2\n")
    assert (line, col) == (2, 1) and "single document" in msg


def test_python_tags_are_refused():
    ((line, col, msg),) = problems("a: !!python/object/apply:os.system ['echo hi']\n")
    assert (line, col) == (1, 4) and "is not allowed" in msg


def test_merge_keys_are_refused():
    ((line, col, msg),) = problems("base: &b {x: 1}\nc: {<<: *b, y: 2}\n")
    assert (line, col) == (2, 5) and "merge keys" in msg


def test_complex_keys_are_refused():
    ((line, col, msg),) = problems("? [a, b]\n: 1\n")
    assert (line, col) == (1, 3) and "plain names" in msg


def test_aliases_are_expanded():
    assert yaml_io.loads("a: &x [1, 2]\nb: *x\n").data == {"a": [1, 2], "b": [1, 2]}


def test_billion_laughs_is_refused_quickly():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    found = []
    # Expanded, these aliases would be 10**10 values (hundreds of GB); counted, not copied, they cost a few MB.
    assert peak_bytes(lambda: found.extend(problems("\n".join(lines) + "\n"))) < 64 * 1024**2
    ((_line, _col, msg),) = found
    assert "aliases expand to" in msg and "the limit for repeated values is 100,000" in msg


def test_recursive_alias_is_refused():
    ((_line, _col, msg),) = problems("a: &a [1, *a]\n")
    assert "recursive YAML alias" in msg or "nesting" in msg


def test_deep_nesting_is_refused():
    ((line, _col, msg),) = problems("a: " + "[" * 70 + "]" * 70 + "\n")
    assert msg == "YAML nesting deeper than 64 levels" and line == 1


def test_absurd_nesting_is_refused_without_recursion_error():
    ((line, _col, msg),) = problems("a: " + "[" * 20000 + "]" * 20000 + "\n")
    assert "nesting" in msg and line == 1


def test_huge_integer_literal_is_refused():
    ((line, col, msg),) = problems("filters: " + "9" * 5000 + "\n")
    assert (line, col, msg) == (1, 10, "integer with 5000 digits is too long")


def test_control_character_in_text():
    ((line, col, msg),) = problems("a: 1\nb: x\x07y\n")
    assert (line, col) == (2, 5) and "U+0007" in msg


def test_nul_in_text():
    ((line, col, msg),) = problems("\x00\x01\x02")
    assert (line, col) == (1, 1) and "U+0000" in msg


# ---------------------------------------------------------------- files that cannot be read


def read_error(path) -> str:
    with pytest.raises(SpecError) as info:
        yaml_io.read_text(path)
    return str(info.value)


def test_missing_file(tmp_path):
    assert read_error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: spec file not found"


def test_directory(tmp_path):
    assert read_error(tmp_path) == f"{tmp_path}: is a directory, expected a spec file"


def test_not_utf8_points_at_the_byte(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: ok\ndescription: caf\xe9\n".encode("latin-1"))
    assert read_error(p) == (f"{p}:2:17: not UTF-8 text (byte 0xe9 at offset 25); save the spec as UTF-8")


def test_utf16_is_not_utf8(tmp_path):
    p = tmp_path / "utf16.yaml"
    p.write_bytes("cnnspec: 1\n".encode("utf-16"))
    assert read_error(p) == f"{p}: UTF-16 text (it starts with a UTF-16 byte-order mark); save the spec as UTF-8"


@pytest.mark.parametrize("content", [b"", b"   \n\n", b"\xef\xbb\xbf\n"])
def test_empty(tmp_path, content):
    p = tmp_path / "empty.yaml"
    p.write_bytes(content)
    assert read_error(p) == f"{p}: spec file is empty"


def test_binary(tmp_path):
    p = tmp_path / "weights.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}" + bytes(64))
    assert read_error(p) == (f"{p}: binary data (a zero byte at offset 7), expected a YAML text file; "
                             "is this the right file?")


def test_too_big(tmp_path, monkeypatch):
    p = tmp_path / "big.yaml"
    p.write_text("a: 1\n" * 100)
    monkeypatch.setattr(yaml_io, "MAX_BYTES", 100)
    assert read_error(p) == f"{p}: spec file is 500 bytes; the limit is 100 bytes"


def test_unusable_paths():
    assert "cannot read spec file" in read_error("x" * 5000) or "not found" in read_error("x" * 5000)
    assert "cannot read spec file" in read_error("a\x00b") or "not found" in read_error("a\x00b")


def test_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert yaml_io.load(p).data == {"a": 1}


def test_unreadable_file(tmp_path, monkeypatch):
    """A file the user may not read (simulated: CI runs as root, who can read anything)."""
    from pathlib import Path
    p = tmp_path / "secret.yaml"
    p.write_text("a: 1\n")

    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    assert read_error(p) == f"{p}: cannot read spec file: Permission denied"


def test_control_characters_in_messages_are_escaped():
    text = Problem("unknown key 'a\x1b[2Jb'", 1, 1).render("s.yaml", ["x: 1"])
    assert "\x1b" not in text and "a\\x1b[2Jb" in text


def test_aliases_cannot_stack_nesting_beyond_the_limit():
    deep = "[" * 40 + "1" + "]" * 40
    text = f"a: &a {deep}\nb: {'[' * 30}*a{']' * 30}\n"
    ((line, col, msg),) = problems(text)
    assert (line, col, msg) == (2, 33, "YAML nesting deeper than 64 levels (through an alias)")
    chained = "a0: &a0 " + deep + "\n" + "".join(
        f"a{i}: &a{i} {'[' * 40}*a{i - 1}{']' * 40}\n" for i in range(1, 40))
    assert "nesting deeper" in problems(chained)[0][2]


# ---------------------------------------------------------------- aliases, read from the parser's events


def test_undefined_alias_is_a_positioned_error():
    assert problems("a: 1\nb: [1, *nope]\n") == [
        (2, 8, "undefined YAML alias '*nope': an alias repeats a value marked '&nope' before it")]


def test_duplicate_anchor_is_a_positioned_error():
    assert problems("a: &x 1\nb: &x [2]\n") == [
        (2, 4, "duplicate YAML anchor '&x' (first defined at line 1); each anchor may be defined once")]


def test_recursive_alias_points_at_the_alias():
    assert problems("a: &a [1, *a]\n") == [(1, 11, "recursive YAML alias: a node contains itself")]
    assert problems("a: &a\n  b: [1, {c: *a}]\n") == [(2, 14, "recursive YAML alias: a node contains itself")]


def test_an_alias_is_placed_where_it_is_used_and_its_parts_where_they_are_written():
    doc = yaml_io.loads("a: &x {k: 1, j: [2]}\nb: [0, *x]\n")
    assert doc.data["b"] == [0, {"k": 1, "j": [2]}] and doc.data["b"][1] is not doc.data["a"]
    assert doc.position(("b", 1)) == (2, 8)
    assert doc.position(("b", 1, "k")) == (1, 11) and doc.position(("b", 1, "k"), key=True) == (1, 8)
    assert doc.position(("b", 1, "j", 0)) == (1, 18)


def test_an_alias_as_a_key_is_placed_at_the_alias():
    assert problems("k: &v v\n*v : 3\nv: 4\n") == [
        (3, 1, "duplicate key 'v' (first given at line 2); each key may appear once")]


# ---------------------------------------------------------------- long texts: libyaml's own messages


def only_libyaml(monkeypatch):
    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML without libyaml")

    def refuse(*args, **kwargs):
        raise AssertionError("a long text must not be parsed again in pure Python")

    monkeypatch.setattr(yaml, "SafeLoader", refuse)


def test_syntax_error_in_a_long_text_is_not_parsed_again(monkeypatch):
    only_libyaml(monkeypatch)
    text = "w: [" + ", ".join(["1"] * 100_000) + "\nb: 3\n"
    assert len(text) > yaml_io.REPARSE_LIMIT
    ((line, col, msg),) = problems(text)
    assert (line, col) == (2, 2)
    assert msg.startswith("YAML syntax error: while parsing a flow sequence (started at line 1, column 4)")


def test_control_character_in_a_long_text_is_placed_by_characters(monkeypatch):
    only_libyaml(monkeypatch)
    text = "é: [ü]\n" * 40_000 + "b: é\x07\n"  # libyaml counts bytes; the message counts characters
    assert problems(text) == [(40_001, 5, "character '\\x07' (U+0007) is not allowed in YAML; "
                                          "is this a text file?")]
