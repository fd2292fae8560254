"""What a search optimises and what it refuses: objectives, budgets, and pricing an arch.

Pricing is a table lookup (microseconds), so budgets are checked before any accuracy is spent:
an arch over a budget is never evaluated. `cheapest` finds the exact minimum latency and energy
of a space on a device, so a budget no arch can meet is an error before the search starts.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from lglsearch.cost.table import CostTable
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.space import Arch, Space, Stage

__all__ = ["OBJECTIVES", "Budgets", "Price", "Pricer", "cheapest", "parse_objectives"]

OBJECTIVES = {"accuracy": "maximize", "latency": "minimize", "energy": "minimize"}
"""Objective names and their Optuna directions; accuracy is always first."""


def parse_objectives(text: str | None, table: CostTable) -> tuple[str, ...]:
    """The objectives of a search: `text` (comma-separated) or the default for the device.

    The default is accuracy and latency, plus energy where the device's table prices it.
    """
    if text is None:
        return ("accuracy", "latency", "energy") if table.has_energy else ("accuracy", "latency")
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise LglsearchError(f"unknown objective {unknown[0]!r}; choose from {', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise LglsearchError(f"objective listed twice in {text!r}; list each once")
    if "accuracy" not in names or len(names) < 2:
        raise LglsearchError(
            f"objectives {text!r}: a search needs accuracy and at least one cost (latency, energy), "
            "e.g. accuracy,latency"
        )
    if "energy" in names:
        table.require_energy()
    return ("accuracy", *(n for n in OBJECTIVES if n in names and n != "accuracy"))


@dataclass(frozen=True)
class Budgets:
    latency_ms: float | None = None
    energy_mj: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("--budget-ms", self.latency_ms), ("--energy-budget-mj", self.energy_mj)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise LglsearchError(f"{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class Price:
    latency_ms: float
    energy_mj: float  # NaN where the table has no energy
    params_m: float
    macs_g: float
    over: str | None  # why a budget rejects the arch, or None

    @property
    def feasible(self) -> bool:
        return self.over is None


class Pricer:
    """Prices archs on one device's table and checks them against the budgets."""

    def __init__(self, table: CostTable, budgets: Budgets) -> None:
        if budgets.energy_mj is not None:
            table.require_energy()
        self.table, self.budgets = table, budgets

    def __call__(self, arch: Arch) -> Price:
        latency, energy = self.table.cost(arch)
        counts = count(arch)
        over = None
        if self.budgets.latency_ms is not None and latency > self.budgets.latency_ms:
            over = f"latency {latency:.2f} ms > {self.budgets.latency_ms:g} ms"
        elif self.budgets.energy_mj is not None and energy > self.budgets.energy_mj:
            over = f"energy {energy:.2f} mJ > {self.budgets.energy_mj:g} mJ"
        return Price(latency, energy, counts.params_m, counts.macs_g, over)

    def check_reachable(self, space: Space) -> None:
        """Raise before any work when no arch of `space` meets the budgets, saying what the cheapest costs."""
        lowest = cheapest(space, self.table)
        for budget, (name, unit, index) in (
            (self.budgets.latency_ms, ("latency", "ms", 0)),
            (self.budgets.energy_mj, ("energy", "mJ", 1)),
        ):
            if budget is not None and budget < lowest[index][0]:
                value, arch = lowest[index]
                raise LglsearchError(
                    f"a {name} budget of {budget:g} {unit} is below the cheapest arch of space {space.name!r} on "
                    f"{self.table.device}: {value:.2f} {unit} ({arch}); raise the budget or use a smaller space"
                )


def _stage_variants(space: Space, index: int, width: int) -> list[Stage]:
    """Every stage of `space`'s stage `index` at `width` that can differ in cost.

    A stage is priced by its counts of each op (`stage_ops`), so block order does not matter;
    `Stage` drops heads and sr where no block attends, so those come once.
    """
    choices = space.stages[index]
    stages = (
        Stage(width=width, heads=heads, sr=sr, mlp_ratio=ratio, kinds=kinds)
        for depth, ratio in itertools.product(choices.depth, choices.mlp_ratio)
        for kinds in itertools.combinations_with_replacement(choices.kinds, depth)
        for heads, sr in itertools.product(choices.heads_for(width), choices.sr)
    )
    return list(dict.fromkeys(stages))


def cheapest(space: Space, table: CostTable) -> tuple[tuple[float, Arch], tuple[float, Arch]]:
    """((minimum latency, its arch), (minimum energy, its arch)) over every arch of `space`.

    Exact without enumerating the space: a network's cost is a sum over stages, and a stage's
    choices other than its width change only its own terms, so the best of them is found per
    (stage, width) against a fixed rest; what remains is the product of the widths.
    """
    results = []
    for column in (0, 1):
        if column == 1 and not table.has_energy:
            results.append((math.nan, space.smallest()))
            continue
        best: tuple[float, Arch] | None = None
        for sampler, propagation in itertools.product(space.sampler, space.propagation):

            def make(stages: list[Stage], s: str = sampler, p: str = propagation) -> Arch:
                # built whole: Arch resets the switches of a net without sparse attention
                return Arch(tuple(stages), space.resolution, space.num_classes, s, p)

            rest = list(space.smallest().stages)
            inner: dict[tuple[int, int], Stage] = {}
            for i, choices in enumerate(space.stages):
                for width in choices.width:
                    stages = list(rest)
                    candidates = []
                    for stage in _stage_variants(space, i, width):
                        stages[i] = stage
                        candidates.append((table.cost(make(stages))[column], stage))
                    inner[i, width] = min(candidates, key=lambda c: c[0])[1]
            for widths in itertools.product(*(c.width for c in space.stages)):
                arch = make([inner[i, w] for i, w in enumerate(widths)])
                value = table.cost(arch)[column]
                if best is None or value < best[0]:
                    best = (value, arch)
        assert best is not None
        results.append(best)
    return results[0], results[1]
