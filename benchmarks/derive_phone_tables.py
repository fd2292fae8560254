"""Derive the four shipped phone tables and print their held-out transfer errors and presets.

Times a class-stratified sample of each phone's reference blocks and the parts of every op key of
the shipped spaces on this machine (the host table, resumable), fits the per-class transfer model
per phone, and writes `latency_tables/<device>.csv/.json`. Usage:

    python benchmarks/derive_phone_tables.py --reference-dir ../shared/data/phone-luts [--per-class 300]

Without --reference-dir it reuses each shipped table's stored transfer model: it derives only the
keys a table lacks and models every row's energy again, timing nothing when no key is missing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lglsearch.cost.derive import derive_table, with_coverage
from lglsearch.cost.ops import space_ops
from lglsearch.cost.transfer import TransferModel
from lglsearch.space import PRESETS, load_space

FILES = {
    "snapdragon888": "xiaomi11-snapdragon888.json",
    "snapdragon855": "pixel4-snapdragon855.json",
    "tensor-g1": "pixel6-tensor-g1.json",
    "snapdragon821": "pixel1-snapdragon821.json",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, help="the phones' nn-Meter LUTs (default: reuse the tables')")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "latency_tables")
    args = parser.parse_args()
    spaces = [load_space(), load_space("tiny")]
    keys = sorted({k for space in spaces for k in space_ops(space)})
    print(f"{len(keys)} op keys of spaces {', '.join(s.name for s in spaces)}")
    for device, file in FILES.items():
        start = time.perf_counter()
        table = derive_table(
            device,
            keys,
            reference_path=args.reference_dir / file if args.reference_dir else None,
            space_name="edgevit",
            per_class=args.per_class,
            out=args.out,
        )
        table.meta["spaces"] = [s.name for s in spaces]
        table.meta["coverage"] = {}  # derive_table checked the union of the spaces' keys: check each space
        model = TransferModel.from_dict(table.meta["transfer"])
        for space in spaces:
            table = with_coverage(table, model, space_ops(space), space.name)
        table.save(args.out / f"{device}.csv")
        print(f"\n{device}: {len(table)} entries in {time.perf_counter() - start:.0f} s; held-out transfer error:")
        print("| class | n | within +-10% | within +-5% | MAPE |")
        print("|---|---|---|---|---|")
        for op_class, h in sorted(table.meta["transfer"]["heldout"].items()):
            print(
                f"| {op_class} | {h['n']} | {100 * h['within_10pct']:.0f}% | {100 * h['within_5pct']:.0f}% | "
                f"{100 * h['mape']:.1f}% |"
            )
        for kind, e in sorted(table.meta["transfer"].get("leave_one_kind_out", {}).items()):
            print(
                f"leave {kind} out ({e['op_class']}, fitted on {'+'.join(e['fitted_on'])}): n={e['n']}, "
                f"{100 * e['within_10pct']:.0f}% within +-10%, {100 * e['within_20pct']:.0f}% within +-20%, "
                f"MAPE {100 * e['mape']:.1f}%, {100 * e['outside_range']:.0f}% outside the fitted range"
            )
        for name, cover in table.meta["coverage"].items():
            print(f"{name}: {cover['keys_outside']} of {cover['keys']} op keys outside the fitted range")
        for name, arch in PRESETS.items():
            latency, energy = table.cost(arch)
            print(f"{name}: {latency:.2f} ms" + ("" if energy != energy else f", {energy:.2f} mJ"))


if __name__ == "__main__":
    main()
