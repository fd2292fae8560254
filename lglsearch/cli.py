"""The `lglsearch` command line.

Each subcommand parses its arguments, calls the library and prints. A `LglsearchError` becomes
one line on stderr and exit status 2; nothing else is caught. Heavy imports (onnx, onnxruntime) happen
inside the commands that need them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Sequence

from lglsearch.errors import LglsearchError

__all__ = ["Ranged", "build_parser", "main"]


class Ranged:
    """An argparse type: a number of `kind` checked against its range where it is parsed, so that
    `--runs 0` is a one-line error before any work rather than a traceback after some."""

    def __init__(self, kind: type, low: float, high: float | None = None, *, open_low: bool = False) -> None:
        self.kind, self.low, self.high, self.open_low = kind, low, high, open_low

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        too_low = value <= self.low if self.open_low else value < self.low
        if too_low or (self.high is not None and value >= self.high) or value != value:  # NaN
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.high is not None:
            return (
                f"{what} in ({self.low:g}, {self.high:g})"
                if self.open_low
                else f"{what} in [{self.low:g}, {self.high:g})"
            )
        return f"{what} {'>' if self.open_low else '>='} {self.low:g}"

    def out_of_range(self) -> str:
        """A value just outside the range (what the parser test tries)."""
        if self.open_low:
            return str(self.low)
        # a float as -0.000001: argparse would read -1e-06 as an option
        return str(self.low - 1) if self.kind is int else f"{self.low - 1e-6:f}"


COUNT = Ranged(int, 1)  # runs, trials, epochs, batch sizes, workers: at least one
NATURAL = Ranged(int, 0)  # seeds, steps that may be zero
POSITIVE = Ranged(float, 0, open_low=True)  # budgets, minutes
FRACTION = Ranged(float, 0, 1, open_low=True)
NATURAL_FLOAT = Ranged(float, 0)  # weight decay


def _hex_mask(text: str) -> str:
    """A taskset CPU mask: hexadecimal digits selecting at least one core."""
    digits = text.lower().removeprefix("0x")
    if not digits or any(c not in "0123456789abcdef" for c in digits) or int(digits, 16) == 0:
        raise argparse.ArgumentTypeError(f"expected a hexadecimal CPU mask selecting a core (e.g. 70), got {text!r}")
    return digits


def _regex(text: str) -> str:
    """A regular expression with a group (the latency it captures)."""
    try:
        groups = re.compile(text).groups
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a regular expression ({err}): {text!r}") from None
    if groups < 1:
        raise argparse.ArgumentTypeError(f"needs a group capturing the latency in ms, e.g. 'avg=([0-9.]+)': {text!r}")
    return text


class _Parser(argparse.ArgumentParser):
    """Errors in one line, naming the fix (`--help`), as every other error of the CLI is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _space(path: str | None):  # -> Space
    from lglsearch.space import load_space

    return load_space(path)


def _table(device: str, keys: list[str] | None = None, space_name: str | None = None):  # -> CostTable
    """A device's table; the host table measures the keys it lacks first (built on first use)."""
    from lglsearch.cost.build import load_device_table

    return load_device_table(device, keys or [], space_name=space_name)


def _train_config(args: argparse.Namespace, space: str | None = None):  # -> TrainConfig
    """The training recipe of `supernet train` and `ablate` from their shared options."""
    from lglsearch.train.supernet import TrainConfig

    return TrainConfig(
        space=space,
        data=args.data,
        resolution=args.resolution,
        epochs=args.epochs or (1 if args.smoke_test else TrainConfig.epochs),
        batch_size=args.batch_size,
        seed=args.seed,
        distill=getattr(args, "distill", TrainConfig.distill),  # `ablate` keeps the default
        max_steps_per_epoch=2 if args.smoke_test else None,
    )


def cmd_predict(args: argparse.Namespace) -> None:
    import math

    from lglsearch.cost.coverage import extrapolated
    from lglsearch.cost.ops import arch_ops
    from lglsearch.counting import count
    from lglsearch.space import parse_arch

    arch = parse_arch(args.arch)
    if args.space:
        _space(args.space).validate(arch)
    counts = count(arch)
    result = {
        "arch_id": arch.id,
        "params_m": round(counts.params_m, 6),
        "macs_g": round(counts.macs_g, 6),
        "resolution": arch.resolution,
    }
    if args.device:
        table = _table(args.device, arch_ops(arch))
        latency, energy = table.cost(arch)
        result |= {"device": table.device, "latency_ms": round(latency, 4)}
        if not math.isnan(energy):
            result |= {"energy_mj": round(energy, 4), "energy_method": table.meta.get("energy", {}).get("method")}
        outside = extrapolated(table, arch)
        if outside is not None:  # ops priced by clamped extrapolation, where the held-out error does not speak
            result["outside_fitted_range"] = outside
    result["arch"] = arch.to_dict()
    if args.json:
        print(json.dumps(result))
        return
    print(arch)
    print(f"params   {counts.params:,} ({counts.params_m:.3f} M)")
    print(f"MACs     {counts.macs:,} ({counts.macs_g:.3f} G, conv + matmul, batch 1)")
    if args.device:
        print(
            f"latency  {result['latency_ms']:.3f} ms on {table.device} ({table.meta.get('method', '?')}, "
            f"{table.meta.get('runtime', '?')} {table.meta.get('threads', '?')} thread(s))"
        )
        if "energy_mj" in result:
            print(f"energy   {result['energy_mj']:.3f} mJ ({result['energy_method'] or 'as imported'})")
        if result.get("outside_fitted_range", {}).get("ops"):
            outside = result["outside_fitted_range"]
            print(
                f"note     {len(outside['ops'])} op(s), {100 * outside['latency_share']:.1f}% of the latency, priced "
                "outside what the table's phone model was fitted on (extrapolated; see `lglsearch devices`)"
            )


def _bench(args: argparse.Namespace, threads: int, cpu_mask: str | None):  # -> BenchmarkCommand
    """The on-phone benchmark command of `lut build --adb` and `lut validate --adb`, from their options."""
    from lglsearch.cost.adb import DEFAULT_COMMAND, DEFAULT_PARSE, BenchmarkCommand

    return BenchmarkCommand(
        template=args.bench_command or DEFAULT_COMMAND,
        parse=args.bench_parse or DEFAULT_PARSE,
        binary=args.bench_binary,
        threads=threads,
        runs=args.runs,
        cpu_mask=cpu_mask,
    )


def cmd_lut_build(args: argparse.Namespace) -> None:
    from lglsearch.cost.build import build_table
    from lglsearch.cost.ops import space_ops
    from lglsearch.cost.runner import OrtRunner
    from lglsearch.cost.table import table_path

    space = _space(args.space)
    keys = space_ops(space)
    if args.adb:
        from lglsearch.cost.adb import AdbPhone
        from lglsearch.cost.build import build_phone_table

        report = build_phone_table(
            args.device,
            keys,
            phone=AdbPhone(args.adb, adb=args.adb_path),
            bench=_bench(args, args.threads, args.cpu_mask),
            energy_runs=args.energy_runs if args.energy else None,
            space_name=space.name,
        )
    else:
        runner = OrtRunner(threads=args.threads, runs=args.runs, rounds=args.rounds)
        report = build_table(args.device, keys, runner=runner, space_name=space.name)
    table = report.table
    print(
        f"{table.device}: {len(keys)} op keys in space {space.name}, {report.measured} measured now "
        f"in {report.seconds:.0f} s, {len(keys) - report.measured} already there"
    )
    print(f"table {table_path(table.device)}: {len(table)} entries, {table.meta['threads']} thread(s)")


def cmd_lut_derive(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lglsearch.cost.derive import derive_table
    from lglsearch.cost.ops import space_ops
    from lglsearch.cost.runner import OrtRunner

    space = _space(args.space)
    table = derive_table(
        args.device,
        space_ops(space),
        reference_path=args.reference,
        space_name=space.name,
        model=args.model,
        runner=OrtRunner(runs=args.runs, rounds=args.rounds),
        per_class=args.per_class,
        holdout=args.holdout,
        seed=args.seed,
        out=Path(args.out) if args.out else None,
    )
    model = table.phone_model()
    print(
        f"{table.device}: {len(table)} entries ({table.meta['method']}, {model['name']} model), "
        f"{table.meta['description']}"
    )
    for op_class, h in sorted(model["heldout"].items()):
        print(
            f"  held-out {op_class:<14} n={h['n']:<4} within +-10% {100 * h['within_10pct']:3.0f}%  "
            f"within +-5% {100 * h['within_5pct']:3.0f}%  MAPE {100 * h['mape']:.1f}%"
        )
    coverage = {space.name: table.meta["coverage"][space.name]}
    _print_model_reach({"leave_one_kind_out": model.get("leave_one_kind_out"), "coverage": coverage}, "  ")
    energy = table.meta["energy"]
    print(f"  energy: modelled, not measured, at {energy['power_w']} W ({energy['core']['core']})")


def cmd_lut_import(args: argparse.Namespace) -> None:
    from lglsearch.cost.importing import import_table
    from lglsearch.cost.ops import space_ops
    from lglsearch.cost.table import table_path

    meta = {
        "description": args.description,
        "runtime": args.runtime,
        "runtime_version": args.runtime_version,
        "threads": args.threads,
        "precision": args.precision,
        "source": args.source,
    }
    space = _space(args.space)  # a bad --space is refused before anything is written
    table = import_table(args.device, args.csv, meta=meta)
    missing = table.missing(space_ops(space))
    print(
        f"{table.device}: imported {len(table)} ops to {table_path(table.device)} "
        f"({'with' if table.has_energy else 'without'} energy)"
    )
    if missing:
        print(
            f"note: {len(missing)} of the {space.name} space's op keys are not in it (first: {missing[0]}); "
            "archs that use them cannot be priced on this device"
        )


def cmd_lut_validate(args: argparse.Namespace) -> None:
    from lglsearch.cost.ops import arch_ops
    from lglsearch.cost.runner import OrtRunner
    from lglsearch.cost.table import HOST
    from lglsearch.cost.validate import sample_archs, validate

    if args.adb:
        _validate_on_phone(args)
        return
    if args.device != HOST:
        raise LglsearchError(
            f"only the host table can be validated on this machine (whole models run here), not {args.device!r}; "
            "use --device host, or time the models on the phone with --adb SERIAL"
        )
    space = _space(args.space)
    labelled = sample_archs(space, args.archs, args.seed)
    table = _table(HOST, sorted({k for _, a in labelled for k in arch_ops(a)}), space.name)
    runner = OrtRunner(threads=int(table.meta["threads"]), runs=args.runs, rounds=args.rounds)
    result = validate(table, labelled, runner=runner, progress=not args.json)
    s = _store_validation(args, table, space.name, result)
    if s is None:
        return
    print(
        f"\n{s['n']} archs of {space.name}, {s['threads']} thread(s): {100 * s['within_10pct']:.0f}% within "
        f"+-10%, {100 * s['within_5pct']:.0f}% within +-5%, MAPE {100 * s['mape']:.1f}%, "
        f"mean error {100 * s['mean_error']:+.1f}%, Spearman {s['spearman']:.3f}"
    )
    r = s["raw"]
    print(
        f"machine speed now vs the table's build: x{s['speed']:.3f} (anchor ops); without that correction: "
        f"{100 * r['within_10pct']:.0f}% within +-10%, MAPE {100 * r['mape']:.1f}%, Spearman {r['spearman']:.3f}"
    )


def _store_validation(args: argparse.Namespace, table, space: str, result, path=None) -> dict | None:
    """Record a validation in the table's metadata and print its rows (or, with --json, the summary
    alone: then None); the summary, for the caller's closing line."""
    from lglsearch.cost.validate import record_validation

    result.summary.update(
        space=space, seed=args.seed, date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )
    note = record_validation(table, space, result.summary, replace=args.replace, path=path)
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.summary))
        return None
    print(result.rows.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return result.summary


def _validate_on_phone(args: argparse.Namespace) -> None:
    """`lut validate --adb`: the table's predictions against whole models timed on the phone."""
    from lglsearch.cost.adb import AdbPhone
    from lglsearch.cost.ops import arch_ops
    from lglsearch.cost.table import HOST, CostTable, user_tables_dir
    from lglsearch.cost.validate import sample_archs, validate_on_phone

    if args.device == HOST:
        raise LglsearchError(
            "`host` is this machine; validate it without --adb, or name the phone's table with --device"
        )
    table = CostTable.load(args.device)
    space = _space(args.space)
    labelled = sample_archs(space, args.archs, args.seed)
    missing = table.missing(sorted({k for _, a in labelled for k in arch_ops(a)}))
    if missing:
        raise LglsearchError(
            f"the {args.device} table lacks {len(missing)} op key(s) of space {space.name} (first: {missing[0]}); "
            "add them first (`lglsearch lut derive` or `lut build --adb`)"
        )
    # the table's own thread count and core mask unless told otherwise: the phone runs what the table priced
    bench = _bench(args, args.threads or int(table.meta.get("threads", 1)), args.cpu_mask or table.meta.get("cpu_mask"))
    result = validate_on_phone(table, labelled, phone=AdbPhone(args.adb, adb=args.adb_path), bench=bench)
    # a shipped table is not written over: its validated copy goes to the user cache, where it shadows it
    path = user_tables_dir() / f"{args.device}.csv"
    s = _store_validation(args, table, space.name, result, path=path)
    if s is None:
        return
    print(
        f"\n{s['n']} archs of {space.name} on {args.adb} ({s['command']}): {100 * s['within_10pct']:.0f}% within "
        f"+-10%, {100 * s['within_20pct']:.0f}% within +-20%, MAPE {100 * s['mape']:.1f}%, mean error "
        f"{100 * s['mean_error']:+.1f}%, Spearman {s['spearman']:.3f}; stored in {path.with_suffix('.json')}"
    )


def cmd_devices(args: argparse.Namespace) -> None:
    from lglsearch.cost.table import HOST, CostTable, known_devices, table_path

    rows = []
    for device in known_devices():
        path = table_path(device)
        if device == HOST and not path.with_suffix(".json").is_file():
            rows.append(
                {
                    "device": HOST,
                    "entries": 0,
                    "method": "measured",
                    "description": "this machine (not built yet: `lglsearch lut build --device host`)",
                }
            )
            continue
        table = CostTable.load(path)
        meta, model = table.meta, table.phone_model() or {}
        rows.append(
            {
                k: meta.get(k)
                for k in (
                    "device",
                    "entries",
                    "method",
                    "description",
                    "runtime",
                    "runtime_version",
                    "threads",
                    "precision",
                    "source",
                    "date",
                    "validation",
                    "energy",
                )
            }
            | {
                "path": str(path),
                "model": model.get("name"),
                "heldout": model.get("heldout"),
                "leave_one_kind_out": model.get("leave_one_kind_out"),
                "coverage": meta.get("coverage"),
            }
        )
    if args.json:
        print(json.dumps(rows))
        return
    pad = " " * 16
    for row in rows:
        print(f"{row['device']:<16}{row['entries']:>6} ops  {row['method']:<9}{row['description']}")
        if row.get("runtime"):
            print(
                f"{pad}{row['runtime']} ({row.get('runtime_version')}), {row.get('threads')} thread(s), "
                f"{row.get('precision')}; {row.get('date')}"
            )
            print(f"{pad}source: {row.get('source')}")
        for space, v in (row.get("validation") or {}).items():
            print(
                f"{pad}validated on {v['n']} archs of {space}"
                + (f" timed on the phone ({v['adb_serial']})" if "adb_serial" in v else "")
                + f": {100 * v['within_10pct']:.0f}% within +-10%, "
                f"MAPE {100 * v['mape']:.1f}%, Spearman {v['spearman']:.3f}"
            )
        for op_class, v in sorted((row.get("heldout") or {}).items()):
            print(
                f"{pad}held-out error ({row['model']} model), {op_class}: {100 * v['within_10pct']:.0f}% within "
                f"+-10% (n={v['n']}), MAPE {100 * v['mape']:.1f}%"
            )
        if row.get("heldout"):
            _print_model_reach(row, pad)
        _print_energy(row.get("energy") or {}, pad)


def _print_model_reach(row: dict, pad: str) -> None:
    """A derived table's leave-one-kind-out error and its keys priced outside what its model saw."""
    kinds = row.get("leave_one_kind_out") or {}
    if not kinds:
        print(f"{pad}leave-one-kind-out error: not measured (derive the table again with --reference)")
    for kind, v in sorted(kinds.items()):
        print(
            f"{pad}leave-one-kind-out, {kind} ({v['op_class']}) predicted from {'+'.join(v['fitted_on'])}: "
            f"{100 * v['within_10pct']:.0f}% within +-10%, {100 * v['within_20pct']:.0f}% within +-20% (n={v['n']}), "
            f"MAPE {100 * v['mape']:.1f}%"
        )
    for space, c in sorted((row.get("coverage") or {}).items()):
        if "by_type" in c:  # kernel model: kernels of unseen types or past the fitted sizes
            what = ", ".join(
                f"{kind} {e['outside']}/{e['kernels']}" + (f" (as {e['priced_as']})" if "priced_as" in e else "")
                for kind, e in c["by_type"].items()
                if e["outside"]
            )
            checked = "kernels outside the fits"
        else:  # transfer: whole-block features outside the class's fitted range
            what = ", ".join(
                f"{op_class} {e['outside']}/{e['parts']} ({', '.join(e['features'])})"
                for op_class, e in c["by_class"].items()
                if e["outside"]
            )
            checked = f"parts outside (host time checked on {c['host_ms_checked']})"
        print(
            f"{pad}outside the fitted range in {space}: {c['keys_outside']} of {c['keys']} op keys "
            f"({100 * c['share_outside']:.0f}%, priced by extrapolation); {checked}: {what or 'none'}"
        )


def _print_energy(energy: dict, pad: str) -> None:
    """A table's energy provenance: modelled energy with its power figure, core choice and candidates."""
    if energy.get("method") != "modelled":
        if energy:
            print(f"{pad}energy: {energy.get('method')}" + (f" ({energy['why']})" if "why" in energy else ""))
        return
    print(f"{pad}energy: modelled, not measured, from {energy.get('power_w')} W: {energy.get('power_source')}")
    for label, key in (("power", "power_method"), ("core", "why_this_core"), ("cross-check", "cross_check")):
        if energy.get(key):
            print(f"{pad}  {label}: {energy[key]}")
    for alt in energy.get("alternatives", []):
        print(
            f"{pad}  other candidate core: {alt['core']}, {alt['power_w']} W (energies x{alt['energy_factor']}): "
            f"{alt['source']}"
        )


def cmd_export(args: argparse.Namespace) -> None:
    from lglsearch.export import export_arch, read_checkpoint
    from lglsearch.space import parse_arch

    arch = parse_arch(args.arch)
    if args.space:
        _space(args.space).validate(arch)
    state = read_checkpoint(args.checkpoint) if args.checkpoint else None
    result = export_arch(
        arch,
        args.onnx,
        state_dict=state,
        source=f"checkpoint {args.checkpoint}",
        opset=args.opset,
        exporter=args.exporter,
    )
    weights = f"weights from {args.checkpoint}" if args.checkpoint else "random weights (no --checkpoint)"
    print(f"wrote {result.path} (arch {arch.id}, opset {result.opset}, {weights})")
    print(f"onnxruntime vs torch: max |diff| = {result.max_abs_diff:.2e}")


def cmd_space(args: argparse.Namespace) -> None:
    import numpy as np

    from lglsearch.counting import count
    from lglsearch.space import PRESETS

    space = _space(args.space)
    smallest, largest = count(space.smallest()), count(space.largest())
    presets = {name: space.check(arch) for name, arch in PRESETS.items()}
    rng = np.random.default_rng(args.seed)
    samples = [space.sample(rng) for _ in range(args.sample)]
    if args.json:
        print(
            json.dumps(
                {
                    "name": space.name,
                    "source": space.source,
                    "resolution": space.resolution,
                    "num_classes": space.num_classes,
                    "size": space.size(),
                    "macs_g": [smallest.macs_g, largest.macs_g],
                    "params_m": [smallest.params_m, largest.params_m],
                    "presets": {name: problem is None for name, problem in presets.items()},
                    "samples": [a.to_dict() for a in samples],
                }
            )
        )
        return
    print(f"{space.name}: {space.description}")
    print(f"file        {space.source}")
    print(
        f"resolution  {space.resolution} (token grids {', '.join(map(str, space.grids))}), {space.num_classes} classes"
    )
    print(f"archs       {space.size():,}")
    print(f"MACs        {smallest.macs_g:.3f} G (smallest) to {largest.macs_g:.3f} G (largest)")
    print(f"params      {smallest.params_m:.2f} M to {largest.params_m:.2f} M")
    for name, problem in presets.items():
        print(f"{name:<12}{'in the space' if problem is None else 'outside: ' + problem}")
    for arch in samples:
        c = count(arch)
        print(f"sample      {arch}  ({c.macs_g:.3f} GMACs, {c.params_m:.2f} M)")


def cmd_search(args: argparse.Namespace) -> None:
    from dataclasses import fields
    from pathlib import Path

    from lglsearch.report import write_search_report
    from lglsearch.search.study import SearchConfig, default_out, run_search

    # the options are named as the config's fields
    config = SearchConfig(**{f.name: getattr(args, f.name) for f in fields(SearchConfig) if hasattr(args, f.name)})
    out = Path(args.out) if args.out else default_out(config)
    try:
        run = run_search(config, out, resume=args.resume)
    except KeyboardInterrupt:
        print(
            f"\nlglsearch search: interrupted; finished trials are kept in {out}; continue with --resume",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    paths = write_search_report(run)
    front = paths["pareto.csv"]
    import pandas as pd

    family = pd.read_csv(front)
    refined = f", chosen by the cross-entropy of {len(run.refined)} fine-tuned scores" if run.refined else ""
    energy_method = run.table.meta.get("energy", {}).get("method", "as imported") if run.table.has_energy else ""
    energy_note = f"; energy {energy_method}" if energy_method else ""
    print(f"{len(family)} Pareto-optimal archs on {run.table.device} ({run.seconds:.0f} s{refined}{energy_note}):")
    for row in family.itertuples():
        energy = "" if pd.isna(row.energy_mj) else f", {row.energy_mj:.2f} mJ"
        loss = f"  loss {row.refined_loss:.4f}" if run.refined else ""
        print(
            f"  {row.arch_id}  top-1 {100 * row.accuracy:.2f}%{loss}  {row.latency_ms:.2f} ms{energy}  "
            f"{row.macs_g:.3f} GMACs"
        )
    print(f"report: {paths['report.md']}  plot: {paths['pareto.png']}  family: {paths['pareto.csv']}")


def _read_archs_file(path: str) -> list:  # -> list[Arch]
    from pathlib import Path

    from lglsearch.space import Arch

    try:
        items = json.loads(Path(path).read_text())
    except OSError as err:
        raise LglsearchError(f"--archs {path}: cannot read it ({err.strerror or err})") from None
    except ValueError as err:
        raise LglsearchError(f"--archs {path} is not JSON ({err}); give a JSON list of arch objects") from None
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise LglsearchError(f"--archs {path} must hold a non-empty JSON list of arch objects (as Arch.to_json writes)")
    archs = []
    for n, item in enumerate(items):
        try:
            archs.append(Arch.from_dict(item.get("arch", item)))  # an arch, or a record holding one
        except (LglsearchError, KeyError, TypeError) as err:
            raise LglsearchError(f"--archs {path}: item {n} is not an arch ({err})") from None
    return archs


def cmd_score(args: argparse.Namespace) -> None:
    from lglsearch.search.scoring import score_archs
    from lglsearch.space import parse_arch

    archs = [parse_arch(spec) for spec in args.arch or []]
    for path in args.archs or []:
        archs += _read_archs_file(path)
    if not archs:
        raise LglsearchError("nothing to score: give --arch SPEC or --archs FILE")
    rows, provenance = score_archs(
        archs,
        _space(args.space),
        space_spec=args.space,
        supernet=args.supernet,
        data=args.data,
        seed=args.seed,
        finetune_steps=args.finetune_steps,
        finetune_repeats=args.finetune_repeats,
        score_images=args.score_images,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"proxy accuracy from the supernet at {provenance['supernet']} ({provenance['data']}):")
    for row in rows:
        print(
            f"  {row['arch_id']}  top-1 {100 * row['accuracy']:.2f}% +- {100 * row['accuracy_se']:.2f}  "
            f"loss {row['loss']:.4f} +- {row['loss_se']:.4f}  ({row['seconds']:.1f} s)"
        )
    print("(+- one standard error of the validation split's size; differences within two are not distinguishable)")


def cmd_supernet_train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lglsearch.train.supernet import TrainConfig, epochs_for_minutes, train_supernet

    config = _train_config(args, space=args.space)
    if args.minutes is not None:
        epochs = epochs_for_minutes(config, args.minutes, accelerator=args.accelerator)
        config = TrainConfig(**{**config.__dict__, "epochs": epochs})
        print(f"lglsearch: {args.minutes:g} minutes on this machine fit {epochs} epoch(s)", file=sys.stderr)
    trained = train_supernet(config, Path(args.out) if args.out else None, accelerator=args.accelerator)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process reports
        print(f"supernet: {trained.directory} ({trained.epochs_done} epoch(s), {trained.data.source})")


def cmd_supernet_eval(args: argparse.Namespace) -> None:
    from lglsearch.space import parse_arch
    from lglsearch.train.data import load_data
    from lglsearch.train.supernet import load_supernet, proxy_score

    net = load_supernet(args.supernet)
    arch = parse_arch(args.arch)
    if arch.resolution != net.space.resolution or arch.num_classes != net.space.num_classes:
        arch = arch.replace(resolution=net.space.resolution, num_classes=net.space.num_classes)
    data = load_data(args.data, net.space.resolution)
    score = proxy_score(
        net,
        arch,
        data,
        seed=args.seed,
        finetune_steps=args.finetune_steps,
        finetune_repeats=args.finetune_repeats,
        score_images=args.score_images,
    )
    tuned = f", after {args.finetune_steps} fine-tuning steps x{args.finetune_repeats}" if args.finetune_steps else ""
    print(
        json.dumps(
            {
                "arch_id": arch.id,
                "accuracy": score.top1,
                "loss": score.loss,
                "supernet": args.supernet,
                "finetune_steps": args.finetune_steps,
                "finetune_repeats": args.finetune_repeats,
                "score_images": args.score_images,
            }
        )
        if args.json
        else f"{arch}\nproxy top-1 {100 * score.top1:.2f}%, cross-entropy {score.loss:.4f} ({data.source}{tuned})"
    )


def cmd_train(args: argparse.Namespace) -> None:
    import math
    from pathlib import Path

    from lglsearch.counting import count
    from lglsearch.space import parse_arch
    from lglsearch.train.data import load_data
    from lglsearch.train.trainer import CHECKPOINT, Recipe, train_arch

    deployed = parse_arch(args.arch)  # as the search priced it: its own resolution and classes
    image_folder = args.data is not None and (Path(args.data) / "train").is_dir()
    resolution = args.resolution or (deployed.resolution if image_folder else 64)
    data = load_data(args.data, resolution)
    try:
        arch = deployed.replace(resolution=resolution, num_classes=data.num_classes)
    except LglsearchError as err:
        raise LglsearchError(
            f"arch {deployed.id} cannot be trained at --resolution {resolution}: {err}; give a resolution its "
            f"token grids fit (its own is {deployed.resolution})"
        ) from None
    epochs = args.epochs or (1 if args.smoke_test else Recipe.epochs)
    recipe = Recipe(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=Recipe.warmup_epochs if epochs > 1 else 0,  # one epoch: all cosine, no ramp
        label_smoothing=args.label_smoothing,
        ema_decay=args.ema,
        seed=args.seed,
        max_steps_per_epoch=2 if args.smoke_test else None,
    )
    out = Path(args.out or f"runs/train-{deployed.id}")
    trained = train_arch(arch, data, recipe, out, init=args.init, resume=args.resume, accelerator=args.accelerator)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one process reports
        return
    top1, se = trained.top1()
    counts = count(deployed)
    priced = ""
    if args.device:
        from lglsearch.cost.ops import arch_ops

        table = _table(args.device, arch_ops(deployed))
        latency, energy = table.cost(deployed)
        priced = f", {latency:.2f} ms" + ("" if math.isnan(energy) else f" and {energy:.1f} mJ (modelled)")
        priced += f" on {table.device}"
    trained_as = "" if arch == deployed else f", as arch {arch.id} at {arch.resolution} px, {arch.num_classes} classes"
    print(
        f"trained {deployed.id} ({recipe.epochs} epoch(s){trained_as}{', EMA weights' if args.ema else ''}): top-1 "
        f"{100 * top1:.2f}% +- {100 * se:.2f} on {len(data.val):,} validation images ({data.source}); "
        f"as deployed @{deployed.resolution}, {deployed.num_classes} classes: {counts.params_m:.2f} M params, "
        f"{counts.macs_g:.3f} GMACs{priced}; weights {out / CHECKPOINT}"
    )


def cmd_ablate(args: argparse.Namespace) -> None:
    import math
    from pathlib import Path

    from lglsearch.ablate import run_ablation, run_dir
    from lglsearch.space import PRESETS, parse_arch

    base = parse_arch(args.base)
    label = args.base if args.base in PRESETS else base.id
    config = _train_config(args)
    out = Path(args.out) if args.out else run_dir(args.study, label, args.device)
    if args.smoke_test and not args.out:
        out = out.with_name(f"{out.name}-smoke")  # so that the real study does not find other arguments there
    try:
        ablation = run_ablation(
            args.study,
            base,
            device=args.device,
            out=out,
            space=_space(args.space),
            train=args.train,
            config=config,
            base_label=label,
        )
    except KeyboardInterrupt:
        print(f"\nlglsearch ablate: interrupted; finished variants are kept in {out}; rerun to resume", file=sys.stderr)
        raise SystemExit(130) from None
    for row in ablation.rows.itertuples(index=False):
        if row.status == "skipped":
            print(f"  {row.variant:<16} skipped: {row.reason}")
            continue
        energy = "" if math.isnan(row.energy_mj) else f"  {row.energy_mj:7.2f} mJ ({row.d_energy_pct:+.1f}%)"
        print(
            f"  {row.variant:<16} top-1 {100 * row.accuracy:6.2f}% ± {100 * row.accuracy_se:.2f} "
            f"({row.d_accuracy_pts:+.2f})  "
            f"{row.latency_ms:7.2f} ms ({row.d_latency_pct:+.1f}%){energy}  host {row.host_ms:.2f} ms"
        )
    energy_method = ablation.meta.get("energy", {}).get("method")
    if energy_method and energy_method != "none":
        print(f"energy: {energy_method} (see {out / 'ablation.md'})")
    print(f"ablation: {out / 'ablation.md'}  table: {out / 'ablation.csv'}  plot: {out / 'ablation.png'}")


def _adb_options(p: argparse.ArgumentParser, adb_help: str) -> None:
    """The options of timing on a phone, shared by `lut build` and `lut validate`."""
    p.add_argument("--adb", metavar="SERIAL", help=adb_help)
    p.add_argument("--adb-path", default="adb", help="the adb executable (default: adb on PATH)")
    p.add_argument(
        "--bench-binary",
        default="/data/local/tmp/onnxruntime_perf_test",
        help="the benchmark binary on the phone (push it there first)",
    )
    p.add_argument(
        "--bench-command",
        metavar="TEMPLATE",
        help="command run on the phone per model; fields {taskset} {binary} {runs} {threads} {model} "
        "(default: onnxruntime_perf_test's)",
    )
    p.add_argument("--bench-parse", type=_regex, metavar="REGEX", help="regex whose first group is the latency in ms")
    p.add_argument("--cpu-mask", type=_hex_mask, metavar="HEX", help="pin with taskset, e.g. 70 for cores 4-6")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lglsearch",
        description="Architecture search over the EdgeViT local-global-local design space.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    arch_help = "a preset (edgevit_xxs, edgevit_xs, edgevit_s), a JSON file or inline JSON"
    space_help = "a space YAML file or a shipped space's name (default: search_spaces/edgevit.yaml)"
    finetune_help = (
        "train each arch's inherited weights N steps on their own before scoring it, at some seconds an arch "
        "on a CPU (default 0; whether it ranks better: benchmarks/RESULTS.md)"
    )
    repeats_help = "with --finetune-steps: average R fine-tunings on different batches, a steadier ranking (default 1)"
    from lglsearch.cost.derive import DEFAULT_PER_CLASS, MODELS
    from lglsearch.search.execution import SCORE_IMAGES

    images_help = (
        f"score each arch on a class-balanced N of the validation images (default {SCORE_IMAGES}; 0 = all): "
        "more images give a smaller standard error at a proportional cost"
    )

    p = sub.add_parser("search", help="find the Pareto-optimal archs of a space for a device (the main job)")
    p.add_argument("--device", required=True, help="the latency table to price archs with (see `lglsearch devices`)")
    p.add_argument(
        "--budget-ms", type=POSITIVE, metavar="MS", help="latency budget: archs above it are never evaluated"
    )
    p.add_argument("--energy-budget-mj", type=POSITIVE, metavar="MJ", help="energy budget (devices with energy only)")
    p.add_argument("--space", metavar="FILE", help=space_help)
    p.add_argument(
        "--trials", type=COUNT, default=100, help="archs to evaluate (default 100; over-budget ones are free)"
    )
    p.add_argument("--sampler", choices=("nsga2", "tpe", "random"), default="nsga2", help="Optuna sampler")
    p.add_argument(
        "--objectives",
        metavar="LIST",
        help="comma-separated from accuracy,latency,energy (default: accuracy,latency and energy where the device "
        "has it)",
    )
    p.add_argument(
        "--population", type=Ranged(int, 2), default=16, help="NSGA-II population; TPE's random start (default 16)"
    )
    p.add_argument("--workers", type=COUNT, help="parallel evaluations (default: one per core; 1 = no Ray)")
    p.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (HOST:PORT or auto)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/DEVICE-BUDGETms)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search in --out")
    p.add_argument("--seed", type=NATURAL, default=0, help="the sampler's seed")
    p.add_argument("--supernet", metavar="DIR", help="a trained supernet (default: the default one, trained once)")
    p.add_argument("--data", metavar="D", help="the supernet's data (default: the embedded proxy)")
    p.add_argument("--finetune-steps", type=NATURAL, default=0, metavar="N", help=finetune_help)
    p.add_argument("--finetune-repeats", type=COUNT, default=1, metavar="R", help=repeats_help)
    p.add_argument("--score-images", type=NATURAL, default=SCORE_IMAGES, metavar="N", help=images_help)
    p.add_argument(
        "--refine",
        type=NATURAL,
        default=0,
        metavar="K",
        help="afterwards, score the K best archs (by non-domination rank on the inherited cross-entropy) and the "
        "presets again after 60 fine-tuning steps x2, and report the front of those by their refined "
        "cross-entropy, at 20-100 s a small arch and minutes a preset on a CPU core (default 0; with "
        "--resume, refines a finished search)",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("score", help="the search's accuracy estimate of archs, with its standard error")
    p.add_argument("--arch", action="append", metavar="SPEC", help=f"{arch_help}; repeat for more")
    p.add_argument("--archs", action="append", metavar="FILE", help="a JSON list of arch objects; repeat for more")
    p.add_argument("--space", metavar="FILE", help=space_help)
    p.add_argument("--supernet", metavar="DIR", help="a trained supernet (default: the search's default one)")
    p.add_argument("--data", metavar="D", help="the supernet's data (default: the embedded proxy)")
    p.add_argument("--seed", type=NATURAL, default=0, help="the search's seed (its calibration batches; default 0)")
    p.add_argument("--finetune-steps", type=NATURAL, default=0, metavar="N", help=finetune_help)
    p.add_argument("--finetune-repeats", type=COUNT, default=1, metavar="R", help=repeats_help)
    p.add_argument("--score-images", type=NATURAL, default=SCORE_IMAGES, metavar="N", help=images_help)
    p.add_argument("--workers", type=COUNT, default=1, help="parallel evaluations (default 1, in this process)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per arch")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("predict", help="parameters and MACs of an arch")
    p.add_argument("--arch", required=True, metavar="SPEC", help=arch_help)
    p.add_argument("--space", metavar="FILE", help="check that the arch belongs to this space")
    p.add_argument("--device", metavar="D", help="also predict latency (and energy) from this device's table")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("devices", help="list the latency tables with their provenance and validation")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_devices)

    lut = sub.add_parser("lut", help="build and validate per-op latency tables")
    lut_sub = lut.add_subparsers(dest="lut_command", required=True, metavar="LUT_COMMAND")
    p = lut_sub.add_parser("build", help="measure every op key of a space on this machine (resumable)")
    p.add_argument("--device", default="host", help="the table to build (this machine: host)")
    p.add_argument("--space", metavar="FILE", help=space_help)
    p.add_argument("--threads", type=COUNT, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--runs", type=COUNT, default=60, help="timed runs per op (default 60)")
    p.add_argument("--rounds", type=COUNT, default=6, help="interleaved rounds the runs are split into")
    _adb_options(p, "measure on this phone over adb instead of on this machine")
    p.add_argument("--energy", action="store_true", help="also measure energy with the battery fuel gauge")
    p.add_argument("--energy-runs", type=COUNT, default=2000, help="inferences per energy loop (default 2000)")
    p.set_defaults(func=cmd_lut_build)
    p = lut_sub.add_parser("derive", help="derive a phone's table from its real measurements of other blocks")
    p.add_argument("--device", required=True, help="the phone (snapdragon888, snapdragon855, tensor-g1, snapdragon821)")
    p.add_argument(
        "--reference",
        metavar="FILE",
        help="the phone's nn-Meter block LUT (JSON); without it, reuse the table's fitted phone model",
    )
    p.add_argument(
        "--model",
        choices=MODELS,
        help="kernel (default): a cost per kernel type fitted on the phone's blocks, nothing timed here; "
        "transfer: host timings of its blocks transferred to the phone",
    )
    p.add_argument("--space", metavar="FILE", help=space_help)
    p.add_argument(
        "--per-class",
        type=COUNT,
        help="reference blocks sampled per op class (default: "
        + ", ".join(f"{n} for the {m} model" for m, n in DEFAULT_PER_CLASS.items())
        + ")",
    )
    p.add_argument("--holdout", type=FRACTION, default=0.2, help="fraction of pairs held out (default 0.2)")
    p.add_argument("--seed", type=NATURAL, default=0)
    p.add_argument("--runs", type=COUNT, default=60, help="timed runs per host op (default 60)")
    p.add_argument("--rounds", type=COUNT, default=6, help="interleaved rounds the runs are split into")
    p.add_argument("--out", metavar="DIR", help="where to write the table (default: the user cache)")
    p.set_defaults(func=cmd_lut_derive)
    p = lut_sub.add_parser("import", help="import per-op measurements made elsewhere (CSV: key,latency_ms[,energy_mj])")
    p.add_argument("--device", required=True, help="the new table's name (lower case, digits, - or _)")
    p.add_argument("--csv", required=True, metavar="FILE", help="one row per op key; see README for the schema")
    p.add_argument("--description", required=True, help="the device: phone, SoC, cores")
    p.add_argument("--runtime", required=True, help="the runtime measured with, e.g. 'TFLite benchmark_model'")
    p.add_argument("--runtime-version", default="not given")
    p.add_argument("--threads", type=COUNT, required=True)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--source", required=True, help="who measured it, how, when")
    p.add_argument("--space", metavar="FILE", help="report which op keys of this space the table lacks")
    p.set_defaults(func=cmd_lut_import)
    p = lut_sub.add_parser("validate", help="predicted vs measured whole-model latency of sampled archs")
    p.add_argument("--device", default="host", help="the table to validate (host, or a phone's with --adb)")
    p.add_argument("--space", metavar="FILE", help=space_help)
    p.add_argument("--archs", type=COUNT, default=50, metavar="N", help="sampled archs (the presets are added)")
    p.add_argument("--seed", type=NATURAL, default=0)
    p.add_argument("--runs", type=COUNT, default=60, help="timed runs per model (default 60)")
    p.add_argument("--rounds", type=COUNT, default=6, help="interleaved rounds the runs are split into")
    p.add_argument("--replace", action="store_true", help="store this validation even if the stored one has more archs")
    p.add_argument("--json", action="store_true", help="print one JSON object of the summary")
    _adb_options(p, "time the whole models on this phone over adb, with the runner of `lut build --adb`")
    p.add_argument("--threads", type=COUNT, help="with --adb: threads on the phone (default: the table's)")
    p.set_defaults(func=cmd_lut_validate)

    p = sub.add_parser("export", help="export an arch's model to ONNX and check it in onnxruntime")
    p.add_argument("--arch", required=True, metavar="SPEC", help=arch_help)
    p.add_argument("--checkpoint", metavar="FILE", help="state dict of this project's or the reference model")
    p.add_argument("--onnx", required=True, metavar="OUT", help="ONNX file to write")
    p.add_argument("--opset", type=Ranged(int, 17), default=17, help="ONNX opset (>= 17, default 17)")
    p.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="torch.onnx exporter (default torchscript: fast and opset 17)",
    )
    p.add_argument("--space", metavar="FILE", help="check that the arch belongs to this space")
    p.set_defaults(func=cmd_export)

    sn = sub.add_parser("supernet", help="train the proxy supernet and read accuracies from it")
    sn_sub = sn.add_subparsers(dest="supernet_command", required=True, metavar="SUPERNET_COMMAND")
    p = sn_sub.add_parser("train", help="train (or resume, or reuse from the cache) a supernet")
    p.add_argument("--space", metavar="FILE", help=space_help)
    p.add_argument(
        "--data",
        metavar="D",
        help="a directory of Fashion-MNIST IDX files or an ImageFolder (default: the embedded proxy)",
    )
    p.add_argument("--resolution", type=Ranged(int, 32), default=64, help="proxy input resolution (default 64)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=COUNT, help="epochs to train (default 3: about 11 minutes here)")
    budget.add_argument("--minutes", type=POSITIVE, help="a time budget on this machine, turned into epochs")
    p.add_argument("--batch-size", type=COUNT, default=64)
    p.add_argument("--seed", type=NATURAL, default=0)
    p.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="in-place distillation: the smaller archs of a step learn the largest's soft predictions instead "
        "of the labels (default --no-distill: labels rank archs better on the proxy, benchmarks/RESULTS.md)",
    )
    p.add_argument("--out", metavar="DIR", help="where to keep it (default: the user cache, keyed by the config)")
    p.add_argument("--smoke-test", action="store_true", help="one epoch of two steps: check the pipeline")
    p.add_argument(
        "--accelerator",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="train on the CPU or a CUDA GPU (auto: a GPU when there is one); under torchrun, one per process",
    )
    p.set_defaults(func=cmd_supernet_train)
    p = sn_sub.add_parser("eval", help="proxy accuracy of an arch from a trained supernet")
    p.add_argument("--supernet", required=True, metavar="DIR")
    p.add_argument("--arch", required=True, metavar="SPEC", help=arch_help)
    p.add_argument("--data", metavar="D", help="the data it was trained on (default: the embedded proxy)")
    p.add_argument("--seed", type=NATURAL, default=0)
    p.add_argument("--finetune-steps", type=NATURAL, default=0, metavar="N", help=finetune_help)
    p.add_argument("--finetune-repeats", type=COUNT, default=1, metavar="R", help=repeats_help)
    p.add_argument("--score-images", type=NATURAL, default=SCORE_IMAGES, metavar="N", help=images_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_supernet_eval)

    p = sub.add_parser("train", help="train an arch on its own: the proxy, IDX or ImageFolder data (resumable)")
    p.add_argument("--arch", required=True, metavar="SPEC", help=f"{arch_help}, or the arch id of a family under runs/")
    p.add_argument(
        "--data",
        metavar="D",
        help="a directory of Fashion-MNIST IDX files or an ImageFolder (default: the embedded proxy)",
    )
    p.add_argument("--epochs", type=COUNT, help="epochs to train (default 10)")
    p.add_argument(
        "--resolution",
        type=Ranged(int, 32),
        help="training resolution (default: 64 for the proxy and IDX data, the arch's own for an ImageFolder)",
    )
    p.add_argument("--batch-size", type=COUNT, default=64, help="per process (default 64)")
    p.add_argument("--lr", type=POSITIVE, default=2e-3, help="AdamW's peak learning rate (default 2e-3)")
    p.add_argument("--weight-decay", type=NATURAL_FLOAT, default=0.05, help="AdamW's weight decay (default 0.05)")
    p.add_argument("--label-smoothing", type=Ranged(float, 0, 1), default=0.1, help="(default 0.1)")
    p.add_argument(
        "--ema",
        type=FRACTION,
        nargs="?",
        const=0.999,
        metavar="DECAY",
        help="keep an EMA of the weights (decay 0.999 if none given) and report and save it as the result",
    )
    p.add_argument(
        "--init",
        metavar="supernet:DIR|checkpoint:FILE",
        help="start from the arch's inherited supernet weights or from a state dict of this arch (default: scratch)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="where checkpoint.pt, metrics.csv and arch.json go (default runs/train-ID)"
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted training in --out")
    p.add_argument("--seed", type=NATURAL, default=0)
    p.add_argument(
        "--device",
        default="snapdragon888",
        metavar="D",
        help="the latency table the summary prices the arch with (default snapdragon888; '' for none)",
    )
    p.add_argument(
        "--accelerator",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="train on the CPU or a CUDA GPU (auto: a GPU when there is one); under torchrun, one per process",
    )
    p.add_argument(
        "--smoke-test", action="store_true", help="two steps an epoch (one epoch unless --epochs): check the pipeline"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ablate", help="ablation studies of the LGL block: train and price variants of a base arch")
    p.add_argument("--study", required=True, help="lgl-components, sampling-rate, placement or all")
    p.add_argument("--base", default="edgevit_xxs", metavar="SPEC", help=f"the base arch: {arch_help} (default xxs)")
    p.add_argument("--space", metavar="FILE", help=f"the space the base belongs to: {space_help}")
    p.add_argument("--device", default="snapdragon888", help="the table pricing the variants (default snapdragon888)")
    p.add_argument(
        "--train",
        choices=("standalone", "supernet"),
        default="standalone",
        help="train each variant from scratch (default), or one supernet over all variants (fast)",
    )
    p.add_argument("--epochs", type=COUNT, help="epochs of every training (default 3)")
    p.add_argument("--data", metavar="D", help="Fashion-MNIST IDX files or an ImageFolder (default: embedded proxy)")
    p.add_argument("--resolution", type=Ranged(int, 32), default=64, help="proxy training resolution (default 64)")
    p.add_argument("--batch-size", type=COUNT, default=64)
    p.add_argument("--seed", type=NATURAL, default=0, help="the seed of every training (default 0)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/ablate-STUDY-BASE-DEVICE); reruns resume")
    p.add_argument("--smoke-test", action="store_true", help="one epoch of two steps per training: check the pipeline")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("space", help="summarise a search space")
    p.add_argument("--space", metavar="FILE", help=space_help)
    p.add_argument("--sample", type=NATURAL, default=0, metavar="N", help="also draw N random archs")
    p.add_argument("--seed", type=NATURAL, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_space)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except LglsearchError as err:
        sub_command = getattr(args, "lut_command", None) or getattr(args, "supernet_command", None)
        command = " ".join(filter(None, (args.command, sub_command)))
        print(f"lglsearch {command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
