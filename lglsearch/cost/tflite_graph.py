"""A .tflite file split into the kernels a phone model prices: the graph a phone really runs.

Why: `decompose` and `onnx_kernels` (graph.py) follow what TFLite's converter would make of a model;
a .tflite file is what it did make. The converter may split one op into many (a depthwise
ConvTranspose2d becomes a SLICE and a TRANSPOSE_CONV per channel, since TRANSPOSE_CONV has no
groups), spell a LayerNorm as MEAN, SQUARED_DIFFERENCE, RSQRT, MUL, ADD, or leave a BatchNorm it
could not fold as SUB, MUL, MUL, ADD. Pricing the file prices those ops as they are, each its own
kernel: a decomposed LayerNorm is priced as its parts, not as one `layernorm`, because that is what
the runtime executes.

`tflite_kernels` reads the file with LiteRT's interpreter (the optional `tflite` extra; builtin
kernels, no delegate, so that the ops are the graph's own), takes every tensor's static shape, and
maps each op of the main subgraph to a kernel with graph.py's conventions (fp32 bytes = 4 x the
elements of the inputs read and the outputs written, whatever the stored type; one-element
constants are scalar operands and count no bytes; larger constants are weights). A constant is a
tensor that no op writes and that is not a graph input (its data lie in the file's buffers); the
output of a DEQUANTIZE of a constant (fp16 weights) is a constant too.

- CONV_2D: `conv` (kernel > 1), `conv1x1`, `gconv` (filter input channels < input channels, so
  groups > 1), `dwconv` where groups == input channels; DEPTHWISE_CONV_2D: `dwconv`; MACs = output
  elements x filter input channels x window. TRANSPOSE_CONV: `tconv`, MACs = input elements x
  output channels x window.
- FULLY_CONNECTED: `fc` (its bias is an input), or `matmul` where its weight operand is an
  activation (the converter writes attention's Q K^T so); BATCH_MATMUL: `matmul`, or `fc` where
  an operand is a constant (a dense layer). MACs = output elements x the reduced dimension.
- TFLite fuses RELU / RELU6 into a conv, dense layer or add as an attribute (free, inside the
  kernel); a standalone activation op is one the converter could not fuse, so it is a kernel:
  `activation` (HARD_SWISH, LOGISTIC, TANH, EXP, RSQRT, SQRT, RELU, RELU6, ...), `gelu` (GELU),
  `softmax`. Binary arithmetic, comparisons and SELECT are `elementwise`; reductions and pooling
  are `pool`; RESIZE_* are `resize`.
- Copies (TRANSPOSE, SLICE, STRIDED_SLICE, CONCATENATION, PAD, GATHER, TILE, SPLIT, PACK, a CAST
  that changes the type, ...) are `layout`, unless they move nothing (a transpose of size-1 axes,
  a slice of everything, a concatenation of one input), as in graph.py; RESHAPE, SQUEEZE,
  EXPAND_DIMS and SHAPE are free.

Any other op is an error that names it and its index: a kernel never costs a silent zero. Where
the split differs from `decompose`'s for the same model (the converter's own layout ops, such as
the NCHW-to-NHWC TRANSPOSE at the input, and the decompositions above), tests/test_tflite_graph.py
says how; the compute kernels (convolutions, dense layers, matmuls) and their MACs agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lglsearch.cost.kernels import Kernel, fp32_bytes
from lglsearch.errors import LglsearchError

__all__ = ["tflite_kernels"]

_FIX = 'pip install "lglsearch[tflite]"'
_GIVE = "give a .tflite file written by the TFLite converter (lglsearch export --tflite, litert_torch.convert)"

_FREE = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})
_ACTIVATIONS = frozenset(
    {"HARD_SWISH", "LOGISTIC", "TANH", "EXP", "RSQRT", "SQRT", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1"}
    | {"LEAKY_RELU", "PRELU", "ELU", "LOG", "SIN", "COS", "FLOOR", "CEIL", "ROUND", "SIGN"}
)
_ELEMENTWISE = frozenset(
    {"ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "POW", "NEG", "ABS", "SQUARE"}
    | {"FLOOR_DIV", "FLOOR_MOD", "ADD_N", "SELECT", "SELECT_V2", "EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL"}
    | {"GREATER", "GREATER_EQUAL", "LOGICAL_AND", "LOGICAL_OR", "LOGICAL_NOT"}
)
_POOLS = frozenset(
    {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}
)
_COPIES = frozenset(
    {"TRANSPOSE", "SLICE", "STRIDED_SLICE", "CONCATENATION", "PAD", "PADV2", "MIRROR_PAD", "GATHER", "GATHER_ND"}
    | {"TILE", "BROADCAST_TO", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "PACK", "UNPACK"}
    | {"REVERSE_V2", "CAST"}
)
_ALL_READ = _ELEMENTWISE | {"CONCATENATION", "PACK", "PRELU"}  # every input is read (else the data input only)


def tflite_kernels(path: str | Path) -> list[Kernel]:
    """The kernels of one inference of a TFLite model, op by op as the file holds them (see the module
    docstring). Needs the optional `tflite` extra (ai_edge_litert); a dynamic batch is taken as 1."""
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError as err:
        raise LglsearchError(
            f"reading a .tflite file needs the tflite extra ({err.name or 'ai_edge_litert'} is not installed): {_FIX}"
        ) from None
    path = Path(path)
    if not path.is_file():
        raise LglsearchError(f"TFLite file {path} does not exist; {_GIVE}")
    try:
        runner = litert.Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        _fix_batch(runner, path)
        ops = runner._get_ops_details()
        tensors = runner.get_tensor_details()
    except LglsearchError:
        raise
    except Exception as err:  # a foreign or truncated file: the flatbuffer check, an empty mmap, an unknown op
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise LglsearchError(f"{path} is not a readable TFLite model ({reason}); {_GIVE}") from None
    if not ops:
        raise LglsearchError(f"{path} is not a TFLite model with ops (its graph is empty); {_GIVE}")
    return _Splitter(runner, ops, tensors, str(path)).split()


def _fix_batch(runner: Any, path: Path) -> None:
    """A dynamic batch becomes 1 (the shapes are then propagated); another dynamic dimension is an error."""
    resized = False
    for detail in runner.get_input_details():
        signature = list(detail["shape_signature"])
        if all(d >= 0 for d in signature):
            continue
        if any(d < 0 for d in signature[1:]):
            raise LglsearchError(
                f"input {detail['name']!r} of {path} has a dynamic dimension (shape {tuple(signature)}); "
                "convert the model with a static input shape"
            )
        runner.resize_tensor_input(detail["index"], [1, *signature[1:]])
        resized = True
    if resized:
        runner.allocate_tensors()


def _unknown(op: dict, name: str, why: str = "") -> LglsearchError:
    return LglsearchError(
        f"TFLite op {op['op_name']!r} (op {op['index']}{why}) in {name} has no kernel type, so the model cannot be "
        "priced; replace the op or map it in lglsearch/cost/tflite_graph.py"
    )


class _Splitter:
    """Walks the ops in their (execution) order, kernel by kernel."""

    def __init__(self, runner: Any, ops: Sequence[dict], tensors: Sequence[dict], name: str) -> None:
        self.runner = runner
        self.ops = list(ops)
        self.name = name
        self.shapes = {int(t["index"]): tuple(int(d) for d in t["shape"]) for t in tensors}
        self.dtypes = {int(t["index"]): t["dtype"] for t in tensors}
        written = {int(i) for op in self.ops for i in op["outputs"]}
        inputs = {int(d["index"]) for d in runner.get_input_details()}
        self.const = {i for i in self.shapes if i not in written and i not in inputs}
        self.kernels: list[Kernel] = []

    def split(self) -> list[Kernel]:
        for op in self.ops:
            kernel = self._kernel(op)
            if kernel is not None:
                self.kernels.append(kernel)
        return self.kernels

    # --- tensors --------------------------------------------------------------------------------

    def _numel(self, tensor: int) -> int:
        return math.prod(self.shapes[tensor])

    def _bytes(self, tensors: Sequence[int]) -> tuple[float, float]:
        """fp32 bytes of the tensors, and of the weights among them (`kernels.fp32_bytes`); a negative
        index is an optional input left out (a dense layer without bias)."""
        return fp32_bytes((self._numel(t), t in self.const) for t in tensors if t >= 0)

    def _simple(self, kind: str, op: dict, inputs: Sequence[int]) -> Kernel:
        total, weights = self._bytes([*inputs, *_ints(op["outputs"])])
        return Kernel(kind, 0.0, total, weights, op["op_name"])

    def _value(self, tensor: int) -> np.ndarray | None:
        if tensor not in self.const:
            return None
        try:
            return np.asarray(self.runner.get_tensor(tensor))
        except ValueError:
            return None

    def _moves_nothing(self, op: dict, inputs: Sequence[int], outputs: Sequence[int]) -> bool:
        """A copy op that leaves its data where it was: a view."""
        name = op["op_name"]
        if name in ("CONCATENATION", "PACK"):
            return len(inputs) == 1
        if name in ("SPLIT", "SPLIT_V", "UNPACK"):
            return len(outputs) == 1
        if name == "CAST":
            return self.dtypes[inputs[0]] == self.dtypes[outputs[0]]
        if name in ("SLICE", "STRIDED_SLICE", "PAD", "PADV2", "MIRROR_PAD", "TILE", "BROADCAST_TO"):
            return self.shapes[inputs[0]] == self.shapes[outputs[0]]
        if name == "TRANSPOSE":
            shape, perm = self.shapes[inputs[0]], self._value(inputs[1]) if len(inputs) > 1 else None
            if perm is None:
                return False
            moved = [int(axis) for axis in perm.reshape(-1) if shape[int(axis)] != 1]
            return moved == sorted(moved)  # only size-1 axes move
        return False

    # --- ops ------------------------------------------------------------------------------------

    def _kernel(self, op: dict) -> Kernel | None:
        name = op["op_name"]
        inputs, outputs = _ints(op["inputs"]), _ints(op["outputs"])
        if name in _FREE:
            return None
        if name == "SHAPE":  # static once the shapes are
            self.const.update(outputs)
            return None
        if name in ("DEQUANTIZE", "DENSIFY") and inputs and all(i in self.const for i in inputs if i >= 0):
            self.const.update(outputs)  # fp16 / sparse weights unpacked once, when the model is prepared
            return None
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
            return self._conv(op, inputs, outputs)
        if name in ("FULLY_CONNECTED", "BATCH_MATMUL"):
            return self._matmul(op, inputs, outputs)
        data = inputs if name in _ALL_READ else inputs[1:2] if name == "SPLIT" else inputs[:1]
        if name in _ACTIVATIONS:
            return self._simple("activation", op, data)
        if name in _ELEMENTWISE:
            return self._simple("elementwise", op, data)
        if name in ("SOFTMAX", "LOG_SOFTMAX"):
            return self._simple("softmax", op, data)
        if name == "GELU":
            return self._simple("gelu", op, data)
        if name in _POOLS:
            return self._simple("pool", op, data)
        if name in ("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"):
            return self._simple("resize", op, data)
        if name in _COPIES:
            return None if self._moves_nothing(op, inputs, outputs) else self._simple("layout", op, data)
        raise _unknown(op, self.name, ", a DEQUANTIZE of an activation" if name == "DEQUANTIZE" else "")

    def _conv(self, op: dict, inputs: Sequence[int], outputs: Sequence[int]) -> Kernel:
        name, out = op["op_name"], outputs[0]
        if name == "TRANSPOSE_CONV":  # (output shape, filter (O, kh, kw, I), input[, bias])
            filt, x = inputs[1], inputs[2]
            weight = self.shapes[filt]
            window = weight[1] * weight[2]
            kind, macs, gemm = "tconv", self._numel(x) * weight[0] * window, None
            read = inputs[1:]
        else:  # (input, filter, bias): CONV_2D's filter is (O, kh, kw, I / groups), DEPTHWISE's (1, kh, kw, C x m)
            x, filt = inputs[0], inputs[1]
            weight = self.shapes[filt]
            window = weight[1] * weight[2]
            channels = self.shapes[x][-1]
            shape = self.shapes[out]
            if name == "DEPTHWISE_CONV_2D":
                kind, macs, gemm = "dwconv", math.prod(shape) * window, None
            else:
                groups = channels // weight[-1] if weight[-1] else 1
                depthwise = groups > 1 and groups == channels
                kind = "dwconv" if depthwise else "gconv" if groups > 1 else "conv1x1" if window == 1 else "conv"
                macs = math.prod(shape) * weight[-1] * window
                gemm = None if depthwise else (groups, math.prod(shape[1:-1]), weight[0], weight[-1] * window)
            read = inputs
        total, weights = self._bytes([*read, out])
        return Kernel(kind, float(macs), total, weights, name, int(weight[2]), gemm)

    def _matmul(self, op: dict, inputs: Sequence[int], outputs: Sequence[int]) -> Kernel:
        name, out = op["op_name"], outputs[0]
        a, b = inputs[0], inputs[1]
        a_shape, b_shape, shape = self.shapes[a], self.shapes[b], self.shapes[out]
        n = shape[-1] if shape else 1
        if name == "FULLY_CONNECTED":  # input (..., K), weights (N, K)[, bias (N,)]
            k = b_shape[-1]
            kind = "fc" if b in self.const else "matmul"
            gemm = (1, math.prod(shape) // n, n, k)
        else:  # (..., M, K) x (..., K, N), either side possibly transposed (adj_x, adj_y)
            m = shape[-2] if len(shape) > 1 else 1
            k = a_shape[-1] if len(a_shape) < 2 or a_shape[-2] == m else a_shape[-2]
            batch = math.prod(shape) // (m * n)
            if b in self.const and len(b_shape) <= 2:  # a dense layer: every leading axis is a row
                kind, gemm = "fc", (1, math.prod(shape) // n, n, k)
            else:
                kind = "fc" if batch == 1 and a in self.const else "matmul"
                gemm = (batch, m, n, k)
        total, weights = self._bytes([*inputs, out])
        return Kernel(kind, float(math.prod(shape) * k), total, weights, name, 0, gemm)


def _ints(indices: Any) -> list[int]:
    return [int(i) for i in indices]
