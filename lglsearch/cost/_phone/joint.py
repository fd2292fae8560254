"""A phone's kernel costs fitted on its reference blocks and on whole networks measured on a phone.

Why: the per-class kernel model (`phone_kernels.py`) is fitted on nn-Meter's blocks alone, which
hold almost no dense k x k convolution, no grouped convolution, no GELU and no layout copy: it
priced those by the MB alone or as another type, and a whole network measured on a phone took up
to 10x longer than it said (benchmarks/RESULTS.md, "Whole models on a phone"). Whole networks
contain every kernel type a network has, in the proportions networks have them.

`JointKernelModel.fit` fits one `KernelModel` (the same per-kernel form) on both at once, by
non-negative least squares on relative error, each source (the blocks, and the networks of each
runtime) carrying equal total weight. Networks measured under another runtime than the blocks'
(TFLite builds differ in speed) enter under one factor per runtime, fitted by alternating with the
costs; the factor of the runtime the table describes (`runtime`) prices. A network's price is the
sum of its kernels' costs plus one invocation constant; an op key's is the sum of its parts'
kernels (the constant is the network's, added once, with its head).

Where a phone has no measured networks of its own, the networks of another phone can enter
rescaled by the two phones' speed ratio on their common reference blocks (`speed_ratio`): what
they add to this phone is then learned on the other phone, and the stored model says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from lglsearch.cost._phone.phone_kernels import kernel_coverage, key_kernels
from lglsearch.cost.kernels import Kernel, KernelModel
from lglsearch.cost.opkey import HeadKey, OpKey
from lglsearch.errors import LglsearchError

__all__ = ["FORM", "JointKernelModel", "MeasuredSet", "speed_ratio"]

FORM = (
    "ms = factor(runtime) x (constant + sum over kernels of (a + b MB + b1 max(0, MB - 1) + b4 max(0, MB - 4) "
    "+ w weight MB [+ c MMACs]) per kernel type), non-negative, fitted on relative error on reference blocks and "
    "whole networks together, each source weighted equally"
)


@dataclass(frozen=True)
class MeasuredSet:
    """Kernels and measured ms of networks timed under one runtime (e.g. 'TFLite 2.15')."""

    runtime: str
    kernels: Sequence[Sequence[Kernel]]
    latency_ms: Sequence[float]
    scale: float = 1.0
    """Multiplies the measured ms before fitting: another phone's networks rescaled to this phone."""

    def __post_init__(self) -> None:
        if len(self.kernels) != len(self.latency_ms) or not len(self.kernels):
            raise LglsearchError(f"{self.runtime}: give one measured latency per network (and at least one)")


def speed_ratio(phone: Mapping[str, float], other: Mapping[str, float]) -> float:
    """The median ms ratio of `phone` to `other` over the reference blocks both measured."""
    common = sorted(set(phone) & set(other))
    if not common:
        raise LglsearchError("the two phones' reference files share no block; no speed ratio can be taken")
    return float(np.median([phone[k] / other[k] for k in common]))


@dataclass(frozen=True)
class JointKernelModel:
    """Per-kernel-type costs, the runtime factors they were fitted under, and the runtime priced."""

    name: ClassVar[str] = "joint"

    model: KernelModel
    factors: Mapping[str, float]
    """Per runtime, measured / priced (the blocks' runtime is 1)."""
    runtime: str
    """The runtime whose factor prices (one of `factors`)."""
    errors: Mapping[str, Any] = field(default_factory=dict)
    """Errors measured on what the fit saw and on what it did not (filled by who measured them)."""
    sources: Mapping[str, Any] = field(default_factory=dict)
    """What the fit stood on: blocks, networks per runtime, rescalings."""

    @classmethod
    def fit(
        cls,
        blocks: Sequence[Sequence[Kernel]],
        block_ms: Sequence[float],
        networks: Sequence[MeasuredSet],
        *,
        runtime: str | None = None,
        block_runtime: str = "reference blocks",
        rounds: int = 6,
    ) -> JointKernelModel:
        """Fit on `blocks` (may be empty) and `networks`; `runtime` (default: the last set's) prices."""
        if not networks and not len(blocks):
            raise LglsearchError("nothing to fit: give reference blocks or measured networks")
        runtimes = [s.runtime for s in networks]
        runtime = runtime or (runtimes[-1] if runtimes else block_runtime)
        if runtime not in (*runtimes, block_runtime):
            raise LglsearchError(f"runtime {runtime!r} is none of the fitted ones: {', '.join(runtimes)}")
        kernels = [*blocks, *(k for s in networks for k in s.kernels)]
        measured = np.concatenate(
            [np.asarray(block_ms, float), *(np.asarray(s.latency_ms) * s.scale for s in networks)]
        )
        owner = np.concatenate(
            [np.full(len(blocks), -1), *(np.full(len(s.kernels), i) for i, s in enumerate(networks))]
        )
        sources = [-1, *range(len(networks))] if len(blocks) else list(range(len(networks)))
        weight = np.zeros(len(measured))
        for source in sources:
            weight[owner == source] = 1 / (owner == source).sum()
        factor = np.ones(len(networks))
        for _ in range(rounds if networks else 1):
            scale = np.where(owner >= 0, factor[np.maximum(owner, 0)], 1.0)
            model = KernelModel.fit(kernels, measured / scale, weights=weight)
            predicted = model.predict(kernels)
            for i in range(len(networks)):
                rows = owner == i
                factor[i] = float(np.median(measured[rows] / predicted[rows]))
            if not len(blocks):  # without blocks the scale is free: the first runtime's factor is 1
                factor = factor / factor[0]
        factors = {block_runtime: 1.0} if len(blocks) else {}
        factors |= {s.runtime: round(float(f), 6) for s, f in zip(networks, factor, strict=True)}
        return cls(
            model,
            factors,
            runtime,
            sources={
                "blocks": len(blocks),
                "networks": {s.runtime: len(s.kernels) for s in networks},
                "rescaled": {s.runtime: s.scale for s in networks if s.scale != 1.0},
            },
        )

    @property
    def factor(self) -> float:
        return self.factors[self.runtime]

    @property
    def constant(self) -> float:
        """The cost of one invocation (ms, before the runtime factor)."""
        return float(self.model.coef[self.model.columns.index(("block", "constant"))])

    def kernel_costs(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Each kernel's ms under the priced runtime, without the invocation constant."""
        if not kernels:
            return np.zeros(0)
        return (self.model.predict([[k] for k in kernels]) - self.constant) * self.factor

    def runtime_scale(self, runtime: str) -> float:
        """How a price under the priced runtime converts to `runtime`'s (1 for a runtime not fitted)."""
        return self.factors.get(runtime, self.factor) / self.factor

    def predict(self, networks: Sequence[Sequence[Kernel]]) -> np.ndarray:
        """Whole networks' ms under the priced runtime (the invocation constant included)."""
        return self.model.predict(networks) * self.factor

    def price_keys(self, keys: Sequence[str], **_: Any) -> pd.Series:
        """Phone ms of op keys: their parts' kernels; the head, once per network, adds the invocation constant."""
        prices = {}
        for key in keys:
            kernels = key_kernels(key)
            head = isinstance(OpKey.parse(key), HeadKey)
            prices[key] = float(self.kernel_costs(kernels).sum()) + (self.constant * self.factor if head else 0.0)
        return pd.Series(prices, name="latency_ms", dtype=float)

    def network_model(self) -> JointKernelModel:
        """The model that prices a whole network: this one."""
        return self

    def coverage(self, keys: Sequence[str], **_: Any) -> tuple[pd.Series, dict[str, Any]]:
        """Per key the count of its kernels priced outside what the fit saw, and a summary."""
        return kernel_coverage(self, keys)

    def outside(self, op_class: str, kernels: Sequence[Kernel]) -> list[dict[str, Any]]:
        """The kernels priced outside what the fit saw (one fit for every class: `op_class` is unused)."""
        return self.model.outside(kernels)

    def with_errors(self, errors: Mapping[str, Any]) -> JointKernelModel:
        return JointKernelModel(self.model, self.factors, self.runtime, dict(self.errors) | dict(errors), self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "form": FORM,
            "kernels": self.model.to_dict(),
            "factors": dict(self.factors),
            "runtime": self.runtime,
            "errors": dict(self.errors),
            "sources": dict(self.sources),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JointKernelModel:
        try:
            model = KernelModel.from_dict(data["kernels"])
            factors = {str(k): float(v) for k, v in data["factors"].items()}
            runtime = str(data["runtime"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise LglsearchError("the table's joint kernel model is malformed; derive the table again") from None
        if runtime not in factors or not all(np.isfinite(f) and f > 0 for f in factors.values()):
            raise LglsearchError("the table's joint kernel model is malformed; derive the table again")
        return cls(model, factors, runtime, data.get("errors", {}), data.get("sources", {}))
