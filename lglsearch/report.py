"""A search's outputs: the Pareto family as CSV and JSON, every trial, a Markdown report and a plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import pandas as pd

from lglsearch.search.pareto import COLUMNS, REFINED_COLUMNS, dominating, front_frame, hypervolume, trials_frame
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
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    evaluated = trials[trials["state"] == "COMPLETE"]
    inherited = " (inherited weights)" if run.refined else ""
    ax.scatter(
        evaluated["latency_ms"], 100 * evaluated["accuracy"], s=12, c="0.65", label=f"evaluated archs{inherited}"
    )
    if not front.empty:
        label = "Pareto front, refined (fine-tuned)" if run.refined else "Pareto front"
        ax.step(front["latency_ms"], 100 * front["accuracy"], where="post", c="C3", lw=1.2)
        ax.scatter(front["latency_ms"], 100 * front["accuracy"], s=28, c="C3", label=label, zorder=3)
    presets = run.presets[run.presets["accuracy"].notna()]
    if not presets.empty:
        ax.scatter(presets["latency_ms"], 100 * presets["accuracy"], marker="*", s=140, c="C0", label="presets")
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
    fig.savefig(path)
    plt.close(fig)


def _provenance(run: SearchRun) -> list[str]:
    meta, prov = run.table.meta, run.provenance
    lines = [
        f"- Latency: {meta.get('device')} table, method `{meta.get('method')}`: {meta.get('description')}; "
        f"{meta.get('runtime')}, {meta.get('threads')} thread(s), {meta.get('precision')}.",
        f"- Source of the measurements: {meta.get('source', 'not recorded')}.",
    ]
    for op_class, v in sorted((meta.get("transfer") or {}).get("heldout", {}).items()):
        lines.append(
            f"  - held-out transfer error, {op_class}: {100 * v['within_10pct']:.0f}% within +-10%, "
            f"MAPE {100 * v['mape']:.1f}% ({v['n']} blocks)"
        )
    energy = meta.get("energy") or {}
    if energy.get("method") == "modelled":
        lines.append(
            f"- Energy: modelled, not measured: {energy.get('formula')}, {energy.get('power_w')} W "
            f"({energy.get('power_source')})."
        )
    else:
        lines.append(f"- Energy: none on this device ({energy.get('why', 'the table has no energy_mj')}).")
    tuned = _finetuned(prov.get("finetune_steps"), prov.get("finetune_repeats"))
    lines.append(
        f"- Accuracy: proxy top-1 inherited from the weight-sharing supernet at {prov.get('supernet')} "
        f"({prov.get('supernet_epochs')} epoch(s), {prov.get('data')}, {prov.get('supernet_resolution')} px), "
        f"{tuned}BatchNorm recalibrated per arch. It ranks archs on the proxy task; it is not ImageNet accuracy."
    )
    refined = prov.get("refined")
    if refined:
        lines.append(
            f"- Refined: the {refined['archs']} best archs (by non-domination rank, their inherited validation "
            "cross-entropy in place of top-1) and the presets in the space "
            f"were scored again, {_finetuned(refined['finetune_steps'], refined['finetune_repeats'])}"
            "and the family is the Pareto front of those by their refined validation cross-entropy, which ranks "
            "archs closer to stand-alone training than top-1 (`refined.json`; benchmarks/RESULTS.md)."
        )
    return lines


def _refined_title(run: SearchRun) -> str:
    return f", the front of the {len(run.refined)} archs scored again after fine-tuning" if run.refined else ""


def write_search_report(run: SearchRun) -> dict[str, Path]:
    """Write pareto.csv/.json, trials.csv, family/<arch id>.json, report.md and pareto.png; return their paths."""
    out = run.out
    trials, front = trials_frame(run.study), front_frame(run.study, run.refined)
    extra = REFINED_COLUMNS if run.refined else ()
    paths = {name: out / name for name in ("pareto.csv", "pareto.json", "trials.csv", "report.md", "pareto.png")}
    front.to_csv(paths["pareto.csv"], index=False)
    members = [
        {**{k: row[k] for k in ("arch_id", *COLUMNS, *extra)}, "arch": json.loads(row["arch"])}
        for _, row in front.iterrows()
    ]
    paths["pareto.json"].write_text(
        json.dumps(
            {"objectives": list(run.objectives), "provenance": run.provenance, "family": members}, indent=2, default=str
        )
    )
    trials.to_csv(paths["trials.csv"], index=False)
    family = out / "family"
    family.mkdir(exist_ok=True)
    for member in members:
        (family / f"{member['arch_id']}.json").write_text(json.dumps(member["arch"], indent=2) + "\n")
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
    shown = shown.assign(accuracy=100 * shown["accuracy"]).rename(columns={"accuracy": "top-1 %"})
    if run.refined:
        inherited = 100 * shown.pop("inherited_accuracy")
        shown.insert(2, "inherited top-1 %", inherited)
        shown.insert(2, "refined val loss", shown.pop("refined_loss"))
        shown = shown.rename(columns={"top-1 %": "refined top-1 %"})
    preset_rows = []
    for _, preset in run.presets.iterrows():
        best = dominating(front, preset, run.objectives)
        preset_rows.append(
            {
                "preset": preset["name"],
                ("refined top-1 %" if run.refined else "top-1 %"): 100 * preset["accuracy"]
                if preset["in_space"]
                else "outside the space",
                **{c: preset.get(c, math.nan) for c in COLUMNS[1:]},
                "dominated by": "none found"
                if best is None
                else f"{best['arch_id']} ({100 * best['accuracy']:.2f}%, {best['latency_ms']:.2f} ms)",
            }
        )
    lines = [
        f"# lglsearch: the {run.space.name} space on {run.table.device}" + (f", {budget}" if budget else ""),
        "",
        f"{evaluated} archs evaluated, {int(states.get('PRUNED', 0))} proposals over budget priced and rejected "
        f"without evaluation; sampler `{run.study.sampler.__class__.__name__}`, objectives "
        f"{', '.join(run.objectives)}; {run.provenance.get('workers')} worker(s); this session's wall time "
        f"{run.seconds:.0f} s.",
        f"Hypervolume of the front in accuracy x latency (Optuna's; reference point {ref_text}): "
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
    paths["report.md"].write_text("\n".join(lines))
    return paths | {"family": family}
