"""A search's outputs: the Pareto family as CSV and JSON, every trial, a Markdown report and a plot."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure  # a figure without pyplot: no global backend or state of the user's

from lglsearch.io import atomic_savefig, atomic_write, atomic_write_json
from lglsearch.search.pareto import (
    CLAIM_SE,
    COLUMNS,
    REFINED_COLUMNS,
    difference_se,
    distinguishable,
    dominating,
    front_frame,
    hypervolume,
    trials_frame,
)
from lglsearch.search.study import SearchRun
from lglsearch.space import Arch

__all__ = ["write_search_report"]


def _finetuned(steps: int | None, repeats: int | None) -> str:
    if not steps:
        return ""
    mean = f" (the mean of {repeats} fine-tunings on other batches)" if repeats and repeats > 1 else ""
    return f"each arch's inherited weights fine-tuned {steps} steps on their own{mean}, "


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _plot(run: SearchRun, trials: pd.DataFrame, front: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.add_subplot()
    evaluated = trials[trials["state"] == "COMPLETE"]
    inherited = " (inherited weights)" if run.refined else ""
    ax.scatter(
        evaluated["latency_ms"], 100 * evaluated["accuracy"], s=12, c="0.65", label=f"evaluated archs{inherited}"
    )
    if not front.empty:
        label = "Pareto front, refined (fine-tuned)" if run.refined else "Pareto front"
        ax.step(front["latency_ms"], 100 * front["accuracy"], where="post", c="C3", lw=1.2)
        ax.errorbar(
            front["latency_ms"],
            100 * front["accuracy"],
            yerr=200 * front["accuracy_se"].fillna(0),
            fmt="o",
            ms=5,
            c="C3",
            capsize=3,
            label=f"{label} (± 2 standard errors)",
            zorder=3,
        )
    presets = run.presets[run.presets["accuracy"].notna()]
    if not presets.empty:
        ax.scatter(presets["latency_ms"], 100 * presets["accuracy"], marker="*", s=140, c="C0", label="presets")
        if "accuracy_se" in presets:
            ax.errorbar(
                presets["latency_ms"],
                100 * presets["accuracy"],
                yerr=200 * presets["accuracy_se"].fillna(0),
                fmt="none",
                c="C0",
                capsize=3,
            )
        for row in presets.itertuples():
            ax.annotate(
                row.name.removeprefix("edgevit_").upper(),
                (row.latency_ms, 100 * row.accuracy),
                xytext=(5, 3),
                textcoords="offset points",
                fontsize=8,
            )
    if run.budgets.latency_ms is not None:
        ax.axvline(run.budgets.latency_ms, c="k", ls="--", lw=1, label=f"budget {run.budgets.latency_ms:g} ms")
    ax.set_xlabel(f"latency on {run.table.device} (ms, {run.table.meta.get('method', '?')} table)")
    ax.set_ylabel("proxy top-1 (%)")
    ax.set_title(f"lglsearch: {run.space.name} space on {run.table.device}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_savefig(fig, path)


def _energy_method(meta: dict[str, Any]) -> str:
    """How a table's energy was obtained, in a word or two (modelled, measured, none)."""
    return str((meta.get("energy") or {}).get("method", "as imported")).split(" (")[0]


def _provenance(run: SearchRun) -> list[str]:
    meta, prov = run.table.meta, run.provenance
    lines = [
        f"- Latency: {meta.get('device')} table, method `{meta.get('method')}`: {meta.get('description')}; "
        f"{meta.get('runtime')}, {meta.get('threads')} thread(s), {meta.get('precision')}.",
        f"- Source of the measurements: {meta.get('source', 'not recorded')}.",
    ]
    model = run.table.phone_model() or {}
    for op_class, v in sorted(model.get("heldout", {}).items()):
        lines.append(
            f"  - held-out error ({model['name']} model), {op_class}: {100 * v['within_10pct']:.0f}% within +-10%, "
            f"MAPE {100 * v['mape']:.1f}% ({v['n']} blocks)"
        )
    energy = meta.get("energy") or {}
    if energy.get("method") == "modelled":
        basis = f"; {energy['power_method']}" if energy.get("power_method") else ""
        lines.append(
            f"- Energy: modelled, not measured: {energy.get('formula')}, {energy.get('power_w')} W "
            f"({energy.get('power_source')}){basis}."
        )
    else:
        lines.append(f"- Energy: none on this device ({energy.get('why', 'the table has no energy_mj')}).")
    tuned = _finetuned(prov.get("finetune_steps"), prov.get("finetune_repeats"))
    lines.append(
        f"- Accuracy: proxy top-1 inherited from the weight-sharing supernet at {prov.get('supernet')} "
        f"({prov.get('supernet_epochs')} epoch(s), {prov.get('data')}, {prov.get('supernet_resolution')} px), "
        f"{tuned}BatchNorm recalibrated per arch, scored on {_images(prov.get('score_images'))}. "
        "It ranks archs on the proxy task; it is not ImageNet accuracy."
    )
    refined = prov.get("refined")
    if refined:
        lines.append(
            f"- Refined: the {refined['archs']} best archs (by non-domination rank, their inherited validation "
            "cross-entropy in place of top-1) and the presets in the space "
            f"were scored again, {_finetuned(refined['finetune_steps'], refined['finetune_repeats'])}"
            "and the family is the Pareto front of those by their refined validation cross-entropy "
            "(`refined.json`; how well each score ranks archs: benchmarks/RESULTS.md)."
        )
    return lines


def _images(score_images: int | None) -> str:
    if not score_images:  # 0, or a run from before the option: the whole split
        return "the whole validation split"
    return f"a class-balanced {score_images:,} of the validation images (or all, if fewer)"


def _dominated_by(front: pd.DataFrame, preset: pd.Series, objectives: tuple[str, ...]) -> str:
    """Which family member beats the preset, claimed only when the accuracy difference is more than
    two standard errors."""
    best = dominating(front, preset, objectives)
    if best is None:
        return "none found"
    gap = 100 * (best["accuracy"] - preset["accuracy"])
    se = 100 * difference_se(best.get("accuracy_se", math.nan), preset.get("accuracy_se", math.nan))
    where = f"{best['arch_id']} ({100 * best['accuracy']:.2f}%, {best['latency_ms']:.2f} ms)"
    if math.isnan(se):
        return f"{where}, +{gap:.2f} points (uncertainty not recorded)"
    if not distinguishable(gap, se):
        return (
            f"not distinguishable on this proxy: {where} is +{gap:.2f} points at no more cost, "
            f"within two standard errors ({CLAIM_SE * se:.2f})"
        )
    return f"{where}, +{gap:.2f} ± {se:.2f} points"


def _refined_title(run: SearchRun) -> str:
    return f", the front of the {len(run.refined)} archs scored again after fine-tuning" if run.refined else ""


def write_search_report(run: SearchRun) -> dict[str, Path]:
    """Write pareto.csv/.json, trials.csv, family/<arch id>.json, report.md and pareto.png; return their paths."""
    out = run.out
    trials, front = trials_frame(run.study), front_frame(run.study, run.refined)
    extra = REFINED_COLUMNS if run.refined else ()
    paths = {name: out / name for name in ("pareto.csv", "pareto.json", "trials.csv", "report.md", "pareto.png")}
    atomic_write(paths["pareto.csv"], front.to_csv(index=False))
    members = [
        {**{k: row[k] for k in ("arch_id", *COLUMNS, *extra)}, "arch": json.loads(row["arch"])}
        for _, row in front.iterrows()
    ]
    atomic_write_json(
        paths["pareto.json"], {"objectives": list(run.objectives), "provenance": run.provenance, "family": members}
    )
    atomic_write(paths["trials.csv"], trials.to_csv(index=False))
    family = out / "family"
    family.mkdir(exist_ok=True)
    for member in members:
        atomic_write(family / f"{member['arch_id']}.json", json.dumps(member["arch"], indent=2) + "\n")
    # family/ mirrors pareto.csv: members of an earlier front (a resumed run's, or the committed example's
    # in a fresh clone) would pass for this one's; their archs stay in trials.csv and the journal
    current = {f"{m['arch_id']}.json" for m in members}
    for stale in family.glob("*.json"):
        if re.fullmatch(r"[0-9a-f]{10}\.json", stale.name) and stale.name not in current:
            stale.unlink()
    _plot(run, trials, front, paths["pareto.png"])

    states = trials["state"].value_counts()
    evaluated = int(states.get("COMPLETE", 0))
    budget = " and ".join(
        f"{name} <= {value:g} {unit}"
        for name, value, unit in (("latency", run.budgets.latency_ms, "ms"), ("energy", run.budgets.energy_mj, "mJ"))
        if value is not None
    )
    # accuracy against latency: comparable between runs with the same budget (energy adds nothing
    # where it is modelled as latency times a power)
    plane = ("accuracy", "latency")
    reference = {"accuracy": 0.0, "latency": run.budgets.latency_ms or float(trials["latency_ms"].max())}
    ref_text = f"top-1 0, latency {reference['latency']:g} ms"
    # stages joined by " / ": a "|" would end the Markdown cell
    shown = front.assign(arch=[str(Arch.from_json(a)).split(": ", 1)[1].replace(" | ", " / ") for a in front["arch"]])
    shown = shown.assign(accuracy=100 * shown["accuracy"], accuracy_se=100 * shown["accuracy_se"])
    energy_column = {"energy_mj": f"energy_mj ({_energy_method(run.table.meta)})"}
    shown = shown.rename(columns={"accuracy": "top-1 %", "accuracy_se": "± se"} | energy_column)
    if run.refined:
        inherited = 100 * shown.pop("inherited_accuracy")
        shown.insert(2, "inherited top-1 %", inherited)
        shown.insert(2, "refined val loss", shown.pop("refined_loss"))
        shown = shown.rename(columns={"top-1 %": "refined top-1 %"})
    preset_rows = []
    for _, preset in run.presets.iterrows():
        preset_rows.append(
            {
                "preset": preset["name"],
                ("refined top-1 %" if run.refined else "top-1 %"): 100 * preset["accuracy"]
                if preset["in_space"]
                else "outside the space",
                "± se": 100 * preset.get("accuracy_se", math.nan),
                **{energy_column.get(c, c): preset.get(c, math.nan) for c in COLUMNS[2:]},
                "dominated by": _dominated_by(front, preset, run.objectives),
            }
        )
    lines = [
        f"# lglsearch: the {run.space.name} space on {run.table.device}" + (f", {budget}" if budget else ""),
        "",
        f"{evaluated} archs evaluated, {int(states.get('PRUNED', 0))} proposals over budget priced and rejected "
        f"without evaluation; sampler `{run.study.sampler.__class__.__name__}`, objectives "
        f"{', '.join(run.objectives)}; {run.provenance.get('workers')} worker(s); this session's wall time "
        f"{run.seconds:.0f} s.",
        f"Hypervolume of the front in accuracy x latency (reference point {ref_text}): "
        f"{hypervolume(front, plane, reference):.4g}.",
        "",
        f"## The Pareto-optimal family ({len(front)} archs{_refined_title(run)})",
        "",
        _markdown_table(shown.drop(columns=["trial"])),
        "",
        "Each member's arch is in `family/<arch id>.json`; export one with "
        "`lglsearch export --arch family/<arch id>.json --onnx model.onnx`.",
        "",
        "## Beside the presets (same device table, same supernet)",
        "",
        _markdown_table(pd.DataFrame(preset_rows)),
        "",
        "## Provenance",
        "",
        *_provenance(run),
        f"- Study: Optuna journal `{out / 'study.journal'}` (`optuna-dashboard {out / 'study.journal'}`); "
        "continue it with `--resume`.",
        "",
        "![accuracy against latency](pareto.png)",
        "",
    ]
    atomic_write(paths["report.md"], "\n".join(lines))
    return paths | {"family": family}
