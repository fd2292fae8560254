"""Any network priced on a phone: its kernels (from an ONNX graph or a PyTorch module), each at the
cost the phone table's model fitted, summed.

This is the pricing path for networks that are not op keys of the search space (`predict --onnx`,
`lut validate --measured`): the same kernel split (`kernels.decompose`, `graph.onnx_kernels`) and
the same per-kernel costs the table's op keys were priced with. A price says what it is made of:
ms per kernel type, the types priced as another (a type the fit never saw), and the share of the
latency priced outside the sizes the fit saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lglsearch.cost._phone.derive import load_model
from lglsearch.cost._phone.joint import JointKernelModel
from lglsearch.cost._phone.phone_kernels import key_kernels
from lglsearch.cost.kernels import Kernel, decompose
from lglsearch.cost.ops import arch_ops
from lglsearch.cost.table import CostTable
from lglsearch.errors import LglsearchError
from lglsearch.space import Arch

__all__ = [
    "Price",
    "arch_kernels",
    "network_model",
    "price_kernels",
    "price_module",
    "price_onnx",
    "price_tflite",
    "summary_line",
    "whole_network_band",
    "whole_network_lines",
]


@dataclass(frozen=True)
class Price:
    latency_ms: float
    by_type: Mapping[str, float]
    """ms per kernel type (the invocation constant under "constant")."""
    kernels: int
    priced_as: Mapping[str, str]
    """Kernel types the fit never saw, and the type each was priced as."""
    outside_share: float
    """Share of `latency_ms` from kernels outside the types or sizes the fit saw."""
    runtime: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": round(self.latency_ms, 4),
            "by_type": {k: round(v, 4) for k, v in sorted(self.by_type.items(), key=lambda kv: -kv[1])},
            "kernels": self.kernels,
            "priced_as": dict(self.priced_as),
            "outside_share": round(self.outside_share, 4),
            "runtime": self.runtime,
        }


def network_model(table: CostTable) -> JointKernelModel:
    """The model of `table` that prices any network (a per-class kernel model prices one with its
    all-class fit: a graph has no op classes)."""
    stored = table.phone_model()
    if stored is None:
        raise LglsearchError(
            f"the {table.device} table holds measured op keys only, no kernel model to price a network with; "
            "use a derived phone table (lglsearch devices lists them)"
        )
    model = load_model(stored)
    as_network = getattr(model, "network_model", None)
    if as_network is None:
        raise LglsearchError(
            f"the {table.device} table's {model.name} model prices op keys only, not networks; derive it with "
            f"the joint or kernel model (lglsearch lut derive --device {table.device} --model joint)"
        )
    return as_network()


def whole_network_band(table: CostTable) -> int | None:
    """The +-% band around a latency that the table's whole-network check supports (None: not checked)."""
    errors = ((table.phone_model() or {}).get("errors") or {}).get("whole_networks") or {}
    return errors.get("band_pct")


def whole_network_lines(errors: Mapping[str, Any] | None) -> list[str]:
    """A table model's whole-network error (`errors["whole_networks"]`) as the sentences `predict`,
    `devices` and the report print: each group's figure, the band, and whose phone measured them."""
    if not errors:
        return ["whole-network error: not measured (the phone model was fitted on blocks only)"]
    lines = [
        f"whole-network error, {e['n']} {group} measured on {errors['measured_on'].split(',')[0]}, each family "
        f"left out of the fit: {100 * e['within_20pct']:.0f}% within +-20%, {100 * e['within_25pct']:.0f}% within "
        f"+-25%, MAPE {100 * e['mape']:.0f}%, Spearman {e['spearman']:.3f} (development data)"
        for group, e in errors["leave_one_family_out"].items()
    ]
    lines.append(f"read its latencies as +-{errors['band_pct']}%: {errors['band']}")
    if errors["this_phone"] != "measured here":
        lines.append(f"this phone: {errors['this_phone']}")
    return lines


def arch_kernels(arch: Arch) -> list[Kernel]:
    """The kernels of an arch as its op keys split into them: what its table price is the sum of."""
    return [k for key in arch_ops(arch) for k in key_kernels(key)]


def price_kernels(model: JointKernelModel, kernels: Sequence[Kernel]) -> Price:
    """The price of one network made of `kernels`."""
    if not kernels:
        raise LglsearchError("the network has no kernel to price (an empty graph?)")
    costs = model.kernel_costs(kernels)
    by_type: dict[str, float] = {"constant": model.constant * model.factor}
    outside = 0.0
    priced_as = {}
    for kernel, cost in zip(kernels, costs, strict=True):
        by_type[kernel.type] = by_type.get(kernel.type, 0.0) + float(cost)
        as_type = model.model.priced_as(kernel.type)
        if as_type != kernel.type:
            priced_as[kernel.type] = as_type
        if model.model.outside([kernel]):
            outside += float(cost)
    total = float(sum(by_type.values()))
    return Price(total, by_type, len(kernels), priced_as, outside / total if total > 0 else 0.0, model.runtime)


def price_module(model: JointKernelModel, module: torch.nn.Module, shape: Sequence[int]) -> Price:
    """The price of a PyTorch module run on an input of `shape` (batch 1)."""
    return price_kernels(model, decompose(module, shape))


def price_onnx(model: JointKernelModel, path: str | Path, input_shape: Sequence[int] | None = None) -> Price:
    """The price of an ONNX model's graph."""
    from lglsearch.cost.graph import onnx_kernels  # onnx is imported only when a graph is priced

    return price_kernels(model, onnx_kernels(path, input_shape))


def price_tflite(model: JointKernelModel, path: str | Path) -> Price:
    """The price of a .tflite file's graph, op by op as the converter wrote it (needs the tflite extra)."""
    from lglsearch.cost.tflite_graph import tflite_kernels  # LiteRT is imported only when a file is priced

    return price_kernels(model, tflite_kernels(path))


def summary_line(price: Price) -> str:
    """One line for a user: ms, the top kernel types, what was priced as what, the share outside."""
    top = sorted(price.by_type.items(), key=lambda kv: -kv[1])[:4]
    parts = ", ".join(f"{k} {v:.1f}" for k, v in top)
    as_ = "; ".join(f"{k} as {v}" for k, v in price.priced_as.items()) or "none"
    return (
        f"{price.latency_ms:.1f} ms ({price.runtime}) from {price.kernels} kernels [{parts} ms]; "
        f"priced as another type: {as_}; {100 * price.outside_share:.0f}% outside the fitted sizes"
    )
