"""The `lglsearch` command line.

Each subcommand parses its arguments, calls the library and prints. A `LglsearchError` becomes
one line on stderr and exit status 2; nothing else is caught. Heavy imports (onnx, onnxruntime) happen
inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lglsearch.errors import LglsearchError

__all__ = ["main"]


def _space(path: str | None):  # -> Space
    from lglsearch.space import load_space

    return load_space(path)


def cmd_predict(args: argparse.Namespace) -> None:
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
        "arch": arch.to_dict(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(arch)
    print(f"params   {counts.params:,} ({counts.params_m:.3f} M)")
    print(f"MACs     {counts.macs:,} ({counts.macs_g:.3f} G, conv + matmul, batch 1)")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lglsearch",
        description="Architecture search over the EdgeViT local-global-local design space.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    arch_help = "a preset (edgevit_xxs, edgevit_xs, edgevit_s), a JSON file or inline JSON"
    space_help = "a space YAML file or a shipped space's name (default: search_spaces/edgevit.yaml)"

    p = sub.add_parser("predict", help="parameters and MACs of an arch")
    p.add_argument("--arch", required=True, metavar="SPEC", help=arch_help)
    p.add_argument("--space", metavar="FILE", help="check that the arch belongs to this space")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export an arch's model to ONNX and check it in onnxruntime")
    p.add_argument("--arch", required=True, metavar="SPEC", help=arch_help)
    p.add_argument("--checkpoint", metavar="FILE", help="state dict of this project's or the reference model")
    p.add_argument("--onnx", required=True, metavar="OUT", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    p.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="torch.onnx exporter (default torchscript: fast and opset 17)",
    )
    p.add_argument("--space", metavar="FILE", help="check that the arch belongs to this space")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("space", help="summarise a search space")
    p.add_argument("--space", metavar="FILE", help=space_help)
    p.add_argument("--sample", type=int, default=0, metavar="N", help="also draw N random archs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_space)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except LglsearchError as err:
        print(f"lglsearch {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
