"""A phone's latency model priced per kernel: the model the shipped phone tables are derived with.

Fitted directly on the phone's own block measurements (nn-Meter's reference blocks), no host
timing: every reference block and every EdgeViT op part is decomposed into the kernels TFLite
runs (`kernels.decompose`), and one `KernelModel` is fitted per op class on that class's blocks,
beside one fitted on the blocks of all classes (`base`). An op part is priced by its class's model;
its kernels of a type that class never saw (an EdgeViT attention part's depthwise and transposed
convolutions, say) by `base`. The errors stored with it:

- random split: per class, the held-out blocks, the same draws as the transfer's (`heldout_mask`);
- leave one kind out: each nn-Meter kind predicted by one model fitted on all the other kinds,
  which is what pricing an EdgeViT op, a kind no reference block is, amounts to.

Why this model and not the host-to-phone transfer: benchmarks/RESULTS.md ("Phone tables: which
model the shipped tables keep").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from lglsearch.cost._metrics import error_summary
from lglsearch.cost._phone.reference import OP_CLASSES, reference_class, reference_kind, reference_module
from lglsearch.cost.kernels import Kernel, KernelModel, decompose
from lglsearch.cost.ops import op_input_shape, op_module, op_parts
from lglsearch.errors import LglsearchError

__all__ = [
    "FORM",
    "PhoneKernelModel",
    "heldout_mask",
    "kernel_coverage",
    "key_kernels",
    "part_kernels",
    "reference_kernels",
]

FORM = (
    "ms = block constant + sum over kernels of (a + b MB + b1 max(0, MB - 1) + b4 max(0, MB - 4) + w weight MB "
    "[+ c MMACs]) per kernel type, non-negative, fitted per op class on relative error; kernel types a class "
    "never saw priced by the fit on all classes"
)


@functools.cache
def reference_kernels(key: str) -> tuple[Kernel, ...]:
    """The kernels of an nn-Meter reference block (traced on meta tensors: nothing is computed)."""
    with torch.device("meta"):  # a reference block's positional bias alone can be 80 MB
        module, shape = reference_module(key)
    return tuple(decompose(module, shape))


@functools.cache
def part_kernels(part: str) -> tuple[Kernel, ...]:
    """The kernels of an EdgeViT op part (`ops.op_parts`)."""
    with torch.device("meta"):
        module = op_module(part)
    return tuple(decompose(module, op_input_shape(part)))


def key_kernels(key: str) -> list[Kernel]:
    """The kernels of an op key: its parts' kernels, in order."""
    return [k for part, _ in op_parts(key) for k in part_kernels(part)]


def heldout_mask(classes: Sequence[str], holdout: float, seed: int) -> np.ndarray:
    """The held-out blocks: per class in sorted order, one seeded draw per block (the draws the
    transfer model's fit makes, so both models are tested on the same blocks)."""
    classes = np.asarray(classes)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(classes), bool)
    for op_class in sorted(set(classes.tolist())):
        rows = np.flatnonzero(classes == op_class)
        test[rows] = rng.random(len(rows)) < holdout
    return test


_MIN_FIT, _MIN_HELD = 10, 2  # blocks a class's fit and its held-out part need at the least


def _rounded(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}


@dataclass(frozen=True)
class PhoneKernelModel:
    """Per-class kernel models, the all-class model behind them, and their measured errors."""

    name: ClassVar[str] = "kernel"

    classes: Mapping[str, KernelModel]
    base: KernelModel
    heldout: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per class, the error on its held-out blocks."""
    kinds_out: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per reference kind, the error of a fit on all other kinds."""
    blocks: int = 0
    """Reference blocks in the fit (held-out ones included)."""

    @staticmethod
    def blocks_needed(holdout: float) -> int:
        """Blocks a class needs so that its fitted part has 20 and its held-out part 4 on average
        (the fit itself refuses fewer than half of that): checked before any work."""
        return math.ceil(max(2 * _MIN_FIT / (1 - holdout), 2 * _MIN_HELD / holdout))

    @classmethod
    def fit(cls, reference: Mapping[str, float], keys: Sequence[str], *, holdout: float = 0.2, seed: int = 0):
        """Fit on the reference blocks `keys` (their measured ms in `reference`), holding out a part."""
        if not 0 < holdout < 1:
            raise LglsearchError(f"holdout must be in (0, 1), got {holdout}")
        blocks = [reference_kernels(k) for k in keys]
        y = np.array([reference[k] for k in keys])
        classes = np.array([reference_class(k) for k in keys])
        kinds = np.array([reference_kind(k) for k in keys])
        test = heldout_mask(classes, holdout, seed)
        for op_class in OP_CLASSES:
            rows = classes == op_class
            if (rows & ~test).sum() < _MIN_FIT or (rows & test).sum() < _MIN_HELD:
                raise LglsearchError(
                    f"too few reference blocks of class {op_class} ({rows.sum()}) to fit and hold out; "
                    "sample more (--per-class)"
                )

        def fitted(rows: np.ndarray) -> KernelModel:
            return KernelModel.fit([blocks[i] for i in np.flatnonzero(rows)], y[rows])

        base = fitted(~test)
        models = {c: fitted(~test & (classes == c)) for c in OP_CLASSES}
        heldout = {}
        for c, model in models.items():
            rows = np.flatnonzero(test & (classes == c))
            predicted = model.predict([blocks[i] for i in rows], base)
            heldout[c] = _rounded(error_summary(predicted, y[rows]))
        kinds_out = {}
        for kind in sorted(set(kinds.tolist())):
            held = kinds == kind
            other = fitted(~held)
            rows = np.flatnonzero(held)
            predicted = other.predict([blocks[i] for i in rows])
            unseen = sorted({k.type for i in rows for k in blocks[i]} - set(other.seen))
            kinds_out[kind] = _rounded(error_summary(predicted, y[held])) | {
                "op_class": str(classes[held][0]),
                "fitted_on": sorted(set(kinds[~held].tolist())),
                "priced_by_fallback": {t: other.priced_as(t) for t in unseen},
            }
        return cls(models, base, heldout, kinds_out, len(keys))

    def _model(self, op_class: str) -> KernelModel:
        if op_class not in self.classes:
            raise LglsearchError(f"no kernel model for op class {op_class!r}; fitted: {sorted(self.classes)}")
        return self.classes[op_class]

    def predict(self, op_class: str, kernels: Sequence[Kernel]) -> float:
        """Phone ms of one block of `op_class`."""
        return float(self._model(op_class).predict([kernels], self.base)[0])

    def outside(self, op_class: str, kernels: Sequence[Kernel]) -> list[dict[str, Any]]:
        """The kernels of a block priced outside what a fit saw (`KernelModel.outside`): those of a type
        its class saw against the class's fit, the others against the all-class fit."""
        model = self._model(op_class)
        own = [k for k in kernels if k.type in model.seen]
        return model.outside(own) + self.base.outside([k for k in kernels if k.type not in model.seen])

    def price_keys(self, keys: Sequence[str], **_: Any) -> pd.Series:
        """Phone ms of op keys: the sum of their parts, each priced as one block."""
        return pd.Series(
            {key: sum(self.predict(c, part_kernels(p)) for p, c in op_parts(key)) for key in keys},
            name="latency_ms",
            dtype=float,
        )

    def network_model(self) -> Any:
        """The model that prices a whole network: the all-class fit (a graph has no op classes)."""
        from lglsearch.cost._phone.joint import JointKernelModel  # joint builds on this module; only this wraps back

        return JointKernelModel(self.base, {"reference blocks": 1.0}, "reference blocks")

    def coverage(self, keys: Sequence[str], **_: Any) -> tuple[pd.Series, dict[str, Any]]:
        """Per key the count of its kernels priced outside what the fits saw, and a summary."""
        return kernel_coverage(self, keys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "form": FORM,
            "blocks": self.blocks,
            "classes": {c: m.to_dict() for c, m in self.classes.items()},
            "base": self.base.to_dict(),
            "heldout": {k: dict(v) for k, v in self.heldout.items()},
            "leave_one_kind_out": {k: dict(v) for k, v in self.kinds_out.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhoneKernelModel:
        try:
            classes = {str(c): KernelModel.from_dict(m) for c, m in data["classes"].items()}
            base = KernelModel.from_dict(data["base"])
        except (KeyError, TypeError, AttributeError):
            raise LglsearchError("the table's kernel model is malformed; derive the table again") from None
        if set(classes) - set(OP_CLASSES):
            raise LglsearchError("the table's kernel model is malformed; derive the table again")
        return cls(classes, base, data.get("heldout", {}), data.get("leave_one_kind_out", {}), data.get("blocks", 0))


def kernel_coverage(model: Any, keys: Sequence[str]) -> tuple[pd.Series, dict[str, Any]]:
    """(per key, the count of its parts' kernels priced outside what the fits saw; a summary per
    kernel type: kernels, those outside, the type they were priced as, sizes past the range)."""
    found: dict[str, list[dict[str, Any]]] = {}  # each part once, though keys share parts
    counts = {}
    for key in keys:
        for part, op_class in op_parts(key):
            if part not in found:
                found[part] = model.outside(op_class, part_kernels(part))
        counts[key] = sum(len(found[p]) for p, _ in op_parts(key))
    by_type: dict[str, dict[str, Any]] = {}
    for part, outside in found.items():
        for kernel in part_kernels(part):
            by_type.setdefault(kernel.type, {"kernels": 0, "outside": 0})["kernels"] += 1
        for entry in outside:
            summary = by_type[entry["type"]]
            summary["outside"] += 1
            for name, value in entry.items():
                if name == "priced_as":
                    summary["priced_as"] = value
                elif name == "k":
                    summary["unseen_k"] = sorted({*summary.get("unseen_k", []), value})
                elif name in ("macs", "bytes"):  # the factor past the nearest bound; keep the farthest
                    bound = f"{name}_factor"
                    farther = abs(math.log(value)) > abs(math.log(summary.get(bound, 1.0)))
                    summary[bound] = value if farther else summary.get(bound, 1.0)
    series = pd.Series(counts, dtype=float)
    return series, {
        "keys": len(series),
        "keys_outside": int((series > 0).sum()),
        "share_outside": float(np.mean(series > 0)) if len(series) else 0.0,
        "keys_with_unseen_type": sum(any("priced_as" in e for p, _ in op_parts(k) for e in found[p]) for k in keys),
        "units": "outside_range: kernels priced outside the fits; *_factor: MACs or bytes over the nearest "
        "fitted bound (farthest kernel)",
        "by_type": dict(sorted(by_type.items())),
    }
