"""The study's trials and Pareto front as tables, its hypervolume, and who beats a preset."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
from optuna._hypervolume import compute_hypervolume  # what optuna.visualization.plot_hypervolume_history uses

from lglsearch.search.objectives import OBJECTIVES

__all__ = ["COLUMNS", "dominating", "front_frame", "hypervolume", "trials_frame"]

COLUMNS = ("accuracy", "latency_ms", "energy_mj", "params_m", "macs_g")
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


def front_frame(study: optuna.Study) -> pd.DataFrame:
    """The Pareto-optimal archs (Optuna's best_trials), one row per distinct arch, by latency."""
    rows = [
        {
            "arch_id": t.user_attrs["arch_id"],
            **{c: t.user_attrs.get(c, math.nan) for c in COLUMNS[1:]},
            "accuracy": t.values[0],
            "trial": t.number,
            "arch": t.user_attrs["arch"],
        }
        for t in study.best_trials
    ]
    if not rows:
        return pd.DataFrame(columns=["arch_id", *COLUMNS, "trial", "arch"])
    frame = pd.DataFrame(rows).drop_duplicates("arch_id").sort_values(["latency_ms", "accuracy"])
    return frame[["arch_id", *COLUMNS, "trial", "arch"]].reset_index(drop=True)


def hypervolume(frame: pd.DataFrame, objectives: tuple[str, ...], reference: dict[str, float]) -> float:
    """Optuna's hypervolume of the rows' objectives against `reference` (one value per objective).

    Objectives are turned into losses (accuracy negated); rows not better than the reference in
    every objective add nothing.
    """
    columns = ["accuracy" if name == "accuracy" else _COST[name] for name in objectives]
    signs = np.array([-1.0 if OBJECTIVES[name] == "maximize" else 1.0 for name in objectives])
    points = frame[columns].to_numpy(dtype=float) * signs
    ref = np.array([reference[name] for name in objectives], dtype=float) * signs
    points = points[np.all(points < ref, axis=1)]
    return float(compute_hypervolume(points, ref)) if len(points) else 0.0


def dominating(front: pd.DataFrame, preset: pd.Series, objectives: tuple[str, ...]) -> pd.Series | None:
    """The most accurate front member with higher accuracy than `preset` at no more of every cost objective."""
    if front.empty or not math.isfinite(preset.get("accuracy", math.nan)):
        return None
    better = front["accuracy"] > preset["accuracy"]
    for name in objectives[1:]:
        better &= front[_COST[name]] <= preset[_COST[name]]
    if not better.any():
        return None
    return front[better].sort_values("accuracy", ascending=False).iloc[0]
