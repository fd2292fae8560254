"""What the command groups share: checked argument types, one-line parse errors, the options several
commands declare alike, and the few loaders they all call."""

from __future__ import annotations

import argparse
import re

__all__ = [
    "ARCH_HELP",
    "COUNT",
    "DATA_HELP",
    "FRACTION",
    "NATURAL",
    "NATURAL_FLOAT",
    "POSITIVE",
    "SPACE_HELP",
    "Parser",
    "Ranged",
    "add_accelerator",
    "add_data",
    "add_score_options",
    "add_space",
    "add_timing",
    "hex_mask",
    "load_table",
    "regex",
    "score_options",
    "space_of",
]

DATA_HELP = (
    "a directory of Fashion-MNIST IDX files or an ImageFolder (default: the embedded proxy); checked when opened, "
    "before any training: at least 2 classes, as many IDX labels as images, and every ImageFolder image verified "
    "(a corrupt one is refused, naming it, not skipped)"
)
ARCH_HELP = "a preset (edgevit_xxs, edgevit_xs, edgevit_s), a JSON file or inline JSON"
SPACE_HELP = "a space YAML file or a shipped space's name (default: search_spaces/edgevit.yaml)"


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


def hex_mask(text: str) -> str:
    """A taskset CPU mask: hexadecimal digits selecting at least one core."""
    digits = text.lower().removeprefix("0x")
    if not digits or any(c not in "0123456789abcdef" for c in digits) or int(digits, 16) == 0:
        raise argparse.ArgumentTypeError(f"expected a hexadecimal CPU mask selecting a core (e.g. 70), got {text!r}")
    return digits


def regex(text: str) -> str:
    """A regular expression with a group (the latency it captures)."""
    try:
        groups = re.compile(text).groups
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a regular expression ({err}): {text!r}") from None
    if groups < 1:
        raise argparse.ArgumentTypeError(f"needs a group capturing the latency in ms, e.g. 'avg=([0-9.]+)': {text!r}")
    return text


class Parser(argparse.ArgumentParser):
    """Errors in one line, naming the fix (`--help`), as every other error of the CLI is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_space(p: argparse.ArgumentParser, help: str = SPACE_HELP) -> None:
    p.add_argument("--space", metavar="FILE", help=help)


def add_timing(p: argparse.ArgumentParser, what: str) -> None:
    """--runs and --rounds of onnxruntime timing (`what`: op or model)."""
    p.add_argument("--runs", type=COUNT, default=60, help=f"timed runs per {what} (default 60)")
    p.add_argument("--rounds", type=COUNT, default=6, help="interleaved rounds the runs are split into")


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        metavar="D",
        help=DATA_HELP,
    )


def add_accelerator(p: argparse.ArgumentParser) -> None:
    from lglsearch.train._distributed import ACCELERATORS

    p.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="auto",
        help="train on the CPU or a CUDA GPU (auto: a GPU when there is one); under torchrun, one per process",
    )


def add_score_options(p: argparse.ArgumentParser) -> None:
    """How an arch's accuracy is read from a supernet: its data, fine-tuning and validation images
    (`search`, `score` and `supernet eval`; the score's seed and supernet are each command's own)."""
    from lglsearch.search.execution import SCORE_IMAGES

    p.add_argument("--data", metavar="D", help=f"the supernet's data: {DATA_HELP}")
    p.add_argument(
        "--finetune-steps",
        type=NATURAL,
        default=0,
        metavar="N",
        help="train each arch's inherited weights N steps on their own before scoring it, at some seconds an "
        "arch on a CPU (default 0; whether it ranks better: benchmarks/RESULTS.md)",
    )
    p.add_argument(
        "--finetune-repeats",
        type=COUNT,
        default=1,
        metavar="R",
        help="with --finetune-steps: average R fine-tunings on different batches, a steadier ranking (default 1)",
    )
    p.add_argument(
        "--score-images",
        type=NATURAL,
        default=SCORE_IMAGES,
        metavar="N",
        help=f"score each arch on a class-balanced N of the validation images (default {SCORE_IMAGES}; 0 = all): "
        "more images give a smaller standard error at a proportional cost",
    )


def score_options(args: argparse.Namespace):  # -> ScoreOptions
    """The options of `add_score_options`, with the command's --seed and --supernet."""
    from lglsearch.search.accuracy import ScoreOptions

    return ScoreOptions(
        supernet=args.supernet,
        data=args.data,
        seed=args.seed,
        finetune_steps=args.finetune_steps,
        finetune_repeats=args.finetune_repeats,
        score_images=args.score_images,
    )


def space_of(path: str | None):  # -> Space
    from lglsearch.space import load_space

    return load_space(path)


def load_table(device: str, keys: list[str] | None = None, space_name: str | None = None):  # -> CostTable
    """A device's table; the host table measures the keys it lacks first (built on first use)."""
    from lglsearch.cost.devices import get_table

    return get_table(device, keys or [], space_name=space_name)
