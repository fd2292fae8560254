"""Whether a derived table prices its op keys inside or outside what its phone model was fitted on.

An op priced outside what the fit saw is an extrapolation, where the held-out error does not
speak for it. For every op key, each part (SelfAttn: its attention and MLP halves) is checked; a
table stores per key how many things lie outside (`outside_range`, 0 = inside) and per space a
summary: the share of keys outside, and what lies outside and how far.

- Kernel model (`kernel_coverage`): a kernel of a type no fit saw (priced as another type), a conv
  kernel size no fit saw, or MACs / bytes past the range its type was fitted on.
- Transfer model (`range_coverage`): a whole-block feature outside its class's fitted range (the
  model clips features to that range).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lglsearch.cost.joint import JointKernelModel
from lglsearch.cost.ops import arch_ops, op_input_shape, op_module, op_parts
from lglsearch.cost.phone_kernels import PhoneKernelModel, part_kernels
from lglsearch.cost.table import CostTable
from lglsearch.cost.transfer import RAW_FEATURES, TransferModel, module_features
from lglsearch.space import Arch

__all__ = ["COLUMN", "extrapolated", "kernel_coverage", "part_features", "range_coverage"]

COLUMN = "outside_range"
"""The per-key column: how many (part, feature) values lie outside the fitted range."""


@functools.cache
def part_features(key: str) -> dict[str, float]:
    """The timing-free features of an op part (MACs, bytes, depthwise MACs, layers)."""
    return module_features(op_module(key), op_input_shape(key))


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
    series = pd.Series(counts, name=COLUMN, dtype=float)
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


def kernel_coverage(
    model: PhoneKernelModel | JointKernelModel, keys: Sequence[str]
) -> tuple[pd.Series, dict[str, Any]]:
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
    series = pd.Series(counts, name=COLUMN, dtype=float)
    return series, {
        "keys": len(series),
        "keys_outside": int((series > 0).sum()),
        "share_outside": float(np.mean(series > 0)) if len(series) else 0.0,
        "keys_with_unseen_type": sum(any("priced_as" in e for p, _ in op_parts(k) for e in found[p]) for k in keys),
        "units": "outside_range: kernels priced outside the fits; *_factor: MACs or bytes over the nearest "
        "fitted bound (farthest kernel)",
        "by_type": dict(sorted(by_type.items())),
    }


def extrapolated(table: CostTable, arch: Arch) -> dict[str, Any] | None:
    """The op keys of `arch` that `table` prices outside what its phone model was fitted on, and
    their share of the arch's latency; None for a table that does not record it (measured ones)."""
    if COLUMN not in table.frame:
        return None
    uses = arch_ops(arch)
    outside = table.frame[COLUMN].reindex(uses).fillna(0).to_numpy() > 0
    latency = np.array([table.op_latency(k) for k in uses])
    return {
        "ops": sorted({k for k, out in zip(uses, outside, strict=True) if out}),
        "latency_share": round(float(latency[outside].sum() / latency.sum()), 4),
    }
