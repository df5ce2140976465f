"""`cnnspec summary`: a Keras-style table of layers, shapes, parameters and MACs, also as data."""
from __future__ import annotations

from math import prod

from . import limits
from .graph import Graph

_ITEMSIZE = {"float64": 8, "float32": 4}


def memory(graph: Graph, max_memory=None) -> dict:
    """Estimated working memory (limits.py) in the spec's dtype: inference (an eval forward) and training
    (forward, backward, SGD step) for a batch of 1, and the largest batches that fit the limit."""
    limit = limits.resolve(max_memory)
    training = {"train": True, "backward": True, "step": True}
    return {"limit": limit, "max_params": limits.max_params(limit),
            "inference_batch_1": limits.estimate(graph, 1).total,
            "training_batch_1": limits.estimate(graph, 1, **training).total,
            "largest_inference_batch": limits.largest_batch(graph, limit),
            "largest_training_batch": limits.largest_batch(graph, limit, **training)}


def summarize(graph: Graph, max_memory=None) -> dict:
    """The summary as data (the `--json` output): {"name", "layers": [...], "totals": {...}}."""
    spec = graph.spec
    itemsize = _ITEMSIZE[spec.input.dtype]
    layers = [{"name": n.name, "type": n.type, "inputs": list(n.inputs),
               "output_shape": list(graph.declared(n.shape)), "params": n.param_count,
               "macs": n.macs, "line": n.line} for n in graph.nodes.values()]
    activations = sum(prod(n.shape) for n in graph.nodes.values())
    buffers = sum(prod(s) for n in graph.nodes.values() for k, s in n.buffers.items() if k != "num_batches_tracked")
    return {
        "name": spec.name,
        "input_shape": list(spec.input.shape),
        "layout": spec.input.layout,
        "dtype": spec.input.dtype,
        "output": graph.output,
        "layers": layers,
        "totals": {
            "params": graph.param_count,
            "trainable_params": graph.param_count,
            "buffers": buffers,
            "macs": sum(n.macs for n in graph.nodes.values()),
            "param_bytes": (graph.param_count + buffers) * itemsize,
            "activation_bytes_per_sample": activations * itemsize,
            "memory": memory(graph, max_memory),
        },
    }


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return ""


def render_summary(data: dict) -> str:
    header = ("Layer (type)", "Output shape", "Param #", "MACs", "Line")
    rows = []
    for layer in data["layers"]:
        name = f"{layer['name']} ({layer['type']})"
        if layer["type"] in ("add", "concat") or (layer["inputs"] and layer is not data["layers"][0]
                                                  and layer["inputs"][0] != _previous(data, layer)):
            name += " <- " + ", ".join(layer["inputs"])
        rows.append((name, "(None, " + ", ".join(map(str, layer["output_shape"])) + ")", f"{layer['params']:,}",
                     f"{layer['macs']:,}", str(layer["line"] or "")))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def fmt(r):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    t = data["totals"]
    out = [f'Model: "{data["name"]}"  input (None, {", ".join(map(str, data["input_shape"]))}) '
           f'{data["layout"]} {data["dtype"]}', line, fmt(header), line, *map(fmt, rows), line,
           f"Total params: {t['params']:,}",
           f"Trainable params: {t['trainable_params']:,}",
           f"Non-trainable buffers: {t['buffers']:,} (batch-norm running statistics)",
           f"Multiply-accumulates per sample: {t['macs']:,}",
           f"Params + buffers memory: {_bytes(t['param_bytes'])}",
           f"Activations memory per sample: {_bytes(t['activation_bytes_per_sample'])}",
           *_memory_lines(t.get("memory")),
           f"Output: {data['output']}"]
    return "\n".join(out)


def _memory_lines(m: dict | None) -> list[str]:
    if not m:
        return []

    def largest(n: int) -> str:
        return f"{n:,}" if n < 2**40 else "any"

    return [f"Working memory, batch of 1 (estimate): inference {_bytes(m['inference_batch_1'])}, "
            f"training {_bytes(m['training_batch_1'])}",
            f"Largest batch within the {_bytes(m['limit'])} memory limit: "
            f"inference {largest(m['largest_inference_batch'])}, training {largest(m['largest_training_batch'])}"]


def _previous(data: dict, layer: dict) -> str:
    names = [entry["name"] for entry in data["layers"]]
    i = names.index(layer["name"])
    return names[i - 1] if i else "input"
