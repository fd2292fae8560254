"""Any model given as an ONNX graph, split into the kernels a phone model prices.

Why: the per-kernel phone model (`kernels.py`) prices a list of `Kernel`s, and `decompose` makes
that list from a torch module. A user who ships a model as an ONNX file (exported from any
framework, or a model we cannot rebuild in torch) must be priced through the same kernels, split
by the same rules, or the two paths would disagree about what a model costs.

`onnx_kernels` loads the file, fixes its dynamic input dimensions (the batch defaults to 1, any
other comes from `input_shape`), folds the shape arithmetic exporters write (onnxscript's constant
folder, so that every Reshape has a static target), infers every tensor's shape (onnx's inference,
strict where it can be) and maps each node to kernels with `decompose`'s rules, which follow
TFLite's fp32 graph:

- Conv: `conv` (dense, kernel > 1), `conv1x1`, `dwconv` (groups == input channels), `gconv`
  (other groups > 1); MACs = output elements x input channels per group x window. ConvTranspose:
  `tconv`, MACs = input elements x output channels per group x window.
- Gemm, and MatMul with a constant 2-D operand: `fc`; an Add of a 1-D tensor right after a dense
  layer or matmul is its bias (free, its bytes join the dense layer's). MatMul of two activations:
  `matmul`, gemm = (batch, M, N, K) as a batched matrix product.
- BatchNormalization after a convolution is folded into it (free; a bias-less convolution gains the
  bias the fold gives it, as in TFLite), else `batchnorm`. Relu, and Clip as ReLU6 (or -1..1),
  right after a conv / dense / matmul / element-wise kernel are fused into it.
- Softmax; LayerNormalization and the decomposition older exporters write (ReduceMean, Sub, Pow,
  ReduceMean, Add, Sqrt, Div[, Mul, Add]) are one `layernorm`; Gelu and the erf form torch's
  exporters write (x * 0.5 * (1 + erf(x / sqrt 2))) are one `gelu`; x * Sigmoid(x) (SiLU) is one
  `activation`, as aten's silu; other unary functions are `activation`; binary arithmetic,
  comparisons and Where are `elementwise`; reductions and pooling are `pool`; Resize is `resize`.
- Copies (Transpose, Slice, Concat, Pad, Split, Tile, Expand, Gather, depth/space moves, a Cast
  that changes the type) are `layout`, unless they move nothing (a transpose of size-1 axes, a
  slice of everything); views (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout) are free.
- A node whose inputs are all constants is folded by the converter: free, and its outputs are
  constants. Constants of more than one element are weights (`Kernel.weights`); one-element
  constants are scalar operands and, like torch's Python scalars, count no bytes.

Any other op is an error that names it: a kernel never costs a silent zero. Where the split
differs from `decompose`'s for the same model (layout copies: aten copies a transposed view only
where a kernel needs it contiguous, ONNX writes every Transpose and Slice), tests/test_graph.py
says how.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.checker
import onnx.inliner
from onnx import numpy_helper, shape_inference

from lglsearch.cost.kernels import Kernel, fp32_bytes
from lglsearch.errors import LglsearchError

__all__ = ["onnx_kernels"]

_CONVS = frozenset({"conv", "conv1x1", "dwconv", "gconv", "tconv"})
_FUSES_ACTIVATION = _CONVS | {"fc", "matmul", "elementwise"}  # TFLite's fused RELU / RELU6 after these
_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
_ACTIVATIONS = frozenset(
    {"HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Relu"}
    | {"LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu"}
    | {"Sin", "Cos", "Floor", "Ceil", "Round", "Sign"}
)
_ELEMENTWISE = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Where", "Max", "Min", "Mean", "Sum", "Neg", "Abs", "Mod"}
    | {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not"}
)
_POOLS = frozenset(
    {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "GlobalAveragePool", "GlobalMaxPool"}
    | {"AveragePool", "MaxPool", "LpPool"}
)
_NORMS = frozenset({"LayerNormalization", "GroupNormalization", "InstanceNormalization"})  # a row normalised
_COPIES = frozenset(
    {"Transpose", "Slice", "Concat", "Pad", "Split", "Tile", "Expand", "DepthToSpace", "SpaceToDepth"}
    | {"Gather", "GatherElements", "GatherND", "Cast", "CastLike"}
)
_SHAPE_INPUT = "pass the model's input shape (input_shape=(1, 3, H, W), --input-shape 1,3,H,W on the command line)"


def onnx_kernels(model: str | Path | onnx.ModelProto, input_shape: Sequence[int] | None = None) -> list[Kernel]:
    """The kernels of one inference of an ONNX model, as a TFLite fp32 runtime runs them (see the
    module docstring). `input_shape` fixes the graph input's dynamic dimensions (the first input's,
    where there are several); without it a dynamic batch is 1 and any other dynamic dimension is an
    error. The model passed as a `ModelProto` is left as it was."""
    proto, name = _load(model)
    proto = _static(proto, name, input_shape)
    return _Splitter(proto, name).split()


def _load(model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy, model.graph.name or "the model"
    path = Path(model)
    fix = "give an .onnx file written by torch.onnx.export or onnx.save"
    if not path.is_file():
        raise LglsearchError(f"ONNX file {path} does not exist; {fix}")
    try:
        proto = onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError, a missing external-data file, an unreadable file ...
        raise LglsearchError(f"{path} is not a readable ONNX model ({type(err).__name__}); {fix}") from None
    if not proto.graph.node or not proto.ir_version:  # protobuf reads some foreign bytes as an empty message
        raise LglsearchError(f"{path} is not an ONNX model (no graph nodes); {fix}")
    return proto, str(path)


def _static(proto: onnx.ModelProto, name: str, input_shape: Sequence[int] | None) -> onnx.ModelProto:
    """The model with static input shapes, local functions inlined, the shape arithmetic folded and
    every shape inferred."""
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    local = {(f.domain, f.name) for f in proto.functions}
    for node in proto.graph.node:  # ops without a schema break the folding and inference below
        if not onnx.defs.has(node.op_type, node.domain) and (node.domain, node.op_type) not in local:
            raise _unknown(node)
    _fix_inputs(proto, name, input_shape)
    del proto.graph.value_info[:]  # stale symbolic shapes; inferred again below
    try:
        import onnxscript.optimizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # ConstantOfShape is kept by default; torch's exporter builds Expand targets from it
            onnxscript.optimizer.fold_constants(
                proto, onnx_shape_inference=True, should_fold=lambda n: n.op_type == "ConstantOfShape" or None
            )
    except Exception:  # folding is an aid: without it, a shape it would have fixed is reported below
        pass
    try:
        return shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (shape_inference.InferenceError, onnx.checker.ValidationError):
        return shape_inference.infer_shapes(proto, data_prop=True)  # what can be inferred; gaps named later


def _fix_inputs(proto: onnx.ModelProto, name: str, input_shape: Sequence[int] | None) -> None:
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if input_shape is not None and (not inputs or any(not isinstance(d, int) or d <= 0 for d in input_shape)):
        raise LglsearchError(f"input shape must be positive integers, got {tuple(input_shape)!r}")
    for position, value in enumerate(inputs):
        tensor = value.type.tensor_type
        dims = list(tensor.shape.dim) if tensor.HasField("shape") else None
        given = tuple(input_shape) if input_shape is not None and position == 0 else None
        if given is not None:
            declared = [d.dim_value if d.HasField("dim_value") else None for d in dims] if dims is not None else None
            if declared is not None and (
                len(declared) != len(given)
                or any(d is not None and d != g for d, g in zip(declared, given, strict=True))
            ):
                shown = tuple(d.dim_value or d.dim_param or "?" for d in dims)
                raise LglsearchError(
                    f"input {value.name!r} of {name} has shape {shown}, which input shape {given} does not fit; "
                    "give its static dimensions as they are"
                )
            del tensor.shape.dim[:]
            for size in given:
                tensor.shape.dim.add().dim_value = size
            continue
        if dims is None:
            raise LglsearchError(f"input {value.name!r} of {name} has no declared shape; {_SHAPE_INPUT}")
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis > 0:
                shown = tuple(d.dim_value or d.dim_param or "?" for d in dims)
                raise LglsearchError(
                    f"input {value.name!r} of {name} has a dynamic dimension {dim.dim_param or '?'!r} "
                    f"(shape {shown}); {_SHAPE_INPUT}"
                )
            dim.Clear()
            dim.dim_value = 1  # a dynamic batch: one image, as decompose prices


def _unknown(node: onnx.NodeProto) -> LglsearchError:
    op = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
    return LglsearchError(
        f"ONNX op {op!r} (node {node.name or node.output[0]!r}) has no kernel type, so the model cannot be "
        "priced; replace the op or map it in lglsearch/cost/graph.py"
    )


@dataclass(frozen=True)
class _Pattern:
    """Several nodes run as one kernel (a decomposed GELU or LayerNorm, SiLU)."""

    type: str
    op: str
    inputs: tuple[str, ...]
    output: str


class _Splitter:
    """Walks the graph in its (topological) order, kernel by kernel."""

    def __init__(self, proto: onnx.ModelProto, name: str) -> None:
        graph = proto.graph
        self.name = name
        self.nodes = list(graph.node)
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.dtypes: dict[str, int] = {}
        for value in [*graph.input, *graph.output, *graph.value_info]:
            tensor = value.type.tensor_type
            self.dtypes[value.name] = tensor.elem_type
            if tensor.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
                self.shapes[value.name] = dims if all(d >= 0 for d in dims) else None
        self.const: set[str] = set()
        self.values: dict[str, np.ndarray] = {}  # small constants' values (pattern and Clip bounds)
        for tensor in graph.initializer:
            self._constant(tensor.name, tuple(tensor.dims), tensor.data_type)
            if math.prod(tensor.dims) <= 16:
                self.values[tensor.name] = numpy_helper.to_array(tensor)
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute:
                value = _constant_value(node)
                if value is not None and value.size <= 16:
                    self.values[node.output[0]] = value
        self.index = {id(node): i for i, node in enumerate(self.nodes)}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for out in node.output:
                self.producer[out] = i
            for name_ in node.input:
                self.consumers.setdefault(name_, []).append(i)
        self.outputs = {o.name for o in graph.output}
        self.kernels: list[Kernel] = []
        self.kind: dict[str, str] = {}  # tensor -> the type of the kernel that made it (through free ops)
        self.made_by: dict[str, int] = {}  # tensor -> index of that kernel in self.kernels
        self.biased: set[int] = set()  # convolution kernels that have a bias

    def _constant(self, name: str, shape: tuple[int, ...] | None, dtype: int) -> None:
        self.const.add(name)
        self.shapes[name] = shape
        self.dtypes[name] = dtype

    # --- patterns -------------------------------------------------------------------------------

    def _only(self, tensor: str) -> onnx.NodeProto | None:
        """The one node that reads `tensor` (None if several, none, or it is a graph output)."""
        readers = self.consumers.get(tensor, [])
        return self.nodes[readers[0]] if len(readers) == 1 and tensor not in self.outputs else None

    def _value(self, tensor: str) -> float | None:
        value = self.values.get(tensor)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def _is(self, tensor: str, target: float) -> bool:
        value = self._value(tensor)
        return value is not None and abs(value - target) <= 1e-4 * abs(target)

    def _other(self, node: onnx.NodeProto, tensor: str) -> str | None:
        """The other operand of a binary node that reads `tensor`."""
        if len(node.input) != 2 or tensor not in node.input:
            return None
        return node.input[1] if node.input[0] == tensor else node.input[0]

    def _gelu(self, erf: onnx.NodeProto) -> tuple[list[onnx.NodeProto], _Pattern] | None:
        """x * 0.5 * (1 + erf(x / sqrt 2)), in the orders torch's exporters write it."""
        if erf.input[0] not in self.producer:
            return None
        scale = self.nodes[self.producer[erf.input[0]]]
        divided = scale.op_type == "Div" and self._is(scale.input[1], math.sqrt(2))
        if divided or (scale.op_type == "Mul" and self._is(scale.input[1], math.sqrt(0.5))):
            x = scale.input[0]
        elif scale.op_type == "Mul" and self._is(scale.input[0], math.sqrt(0.5)):
            x = scale.input[1]
        else:
            return None
        add = self._only(erf.output[0])
        if self._only(scale.output[0]) is not erf or add is None or add.op_type != "Add":
            return None
        if not self._is(self._other(add, erf.output[0]) or "", 1.0):
            return None
        outer = self._only(add.output[0])
        if outer is None or outer.op_type != "Mul":
            return None
        other = self._other(outer, add.output[0]) or ""
        last = self._only(outer.output[0])
        then = (self._other(last, outer.output[0]) or "") if last is not None and last.op_type == "Mul" else ""
        if (other == x and self._is(then, 0.5)) or (self._is(other, 0.5) and then == x):  # (x * a) * 0.5, 0.5 * a * x
            found = [scale, erf, add, outer, last]
        elif other in self.producer and self._only(other) is outer:  # (x * 0.5) * a
            half = self.nodes[self.producer[other]]
            if half.op_type != "Mul" or not self._is(self._other(half, x) or "", 0.5):
                return None
            found = [half, scale, erf, add, outer]
        else:
            return None
        return found, _Pattern("gelu", "Gelu(erf)", (x,), found[-1].output[0])

    def _layernorm(self, mean: onnx.NodeProto) -> tuple[list[onnx.NodeProto], _Pattern] | None:
        """(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) [* gamma + beta]."""
        x = mean.input[0]
        sub = self._only(mean.output[0])
        if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, mean.output[0]]:
            return None
        readers = [self.nodes[i] for i in self.consumers.get(sub.output[0], [])]
        square = next((n for n in readers if n.op_type == "Pow" and self._is(n.input[1], 2.0)), None)
        div = next((n for n in readers if n.op_type == "Div" and n.input[0] == sub.output[0]), None)
        if len(readers) != 2 or square is None or div is None or sub.output[0] in self.outputs:
            return None
        chain = [square]
        for op in ("ReduceMean", "Add", "Sqrt"):
            step = self._only(chain[-1].output[0])
            if step is None or step.op_type != op:
                return None
            chain.append(step)
        if self._value(self._other(chain[2], chain[1].output[0]) or "") is None:
            return None  # the Add is + eps, a scalar constant
        if self._only(chain[-1].output[0]) is not div or div.input[1] != chain[-1].output[0]:
            return None
        found, params = [mean, sub, *chain, div], []
        for op in ("Mul", "Add"):  # the affine part, if any
            step = self._only(found[-1].output[0])
            operand = self._other(step, found[-1].output[0]) if step is not None and step.op_type == op else None
            if operand is None or operand not in self.const:
                break
            found.append(step)
            params.append(operand)
        return found, _Pattern("layernorm", "LayerNormalization(decomposed)", (x, *params), found[-1].output[0])

    def _silu(self, sigmoid: onnx.NodeProto) -> tuple[list[onnx.NodeProto], _Pattern] | None:
        mul = self._only(sigmoid.output[0])
        if mul is None or mul.op_type != "Mul" or self._other(mul, sigmoid.output[0]) != sigmoid.input[0]:
            return None
        return [sigmoid, mul], _Pattern("activation", "Silu", (sigmoid.input[0],), mul.output[0])

    def _patterns(self) -> tuple[set[int], dict[int, _Pattern]]:
        """Nodes that a pattern absorbs, and the pattern each pattern's last node stands for."""
        absorbed: set[int] = set()
        at: dict[int, _Pattern] = {}
        matchers = {"Erf": self._gelu, "ReduceMean": self._layernorm, "Sigmoid": self._silu}
        for i, node in enumerate(self.nodes):
            matcher = matchers.get(node.op_type)
            if matcher is None or i in absorbed or not node.input or node.input[0] in self.const:
                continue
            match = matcher(node)
            if match is None:
                continue
            found, pattern = match
            indices = [self.index[id(n)] for n in found]
            if absorbed.intersection(indices):
                continue
            absorbed.update(indices)
            at[max(indices)] = pattern
        return absorbed, at

    # --- the walk -------------------------------------------------------------------------------

    def split(self) -> list[Kernel]:
        absorbed, at = self._patterns()
        for i, node in enumerate(self.nodes):
            if i in at:
                kind, op, inputs, out = at[i].type, at[i].op, at[i].inputs, at[i].output
                self._emit(self._simple(kind, op, inputs, [out], node), [out])
            elif i not in absorbed:
                self._node(node)
        return self.kernels

    def _node(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        inputs = [t for t in node.input if t]
        if op == "Constant" or all(t in self.const for t in inputs):  # folded by the converter
            for out in node.output:
                shape = self.shapes.get(out)
                self._constant(out, shape if shape is not None else _constant_shape(node), self.dtypes.get(out, 1))
            return
        if op in ("Shape", "Size"):  # static once the input shape is fixed
            self.const.add(node.output[0])
            return
        if op in _VIEWS or self._moves_nothing(node):
            return self._pass(node)
        kernel = self._kernel(node, inputs)
        if kernel is None:  # folded or fused into the kernel that made its input
            return self._pass(node)
        self._emit(kernel, list(node.output))

    def _pass(self, node: onnx.NodeProto) -> None:
        """A free node: its output stands for the kernel that made its data input."""
        source = node.input[0] if node.input else ""
        for out in node.output:
            if source in self.kind:
                self.kind[out] = self.kind[source]
                self.made_by[out] = self.made_by[source]

    def _emit(self, kernel: Kernel, outputs: Sequence[str]) -> None:
        self.kernels.append(kernel)
        for out in outputs:
            self.kind[out] = kernel.type
            self.made_by[out] = len(self.kernels) - 1

    def _shape(self, tensor: str, node: onnx.NodeProto) -> tuple[int, ...]:
        shape = self.shapes.get(tensor)
        if shape is None:
            raise LglsearchError(
                f"the shape of {tensor!r} (node {node.name or node.output[0]!r}, {node.op_type}) in {self.name} "
                f"is not static; {_SHAPE_INPUT}"
            )
        return shape

    def _numel(self, tensor: str, node: onnx.NodeProto) -> int:
        return math.prod(self._shape(tensor, node))

    def _bytes(self, tensors: Sequence[str], node: onnx.NodeProto) -> tuple[float, float]:
        """fp32 bytes of the tensors, and of the weights among them (`kernels.fp32_bytes`)."""
        return fp32_bytes((self._numel(t, node), t in self.const) for t in tensors if t)

    def _simple(
        self, kind: str, op: str, inputs: Sequence[str], outputs: Sequence[str], node: onnx.NodeProto
    ) -> Kernel:
        total, weights = self._bytes([*inputs, *outputs], node)
        return Kernel(kind, 0.0, total, weights, op)

    def _moves_nothing(self, node: onnx.NodeProto) -> bool:
        """A copy op that leaves its data where it was: a view."""
        op = node.op_type
        if op == "Concat" or op == "Split":
            return len([t for t in node.input if t]) == 1 and len(node.output) == 1
        if op == "Cast":
            return self.dtypes.get(node.input[0]) == self.dtypes.get(node.output[0])
        if op in ("Slice", "Expand", "Tile", "Pad"):
            return self.shapes.get(node.input[0]) is not None and self.shapes.get(node.input[0]) == self.shapes.get(
                node.output[0]
            )
        if op == "Transpose":
            shape = self.shapes.get(node.input[0])
            perm = _attribute(node, "perm")
            if shape is None or perm is None:
                return False
            moved = [axis for axis in perm if shape[axis] != 1]
            return moved == sorted(moved)  # only size-1 axes move
        return False

    def _kernel(self, node: onnx.NodeProto, inputs: Sequence[str]) -> Kernel | None:
        op, out = node.op_type, node.output[0]
        if op in ("Conv", "ConvTranspose"):
            return self._conv(node)
        if op in ("Gemm", "MatMul"):
            return self._matmul(node)
        if op == "BatchNormalization":
            source = self.made_by.get(node.input[0])
            if self.kind.get(node.input[0]) in _CONVS and source is not None:
                if source not in self.biased:  # the fold gives the convolution a bias
                    size = 4.0 * self._shape(node.input[2], node)[0]
                    conv = self.kernels[source]
                    self.kernels[source] = replace(conv, bytes=conv.bytes + size, weights=conv.weights + size)
                    self.biased.add(source)
                return None
            return self._simple("batchnorm", op, inputs[:1], [out], node)
        if op in ("Relu", "Clip") and self._fusable(node):
            if self.kind.get(node.input[0]) in _FUSES_ACTIVATION:
                return None
            return self._simple("activation", op, inputs[:1], [out], node)
        bias = self._bias(node) if op == "Add" else None
        if bias is not None:
            self._fold_bias(node, bias)
            return None
        if op == "Clip":
            return self._simple("elementwise", op, inputs[:1], [out], node)  # a clamp, as aten's
        if op in _ACTIVATIONS:
            return self._simple("activation", op, inputs[:2] if op == "PRelu" else inputs[:1], [out], node)
        if op in _ELEMENTWISE:
            return self._simple("elementwise", op, inputs, [out], node)
        if op in ("Softmax", "LogSoftmax"):
            return self._simple("softmax", op, inputs[:1], [out], node)
        if op in _NORMS:
            return self._simple("layernorm", op, inputs[:3], [out], node)
        if op in _POOLS:
            return self._simple("pool", op, inputs[:1], [out], node)
        if op == "Gelu":
            return self._simple("gelu", op, inputs[:1], [out], node)
        if op in ("Resize", "Upsample"):
            return self._simple("resize", op, inputs[:1], [out], node)
        if op in _COPIES:  # what is copied: every input of a Concat, the data of the others
            return self._simple("layout", op, inputs if op == "Concat" else inputs[:1], list(node.output), node)
        raise _unknown(node)

    def _fusable(self, node: onnx.NodeProto) -> bool:
        """Relu, or a Clip that is ReLU6 or -1..1 (aten's hardtanh); other Clips are clamps."""
        if node.op_type == "Relu":
            return True
        low, high = _attribute(node, "min"), _attribute(node, "max")
        if len(node.input) > 1:
            low = self._value(node.input[1]) if node.input[1] else None
        if len(node.input) > 2:
            high = self._value(node.input[2]) if node.input[2] else None
        return (low, high) in ((0.0, 6.0), (-1.0, 1.0))

    def _bias(self, node: onnx.NodeProto) -> str | None:
        """The 1-D operand of an Add right after a dense layer or matmul (its bias), if it is one."""
        for data, bias in ((0, 1), (1, 0)):
            shape = self.shapes.get(node.input[bias])
            if self.kind.get(node.input[data]) in ("fc", "matmul") and shape is not None and len(shape) == 1:
                return node.input[bias]
        return None

    def _fold_bias(self, node: onnx.NodeProto, bias: str) -> None:
        data = node.input[0] if node.input[1] == bias else node.input[1]
        index = self.made_by[data]
        kernel = self.kernels[index]
        total, weights = self._bytes([bias], node)
        self.kernels[index] = replace(kernel, bytes=kernel.bytes + total, weights=kernel.weights + weights)
        self.kind[node.output[0]], self.made_by[node.output[0]] = kernel.type, index

    def _conv(self, node: onnx.NodeProto) -> Kernel:
        x, w, out = node.input[0], node.input[1], node.output[0]
        bias = node.input[2] if len(node.input) > 2 else ""
        weight = self._shape(w, node)
        groups = int(_attribute(node, "group") or 1)
        window = math.prod(weight[2:])
        gemm = None
        if node.op_type == "ConvTranspose":
            kind, macs = "tconv", self._numel(x, node) * weight[1] * window
        else:
            depthwise = groups > 1 and groups == self._shape(x, node)[1]
            kind = "dwconv" if depthwise else "gconv" if groups > 1 else "conv1x1" if window == 1 else "conv"
            shape = self._shape(out, node)
            macs = math.prod(shape) * weight[1] * window
            if not depthwise:
                gemm = (groups, math.prod(shape[2:]), weight[0], weight[1] * window)
        total, weights = self._bytes([x, w, bias, out], node)
        if bias:
            self.biased.add(len(self.kernels))
        return Kernel(kind, float(macs), total, weights, node.op_type, int(weight[-1]), gemm)

    def _matmul(self, node: onnx.NodeProto) -> Kernel:
        a, b, out = node.input[0], node.input[1], node.output[0]
        a_shape, b_shape, shape = self._shape(a, node), self._shape(b, node), self._shape(out, node)
        if node.op_type == "Gemm":
            trans_a, trans_b = _attribute(node, "transA") or 0, _attribute(node, "transB") or 0
            m, k = (a_shape[1], a_shape[0]) if trans_a else a_shape
            n = b_shape[0] if trans_b else b_shape[1]
            weighted = a in self.const or b in self.const
            kind, gemm = ("fc" if weighted else "matmul"), (1, m, n, k)
        else:
            k = a_shape[-1]
            n = b_shape[-1] if len(b_shape) > 1 else 1
            if b in self.const and len(b_shape) <= 2:  # a dense layer: every leading axis is a row
                kind, gemm = "fc", (1, math.prod(shape) // n, n, k)
            else:
                m = a_shape[-2] if len(a_shape) > 1 else 1
                batch = math.prod(shape) // (m * n)
                kind = "fc" if batch == 1 and a in self.const else "matmul"
                gemm = (batch, m, n, k)
        total, weights = self._bytes([t for t in node.input if t] + [out], node)
        return Kernel(kind, float(math.prod(shape) * k), total, weights, node.op_type, 0, gemm)


def _attribute(node: onnx.NodeProto, name: str) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return None


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    attribute = node.attribute[0]
    value = onnx.helper.get_attribute_value(attribute)
    if attribute.name == "value":
        return numpy_helper.to_array(value)
    if attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
        return np.asarray(value)
    return None


def _constant_shape(node: onnx.NodeProto) -> tuple[int, ...] | None:
    """The shape of a Constant node's value (None for other nodes: inference gave theirs)."""
    if node.op_type != "Constant" or not node.attribute:
        return None
    value = _constant_value(node)
    return None if value is None else tuple(value.shape)
