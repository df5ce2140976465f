"""Building the model a command works on, the same way for every command that takes SPEC [--weights W.npz],
and the memory limit every command that builds a model or runs the engine takes (--max-memory SIZE)."""
from __future__ import annotations

import argparse
import sys
from math import prod

from .. import limits

WEIGHTS_HELP = ("parameters by PyTorch state_dict name (from 'cnnspec train', Model.save or a converted PyTorch "
                "state_dict); parameters it does not hold keep their seeded initial values (a note says which)")
MAX_MEMORY_HELP = ("memory limit: refuse (exit 2), before allocating, a model or a batch whose estimated memory "
                   "is larger; SIZE is bytes or a number with KiB, MiB, GiB (or K, M, G) or kB, MB, GB, e.g. "
                   f"8GiB (default: ${limits.ENV_VAR}, else {limits.fmt(limits.DEFAULT_MAX_MEMORY)}). "
                   "It also caps the parameters at SIZE / 8")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; every option whose default is a value (not None or False, whose
    meaning the help text says) shows it: "(default: 32)"."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (action.option_strings and "%(default)" not in text and "default" not in text
                and default is not None and default is not False and default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class WrappingHelpFormatter(HelpFormatter):
    """HelpFormatter for texts written as paragraphs: each line of a description or epilog is wrapped to
    the terminal on its own, so line breaks between paragraphs stay."""

    def _fill_text(self, text, width, indent):
        import textwrap
        return "\n".join(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent,
                                       break_on_hyphens=False, break_long_words=False)
                         for line in text.splitlines())


def spec_warnings(spec) -> list[str]:
    """Mistakes that are valid specs but almost never what was meant, as 'FILE:LINE:COL: warning: ...' with
    the line and a caret. Needs only the spec (no NumPy), so `cnnspec check` can print them."""
    from ..errors import SpecError
    graph, loss = spec.graph, spec.loss
    out = graph.nodes.get(graph.output)
    found = []
    if loss is not None and out is not None:
        squash = {"cross_entropy": ("softmax", "log-softmax", "CrossEntropyLoss"),
                  "bce_with_logits": ("sigmoid", "a sigmoid", "BCEWithLogitsLoss")}.get(loss.type)
        if squash and out.type == squash[0]:
            where = spec.document.position(("loss", "type")) if spec.document else None
            found.append((f"warning: the network ends in {squash[0]} (layer '{out.name}') and the loss is "
                          f"{loss.type}" + (f" (line {where[0]})" if where else "") + f", which applies "
                          f"{squash[1]} itself (it takes logits, as PyTorch's {squash[2]}): {squash[0]} is "
                          f"applied twice, so gradients are small and training is slow or stalls. Remove the final "
                          f"{squash[0]} layer, and apply {squash[0]} to the outputs only when you need "
                          "probabilities", ("layers", out.index, "type")))
    doc = spec.document
    rendered = []
    for message, path in found:
        if doc is None:
            rendered.append(message)
        else:
            rendered.append(str(SpecError([doc.problem(message, path)], doc.filename, doc.source)))
    return rendered


def _size(text: str) -> int:
    try:
        return limits.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_no_rewrite(p) -> None:
    p.add_argument("--no-rewrite", action="store_true",
                   help="run one op per layer, without the engine's exact rewrites (a ReLU after its max pool, batch "
                   "norm and ReLU in one op); every number is the same bit for bit, only slower: for comparison")


def add_max_memory(p) -> None:
    p.add_argument("--max-memory", type=_size, default=None, metavar="SIZE", help=MAX_MEMORY_HELP)


def build_model(spec_path, dtype=None, weights=None, max_memory=None, rewrite=True):
    """(model, notes): the compiled spec, with `weights` (an .npz of state_dict names) applied. A checkpoint
    may hold only some parameters; the others keep their seeded values, and a note says which.
    rewrite=False: no exact rewrites (compile(rewrite=False)), for comparison."""
    from ..arrays import load_npz
    from ..model import compile as compile_model

    model = compile_model(spec_path, dtype=dtype, max_memory=max_memory, rewrite=rewrite)
    notes = []
    if weights:
        model._check_weights_memory()
        values = load_npz(weights, "weights", max_bytes=model.max_memory)
        model.set_weights(values, source=str(weights))
        missing = [k for k in model.params if k not in values]
        if missing:
            notes.append(f"{weights} has no value for {', '.join(missing)}; "
                         f"{'they keep' if len(missing) > 1 else 'it keeps'} the seeded initial value")
    return model, notes


def sample_bytes(model, itemsize: int | None = None) -> int:
    """Bytes of one input sample in `itemsize` (default: the model's)."""
    return prod(model.spec.input.shape) * (itemsize or model.dtype.itemsize)


def weight_bytes(model) -> int:
    return sum(a.nbytes for a in (*model.params.values(), *model.buffers.values()))


def print_notes(notes) -> None:
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
