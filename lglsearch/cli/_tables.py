"""`devices` and `lut build|derive|import|validate`: the per-op tables, their provenance and checks."""

from __future__ import annotations

import argparse
import json
import sys

from lglsearch.cli._args import (
    COUNT,
    FRACTION,
    NATURAL,
    add_space,
    add_timing,
    hex_mask,
    regex,
    space_of,
)

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from lglsearch.cost._phone.derive import DEFAULT_PER_CLASS, MODELS

    p = sub.add_parser(
        "devices",
        help="list the latency tables with their provenance and validation",
        description="List the shipped latency tables and those in the user cache (latency_tables/ under "
        "$LGLSEARCH_CACHE, else $XDG_CACHE_HOME/lglsearch or ~/.cache/lglsearch); a user table of a shipped "
        "device's name shadows the shipped one, and is named so. A table there may be a symbolic link: it is read "
        "through, and a command that writes that table (lut build, derive, import --replace, validate) replaces "
        "the link with a file, leaving its target as it was.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_devices)

    lut = sub.add_parser("lut", help="build and validate per-op latency tables")
    lut_sub = lut.add_subparsers(dest="lut_command", required=True, metavar="LUT_COMMAND")
    p = lut_sub.add_parser("build", help="measure every op key of a space on this machine (resumable)")
    p.add_argument("--device", default="host", help="the table to build (this machine: host)")
    add_space(p)
    p.add_argument("--threads", type=COUNT, default=1, help="onnxruntime intra-op threads (default 1)")
    add_timing(p, "op")
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
        help="kernel (default without --measured): a cost per kernel type fitted per op class on the phone's "
        "blocks, nothing timed here; joint (default with --measured): one cost per kernel type fitted on whole "
        "networks measured on a phone; transfer: host timings of its blocks transferred to the phone",
    )
    p.add_argument(
        "--measured",
        metavar="FILE.csv",
        help="whole networks measured on a phone (as lut validate --measured reads them), for the joint model",
    )
    p.add_argument(
        "--measured-reference",
        metavar="FILE",
        help="the block LUT of the phone the --measured networks ran on, if not this one: they are rescaled by "
        "the two phones' median speed ratio on their common blocks",
    )
    p.add_argument(
        "--networks-only",
        action="store_true",
        help="joint model: fit the measured networks alone (the phone's reference blocks then only check the fit)",
    )
    add_space(p)
    p.add_argument(
        "--per-class",
        type=COUNT,
        help="reference blocks sampled per op class (default: "
        + ", ".join(f"{n} for the {m} model" for m, n in DEFAULT_PER_CLASS.items())
        + ")",
    )
    p.add_argument("--holdout", type=FRACTION, default=0.2, help="fraction of pairs held out (default 0.2)")
    p.add_argument("--seed", type=NATURAL, default=0)
    add_timing(p, "host op")
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
    add_space(p, "report which op keys of this space the table lacks")
    p.add_argument(
        "--replace",
        action="store_true",
        help="allow a shipped device's name: the imported table then shadows the shipped one for every command",
    )
    p.set_defaults(func=cmd_lut_import)
    p = lut_sub.add_parser("validate", help="predicted vs measured whole-model latency of sampled archs")
    p.add_argument("--device", default="host", help="the table to validate (host, or a phone's with --adb)")
    add_space(p)
    p.add_argument("--archs", type=COUNT, default=50, metavar="N", help="sampled archs (the presets are added)")
    p.add_argument("--seed", type=NATURAL, default=0)
    add_timing(p, "model")
    p.add_argument("--replace", action="store_true", help="store this validation even if the stored one has more archs")
    p.add_argument("--json", action="store_true", help="print one JSON object of the summary")
    _adb_options(p, "time the whole models on this phone over adb, with the runner of `lut build --adb`")
    p.add_argument("--threads", type=COUNT, help="with --adb: threads on the phone (default: the table's)")
    p.add_argument(
        "--measured",
        metavar="FILE.csv",
        help="instead, price networks measured elsewhere: columns model (an .onnx path or timm:NAME), latency_ms",
    )
    p.set_defaults(func=cmd_lut_validate)


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
    p.add_argument("--bench-parse", type=regex, metavar="REGEX", help="regex whose first group is the latency in ms")
    p.add_argument("--cpu-mask", type=hex_mask, metavar="HEX", help="pin with taskset, e.g. 70 for cores 4-6")


def _bench(args: argparse.Namespace, threads: int = 1, cpu_mask: str | None = None):  # -> BenchmarkCommand
    """The on-phone benchmark command of `lut build --adb` and `lut validate --adb`, from their options
    (`lut validate` runs the table's threads and core mask unless told otherwise)."""
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

    space = space_of(args.space)
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

    from lglsearch.cost._phone.derive import derive_table
    from lglsearch.cost.ops import space_ops
    from lglsearch.cost.runner import OrtRunner

    space = space_of(args.space)
    networks = []
    if args.measured:
        from lglsearch.cost.measured import measured_sets

        scale = 1.0
        if args.measured_reference:
            from lglsearch.cost._phone.joint import speed_ratio
            from lglsearch.cost._phone.reference import load_reference
            from lglsearch.errors import LglsearchError

            if not args.reference:
                raise LglsearchError("--measured-reference rescales to this phone's blocks: give --reference too")
            scale = speed_ratio(load_reference(args.reference), load_reference(args.measured_reference))
        networks = measured_sets(args.measured, scale=scale)
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
        networks=networks,
        with_blocks=not args.networks_only,
    )
    model = table.phone_model()
    print(
        f"{table.device}: {len(table)} entries ({table.meta['method']}, {model['name']} model), "
        f"{table.meta['description']}"
    )
    print_reference_blocks((model.get("errors") or {}).get("reference_blocks"), "  ")
    for op_class, h in sorted((model.get("heldout") or {}).items()):
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
    space = space_of(args.space)  # a bad --space is refused before anything is written
    table = import_table(args.device, args.csv, meta=meta, replace=args.replace)
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
    from pathlib import Path

    from lglsearch.cost.validate import (
        record_validation,
        validate_host_table,
        validate_measured,
        validate_phone_table,
        validation_path,
    )

    space = space_of(args.space)
    name = space.name
    if args.measured:
        table, result = validate_measured(args.device, args.measured, progress=not args.json)
        name = f"measured:{Path(args.measured).name}"
    elif args.adb:
        from lglsearch.cost.adb import AdbPhone

        table, result = validate_phone_table(
            args.device,
            space,
            archs=args.archs,
            seed=args.seed,
            phone=AdbPhone(args.adb, adb=args.adb_path),
            bench=_bench(args),
            threads=args.threads,
            cpu_mask=args.cpu_mask,
            progress=not args.json,
        )
    else:
        table, result = validate_host_table(
            args.device,
            space,
            archs=args.archs,
            seed=args.seed,
            runs=args.runs,
            rounds=args.rounds,
            progress=not args.json,
        )
    note = record_validation(table, name, result.summary, replace=args.replace)
    if note:
        print(f"note: {note}", file=sys.stderr)
    s = result.summary
    if args.json:
        print(json.dumps(s))
        return
    print(result.rows.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.measured:
        print(
            f"\n{s['n']} networks of {args.measured} on {table.device}: {100 * s['within_10pct']:.0f}% / "
            f"{100 * s['within_20pct']:.0f}% / {100 * s['within_30pct']:.0f}% within +-10/20/30%, MAPE "
            f"{100 * s['mape']:.1f}%, median predicted/measured {s['median_ratio']:.3f}, Spearman "
            f"{s['spearman']:.3f}; stored as {name} in {validation_path(table.device).with_suffix('.json')}"
        )
        return
    if args.adb:
        print(
            f"\n{s['n']} archs of {space.name} on {args.adb} ({s['command']}): {100 * s['within_10pct']:.0f}% "
            f"within +-10%, {100 * s['within_20pct']:.0f}% within +-20%, MAPE {100 * s['mape']:.1f}%, mean error "
            f"{100 * s['mean_error']:+.1f}%, Spearman {s['spearman']:.3f}; stored in "
            f"{validation_path(table.device).with_suffix('.json')}"
        )
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


def cmd_devices(args: argparse.Namespace) -> None:
    from lglsearch.cost.devices import describe_devices
    from lglsearch.cost.table import shadowed_devices, shipped_dir

    rows = describe_devices()
    shadowed = set(shadowed_devices())
    for row in rows:
        if row["device"] in shadowed:
            row["shadows"] = str(shipped_dir() / f"{row['device']}.csv")
    if args.json:
        print(json.dumps(rows))
        return
    pad = " " * 16
    for row in rows:
        print(f"{row['device']:<16}{row['entries']:>6} ops  {row['method']:<9}{row['description']}")
        if "shadows" in row:
            print(
                f"{pad}note: the user table {row['path']} (method {row['method']}) shadows "
                f"the shipped {row['device']} table {row['shadows']}; delete it to use the shipped one again"
            )
        if row.get("runtime"):
            print(
                f"{pad}{row['runtime']} ({row.get('runtime_version')}), {row.get('threads')} thread(s), "
                f"{row.get('precision')}; {row.get('date')}"
            )
            print(f"{pad}source: {row.get('source')}")
        for space, v in (row.get("validation") or {}).items():
            if space.startswith("measured:"):
                print(
                    f"{pad}validated on {v['n']} networks of {space[9:]}: {100 * v['within_20pct']:.0f}% within "
                    f"+-20%, {100 * v.get('within_30pct', float('nan')):.0f}% within +-30%, MAPE "
                    f"{100 * v['mape']:.1f}%, Spearman {v['spearman']:.3f}"
                )
                continue
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
        if row.get("model"):  # a derived table: how its phone model does on whole networks and blocks
            from lglsearch.cost.pricing import whole_network_lines

            for line in whole_network_lines(row.get("whole_networks")):
                print(f"{pad}{line}")
            print_reference_blocks(row.get("reference_blocks"), pad)
        if row.get("heldout"):
            _print_model_reach(row, pad)
        _print_energy(row.get("energy") or {}, pad)


def print_reference_blocks(blocks: dict | None, pad: str) -> None:
    """A joint model's error on the phone's reference blocks, per op class."""
    for op_class, v in sorted(((blocks or {}).get("by_class") or {}).items()):
        print(
            f"{pad}reference blocks {blocks['split']}, {op_class}: {100 * v['within_10pct']:.0f}% within +-10%, "
            f"{100 * v['within_20pct']:.0f}% within +-20% (n={v['n']}), MAPE {100 * v['mape']:.1f}%, median "
            f"predicted/measured {v['median_ratio']:.2f}"
        )


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
    print(f"{pad}  latency x one power figure: a rescaling of latency, which adds nothing as a search objective")
    for label, key in (("power", "power_method"), ("core", "why_this_core"), ("cross-check", "cross_check")):
        if energy.get(key):
            print(f"{pad}  {label}: {energy[key]}")
    for alt in energy.get("alternatives", []):
        print(
            f"{pad}  other candidate core: {alt['core']}, {alt['power_w']} W (energies x{alt['energy_factor']}): "
            f"{alt['source']}"
        )
