"""Validating a table: predicted (sum of ops) against measured whole-model latency.

On this machine (`validate`), the whole models are timed by the same runner, with the same threads
and statistic, as the ops were, and with the same anchor ops, so that their times are expressed at
the machine speed of the table's build: the comparison isolates the error of summing per-op
latencies from the drift of a shared machine between the build and now (reported as `speed`, with
the raw times). On a phone (`validate_on_phone`), the whole models are exported to ONNX and timed
over adb by the runner `lut build --adb` times ops with: what a derived phone table predicts is
judged against the phone itself.
"""

from __future__ import annotations

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

from lglsearch.cost.adb import AdbPhone, BenchmarkCommand
from lglsearch.cost.metrics import error_summary
from lglsearch.cost.ops import arch_ops
from lglsearch.cost.runner import OrtRunner, time_anchored
from lglsearch.cost.table import CostTable
from lglsearch.counting import count
from lglsearch.export import export_onnx
from lglsearch.nn import build_model
from lglsearch.space import PRESETS, Arch, Space

__all__ = ["Validation", "record_validation", "sample_archs", "validate", "validate_on_phone"]


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


def record_validation(
    table: CostTable, space_name: str, summary: dict[str, Any], *, replace: bool = False, path: Path | None = None
) -> str | None:
    """Store `summary` as the table's validation on `space_name` and save the table (at `path`, else
    where it was loaded from), unless the stored one rests on more archs (a quick `--archs 3` must
    not erase a 50-arch figure) and `replace` is not set: then keep it and say why, in the returned note."""
    stored = table.meta.get("validation", {}).get(space_name)
    if stored and stored.get("n", 0) > summary["n"] and not replace:
        return (
            f"kept the stored validation on {space_name} ({stored['n']} archs, {stored.get('date', 'undated')}): "
            f"this one has {summary['n']}; pass --replace to store it anyway"
        )
    table.meta.setdefault("validation", {})[space_name] = summary
    table.save(path)
    return None
