"""The search's accuracy estimate: which supernet scores a search's archs, and that score for any
arch outside a search (`lglsearch score`), through the same worker a trial uses."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lglsearch.errors import LglsearchError
from lglsearch.search.execution import SCORE_IMAGES, WorkerSpec, evaluations, make_executor
from lglsearch.space import Arch, Space

__all__ = ["ScoreOptions", "prepare_supernet", "score_archs"]


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """How an arch's accuracy is read from a supernet: the supernet (None: the space's default,
    trained once and cached), its data, the calibration seed, fine-tuning and the validation
    images scored (0: all). `search`, `score` and `SearchConfig` share them."""

    supernet: str | None = None
    data: str | None = None
    seed: int = 0
    finetune_steps: int = 0
    finetune_repeats: int = 1
    score_images: int = SCORE_IMAGES


def prepare_supernet(
    space: Space,
    options: ScoreOptions = ScoreOptions(),
    *,
    space_spec: str | None = None,
    noop: bool = False,
    progress: bool = True,
) -> tuple[WorkerSpec, dict[str, torch.Tensor] | None, dict[str, Any]]:
    """The supernet's weights, its worker spec and provenance: the given one (`options.supernet`, a
    directory), or the default one of `space` (trained on first use, cached; `space_spec` is how
    the user named the space, which its training recipe records)."""
    supernet, data, score_images = options.supernet, options.data, options.score_images
    if noop:
        return WorkerSpec(space=space.to_dict(), data=data, noop=True), None, {"supernet": "none (no-op)"}
    if score_images < 0:
        raise LglsearchError(f"--score-images must be >= 0 (0 = the whole validation split), got {score_images}")
    from lglsearch.train.data import PROXY
    from lglsearch.train.recipe import TrainConfig
    from lglsearch.train.supernet import load_supernet, train_supernet

    if supernet:
        directory = Path(supernet)
        net = load_supernet(directory)
        expected = space.with_resolution(net.space.resolution, net.space.num_classes)
        if expected.to_dict() != net.space.to_dict():
            raise LglsearchError(
                f"the supernet at {directory} was trained for space {net.space.name!r}, not {space.name!r} "
                "(or with other choices); pass the space it was trained for with --space"
            )
        config_file = directory / "config.json"
        try:
            trained_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        except (OSError, ValueError) as err:
            raise LglsearchError(f"{config_file} is unreadable ({err}); retrain the supernet") from None
        if data is not None and "data" in trained_config and trained_config["data"] != data:
            trained_on = trained_config.get("data_source", trained_config["data"])
            raise LglsearchError(
                f"the supernet at {directory} was trained on {trained_on}, not on {data}; "
                "leave out --data to score it on its own data"
            )
        data = data if data is not None else trained_config.get("data")
    else:
        train = TrainConfig(space=space_spec, data=data)
        trained = train_supernet(train, progress=progress)
        net, directory = trained.net, trained.directory
        trained_config = dataclasses.asdict(train) | {"data_source": trained.data.source}
    provenance = {
        "supernet": str(directory),
        "supernet_epochs": trained_config.get("epochs"),
        "supernet_resolution": net.space.resolution,
        "data": trained_config.get("data_source", data or PROXY),
        "finetune_steps": options.finetune_steps,
        "finetune_repeats": options.finetune_repeats,
        "score_images": score_images,
    }
    spec = WorkerSpec(
        space=net.space.to_dict(),
        data=data,
        seed=options.seed,
        finetune_steps=options.finetune_steps,
        finetune_repeats=options.finetune_repeats,
        score_images=score_images,
    )
    return spec, net.state_dict(), provenance


def score_archs(
    archs: Sequence[Arch],
    space: Space,
    options: ScoreOptions = ScoreOptions(),
    *,
    space_spec: str | None = None,
    workers: int = 1,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each arch's accuracy estimate exactly as a search of `space` with these options records it
    (the same worker and code path as a trial), with its standard error; and the provenance.

    Rows hold `arch_id`, `accuracy` (proxy top-1), `accuracy_se`, `loss` (validation
    cross-entropy), `loss_se` and `seconds`; every arch is checked against the space first.
    """
    adapted = []
    for arch in archs:
        arch = space.adapt(arch)
        reason = space.check(arch)
        if reason:
            raise LglsearchError(
                f"arch {arch.id} is outside the space {space.name!r}: {reason}; score archs of its space"
            )
        adapted.append(arch)
    spec, state, provenance = prepare_supernet(space, options, space_spec=space_spec, progress=progress)
    executor = make_executor(spec, state, workers, None)
    unique = list(dict.fromkeys(adapted))
    by_id: dict[str, tuple[Any, float]] = {}
    bar = tqdm(total=len(unique), desc="score", unit="arch", disable=not progress, file=sys.stderr)
    started = time.perf_counter()
    try:
        for number, score, seconds in evaluations(executor, enumerate(unique)):
            by_id[unique[number].id] = (score, seconds)
            bar.update(1)
    finally:
        bar.close()
        executor.close()
    rows = []
    for arch in adapted:
        score, seconds = by_id[arch.id]
        rows.append(
            {
                "arch_id": arch.id,
                "accuracy": score.top1,
                "accuracy_se": score.top1_se,
                "loss": score.loss,
                "loss_se": score.loss_se,
                "seconds": round(seconds, 3),
            }
        )
    provenance["seconds"] = round(time.perf_counter() - started, 3)
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows
    ], provenance
