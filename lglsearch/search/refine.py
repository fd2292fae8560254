"""Refining a finished search: the most promising archs scored again, after fine-tuning.

Inherited supernet weights rank archs weakly; fine-tuning each arch's weights for a few dozen
steps before scoring ranks them better, at some seconds an arch more on a CPU. Spending that on
every trial is what `--finetune-steps` does; refining spends it where the family is chosen: on
the archs of the first non-dominated ranks of the study and on the presets. The refined family is
the Pareto front of the refined archs by their refined validation cross-entropy, which ranks them
closer to stand-alone training than their refined top-1 does: on 24 archs of the default space,
Kendall tau 0.57 against 0.44 with the stand-alone top-1 measured on 10,000 held-out images
(benchmarks/RESULTS.md, "Proxy supernet", sixth session); the family shows both. Scores are
written to the run directory as they finish, so an interrupted refinement resumes, and
`--resume --refine K` refines a finished search.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from lglsearch.search.execution import Executor
from lglsearch.search.pareto import trial_ranks
from lglsearch.space import Arch
from lglsearch.train.supernet import Score

__all__ = ["REFINED_FILE", "REFINE_REPEATS", "REFINE_STEPS", "candidates", "refine"]

# the recipe that ranked 24 archs closest to stand-alone training (benchmarks/RESULTS.md)
REFINE_STEPS = 60
REFINE_REPEATS = 2
REFINED_FILE = "refined.json"


def candidates(study: optuna.Study, k: int) -> list[Arch]:
    """The study's `k` most promising distinct archs: by non-domination rank, then accuracy."""
    seen: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        seen.setdefault(trial.user_attrs["arch_id"], trial)
    trials = list(seen.values())
    ranks = trial_ranks(study, trials)
    order = sorted(range(len(trials)), key=lambda i: (ranks[i], -trials[i].values[0]))
    return [Arch.from_json(trials[i].user_attrs["arch"]) for i in order[:k]]


def refine(
    archs: list[Arch],
    executor: Executor,
    out: Path,
    *,
    steps: int = REFINE_STEPS,
    repeats: int = REFINE_REPEATS,
    progress: bool = True,
) -> dict[str, Score]:
    """Scores of `archs` after `steps` fine-tuning steps x `repeats` (and of any scored before with
    that recipe, kept in `out`), by arch id."""
    path = out / REFINED_FILE
    recipe = {"finetune_steps": steps, "finetune_repeats": repeats}
    stored = json.loads(path.read_text()) if path.is_file() else {}
    scores: dict[str, Score] = {}
    if stored.get("recipe") == recipe:  # runs before the cross-entropy was kept stored top-1 alone: scored again
        scores = {i: Score(**s) for i, s in stored.get("scores", {}).items() if isinstance(s, dict)}
    queue = [a for a in dict.fromkeys(archs) if a.id not in scores]
    by_number = dict(enumerate(queue))
    bar = tqdm(total=len(queue), desc="refine", unit="arch", disable=not progress or not queue, file=sys.stderr)
    in_flight = 0
    try:
        while by_number or in_flight:
            while by_number and in_flight < executor.capacity:
                number = next(iter(by_number))
                executor.submit(number, by_number.pop(number), finetune=(steps, repeats))
                in_flight += 1
            number, score, _ = executor.next_result()
            in_flight -= 1
            scores[queue[number].id] = score
            stored = {i: dataclasses.asdict(s) for i, s in scores.items()}
            path.write_text(json.dumps({"recipe": recipe, "scores": stored}, indent=2))  # each as it finishes
            bar.update(1)
    finally:
        bar.close()
    return scores
