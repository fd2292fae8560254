"""Host-to-phone latency transfer: fitted per op class on real phone measurements.

For each op class (convolutional, attention, mlp, downsampling) a model linear in

    log(host_ms), log(1 + MACs), log(bytes moved), log(1 + depthwise MACs), number of layers,
    the squares of the first three, and log(1 + MACs) x log(bytes)

is fitted to log(phone_ms) by least squares on pairs (the same block timed on this machine and on
the phone). Host time carries what the block does; MACs, bytes and depthwise MACs let the phone
weigh compute, memory and depthwise kernels differently from the host; the layer count carries the
runtimes' different cost per layer (the forms tried, and how each did: benchmarks/RESULTS.md).
Features are clipped to the range seen in fitting, so that the squares never extrapolate far. A
random part of the pairs is held out; the held-out error is what a derived table reports. Beside it,
the leave-one-kind-out error: each reference kind (conv, transattn, ...) predicted by a fit that
never saw it, which is what pricing an EdgeViT op, a kind the fit never saw, amounts to. The
coefficients are stored with the table, so that op keys of another space can be derived later
without refitting.
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
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lglsearch.cost._metrics import error_summary
from lglsearch.cost._phone.reference import OP_CLASSES
from lglsearch.cost.build import host_table
from lglsearch.cost.ops import op_input_shape, op_module, op_parts
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import CostTable
from lglsearch.errors import LglsearchError

__all__ = [
    "FEATURES",
    "RAW_FEATURES",
    "TransferModel",
    "host_keys",
    "leave_one_kind_out",
    "module_features",
    "part_features",
    "range_coverage",
]

FEATURES = ("host_ms", "macs", "bytes", "dw_macs", "layers")
"""What a block is described by (`module_features` gives all but the host time)."""

RAW_FEATURES = ("log host_ms", "log(1+MACs)", "log bytes", "log(1+dw MACs)", "layers")
"""The features as the fit sees them (and as its ranges and distances outside them are given)."""

FORM = (
    "log(phone_ms) = b . [1, log host_ms, log(1+MACs), log bytes, log(1+dw MACs), layers, (log host_ms)^2, "
    "log(1+MACs)^2, (log bytes)^2, log(1+MACs) log bytes], features clipped to the fitted ranges"
)


def module_features(module: nn.Module, shape: Sequence[int]) -> dict[str, float]:
    """MACs (conv and matmul), bytes moved (fp32 weights, input and output), depthwise-conv MACs
    and the number of layers run, of one batch-1 run of `module`."""
    counter = FlopCounterMode(display=False)
    x = torch.randn(tuple(shape))
    stats = {"dw_macs": 0.0, "layers": 0.0}

    def hook(layer: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        stats["layers"] += 1
        if isinstance(layer, nn.Conv2d) and layer.groups > 1:
            stats["dw_macs"] += output.numel() * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)

    handles = [m.register_forward_hook(hook) for m in module.modules() if not any(m.children())]
    try:
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            y = module.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    params = sum(p.numel() for p in module.parameters())
    return {"macs": counter.get_total_flops() / 2, "bytes": 4.0 * (params + x.numel() + y.numel())} | stats


def _raw(f: Mapping[str, Any]) -> np.ndarray:
    cols = [np.log(f["host_ms"]), np.log1p(f["macs"]), np.log(f["bytes"]), np.log1p(f["dw_macs"]), f["layers"]]
    return np.column_stack([np.atleast_1d(np.asarray(c, float)) for c in cols])


def _fit_pairs() -> int:
    return 2 * _design(np.ones((1, len(FEATURES)))).shape[1]


def _design(raw: np.ndarray) -> np.ndarray:
    host, macs, nbytes = raw[:, 0], raw[:, 1], raw[:, 2]
    return np.column_stack([np.ones(len(raw)), raw, host**2, macs**2, nbytes**2, macs * nbytes])


def _fit(raw: np.ndarray, phone_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coefficients, lower and upper feature bounds) of a least-squares fit on raw features."""
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    beta = np.linalg.lstsq(_design(np.clip(raw, lo, hi)), np.log(phone_ms), rcond=None)[0]
    return beta, lo, hi


def leave_one_kind_out(pairs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per reference kind (column `kind`), the error of predicting it from a fit without it.

    The fit is the kind's own class fitted on that class's other kinds where they are enough; a
    class of one kind (attention, mlp and downsampling each are one nn-Meter kind) has none, so
    all other kinds are fitted as one class: the only way this form can price a kind of a class it
    never saw. Predictions clip to the fit's range, as the tables' do; `outside_range` is the
    share of the kind's blocks with a feature outside it.
    """
    result = {}
    for kind, test in pairs.groupby("kind"):
        rest = pairs[pairs["kind"] != kind]
        same = rest[rest["op_class"] == test["op_class"].iloc[0]]
        train = same if len(same) >= _fit_pairs() else rest
        beta, lo, hi = _fit(_raw(train), train["phone_ms"].to_numpy())
        raw = _raw(test)
        predicted = np.exp(_design(np.clip(raw, lo, hi)) @ beta)
        result[str(kind)] = error_summary(predicted, test["phone_ms"].to_numpy()) | {
            "op_class": str(test["op_class"].iloc[0]),
            "fitted_on": sorted(train["kind"].unique().tolist()),
            "outside_range": float(np.mean(((raw < lo) | (raw > hi)).any(axis=1))),
        }
    return result


@dataclass(frozen=True)
class TransferModel:
    """Per-class coefficients, feature ranges and held-out errors."""

    name: ClassVar[str] = "transfer"

    coef: Mapping[str, tuple[float, ...]]
    heldout: Mapping[str, Mapping[str, float]]
    ranges: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]
    """Per class, the (min, max) of each raw feature in the fit: predictions clip to it."""
    kinds_out: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per reference kind, the leave-one-kind-out error (`leave_one_kind_out`); empty if not measured."""

    @staticmethod
    def pairs_needed(holdout: float) -> int:
        """Reference pairs a class needs so that, on average, its fitted part has twice as many as
        the model has coefficients and its held-out part at least 2: checked before any timing."""
        return math.ceil(max(_fit_pairs() / (1 - holdout), 2 / holdout))

    @classmethod
    def fit(cls, pairs: pd.DataFrame, *, holdout: float = 0.2, seed: int = 0) -> TransferModel:
        """Fit on `pairs` (columns op_class, phone_ms and FEATURES), holding out a part; with a `kind`
        column, also measure the leave-one-kind-out error."""
        if not 0 < holdout < 1:
            raise LglsearchError(f"holdout must be in (0, 1), got {holdout}")
        rng = np.random.default_rng(seed)
        coef, heldout, ranges = {}, {}, {}
        for op_class, group in pairs.groupby("op_class"):
            test = rng.random(len(group)) < holdout
            if (~test).sum() < _fit_pairs() or test.sum() < 2:
                raise LglsearchError(
                    f"too few reference pairs of class {op_class} ({len(group)}) to fit and hold out; "
                    "time more (--per-class)"
                )
            raw, phone_ms = _raw(group), group["phone_ms"].to_numpy()
            beta, lo, hi = _fit(raw[~test], phone_ms[~test])
            coef[op_class] = tuple(float(b) for b in beta)
            ranges[op_class] = (tuple(lo.tolist()), tuple(hi.tolist()))
            heldout[op_class] = error_summary(np.exp(_design(np.clip(raw[test], lo, hi)) @ beta), phone_ms[test])
        kinds_out = leave_one_kind_out(pairs) if "kind" in pairs else {}
        return cls(coef, heldout, ranges, kinds_out)

    def predict(self, op_class: str, features: Mapping[str, Any]) -> np.ndarray:
        """Phone ms of blocks of `op_class` described by `features` (each of FEATURES)."""
        if op_class not in self.coef:
            raise LglsearchError(f"no transfer model for op class {op_class!r}; fitted: {sorted(self.coef)}")
        lo, hi = self.ranges[op_class]
        return np.exp(_design(np.clip(_raw(features), lo, hi)) @ np.asarray(self.coef[op_class]))

    def outside(self, op_class: str, features: Mapping[str, Any]) -> dict[str, float]:
        """How far each raw feature (RAW_FEATURES, in its own units) lies outside the class's fitted
        range: only the features outside it, each by its distance to the nearest bound."""
        lo, hi = (np.asarray(b) for b in self.ranges[op_class])
        raw = _raw(features)[0]
        beyond = np.maximum(lo - raw, raw - hi)
        return {name: float(d) for name, d in zip(RAW_FEATURES, beyond, strict=True) if d > 1e-9}

    def price_keys(
        self, keys: Sequence[str], *, runner: OrtRunner | None = None, host: CostTable | None = None
    ) -> pd.Series:
        """Phone ms of op keys: each part's host time (timed here unless `host` holds it) transferred
        with its class's model."""
        host = host or host_table(host_keys(keys), runner=runner)
        latency = {}
        for key in keys:
            total = 0.0
            for part, op_class in op_parts(key):
                features = part_features(part) | {"host_ms": host.op_latency(part)}
                total += float(self.predict(op_class, features)[0])
            latency[key] = total
        return pd.Series(latency, name="latency_ms")

    def coverage(self, keys: Sequence[str], *, host: CostTable | None = None) -> tuple[pd.Series, dict[str, Any]]:
        """Per key the count of part features outside the fitted ranges, and a summary; host times
        come from the host table as it stands (none measured: a part without one is unchecked)."""
        host = host or host_table(measure=False)
        host_ms = {part: host.op_latency(part) for part in host_keys(keys) if part in host}
        outside, summary = range_coverage(self, keys, host_ms)
        summary["host"] = f"{host.meta.get('description', 'no host table')} ({host.meta.get('date', 'no timings')})"
        return outside, summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "form": FORM,
            "features": list(FEATURES),
            "coef": {k: list(v) for k, v in self.coef.items()},
            "ranges": {k: [list(lo), list(hi)] for k, (lo, hi) in self.ranges.items()},
            "heldout": {k: dict(v) for k, v in self.heldout.items()},
            "leave_one_kind_out": {k: dict(v) for k, v in self.kinds_out.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferModel:
        malformed = LglsearchError("the table's transfer model is malformed; derive the table again")
        try:
            coef = {k: tuple(float(b) for b in v) for k, v in data["coef"].items()}
            ranges = {k: (tuple(map(float, lo)), tuple(map(float, hi))) for k, (lo, hi) in data["ranges"].items()}
        except (KeyError, TypeError, ValueError):
            raise malformed from None
        width = _design(np.ones((1, len(FEATURES)))).shape[1]
        if set(coef) - set(OP_CLASSES) or set(coef) != set(ranges) or any(len(v) != width for v in coef.values()):
            raise malformed
        return cls(coef, data.get("heldout", {}), ranges, data.get("leave_one_kind_out", {}))


@functools.cache
def part_features(key: str) -> dict[str, float]:
    """The timing-free features of an op part (MACs, bytes, depthwise MACs, layers)."""
    return module_features(op_module(key), op_input_shape(key))


def host_keys(keys: Sequence[str]) -> list[str]:
    """The parts of `keys` a transfer times on the host."""
    return sorted({part for key in keys for part, _ in op_parts(key)})


def range_coverage(
    model: TransferModel, keys: Sequence[str], host_ms: Mapping[str, float]
) -> tuple[pd.Series, dict[str, Any]]:
    """(per key, the count of part features outside the fitted range; a summary) for `keys`.

    `host_ms` gives the host time of the parts timed on this machine; a part without one has its
    host time left unchecked, and the summary says how many were checked.
    """
    counts: dict[str, int] = {}
    parts: dict[str, dict[str, Any]] = {}  # each part once, though keys share parts
    for key in keys:
        total = 0
        for part, op_class in op_parts(key):
            if part not in parts:
                features = part_features(part) | {"host_ms": host_ms.get(part, float("nan"))}
                parts[part] = {"class": op_class, "outside": model.outside(op_class, features)}
            total += len(parts[part]["outside"])
        counts[key] = total
    by_class: dict[str, dict[str, Any]] = {}
    for info in parts.values():
        entry = by_class.setdefault(info["class"], {"parts": 0, "outside": 0, "features": {}})
        entry["parts"] += 1
        entry["outside"] += bool(info["outside"])
        for name, distance in info["outside"].items():
            feature = entry["features"].setdefault(name, {"parts": 0, "max_beyond": 0.0})
            feature["parts"] += 1
            feature["max_beyond"] = max(feature["max_beyond"], round(distance, 4))
    for op_class, entry in by_class.items():
        lo, hi = model.ranges[op_class]
        entry["share_outside"] = entry["outside"] / entry["parts"]
        for name, feature in entry["features"].items():
            i = RAW_FEATURES.index(name)
            feature["fitted"] = [round(lo[i], 4), round(hi[i], 4)]
    series = pd.Series(counts, dtype=float)
    summary = {
        "keys": len(series),
        "keys_outside": int((series > 0).sum()),
        "share_outside": float(np.mean(series > 0)) if len(series) else 0.0,
        "units": "max_beyond: distance past the nearest fitted bound in the feature's own units "
        f"({', '.join(RAW_FEATURES)}; natural logs)",
        "host_ms_checked": f"{sum(p in host_ms for p in parts)} of {len(parts)} parts",
        "by_class": dict(sorted(by_class.items())),
    }
    return series, summary
