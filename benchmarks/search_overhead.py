"""The execution layer's own cost per trial: a search whose evaluation does nothing.

Three ways to run Optuna trials, each with an evaluation that returns at once, on the default
space priced by the snapdragon888 table (no budget, so every trial is "evaluated"):

- lglsearch in process (`--workers 1`): Optuna ask/tell with the run's journal storage;
- lglsearch on a local Ray with 2 actors (the default on this machine);
- Ray Tune with OptunaSearch (what the search would cost on Tune): default settings, and with
  reused actors and quiet output.

Usage: python benchmarks/search_overhead.py [--trials 200] [--tune-trials 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lglsearch.search.study import SearchConfig, run_search
from lglsearch.space import load_space


def lglsearch_per_trial(trials: int, workers: int) -> tuple[float, float]:
    """(seconds per trial, seconds of set-up) of a no-op search."""
    config = SearchConfig(device="snapdragon888", trials=trials, workers=workers, noop=True)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run = run_search(config, Path(out) / "run", progress=False)
        total = time.perf_counter() - started
        done = run.study.trials  # read before the directory goes
    # from the first trial's start to the last one's end: Ray's start-up and the presets excluded
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return span / trials, total - span


def _define(trial) -> None:  # module level: Tune pickles its searcher
    load_space().suggest(trial)


def _objective(config: dict) -> dict:
    return {"accuracy": 0.0, "latency": 1.0}


def tune_per_trial(trials: int, reuse_actors: bool, quiet: bool) -> float:
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=not quiet, logging_level="ERROR")
    searcher = OptunaSearch(
        space=_define, metric=["accuracy", "latency"], mode=["max", "min"], sampler=optuna.samplers.NSGAIISampler()
    )
    tuner = tune.Tuner(
        _objective,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(verbose=0 if quiet else 1, storage_path=tempfile.mkdtemp()),
    )
    started = time.perf_counter()
    tuner.fit()
    seconds = time.perf_counter() - started
    ray.shutdown()
    return seconds / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--tune-trials", type=int, default=40)
    args = parser.parse_args()
    for workers, label in ((1, "lglsearch, in process"), (2, "lglsearch, Ray actors (2)")):
        per_trial, setup = lglsearch_per_trial(args.trials, workers)
        print(f"{label}: {1000 * per_trial:.1f} ms a trial over {args.trials} trials (+ {setup:.1f} s set-up)")
    for reuse, quiet, label in ((False, False, "default"), (True, True, "reused actors, quiet")):
        per_trial = tune_per_trial(args.tune_trials, reuse, quiet)
        print(f"Ray Tune + OptunaSearch, {label}: {1000 * per_trial:.0f} ms a trial over {args.tune_trials} trials")


if __name__ == "__main__":
    main()
