"""Building a device's table by measuring its op keys, resumably.

Missing keys are timed in chunks; after each chunk the table is saved (atomically), so an
interrupted build resumes where it stopped and never re-measures a finished key. A table is two
files, each written atomically; a save announces its rows first (`_save`), so that a kill between
the two writes is finished on the next load (`_load`) instead of leaving a pair refused as
disagreeing, or a first chunk without its metadata to be measured again. Each chunk is
timed with the anchor ops (`runner.time_anchored`) and stored at the speed the machine had when
the table was started, so chunks timed minutes apart are comparable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from lglsearch._files import atomic_write_json
from lglsearch.cost.adb import AdbPhone, BenchmarkCommand
from lglsearch.cost.ops import op_input_shape, op_module
from lglsearch.cost.runner import OrtRunner, time_anchored
from lglsearch.cost.table import HOST, CostTable, table_path, user_tables_dir
from lglsearch.errors import LglsearchError
from lglsearch.export import export_onnx

__all__ = [
    "BuildReport",
    "build_phone_table",
    "build_table",
    "cpu_name",
    "host_table",
]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _host_meta(runner: OrtRunner) -> dict[str, Any]:
    import onnxruntime

    return {
        "description": f"this machine: {cpu_name()}, {os.cpu_count()} logical cores, {platform.system()}",
        "runtime": "onnxruntime",
        "runtime_version": onnxruntime.__version__,
        "threads": runner.threads,
        "precision": "fp32",
        "method": "measured",
        "source": f"lglsearch lut build on {socket.gethostname()}",
        "timing": {
            "statistic": "median",
            "warmup": runner.warmup,
            "runs": runner.runs,
            "rounds": runner.rounds,
            "interleaved": True,
            "batch": 1,
        },
        "spaces": [],
    }


def _pending(path: Path) -> Path:
    return path.with_name(f".{path.name}.pending")


def _save(table: CostTable, path: Path) -> None:
    """Save a table being built: its keys and metadata first, then the CSV and the JSON."""
    pending = _pending(path)
    atomic_write_json(pending, {"keys": sorted(table.frame.index), "meta": table.meta})
    table.save(path)
    pending.unlink()


def _load(path: Path) -> CostTable | None:
    """The table at `path` (None before its first save), finishing a save that a kill cut short
    after the CSV: its rows are whole measurements (the CSV is written atomically) and the pending
    record holds the metadata the JSON was to get."""
    pending = _pending(path)
    if pending.is_file():
        try:
            intent = json.loads(pending.read_text())
            frame = pd.read_csv(path, index_col="key")
            finish = sorted(frame.index) == intent["keys"]  # the CSV is the new one; its JSON may be the old
        except (OSError, ValueError, TypeError, KeyError, pd.errors.ParserError):
            finish = False
        if finish:
            CostTable(path.stem, frame.apply(pd.to_numeric, errors="coerce"), intent["meta"]).save(path)
        pending.unlink()  # otherwise the CSV was not replaced: the pair on disk is the last whole save
    return CostTable.load(path) if path.with_suffix(".json").is_file() else None


@dataclass(frozen=True)
class BuildReport:
    table: CostTable
    measured: int
    seconds: float


def build_table(
    device: str,
    keys: Sequence[str],
    *,
    runner: OrtRunner,
    space_name: str | None = None,
    chunk: int = 24,
    progress: bool = True,
) -> BuildReport:
    """Measure every key of `keys` the device's table lacks; save after each chunk."""
    if device != HOST:
        raise LglsearchError(
            f"this machine can only measure the `host` table, not {device!r}; measure a phone with --adb SERIAL, "
            "or derive or import its table (see `lglsearch lut --help`)"
        )
    path = table_path(device)
    table = _load(path) or CostTable.empty(device, _host_meta(runner))
    if table.meta.get("threads") != runner.threads:
        raise LglsearchError(
            f"the {device} table at {path} was measured with {table.meta.get('threads')} thread(s), not "
            f"{runner.threads}; use --threads {table.meta.get('threads')} or delete the table to start over"
        )
    if space_name and space_name not in table.meta.get("spaces", []):
        table.meta["spaces"] = [*table.meta.get("spaces", []), space_name]
    missing = table.missing(keys)
    start = time.perf_counter()
    bar = tqdm(total=len(missing), desc=f"lut build {device}", unit="op", disable=not progress, file=sys.stderr)
    for i in range(0, len(missing), chunk):
        batch = missing[i : i + chunk]
        timings, speed, reference = time_anchored(
            runner, {k: (op_module(k), op_input_shape(k)) for k in batch}, table.meta.get("anchors")
        )
        rows = pd.DataFrame(
            {
                "latency_ms": [timings[k].median_ms for k in batch],
                "latency_p10_ms": [timings[k].p10_ms for k in batch],
                "latency_p90_ms": [timings[k].p90_ms for k in batch],
                "runs": [timings[k].runs for k in batch],
            },
            index=pd.Index(batch, name="key"),
        )
        table = table.with_rows(rows)
        table.meta["anchors"] = reference
        table.meta["speed_factors"] = [*table.meta.get("speed_factors", []), round(speed, 4)]
        table.meta["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        _save(table, path)
        bar.update(len(batch))
    bar.close()
    if not missing and space_name and path.with_suffix(".json").is_file():
        _save(table, path)  # records the space even when nothing was missing
    return BuildReport(table, len(missing), time.perf_counter() - start)


def host_table(
    keys: Sequence[str] = (),
    *,
    measure: bool = True,
    runner: OrtRunner | None = None,
    space_name: str | None = None,
) -> CostTable:
    """This machine's table holding `keys`, measuring the missing ones first (built on first use).
    With `measure=False` the table as it stands (empty before its first build): enough to check
    what it can price (energy) before minutes of timing."""
    path = table_path(HOST)
    table = _load(path)
    if not measure:
        return table or CostTable.empty(HOST, {"method": "measured"})
    if table is not None and not table.missing(keys):
        return table
    runner = runner or OrtRunner(threads=table.meta["threads"] if table else 1)
    todo = len(table.missing(keys)) if table else len(set(keys))
    print(f"lglsearch: measuring {todo} op(s) missing from the host table ({path})", file=sys.stderr)
    return build_table(HOST, keys, runner=runner, space_name=space_name).table


def build_phone_table(
    device: str,
    keys: Sequence[str],
    *,
    phone: AdbPhone,
    bench: BenchmarkCommand,
    energy_runs: int | None = None,
    space_name: str | None = None,
    progress: bool = True,
) -> BuildReport:
    """Measure every key the phone's table lacks on the phone itself, saving after each op."""
    if device == HOST:
        raise LglsearchError("`host` is this machine; name the phone's table with --device (e.g. pixel8)")
    phone.check()
    path = user_tables_dir() / f"{device}.csv"
    table = _load(path)
    if table is not None:
        if table.meta.get("method") != "measured" or table.meta.get("adb_serial") != phone.serial:
            raise LglsearchError(
                f"a table named {device!r} already exists ({table.meta.get('method')}, "
                f"{table.meta.get('adb_serial', 'no adb serial')}); pick another --device name"
            )
    else:
        props = phone.describe()
        table = CostTable.empty(
            device,
            {
                "description": f"{props['model']} ({props['soc']}), Android {props['android']}",
                "runtime": bench.binary.rsplit("/", 1)[-1],
                "runtime_version": "as pushed by the user",
                "threads": bench.threads,
                "precision": "fp32",
                "method": "measured",
                "source": f"lglsearch lut build --adb {phone.serial}: `{bench.render('MODEL')}`, "
                f"parsed with {bench.parse!r}",
                "adb_serial": phone.serial,
                "cpu_mask": bench.cpu_mask,
                "spaces": [],
                "energy": {"method": "measured (battery fuel gauge, busy minus idle)", "runs": energy_runs}
                if energy_runs
                else {"method": "none", "why": "built without --energy"},
            },
        )
    if space_name and space_name not in table.meta.get("spaces", []):
        table.meta["spaces"] = [*table.meta.get("spaces", []), space_name]
    missing = table.missing(keys)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lglsearch-adb-") as tmp:
        for key in tqdm(missing, desc=f"lut build {device}", unit="op", disable=not progress, file=sys.stderr):
            local = Path(tmp) / f"op-{hashlib.sha1(key.encode()).hexdigest()[:12]}.onnx"
            export_onnx(op_module(key), torch.randn(op_input_shape(key)), local)
            remote = phone.push(local)
            row = {"latency_ms": phone.latency_ms(remote, bench), "runs": bench.runs}
            if energy_runs:
                row["energy_mj"] = phone.energy_mj(remote, bench, runs=energy_runs)
            table = table.with_rows(pd.DataFrame([row], index=pd.Index([key], name="key")))
            table.meta["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            _save(table, path)
    return BuildReport(table, len(missing), time.perf_counter() - start)
