"""Blocks as the kernels a phone runtime executes, and a per-kernel latency model fitted on phones.

Why: the host-to-phone transfer (`transfer.py`) describes a block by whole-block features, so an
EdgeViT op, a block of another shape than any nn-Meter block, is priced by extrapolation. Every
block, theirs and ours, is made of the same few kernels (convolutions, dense layers, matmuls,
softmax, norms, pools, element-wise ops, layout copies). Fitting a cost per kernel type and
pricing a block as the sum of its kernels prices an EdgeViT op from kernels the fit has seen: the
approach of nn-Meter's kernel-level predictors (Zhang et al., "nn-Meter: Towards Accurate Latency
Prediction of Deep-Learning Model Inference on Diverse Edge Devices", MobiSys 2021), here with a
linear cost per kernel because the phone tables hold block latencies only, not kernel latencies.

`decompose` runs a module once on meta tensors (no compute, no timing) under a dispatch mode and
records every aten op with its MACs and fp32 bytes moved (inputs, weights and output). The phone
measurements are TFLite fp32 graphs (see ../shared/data/phone-luts/README.md), so the record
follows TFLite's graph, not PyTorch's: a BatchNorm right after a convolution is folded into it
(the TFLite converter folds it), a bias add right after a matmul is the dense layer's bias, a ReLU
or ReLU6 right after a convolution, dense layer or add is fused into it (TFLite's fused
activations), and pure views (reshape, transpose without a copy, slicing) are free. Hard-swish,
GELU and hard-sigmoid have no fused form in TFLite and stay kernels (`activation`, `gelu`).

`KernelModel.fit` fits, on measured block latencies, a cost per kernel linear in its terms
(`kernel_terms`),

    ms = a_type + b_type * MB + sum_s b_type,s * max(0, MB - s) + w_type * weight MB + c_type * MMACs

(MB: activations read and written; s: the cache sizes `_CACHE_MB`; c only for conv and matmul kernels),
plus a per-block constant (the interpreter's fixed cost of one invocation), with non-negative
coefficients, minimising the squared relative error (the error the tables report). A kernel type
the fit never saw is priced as its nearest seen type (`_FALLBACK`), and `KernelModel.outside` says
which kernels of a block were priced so or lie outside the fitted size range.

How well it does (`benchmarks/kernel_transfer.py`): fitted per op class, it predicts held-out
reference blocks better than the transfer; fitted on some nn-Meter kinds, it does not predict a
left-out kind within the issue's aim, because the kinds disagree about what the same kernels cost.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from lglsearch.errors import LglsearchError

__all__ = [
    "Kernel",
    "KernelModel",
    "decompose",
    "design_rows",
    "fp32_bytes",
    "kernel_terms",
]

_KERNEL_TYPES = (
    "conv",  # dense convolution, kernel > 1
    "conv1x1",  # dense pointwise convolution
    "dwconv",  # depthwise convolution
    "gconv",  # grouped convolution, 1 < groups < channels (ResNeXt, RegNet)
    "tconv",  # transposed convolution (EdgeViT's depthwise propagation)
    "fc",  # dense layer (TFLite FULLY_CONNECTED)
    "matmul",  # batched matmul of two activations (attention's Q K^T and A V)
    "softmax",
    "layernorm",
    "batchnorm",  # a BatchNorm that no convolution precedes (not folded: scale and shift)
    "pool",  # average / max pooling and global means
    "elementwise",  # adds, multiplies
    "activation",  # hard-swish, hard-sigmoid, unfused ReLU
    "gelu",
    "resize",  # nearest / bilinear upsampling
    "layout",  # copies: transposes made contiguous, strided slices
)

_COMPUTE_TYPES = frozenset({"conv", "conv1x1", "dwconv", "gconv", "tconv", "fc", "matmul"})
_CONV_TYPES = frozenset({"conv", "conv1x1", "dwconv", "gconv", "tconv"})
"""Kernel types whose cost has a MACs term."""

_FALLBACK = {
    "conv": "conv1x1",  # im2col + GEMM: priced per MAC as a pointwise conv
    "gconv": "conv",  # one GEMM per group
    "conv1x1": "fc",
    "fc": "conv1x1",  # both are one GEMM in TFLite
    "matmul": "fc",
    "tconv": "dwconv",  # EdgeViT's is depthwise
    "dwconv": "conv1x1",
    "softmax": "layernorm",  # both reduce a row and normalise it
    "layernorm": "elementwise",
    "batchnorm": "elementwise",  # scale and shift
    "gelu": "activation",
    "activation": "elementwise",
    "pool": "elementwise",
    "resize": "layout",
    "layout": "elementwise",
    "elementwise": "layout",
}
"""The type a kernel is priced as when the fit saw none of its own type (followed until a seen one)."""

_VIEWS = frozenset(
    {
        "view",
        "_unsafe_view",
        "reshape",
        "transpose",
        "t",
        "permute",
        "expand",
        "slice",
        "select",
        "unbind",
        "split",
        "split_with_sizes",
        "squeeze",
        "unsqueeze",
        "detach",
        "alias",
        "as_strided",
        "empty",
        "empty_like",
        "lift_fresh",
        "_reshape_alias",
    }
)
_ELEMENTWISE = frozenset({"add", "add_", "sub", "mul", "mul_", "div", "neg", "where", "clamp", "clamp_min", "pow"})
_ACTIVATIONS = frozenset(
    {"hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "sigmoid", "relu", "relu_", "hardtanh", "hardtanh_"}
    | {"tanh", "exp", "rsqrt", "sqrt", "silu", "erf", "log", "reciprocal", "leaky_relu", "elu", "softplus", "mish"}
)
_FUSABLE_ACTIVATIONS = frozenset({"relu", "relu_", "hardtanh", "hardtanh_"})  # TFLite fused RELU / RELU6
_COPIES = frozenset(
    {"clone", "copy_", "contiguous", "_to_copy", "constant_pad_nd", "reflection_pad2d", "replication_pad2d"}
    | {"index", "index_select", "gather", "roll", "flip", "repeat", "pixel_shuffle", "pixel_unshuffle"}
)
"""Ops that move data without arithmetic: TFLite's TRANSPOSE, PAD, GATHER, TILE, DEPTH_TO_SPACE ..."""
_BATCHNORMS = frozenset({"native_batch_norm", "_native_batch_norm_legit_no_training", "batch_norm"})
_POOLS = frozenset(
    {"mean", "sum", "avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d", "amax", "amin"}
)


@dataclass(frozen=True)
class Kernel:
    """One kernel of a block: its type, MACs, fp32 bytes moved (inputs, weights and output; `weights`
    of them the block's parameters), the aten op it came from, the kernel size of a convolution and
    the (batch, M, N, K) of a kernel run as a matrix product (convolutions as im2col GEMMs)."""

    type: str
    macs: float
    bytes: float
    weights: float
    op: str
    k: int = 0
    gemm: tuple[int, int, int, int] | None = None


def fp32_bytes(sizes: Iterable[tuple[int, bool]]) -> tuple[float, float]:
    """fp32 bytes of tensors given as (elements, whether a constant), and of the weights among them:
    a one-element constant is a scalar operand (a Python number in torch) and counts nothing. The
    rule the graph splits (ONNX, TFLite) share."""
    total = weights = 0.0
    for numel, constant in sizes:
        if constant and numel <= 1:
            continue
        total += 4.0 * numel
        weights += 4.0 * numel if constant else 0.0
    return total, weights


def _nbytes(*tensors: Any) -> float:
    return 4.0 * sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))


class _Recorder(TorchDispatchMode):
    """Records the kernels of the aten ops a forward pass dispatches (see the module docstring)."""

    def __init__(self, weights: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.kernels: list[Kernel] = []
        self._producer: dict[int, str] = {}  # id of an output tensor -> the kernel type that made it
        self._weights = {id(w) for w in weights}  # parameters and buffers, and views of them
        self._alive: list[Any] = list(weights)  # keeps tracked tensors alive, so that their ids stay unique
        self._made: dict[int, int] = {}  # id of a kernel's output -> its index in `kernels`
        self._biasless: set[int] = set()  # indices of convolutions without a bias

    def _made_by(self, tensor: Any) -> str | None:
        return self._producer.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None

    def _weight_bytes(self, *tensors: Any) -> float:
        return _nbytes(*(t for t in tensors if isinstance(t, torch.Tensor) and id(t) in self._weights))

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        outs = list(out) if isinstance(out, tuple | list) else [out]
        if name in _VIEWS:  # free; a view of a kernel's output (or of a weight) stands for it
            source = args[0] if args else None
            producer = self._made_by(source)
            for view in outs:
                if producer is not None:
                    self._mark(view, producer)
                    self._stands_for(view, source)
                if isinstance(source, torch.Tensor) and id(source) in self._weights:
                    self._weights.add(id(view))
                    self._alive.append(view)
            return out
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if tensors and all(id(t) in self._weights for t in tensors):  # weights only: the converter folds it
            for tensor in outs:
                self._weights.add(id(tensor))
                self._alive.append(tensor)
            return out
        kernel = self._kernel(name, args, outs[0])
        if kernel is None:  # folded or fused into its producer: the output stands for the producer's
            producer = self._made_by(args[0])
            if producer is not None and isinstance(outs[0], torch.Tensor):
                self._mark(outs[0], producer)
                self._stands_for(outs[0], args[0])
            return out
        self.kernels.append(kernel)
        if isinstance(outs[0], torch.Tensor):
            self._mark(outs[0], kernel.type)
            self._made[id(outs[0])] = len(self.kernels) - 1
        if name == "convolution" and args[2] is None:
            self._biasless.add(len(self.kernels) - 1)
        return out

    def _stands_for(self, tensor: torch.Tensor, source: Any) -> None:
        """`tensor` (a view, or a folded op's output) stands for the kernel that made `source`."""
        if id(source) in self._made:
            self._made[id(tensor)] = self._made[id(source)]

    def _add_weights(self, output: Any, nbytes: float) -> None:
        """Weights folded into the kernel that made `output` (a folded BatchNorm's bias, a dense bias)."""
        index = self._made.get(id(output))
        if index is not None:
            k = self.kernels[index]
            self.kernels[index] = dataclasses.replace(k, bytes=k.bytes + nbytes, weights=k.weights + nbytes)

    def _mark(self, tensor: torch.Tensor, kind: str) -> None:
        self._producer[id(tensor)] = kind
        self._alive.append(tensor)

    def _simple(self, kind: str, name: str, inputs: Sequence[Any], out: torch.Tensor) -> Kernel:
        return Kernel(kind, 0.0, _nbytes(*inputs, out), self._weight_bytes(*inputs), name)

    def _kernel(self, name: str, args: Sequence[Any], out: torch.Tensor) -> Kernel | None:
        if name == "convolution":
            x, weight, bias, transposed, groups = args[0], args[1], args[2], args[6], args[8]
            k = int(weight.shape[-1])
            window = math.prod(weight.shape[2:])
            gemm = None
            if transposed:
                kind, macs = "tconv", x.numel() * weight.shape[1] * window
            else:
                depthwise = groups > 1 and groups == x.shape[1]
                kind = "dwconv" if depthwise else "gconv" if groups > 1 else "conv1x1" if window == 1 else "conv"
                macs = out.numel() * weight.shape[1] * window
                if not depthwise:
                    gemm = (int(groups), int(out[0, 0].numel()), int(weight.shape[0]), int(weight.shape[1] * window))
            return Kernel(kind, float(macs), _nbytes(x, weight, bias, out), _nbytes(weight, bias), name, k, gemm)
        if name in ("mm", "addmm", "bmm", "baddbmm"):
            a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
            kind = "matmul" if name in ("bmm", "baddbmm") else "fc"  # mm / addmm: nn.Linear, a weight operand
            bias = args[0] if name in ("addmm", "baddbmm") else None
            batch = a.shape[0] if a.dim() == 3 else 1
            gemm = (int(batch), int(a.shape[-2]), int(b.shape[-1]), int(a.shape[-1]))
            inputs = (a, b, bias)
            return Kernel(
                kind,
                float(out.numel() * a.shape[-1]),
                _nbytes(*inputs, out),
                self._weight_bytes(*inputs),
                name,
                0,
                gemm,
            )
        if name in _BATCHNORMS:
            if self._made_by(args[0]) in _CONV_TYPES:  # folded into the convolution by the TFLite converter,
                index = self._made.get(id(args[0]))  # which gains the fold's bias if it had none
                if index in self._biasless:
                    self._biasless.discard(index)
                    self._add_weights(args[0], 4.0 * args[0].shape[1])
                return None
            return self._simple("batchnorm", name, args[:1], out)
        if name in _FUSABLE_ACTIVATIONS and self._made_by(args[0]) in _COMPUTE_TYPES | {"elementwise"}:
            return None
        if name in ("add", "add_") and _is_bias(args) and self._made_by(args[0]) in ("fc", "matmul"):
            self._add_weights(args[0], _nbytes(args[1]))
            return None  # the dense layer's bias
        if name in _ACTIVATIONS:
            return self._simple("activation", name, args[:1], out)
        if name in _ELEMENTWISE:
            return self._simple("elementwise", name, args, out)
        if name in ("_softmax", "_safe_softmax", "softmax"):
            return self._simple("softmax", name, args[:1], out)
        if name == "constant_pad_nd" and not any(args[1]):
            return None  # a zero pad moves nothing
        if name == "native_group_norm":
            return self._simple("layernorm", name, args[:3], out)
        if name in ("native_layer_norm", "layer_norm"):
            return self._simple("layernorm", name, (args[0], *args[2:4]), out)
        if name in _POOLS:
            return self._simple("pool", name, args[:1], out)
        if name == "gelu":
            return self._simple("gelu", name, args[:1], out)
        if name in ("upsample_nearest2d", "upsample_bilinear2d", "_upsample_nearest_exact2d"):
            return self._simple("resize", name, args[:1], out)
        if name in _COPIES:
            return self._simple("layout", name, args[:1], out)
        if name in ("cat", "stack"):  # every input is copied into the output
            return self._simple("layout", name, list(args[0]), out)
        raise LglsearchError(
            f"aten op {name!r} has no kernel type; map it in lglsearch/cost/kernels.py "
            f"(types: {', '.join(_KERNEL_TYPES)})"
        )


def _is_bias(args: Sequence[Any]) -> bool:
    return len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].dim() == 1


def decompose(module: nn.Module, shape: Sequence[int]) -> list[Kernel]:
    """The kernels of one batch-1 inference of `module` on an input of `shape`, as TFLite would run
    them (see the module docstring). The module is run on a meta copy: nothing is computed."""
    if not shape or any(not isinstance(d, int) or d <= 0 for d in shape):
        raise LglsearchError(f"input shape must be positive integers, got {tuple(shape)!r}")
    meta = _to_meta(module)
    recorder = _Recorder([*meta.parameters(), *meta.buffers()])
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), recorder:
            meta(torch.empty(tuple(shape), device="meta"))
    except RuntimeError as err:
        raise LglsearchError(f"the module does not run on an input of shape {tuple(shape)}: {err}") from None
    return recorder.kernels


def _to_meta(module: nn.Module) -> nn.Module:
    if all(t.device.type == "meta" for t in [*module.parameters(), *module.buffers()]):
        return module.eval()
    return copy.deepcopy(module).to("meta").eval()


# --- the model ---------------------------------------------------------------------------------


_CACHE_MB = (1.0, 4.0)
"""Activation sizes (MB) past which a kernel's cost per MB may rise: near the cores' L2 (0.5-1 MB)
and the shared L3 (2-4 MB) of these phones' SoCs; fixed before fitting, the same on every phone."""


def kernel_terms(kernel: Kernel) -> dict[str, float]:
    """What one kernel adds to its type's terms of the linear model: one kernel; its activation MB
    and, as hinges, the MB past each of `_CACHE_MB` (a piecewise-linear cost per MB that can only
    rise as the data leave the caches); its weight MB; and its MMACs (conv and matmul kernels)."""
    activations = (kernel.bytes - kernel.weights) / 1e6
    terms = {"kernels": 1.0, "MB": activations, "weight MB": kernel.weights / 1e6}
    for size in _CACHE_MB:
        terms[f"MB past {size:g}"] = max(0.0, activations - size)
    if kernel.type in _COMPUTE_TYPES:
        terms["MMACs"] = kernel.macs / 1e6
    return terms


Terms = Callable[[Kernel], Mapping[str, float]]


def _column(kind: str, term: str) -> tuple[str, str]:
    """The column of a kernel's term: its type's, or one shared by all types for a "shared ..." term."""
    return ("shared", term) if term.startswith("shared ") else (kind, term)


def design_rows(
    blocks: Sequence[Sequence[Kernel]],
    columns: Sequence[tuple[str, str]],
    priced_as: Callable[[str], str] = lambda t: t,
    terms: Terms = kernel_terms,
) -> np.ndarray:
    """Blocks' rows of the linear model over `columns` ((type, term); ("block", "constant") is a 1
    per block): per kernel type the sum of its kernels' terms, each kernel under the type
    `priced_as` gives. A term outside `columns` is an error (the fit never saw it)."""
    index = {column: i for i, column in enumerate(columns)}
    rows = np.zeros((len(blocks), len(columns)))
    for row, kernels in zip(rows, blocks, strict=True):
        if ("block", "constant") in index:
            row[index["block", "constant"]] = 1.0
        for kernel in kernels:
            kind = priced_as(kernel.type)
            for term, value in terms(kernel).items():
                if value:
                    row[index[_column(kind, term)]] += value
    return rows


@dataclass(frozen=True)
class KernelModel:
    """Per-kernel-type costs fitted on block latencies, with the size range each type was fitted on."""

    columns: tuple[tuple[str, str], ...]
    """(kernel type, term) of each coefficient; ("block", "constant") is the per-block constant."""
    coef: np.ndarray
    """ms per unit of each column's term."""
    seen: Mapping[str, Mapping[str, Any]]
    """Per kernel type in the fit: kernels, and the min/max of MACs and bytes and the conv kernel sizes."""
    terms: Terms = kernel_terms

    @classmethod
    def fit(
        cls,
        blocks: Sequence[Sequence[Kernel]],
        latency_ms: Sequence[float],
        terms: Terms = kernel_terms,
        weights: Sequence[float] | None = None,
    ) -> KernelModel:
        """Non-negative least squares on the relative error of each block's latency, each block's
        squared error weighted by `weights` (default: all 1)."""
        y = np.asarray(latency_ms, float)
        w = np.sqrt(np.ones(len(y)) if weights is None else np.asarray(weights, float))
        if len(blocks) != len(y) or not len(y):
            raise LglsearchError(f"{len(blocks)} blocks and {len(y)} latencies: give one latency per block")
        if not np.all(np.isfinite(y) & (y > 0)):
            raise LglsearchError("latencies must be positive and finite (ms)")
        found = {_column(k.type, term) for block in blocks for k in block for term, v in terms(k).items() if v}
        order = ("block", *_KERNEL_TYPES, "shared")
        columns = (("block", "constant"), *sorted(found, key=lambda c: (order.index(c[0]), c[1])))
        design = design_rows(blocks, columns, terms=terms) * (w / y)[:, None]
        norms = np.linalg.norm(design, axis=0)
        norms[norms == 0] = 1.0
        solution, _ = nnls(design / norms, w, maxiter=50 * design.shape[1])
        return cls(columns, solution / norms, _seen(blocks), terms)

    def priced_as(self, kind: str) -> str:
        """The type a kernel of `kind` is priced as: itself if the fit saw it, else its fallback."""
        if kind not in _FALLBACK:
            raise LglsearchError(f"unknown kernel type {kind!r}; types: {', '.join(_KERNEL_TYPES)}")
        path = [kind]
        while path[-1] not in self.seen:
            path.append(_FALLBACK[path[-1]])
            if path[-1] in path[:-1]:
                raise LglsearchError(f"the fit saw no kernel type to price {kind!r} as (tried {', '.join(path)})")
        return path[-1]

    def _priced_terms(self, kernel: Kernel) -> Mapping[str, float]:
        """A kernel's terms, keeping only those its priced-as type has (a conv priced as an
        element-wise kernel has no MACs term)."""
        kind = self.priced_as(kernel.type)
        return {t: v for t, v in self.terms(kernel).items() if _column(kind, t) in self._index}

    @property
    def _index(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.columns)

    def predict(self, blocks: Sequence[Sequence[Kernel]], base: KernelModel | None = None) -> np.ndarray:
        """Latency (ms) of each block, the sum of its kernels' costs. With a `base` model (say, one
        fitted on all classes beside this one fitted on one class), kernels of a type this model
        never saw are priced by `base` (without its per-block constant) instead of a fallback type."""
        if base is None:
            rows = design_rows(blocks, self.columns, self.priced_as, self._priced_terms)
            return rows @ self.coef
        own = [[k for k in block if k.type in self.seen] for block in blocks]
        other = [[k for k in block if k.type not in self.seen] for block in blocks]
        constant = base.coef[base.columns.index(("block", "constant"))]
        return self.predict(own) + base.predict(other) - constant

    def outside(self, kernels: Sequence[Kernel]) -> list[dict[str, Any]]:
        """The kernels of a block priced outside what the fit saw: a type it never saw (priced as
        another), a conv kernel size it never saw, or MACs / bytes beyond the type's fitted range
        (by the factor past the nearest bound)."""
        found = []
        for kernel in kernels:
            seen = self.seen.get(kernel.type)
            if seen is None:
                found.append({"type": kernel.type, "priced_as": self.priced_as(kernel.type)})
                continue
            why: dict[str, Any] = {}
            for name, value in (("macs", kernel.macs), ("bytes", kernel.bytes)):
                lo, hi = seen[name]
                if value > hi * (1 + 1e-9):
                    why[name] = float(f"{value / hi:.4g}")
                elif value < lo * (1 - 1e-9):
                    why[name] = float(f"{value / lo:.4g}")
            if kernel.type in _CONV_TYPES and kernel.k not in seen["k"]:
                why["k"] = kernel.k
            if why:
                found.append({"type": kernel.type, **why})
        return found

    def to_dict(self) -> dict[str, Any]:
        """The model as JSON-able data (only the standard `kernel_terms` can be stored)."""
        if self.terms is not kernel_terms:
            raise LglsearchError("only a kernel model of the standard terms (kernel_terms) can be stored")
        return {
            "columns": [list(c) for c in self.columns],
            "coef": [float(c) for c in self.coef],
            "seen": {t: dict(s, k=sorted(s["k"])) for t, s in self.seen.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelModel:
        """A stored model, checked: every column a known (type, term), one coefficient each."""
        malformed = LglsearchError("the table's kernel model is malformed; derive the table again")
        try:
            columns = tuple((str(kind), str(term)) for kind, term in data["columns"])
            coef = np.asarray(data["coef"], float)
            seen = {
                str(t): {
                    "kernels": int(s["kernels"]),
                    "macs": list(map(float, s["macs"])),
                    "bytes": list(map(float, s["bytes"])),
                    "k": set(map(int, s["k"])),
                }
                for t, s in data["seen"].items()
            }
        except (KeyError, TypeError, ValueError):
            raise malformed from None
        kinds = {"block", "shared", *_KERNEL_TYPES}
        if coef.shape != (len(columns),) or any(c[0] not in kinds for c in columns) or set(seen) - set(_KERNEL_TYPES):
            raise malformed
        return cls(columns, coef, seen)

    def coefficients(self) -> dict[str, dict[str, float]]:
        """The fitted costs (ms per unit) by type and term, the nonzero ones."""
        table: dict[str, dict[str, float]] = {}
        for (kind, term), value in zip(self.columns, self.coef, strict=True):
            if value > 0:
                table.setdefault(kind, {})[term] = float(value)
        return table


def _seen(blocks: Sequence[Sequence[Kernel]]) -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for kernel in (k for block in blocks for k in block):
        entry = seen.setdefault(
            kernel.type, {"kernels": 0, "macs": [math.inf, -math.inf], "bytes": [math.inf, -math.inf], "k": set()}
        )
        entry["kernels"] += 1
        for name in ("macs", "bytes"):
            value = getattr(kernel, name)
            entry[name] = [min(entry[name][0], value), max(entry[name][1], value)]
        if kernel.k:
            entry["k"].add(kernel.k)
    return seen
