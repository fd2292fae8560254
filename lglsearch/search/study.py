"""The search: an Optuna study over a space, priced by a device table, scored by a proxy supernet.

The driver asks Optuna for an arch, prices it from the table (microseconds), and tells an arch
over budget back as pruned at once, so no accuracy is spent on it; the rest go to the executor.
`--trials` counts the archs that got an accuracy. The study lives in the run directory as an
Optuna journal, so an interrupted search resumes where it stopped and `optuna-dashboard` opens it;
a killed one too (tests/test_interrupt.py): its journal lock dies with it, and the trials it had
running are failed and run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from tqdm import tqdm

from lglsearch._files import atomic_write
from lglsearch.cost.devices import get_table
from lglsearch.cost.ops import space_ops
from lglsearch.cost.table import CostTable
from lglsearch.errors import LglsearchError
from lglsearch.rundir import RECORD, RunDir, read_json
from lglsearch.search.accuracy import ScoreOptions, prepare_supernet
from lglsearch.search.execution import (
    SCORE_IMAGES,
    Executor,
    WorkerSpec,
    check_ray_address,
    default_workers,
    evaluations,
    make_executor,
)
from lglsearch.search.objectives import OBJECTIVES, Budgets, Price, Pricer, parse_objectives
from lglsearch.search.refine import REFINE_REPEATS, REFINE_STEPS, candidates, refine, refined_scores, shared_scores
from lglsearch.space import PRESETS, Arch, Space, load_space
from lglsearch.train.score import Score

try:
    import fcntl
except ImportError:  # Windows has no flock: Optuna's own lock there
    fcntl = None

__all__ = ["OPTUNA_SAMPLERS", "SearchConfig", "SearchRun", "default_out", "run_search"]

OPTUNA_SAMPLERS = ("nsga2", "tpe", "random")  # not space.SAMPLERS, the sparse-attention delegates
RUN_FILE = RECORD
STUDY_FILE = "study.journal"
PRESETS_FILE = "presets.json"
_MAX_REJECTED_IN_A_ROW = 5000


@dataclass(frozen=True)
class SearchConfig:
    device: str
    budget_ms: float | None = None
    energy_budget_mj: float | None = None
    space: str | None = None  # a space file or shipped name; None = the default space
    trials: int = 100  # archs that get an accuracy (over-budget proposals are free and not counted)
    sampler: str = "nsga2"
    objectives: str | None = None  # None = accuracy, latency, and energy where the device has it
    population: int = 16  # NSGA-II population, TPE's random start-up trials
    seed: int = 0
    supernet: str | None = None  # a trained supernet's directory; None = the default (trained once, cached)
    data: str | None = None
    finetune_steps: int = 0  # train each arch's inherited weights this many steps before scoring it
    finetune_repeats: int = 1  # and average that many such fine-tunings (batch seeds)
    score_images: int = SCORE_IMAGES  # score on a class-balanced subset of the validation split; 0 = all
    refine: int = 0  # afterwards, score this many of the best archs (and the presets) again, fine-tuned
    workers: int | None = None  # parallel evaluations; None = one per core; 1 = in this process
    ray_address: str | None = None
    noop: bool = False  # evaluate nothing (accuracy 0): measures the execution layer

    @property
    def score_options(self) -> ScoreOptions:
        """The config's fields that say how an arch is scored (the sampler's seed is the calibration's)."""
        return ScoreOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ScoreOptions)})


@dataclass
class SearchRun:
    """What a search leaves behind, for the report."""

    out: Path
    study: optuna.Study
    objectives: tuple[str, ...]
    budgets: Budgets
    space: Space
    table: CostTable
    presets: pd.DataFrame
    provenance: dict[str, Any]
    seconds: float
    refined: dict[str, Score] = dataclasses.field(default_factory=dict)  # arch id -> refined score


def default_out(config: SearchConfig) -> Path:
    budget = f"{config.budget_ms:g}ms" if config.budget_ms is not None else "nobudget"
    return Path("runs") / f"{config.device}-{budget}"


def _sampler(config: SearchConfig, done: int) -> optuna.samplers.BaseSampler:
    # a resumed run draws from another seed, or it would propose its first archs again
    seed = config.seed + done
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.population, seed=seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=config.population, seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _identity(config: SearchConfig, space: Space, objectives: tuple[str, ...], supernet: str) -> dict[str, Any]:
    """What must not change between a search and its --resume."""
    return {
        "device": config.device,
        "budget_ms": config.budget_ms,
        "energy_budget_mj": config.energy_budget_mj,
        "space": space.to_dict(),
        "objectives": list(objectives),
        "sampler": config.sampler,
        "population": config.population,
        "seed": config.seed,
        "supernet": supernet,
        "data": config.data,
        "finetune_steps": config.finetune_steps,
        "finetune_repeats": config.finetune_repeats,
        "score_images": config.score_images,
        "noop": config.noop,
    }


# identity keys newer than some run directories, with the value those runs had: they still resume
_IDENTITY_ADDED = {"finetune_steps": 0, "finetune_repeats": 1, "score_images": 0}


def _run_dir(out: Path) -> RunDir:
    # the record is left as it is when unreadable: the trials it describes are in the journal beside it
    fix = f"restore it, or start a new search with another --out (the trials stay in {out / STUDY_FILE})"
    return RunDir(out, what="a search", fix=fix)


def _check_run_dir(out: Path, identity: dict[str, Any], resume: bool) -> None:
    journal = out / STUDY_FILE
    if not resume:
        if journal.exists():
            raise LglsearchError(f"{out} already holds a search; continue it with --resume, or pass another --out")
        return
    run = _run_dir(out)
    if not journal.exists() or not run.has_record():
        raise LglsearchError(f"nothing to resume in {out} (no {STUDY_FILE}); leave out --resume to start a search")
    changed = run.changes(identity, added=_IDENTITY_ADDED)
    if changed:
        raise LglsearchError(
            f"--resume with different arguments than the search in {out} ({'; '.join(map(str, changed))}); "
            "rerun with the original arguments, or start a new search with another --out"
        )


def _supernet_of_run(out: Path, config: SearchConfig) -> SearchConfig:
    """A resumed search keeps the supernet that scored it: the default one may have changed since
    (a new recipe, another cache key), and its scores would not compare with the run's."""
    directory = _run_dir(out).record().get("supernet_dir")
    if config.supernet is not None or directory is None:  # runs from before the record: today's default
        return config
    if not (Path(directory) / "config.json").is_file():
        raise LglsearchError(
            f"the search in {out} was scored by the default supernet of then, {directory}, which is gone; "
            "start a new search with another --out (its trials cannot be compared with another supernet's)"
        )
    return dataclasses.replace(config, supernet=directory)


def _values(objectives: tuple[str, ...], top1: float, latency: float, energy: float) -> list[float]:
    return [{"accuracy": top1, "latency": latency, "energy": energy}[name] for name in objectives]


def _preset_arch(name: str, space: Space) -> Arch:
    return space.adapt(PRESETS[name])


def _evaluate_presets(space: Space, pricer: Pricer, executor: Executor) -> pd.DataFrame:
    """The published models on the same device and proxy (accuracy only where the space holds them)."""
    rows, queue = [], []
    for name in PRESETS:
        row: dict[str, Any] = {"name": name, "in_space": False, "accuracy": math.nan, "accuracy_se": math.nan}
        try:
            arch = _preset_arch(name, space)
            row |= {"arch_id": arch.id, "in_space": space.contains(arch), **_price_row(pricer(arch))}
        except LglsearchError as err:  # not expressible at this resolution, or not priced by the table
            row["note"] = str(err)
        else:
            if row["in_space"]:
                queue.append((len(rows), arch))
        rows.append(row)
    for number, score, _ in evaluations(executor, queue):
        rows[number] |= {"accuracy": score.top1, "accuracy_se": score.top1_se}
    return pd.DataFrame(rows)


def _price_row(price: Price) -> dict[str, float]:
    return {
        "latency_ms": price.latency_ms,
        "energy_mj": price.energy_mj,
        "params_m": price.params_m,
        "macs_g": price.macs_g,
    }


def _recover(study: optuna.Study) -> int:
    """Fail the trials an interruption left running and queue their archs again; returns how many."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    queued = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    for trial in running:
        # queued first, then failed: a kill in between leaves it running, and the next resume queues it once
        if trial.number not in queued:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        study.tell(trial.number, state=TrialState.FAIL)
    return len(running)


class _JournalLock:
    """The journal's write lock as an flock, which the kernel drops when its holder dies. Optuna's
    default lock is a file that a search killed while writing leaves behind, and the resume then
    waits out a 30-second grace period before breaking it."""

    def __init__(self, journal: Path) -> None:
        self.path = journal.with_name(f".{journal.name}.lock")
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _storage(journal: Path) -> JournalStorage:
    lock = _JournalLock(journal) if fcntl is not None else None
    return JournalStorage(JournalFileBackend(str(journal), lock_obj=lock))


def _cut_torn_line(journal: Path) -> None:
    """Drop a last line that a crash left unfinished (a full disk, a power cut). Optuna skips it when
    reading, but the next append would fuse with it into a line that breaks every later read."""
    data = journal.read_bytes() if journal.is_file() else b""
    if not data or data.endswith(b"\n"):
        return
    with journal.open("r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)
    print(f"lglsearch: dropped an unfinished last line of {journal} (a write cut short)", file=sys.stderr)


_SCREENED = 200_000
"""Archs drawn at most to find a first population within budget (each is priced in microseconds)."""


_DRAW_AFTER_REJECTED = 20
"""Over-budget proposals in a row after which the next one is drawn among the archs within budget."""


def _enqueue_within_budget(study: optuna.Study, space: Space, pricer: Pricer, n: int, rng: np.random.Generator) -> int:
    """Queue up to `n` distinct archs within budget, drawn uniformly from the space as the samplers'
    random start draws them, but priced before Optuna is asked: under a tight budget most draws are
    over it, and each costs the study an ask and a tell (tens of ms, more as the study grows)
    instead of a price. Returns how many were queued."""
    found: dict[str, dict[str, Any]] = {}
    for _ in range(_SCREENED):
        if len(found) >= n:
            break
        arch, params = space.sample_params(rng)
        if arch.id not in found and pricer(arch).feasible:
            found[arch.id] = params
    for params in found.values():
        study.enqueue_trial(params)
    return len(found)


def _optimise(
    study: optuna.Study,
    space: Space,
    pricer: Pricer,
    executor: Executor,
    config: SearchConfig,
    objectives: tuple[str, ...],
    progress: bool,
) -> None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    known = {
        t.user_attrs["arch_id"]: Score(
            t.values[0],
            t.user_attrs.get("val_loss", math.nan),
            t.user_attrs.get("accuracy_se", math.nan),
            t.user_attrs.get("val_loss_se", math.nan),
        )
        for t in complete
    }
    # a fresh study's first population is drawn among the archs within budget; so is a proposal after
    # _DRAW_AFTER_REJECTED over-budget ones in a row (the sampler's children of a tight budget mostly are)
    draws = np.random.default_rng([config.seed, len(study.trials)])
    if not study.trials:
        _enqueue_within_budget(study, space, pricer, config.population, draws)
    done, rejected = len(complete), 0
    in_flight: dict[int, tuple[optuna.trial.Trial, Price, str]] = {}
    bar = tqdm(total=config.trials, initial=done, desc="search", unit="trial", disable=not progress, file=sys.stderr)

    def finish(trial: optuna.trial.Trial, price: Price, score: Score) -> None:
        nonlocal done
        for name, value in (("val_loss", score.loss), ("accuracy_se", score.top1_se), ("val_loss_se", score.loss_se)):
            if math.isfinite(value):  # val_loss: the steadier ranking (see refine.py)
                trial.set_user_attr(name, value)
        study.tell(trial, _values(objectives, score.top1, price.latency_ms, price.energy_mj))
        done += 1
        best = max((s.top1 for s in known.values()), default=math.nan)
        bar.set_postfix(best_acc=f"{best:.4f}", rejected=rejected)
        bar.update(1)

    def proposals() -> Iterator[tuple[int, Arch]]:
        """The archs to evaluate, asked of Optuna when a worker is free (over-budget ones and repeats
        are told at once); done + in flight only grows, so once it reaches --trials this ends."""
        nonlocal rejected
        rejected_in_row = 0
        screening = True  # until a screening finds nothing: then the budget admits too few to draw
        while done + len(in_flight) < config.trials:
            trial = study.ask()
            arch = space.suggest(trial)
            price = pricer(arch)
            for key, value in {"arch_id": arch.id, "arch": arch.to_json(), **_price_row(price)}.items():
                if not (isinstance(value, float) and math.isnan(value)):
                    trial.set_user_attr(key, value)
            if not price.feasible:
                trial.set_user_attr("rejected", price.over)
                study.tell(trial, state=TrialState.PRUNED)
                rejected, rejected_in_row = rejected + 1, rejected_in_row + 1
                if screening and rejected_in_row % _DRAW_AFTER_REJECTED == 0:
                    screening = _enqueue_within_budget(study, space, pricer, 1, draws) > 0
                if rejected_in_row >= _MAX_REJECTED_IN_A_ROW:
                    raise LglsearchError(
                        f"{rejected_in_row} proposals in a row were over the budget; it admits too few archs "
                        "of this space for the sampler to find them. Raise the budget or narrow the space"
                    )
                continue
            rejected_in_row = 0
            if arch.id in known:  # proposed again: the accuracy is known, spend nothing
                trial.set_user_attr("repeat", True)
                finish(trial, price, known[arch.id])
                continue
            in_flight[trial.number] = (trial, price, arch.id)
            yield trial.number, arch

    try:
        for number, score, seconds in evaluations(executor, proposals()):
            trial, price, arch_id = in_flight.pop(number)
            trial.set_user_attr("eval_s", round(seconds, 3))
            known[arch_id] = score
            finish(trial, price, score)
    finally:
        bar.close()


def _open_study(
    out: Path, config: SearchConfig, objectives: tuple[str, ...], *, resume: bool, progress: bool
) -> optuna.Study:
    """The run's study in its journal: a new one, or the one it resumes with the trials an
    interruption left running queued again."""
    if resume:
        _cut_torn_line(out / STUDY_FILE)
    storage = _storage(out / STUDY_FILE)
    done = 0
    if resume:
        # KeyError: killed between creating its journal and writing the study into it, the search starts it now
        with contextlib.suppress(KeyError):
            done = len(optuna.load_study(study_name="lglsearch", storage=storage).get_trials(deepcopy=False))
    study = optuna.create_study(
        study_name="lglsearch",
        storage=storage,
        directions=[OBJECTIVES[name] for name in objectives],
        sampler=_sampler(config, done),
        load_if_exists=resume,
    )
    if resume:
        retried = _recover(study)
        if progress:
            complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            print(f"lglsearch: resuming {out}: {complete} trial(s) done, {retried} to run again", file=sys.stderr)
    return study


def _refine(
    study: optuna.Study,
    presets: pd.DataFrame,
    space: Space,
    spec: WorkerSpec,
    executor: Executor,
    config: SearchConfig,
    out: Path,
    provenance: dict[str, Any],
    progress: bool,
) -> tuple[pd.DataFrame, dict[str, Score]]:
    """The presets with their refined scores (the inherited ones kept beside them), and the refined
    scores of the study's `config.refine` best archs; the provenance says what was refined."""
    in_space = [_preset_arch(name, space) for name in presets.loc[presets["in_space"], "name"]]
    chosen = [*candidates(study, config.refine), *in_space]
    shared = None
    if not config.noop:
        shared = shared_scores(
            provenance["supernet"],
            data=spec.data,
            seed=spec.seed,
            steps=REFINE_STEPS,
            repeats=REFINE_REPEATS,
            score_images=spec.score_images,
        )
    scores = refine(chosen, executor, out, steps=REFINE_STEPS, repeats=REFINE_REPEATS, shared=shared, progress=progress)
    top1 = {arch_id: score.top1 for arch_id, score in scores.items()}
    top1_se = {arch_id: score.top1_se for arch_id, score in scores.items()}
    presets = presets.assign(
        inherited_accuracy=presets["accuracy"],
        accuracy=presets["arch_id"].map(top1) if "arch_id" in presets else math.nan,
        accuracy_se=presets["arch_id"].map(top1_se) if "arch_id" in presets else math.nan,
    )
    evaluated = {t.user_attrs["arch_id"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    refined = {i: score for i, score in scores.items() if i in evaluated}  # the presets aside
    provenance["refined"] = {"archs": len(refined), "finetune_steps": REFINE_STEPS, "finetune_repeats": REFINE_REPEATS}
    return presets, refined


def run_search(
    config: SearchConfig, out: Path | None = None, *, resume: bool = False, progress: bool = True
) -> SearchRun:
    """Run (or resume) a search; every input is checked before any long work starts."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial would bury the progress bar
    try:
        return _run_search(config, out, resume=resume, progress=progress)
    finally:
        optuna.logging.set_verbosity(verbosity)  # the caller's, as it was


def _run_search(config: SearchConfig, out: Path | None, *, resume: bool, progress: bool) -> SearchRun:
    started = time.perf_counter()
    if config.sampler not in OPTUNA_SAMPLERS:
        raise LglsearchError(f"unknown sampler {config.sampler!r}; choose from {', '.join(OPTUNA_SAMPLERS)}")
    if config.trials < 1 or config.population < 2:
        raise LglsearchError("--trials must be >= 1 and --population >= 2")
    if config.finetune_steps < 0 or config.finetune_repeats < 1:
        raise LglsearchError(
            f"--finetune-steps must be >= 0 and --finetune-repeats >= 1, got {config.finetune_steps} "
            f"and {config.finetune_repeats}"
        )
    if config.refine < 0:
        raise LglsearchError(f"--refine must be >= 0 (archs to score again), got {config.refine}")
    if config.refine and config.finetune_steps:
        raise LglsearchError(
            "--refine scores the best archs again after fine-tuning, and with --finetune-steps every arch "
            "already is: pass one of them"
        )
    out = Path(out) if out is not None else default_out(config)
    space = load_space(config.space)
    keys = space_ops(space)
    # what the device's table can price (energy) is checked before the host's missing ops are timed
    table = get_table(config.device, keys, fill="none", space_name=space.name)
    budgets = Budgets(config.budget_ms, config.energy_budget_mj)
    objectives = parse_objectives(config.objectives, table)
    pricer = Pricer(table, budgets)
    if table.missing(keys):  # the host's: measured on first use
        table = get_table(config.device, keys, space_name=space.name)
        pricer = Pricer(table, budgets)
    missing = table.missing(keys)
    if missing:
        table.op_latency(missing[0])  # raises, naming the key and the command that adds it
    pricer.check_reachable(space)
    supernet_id = str(Path(config.supernet).resolve()) if config.supernet else "default"
    identity = _identity(config, space, objectives, supernet_id)
    _check_run_dir(out, identity, resume)
    if resume and config.refine:
        refined_scores(out, steps=REFINE_STEPS, repeats=REFINE_REPEATS)  # an unreadable file: refused now
    requested = config  # what run.json keeps: a later --resume asks the same
    if resume:
        config = _supernet_of_run(out, config)
    if config.ray_address:
        check_ray_address(config.ray_address)

    spec, state, provenance = prepare_supernet(
        space, config.score_options, space_spec=config.space, noop=config.noop, progress=progress
    )
    out.mkdir(parents=True, exist_ok=True)
    scored_by = {} if config.noop else {"supernet_dir": str(Path(provenance["supernet"]).resolve())}
    _run_dir(out).write_record(identity, config=dataclasses.asdict(requested), **scored_by)
    study = _open_study(out, config, objectives, resume=resume, progress=progress)
    workers = config.workers or default_workers()
    executor = make_executor(spec, state, workers, config.ray_address)
    try:
        presets_file = out / PRESETS_FILE
        if resume and presets_file.is_file():
            read_json(  # checked first: a damaged file is one line naming the fix, not a traceback
                presets_file,
                fix="delete it and resume: the presets are scored again",
                check=lambda v: None if isinstance(v, list) and all(isinstance(r, dict) for r in v) else "not a list",
            )
            presets = pd.read_json(presets_file, orient="records")  # pandas' reading of nulls, as written
        else:
            presets = _evaluate_presets(space, pricer, executor)
            atomic_write(presets_file, presets.to_json(orient="records", indent=2))
        _optimise(study, space, pricer, executor, config, objectives, progress)
        refined = {}
        if config.refine:
            presets, refined = _refine(study, presets, space, spec, executor, config, out, provenance, progress)
    finally:
        executor.close()
    provenance |= {"table": table.meta, "workers": workers}
    seconds = time.perf_counter() - started
    return SearchRun(out, study, objectives, budgets, space, table, presets, provenance, seconds, refined)
