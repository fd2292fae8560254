"""The table for device D: the one place that decides how a table gets the keys a caller needs.

- `fill="none"`: the table as it stands (the host's: empty before its first build). A key it lacks
  is an error when priced, naming the command that adds it.
- `fill="measure"` (the default): the host table measures the keys it lacks on this machine (it is
  this machine's own cache, built on first use); another device's table is as it stands.
- `fill="derive"`: as "measure", and a derived phone table prices the keys it lacks with its stored
  phone model, in memory: nothing is written, so a shipped table is never shadowed by a copy.

Only the `lut` commands write device tables (`build.build_table`, `derive.derive_table`,
`importing.import_table`, a validation's record).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal

from lglsearch.cost.build import host_table
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import HOST, CostTable, known_devices, table_path

__all__ = ["Fill", "describe_devices", "get_table"]

Fill = Literal["none", "measure", "derive"]


def get_table(
    device: str,
    keys: Sequence[str] = (),
    *,
    fill: Fill = "measure",
    runner: OrtRunner | None = None,
    space_name: str | None = None,
) -> CostTable:
    """`device`'s table, with the keys of `keys` it lacks filled as `fill` says (module docstring)."""
    if device == HOST:
        return host_table(keys, measure=fill != "none", runner=runner, space_name=space_name)
    table = CostTable.load(device)
    missing = table.missing(keys)
    model = table.phone_model()
    if fill == "derive" and missing and model is not None:
        print(
            f"lglsearch: pricing {len(missing)} op key(s) missing from the {device} table with its "
            f"{model['name']} model (in memory; `lglsearch lut derive` adds them to the table)",
            file=sys.stderr,
        )
        from lglsearch.cost._phone.derive import with_derived_keys  # only a derivation needs the phone models

        table = with_derived_keys(table, keys, space_name or "keys of this run", runner=runner)
    return table


def describe_devices() -> list[dict[str, Any]]:
    """What `lglsearch devices` lists: each known table's `describe()` and path, and a row saying
    how to build the host table before its first build."""
    rows = []
    for device in known_devices():
        path = table_path(device)
        if device == HOST and not path.with_suffix(".json").is_file():
            description = "this machine (not built yet: `lglsearch lut build --device host`)"
            rows.append({"device": HOST, "entries": 0, "method": "measured", "description": description})
            continue
        rows.append(CostTable.load(path).describe() | {"path": str(path)})
    return rows
