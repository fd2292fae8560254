"""`supernet train|eval` and `train`: the proxy supernet, and an arch trained on its own."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lglsearch.cli._args import (
    ARCH_HELP,
    COUNT,
    FRACTION,
    NATURAL,
    NATURAL_FLOAT,
    POSITIVE,
    Ranged,
    add_accelerator,
    add_data,
    add_score_options,
    add_space,
    load_table,
)

__all__ = ["add_parsers", "train_config"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    sn = sub.add_parser("supernet", help="train the proxy supernet and read accuracies from it")
    sn_sub = sn.add_subparsers(dest="supernet_command", required=True, metavar="SUPERNET_COMMAND")
    p = sn_sub.add_parser("train", help="train (or resume, or reuse from the cache) a supernet")
    add_space(p)
    add_data(p)
    p.add_argument("--resolution", type=Ranged(int, 32), default=64, help="proxy input resolution (default 64)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=COUNT, help="epochs to train (default 3)")
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
    add_accelerator(p)
    p.set_defaults(func=cmd_supernet_train)
    p = sn_sub.add_parser("eval", help="proxy accuracy of an arch from a trained supernet")
    p.add_argument("--supernet", required=True, metavar="DIR")
    p.add_argument("--arch", required=True, metavar="SPEC", help=ARCH_HELP)
    p.add_argument("--seed", type=NATURAL, default=0)
    add_score_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_supernet_eval)

    p = sub.add_parser("train", help="train an arch on its own: the proxy, IDX or ImageFolder data (resumable)")
    p.add_argument("--arch", required=True, metavar="SPEC", help=f"{ARCH_HELP}, or the arch id of a family under runs/")
    add_data(p)
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
    add_accelerator(p)
    p.add_argument(
        "--smoke-test", action="store_true", help="two steps an epoch (one epoch unless --epochs): check the pipeline"
    )
    p.set_defaults(func=cmd_train)


def train_config(args: argparse.Namespace, space: str | None = None):  # -> TrainConfig
    """The training recipe of `supernet train` and `ablate` from their shared options."""
    from lglsearch.train.recipe import TrainConfig

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


def cmd_supernet_train(args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    from lglsearch._files import check_output
    from lglsearch.train.supernet import epochs_for_minutes, train_supernet

    if args.out:
        check_output(args.out, "--out", directory=True)  # before any training, not after
    config = train_config(args, space=args.space)
    if args.minutes is not None:
        epochs = epochs_for_minutes(config, args.minutes, accelerator=args.accelerator)
        config = dataclasses.replace(config, epochs=epochs)
        print(f"lglsearch: {args.minutes:g} minutes on this machine fit {epochs} epoch(s)", file=sys.stderr)
    trained = train_supernet(config, Path(args.out) if args.out else None, accelerator=args.accelerator)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process reports
        print(f"supernet: {trained.directory} ({trained.epochs_done} epoch(s), {trained.data.source})")


def cmd_supernet_eval(args: argparse.Namespace) -> None:
    from lglsearch.space import parse_arch
    from lglsearch.train.data import load_data
    from lglsearch.train.scoring import proxy_score
    from lglsearch.train.supernet import load_supernet

    net = load_supernet(args.supernet)
    arch = net.space.adapt(parse_arch(args.arch))
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

    from lglsearch._files import check_output
    from lglsearch.counting import count
    from lglsearch.space import parse_arch
    from lglsearch.train.recipe import Recipe
    from lglsearch.train.trainer import CHECKPOINT, arch_and_data, train_arch

    if args.out:
        check_output(args.out, "--out", directory=True)  # before the data and any training, not after
    deployed = parse_arch(args.arch)  # as the search priced it: its own resolution and classes
    out = Path(args.out) if args.out else check_output(f"runs/train-{deployed.id}", "--out (default)", directory=True)
    arch, data = arch_and_data(deployed, args.data, args.resolution)
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
    trained = train_arch(arch, data, recipe, out, init=args.init, resume=args.resume, accelerator=args.accelerator)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one process reports
        return
    top1, se = trained.top1()
    counts = count(deployed)
    priced = ""
    if args.device:
        from lglsearch.cost.ops import arch_ops

        table = load_table(args.device, arch_ops(deployed))
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
