"""Ablation studies of the LGL block: variants of one base arch, trained alike, priced alike.

A study turns a base `Arch` into named variants that each change one thing (`variants`, pure):

- ``lgl-components``: the LGL block without LocalAgg (every ``lgl`` block becomes ``global``),
  without global sparse attention (every attention block becomes ``local``), the propagation by
  ``nearest`` or ``bilinear`` upsampling instead of the transposed conv, the delegates by ``avg``
  or ``max`` pooling instead of strided picking.
- ``sampling-rate``: every other sampling rate of each stage with attention that divides the
  stage's grid at the deploy and at the training resolution (plus the space's choices, which are
  skipped with the reason when the training grid cannot take them).
- ``placement``: LGL blocks everywhere, only in the last two stages, alternating with local
  blocks, only as the last block of each stage (depths, widths, heads and sr kept).
- ``all``: every study above, one base.

Since an `Arch` is canonical, a change can do nothing to a given base (no sparse attention means
no sampler to swap) or give the network of another variant; such variants are kept as skipped
rows with the reason instead of being trained twice.

`run_ablation` prices every variant first (device table, with missing op keys derived from the
phone's stored phone model or measured on the host; parameters, MACs; the whole deploy model
timed here in onnxruntime, all variants interleaved), then trains each one with the same budget
and seed (stand-alone, or one supernet over a space holding all variants) and writes each finished
variant to ``results.json`` at once, so an interrupted study resumes where it stopped. The run
directory (`lglsearch.rundir`) keeps its arguments (``run.json``); a rerun with other arguments is
refused. The table, its Markdown and its plot are written by `lglsearch.report`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from lglsearch._files import atomic_write
from lglsearch.cost.devices import get_table
from lglsearch.cost.ops import arch_ops
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import CostTable
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.nn import build_model
from lglsearch.report import write_ablation_report
from lglsearch.rundir import RunDir
from lglsearch.search.execution import LocalExecutor
from lglsearch.space import BLOCK_KINDS, PROPAGATIONS, SAMPLERS, Arch, Space, Stage, divisors, grid_sizes, load_space
from lglsearch.train.data import ImageData, load_data
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.score import Score
from lglsearch.train.scoring import measure, proxy_score
from lglsearch.train.standalone import train_standalone
from lglsearch.train.supernet import train_supernet

if TYPE_CHECKING:
    from lglsearch.nn.supernet import Supernet

__all__ = [
    "STUDIES",
    "Ablation",
    "Variant",
    "run_ablation",
    "run_dir",
    "variant_space",
    "variants",
]

STUDIES = ("lgl-components", "sampling-rate", "placement", "all")
_TRAININGS = ("standalone", "supernet")
BASE = "base"
RESULTS, RUN = "results.json", "run.json"
COLUMNS = [
    "variant",
    "study",
    "change",
    "status",
    "reason",
    "arch_id",
    "accuracy",
    "accuracy_se",
    "d_accuracy_pts",
    "d_accuracy_se_pts",
    "latency_ms",
    "d_latency_pct",
    "energy_mj",
    "d_energy_pct",
    "params_m",
    "macs_g",
    "host_ms",
    "train_s",
    "arch",
]


@dataclass(frozen=True)
class Variant:
    """One row of a study: `arch` is None when the change cannot be made to the base."""

    name: str
    study: str
    change: str
    arch: Arch | None
    skip: str | None = None


# -- the studies: pure functions of the base ----------------------------------------------------


def _with_kinds(base: Arch, kinds: Callable[[int, int, str], str]) -> Arch:
    """`base` with block j of stage i of kind `kinds(i, j, kind)`; everything else kept."""
    stages = tuple(
        dataclasses.replace(st, kinds=tuple(kinds(i, j, k) for j, k in enumerate(st.kinds)))
        for i, st in enumerate(base.stages)
    )
    return base.replace(stages=stages)


def _components(base: Arch) -> Iterator[tuple[str, str, Callable[[], Arch]]]:
    yield (
        "no-local-agg",
        "every lgl block becomes global (SelfAttn only)",
        lambda: _with_kinds(base, lambda i, j, k: "global" if k == "lgl" else k),
    )
    yield (
        "no-global-attn",
        "every lgl/global block becomes local (LocalAgg only)",
        lambda: _with_kinds(base, lambda i, j, k: "local"),
    )
    for p in PROPAGATIONS:
        if p != base.propagation:
            yield f"prop-{p}", f"propagation {base.propagation} -> {p}", lambda p=p: base.replace(propagation=p)
    for s in SAMPLERS:
        if s != base.sampler:
            yield f"delegate-{s}", f"delegates by {base.sampler} -> {s}", lambda s=s: base.replace(sampler=s)


def _sampling_rates(
    base: Arch, space: Space | None, train_resolution: int | None
) -> Iterator[tuple[str, str, Callable[[], Arch]]]:
    train_grids = grid_sizes(train_resolution or base.resolution, len(base.stages))
    for i, (st, grid, train_grid) in enumerate(zip(base.stages, base.grids, train_grids, strict=True)):
        if not st.has_attention:
            continue  # no attention, no sampling rate
        # rates both grids take, plus the space's choices (those the training grid refuses show why)
        rates = {r for r in divisors(grid) if train_grid % r == 0}
        if space is not None:
            rates |= set(space.stages[i].sr)
        for r in sorted(rates - {st.sr}):

            def build(i: int = i, r: int = r) -> Arch:
                stages = list(base.stages)
                stages[i] = dataclasses.replace(stages[i], sr=r)
                return base.replace(stages=tuple(stages))

            yield f"s{i + 1}-sr{r}", f"stage {i + 1} sr {st.sr} -> {r}", build


def _placements(base: Arch) -> Iterator[tuple[str, str, Callable[[], Arch]]]:
    n = len(base.stages)
    starts = [sum(base.depths[:i]) for i in range(n)]  # index of each stage's first block in the net
    yield "lgl-everywhere", "every block lgl", lambda: _with_kinds(base, lambda i, j, k: "lgl")
    yield (
        "lgl-late",
        "lgl in the last two stages, local before",
        lambda: _with_kinds(base, lambda i, j, k: "lgl" if i >= n - 2 else "local"),
    )
    yield (
        "lgl-alternating",
        "lgl and local blocks alternate through the network, lgl first",
        lambda: _with_kinds(base, lambda i, j, k: "lgl" if (starts[i] + j) % 2 == 0 else "local"),
    )
    yield (
        "lgl-last",
        "the last block of each stage lgl, the others local",
        lambda: _with_kinds(base, lambda i, j, k: "lgl" if j == base.depths[i] - 1 else "local"),
    )


def variants(
    study: str, base: Arch, space: Space | None = None, *, train_resolution: int | None = None
) -> list[Variant]:
    """The base and the variants of `study` (pure, fast). Variants that cannot be built, cannot be
    trained at `train_resolution`, or equal the base or an earlier variant are marked skipped."""
    if study not in STUDIES:
        raise LglsearchError(f"unknown study {study!r}; the studies are: {', '.join(STUDIES)}")
    if space is not None:
        space.validate(base)
    if train_resolution is not None:
        try:
            base.replace(resolution=train_resolution)
        except LglsearchError as err:
            raise LglsearchError(
                f"the base cannot be trained at resolution {train_resolution} ({err}); "
                "pick another training resolution (--resolution)"
            ) from None
    makers = {
        "lgl-components": lambda: _components(base),
        "sampling-rate": lambda: _sampling_rates(base, space, train_resolution),
        "placement": lambda: _placements(base),
    }
    studies = [s for s in STUDIES[:-1] if study in (s, "all")]
    out = [Variant(BASE, BASE, "the base network", base)]
    seen: dict[Arch, str] = {base: BASE}
    for name in studies:
        for label, change, build in makers[name]():
            try:
                arch = build()
            except LglsearchError as err:
                out.append(Variant(label, name, change, None, f"invalid for this base: {err}"))
                continue
            skip = None
            if arch in seen:
                skip = f"same network as {seen[arch]}"
            elif train_resolution is not None:
                try:
                    arch.replace(resolution=train_resolution)
                except LglsearchError as err:
                    skip = f"cannot be trained at resolution {train_resolution}: {err}"
            seen.setdefault(arch, label)
            out.append(Variant(label, name, change, arch, skip))
    if all(v.skip for v in out[1:]):
        reasons = "; ".join(f"{v.name}: {v.skip}" for v in out[1:]) or "the study makes no variant"
        raise LglsearchError(
            f"study {study} leaves no variant of arch {base.id} to train ({reasons}); pick a base with "
            "LGL blocks and sparse attention, or another study"
        )
    return out


def variant_space(archs: Sequence[Arch], *, name: str = "ablation") -> Space:
    """The space of per-stage choices that holds every arch of `archs` (what a supernet must cover)."""
    first = archs[0]

    def union(values: Any, fallback: Any = None) -> list:
        found = sorted(set(values))
        return found or [fallback]

    stages = []
    for i in range(len(first.stages)):
        column: list[Stage] = [a.stages[i] for a in archs]
        attention = [s for s in column if s.has_attention]  # sr and heads mean nothing elsewhere
        stages.append(
            {
                "depth": union(s.depth for s in column),
                "width": union(s.width for s in column),
                "heads": union((s.heads for s in attention), 1),
                "sr": union((s.sr for s in attention), 1),
                "mlp_ratio": union(s.mlp_ratio for s in column),
                "kinds": [k for k in BLOCK_KINDS if any(k in s.kinds for s in column)],
            }
        )
    sparse = [a for a in archs if any(s.has_sparse_attention for s in a.stages)] or [first]
    return Space.from_dict(
        {
            "name": name,
            "description": f"the smallest space holding the {len(archs)} archs of an ablation",
            "resolution": first.resolution,
            "num_classes": first.num_classes,
            "sampler": [s for s in SAMPLERS if any(a.sampler == s for a in sparse)],
            "propagation": [p for p in PROPAGATIONS if any(a.propagation == p for a in sparse)],
            "stages": stages,
        },
        source=f"<{name}>",
    )


# -- pricing ------------------------------------------------------------------------------------


def _host_ms(archs: Sequence[Arch], runner: OrtRunner) -> dict[str, float]:
    """Median whole-model latency of each deploy arch here, all timed in the same interleaved rounds."""
    timings = runner.time({a.id: (build_model(a), (1, 3, a.resolution, a.resolution)) for a in archs})
    return {name: t.median_ms for name, t in timings.items()}


# -- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """A finished study: a row per variant (`COLUMNS`), its run directory and its provenance."""

    rows: pd.DataFrame
    directory: Path
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Cost:
    """A variant's price: from the device's table, counted, and its whole model timed here."""

    latency_ms: float
    energy_mj: float | None  # None: the table has no energy
    params_m: float
    macs_g: float
    host_ms: float


@dataclass(frozen=True)
class _Accuracy:
    """A variant's top-1 on the proxy task, and what training (or scoring) it took."""

    accuracy: float
    accuracy_se: float  # NaN in results from before it was kept
    seconds: float

    @classmethod
    def since(cls, score: Score, started: float) -> _Accuracy:
        return cls(score.top1, score.top1_se, time.perf_counter() - started)

    def to_dict(self) -> dict[str, float]:
        kept = dataclasses.asdict(self)
        return kept if math.isfinite(self.accuracy_se) else {k: v for k, v in kept.items() if k != "accuracy_se"}


@dataclass
class _State:
    """What `results.json` keeps of a study, by arch id: every variant priced or trained is written
    at once, so an interrupted study resumes without doing it again."""

    priced: dict[str, _Cost] = dataclasses.field(default_factory=dict)
    trained: dict[str, _Accuracy] = dataclasses.field(default_factory=dict)
    supernet_s: float = 0.0
    added_keys: list[str] = dataclasses.field(default_factory=list)  # op keys not straight from the table

    @classmethod
    def load(cls, run: RunDir) -> _State:
        if not (run / RESULTS).exists():
            return cls()
        fix = "it is left as it is: delete it to train every variant again"
        stored = run.read_json(RESULTS, fix=fix, check=_not_results)
        try:
            return cls(
                priced={i: _Cost(**c) for i, c in stored["priced"].items()},
                trained={i: _Accuracy(**{"accuracy_se": math.nan, **t}) for i, t in stored["trained"].items()},
                supernet_s=float(stored.get("supernet_s", 0.0)),
                added_keys=list(stored.get("added_keys", [])),
            )
        except (TypeError, ValueError) as err:  # a variant of other fields
            raise LglsearchError(f"{run / RESULTS} holds a variant it cannot read ({err}); {fix}") from None

    def save(self, run: RunDir) -> None:
        run.write_json(
            RESULTS,
            {
                "priced": {i: dataclasses.asdict(c) for i, c in self.priced.items()},
                "trained": {i: t.to_dict() for i, t in self.trained.items()},
                "supernet_s": self.supernet_s,
                "added_keys": self.added_keys,
            },
        )


def _not_results(stored: Any) -> str | None:
    if isinstance(stored, dict) and all(isinstance(stored.get(k), dict) for k in ("priced", "trained")):
        return None
    return "not an ablation's results (priced and trained variants)"


def run_dir(study: str, base_label: str, device: str) -> Path:
    """The default run directory of a study."""
    return Path("runs") / f"ablate-{study}-{base_label}-{device}"


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"lglsearch ablate: {message}", file=sys.stderr)


def _check_arguments(run: RunDir, arguments: dict[str, Any]) -> None:
    """Record the run's arguments, or refuse a directory that holds a run with other arguments."""
    if not run.has_record():
        run.write_record(arguments, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        return
    differ = sorted(change.key for change in run.changes(arguments))
    if differ:
        raise LglsearchError(
            f"{run.path} holds an ablation run with other arguments ({', '.join(differ)} differ); "
            "rerun with the same arguments to resume, or pass another --out"
        )


def run_ablation(
    study: str,
    base: Arch,
    *,
    device: str,
    out: Path,
    space: Space | None = None,
    train: str = "standalone",
    config: TrainConfig | None = None,
    base_label: str | None = None,
    runner: OrtRunner | None = None,
    progress: bool = True,
) -> Ablation:
    """Price and train every variant of `study` (resuming from `out`), then write the outputs."""
    config = config or TrainConfig()
    if train not in _TRAININGS:
        raise LglsearchError(f"unknown training {train!r}; use one of {', '.join(_TRAININGS)}")
    space = space or load_space()
    found = variants(study, base, space, train_resolution=config.resolution)
    runnable = [v for v in found if v.skip is None]
    # fail early: device and data are checked before anything is written or trained
    keys = sorted({k for v in runnable for k in arch_ops(v.arch)})
    lacking = get_table(device, fill="none").missing(keys)  # an unknown device or broken table fails here
    data = load_data(config.data, config.resolution)
    config = dataclasses.replace(config, space=None)
    arguments = {
        "study": study,
        "base": base.to_dict(),
        "space": space.to_dict(),
        "device": device,
        "train": train,
        "data_source": data.source,
        **{k: v for k, v in dataclasses.asdict(config).items() if k not in ("space", "data")},
    }
    out.mkdir(parents=True, exist_ok=True)
    fix = f"it is left as it is: delete the directory {out} to start over"
    run = RunDir(out, what="an ablation run", fix=fix, identity_key="arguments")
    _check_arguments(run, arguments)
    state = _State.load(run)

    table = get_table(device, keys, fill="derive", runner=runner, space_name="ablation")
    # remembered across resumes: the report says which costs are not straight from the table
    state.added_keys = sorted(set(state.added_keys) | (set(lacking) - set(table.missing(keys))))
    state.save(run)
    timer = runner or OrtRunner()  # whole models; the table's own keys keep the table's threads (runner=None)
    found = _price(found, table, state, timer, run, progress)
    runnable = [v for v in found if v.skip is None]
    trainer = _Trainer(data, config, progress)
    (_train_standalone if train == "standalone" else _train_supernet)(runnable, trainer, state, run, table.device)

    label = base_label or base.id
    meta = _provenance(study, label, base, table, train, config, data, state, timer)
    ablation = Ablation(_rows(found, state), out, meta)
    write_ablation_report(ablation)
    _log(f"wrote {out / 'ablation.csv'}, ablation.md and ablation.png", progress)
    return ablation


def _price(
    found: list[Variant], table: CostTable, state: _State, runner: OrtRunner, run: RunDir, progress: bool
) -> list[Variant]:
    """Device cost, counts and host latency of every runnable variant; unpriceable ones are skipped."""
    checked = []
    for v in found:
        if v.skip is None:
            try:
                table.cost(v.arch)
            except LglsearchError as err:
                if v.name == BASE:
                    raise
                v = dataclasses.replace(v, skip=f"cannot be priced on {table.device}: {err}")
        checked.append(v)
    todo = [v.arch for v in checked if v.skip is None and v.arch.id not in state.priced]
    if todo:
        _log(f"timing {len(todo)} whole model(s) on this machine (onnxruntime, interleaved)", progress)
        host = _host_ms(todo, runner)
        for arch in todo:
            latency, energy = table.cost(arch)
            counts = count(arch)
            state.priced[arch.id] = _Cost(
                latency, None if math.isnan(energy) else energy, counts.params_m, counts.macs_g, host[arch.id]
            )
        state.save(run)
    return checked


@dataclass(frozen=True)
class _Trainer:
    """The worker of a study's executor: trains a variant stand-alone, or scores it on `supernet`."""

    data: ImageData
    config: TrainConfig
    progress: bool
    supernet: Supernet | None = None

    def _proxy(self, arch: Arch) -> Arch:
        return arch.replace(resolution=self.config.resolution, num_classes=self.data.num_classes)

    def standalone(self, job: tuple[int, Variant]) -> _Accuracy:
        started = time.perf_counter()
        model = train_standalone(self._proxy(job[1].arch), self.data, self.config, progress=self.progress)
        return _Accuracy.since(measure(model, self.data.val), started)

    def inherited(self, job: tuple[int, Variant]) -> _Accuracy:
        started = time.perf_counter()
        score = proxy_score(self.supernet, self._proxy(job[1].arch), self.data, seed=self.config.seed)
        return _Accuracy.since(score, started)


def _train(
    fn: Callable[[_Trainer, tuple[int, Variant]], _Accuracy],
    jobs: Iterable[tuple[int, Variant]],
    trainer: _Trainer,
    n: int,
    state: _State,
    run: RunDir,
    device: str,
) -> None:
    """Run `fn` on each (number, variant) job, keeping each result at once: an interruption loses at
    most the variant in training."""
    for (i, v), accuracy in LocalExecutor(trainer).map_unordered(fn, jobs):
        state.trained[v.arch.id] = accuracy
        state.save(run)
        cost = state.priced[v.arch.id]
        _log(
            f"[{i}/{n}] {v.name}: top-1 {100 * accuracy.accuracy:.2f}%, {cost.latency_ms:.2f} ms on {device}, "
            f"host {cost.host_ms:.2f} ms, {cost.macs_g:.3f} GMACs ({accuracy.seconds:.0f} s)",
            trainer.progress,
        )


def _train_standalone(runnable: list[Variant], trainer: _Trainer, state: _State, run: RunDir, device: str) -> None:
    n = len(runnable)

    def jobs() -> Iterator[tuple[int, Variant]]:
        for i, v in enumerate(runnable, start=1):
            if v.arch.id in state.trained:
                _log(f"[{i}/{n}] {v.name}: done before, kept", trainer.progress)
                continue
            _log(f"[{i}/{n}] {v.name} ({v.change}): training stand-alone", trainer.progress)
            yield i, v

    _train(_Trainer.standalone, jobs(), trainer, n, state, run, device)


def _train_supernet(runnable: list[Variant], trainer: _Trainer, state: _State, run: RunDir, device: str) -> None:
    todo = [(i, v) for i, v in enumerate(runnable, start=1) if v.arch.id not in state.trained]
    if not todo:
        return
    # one supernet over the smallest space holding every variant, so all of them inherit weights
    space_file = run / "supernet-space.yaml"
    atomic_write(space_file, yaml.safe_dump(variant_space([v.arch for v in runnable]).to_dict(), sort_keys=False))
    _log(f"training one supernet over the {len(runnable)} variants ({space_file})", trainer.progress)
    started = time.perf_counter()
    config = dataclasses.replace(trainer.config, space=str(space_file))
    trained = train_supernet(config, run / "supernet", progress=trainer.progress)
    state.supernet_s += time.perf_counter() - started
    state.save(run)
    scorer = dataclasses.replace(trainer, supernet=trained.net)
    _train(_Trainer.inherited, todo, scorer, len(runnable), state, run, device)


# -- outputs ------------------------------------------------------------------------------------


def _rows(found: list[Variant], state: _State) -> pd.DataFrame:
    rows = []
    for v in found:
        row: dict[str, Any] = {
            "variant": v.name,
            "study": v.study,
            "change": v.change,
            "status": "skipped" if v.skip else "done",
            "reason": v.skip or "",
            "arch_id": v.arch.id if v.arch else "",
            "arch": v.arch.to_json() if v.arch else "",
        }
        if v.skip is None:
            cost, trained = state.priced[v.arch.id], state.trained[v.arch.id]
            row |= dataclasses.asdict(cost) | {"energy_mj": math.nan if cost.energy_mj is None else cost.energy_mj}
            row |= {"accuracy": trained.accuracy, "accuracy_se": trained.accuracy_se, "train_s": trained.seconds}
        rows.append(row)
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    base = frame.iloc[0]
    frame["d_accuracy_pts"] = 100 * (frame["accuracy"] - base["accuracy"])
    # the standard error of a difference of two scores on as many images (independent errors: conservative)
    frame["d_accuracy_se_pts"] = 100 * np.sqrt(frame["accuracy_se"] ** 2 + base["accuracy_se"] ** 2)
    frame.loc[0, "d_accuracy_se_pts"] = math.nan
    frame["d_latency_pct"] = 100 * (frame["latency_ms"] / base["latency_ms"] - 1)
    frame["d_energy_pct"] = 100 * (frame["energy_mj"] / base["energy_mj"] - 1)
    return frame


def _provenance(
    study: str,
    label: str,
    base: Arch,
    table: CostTable,
    train: str,
    config: TrainConfig,
    data: ImageData,
    state: _State,
    runner: OrtRunner,
) -> dict[str, Any]:
    import onnxruntime

    from lglsearch.cost.build import cpu_name

    seconds = sum(t.seconds for t in state.trained.values()) + state.supernet_s
    return {
        "study": study,
        "base": label,
        "base_arch": str(base),
        "device": table.device,
        "table": {k: table.meta.get(k) for k in ("description", "method", "source", "runtime", "threads")},
        "added_keys": len(state.added_keys),
        "phone_model": (table.phone_model() or {}).get("name"),
        "heldout": (table.phone_model() or {}).get("heldout", {}),
        "energy": table.meta.get("energy", {}),
        "host": f"{cpu_name()}, onnxruntime {onnxruntime.__version__}, {runner.threads} thread(s), fp32, batch 1, "
        f"median of {runner.runs} runs in {runner.rounds} interleaved rounds",
        "train": train,
        "recipe": dataclasses.asdict(config),
        "data": data.source,
        "seed": config.seed,
        "wall_s": seconds,
    }
