"""`ablate`: ablation studies of the LGL block's parts."""

from __future__ import annotations

import argparse
import sys

from lglsearch.cli._args import ARCH_HELP, COUNT, NATURAL, SPACE_HELP, Ranged, add_space, space_of
from lglsearch.cli._training import train_config

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="ablation studies of the LGL block: train and price variants of a base arch")
    p.add_argument("--study", required=True, help="lgl-components, sampling-rate, placement or all")
    p.add_argument("--base", default="edgevit_xxs", metavar="SPEC", help=f"the base arch: {ARCH_HELP} (default xxs)")
    add_space(p, f"the space the base belongs to: {SPACE_HELP}")
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


def cmd_ablate(args: argparse.Namespace) -> None:
    import math
    from pathlib import Path

    from lglsearch.ablate import run_ablation, run_dir
    from lglsearch.space import PRESETS, parse_arch

    base = parse_arch(args.base)
    label = args.base if args.base in PRESETS else base.id
    config = train_config(args)
    out = Path(args.out) if args.out else run_dir(args.study, label, args.device)
    if args.smoke_test and not args.out:
        out = out.with_name(f"{out.name}-smoke")  # so that the real study does not find other arguments there
    try:
        ablation = run_ablation(
            args.study,
            base,
            device=args.device,
            out=out,
            space=space_of(args.space),
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
