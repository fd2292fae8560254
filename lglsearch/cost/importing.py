"""Importing per-op measurements made elsewhere as a device's table.

Schema of the CSV: a header, then one row per op key.

    key,latency_ms[,energy_mj]
    "local_agg:c=36,r=4,hw=56",0.412
    ...

(keys hold commas, so they are quoted, as any CSV writer does).

`key` is an op key as `lglsearch/cost/opkey.py` writes it (one of embed, local_agg, self_attn, head;
any spelling of it: fields in any order, ``r=4.0`` for ``r=4``; it is stored canonically),
`latency_ms` a finite positive latency in milliseconds, `energy_mj` (optional) a finite non-negative
energy in millijoules. Every row is checked before anything is written; the table goes to the user cache.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lglsearch.cost.opkey import OpKey
from lglsearch.cost.table import HOST, CostTable, shipped_dir, user_tables_dir
from lglsearch.errors import LglsearchError

__all__ = ["import_table"]

COLUMNS = ("key", "latency_ms", "energy_mj")


def import_table(device: str, csv_path: str | Path, *, meta: dict[str, Any], replace: bool = False) -> CostTable:
    """Validate `csv_path` and save it as `device`'s table (method `imported`) in the user cache.

    A shipped device's name is refused unless `replace`: the user table would shadow the shipped one
    for every later command."""
    if device == HOST or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", device):
        raise LglsearchError(
            f"device name {device!r} must be lower-case letters, digits, '-' or '_', and not 'host' "
            "(the host table is measured here)"
        )
    if not replace and (shipped_dir() / f"{device}.json").is_file():
        raise LglsearchError(
            f"device {device!r} has a shipped table, which this import would replace for every later command; "
            "give the table another name, or pass --replace to shadow the shipped one"
        )
    path = Path(csv_path)
    if not path.is_file():
        raise LglsearchError(f"CSV {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype={"key": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise LglsearchError(f"CSV {path} cannot be read ({reason}); see the schema in README") from None
    unknown = [c for c in frame.columns if c not in COLUMNS]
    if unknown or "key" not in frame or "latency_ms" not in frame:
        raise LglsearchError(
            f"CSV {path} has columns {list(frame.columns)}; it needs key and latency_ms, and may have energy_mj"
        )
    keys = []
    for row, key in enumerate(frame["key"], start=2):
        try:
            op = OpKey.parse(str(key))
        except LglsearchError as err:
            raise LglsearchError(f"CSV {path} line {row}: {key!r} is not an op key: {err}") from None
        if not op.priced:
            raise LglsearchError(f"CSV {path} line {row}: {key!r} is not an op key (e.g. 'local_agg:c=36,r=4,hw=56')")
        keys.append(str(op))
    frame["key"] = keys
    if frame["key"].duplicated().any():
        raise LglsearchError(f"CSV {path} lists {frame['key'][frame['key'].duplicated()].iloc[0]!r} twice")
    for column, lowest in (("latency_ms", "positive"), ("energy_mj", "non-negative")):
        if column not in frame:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        floats = values.to_numpy(dtype=float)  # inf and nan would pass a `> 0` check
        bad = ~np.isfinite(floats) | ((floats <= 0) if lowest == "positive" else (floats < 0))
        if bad.any():
            row = int(bad.nonzero()[0][0])
            raise LglsearchError(
                f"CSV {path} line {row + 2}: {column} {frame[column].iloc[row]} is not a {lowest} number "
                f"({'milliseconds' if column == 'latency_ms' else 'millijoules'}, finite)"
            )
        frame[column] = values
    table = CostTable.empty(
        device,
        {
            "method": "imported",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "imported_from": str(path.resolve()),
            **meta,
        },
    )
    table = table.with_rows(frame.set_index("key"))
    table.save(user_tables_dir() / f"{device}.csv")
    return table
