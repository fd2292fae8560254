"""Where proxy accuracies are computed: in this process, or on a pool of Ray actors.

The study stays in the driver and asks/tells Optuna; only accuracy evaluations travel. Each Ray
actor receives the supernet's weights once, when it starts (one object put into Ray's store),
and then evaluates archs one after another, so a trial costs its evaluation plus milliseconds
of scheduling. Why not Ray Tune with OptunaSearch, the other way to run Optuna on Ray: its own
machinery costs a trial more than this pool does (measured in benchmarks/RESULTS.md, "Execution
overhead per trial"; benchmarks/search_overhead.py).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from lglsearch.errors import LglsearchError
from lglsearch.nn.supernet import Supernet
from lglsearch.space import Arch, Space
from lglsearch.train.data import balanced_subset, load_data
from lglsearch.train.score import Score
from lglsearch.train.scoring import calibration_images, materialise, proxy_score

__all__ = [
    "SCORE_IMAGES",
    "AccuracyWorker",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "WorkerSpec",
    "check_ray_address",
    "default_workers",
    "evaluations",
    "make_executor",
]

T = TypeVar("T")
R = TypeVar("R")


# validation images a trial is scored on: 2,000 rank the held-out development archs as all 5,000 do,
# in half the time, which keeps the README command within its time aims (benchmarks/RESULTS.md)
SCORE_IMAGES = 2000


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs besides the weights: the supernet's space, its data, the calibration seed."""

    space: dict[str, Any]  # Space.to_dict() of the supernet (proxy resolution and classes)
    data: str | None  # the data spec the supernet was trained on (None = the embedded proxy)
    seed: int = 0
    finetune_steps: int = 0  # see proxy_score
    finetune_repeats: int = 1
    score_images: int = SCORE_IMAGES  # a class-balanced subset of the validation split; 0 = all of it
    noop: bool = False  # answer 0.0 at once: measures the execution layer's own cost per trial


class AccuracyWorker:
    """Holds one supernet and its data; gives the proxy accuracy of deploy archs."""

    def __init__(self, spec: WorkerSpec, state: dict[str, torch.Tensor] | None, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.spec = spec
        if spec.noop:
            return
        self.space = Space.from_dict(spec.space, source="supernet")
        self.net = Supernet(self.space)
        self.net.load_state_dict(state)
        self.net.eval()
        data = load_data(spec.data, self.space.resolution)
        # transformed once here, not per arch: most of an evaluation's time was the data pipeline
        self.calib = calibration_images(data, seed=spec.seed)
        self.data = dataclasses.replace(data, val=materialise(balanced_subset(data.val, spec.score_images)))

    def score(self, arch: Arch, finetune: tuple[int, int] | None = None) -> tuple[Score, float]:
        """(score, seconds) of a deploy arch, evaluated at the supernet's resolution and classes;
        `finetune` = (steps, repeats) overrides the spec's (a refinement's)."""
        started = time.perf_counter()
        if self.spec.noop:
            return Score(0.0, math.nan), 0.0
        steps, repeats = finetune or (self.spec.finetune_steps, self.spec.finetune_repeats)
        arch = self.space.adapt(arch)
        score = proxy_score(self.net, arch, self.data, calib=self.calib, finetune_steps=steps, finetune_repeats=repeats)
        return score, time.perf_counter() - started


class Executor(Protocol):
    """Runs `fn(worker, item)` for each item on one of `capacity` workers, yielding `(item, result)`
    as each finishes. `items` is drawn from only when a worker is free, so it may be a generator
    that decides the next item from the results so far (the search asks Optuna that way)."""

    capacity: int

    def map_unordered(self, fn: Callable[[Any, T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs in this process, one item at a time, in order: debugging, machines without Ray, and work
    on this process's data (an ablation's trainings)."""

    capacity = 1

    def __init__(self, worker: Any = None) -> None:
        self.worker = worker

    def map_unordered(self, fn: Callable[[Any, T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        for item in items:
            yield item, fn(self.worker, item)

    def close(self) -> None:
        pass


def _score(worker: AccuracyWorker, job: tuple[int, Arch], finetune: tuple[int, int] | None) -> tuple[Score, float]:
    return worker.score(job[1], finetune)


def evaluations(
    executor: Executor, jobs: Iterable[tuple[int, Arch]], finetune: tuple[int, int] | None = None
) -> Iterator[tuple[int, Score, float]]:
    """(number, score, seconds) of each (number, arch) job as it finishes, on the executor's
    AccuracyWorkers; `finetune` = (steps, repeats) overrides their spec's (a refinement's)."""
    for (number, _), (score, seconds) in executor.map_unordered(functools.partial(_score, finetune=finetune), jobs):
        yield number, score, seconds


def check_ray_address(address: str) -> None:
    """Fail in seconds, not after Ray's long retries, when a cluster address does not answer."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LglsearchError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise LglsearchError(
            f"the Ray cluster at {address} does not answer ({err.strerror or err}); start it with "
            "`ray start --head` on that machine, or leave out --ray-address to run on this machine"
        ) from None


_END = object()


class _ActorWorker(AccuracyWorker):
    """An AccuracyWorker on a Ray actor: runs a map's function where the worker and its weights are."""

    def run(self, fn: Callable[[Any, T], R], tag: int, item: T) -> tuple[int, R]:
        return tag, fn(self, item)


class RayExecutor:
    """A pool of Ray actors, each holding the supernet; on a local Ray or an existing cluster."""

    def __init__(
        self,
        spec: WorkerSpec,
        state: dict[str, torch.Tensor] | None,
        workers: int,
        address: str | None = None,
    ) -> None:
        import ray

        if address:
            check_ray_address(address)
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            try:
                ray.init(
                    address=address,
                    num_cpus=None if address else workers,
                    include_dashboard=False,
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                )
            except ConnectionError as err:
                raise LglsearchError(f"could not join the Ray cluster at {address}: {err}") from None
        state_ref = ray.put(state)  # once: every actor reads the same object
        remote = ray.remote(num_cpus=1)(_ActorWorker)
        self.actors = [remote.remote(spec, state_ref, 1) for _ in range(workers)]
        self.capacity = workers

    def map_unordered(self, fn: Callable[[Any, T], R], items: Iterable[T]) -> Iterator[tuple[T, R]]:
        from ray.util import ActorPool

        pool = ActorPool(self.actors)  # one a map: nothing an abandoned map left running is read as this one's
        source, tags, pending = iter(items), itertools.count(), {}
        while True:
            # drawn only for a free actor; a drawn-out iterator keeps answering _END
            while pool.has_free() and (item := next(source, _END)) is not _END:
                tag = next(tags)
                pending[tag] = item
                pool.submit(lambda actor, job: actor.run.remote(fn, *job), (tag, item))
            if not pending:
                return
            tag, result = pool.get_next_unordered()  # results carry their tag: they come in any order
            yield pending.pop(tag), result

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        if self.started_ray:
            ray.shutdown()


def make_executor(
    spec: WorkerSpec, state: dict[str, torch.Tensor] | None, workers: int, address: str | None
) -> LocalExecutor | RayExecutor:
    """In-process for one worker and no cluster; otherwise Ray."""
    if workers < 1:
        raise LglsearchError(f"--workers must be >= 1, got {workers}")
    if workers == 1 and not address:
        return LocalExecutor(AccuracyWorker(spec, state))
    return RayExecutor(spec, state, workers, address)


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)
