"""The published architectures in specs/architectures/: each reproduces its published parameter count, passes
`check` and `summary` under the default memory limit, matches PyTorch (forward, loss, gradients; fixtures by
tests/fixtures/make_torch_architecture_fixtures.py) and exports to ONNX verified layer by layer.

They live in a folder of their own because they are ImageNet-sized: training one on a batch of 64 needs more
than the default 4 GiB (the specs in specs/ itself all train at 64 within it; test_limits.py checks that)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec import limits
from cnnspec.cli import main
from cnnspec.onnx_verify import verify_onnx

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "specs" / "architectures"
SPECS = sorted(ARCH.glob("*.yaml"))
FIXTURES = Path(__file__).parent / "fixtures"

# name -> (published parameter count, where it is published, layer types the architecture needs)
PUBLISHED = {
    "mobilenet_v2": (3_504_872, "torchvision.models.mobilenet_v2", {"relu6", "add", "batchnorm"}),
    "efficientnet_b0": (5_288_548, "torchvision.models.efficientnet_b0", {"silu", "multiply", "sigmoid", "add"}),
    "shufflenet_v2": (2_278_604, "torchvision.models.shufflenet_v2_x1_0", {"channel_split", "channel_shuffle",
                                                                           "concat"}),
    "alexnet_caffe": (60_965_224, "Caffe's bvlc_alexnet", {"lrn", "maxpool", "dropout"}),
}


def test_every_architecture_is_listed():
    assert {p.stem for p in SPECS} == set(PUBLISHED)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_published_parameter_count(path):
    count, where, types = PUBLISHED[path.stem]
    spec = cnnspec.load_spec(path)  # the default memory limit
    g = spec.graph
    assert g.param_count == count, f"{path.stem}: {g.param_count:,} parameters, {where} has {count:,}"
    assert g.nodes[g.output].shape == (1000,)
    assert types <= {n.type for n in g.nodes.values()}
    text = path.read_text()
    assert f"{count:,}" in text.split("cnnspec: 1")[0]  # the comment cites the count it reproduces
    assert text.startswith("# yaml-language-server: $schema=../../docs/cnnspec.schema.json\n")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_check_and_summary_accept_them_under_the_default_limit(path, capsys, monkeypatch):
    monkeypatch.delenv(limits.ENV_VAR, raising=False)
    assert main(["check", str(path)]) == 0
    assert main(["summary", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    count = PUBLISHED[path.stem][0]
    assert data["totals"]["params"] == count
    memory = data["totals"]["memory"]
    assert memory["inference_batch_1"] < limits.DEFAULT_MAX_MEMORY
    assert memory["largest_training_batch"] >= 1


def test_caffe_alexnet_keeps_caffes_training_conventions():
    spec = cnnspec.load_spec(ARCH / "alexnet_caffe.yaml")
    from cnnspec.optim import multipliers, scheduled_lr
    o = spec.optimizer
    assert multipliers(o, "conv1.bias") == (2.0, 0.0) and multipliers(o, "conv1.weight") == (1.0, 1.0)
    assert scheduled_lr(o, steps=99_999) == 0.01 and scheduled_lr(o, steps=100_000) == pytest.approx(0.001)
    pools = [n for n in spec.graph.nodes.values() if n.type == "maxpool"]
    assert [n.shape[1] for n in pools] == [27, 13, 6]   # Caffe rounds up; here it makes no difference


# ---------------------------------------------------------------- PyTorch's numbers

GOLD = np.load(FIXTURES / "torch_architectures.npz")


def spec_at(name: str, size: int):
    """As make_torch_architecture_fixtures.spec_at: the spec on a size x size input, dropout rate 0."""
    text = (ARCH / f"{name}.yaml").read_text().replace("shape: [3, 224, 224]", f"shape: [3, {size}, {size}]")
    for rate in ("0.2", "0.5"):
        text = text.replace(f"type: dropout, rate: {rate}", "type: dropout, rate: 0.0")
    return cnnspec.loads_spec(text)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_matches_pytorch(name):
    x, y = GOLD[f"{name}/x"], GOLD[f"{name}/y"]
    model = cnnspec.compile(spec_at(name, x.shape[-1]))
    total = float(sum(np.abs(v).sum() for v in model.params.values()))
    assert total == pytest.approx(float(GOLD[f"{name}/init_checksum"]), rel=1e-12), \
        "cnnspec's initialisation changed: regenerate the fixture (make_torch_architecture_fixtures.py)"
    close = dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.forward(x), GOLD[f"{name}/eval_out"], **close, err_msg="eval output")
    loss = model.loss(model.forward(x, train=True), y)
    assert loss == pytest.approx(float(GOLD[f"{name}/loss"]), rel=1e-11)
    grads = model.backward()
    for key in GOLD.files:
        if key.startswith(f"{name}/grad/"):
            what = key.split("/grad/")[1]
            got = model.input_grad if what == "input" else grads[what]
            scale = np.abs(GOLD[key]).max()
            np.testing.assert_allclose(got, GOLD[key], rtol=1e-8, atol=1e-10 * scale, err_msg=f"gradient of {what}")


# ---------------------------------------------------------------- ONNX


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "shufflenet_v2"])
def test_exports_and_verifies_layer_by_layer(name):
    """At 64x64 (every layer as at 224, smaller): float64 in onnx.reference, a float32 copy in onnxruntime."""
    model = cnnspec.compile(spec_at(name, 64))
    result = verify_onnx(model, batch=2)
    assert result.ok, result.failure
    assert len({r.layer for r in result.layers}) == len(model.graph.nodes)


def test_caffe_alexnet_exports_and_verifies_in_float32():
    """Full size in onnxruntime (the float64 file is 488 MB; its LRN and grouped convolutions are verified in
    float64 by test_onnx_export.py's single-layer cases)."""
    model = cnnspec.compile(ARCH / "alexnet_caffe.yaml", dtype="float32")
    result = verify_onnx(model, batch=1)
    assert result.ok, result.failure
    assert [r.runtime for r in result.runs] == ["onnxruntime"]
