"""Whether a derived table prices its op keys inside or outside what its phone model was fitted on.

An op priced outside what the fit saw is an extrapolation, where the held-out error does not
speak for it. For every op key, each part (SelfAttn: its attention and MLP halves) is checked; a
table stores per key how many things lie outside (`outside_range`, 0 = inside) and per space a
summary: the share of keys outside, and what lies outside and how far.

- Kernel models (`phone_kernels.kernel_coverage`, the per-class and the joint model): a kernel of a
  type no fit saw (priced as another type), a conv kernel size no fit saw, or MACs / bytes past the
  range its type was fitted on.
- Transfer model (`transfer.range_coverage`): a whole-block feature outside its class's fitted
  range (the model clips features to that range).

Each phone model checks its own keys (`coverage`); this module reads what a table stores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lglsearch.cost.ops import arch_ops
from lglsearch.cost.table import CostTable
from lglsearch.space import Arch

__all__ = ["COLUMN", "extrapolated"]

COLUMN = "outside_range"
"""The per-key column: how many (part, feature) values lie outside the fitted range."""


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
