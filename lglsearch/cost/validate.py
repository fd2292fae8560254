"""Validating a table: predicted (sum of ops) against measured whole-model latency.

On this machine (`validate`), the whole models are timed by the same runner, with the same threads
and statistic, as the ops were, and with the same anchor ops, so that their times are expressed at
the machine speed of the table's build: the comparison isolates the error of summing per-op
latencies from the drift of a shared machine between the build and now (reported as `speed`, with
the raw times). On a phone (`validate_on_phone`), the whole models are exported to ONNX and timed
over adb by the runner `lut build --adb` times ops with: what a derived phone table predicts is
judged against the phone itself.

`validate_host_table` and `validate_phone_table` are the `lut validate` command without its
printing: which table, which archs, how the phone runs them, and `record_validation` where the
figures are kept.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lglsearch.cost._metrics import error_summary
from lglsearch.cost.adb import AdbPhone, BenchmarkCommand
from lglsearch.cost.devices import get_table
from lglsearch.cost.ops import arch_ops
from lglsearch.cost.runner import OrtRunner, time_anchored
from lglsearch.cost.table import HOST, CostTable, user_tables_dir
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.export import export_onnx
from lglsearch.nn import build_model
from lglsearch.space import PRESETS, Arch, Space

__all__ = [
    "Validation",
    "record_validation",
    "sample_archs",
    "validate",
    "validate_host_table",
    "validate_measured",
    "validate_on_phone",
    "validate_phone_table",
    "validation_path",
]


@dataclass(frozen=True)
class Validation:
    rows: pd.DataFrame
    summary: dict[str, Any]


def sample_archs(space: Space, n: int, seed: int) -> list[tuple[str, Arch]]:
    """`n` distinct sampled archs of `space`, plus the presets it contains."""
    rng = np.random.default_rng(seed)
    archs: dict[Arch, str] = {}
    for _ in range(50 * n):
        if len(archs) >= n:
            break
        archs.setdefault(space.sample(rng), "sample")
    for name, arch in PRESETS.items():
        if space.contains(arch):
            archs[arch] = name
    return [(label, arch) for arch, label in archs.items()]


def validate(
    table: CostTable, labelled: Sequence[tuple[str, Arch]], *, runner: OrtRunner, progress: bool = True
) -> Validation:
    """Time the (label, arch) pairs whole (see `sample_archs`) and compare with the table."""
    archs = [a for _, a in labelled]
    predicted = table.predict(archs)["latency_ms"].to_numpy()
    bar = tqdm(total=len(archs), desc="exporting models", unit="arch", disable=not progress, file=sys.stderr)
    timings, speed, _ = time_anchored(
        runner,
        {a.id: (build_model(a), (1, 3, a.resolution, a.resolution)) for a in archs},
        table.meta.get("anchors"),
        on_exported=lambda name: bar.update(0 if name.startswith("anchor/") else 1),
    )
    bar.close()
    measured = np.array([timings[a.id].median_ms for a in archs])
    rows = _rows(labelled, predicted, measured).assign(
        measured_p10_ms=[timings[a.id].p10_ms for a in archs],
        measured_p90_ms=[timings[a.id].p90_ms for a in archs],
        measured_raw_ms=[timings[a.id].median_ms * speed for a in archs],
    )
    raw = error_summary(predicted, rows["measured_raw_ms"].to_numpy())
    summary = error_summary(predicted, measured) | {
        "threads": runner.threads,
        "speed": speed,
        "raw": {k: raw[k] for k in ("within_10pct", "within_5pct", "mape", "mean_error", "spearman")},
    }
    return Validation(rows, summary)


def _rows(labelled: Sequence[tuple[str, Arch]], predicted: np.ndarray, measured: np.ndarray) -> pd.DataFrame:
    archs = [a for _, a in labelled]
    return pd.DataFrame(
        {
            "arch_id": [a.id for a in archs],
            "label": [label for label, _ in labelled],
            "macs_g": [count(a).macs_g for a in archs],
            "n_ops": [len(arch_ops(a)) for a in archs],
            "predicted_ms": predicted,
            "measured_ms": measured,
            "error_pct": 100 * (predicted / measured - 1),
        }
    )


def validate_on_phone(
    table: CostTable,
    labelled: Sequence[tuple[str, Arch]],
    *,
    phone: AdbPhone,
    bench: BenchmarkCommand,
    progress: bool = True,
) -> Validation:
    """Time the (label, arch) pairs whole on the phone, as `lut build --adb` times ops, and compare
    with the table's predictions."""
    phone.check()  # an unreachable phone is an error before any export
    archs = [a for _, a in labelled]
    predicted = table.predict(archs)["latency_ms"].to_numpy()
    measured = []
    with tempfile.TemporaryDirectory(prefix="lglsearch-adb-") as tmp:
        for arch in tqdm(
            archs, desc=f"validating on {phone.serial}", unit="arch", disable=not progress, file=sys.stderr
        ):
            local = export_onnx(
                build_model(arch),
                torch.randn(1, 3, arch.resolution, arch.resolution),
                Path(tmp) / f"arch-{arch.id}.onnx",
            )
            measured.append(phone.latency_ms(phone.push(local), bench))
    summary = error_summary(predicted, np.array(measured)) | {
        "threads": bench.threads,
        "method": "whole models measured on the phone over adb",
        "adb_serial": phone.serial,
        "command": bench.render("MODEL"),
    }
    return Validation(_rows(labelled, predicted, np.array(measured)), summary)


def _keys(labelled: Sequence[tuple[str, Arch]]) -> list[str]:
    return sorted({str(k) for _, a in labelled for k in arch_ops(a)})


def _stamped(result: Validation, space: Space, seed: int) -> Validation:
    """The validation with what it was run on, to be stored beside its figures."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return Validation(result.rows, result.summary | {"space": space.name, "seed": seed, "date": now})


def validate_host_table(
    device: str, space: Space, *, archs: int, seed: int, runs: int, rounds: int, progress: bool = True
) -> tuple[CostTable, Validation]:
    """`archs` sampled archs of `space` (and the presets in it) timed whole on this machine against
    the host table, which first measures the op keys it lacks; `device` must be the host."""
    if device != HOST:
        raise LglsearchError(
            f"only the host table can be validated on this machine (whole models run here), not {device!r}; "
            "use --device host, or time the models on the phone with --adb SERIAL"
        )
    labelled = sample_archs(space, archs, seed)
    table = get_table(HOST, _keys(labelled), space_name=space.name)
    runner = OrtRunner(threads=int(table.meta["threads"]), runs=runs, rounds=rounds)
    return table, _stamped(validate(table, labelled, runner=runner, progress=progress), space, seed)


def validate_phone_table(
    device: str,
    space: Space,
    *,
    archs: int,
    seed: int,
    phone: AdbPhone,
    bench: BenchmarkCommand,
    threads: int | None = None,
    cpu_mask: str | None = None,
    progress: bool = True,
) -> tuple[CostTable, Validation]:
    """`archs` sampled archs of `space` (and the presets in it) timed whole on `phone` against
    `device`'s table. The phone runs what the table priced: `bench` with the table's thread count
    and core mask, unless `threads` or `cpu_mask` are given. Refused, before anything is pushed,
    for the host or a table that lacks some of the archs' op keys."""
    if device == HOST:
        raise LglsearchError(
            "`host` is this machine; validate it without --adb, or name the phone's table with --device"
        )
    table = get_table(device, fill="none")
    labelled = sample_archs(space, archs, seed)
    missing = table.missing(_keys(labelled))
    if missing:
        raise LglsearchError(
            f"the {device} table lacks {len(missing)} op key(s) of space {space.name} (first: {missing[0]}); "
            "add them first (`lglsearch lut derive` or `lut build --adb`)"
        )
    bench = dataclasses.replace(
        bench,
        threads=threads or int(table.meta.get("threads", 1)),
        cpu_mask=cpu_mask or table.meta.get("cpu_mask"),
    )
    result = validate_on_phone(table, labelled, phone=phone, bench=bench, progress=progress)
    return table, _stamped(result, space, seed)


def validate_measured(device: str, csv: str | Path, *, progress: bool = True) -> tuple[CostTable, Validation]:
    """The networks of a measured CSV (`cost.measured`: ONNX files or timm names with their ms on
    the device) priced, kernel by kernel, with `device`'s table and compared with their ms. The CSV
    and the table are checked before any network is built."""
    from lglsearch.cost.measured import load_measured, network_kernels
    from lglsearch.cost.pricing import network_model, price_kernels

    networks = load_measured(csv)
    table = get_table(device, fill="none")
    model = network_model(table)
    prices = [
        price_kernels(model, network_kernels(n))
        for n in tqdm(networks, desc="pricing networks", unit="net", disable=not progress, file=sys.stderr)
    ]
    measured = np.array([n.latency_ms for n in networks])
    # a network measured under a runtime the model was fitted on is priced as that runtime
    scale = np.array([model.runtime_scale(n.runtime) for n in networks])
    predicted = np.array([p.latency_ms for p in prices]) * scale
    rows = pd.DataFrame(
        {
            "model": [n.model for n in networks],
            "runtime": [n.runtime for n in networks],
            "predicted_ms": predicted,
            "measured_ms": measured,
            "error_pct": 100 * (predicted / measured - 1),
            "outside_share": [p.outside_share for p in prices],
        }
    )
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    known = sorted({n.runtime for n in networks} & set(model.factors))
    priced = (
        f"priced as {', '.join(known)} where measured so, else as {model.runtime}"
        if known
        else (f"priced as {model.runtime}")
    )
    summary = error_summary(predicted, measured) | {
        "method": f"networks measured elsewhere ({Path(csv).name}), {priced}",
        "date": now,
    }
    return table, Validation(rows, summary)


def validation_path(device: str) -> Path:
    """Where a validation of `device`'s table is kept: the table in the user cache. The host's and
    imported tables live there; a shipped table is not written over, its validated copy there
    shadows it."""
    return user_tables_dir() / f"{device}.csv"


def record_validation(
    table: CostTable, space_name: str, summary: dict[str, Any], *, replace: bool = False
) -> str | None:
    """Store `summary` as the table's validation on `space_name` and save the table at
    `validation_path`, unless the stored validation rests on more archs (a quick `--archs 3` must
    not erase a 50-arch figure) and `replace` is not set: then keep it and say why, in the
    returned note."""
    stored = table.meta.get("validation", {}).get(space_name)
    if stored and stored.get("n", 0) > summary["n"] and not replace:
        return (
            f"kept the stored validation on {space_name} ({stored['n']} archs, {stored.get('date', 'undated')}): "
            f"this one has {summary['n']}; pass --replace to store it anyway"
        )
    table.meta.setdefault("validation", {})[space_name] = summary
    table.save(validation_path(table.device))
    return None
