"""`predict`, `export` and `space`: what an arch or a space is, and the arch as an ONNX or TFLite model."""

from __future__ import annotations

import argparse
import json

from lglsearch.cli._args import ARCH_HELP, NATURAL, Ranged, add_space, load_table, space_of

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="parameters and MACs of an arch, or the phone latency of any ONNX or TFLite model"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", metavar="SPEC", help=ARCH_HELP)
    what.add_argument(
        "--onnx",
        metavar="MODEL.onnx",
        help="price any network's graph, kernel by kernel, with the --device table's phone model",
    )
    what.add_argument(
        "--tflite",
        metavar="MODEL.tflite",
        help="price a TFLite file's graph, op by op as converted, as --onnx does (needs the extra: "
        'pip install "lglsearch[tflite]")',
    )
    p.add_argument(
        "--input-shape", metavar="N,C,H,W", help="with --onnx: the input's shape where the graph leaves it open"
    )
    add_space(p, "check that the arch belongs to this space")
    p.add_argument("--device", metavar="D", help="also predict latency (and energy) from this device's table")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export", help="export an arch's model to ONNX (checked in onnxruntime) and/or TFLite (checked in LiteRT)"
    )
    p.add_argument("--arch", required=True, metavar="SPEC", help=ARCH_HELP)
    p.add_argument("--checkpoint", metavar="FILE", help="state dict of this project's or the reference model")
    p.add_argument(
        "--onnx",
        metavar="OUT",
        help="ONNX file to write; an existing file of that name is replaced once the export is checked (until "
        "then it is kept as it was)",
    )
    p.add_argument(
        "--tflite",
        metavar="OUT",
        help='TFLite file to write (fp32, batch 1; needs the extra: pip install "lglsearch[tflite]"); an existing '
        "file of that name is replaced, as with --onnx",
    )
    p.add_argument("--opset", type=Ranged(int, 17), default=17, help="ONNX opset (>= 17, default 17)")
    p.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="torch.onnx exporter (default torchscript: fast and opset 17)",
    )
    add_space(p, "check that the arch belongs to this space")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("space", help="summarise a search space")
    add_space(p)
    p.add_argument("--sample", type=NATURAL, default=0, metavar="N", help="also draw N random archs")
    p.add_argument("--seed", type=NATURAL, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_space)


def cmd_predict(args: argparse.Namespace) -> None:
    if args.onnx or args.tflite:
        _predict_graph(args)
        return
    import math

    from lglsearch.cost.coverage import extrapolated
    from lglsearch.cost.ops import arch_ops
    from lglsearch.cost.pricing import arch_kernels, network_model, price_kernels, whole_network_band
    from lglsearch.counting import count
    from lglsearch.space import parse_arch

    arch = parse_arch(args.arch)
    if args.space:
        space_of(args.space).validate(arch)
    counts = count(arch)
    result = {
        "arch_id": arch.id,
        "params_m": round(counts.params_m, 6),
        "macs_g": round(counts.macs_g, 6),
        "resolution": arch.resolution,
    }
    if args.device:
        table = load_table(args.device, arch_ops(arch))
        latency, energy = table.cost(arch)
        result |= {"device": table.device, "latency_ms": round(latency, 4)}
        if not math.isnan(energy):
            result |= {"energy_mj": round(energy, 4), "energy_method": table.meta.get("energy", {}).get("method")}
        outside = extrapolated(table, arch)
        if outside is not None:  # ops priced by clamped extrapolation, where the held-out error does not speak
            result["outside_fitted_range"] = outside
        band = whole_network_band(table)
        if band is not None:
            result["band_pct"] = band
        if table.phone_model() and table.phone_model().get("name") != "transfer":
            price = price_kernels(network_model(table), arch_kernels(arch))
            result |= {"by_kernel_type": price.to_dict()["by_type"], "priced_as": dict(price.priced_as)}
    result["arch"] = arch.to_dict()
    if args.json:
        print(json.dumps(result))
        return
    print(arch)
    print(f"params   {counts.params:,} ({counts.params_m:.3f} M)")
    print(f"MACs     {counts.macs:,} ({counts.macs_g:.3f} G, conv + matmul, batch 1)")
    if args.device:
        band = f" +-{result['band_pct']}%" if "band_pct" in result else ""
        print(
            f"latency  {result['latency_ms']:.3f} ms{band} on {table.device} ({table.meta.get('method', '?')}, "
            f"{table.meta.get('runtime', '?')} {table.meta.get('threads', '?')} thread(s))"
        )
        if band:
            print(
                f"         {band.strip()}: the band that held 80% of the ViTs measured on a phone, each family left "
                "out of the fit (lglsearch devices)"
            )
        if "by_kernel_type" in result:
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(result["by_kernel_type"].items())[:5])
            as_ = "; ".join(f"{k} as {v}" for k, v in result["priced_as"].items()) or "none"
            print(f"kernels  {top} ms; priced as another type: {as_}")
        if "energy_mj" in result:
            print(
                f"energy   {result['energy_mj']:.3f} mJ ({result['energy_method'] or 'as imported'}"
                + (
                    ": latency x one power figure, a rescaling of latency)"
                    if result["energy_method"] == "modelled"
                    else ")"
                )
            )
        if not band and result.get("outside_fitted_range", {}).get("ops"):
            outside = result["outside_fitted_range"]
            print(
                f"note     {len(outside['ops'])} op(s), {100 * outside['latency_share']:.1f}% of the latency, priced "
                "outside what the table's phone model was fitted on (extrapolated; see `lglsearch devices`)"
            )


def _predict_graph(args: argparse.Namespace) -> None:
    """`predict --onnx` or `predict --tflite`: a graph file priced with the --device table's phone model."""
    from lglsearch.cost.devices import get_table
    from lglsearch.cost.pricing import network_model, price_onnx, price_tflite, summary_line, whole_network_lines
    from lglsearch.errors import LglsearchError

    flag, path = ("--onnx", args.onnx) if args.onnx else ("--tflite", args.tflite)
    if not args.device:
        raise LglsearchError(f"{flag} prices a graph on a phone: name its table with --device (see lglsearch devices)")
    if args.tflite and args.input_shape:
        raise LglsearchError("--input-shape is for --onnx; a .tflite file's shapes are fixed when it is converted")
    shape = None
    if args.input_shape:
        try:
            shape = [int(d) for d in args.input_shape.split(",")]
        except ValueError:
            raise LglsearchError(
                f"--input-shape {args.input_shape!r} is not whole numbers; write e.g. 1,3,224,224"
            ) from None
    table = get_table(args.device, fill="none")
    model = network_model(table)  # a table that cannot price a graph says so before the graph is read
    price = price_onnx(model, path, shape) if args.onnx else price_tflite(model, path)
    result = {"model": str(path), "device": table.device} | price.to_dict()
    result["whole_network_error"] = model.errors.get("whole_networks", "not measured for this table")
    if args.json:
        print(json.dumps(result))
        return
    print(f"{path} on {table.device}: {summary_line(price)}")
    for line in whole_network_lines(model.errors.get("whole_networks")):
        print(f"  {line}")


def cmd_export(args: argparse.Namespace) -> None:
    from lglsearch._files import check_output
    from lglsearch.errors import LglsearchError
    from lglsearch.export import export_arch, export_arch_tflite, read_checkpoint, require_litert
    from lglsearch.space import parse_arch

    if not (args.onnx or args.tflite):
        raise LglsearchError("export needs a file to write: give --onnx OUT.onnx, --tflite OUT.tflite or both")
    for flag, path in (("--onnx", args.onnx), ("--tflite", args.tflite)):
        if path:
            check_output(path, flag)  # a directory or an unwritable name, refused before any export work
    if args.tflite:
        require_litert()  # a missing extra fails before any export work
    arch = parse_arch(args.arch)
    if args.space:
        space_of(args.space).validate(arch)
    state = read_checkpoint(args.checkpoint) if args.checkpoint else None
    weights = f"weights from {args.checkpoint}" if args.checkpoint else "random weights (no --checkpoint)"
    if args.onnx:
        result = export_arch(
            arch,
            args.onnx,
            state_dict=state,
            source=f"checkpoint {args.checkpoint}",
            opset=args.opset,
            exporter=args.exporter,
        )
        print(f"wrote {result.path} (arch {arch.id}, opset {result.opset}, {weights})")
        print(f"onnxruntime vs torch: max |diff| = {result.max_abs_diff:.2e}")
    if args.tflite:
        lite = export_arch_tflite(arch, args.tflite, state_dict=state, source=f"checkpoint {args.checkpoint}")
        ops = ", ".join(f"{name} {n}" for name, n in sorted(lite.ops.items(), key=lambda item: -item[1]))
        print(f"wrote {lite.path} (arch {arch.id}, TFLite fp32, {weights})")
        print(f"LiteRT vs torch: max |diff| = {lite.max_abs_diff:.2e}")
        print(f"TFLite ops ({sum(lite.ops.values())}): {ops}")


def cmd_space(args: argparse.Namespace) -> None:
    import numpy as np

    from lglsearch.counting import count
    from lglsearch.space import PRESETS

    space = space_of(args.space)
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
