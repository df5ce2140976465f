"""The spec commands: check, summary, explain, schema - output, exit codes, help, and no traceback on bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnspec
from cnnspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
BAD = sorted((ROOT / "tests" / "bad_specs").glob("*.yaml"))
LENET = str(ROOT / "specs" / "lenet5.yaml")
CONV1 = str(ROOT / "specs" / "lecture_conv1.yaml")


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:          # argparse: --help, --version, usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*argv, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "cnnspec", *argv], capture_output=True, text=True, cwd=cwd, check=False,
                          env=env, timeout=60)


# ---------------------------------------------------------------- check


def test_check_good_specs(capsys):
    code, out, err = run(capsys, "check", *map(str, SPECS))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == len(SPECS)
    assert f"{LENET}: ok (lenet5: 12 layers, output [10], 61,706 parameters)" in lines
    assert f"{CONV1}: ok (lecture-conv1: 1 layer, output [98, 98, 6], 168 parameters)" in lines


def test_check_mixed_good_and_bad(capsys):
    bad1 = str(ROOT / "tests" / "bad_specs" / "groups.yaml")
    bad2 = str(ROOT / "tests" / "bad_specs" / "yaml_syntax.yaml")
    code, out, err = run(capsys, "check", LENET, bad1, CONV1, bad2)
    assert code == 2
    assert out.splitlines() == [f"{LENET}: ok (lenet5: 12 layers, output [10], 61,706 parameters)",
                                f"{CONV1}: ok (lecture-conv1: 1 layer, output [98, 98, 6], 168 parameters)"]
    assert f"{bad1}:6:61: layer 'g4' (conv2d): groups 4 must divide" in err
    assert f"{bad1}:7:61: layer 'g3' (conv2d): groups 3 must divide" in err
    assert f"2 errors in {bad1}" in err
    assert f"{bad2}:7:5: YAML syntax error" in err
    assert err.rstrip().endswith("2 of 4 specs invalid")
    assert "Traceback" not in err


def test_check_error_output_has_snippet_and_caret(capsys):
    bad = str(ROOT / "tests" / "bad_specs" / "same_stride2.yaml")
    code, out, err = run(capsys, "check", bad)
    assert code == 2 and out == ""
    assert err == (f"{bad}:11:14: layer 'conv1' (conv2d): padding 'same' needs stride 1 (as in PyTorch), got "
                   "stride 2; give the padding as numbers instead\n"
                   "        padding: same\n"
                   "                 ^\n")


def test_check_quiet(capsys):
    assert run(capsys, "check", "-q", LENET) == (0, "", "")


def test_check_unreadable_files(capsys, tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    empty = tmp_path / "empty.yaml"
    empty.write_bytes(b"")
    binary = tmp_path / "model.onnx"
    binary.write_bytes(b"\x08\x07\x12\x00\x00\x01")
    missing = tmp_path / "missing.yaml"
    code, out, err = run(capsys, "check", str(missing), str(tmp_path), str(latin), str(empty), str(binary))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"{missing}: spec file not found",
        f"{tmp_path}: is a directory, expected a spec file",
        f"{latin}:1:10: not UTF-8 text (byte 0xe9 at offset 9); save the spec as UTF-8",
        f"{empty}: spec file is empty",
        f"{binary}: binary data (a zero byte at offset 3), expected a YAML text file; is this the right file?",
        "5 of 5 specs invalid"]


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_no_traceback_for_any_bad_spec(capsys, path):
    for command in ("check", "summary", "explain"):
        code, out, err = run(capsys, command, str(path))
        assert code == 2 and out == ""
        assert err.startswith(str(path)) and "Traceback" not in err


def test_no_traceback_in_a_real_process(tmp_path):
    weird = tmp_path / "weird.yaml"
    weird.write_text("cnnspec: 1\nname: w\ninput: {shape: [3, 8, 8]}\nlayers:\n  - " + "[" * 5000 + "]" * 5000 + "\n")
    r = run_process("check", str(weird), "tests/bad_specs/several_errors.yaml", "tests/bad_specs/bad_inputs.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{weird}:5:" in r.stderr and "nesting" in r.stderr
    assert "6 errors in tests/bad_specs/several_errors.yaml" in r.stderr
    assert r.stderr.rstrip().endswith("3 of 3 specs invalid")


def test_check_does_not_import_onnx_or_the_engine():
    code = ("import sys\nfrom cnnspec.cli import main\nrc = main(['check', 'specs/lecture_cnn.yaml'])\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'torch'))\n"
            "print(rc, heavy)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
                       check=False)
    assert r.stdout.splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_loading_a_spec_imports_neither_numpy_nor_onnx():
    code = ("import sys, cnnspec\ncnnspec.load_spec('specs/resnet_basic_block.yaml')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnx', 'onnxruntime', 'grader')))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
                       check=False)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


# ---------------------------------------------------------------- summary


def test_summary_table(capsys):
    code, out, err = run(capsys, "summary", str(ROOT / "specs" / "lecture_cnn.yaml"))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == 'Model: "lecture-cnn"  input (None, 100, 100, 3) HWC float64'
    assert lines[2].split() == ["Layer", "(type)", "Output", "shape", "Param", "#", "MACs", "Line"]
    rows = {line.split()[0]: line.split() for line in lines[4:10]}
    assert rows["conv1"] == ["conv1", "(conv2d)", "(None,", "98,", "98,", "32)", "896", "8,297,856", "12"]
    assert rows["pool1"][2:6] == ["(None,", "49,", "49,", "32)"]
    assert rows["fc"] == ["fc", "(dense)", "(None,", "10)", "768,330", "768,320", "17"]
    assert "Total params: 769,290" in lines
    assert "Trainable params: 769,290" in lines
    assert "Non-trainable buffers: 64 (batch-norm running statistics)" in lines
    assert any(line.startswith("Activations memory per sample: ") for line in lines)


def test_summary_marks_non_sequential_inputs(capsys):
    code, out, _ = run(capsys, "summary", str(ROOT / "specs" / "resnet_basic_block.yaml"))
    assert code == 0 and "shortcut (add) <- bn2, input" in out


def test_summary_json(capsys):
    code, out, err = run(capsys, "summary", "--json", LENET)
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["name"] == "lenet5"
    assert set(data["totals"]) >= {"params", "trainable_params", "buffers", "macs", "param_bytes",
                                   "activation_bytes_per_sample"}
    assert data["totals"]["params"] == 61_706
    assert len(data["layers"]) == 12
    for layer in data["layers"]:
        assert set(layer) == {"name", "type", "inputs", "output_shape", "params", "macs", "line"}
    assert data["layers"][0] == {"name": "c1", "type": "conv2d", "inputs": ["input"], "output_shape": [6, 28, 28],
                                 "params": 156, "macs": 117_600, "line": 9}
    assert data["layers"][6] == {"name": "flatten", "type": "flatten", "inputs": ["s4"], "output_shape": [400],
                                 "params": 0, "macs": 0, "line": 15}


def test_summary_json_is_in_the_declared_layout(capsys):
    _, out, _ = run(capsys, "summary", "--json", CONV1)
    data = json.loads(out)
    assert data["layout"] == "HWC" and data["input_shape"] == [100, 100, 3]
    assert data["layers"][0]["output_shape"] == [98, 98, 6] and data["layers"][0]["params"] == 168


# ---------------------------------------------------------------- explain


def test_explain_lecture_conv1(capsys):
    code, out, err = run(capsys, "explain", CONV1)
    assert code == 0 and err == ""
    assert "98 = floor((100 + 2*0 - 3)/1) + 1" in out
    assert "6*(3*3*3) + 6 = 168" in out
    assert "each kernel is 3x3x3" in out
    assert "-> output 98 x 98 x 6 (H x W x C)" in out


def test_explain_lecture_conv2(capsys):
    _, out, _ = run(capsys, "explain", str(ROOT / "specs" / "lecture_conv2.yaml"))
    assert "14 = floor((16 + 2*0 - 3)/1) + 1" in out
    assert "each kernel is 3x3x32" in out
    assert "64*(3*3*32) + 64 = 18,496" in out


def test_explain_says_what_bn_relu_and_pooling_do(capsys):
    _, out, _ = run(capsys, "explain", str(ROOT / "specs" / "lecture_cnn.yaml"))
    assert "for each of the 32 channels: mean and variance" in out
    assert "max(0, x) for every value" in out
    assert "49 = floor((98 + 2*0 - 2)/2) + 1" in out
    assert "98 * 98 * 32 = 307,328" not in out                # flatten comes after the pool
    assert "32 * 49 * 49 = 76,832 values in one vector" in out
    assert "Total: 769,290 trainable parameters" in out


def test_explain_ceil_mode_and_dilation(capsys):
    _, out, _ = run(capsys, "explain", str(ROOT / "specs" / "inception_branches.yaml"))
    assert "6 = ceil((12 + 2*0 - 3)/2) + 1" in out
    assert "12 = floor((12 + 2*2 - 2*(3-1) - 1)/1) + 1" in out


# ---------------------------------------------------------------- schema


def test_schema_to_stdout_is_a_valid_json_schema(capsys):
    import jsonschema  # a test dependency (pyproject [test])
    from cnnspec import yaml_io
    code, out, err = run(capsys, "schema")
    assert code == 0 and err == ""
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in SPECS:
        jsonschema.validate(yaml_io.load(path).data, schema, cls=jsonschema.Draft202012Validator)


def test_schema_to_file(capsys, tmp_path):
    target = tmp_path / "s.json"
    code, out, err = run(capsys, "schema", "-o", str(target))
    assert (code, out, err) == (0, "", "")
    assert json.loads(target.read_text())["title"] == "cnnspec model spec"
    code, out, err = run(capsys, "schema", "-o", str(tmp_path / "no" / "such" / "dir.json"))
    assert code == 2 and "cannot write" in err and "Traceback" not in err


# ---------------------------------------------------------------- help, version, usage


@pytest.mark.parametrize("command, words", [
    ("check", ["SPEC", "--quiet", "FILE:LINE:COL", "exit codes: 0 all specs valid, 2"]),
    ("summary", ["SPEC", "--json", "parameter count", '"output_shape"']),
    ("explain", ["SPEC", "formula", "exit codes"]),
    ("schema", ["--output", "yaml-language-server"]),
])
def test_subcommand_help(capsys, command, words):
    code, out, _err = run(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: cnnspec {command}")
    for word in words:
        assert word in out


def test_top_level_help_lists_the_spec_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("check", "summary", "explain", "schema"):
        assert f"    {command}" in out
    assert "exit codes: 0 success" in out


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"cnnspec {cnnspec.__version__}"


def test_usage_errors_exit_2(capsys):
    assert run(capsys, "check")[0] == 2
    assert run(capsys, "summary", LENET, "--jsn")[0] == 2
    assert run(capsys, "nonsense")[0] == 2
    code, _out, err = run(capsys)
    assert code == 2 and "usage: cnnspec" in err


def test_console_entry_point_process():
    r = run_process("summary", "--json", "specs/lecture_conv2.yaml")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"][0]["output_shape"] == [14, 14, 64]
    r = run_process("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cnnspec {cnnspec.__version__}"


# ---------------------------------------------------------------- every option has help, every default is shown


def _commands(parser, prefix=()):
    """(command words, its parser) for every subcommand, nested ones included."""
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from _commands(sub, prefix + (name,))


def _option_problems(parser) -> list[str]:
    """Options without help text, and options whose default (a value, not None/False) --help does not show."""
    import argparse
    problems = []
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help == argparse.SUPPRESS:
            problems.append(f"{name}: no help text")
            continue
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS:
            continue  # the help says what happens without the option
        shown = formatter._expand_help(action)  # the help as --help prints it, %(default)s filled in
        forms = {str(default)} | ({f"{default:g}", f"{default:,}"} if isinstance(default, (int, float)) else set())
        if "default" not in shown or not any(form in shown for form in forms):
            problems.append(f"{name}: default {default!r} not shown in {shown!r}")
    return problems


COMMANDS = [" ".join(words) for words, _ in _commands(__import__("cnnspec.cli").cli.build_parser())]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_shows_its_default(command):
    from cnnspec.cli import build_parser
    parser = dict((" ".join(w), p) for w, p in _commands(build_parser()))[command]
    assert _option_problems(parser) == []


def test_the_help_walk_finds_every_command_and_catches_a_missing_default():
    import argparse
    assert {"check", "run", "train", "evaluate", "gradcheck", "compile", "grade", "assignment check"} <= set(COMMANDS)
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=1, help="passes")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--tol", type=float, default=1e-7, help="tolerance (default: %(default)s)")
    assert _option_problems(p) == ["--epochs: default 1 not shown in 'passes'", "--quiet: no help text"]


def test_train_help_shows_the_defaults(capsys):
    code, out, _ = run(capsys, "train", "--help")
    text = " ".join(out.split())
    assert code == 0
    for shown in ("(default: 1)", "(default: 32)", "SPECNAME.weights.npz", "--val-split", "--val-data"):
        assert shown in text, shown


# ---------------------------------------------------------------- warnings, hints and what explain shows


def _spec(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_warns_about_softmax_before_cross_entropy(capsys, tmp_path):
    soft = _spec(tmp_path, "soft.yaml", "cnnspec: 1\nname: soft\ninput: {shape: [4]}\nlayers:\n"
                 "  - {name: fc, type: dense, units: 3}\n  - {name: probs, type: softmax}\n"
                 "loss: {type: cross_entropy}\n")
    code, out, err = run(capsys, "check", soft)
    assert code == 0 and out.startswith(f"{soft}: ok")
    assert err.startswith(f"{soft}:6:25: warning: the network ends in softmax (layer 'probs') and the loss is "
                          "cross_entropy (line 7), which applies log-softmax itself")
    assert "Remove the final softmax layer" in err and "^" in err
    code, out, err = run(capsys, "check", "-q", soft)
    assert (code, out) == (0, "") and "warning:" in err
    logits = _spec(tmp_path, "logits.yaml", "cnnspec: 1\nname: ok\ninput: {shape: [4]}\nlayers:\n"
                   "  - {name: fc, type: dense, units: 3}\nloss: {type: cross_entropy}\n")
    assert run(capsys, "check", logits)[2] == ""
    no_loss = _spec(tmp_path, "inference.yaml", "cnnspec: 1\nname: ok\ninput: {shape: [4]}\nlayers:\n"
                    "  - {name: fc, type: dense, units: 3}\n  - {type: softmax}\n")
    assert run(capsys, "check", no_loss)[2] == ""          # softmax without cross_entropy is fine
    sig = _spec(tmp_path, "sig.yaml", "cnnspec: 1\nname: s\ninput: {shape: [4]}\nlayers:\n"
                "  - {name: fc, type: dense, units: 1}\n  - {type: sigmoid}\nloss: {type: bce_with_logits}\n")
    assert "ends in sigmoid" in run(capsys, "check", sig)[2]


def test_a_chw_shape_that_looks_hwc_suggests_the_layout(capsys, tmp_path):
    mnist = _spec(tmp_path, "mnist.yaml", "cnnspec: 1\nname: m\ninput: {shape: [28, 28, 1]}\nlayers:\n"
                  "  - {name: conv1, type: conv2d, filters: 6, kernel: 5}\n  - {name: conv2, type: conv2d, filters: 6, "
                  "kernel: 5, inputs: [input]}\n")
    code, _, err = run(capsys, "check", mnist)
    assert code == 2
    assert ("The input shape [28, 28, 1] is read as [channels, height, width] (layout CHW, the default): 28 channels "
            "of 28x1 pixels. If it is 28x28 pixels with 1 channel, add `layout: HWC` to `input:` (or write the shape "
            "as [1, 28, 28])") in err
    assert err.count("layout: HWC") == 1                           # once, not per failing layer
    chw = _spec(tmp_path, "chw.yaml", "cnnspec: 1\nname: m\ninput: {shape: [3, 4, 4]}\nlayers:\n"
                "  - {name: conv1, type: conv2d, filters: 6, kernel: 5}\n")
    code, _, err = run(capsys, "check", chw)
    assert code == 2 and "exceeds" in err and "layout" not in err   # a real CHW shape: no such hint
    explicit = _spec(tmp_path, "explicit.yaml", "cnnspec: 1\nname: m\ninput: {shape: [32, 32, 3], layout: CHW}\n"
                     "layers:\n  - {name: conv1, type: conv2d, filters: 6, kernel: 5}\n")
    assert "change `layout: CHW` to `layout: HWC`" in run(capsys, "check", explicit)[2]


def test_explain_shows_padding_as_written_and_resolved(capsys, tmp_path):
    pads = _spec(tmp_path, "pads.yaml", "cnnspec: 1\nname: pads\ninput: {shape: [3, 8, 8]}\nlayers:\n"
                 "  - {name: a, type: conv2d, filters: 2, kernel: 3, padding: same}\n"
                 "  - {name: b, type: conv2d, filters: 2, kernel: 3, padding: [1, 2]}\n"
                 "  - {name: c, type: conv2d, filters: 2, kernel: 4, padding: same}\n"
                 "  - {name: d, type: conv2d, filters: 2, kernel: 3, padding: 1}\n"
                 "  - {name: e, type: conv2d, filters: 2, kernel: 3}\n"
                 "  - {name: f, type: maxpool, kernel: 2, padding: [1, 0]}\n")
    code, out, _ = run(capsys, "explain", pads)
    assert code == 0
    assert "stride 1, padding 'same' -> 1 on every side" in out
    assert "stride 1, padding [1, 2] -> 1 top and bottom, 2 left and right" in out
    assert "padding 'same' -> top 1, bottom 2, left 1, right 2 (the odd pixel goes to the bottom and right" in out
    assert "stride 1, padding 1 on every side" in out
    assert "stride 1, padding 0 (default)" in out
    assert "window 2x2, stride 2, padding [1, 0] -> 1 top and bottom, 0 left and right" in out
    assert "(1, 1, 2, 2)" not in out                            # no unlabelled tuple of four pads


def test_explain_says_one_filter_not_one_filters(capsys, tmp_path):
    one = _spec(tmp_path, "one.yaml", "cnnspec: 1\nname: one\ninput: {shape: [1, 5, 5]}\nlayers:\n"
                "  - {name: c, type: conv2d, filters: 1, kernel: 3, bias: false}\n  - {name: bn, type: batchnorm}\n"
                "  - {name: p, type: maxpool, kernel: 3}\n  - {name: f, type: flatten}\n"
                "  - {name: d, type: dense, units: 1, bias: false}\n")
    code, out, _ = run(capsys, "explain", one)
    assert code == 0
    for text in ("1 filter, kernel 3x3", "its depth equals the 1 input channel\n", "for the 1 channel: mean",
                 "1 * 1 * 1 = 1 value in one vector", "-> output 1 feature\n", "the 1 unit takes a weighted sum of "
                 "the 1 input\n", "Total: 12 trainable parameters"):
        assert text in out, text
    assert not __import__("re").search(r"\b1 (filters|channels|values|features|units|inputs)\b", out)
