"""Building the model a command works on, the same way for every command that takes SPEC [--weights W.npz]."""
from __future__ import annotations

import sys

WEIGHTS_HELP = ("parameters by PyTorch state_dict name (from 'cnnspec train', Model.save or a converted PyTorch "
                "state_dict); parameters it does not hold keep their seeded initial values (a note says which)")


def build_model(spec_path, dtype=None, weights=None):
    """(model, notes): the compiled spec, with `weights` (an .npz of state_dict names) applied. A checkpoint
    may hold only some parameters; the others keep their seeded values, and a note says which."""
    from ..arrays import load_npz
    from ..model import compile as compile_model

    model = compile_model(spec_path, dtype=dtype)
    notes = []
    if weights:
        values = load_npz(weights, "weights")
        model.set_weights(values, source=str(weights))
        missing = [k for k in model.params if k not in values]
        if missing:
            notes.append(f"{weights} has no value for {', '.join(missing)}; "
                         f"{'they keep' if len(missing) > 1 else 'it keeps'} the seeded initial value")
    return model, notes


def print_notes(notes) -> None:
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
