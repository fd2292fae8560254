"""The per-kernel latency model on the four phones: random-split and leave-one-kind-out errors.

Decomposes the nn-Meter reference blocks that the shipped tables' transfer was fitted on (the same
class-stratified, seeded sample, `--per-class 600`) into the kernels TFLite runs
(`lglsearch.cost.kernels`), fits the per-kernel model on each phone's measured block latencies
and reports, per phone:

- random split: the same held-out blocks as the shipped tables' transfer (per class, the same
  seed and share), predicted by one kernel model fitted on the other blocks of all classes;
- leave one kind out: each nn-Meter kind (conv, firstconv, mbpool, transds, transattn, transffn)
  predicted by a kernel model fitted on all sampled blocks of the other kinds;
- the current transfer's held-out figures beside them (from the shipped tables' metadata; its
  leave-one-kind-out error is there only once the tables have been derived again);
- coverage: for every op key of the shipped spaces, which of its kernels lie outside what the
  random-split fit saw (a type it never saw, a conv kernel size, MACs or bytes past the range);
- the presets priced by the kernel model beside the shipped tables.

Nothing is timed: the phone latencies are the reference files, the kernels come from a meta-tensor
trace. Usage:

    python benchmarks/kernel_transfer.py run [--reference-dir ../shared/data/phone-luts] [--per-class 600]
    python benchmarks/kernel_transfer.py report      # the tables again, from the results JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lglsearch._files import atomic_write_json
from lglsearch.cost._metrics import error_summary
from lglsearch.cost._phone.derive import _sample_reference
from lglsearch.cost._phone.phone_kernels import heldout_mask, part_kernels, reference_kernels
from lglsearch.cost._phone.reference import OP_CLASSES, load_reference, reference_class, reference_kind
from lglsearch.cost.kernels import Kernel, KernelModel
from lglsearch.cost.ops import arch_ops, op_parts, space_ops
from lglsearch.cost.table import CostTable
from lglsearch.space import PRESETS, load_space

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "kernel_transfer" / "results.json"
TRANSFER_TABLES = Path(__file__).resolve().parent / "phone_models" / "transfer"
"""The transfer's tables ("current transfer" and "shipped" below: the tables shipped before the kernel model)."""
FILES = {
    "snapdragon888": "xiaomi11-snapdragon888.json",
    "snapdragon855": "pixel4-snapdragon855.json",
    "tensor-g1": "pixel6-tensor-g1.json",
    "snapdragon821": "pixel1-snapdragon821.json",
}
KINDS = ("conv", "firstconv", "mbpool", "transds", "transattn", "transffn")


def _rounded(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}


def _coverage(model: KernelModel, keys: Sequence[str], parts: dict[str, list[Kernel]]) -> dict[str, Any]:
    """Per space: op keys with a kernel outside the fit, and per kernel type what lies outside and how far."""
    by_type: dict[str, dict[str, Any]] = {}
    outside_keys = fallback_keys = range_keys = 0
    for key in keys:
        found = [entry for part, _ in op_parts(key) for entry in model.outside(parts[part])]
        outside_keys += bool(found)
        fallback_keys += any("priced_as" in entry for entry in found)
        range_keys += any("priced_as" not in entry for entry in found)
    for part in {p for key in keys for p, _ in op_parts(key)}:
        for kernel in parts[part]:
            entry = by_type.setdefault(kernel.type, {"kernels": 0, "outside": 0})
            entry["kernels"] += 1
        for found in model.outside(parts[part]):
            entry = by_type[found["type"]]
            entry["outside"] += 1
            if "priced_as" in found:
                entry["priced_as"] = found["priced_as"]
            if "k" in found:
                entry.setdefault("unseen_k", set()).add(found["k"])
            for name in ("macs", "bytes"):
                if name in found:
                    factor = found[name]
                    side = "max_factor_above" if factor > 1 else "min_factor_below"
                    entry[f"{name}_{side}"] = round(
                        max(entry.get(f"{name}_{side}", 1.0), factor)
                        if factor > 1
                        else min(entry.get(f"{name}_{side}", 1.0), factor),
                        3,
                    )
    for entry in by_type.values():
        if "unseen_k" in entry:
            entry["unseen_k"] = sorted(entry["unseen_k"])
    return {
        "keys": len(keys),
        "keys_outside": outside_keys,
        "share_outside": round(outside_keys / len(keys), 4),
        "keys_with_unseen_type": fallback_keys,
        "keys_past_fitted_size_or_k": range_keys,
        "distinct_parts": len({p for key in keys for p, _ in op_parts(key)}),
        "by_type": dict(sorted(by_type.items())),
    }


def _price(model: KernelModel, keys: Sequence[str], parts: dict[str, list[Kernel]]) -> float:
    """ms of a list of op keys: each part priced as one block (as the shipped tables price them)."""
    return float(sum(model.predict([parts[p] for key in keys for p, _ in op_parts(key)])))


def _price_per_class(
    models: dict[str, KernelModel], base: KernelModel, keys: Sequence[str], parts: dict[str, list[Kernel]]
) -> float:
    """ms of op keys, each part priced by its class's kernel model, kernel types that class never
    saw by the all-class model `base`."""
    return float(sum(models[c].predict([parts[p]], base)[0] for key in keys for p, c in op_parts(key)))


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    references = {device: load_reference(args.reference_dir / file) for device, file in FILES.items()}
    sample = _sample_reference(references["snapdragon888"], args.per_class, args.seed)
    if any(set(sample) - set(ref) for ref in references.values()):
        raise SystemExit("the phones' reference files do not share their keys")
    blocks = [reference_kernels(key) for key in sample]
    classes = np.array([reference_class(k) for k in sample])
    kinds = np.array([reference_kind(k) for k in sample])
    test = heldout_mask(classes, args.holdout, args.seed)
    spaces = {name: space_ops(load_space(name)) for name in ("edgevit", "tiny")}
    all_parts = sorted({p for keys in spaces.values() for key in keys for p, _ in op_parts(key)})
    preset_keys = {name: arch_ops(arch) for name, arch in PRESETS.items()}
    all_parts += sorted({p for keys in preset_keys.values() for key in keys for p, _ in op_parts(key)} - set(all_parts))
    parts = {part: part_kernels(part) for part in all_parts}
    print(f"{len(sample)} reference blocks and {len(parts)} EdgeViT op parts decomposed", file=sys.stderr)
    phones: dict[str, Any] = {}
    for device, reference in references.items():
        y = np.array([reference[k] for k in sample])
        train = [blocks[i] for i in np.flatnonzero(~test)]
        model = KernelModel.fit(train, y[~test])
        predicted = model.predict([blocks[i] for i in np.flatnonzero(test)])
        random = {
            c: _rounded(error_summary(predicted[classes[test] == c], y[test][classes[test] == c])) for c in OP_CLASSES
        }
        per_class, class_models = {}, {}
        for c in OP_CLASSES:
            fit_rows, test_rows = np.flatnonzero(~test & (classes == c)), np.flatnonzero(test & (classes == c))
            own = class_models[c] = KernelModel.fit([blocks[i] for i in fit_rows], y[fit_rows])
            per_class[c] = _rounded(error_summary(own.predict([blocks[i] for i in test_rows]), y[test_rows]))
        loko = {}
        for kind in KINDS:
            held = kinds == kind
            fitted = KernelModel.fit([blocks[i] for i in np.flatnonzero(~held)], y[~held])
            held_blocks = [blocks[i] for i in np.flatnonzero(held)]
            unseen = sorted({k.type for b in held_blocks for k in b} - set(fitted.seen))
            loko[kind] = _rounded(error_summary(fitted.predict(held_blocks), y[held])) | {
                "priced_by_fallback": {t: fitted.priced_as(t) for t in unseen}
            }
        shipped = CostTable.load(TRANSFER_TABLES / f"{device}.csv")
        transfer = shipped.meta.get("transfer", {})
        phones[device] = {
            "random_split": random,
            "random_split_per_class_fit": per_class,
            "leave_one_kind_out": loko,
            "current_transfer": {
                "random_split": transfer.get("heldout", {}),
                "leave_one_kind_out": transfer.get("leave_one_kind_out") or None,
                "coverage": {
                    name: {k: c[k] for k in ("keys", "keys_outside", "share_outside")}
                    for name, c in shipped.meta.get("coverage", {}).items()
                },
            },
            "coverage": {name: _coverage(model, keys, parts) for name, keys in spaces.items()},
            "presets_ms": {
                name: {
                    "kernel": round(_price(model, keys, parts), 2),
                    "kernel_per_class": round(_price_per_class(class_models, model, keys, parts), 2),
                    "shipped": round(shipped.cost(PRESETS[name])[0], 2),
                }
                for name, keys in preset_keys.items()
            },
            "coefficients": {t: {k: round(v, 6) for k, v in c.items()} for t, c in model.coefficients().items()},
            "fitted_types": {t: s["kernels"] for t, s in model.seen.items()},
        }
        print(f"{device} done", file=sys.stderr)
    result = {
        "command": "python benchmarks/kernel_transfer.py run " + " ".join(sys.argv[2:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),
        "sample": {
            "per_class": args.per_class,
            "seed": args.seed,
            "holdout": args.holdout,
            "blocks": len(sample),
            "by_kind": {k: int((kinds == k).sum()) for k in KINDS},
            "heldout_by_class": {c: int((test & (classes == c)).sum()) for c in OP_CLASSES},
        },
        "model": "lglsearch.cost.kernels.KernelModel (kernel_terms), one fit over all classes",
        "phones": phones,
    }
    atomic_write_json(args.results, result)
    print(report(result))


def _pct(summary: dict[str, Any] | None, key: str) -> str:
    if not summary or key not in summary:
        return "-"
    return f"{100 * summary[key]:.0f}%" if key.startswith("within") else f"{100 * summary[key]:.1f}%"


def _three(summary: dict[str, Any] | None) -> str:
    keys = ("within_10pct", "within_20pct", "mape")
    return " / ".join(_pct(summary, k) for k in keys) if summary else "-"


def _pooled(summaries: Any) -> str:
    """Within +-10% / +-20% over all blocks of the summaries (weighted by their n)."""
    summaries = list(summaries)
    n = sum(s["n"] for s in summaries)
    within = [sum(s[k] * s["n"] for s in summaries) / n for k in ("within_10pct", "within_20pct")]
    return f"{100 * within[0]:.0f}% / {100 * within[1]:.0f}%"


def report(result: dict[str, Any]) -> str:
    """The markdown tables of a results JSON."""
    lines = [f"{result['command']} ({result['date']}, {result['seconds']} s)", ""]
    lines += [
        "Random split (the shipped transfer's held-out blocks), within +-10% / +-20% / MAPE: the kernel model "
        "fitted once on all classes, the kernel model fitted per class, the current transfer (per class)",
        "",
        "| phone | class | n | kernel, one fit | kernel, per class | current transfer |",
        "|---|---|---|---|---|---|",
    ]
    for device, p in result["phones"].items():
        for c, s in p["random_split"].items():
            own = p.get("random_split_per_class_fit", {}).get(c)
            cur = p["current_transfer"]["random_split"].get(c)
            lines.append(f"| {device} | {c} | {s['n']} | {_three(s)} | {_three(own)} | {_three(cur)} |")
    lines += [
        "",
        "Leave one kind out (kernel model fitted on all other kinds): within +-10% / +-20% / MAPE / mean error",
        "",
        "| phone | " + " | ".join(f"{k} (n={result['sample']['by_kind'][k]})" for k in KINDS) + " | all blocks |",
        "|---|" + "---|" * (len(KINDS) + 1),
    ]
    for device, p in result["phones"].items():
        cells = []
        for kind in KINDS:
            s = p["leave_one_kind_out"][kind]
            cells.append(
                f"{_pct(s, 'within_10pct')} / {_pct(s, 'within_20pct')} / {_pct(s, 'mape')} / "
                f"{100 * s['mean_error']:+.0f}%"
            )
        pooled = _pooled(p["leave_one_kind_out"].values())
        lines.append(f"| {device} | " + " | ".join(cells) + f" | {pooled} |")
    current = {d: p["current_transfer"]["leave_one_kind_out"] for d, p in result["phones"].items()}
    lines.append("")
    lines.append(
        "Current transfer, leave one kind out: "
        + ("not measured (its tables carry none)" if not any(current.values()) else json.dumps(current))
    )
    fallback = {
        kind: s["priced_by_fallback"]
        for kind, s in next(iter(result["phones"].values()))["leave_one_kind_out"].items()
        if s["priced_by_fallback"]
    }
    lines.append(f"Kernel types a left-out kind has and its fit lacks (priced as): {json.dumps(fallback)}")
    lines += ["", "EdgeViT op keys with a kernel outside the random-split fit (kernel model; current transfer)", ""]
    lines += [
        "| phone | space | kernel model: any | a kernel type unseen | a seen type past its size or k | current |",
        "|---|---|---|---|---|---|",
    ]
    for device, p in result["phones"].items():
        for name, c in p["coverage"].items():
            cur = p["current_transfer"]["coverage"].get(name)
            cur_text = f"{cur['keys_outside']} of {cur['keys']}" if cur else "-"
            lines.append(
                f"| {device} | {name} | {c['keys_outside']} of {c['keys']} | {c.get('keys_with_unseen_type', '-')} | "
                f"{c.get('keys_past_fitted_size_or_k', '-')} | {cur_text} |"
            )
    lines += ["", "Per kernel type (edgevit space, snapdragon888 fit): distinct parts' kernels outside", ""]
    lines += ["| type | kernels | outside | why |", "|---|---|---|---|"]
    for kind, e in next(iter(result["phones"].values()))["coverage"]["edgevit"]["by_type"].items():
        why = ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("kernels", "outside"))
        lines.append(f"| {kind} | {e['kernels']} | {e['outside']} | {why or '-'} |")
    lines += [
        "",
        "Presets (224 px), ms: kernel model, one fit / kernel model per class (unseen types by the one fit; "
        "runs since its introduction) / shipped table",
        "",
    ]
    names = list(next(iter(result["phones"].values()))["presets_ms"])
    lines += ["| phone | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for device, p in result["phones"].items():
        cells = []
        for v in p["presets_ms"].values():
            priced = [v["kernel"], *([v["kernel_per_class"]] if "kernel_per_class" in v else [])]
            moved = [f"{ms:.2f} ({100 * (ms / v['shipped'] - 1):+.0f}%)" for ms in priced]
            cells.append(" / ".join([*moved, f"{v['shipped']:.2f}"]))
        lines.append(f"| {device} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="decompose, fit and evaluate on the four phones")
    go.add_argument("--reference-dir", type=Path, default=ROOT.parent / "shared" / "data" / "phone-luts")
    go.add_argument("--per-class", type=int, default=600, help="the shipped tables' sample (600)")
    go.add_argument("--seed", type=int, default=0)
    go.add_argument("--holdout", type=float, default=0.2)
    go.add_argument("--results", type=Path, default=RESULTS)
    show = sub.add_parser("report", help="the tables again, from the results JSON")
    show.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    else:
        print(report(json.loads(args.results.read_text())))


if __name__ == "__main__":
    main()
