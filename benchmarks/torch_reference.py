"""A cnnspec graph rebuilt from torch.nn.functional calls, independently of cnnspec's ops.

Used to cross-check semantics (tests/fixtures/make_torch_model_fixtures.py) and as the PyTorch peer in
benchmarks/bench.py. Needs torch, which is never a dependency of cnnspec itself.
"""
import torch
import torch.nn.functional as F


def torch_forward(graph, x, params, buffers, train):
    acts = {"input": x.permute(0, 3, 1, 2) if graph.layout == "HWC" and x.ndim == 4 else x}
    for node in graph.nodes.values():
        a, xs = node.attrs, [acts[i] for i in node.inputs]
        p = lambda k: params.get(f"{node.name}.{k}")  # noqa: E731
        t = node.type
        if t == "conv2d":
            pt, pl, pb, pr = a["pads"]
            h = xs[0]
            if a["padding_mode"] != "zeros" or (pt, pl) != (pb, pr):
                mode = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}
                h = F.pad(h, (pl, pr, pt, pb), mode=mode[a["padding_mode"]])
                pad = 0
            else:
                pad = (pt, pl)
            y = F.conv2d(h, p("weight"), p("bias"), a["stride"], pad, a["dilation"], a["groups"])
        elif t == "batchnorm":
            y = F.batch_norm(xs[0], buffers[f"{node.name}.running_mean"], buffers[f"{node.name}.running_var"],
                             p("weight"), p("bias"), train, a["momentum"], a["eps"])
        elif t == "relu":
            y = F.relu(xs[0])
        elif t == "leaky_relu":
            y = F.leaky_relu(xs[0], a["slope"])
        elif t == "sigmoid":
            y = torch.sigmoid(xs[0])
        elif t == "tanh":
            y = torch.tanh(xs[0])
        elif t == "softmax":
            y = F.softmax(xs[0], dim=1)
        elif t == "maxpool":
            y = F.max_pool2d(xs[0], a["kernel"], a["stride"], a["pads"][:2], a["dilation"], ceil_mode=a["ceil_mode"])
        elif t == "avgpool":
            y = F.avg_pool2d(xs[0], a["kernel"], a["stride"], a["pads"][:2], ceil_mode=a["ceil_mode"],
                             count_include_pad=a["count_include_pad"])
        elif t == "global_avgpool":
            y = F.adaptive_avg_pool2d(xs[0], 1)
        elif t == "flatten":
            y = torch.flatten(xs[0], 1)
        elif t == "dense":
            y = F.linear(xs[0], p("weight"), p("bias"))
        elif t == "add":
            y = sum(xs[1:], xs[0])
        elif t == "concat":
            y = torch.cat(xs, dim=1)
        else:
            raise NotImplementedError(t)
        acts[node.name] = y
    out = acts[graph.output]
    return (out.permute(0, 2, 3, 1) if graph.layout == "HWC" and out.ndim == 4 else out), acts


def torch_loss(spec, out, target):
    kind, red = spec.loss.type, spec.loss.reduction
    if kind == "cross_entropy":
        return F.cross_entropy(out, target, reduction=red)
    if kind == "mse":
        return F.mse_loss(out, target, reduction=red)
    return F.binary_cross_entropy_with_logits(out, target, reduction=red)
