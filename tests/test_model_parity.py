"""Whole models against PyTorch: forward, every activation, loss, every gradient, 3 SGD steps, eval mode.

The expected numbers were computed by PyTorch (tests/fixtures/make_torch_model_fixtures.py rebuilds each
network from torch.nn.functional and trains it with the spec's optimizer from torch.optim: SGD, Adam, AdamW,
RMSprop, with parameter groups for lr_mult/decay_mult and a scheduler); torch is not needed here.
"""
from pathlib import Path

import numpy as np
import pytest

import cnnspec

FIXTURES = Path(__file__).parent / "fixtures"
SPECS = sorted((FIXTURES / "model_specs").glob("*.yaml"))
RTOL, ATOL = 1e-10, 1e-12


def close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_matches_pytorch(spec_path):
    gold = np.load(FIXTURES / f"torch_model_{spec_path.stem}.npz")
    model = cnnspec.compile(spec_path)
    model.set_weights({k[5:]: gold[k] for k in gold.files if k.startswith("init/")})
    x, target = gold["x"], gold["target"]
    hwc = model.graph.layout == "HWC"
    losses = []
    for step in range(len(gold["losses"])):
        out = model.forward(x, train=True)
        losses.append(model.loss(out, target))
        grads = model.backward()
        if step == 0:
            close(out, gold["out"], "output")
            for name, act in model.activations.items():
                internal = act.transpose(0, 3, 1, 2) if hwc and act.ndim == 4 else act
                close(internal, gold[f"act/{name}"], f"activation of {name}")
            for name, g in grads.items():
                close(g, gold[f"grad/{name}"], f"gradient of {name}")
            close(model.input_grad, gold["grad/input"], "input gradient")
        model.step()
    close(np.array(losses), gold["losses"], "loss per step")
    for name, value in model.params.items():
        close(value, gold[f"after/{name}"], f"{name} after {len(losses)} steps")
    for name, value in model.buffers.items():
        if not name.endswith("num_batches_tracked"):
            close(value, gold[f"after/{name}"], f"{name} after {len(losses)} steps")
    close(model.forward(x, train=False), gold["eval_out"], "eval-mode output")


def test_parity_specs_cover_every_layer_type_and_loss():
    from cnnspec.schema import LAYER_TYPES
    types, losses, options = set(), set(), set()
    for path in SPECS:
        spec = cnnspec.load_spec(path)
        types |= {n.type for n in spec.graph.nodes.values()}
        losses.add((spec.loss.type, spec.loss.reduction))
        for node in spec.graph.nodes.values():
            options |= {f"{k}={v}" for k, v in node.attrs.items() if k in ("padding_mode", "ceil_mode", "count_include_pad")}
    assert types >= set(LAYER_TYPES) - {"dropout"}   # dropout masks come from different RNGs; tested on its own
    assert {t for t, _ in losses} == {"cross_entropy", "mse", "bce_with_logits", "multi_margin"}
    assert {"padding_mode=reflect", "padding_mode=replicate", "padding_mode=circular", "ceil_mode=True",
            "count_include_pad=False"} <= options
