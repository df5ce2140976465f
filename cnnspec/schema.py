"""The spec language as pydantic models: one model per layer type, a tagged union on `type`.

Declarative on purpose: types and ranges here, cross-layer rules (names, inputs, shapes) in graph.py.
No NumPy here. `validate(document)` turns pydantic's errors into file:line:col problems with
"did you mean" hints; `json_schema()` is what `cnnspec schema` prints.
"""
from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      WithJsonSchema, model_validator)

from .errors import Problem
from .yaml_io import Document

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
SPEC_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
INPUT_NAME = "input"  # what `inputs:` names to mean the model's input


def _pair(kind: str, minimum: int):
    """An int or a list of two ints (height, width), each >= minimum."""

    def check(v):
        items = [v] if isinstance(v, int) else v
        if isinstance(v, list) and len(v) != 2:
            raise ValueError(f"must be one integer or a list of 2 integers [height, width], got a list of {len(v)}")
        bad = [i for i in items if i < minimum]
        if bad:
            raise ValueError(f"must be {'positive' if minimum else 'non-negative'} (>= {minimum}), got {v}")
        return v

    schema = {"anyOf": [{"type": "integer", "minimum": minimum},
                        {"type": "array", "items": {"type": "integer", "minimum": minimum},
                         "minItems": 2, "maxItems": 2}],
              "description": f"{kind}: one integer, or [height, width]"}
    return Annotated[Union[int, list[int]], AfterValidator(check), WithJsonSchema(schema)]


Size = _pair("size", 1)
Padding = _pair("padding", 0)
PaddingOrMode = Annotated[Union[int, list[int], Literal["same", "valid"]],
                          AfterValidator(lambda v: v if isinstance(v, str) else _pair("padding", 0).__metadata__[0].func(v)),
                          WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0},
                                                    {"type": "array", "items": {"type": "integer", "minimum": 0},
                                                     "minItems": 2, "maxItems": 2},
                                                    {"enum": ["same", "valid"]}],
                                          "description": "int, [ph, pw], 'same' (stride 1 only) or 'valid' (= 0)"})]
PositiveInt = Annotated[int, Field(ge=1)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Input(_Model):
    shape: list[PositiveInt] = Field(min_length=1, max_length=3, description="one sample, no batch dimension: [C, H, W], [H, W, C] or [features]")
    layout: Literal["CHW", "HWC"] = Field("CHW", description="order of `shape`, of data arrays and of reported shapes")
    dtype: Literal["float64", "float32"] = "float64"

    @model_validator(mode="after")
    def _rank(self):
        if len(self.shape) == 2:
            raise ValueError(f"shape must be [C, H, W], [H, W, C] or [features], got {self.shape} (2 dimensions); "
                             "add a channel dimension, e.g. [1, H, W]")
        return self


class _Layer(_Model):
    name: Optional[str] = Field(None, pattern=NAME_PATTERN, description="unique; default derived from the type (conv2d_1, ...)")
    inputs: Optional[list[Annotated[str, Field(pattern=NAME_PATTERN)]]] = Field(
        None, min_length=1, description="layers (or 'input') feeding this one; default: the previous layer")


class Conv2d(_Layer):
    type: Literal["conv2d"]
    filters: PositiveInt
    kernel: Size
    stride: Size = 1
    padding: PaddingOrMode = 0
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"
    dilation: Size = 1
    groups: PositiveInt = 1
    bias: bool = True


class BatchNorm(_Layer):
    type: Literal["batchnorm"]
    eps: Annotated[float, Field(gt=0.0)] = 1e-5
    momentum: Unit = Field(0.1, description="PyTorch form: running = (1 - momentum) * running + momentum * batch")


class ReLU(_Layer):
    type: Literal["relu"]


class LeakyReLU(_Layer):
    type: Literal["leaky_relu"]
    slope: float = 0.01


class Sigmoid(_Layer):
    type: Literal["sigmoid"]


class Tanh(_Layer):
    type: Literal["tanh"]


class Softmax(_Layer):
    type: Literal["softmax"]


class MaxPool(_Layer):
    type: Literal["maxpool"]
    kernel: Size
    stride: Optional[Size] = Field(None, description="default: the kernel size")
    padding: Padding = 0
    dilation: Size = 1
    ceil_mode: bool = False


class AvgPool(_Layer):
    type: Literal["avgpool"]
    kernel: Size
    stride: Optional[Size] = Field(None, description="default: the kernel size")
    padding: Padding = 0
    ceil_mode: bool = False
    count_include_pad: bool = Field(True, description="PyTorch's default: padded zeros count in the average")


class GlobalAvgPool(_Layer):
    type: Literal["global_avgpool"]


class Flatten(_Layer):
    type: Literal["flatten"]


class Dropout(_Layer):
    type: Literal["dropout"]
    rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5


class Dense(_Layer):
    type: Literal["dense"]
    units: PositiveInt
    bias: bool = True


class Add(_Layer):
    type: Literal["add"]
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(min_length=2)


class Concat(_Layer):
    type: Literal["concat"]
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(min_length=2)


LAYER_CLASSES: dict[str, type[_Layer]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls
    for cls in (Conv2d, BatchNorm, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, MaxPool, AvgPool, GlobalAvgPool,
                Flatten, Dropout, Dense, Add, Concat)
}
LAYER_TYPES = tuple(LAYER_CLASSES)
Layer = Annotated[Union[tuple(LAYER_CLASSES.values())], Field(discriminator="type")]


class Loss(_Model):
    type: Literal["cross_entropy", "mse", "bce_with_logits"]
    reduction: Literal["mean", "sum"] = "mean"


class Optimizer(_Model):
    type: Literal["sgd"] = "sgd"
    lr: Annotated[float, Field(gt=0.0)] = 0.01
    momentum: Annotated[float, Field(ge=0.0)] = 0.0
    dampening: Annotated[float, Field(ge=0.0)] = 0.0
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0

    @model_validator(mode="after")
    def _nesterov(self):
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"nesterov needs momentum > 0 and dampening 0 (as in PyTorch), "
                             f"got momentum {self.momentum}, dampening {self.dampening}")
        return self


class Init(_Model):
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    scheme: Literal["torch_default", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "zeros"] = "torch_default"


WeightValue = Annotated[Union[str, float, list], WithJsonSchema(
    {"anyOf": [{"type": "string", "description": "path to a .npy file, relative to the spec"},
               {"type": "number"}, {"type": "array", "description": "nested lists of numbers"}]})]


class Spec(_Model):
    cnnspec: Literal[1] = Field(description="format version")
    name: str = Field(pattern=SPEC_NAME_PATTERN)
    description: Optional[str] = None
    input: Input
    layers: list[Layer] = Field(min_length=1)
    output: Optional[str] = Field(None, description="which layer is the model output (default: the last)")
    loss: Optional[Loss] = None
    optimizer: Optimizer = Field(default_factory=Optimizer)
    init: Init = Field(default_factory=Init)
    weights: Optional[Union[str, dict[str, WeightValue]]] = Field(
        None, description="explicit parameter values by state_dict name, or a path to one .npz")

    _document: Optional[Document] = PrivateAttr(None)
    _graph: Any = PrivateAttr(None)

    @property
    def document(self) -> Optional[Document]:
        """The YAML document this spec came from (positions for error messages), if any."""
        return self._document

    @property
    def graph(self):
        """Shape-inferred graph (built when the spec is loaded)."""
        if self._graph is None:
            from .graph import build_graph
            self._graph = build_graph(self)
        return self._graph

    @property
    def source_path(self) -> Optional[str]:
        d = self._document
        return d.filename if d is not None and d.filename != "<string>" else None


def json_schema() -> dict:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cnnspec model spec"
    return schema


# ---------------------------------------------------------------- pydantic errors -> positioned problems

_UNION_FIELDS = {"kernel": "an integer or [height, width]", "stride": "an integer or [height, width]",
                 "dilation": "an integer or [height, width]",
                 "padding": "an integer, [height, width], 'same' or 'valid'",
                 "weights": "a path to a .npz file or a mapping of parameter names to values",
                 "type": None}
_PY_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
             type(None): "null"}


def _describe(value: Any) -> str:
    kind = _PY_TYPES.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({kind})"


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _where(path: tuple, data: Any) -> str:
    """'layer 2 ('conv1', conv2d)' or 'input.shape' - how messages name a place."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        layer = data["layers"][path[1]] if isinstance(data, dict) and isinstance(data.get("layers"), list) \
            and path[1] < len(data["layers"]) else None
        who = f"layer {path[1] + 1}"
        if isinstance(layer, dict):
            bits = [repr(layer["name"])] if isinstance(layer.get("name"), str) else []
            if isinstance(layer.get("type"), str):
                bits.append(layer["type"])
            if bits:
                who += f" ({', '.join(bits)})"
        rest = ".".join(str(p) for p in path[2:])
        return f"{who}{': ' + rest if rest else ''}"
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[") or "spec"


def _model_for(path: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model whose keys live at `path` (for listing valid keys)."""
    if not path:
        return Spec
    if path[0] == "layers" and len(path) == 2:
        try:
            return LAYER_CLASSES.get(data["layers"][path[1]]["type"])
        except (KeyError, IndexError, TypeError):
            return None
    field = Spec.model_fields.get(path[0]) if len(path) == 1 else None
    if field is not None:
        for cls in (Input, Loss, Optimizer, Init):
            if cls in getattr(field.annotation, "__args__", (field.annotation,)) or field.annotation is cls:
                return cls
    return None


def problems_from_validation(exc: ValidationError, doc: Document, root: type[BaseModel] = Spec,
                             model_for=None) -> list[Problem]:
    """Turn pydantic's error list into one positioned, readable problem per mistake."""
    model_for = model_for or _model_for
    data = doc.data
    problems: list[Problem] = []
    seen: set[tuple] = set()
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        # Tagged union: ('layers', 0, 'conv2d', 'kernel') -> ('layers', 0, 'kernel').
        if len(loc) >= 3 and loc[0] == "layers" and loc[2] in LAYER_CLASSES:
            del loc[2]
        # Union members: ('kernel', 'list[int]', 1) -> ('kernel',), reported once.
        collapsed = False
        for i, part in enumerate(loc):
            if isinstance(part, str) and part in _UNION_FIELDS and i + 1 < len(loc) and isinstance(loc[i + 1], str) \
                    and not (i + 1 < len(loc) and isinstance(loc[i + 1], str) and loc[i + 1] in _field_names()):
                loc, collapsed = loc[: i + 1], True
                break
        path = tuple(loc)
        kind = err["type"]
        value = err.get("input")
        where = _where(path, data)
        key = False
        if collapsed and kind not in ("value_error", "assertion_error"):
            if path in seen:
                continue
            want = _UNION_FIELDS.get(path[-1]) or "a valid value"
            if path[-1] == "padding" and _lookup(data, path[:-1] + ("type",)) != "conv2d":
                want = "an integer or [height, width] ('same' and 'valid' are for conv2d)"
            msg = f"{where}: expected {want}, got {_describe(_lookup(data, path))}"
        elif kind == "extra_forbidden":
            field = path[-1]
            model = model_for(path[:-1], data)
            valid = sorted(model.model_fields) if model else []
            owner = "spec" if len(path) == 1 else _where(path[:-1], data)
            msg = f"unknown key '{field}' in {owner}{_suggest(field, valid)}"
            if valid:
                msg += f" (valid keys: {', '.join(valid)})"
            key = True
        elif kind == "missing":
            msg = f"{_where(path[:-1], data) if len(path) > 1 else 'spec'}: missing required key '{path[-1]}'"
            path = path[:-1]
            key = False
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            choices = ", ".join(LAYER_TYPES)
            if kind == "union_tag_not_found":
                msg = f"{where}: missing required key 'type' (one of: {choices})"
            else:
                tag = err.get("ctx", {}).get("tag")
                msg = f"{where}: unknown layer type '{tag}'{_suggest(tag, LAYER_TYPES)} (valid types: {choices})"
                path = path + ("type",)
        elif kind in ("model_attributes_type", "model_type", "dict_type") or (
                kind == "model_attributes_type"):
            msg = f"{where}: expected a mapping of keys to values, got {_describe(value)}"
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            msg = f"{where}: must be {expected}, got {_describe(value)}{_suggest(value, _literal_choices(expected))}"
        elif kind in ("value_error", "assertion_error"):
            text = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            msg = f"{where}: {text}"
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            msg = f"{where}: {err['msg'].lower().replace('input should be', 'expected')}, got {_describe(value)}"
            if isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n"):
                msg += " (cnnspec reads YAML 1.2: yes/no/on/off are text, not booleans)"
            elif kind in ("float_type", "int_type") and isinstance(value, str):
                msg += " (write numbers without quotes, e.g. 1.0e-3)"
            if kind == "bool_type" and isinstance(value, str):
                msg += " (write true or false)"
        else:
            msg = f"{where}: {err['msg'].lower().replace('input should be', 'must be')}, got {_describe(value)}"
        seen.add(path)
        problems.append(doc.problem(msg, path, key=key))
    return problems


def _field_names() -> set[str]:
    names: set[str] = set()
    for cls in (*LAYER_CLASSES.values(), Input, Loss, Optimizer, Init, Spec):
        names.update(cls.model_fields)
    return names - set(_UNION_FIELDS)


def _literal_choices(expected: str) -> list[str]:
    return [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]


def _lookup(data: Any, path: tuple) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def validate(doc: Document) -> Spec:
    """Validate a loaded YAML document against the spec models; raise SpecError listing every problem."""
    if not isinstance(doc.data, dict):
        raise doc.error([doc.problem(f"a spec is a mapping with keys cnnspec, name, input, layers, ...; "
                                     f"got {_describe(doc.data)}")])
    try:
        spec = Spec.model_validate(doc.data)
    except ValidationError as exc:
        raise doc.error(problems_from_validation(exc, doc)) from None
    spec._document = doc
    return spec
