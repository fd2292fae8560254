"""`search` and `score`: the main job, and the search's accuracy estimate of given archs."""

from __future__ import annotations

import argparse
import json
import sys

from lglsearch.cli._args import (
    ARCH_HELP,
    COUNT,
    NATURAL,
    POSITIVE,
    Ranged,
    add_score_options,
    add_space,
    score_options,
    space_of,
)
from lglsearch.errors import LglsearchError

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from lglsearch.search.study import OPTUNA_SAMPLERS

    p = sub.add_parser("search", help="find the Pareto-optimal archs of a space for a device (the main job)")
    p.add_argument("--device", required=True, help="the latency table to price archs with (see `lglsearch devices`)")
    p.add_argument(
        "--budget-ms", type=POSITIVE, metavar="MS", help="latency budget: archs above it are never evaluated"
    )
    p.add_argument("--energy-budget-mj", type=POSITIVE, metavar="MJ", help="energy budget (devices with energy only)")
    add_space(p)
    p.add_argument(
        "--trials", type=COUNT, default=100, help="archs to evaluate (default 100; over-budget ones are free)"
    )
    p.add_argument("--sampler", choices=OPTUNA_SAMPLERS, default="nsga2", help="Optuna sampler")
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
    add_score_options(p)
    p.add_argument(
        "--refine",
        type=NATURAL,
        default=0,
        metavar="K",
        help="afterwards, score the K best archs (by non-domination rank on the inherited cross-entropy) and the "
        "presets again after 60 fine-tuning steps x2, and report the front of those by their refined "
        "cross-entropy: tens of seconds to minutes an arch on a CPU core (default 0; with --resume, refines a "
        "finished search)",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("score", help="the search's accuracy estimate of archs, with its standard error")
    p.add_argument("--arch", action="append", metavar="SPEC", help=f"{ARCH_HELP}; repeat for more")
    p.add_argument("--archs", action="append", metavar="FILE", help="a JSON list of arch objects; repeat for more")
    add_space(p)
    p.add_argument("--supernet", metavar="DIR", help="a trained supernet (default: the search's default one)")
    p.add_argument("--seed", type=NATURAL, default=0, help="the search's seed (its calibration batches; default 0)")
    add_score_options(p)
    p.add_argument("--workers", type=COUNT, default=1, help="parallel evaluations (default 1, in this process)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per arch")
    p.set_defaults(func=cmd_score)


def cmd_search(args: argparse.Namespace) -> None:
    from pathlib import Path

    import pandas as pd

    from lglsearch._files import check_output
    from lglsearch.report import write_search_report
    from lglsearch.search.pareto import front_frame
    from lglsearch.search.study import SearchConfig, default_out, run_search

    if args.out:
        check_output(args.out, "--out", directory=True)  # before the supernet and the study, not after
    scoring = score_options(args)
    config = SearchConfig(
        device=args.device,
        budget_ms=args.budget_ms,
        energy_budget_mj=args.energy_budget_mj,
        space=args.space,
        trials=args.trials,
        sampler=args.sampler,
        objectives=args.objectives,
        population=args.population,
        seed=scoring.seed,
        supernet=scoring.supernet,
        data=scoring.data,
        finetune_steps=scoring.finetune_steps,
        finetune_repeats=scoring.finetune_repeats,
        score_images=scoring.score_images,
        refine=args.refine,
        workers=args.workers,
        ray_address=args.ray_address,
    )
    out = Path(args.out) if args.out else check_output(default_out(config), "--out (default)", directory=True)
    try:
        run = run_search(config, out, resume=args.resume)
    except KeyboardInterrupt:
        print(
            f"\nlglsearch search: interrupted; finished trials are kept in {out}; continue with --resume",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    paths = write_search_report(run)
    family = front_frame(run.study, run.refined)  # what pareto.csv holds
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
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise LglsearchError(f"--archs {path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise LglsearchError(f"--archs {path} is not UTF-8 text (byte {err.start}); save it as UTF-8 JSON") from None
    except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than any arch list is
        why = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise LglsearchError(f"--archs {path} is not JSON ({why}); give a JSON list of arch objects") from None
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
    from lglsearch.search.accuracy import score_archs
    from lglsearch.space import parse_arch

    archs = [parse_arch(spec) for spec in args.arch or []]
    for path in args.archs or []:
        archs += _read_archs_file(path)
    if not archs:
        raise LglsearchError("nothing to score: give --arch SPEC or --archs FILE")
    rows, provenance = score_archs(
        archs, space_of(args.space), score_options(args), space_spec=args.space, workers=args.workers
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
