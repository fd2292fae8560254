"""The study's trials and Pareto front as tables, its hypervolume, and who beats a preset."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import optuna
import pandas as pd

from lglsearch.search.objectives import OBJECTIVES
from lglsearch.train.score import Score

__all__ = [
    "CLAIM_SE",
    "COLUMNS",
    "REFINED_COLUMNS",
    "difference_se",
    "distinguishable",
    "dominating",
    "front_frame",
    "hypervolume",
    "nondominated_ranks",
    "trial_ranks",
    "trials_frame",
]

# accuracy_se: the accuracy's standard error (the validation split's size), a trial's user attribute
COLUMNS = ("accuracy", "accuracy_se", "latency_ms", "energy_mj", "params_m", "macs_g")
REFINED_COLUMNS = ("refined_loss", "inherited_accuracy")  # a refined front's, beside COLUMNS
_COST = {"latency": "latency_ms", "energy": "energy_mj"}


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial: number, state, the objectives, the price and the arch (rejected ones have no accuracy)."""
    frame = study.trials_dataframe(attrs=("number", "state", "values", "user_attrs", "duration"))
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", *COLUMNS, "arch_id", "arch"])
    frame = frame.rename(columns=lambda c: c.removeprefix("user_attrs_"))
    if "values_0" in frame:  # a study has two objectives or more; accuracy is the first
        frame["accuracy"] = frame["values_0"]
    frame = frame.drop(columns=[c for c in frame if c.startswith("values_")])
    for column in COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    first = ["number", "state", *COLUMNS, "arch_id"]
    return frame[first + [c for c in frame.columns if c not in first]]


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """The non-domination rank of each row (0 = Pareto-optimal), every column to be minimised."""
    points = np.asarray(points, dtype=float)
    ranks = np.full(len(points), -1)
    rank = 0
    while (ranks < 0).any():
        left = np.flatnonzero(ranks < 0)
        rest = points[left]
        # row i is dominated when some row is no worse in every column and better in one
        no_worse = np.all(rest[None, :, :] <= rest[:, None, :], axis=2)
        better = np.any(rest[None, :, :] < rest[:, None, :], axis=2)
        ranks[left[~np.any(no_worse & better, axis=1)]] = rank
        rank += 1
    return ranks


def trial_ranks(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial], accuracies: list[float] | None = None
) -> np.ndarray:
    """Non-domination ranks of `trials` in the study's objectives (accuracy first: `accuracies`, any
    score where higher is better, replace it)."""
    if not trials:
        return np.zeros(0, dtype=int)
    signs = np.array([-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
    accuracies = accuracies if accuracies is not None else [t.values[0] for t in trials]
    return nondominated_ranks(np.array([[a, *t.values[1:]] for a, t in zip(accuracies, trials, strict=True)]) * signs)


def front_frame(study: optuna.Study, refined: Mapping[str, Score] | None = None) -> pd.DataFrame:
    """The Pareto-optimal archs, one row per distinct arch, by latency: Optuna's best trials, or
    with `refined` (arch id -> refined score) the front of the refined archs by their refined
    cross-entropy (the steadier ranking: see search/refine.py), with their refined top-1 as
    `accuracy`, that cross-entropy as `refined_loss` and their inherited top-1 as `inherited_accuracy`."""
    scores: list[Score] | None = None
    if not refined:
        trials = study.best_trials
    else:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        distinct = {t.user_attrs["arch_id"]: t for t in complete if t.user_attrs["arch_id"] in refined}
        trials = list(distinct.values())
        scores = [refined[t.user_attrs["arch_id"]] for t in trials]
        keep = trial_ranks(study, trials, [-s.loss for s in scores]) == 0  # lower loss is better
        trials = [t for t, k in zip(trials, keep, strict=True) if k]
        scores = [s for s, k in zip(scores, keep, strict=True) if k]
    rows = [
        {
            "arch_id": t.user_attrs["arch_id"],
            **{c: t.user_attrs.get(c, math.nan) for c in COLUMNS[1:]},
            "accuracy": t.values[0] if scores is None else scores[i].top1,
            "accuracy_se": t.user_attrs.get("accuracy_se", math.nan) if scores is None else scores[i].top1_se,
            "refined_loss": math.nan if scores is None else scores[i].loss,
            "inherited_accuracy": t.values[0],
            "trial": t.number,
            "arch": t.user_attrs["arch"],
        }
        for i, t in enumerate(trials)
    ]
    columns = ["arch_id", *COLUMNS, *(REFINED_COLUMNS if refined else ()), "trial", "arch"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows).drop_duplicates("arch_id").sort_values(["latency_ms", "accuracy"])
    return frame[columns].reset_index(drop=True)


def hypervolume(frame: pd.DataFrame, objectives: tuple[str, ...], reference: dict[str, float]) -> float:
    """The hypervolume of the rows' objectives against `reference` (one value per objective): the
    volume of the region that some row is at least as good as in every objective, bounded by it.

    Objectives are turned into losses (accuracy negated); rows not better than the reference in
    every objective add nothing. Exact (our own: Optuna has no public hypervolume function, and
    its private `optuna._hypervolume` may change in any release).
    """
    columns = ["accuracy" if name == "accuracy" else _COST[name] for name in objectives]
    signs = np.array([-1.0 if OBJECTIVES[name] == "maximize" else 1.0 for name in objectives])
    points = frame[columns].to_numpy(dtype=float) * signs
    ref = np.array([reference[name] for name in objectives], dtype=float) * signs
    points = points[np.all(points < ref, axis=1)]
    if not len(points):
        return 0.0
    return _dominated_volume(points[nondominated_ranks(points) == 0], ref)


def _dominated_volume(points: np.ndarray, ref: np.ndarray) -> float:
    """The volume dominated by `points` (minimised, each strictly below `ref`) up to `ref`, exactly:
    sliced along the last objective, each slab between consecutive levels has as cross-section the
    volume the points at or below it dominate in the other objectives (O(n^(d-1) log n); fronts
    here hold tens of points and d <= 3)."""
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    heights = np.diff(np.append(points[:, -1], ref[-1]))
    if points.shape[1] == 1:
        return float(ref[0] - points[0, 0])
    if points.shape[1] == 2:  # the cross-section is a length: the best first objective so far
        return float(np.sum(heights * (ref[0] - np.minimum.accumulate(points[:, 0]))))
    return float(sum(h * _dominated_volume(points[: i + 1, :-1], ref[:-1]) for i, h in enumerate(heights) if h > 0))


def difference_se(a_se: float, b_se: float) -> float:
    """The standard error of the difference of two accuracies with these errors (taken as
    independent: conservative for two archs scored on the same images)."""
    return math.sqrt(a_se**2 + b_se**2)


CLAIM_SE = 2  # a difference is claimed only beyond this many standard errors of it


def distinguishable(difference: float, se: float) -> bool:
    """Whether a difference is larger than `CLAIM_SE` standard errors of it (the one rule every
    report applies before it says that one arch or variant beats another)."""
    return abs(difference) > CLAIM_SE * se


def dominating(front: pd.DataFrame, preset: pd.Series, objectives: tuple[str, ...]) -> pd.Series | None:
    """The most accurate front member with higher accuracy than `preset` at no more of every cost objective
    (whether the difference is larger than its uncertainty is the caller's to say: `difference_se`)."""
    if front.empty or not math.isfinite(preset.get("accuracy", math.nan)):
        return None
    better = front["accuracy"] > preset["accuracy"]
    for name in objectives[1:]:
        better &= front[_COST[name]] <= preset[_COST[name]]
    if not better.any():
        return None
    return front[better].sort_values("accuracy", ascending=False).iloc[0]
