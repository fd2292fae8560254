"""Refining a finished search: the most promising archs scored again, after fine-tuning.

Inherited supernet weights are shared by every arch; fine-tuning each arch's weights for a few
dozen steps before scoring moves them towards the arch's own, at some seconds an arch more on a
CPU. Spending that on every trial is what `--finetune-steps` does; refining spends it where the
family is chosen: on the archs of the first non-dominated ranks of the study (by their inherited
cross-entropy) and on the presets. The refined family is the Pareto front of the refined archs by
their refined validation cross-entropy; the family shows the refined and the inherited top-1.
Whether either ranks archs closer to stand-alone training than the inherited score is measured in
benchmarks/RESULTS.md (the held-out ranking protocol). Scores are written to the run directory
as they finish, so an interrupted refinement resumes, and `--resume --refine K` refines a finished
search; they are also shared between the searches of one supernet (`shared_scores`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from lglsearch._files import atomic_write_json
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.rundir import UnreadableFile, read_json
from lglsearch.search.execution import Executor, evaluations
from lglsearch.search.pareto import trial_ranks
from lglsearch.space import Arch
from lglsearch.train.score import Score

__all__ = ["REFINED_FILE", "REFINE_REPEATS", "REFINE_STEPS", "candidates", "refine", "refined_scores", "shared_scores"]

# the recipe that ranked 24 archs closest to stand-alone training (benchmarks/RESULTS.md)
REFINE_STEPS = 60
REFINE_REPEATS = 2
REFINED_FILE = "refined.json"


def candidates(study: optuna.Study, k: int) -> list[Arch]:
    """The study's `k` most promising distinct archs: by non-domination rank with the inherited
    validation cross-entropy in place of top-1 (a smoother score than top-1 on a finite split), then
    by that cross-entropy. Studies whose trials lack it (no-op runs) go by top-1."""
    seen: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        seen.setdefault(trial.user_attrs["arch_id"], trial)
    trials = list(seen.values())
    losses = [t.user_attrs.get("val_loss", math.nan) for t in trials]
    if all(math.isfinite(loss) for loss in losses):
        scores = [-loss for loss in losses]  # higher is better, as trial_ranks takes it
    else:
        scores = [t.values[0] for t in trials]
    ranks = trial_ranks(study, trials, scores)
    order = sorted(range(len(trials)), key=lambda i: (ranks[i], -scores[i]))
    return [Arch.from_json(trials[i].user_attrs["arch"]) for i in order[:k]]


def shared_scores(
    supernet: str | Path, *, data: str | None, seed: int, steps: int, repeats: int, score_images: int
) -> Path:
    """Where refined scores of one supernet, data, calibration seed, recipe and scoring subset are
    kept for every search that uses them (inside the supernet's directory): a later search, of
    another budget or device, refines again only the archs no search refined before (the presets,
    after the first)."""
    recipe = {"finetune_steps": steps, "finetune_repeats": repeats}
    if score_images:  # 0 (all the images) keeps the key of the files written before the option
        recipe["score_images"] = score_images
    key = json.dumps({"data": data, "seed": seed, **recipe}, sort_keys=True)
    return Path(supernet) / "refined" / f"{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"


def _read_scores(path: Path, recipe: dict[str, Any], *, shared: bool = False) -> dict[str, Score]:
    """The scores in a refined-scores file of `recipe` (none for another recipe, or a file from before
    the cross-entropy was kept, which held top-1 alone: those archs are scored again).

    A run's own file that cannot be read is refused, not taken as empty: the refinement would then
    write over it without the scores it held. A `shared` file is a cache whose scores every search
    also keeps in its own file: one that cannot be read is taken as empty."""
    if not path.exists():
        return {}
    try:
        stored = read_json(path, fix=_KEPT, check=_not_scores)
        if stored.get("recipe") != recipe:
            return {}
        try:
            return {i: Score(**s) for i, s in stored.get("scores", {}).items() if isinstance(s, dict)}
        except TypeError as err:
            raise UnreadableFile(str(err), path, f"a score of other fields: {err}") from None
    except UnreadableFile as err:
        if shared:
            return {}
        raise LglsearchError(f"the refined scores in {path} are unreadable ({err.reason}); {_KEPT}") from None


_KEPT = "it is left as it is: restore it, or move it away to refine those archs again"


def _not_scores(stored: Any) -> str | None:
    if isinstance(stored, dict) and isinstance(stored.get("scores", {}), dict):
        return None
    return "not a recipe with its scores"


def _recipe(steps: int, repeats: int) -> dict[str, Any]:
    return {"finetune_steps": steps, "finetune_repeats": repeats}


def refined_scores(out: Path, *, steps: int = REFINE_STEPS, repeats: int = REFINE_REPEATS) -> dict[str, Score]:
    """The scores of this recipe that the run directory `out` keeps, by arch id; an unreadable
    `refined.json` is a `LglsearchError` (checked before a resumed search does any long work)."""
    return _read_scores(out / REFINED_FILE, _recipe(steps, repeats))


def _write_scores(path: Path, recipe: dict[str, Any], scores: dict[str, Score]) -> None:
    stored = {i: dataclasses.asdict(s) for i, s in scores.items()}
    atomic_write_json(path, {"recipe": recipe, "scores": stored})  # an interruption keeps the last


def refine(
    archs: list[Arch],
    executor: Executor,
    out: Path,
    *,
    steps: int = REFINE_STEPS,
    repeats: int = REFINE_REPEATS,
    shared: Path | None = None,
    progress: bool = True,
) -> dict[str, Score]:
    """Scores of `archs` after `steps` fine-tuning steps x `repeats` (and of any scored before with
    that recipe, kept in `out`, or in `shared`: see `shared_scores`), by arch id."""
    path = out / REFINED_FILE
    recipe = _recipe(steps, repeats)
    scores = refined_scores(out, steps=steps, repeats=repeats)
    known = _read_scores(shared, recipe, shared=True) if shared is not None else {}
    scores |= {a.id: known[a.id] for a in archs if a.id in known and a.id not in scores}
    # the largest first: with several workers, the last to finish is then a small one
    queue = sorted((a for a in dict.fromkeys(archs) if a.id not in scores), key=lambda a: -count(a).macs)
    bar = tqdm(total=len(queue), desc="refine", unit="arch", disable=not progress or not queue, file=sys.stderr)
    try:
        _write_scores(path, recipe, scores)
        for number, score, _ in evaluations(executor, enumerate(queue), finetune=(steps, repeats)):
            scores[queue[number].id] = score
            _write_scores(path, recipe, scores)  # each as it finishes
            if shared is not None:
                shared = _share(shared, recipe, queue[number].id, score)
            bar.update(1)
    finally:
        bar.close()
    return scores


def _share(shared: Path, recipe: dict[str, Any], arch_id: str, score: Score) -> Path | None:
    """Add one score to the shared file (re-read first: another search may have added some);
    a supernet directory that cannot be written stops the sharing, not the refinement."""
    try:
        _write_scores(shared, recipe, _read_scores(shared, recipe, shared=True) | {arch_id: score})
    except OSError as err:
        print(f"lglsearch: refined scores not shared ({err}); this search keeps its own", file=sys.stderr)
        return None
    return shared
