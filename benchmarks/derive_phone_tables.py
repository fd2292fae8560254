"""Derive the four shipped phone tables and print their held-out errors and presets.

Fits the phone model (`--model kernel`, the default: per-kernel costs on a class-stratified sample
of each phone's reference blocks, nothing timed; `--model transfer`: the sample and the parts of
every op key of the shipped spaces timed on this machine, the host table, resumable), prices every
op key of the shipped spaces and writes `<out>/<device>.csv/.json`. Usage:

    python benchmarks/derive_phone_tables.py --reference-dir ../shared/data/phone-luts [--model kernel]
        [--per-class 600] [--out latency_tables] [--whole-models ../shared/data]

With --whole-models (the shipped tables; needs `pip install pytorchcv transformers`) the model is
the joint one as chosen on development data (candidate C of `whole_models.py`: each phone's
reference blocks, less the held-out ones, with the Pixel 4's measured networks), on the other
phones the networks rescaled by that phone's median speed ratio to the Pixel 4 on their common
reference blocks; the development figures of `whole_models/results.json` are stored with each
table, labelled with the phone they were measured on.

Without --reference-dir it reuses each shipped table's stored model: it derives only the keys a
table lacks and models every row's energy again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from whole_models import RUNTIMES, load_dev, measured_sets

from lglsearch.cli._tables import print_reference_blocks
from lglsearch.cost._phone.derive import MODELS, derive_table, with_coverage
from lglsearch.cost._phone.joint import JointKernelModel, speed_ratio
from lglsearch.cost._phone.reference import load_reference
from lglsearch.cost.ops import space_ops
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
    parser.add_argument("--model", choices=MODELS, help="default: kernel with --reference-dir, else each table's own")
    parser.add_argument("--per-class", type=int, help="default: 600 for the kernel model, 300 for the transfer")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "latency_tables")
    parser.add_argument("--whole-models", type=Path, help="../shared/data: fit the joint model with its networks")
    args = parser.parse_args()
    dev = load_dev(args.whole_models) if args.whole_models else None
    figures = json.loads((Path(__file__).resolve().parent / "whole_models" / "results.json").read_text())
    spaces = [load_space(), load_space("tiny")]
    keys = sorted({k for space in spaces for k in space_ops(space)})
    print(f"{len(keys)} op keys of spaces {', '.join(s.name for s in spaces)}")
    for device, file in FILES.items():
        start = time.perf_counter()
        networks = []
        if dev is not None:
            ratio = speed_ratio(
                load_reference(args.reference_dir / file), load_reference(args.reference_dir / FILES["snapdragon855"])
            )
            networks = measured_sets(dev, scale=1.0 if device == "snapdragon855" else round(ratio, 4))
        table = derive_table(
            device,
            keys,
            reference_path=args.reference_dir / file if args.reference_dir else None,
            space_name="edgevit",
            model=args.model,
            per_class=args.per_class,
            out=args.out,
            networks=networks,
            runtime=RUNTIMES["vit"] if networks else None,
        )
        if networks:  # the development figures, measured on the Pixel 4 (benchmarks/whole_models.py)
            model = JointKernelModel.from_dict(table.phone_model()).with_errors(_whole_errors(figures, device))
            table.meta["model"] = model.to_dict()
        table.meta["spaces"] = [s.name for s in spaces]
        table.meta["coverage"] = {}  # derive_table checked the union of the spaces' keys: check each space
        for space in spaces:
            table = with_coverage(table, space_ops(space), space.name)
        table.save(args.out / f"{device}.csv")
        model = table.phone_model()
        seconds = time.perf_counter() - start
        print(f"\n{device}: {len(table)} entries in {seconds:.0f} s; held-out error of the {model['name']} model:")
        print("| class | n | within +-10% | within +-5% | MAPE |")
        print("|---|---|---|---|---|")
        print_reference_blocks((model.get("errors") or {}).get("reference_blocks"), "")
        for op_class, h in sorted(model.get("heldout", {}).items()):
            print(
                f"| {op_class} | {h['n']} | {100 * h['within_10pct']:.0f}% | {100 * h['within_5pct']:.0f}% | "
                f"{100 * h['mape']:.1f}% |"
            )
        for kind, e in sorted(model.get("leave_one_kind_out", {}).items()):
            print(
                f"leave {kind} out ({e['op_class']}, fitted on {'+'.join(e['fitted_on'])}): n={e['n']}, "
                f"{100 * e['within_10pct']:.0f}% within +-10%, {100 * e['within_20pct']:.0f}% within +-20%, "
                f"MAPE {100 * e['mape']:.1f}%"
                + (f", {100 * e['outside_range']:.0f}% outside the fitted range" if "outside_range" in e else "")
            )
        for name, cover in table.meta["coverage"].items():
            print(f"{name}: {cover['keys_outside']} of {cover['keys']} op keys outside the fitted range")
        for name, arch in PRESETS.items():
            latency, energy = table.cost(arch)
            print(f"{name}: {latency:.2f} ms" + ("" if energy != energy else f", {energy:.2f} mJ"))


CHOSEN = "C"  # by the amended rule (benchmarks/RESULTS.md, "Whole models on a phone")
BANDS = (10, 15, 20, 25, 30, 40, 50, 75, 100)


def _band(figures: dict) -> int:
    """The narrowest of BANDS (+-%) holding 80% of the ViTs' leave-one-family-out errors (EdgeViT is a ViT)."""
    predicted = figures["candidates"][CHOSEN]["predicted_ms"]
    pairs = zip(predicted, figures["networks"], strict=True)
    errors = [abs(p / n["measured_ms"] - 1) for p, n in pairs if n["group"] == "vit"]
    return next(b for b in BANDS if sum(e <= b / 100 for e in errors) >= 0.8 * len(errors))


def _whole_errors(figures: dict, device: str) -> dict:
    """The whole-network figures of the chosen candidate, said of the phone they were measured on."""
    pixel4 = device == "snapdragon855"
    return {
        "whole_networks": {
            "measured_on": "Google Pixel 4 (snapdragon855), one Cortex-A76 core, TFLite fp32",
            "data": "development: 102 CNNs (TFLite 2.10) and 19 ViTs (TFLite 2.15) of Li et al., EdgeSys 2024",
            "protocol": "each network predicted by a fit that saw none of its family (benchmarks/RESULTS.md)",
            "this_phone": "measured here"
            if pixel4
            else "none measured: the Pixel 4's networks, rescaled by this "
            "phone's median speed ratio on the common reference blocks, entered the fit; these figures are the "
            "Pixel 4's",
            "leave_one_family_out": {
                name: figures["candidates"][CHOSEN]["summary"][group]
                for group, name in (("cnn", "CNNs"), ("vit", "ViTs"))
            },
            "band_pct": _band(figures),
            "band": "the narrowest +-% holding 80% of the ViTs' errors, each family left out",
        }
    }


if __name__ == "__main__":
    main()
