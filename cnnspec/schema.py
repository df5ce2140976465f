"""The spec language as pydantic models: one model per layer type, a tagged union on `type`.

Declarative on purpose: types and ranges here, cross-layer rules (names, inputs, shapes) in graph.py.
No NumPy here. `validate(document)` turns pydantic's errors into file:line:col problems with
"did you mean" hints; `json_schema()` is what `cnnspec schema` prints.
"""
from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from .errors import Problem, shorten
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
    return Annotated[int | list[int], AfterValidator(check), WithJsonSchema(schema)]


Size = _pair("size", 1)
Padding = _pair("padding", 0)
PaddingOrMode = Annotated[int | list[int] | Literal["same", "valid"],
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


def _input_rank(shape: list[int]) -> list[int]:
    if len(shape) not in (1, 3):
        hint = {0: "give at least one size", 2: "add a channel dimension, e.g. [1, H, W]",
                4: "leave out the batch dimension: shape describes one sample"}.get(len(shape), "")
        raise ValueError(f"must be [C, H, W], [H, W, C] or [features], got {shape} ({len(shape)} dimensions)"
                         + (f"; {hint}" if hint else ""))
    return shape


class Input(_Model):
    shape: Annotated[list[PositiveInt], AfterValidator(_input_rank)] = Field(
        description="one sample, no batch dimension: [C, H, W], [H, W, C] or [features]",
        json_schema_extra={"minItems": 1, "maxItems": 3})
    layout: Literal["CHW", "HWC"] = Field("CHW", description="order of `shape`, of data arrays and of reported shapes")
    dtype: Literal["float64", "float32"] = Field("float64", description="precision of parameters and activations")


class _Layer(_Model):
    name: str | None = Field(None, pattern=NAME_PATTERN, description="unique; default derived from the type (conv2d_1, ...)")
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(
        None, min_length=1, description="layers (or 'input') feeding this one; default: the previous layer")


class Conv2d(_Layer):
    """2-D convolution (cross-correlation, as PyTorch). Output size per axis: floor((in + 2p - d*(k-1) - 1)/s) + 1."""
    type: Literal["conv2d"]
    filters: PositiveInt = Field(description="number of kernels = output channels")
    kernel: Size = Field(description="kernel size: k or [kh, kw]")
    stride: Size = Field(1, description="step between windows: s or [sh, sw]")
    padding: PaddingOrMode = Field(0, description="p, [ph, pw] (each on both sides), 'valid' (= 0) or "
                                   "'same' (stride 1; the odd pixel goes at the end, as in PyTorch)")
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = Field(
        "zeros", description="what the padding holds (PyTorch's padding_mode)")
    dilation: Size = Field(1, description="spacing between kernel taps; 1 = none")
    groups: PositiveInt = Field(1, description="must divide input channels and filters; = channels for depthwise")
    bias: bool = Field(True, description="one bias per filter")


class BatchNorm(_Layer):
    """Batch normalisation per channel ([C, H, W]) or feature ([F]); gamma 1, beta 0 at init."""
    type: Literal["batchnorm"]
    eps: Annotated[float, Field(gt=0.0)] = Field(1e-5, description="added to the variance before the square root")
    momentum: Unit = Field(0.1, description="PyTorch form: running = (1 - momentum) * running + momentum * batch")
    affine: bool = Field(True, description="learn a scale (weight) and shift (bias) per channel; false: "
                         "PyTorch's affine=False, Caffe's BatchNorm without a Scale layer")


class LayerNorm(_Layer):
    """Normalises each sample over all its values (PyTorch nn.LayerNorm(shape of one sample))."""
    type: Literal["layernorm"]
    eps: Annotated[float, Field(gt=0.0)] = Field(1e-5, description="added to the variance before the square root")
    affine: bool = Field(True, description="learn a weight and bias per value of the sample (PyTorch's "
                         "elementwise_affine)")


class GroupNorm(_Layer):
    """Normalises each sample over groups of channels (PyTorch nn.GroupNorm)."""
    type: Literal["groupnorm"]
    groups: PositiveInt = Field(description="number of channel groups; must divide the channels")
    eps: Annotated[float, Field(gt=0.0)] = Field(1e-5, description="added to the variance before the square root")
    affine: bool = Field(True, description="learn a weight and bias per channel")


class LRN(_Layer):
    """Local response normalisation across channels (PyTorch nn.LocalResponseNorm, ONNX LRN, Caffe LRN)."""
    type: Literal["lrn"]
    size: PositiveInt = Field(description="number of neighbouring channels summed over (Caffe's local_size)")
    alpha: Annotated[float, Field(ge=0.0)] = Field(1e-4, description="scale of the sum of squares (divided by size)")
    beta: float = Field(0.75, description="exponent")
    k: Annotated[float, Field(gt=0.0)] = Field(1.0, description="additive constant (ONNX's bias)")


class ReLU(_Layer):
    type: Literal["relu"]


class LeakyReLU(_Layer):
    type: Literal["leaky_relu"]
    slope: float = Field(0.01, description="output slope for negative inputs")


class ReLU6(_Layer):
    """min(max(x, 0), 6) (MobileNet v2)."""
    type: Literal["relu6"]


class SiLU(_Layer):
    """x * sigmoid(x), also called swish (EfficientNet)."""
    type: Literal["silu"]


class HardSwish(_Layer):
    """x * relu6(x + 3) / 6 (MobileNet v3)."""
    type: Literal["hardswish"]


class HardSigmoid(_Layer):
    """relu6(x + 3) / 6, PyTorch's definition (MobileNet v3)."""
    type: Literal["hardsigmoid"]


class GELU(_Layer):
    """x * Phi(x), Phi the standard normal CDF; or PyTorch's tanh approximation."""
    type: Literal["gelu"]
    approximate: Literal["none", "tanh"] = Field("none", description="'none': exact (erf); 'tanh': "
                                                 "0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))")


class Sigmoid(_Layer):
    type: Literal["sigmoid"]


class Tanh(_Layer):
    type: Literal["tanh"]


class Softmax(_Layer):
    type: Literal["softmax"]


class MaxPool(_Layer):
    """Max pooling per channel; padding counts as -infinity (never the max)."""
    type: Literal["maxpool"]
    kernel: Size = Field(description="window size: k or [kh, kw]")
    stride: Size | None = Field(None, description="default: the kernel size")
    padding: Padding = Field(0, description="p or [ph, pw], at most kernel // 2 (PyTorch)")
    dilation: Size = Field(1, description="spacing between window taps; 1 = none")
    ceil_mode: bool = Field(False, description="round the output size up (PyTorch's rule: a window may not start "
                            "in the right padding)")


class AvgPool(_Layer):
    """Average pooling per channel."""
    type: Literal["avgpool"]
    kernel: Size = Field(description="window size: k or [kh, kw]")
    stride: Size | None = Field(None, description="default: the kernel size")
    padding: Padding = Field(0, description="p or [ph, pw], at most kernel // 2 (PyTorch)")
    ceil_mode: bool = Field(False, description="round the output size up (PyTorch's rule)")
    count_include_pad: bool = Field(True, description="PyTorch's default: padded zeros count in the average")


class GlobalAvgPool(_Layer):
    type: Literal["global_avgpool"]


class AdaptiveAvgPool(_Layer):
    """Average pooling to a fixed output grid (PyTorch nn.AdaptiveAvgPool2d): window i of n over a length L
    spans floor(i*L/n) to ceil((i+1)*L/n)."""
    type: Literal["adaptive_avgpool"]
    output_size: Size = Field(description="output height and width: n or [oh, ow]")


class Flatten(_Layer):
    type: Literal["flatten"]


class Dropout(_Layer):
    type: Literal["dropout"]
    rate: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.5, description="probability of zeroing a value, in [0, 1)")


class Dense(_Layer):
    type: Literal["dense"]
    units: PositiveInt = Field(description="output features")
    bias: bool = Field(True, description="one bias per unit")


class Add(_Layer):
    type: Literal["add"]
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        min_length=2, description="two or more layers (or 'input') of the same shape, summed elementwise")


class Concat(_Layer):
    type: Literal["concat"]
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        min_length=2, description="two or more layers (or 'input'), joined along channels")


class Multiply(_Layer):
    type: Literal["multiply"]
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        min_length=2, max_length=2, description="two layers of the same shape, multiplied elementwise; or "
        "[features, gate] with a per-channel gate [C] or [C, 1, 1] for a [C, H, W] input (squeeze-and-excitation)")


class ChannelSplit(_Layer):
    """One of `parts` equal groups of channels (ShuffleNet v2's channel split: x.chunk(parts, dim=1)[index])."""
    type: Literal["channel_split"]
    parts: Annotated[int, Field(ge=2)] = Field(2, description="number of equal channel groups; must divide C")
    index: Annotated[int, Field(ge=0)] = Field(description="which group this layer outputs, from 0")

    @model_validator(mode="after")
    def _index_in_range(self):
        if self.index >= self.parts:
            raise ValueError(f"index must be less than parts ({self.parts}): the groups are numbered 0 to "
                             f"{self.parts - 1}, got {self.index}")
        return self


class ChannelShuffle(_Layer):
    """Interleaves channel groups (PyTorch nn.ChannelShuffle; ShuffleNet)."""
    type: Literal["channel_shuffle"]
    groups: PositiveInt = Field(description="number of groups; must divide C")


LAYER_CLASSES: dict[str, type[_Layer]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls
    for cls in (Conv2d, BatchNorm, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, MaxPool, AvgPool, GlobalAvgPool,
                Flatten, Dropout, Dense, Add, Concat,
                ReLU6, SiLU, HardSwish, HardSigmoid, GELU, LayerNorm, GroupNorm, LRN, AdaptiveAvgPool, Multiply,
                ChannelSplit, ChannelShuffle)
}
LAYER_TYPES = tuple(LAYER_CLASSES)
# A Union built from the registry (the `X | Y` form cannot take a tuple).
Layer = Annotated[Union[tuple(LAYER_CLASSES.values())], Field(discriminator="type")]  # noqa: UP007


class Loss(_Model):
    type: Literal["cross_entropy", "mse", "bce_with_logits", "multi_margin"] = Field(
        description="cross_entropy: logits with integer or probability targets; mse; bce_with_logits; "
        "multi_margin: the multiclass hinge (SVM) loss, PyTorch's MultiMarginLoss (p 1, margin 1)")
    reduction: Literal["mean", "sum"] = Field("mean", description="over the batch (and elements, for mse)")


Multiplier = Annotated[float, Field(ge=0.0)]


class StepSchedule(_Model):
    """lr * gamma ** (t // step_size): PyTorch's StepLR (Caffe's lr_policy "step")."""
    type: Literal["step"]
    step_size: PositiveInt = Field(description="epochs (or steps) between two decays")
    gamma: Annotated[float, Field(gt=0.0)] = Field(0.1, description="factor applied every step_size")
    per: Literal["epoch", "step"] = Field("epoch", description="what t counts: epochs (PyTorch's usual "
                                          "scheduler.step() per epoch) or optimizer steps (Caffe's iterations)")


class CosineSchedule(_Model):
    """eta_min + (lr - eta_min) * (1 + cos(pi * t / t_max)) / 2: PyTorch's CosineAnnealingLR."""
    type: Literal["cosine"]
    t_max: PositiveInt = Field(description="epochs (or steps) of a half cosine period")
    eta_min: Annotated[float, Field(ge=0.0)] = Field(0.0, description="the learning rate at t = t_max")
    per: Literal["epoch", "step"] = Field("epoch", description="what t counts: epochs or optimizer steps")


SCHEDULE_CLASSES: dict[str, type[_Model]] = {"step": StepSchedule, "cosine": CosineSchedule}
Schedule = Annotated[Union[StepSchedule, CosineSchedule], Field(discriminator="type")]  # noqa: UP007


class _Optimizer(_Model):
    lr_mult: dict[str, Multiplier] | None = Field(
        None, description="learning-rate multipliers by parameter name or pattern ('*.bias': 2), Caffe's lr_mult; "
        "the first key that matches a parameter applies, else 1")
    decay_mult: dict[str, Multiplier] | None = Field(
        None, description="weight-decay multipliers by parameter name or pattern ('*.bias': 0), Caffe's "
        "decay_mult; the first key that matches applies, else 1")
    schedule: Schedule | None = Field(None, description="learning-rate schedule: step or cosine")


class SGD(_Optimizer):
    """SGD exactly as PyTorch: g += wd*w; b = momentum*b + (1 - dampening)*g; w -= lr*(g + momentum*b or b)."""
    type: Literal["sgd"] = "sgd"
    lr: Annotated[float, Field(gt=0.0)] = Field(0.01, description="learning rate, > 0")
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


def _betas(v):
    if len(v) != 2:
        raise ValueError(f"must be a list of 2 numbers [beta1, beta2], got a list of {len(v)}")
    if not all(0.0 <= b < 1.0 for b in v):
        raise ValueError(f"each beta must be in [0, 1), got {v}")
    return v


Betas = Annotated[list[float], AfterValidator(_betas), WithJsonSchema(
    {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "minItems": 2,
     "maxItems": 2, "description": "[beta1, beta2], each in [0, 1)"})]


class Adam(_Optimizer):
    """Adam exactly as torch.optim.Adam (weight_decay is L2: added to the gradient)."""
    type: Literal["adam"]
    lr: Annotated[float, Field(gt=0.0)] = Field(0.001, description="learning rate, > 0")
    betas: Betas = Field([0.9, 0.999], description="decay rates of the gradient's mean and of its square")
    eps: Annotated[float, Field(ge=0.0)] = Field(1e-8, description="added to the denominator")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(0.0, description="L2 penalty added to the gradient")
    amsgrad: bool = Field(False, description="divide by the largest second moment so far (AMSGrad)")


class AdamW(_Optimizer):
    """AdamW exactly as torch.optim.AdamW (decoupled weight decay: w -= lr * weight_decay * w first)."""
    type: Literal["adamw"]
    lr: Annotated[float, Field(gt=0.0)] = Field(0.001, description="learning rate, > 0")
    betas: Betas = Field([0.9, 0.999], description="decay rates of the gradient's mean and of its square")
    eps: Annotated[float, Field(ge=0.0)] = Field(1e-8, description="added to the denominator")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(0.01, description="decoupled decay (PyTorch's default "
                                                         "0.01)")
    amsgrad: bool = Field(False, description="divide by the largest second moment so far (AMSGrad)")


class RMSprop(_Optimizer):
    """RMSprop exactly as torch.optim.RMSprop."""
    type: Literal["rmsprop"]
    lr: Annotated[float, Field(gt=0.0)] = Field(0.01, description="learning rate, > 0")
    alpha: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.99, description="decay rate of the squared gradient's "
                                                           "average")
    eps: Annotated[float, Field(ge=0.0)] = Field(1e-8, description="added to the denominator")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(0.0, description="L2 penalty added to the gradient")
    momentum: Annotated[float, Field(ge=0.0)] = Field(0.0, description="momentum of the update")
    centered: bool = Field(False, description="divide by the gradient's estimated variance instead of its "
                           "second moment")


OPTIMIZER_CLASSES: dict[str, type[_Model]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def _optimizer_tag(v):
    """The optimizer's type; a mapping without one is SGD (as before there were others)."""
    if isinstance(v, dict):
        return v.get("type", "sgd")
    return getattr(v, "type", "sgd")


Optimizer = Annotated[Union[tuple(Annotated[cls, Tag(name)] for name, cls in OPTIMIZER_CLASSES.items())],  # noqa: UP007
                      Discriminator(_optimizer_tag)]


class Init(_Model):
    seed: Annotated[int, Field(ge=0, lt=2**63)] = Field(0, description="seeds initial values and dropout masks")
    scheme: Literal["torch_default", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "zeros"] = Field(
        "torch_default", description="weight initialisation; batch-norm gamma 1, beta 0")


WeightValue = Annotated[str | float | list, WithJsonSchema(
    {"anyOf": [{"type": "string", "description": "path to a .npy file, relative to the spec"},
               {"type": "number"}, {"type": "array", "description": "nested lists of numbers"}]})]


class Spec(_Model):
    cnnspec: Literal[1] = Field(description="format version")
    name: str = Field(pattern=SPEC_NAME_PATTERN, description="the model's name: letters, digits, '_', '.', '-'")
    description: str | None = None
    input: Input
    layers: list[Layer] = Field(min_length=1, description="run in order; `inputs` makes a DAG")
    output: str | None = Field(None, description="which layer is the model output (default: the last)")
    loss: Loss | None = None
    optimizer: Optimizer = Field(default_factory=SGD)
    init: Init = Field(default_factory=Init)
    weights: str | dict[str, WeightValue] | None = Field(
        None, description="explicit parameter values by state_dict name, or a path to one .npz")

    _document: Document | None = PrivateAttr(None)
    _graph: Any = PrivateAttr(None)

    @property
    def document(self) -> Document | None:
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
    def source_path(self) -> str | None:
        d = self._document
        return d.filename if d is not None and d.filename != "<string>" else None


def json_schema() -> dict:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cnnspec model spec"
    return schema


# ---------------------------------------------------------------- pydantic errors -> positioned problems

_UNION_FIELDS = {"kernel": "an integer or [height, width]", "stride": "an integer or [height, width]",
                 "dilation": "an integer or [height, width]", "output_size": "an integer or [height, width]",
                 "padding": "an integer, [height, width], 'same' or 'valid'",
                 "weights": "a path to a .npz file or a mapping of parameter names to values",
                 "type": None}
_PY_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
             type(None): "null"}
_PATTERNS = {NAME_PATTERN: "letters, digits, '_' and '-', starting with a letter or '_'",
             SPEC_NAME_PATTERN: "letters, digits, '_', '.' and '-'"}
_TYPE_WORDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
               "string_type": "a string", "list_type": "a list", "dict_type": "a mapping of keys to values",
               "model_type": "a mapping of keys to values", "model_attributes_type": "a mapping of keys to values"}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}
_WEIGHT_VALUE = "a number, nested lists of numbers, or a path to a .npy file"


def describe_value(value: Any) -> str:
    """'3' (string), [1, 2] (list): a value as a message quotes it."""
    kind = _PY_TYPES.get(type(value), type(value).__name__)
    if isinstance(value, (list, dict)) and len(value) > 20:
        return f"a {kind} of {len(value)} items"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({kind})"


SUGGEST_MAX_WORD = 64  # longer words (a hostile file's keys) get no suggestion
SUGGEST_MAX_CHOICES = 1_000  # nor do words with more choices than this
SUGGEST_MAX_WORK = 200_000  # letter pairs compared for one suggestion (difflib's ratio; ~25 ms at worst)
MAX_SUGGESTIONS = 100  # suggestions made for one file's validation errors; later mistakes get none


def did_you_mean(word: str, choices) -> str:
    """"; did you mean 'kernel'?" for the closest choice (difflib's ratio of at least 0.6), or "" (closest)."""
    best = closest(word, choices)
    return f"; did you mean '{best}'?" if best is not None else ""


def closest(word: str, choices) -> Optional[str]:
    """The closest choice (difflib's ratio of at least 0.6), or None.

    What difflib.get_close_matches(word, choices, n=1, cutoff=0.6) gives, with its cost bounded whatever
    the input: nothing for a word longer than SUGGEST_MAX_WORD, for more than SUGGEST_MAX_CHOICES
    choices, or when the choices close enough in length and letters would take more than SUGGEST_MAX_WORK
    letter comparisons."""
    word = str(word)
    if len(word) > SUGGEST_MAX_WORD:
        return None
    picked = list(itertools.islice(choices, SUGGEST_MAX_CHOICES + 1))
    if len(picked) > SUGGEST_MAX_CHOICES:
        return None
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(word)
    best, work = None, 0
    for choice in map(str, picked):
        matcher.set_seq1(choice)
        # The same cheap bounds get_close_matches tries first: length, then letters in common.
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            work += len(word) * len(choice)
            if work > SUGGEST_MAX_WORK:
                return None
            score = matcher.ratio()
            if score >= 0.6 and (best is None or (score, choice) > best):
                best = (score, choice)
    return best[1] if best else None


@dataclass(frozen=True)
class Vocabulary:
    """What a YAML format calls its parts, so specs and assignments share one error translation."""

    root: str                                        # the file as a whole: "spec", "assignment"
    where: Callable[[tuple, Any], str]               # how a message names the place at a path
    model_for: Callable[[tuple, Any], Optional[type[BaseModel]]]  # the model whose keys live at a path
    # list key -> (classes by tag, tag key, what a tag is called, plural for the list of valid ones)
    tagged: dict[str, tuple[dict[str, type], str, str, str]] = field(default_factory=dict)
    union_fields: dict[str, Optional[str]] = field(default_factory=dict)  # field -> "expected ..." text
    field_names: frozenset[str] = frozenset()        # real keys (a union member label is not one)


def _fmt_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _where(path: tuple, data: Any) -> str:
    """'layer 2 ('conv1', conv2d)' or 'input.shape' - how messages name a place."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        layer = lookup(data, path[:2])
        who = f"layer {path[1] + 1}"
        if isinstance(layer, dict):
            bits = [repr(layer["name"])] if isinstance(layer.get("name"), str) else []
            if isinstance(layer.get("type"), str):
                bits.append(layer["type"])
            if bits:
                who += f" ({', '.join(bits)})"
        rest = _fmt_path(path[2:])
        return f"{who}{': ' + rest if rest else ''}"
    if len(path) >= 2 and path[0] == "weights" and isinstance(path[1], str):
        return f"weights: '{path[1]}'" + _fmt_path(path[2:])
    return _fmt_path(path) or "spec"


def _model_for(path: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model whose keys live at `path` (for listing valid keys)."""
    if not path:
        return Spec
    if path[0] == "layers" and len(path) == 2:
        try:
            return LAYER_CLASSES.get(data["layers"][path[1]]["type"])
        except (KeyError, IndexError, TypeError):
            return None
    if path == ("optimizer",):
        return OPTIMIZER_CLASSES.get(_optimizer_tag(lookup(data, path)))
    if path == ("optimizer", "schedule"):
        return SCHEDULE_CLASSES.get(lookup(data, path + ("type",)))
    if len(path) == 1:
        return {"input": Input, "loss": Loss, "init": Init}.get(path[0])
    return None


def _normalize_loc(loc: list, data: Any, vocabulary: Vocabulary) -> tuple[tuple, bool]:
    """pydantic's error location -> the path in the user's data, and whether it went through a union."""
    # Tagged union: ('layers', 0, 'conv2d', 'kernel') -> ('layers', 0, 'kernel').
    if len(loc) >= 3 and loc[0] in vocabulary.tagged and isinstance(loc[1], int) \
            and loc[2] in vocabulary.tagged[loc[0]][0]:
        del loc[2]
    # Tagged mappings: ('optimizer', 'adam', 'schedule', 'step', 'gamma') -> ('optimizer', 'schedule', 'gamma').
    i = 0
    while i < len(loc) - 1:
        owner = loc[i]
        if isinstance(owner, str) and owner in vocabulary.tagged and not isinstance(loc[i + 1], int) \
                and loc[i + 1] in vocabulary.tagged[owner][0]:
            del loc[i + 1]
        i += 1
    # weights: ('weights', 'dict[str,...]', 'fc.weight', 'float') -> ('weights', 'fc.weight').
    if loc and loc[0] == "weights" and "weights" in vocabulary.union_fields and len(loc) >= 2:
        if isinstance(loc[1], str) and loc[1].startswith("dict[") and len(loc) >= 3:
            return ("weights", loc[2]), True
        if isinstance(data, dict) and isinstance(data.get("weights"), dict):
            return None, True  # a mapping: its entries' own errors say what is wrong
        return ("weights",), True
    # Union members: ('kernel', 'list[int]', 1) -> ('kernel',), reported once.
    for i, part in enumerate(loc):
        if isinstance(part, str) and part in vocabulary.union_fields and i + 1 < len(loc) \
                and isinstance(loc[i + 1], str) and loc[i + 1] not in vocabulary.field_names:
            return tuple(loc[: i + 1]), True
    return tuple(loc), False


def problems_from_validation(exc: ValidationError, doc: Document, vocabulary: Optional[Vocabulary] = None,
                             prefix: tuple = ()) -> list[Problem]:
    """Turn pydantic's error list into one positioned, readable problem per mistake.

    vocabulary: how the format names its parts (default: specs). prefix: where in `doc` the validated
    mapping sits, when it is nested (an assignment's data entry)."""
    vocabulary = vocabulary or SPEC_VOCABULARY
    where_of, model_for = vocabulary.where, vocabulary.model_for
    data = doc.data
    found: list[tuple[Problem, tuple, str, str | None]] = []  # problem, path, kind, suggested key
    seen: set[tuple] = set()
    suggestions = 0

    def suggest(word, choices) -> str:
        """did_you_mean for the first MAX_SUGGESTIONS mistakes (a file may have thousands)."""
        nonlocal suggestions
        suggestions += 1
        return did_you_mean(word, choices) if suggestions <= MAX_SUGGESTIONS else ""

    for err in exc.errors(include_url=False):
        path, collapsed = _normalize_loc(list(prefix) + list(err["loc"]), data, vocabulary)
        if path is None:
            continue
        kind = err["type"]
        ctx = err.get("ctx") or {}
        value = err.get("input")
        where = where_of(path, data)
        key = False
        suggested = None
        if collapsed and kind not in ("value_error", "assertion_error"):
            if path in seen:
                continue
            actual = lookup(data, path)
            if path[0] == "weights" and len(path) == 2:
                msg = f"{where} must be {_WEIGHT_VALUE}, got {describe_value(actual)}"
            else:
                want = _UNION_FIELDS.get(path[-1]) or "a valid value"
                if path[-1] == "padding" and lookup(data, path[:-1] + ("type",)) != "conv2d":
                    want = "an integer or [height, width] ('same' and 'valid' are for conv2d)"
                msg = f"{where}: expected {want}, got {describe_value(actual)}"
        elif kind == "extra_forbidden":
            unknown = path[-1]
            model = model_for(path[:-1], data)
            valid = sorted(model.model_fields) if model else []
            owner = vocabulary.root if len(path) == 1 else where_of(path[:-1], data)
            hint = suggest(unknown, valid)
            suggested = hint.split("'")[1] if hint else None
            msg = f"unknown key '{shorten(unknown)}' in {owner}{hint}"
            if valid:
                msg += f" (valid keys: {', '.join(valid)})"
            key = True
        elif kind == "missing":
            msg = f"{where_of(path[:-1], data) if len(path) > 1 else vocabulary.root}: missing required key '{path[-1]}'"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            classes, tag_key, noun, plural = vocabulary.tagged[next(p for p in reversed(path) if isinstance(p, str))]
            choices = ", ".join(classes)
            if kind == "union_tag_not_found":
                msg = f"{where}: missing required key '{tag_key}' (one of: {choices})"
            else:
                tag = ctx.get("tag")
                msg = (f"{where}: unknown {noun} '{shorten(tag)}'{suggest(tag, classes)} "
                       f"(valid {plural}: {choices})")
            path = path + (tag_key,)
        elif kind == "literal_error":
            choices = _literal_choices(ctx.get("expected", ""))
            if len(choices) == 1:
                msg = f"{where}: must be {ctx.get('expected', '')}, got {describe_value(value)}"
            else:
                msg = f"{where}: must be one of {', '.join(choices)}; got {describe_value(value)}"
            if isinstance(value, str) and value in choices:
                msg += " (write it without quotes)"
            elif not any(isinstance(value, str) and str(c) == value for c in choices):
                msg += suggest(value, choices)
        elif kind in ("value_error", "assertion_error"):
            text = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            msg = f"{where}: {text}"
        elif kind == "string_pattern_mismatch":
            rule = _PATTERNS.get(ctx.get("pattern"), f"match {ctx.get('pattern')}")
            msg = f"{where}: must be {rule}; got {describe_value(value)}"
        elif kind in ("too_short", "too_long"):
            n = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
            item = "item" if n == 1 else "items"
            msg = (f"{where}: must have {'at least' if kind == 'too_short' else 'at most'} {n} {item}, "
                   f"got {ctx.get('actual_length')}: {describe_value(value)}")
        elif kind in _BOUNDS:
            bound_key, op = _BOUNDS[kind]
            msg = f"{where}: must be {op} {ctx.get(bound_key)}, got {describe_value(value)}"
        elif kind == "finite_number":
            msg = f"{where}: must be a finite number, got {describe_value(value)}"
        elif kind in _TYPE_WORDS:
            msg = f"{where}: expected {_TYPE_WORDS[kind]}, got {describe_value(value)}"
            if isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n"):
                msg += " (cnnspec reads YAML 1.2: yes/no/on/off are text; write true or false)"
            elif kind in ("float_type", "int_type") and isinstance(value, str) and _looks_numeric(value):
                msg += " (write numbers without quotes)"
            elif kind == "int_type" and isinstance(value, float) and value.is_integer():
                msg += f" (write {int(value)})"
        else:
            text = err["msg"]
            msg = f"{where}: {text[:1].lower() + text[1:]}, got {describe_value(value)}"
        seen.add(path)
        found.append((doc.problem(msg, path, key=key), path, kind, suggested))

    # A misspelled required key is one mistake: keep "unknown key 'kernal' ... did you mean 'kernel'?"
    # and drop the "missing required key 'kernel'" it causes.
    typo_fixes = {(path[:-1], suggested) for _, path, kind, suggested in found if suggested}
    return [problem for problem, path, kind, _ in found
            if not (kind == "missing" and (path[:-1], path[-1]) in typo_fixes)]


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _field_names() -> set[str]:
    names: set[str] = set()
    for cls in (*LAYER_CLASSES.values(), *OPTIMIZER_CLASSES.values(), *SCHEDULE_CLASSES.values(), Input, Loss, Init,
                Spec):
        names.update(cls.model_fields)
    return names - set(_UNION_FIELDS)


SPEC_VOCABULARY = Vocabulary("spec", _where, _model_for, {"layers": (LAYER_CLASSES, "type", "layer type", "types"),
                                                          "optimizer": (OPTIMIZER_CLASSES, "type", "optimizer type",
                                                                        "types"),
                                                          "schedule": (SCHEDULE_CLASSES, "type", "schedule type",
                                                                       "types")},
                             _UNION_FIELDS, frozenset(_field_names()))


def _literal_choices(expected: str) -> list[str]:
    return [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]


def lookup(data: Any, path: tuple) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def validate(doc: Document) -> Spec:
    """Validate a loaded YAML document against the spec models; raise SpecError listing every problem."""
    if doc.data is None:
        raise doc.error([doc.problem("the spec has no content (only comments or blank lines); expected a mapping "
                                     "with keys cnnspec, name, input, layers, ...")])
    if not isinstance(doc.data, dict):
        raise doc.error([doc.problem(f"a spec is a mapping with keys cnnspec, name, input, layers, ...; "
                                     f"got {describe_value(doc.data)}")])
    try:
        spec = Spec.model_validate(doc.data)
    except ValidationError as exc:
        raise doc.error(problems_from_validation(exc, doc)) from None
    spec._document = doc
    return spec
