"""The `cnnspec` command: parse arguments, call the library, print, choose the exit code.

Each command group lives in its own module with `register(subparsers)`; handlers return the exit code:
0 success, 1 a check/verification/grade did not pass, 2 invalid input or usage. User mistakes are
CnnspecError exceptions: printed without a traceback, exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pathlib import Path

from .. import __version__
from ..errors import CnnspecError
from ..text import printable

EXIT_INTERNAL = 3  # an internal error (a bug, or out of memory): never 1 ("did not pass") or 2 ("your input")

# Modules that add subcommands, in the order `cnnspec --help` lists them.
COMMAND_MODULES = ("cnnspec.cli.spec_cmds", "cnnspec.cli.onnx_cmds", "cnnspec.cli.engine_cmds", "grader.cli", "grader.service.cli")

EPILOG = """exit codes: 0 success, 1 a check, verification or grade did not pass, 2 invalid input or usage,
3 internal error (a bug in cnnspec, or out of memory).
docs: README.md and docs/ (spec language, CLI reference, conventions, grading guide)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage errors exit 2 too, but say which command to ask for help
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnspec", description="Write a CNN as YAML: check it, see every shape explained, "
                     "run it in NumPy, export it to ONNX, and grade hand-computed answers.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnspec {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    from ..files import track_inputs
    from ..memory import keep_freed_memory
    keep_freed_memory()  # the CLI owns its process: let large arrays be reused between steps
    for stream in (sys.stdout, sys.stderr):  # text a user controls never stops the output mid-way
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        with track_inputs():  # no output of a command may replace one of its inputs
            return int(args.func(args) or 0)
    except CnnspecError as exc:
        # Line by line through printable: a path or name in the message (a student's file name in a batch,
        # say) can never print a terminal escape or a fake line, whichever code raised it.
        print("\n".join(printable(line) for line in str(exc).split("\n")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnspec summary x | head`
        sys.stderr.close()
        return 0
    except MemoryError:
        print(f"cnnspec: out of memory (exit {EXIT_INTERNAL}); a smaller batch or model, or a lower --max-memory, "
              "refuses such work before it starts", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # a bug in cnnspec: never reported as "a check did not pass" (exit 1)
        import traceback
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"cnnspec: internal error ({type(exc).__name__}: {printable(str(exc))[:300]} at "
              f"{Path(where.filename).name}:{where.lineno}); this is a bug in cnnspec, please report it with the "
              f"command that caused it (exit {EXIT_INTERNAL})", file=sys.stderr)
        return EXIT_INTERNAL


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
