"""What a user reads of a run: a search's Pareto family as CSV and JSON, every trial, a Markdown
report and a plot; an ablation's table as CSV, Markdown and a plot."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # a figure without pyplot: no global backend or state of the user's

from lglsearch._files import atomic_savefig, atomic_write, atomic_write_json
from lglsearch.cost.pricing import whole_network_lines
from lglsearch.cost.table import HOST
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

if TYPE_CHECKING:  # ablate writes its report through this module
    from lglsearch.ablate import Ablation

__all__ = ["write_ablation_report", "write_search_report"]


def _finetuned(steps: int | None, repeats: int | None) -> str:
    if not steps:
        return ""
    mean = f" (the mean of {repeats} fine-tunings on other batches)" if repeats and repeats > 1 else ""
    return f"each arch's inherited weights fine-tuned {steps} steps on their own{mean}, "


def _number(value: Any, spec: str = ".2f", *, signed: bool = False, unit: str = "", missing: str = "-") -> str:
    """A value as the reports print it: a float by `spec` (with its sign if `signed`) and `unit`, NaN
    or None as `missing`, anything else as its text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if not isinstance(value, float):
        return str(value)
    return format(value, ("+" if signed else "") + spec) + unit


def _markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    # a "|" inside a cell would end it
    rows = [
        "| " + " | ".join(_number(v).replace("|", "/") for v in row) + " |" for row in frame.itertuples(index=False)
    ]
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


def _whole_network_lines(model: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """How the table's phone model does on whole networks measured on a phone, and what it priced as what."""
    if not model:  # a measured table: its validation speaks for it
        return []
    lines = [f"  - {line}." for line in whole_network_lines((model.get("errors") or {}).get("whole_networks"))]
    blocks = (model.get("errors") or {}).get("reference_blocks") or {}
    if blocks.get("by_class"):
        shares = ", ".join(f"{c} {100 * v['within_20pct']:.0f}%" for c, v in sorted(blocks["by_class"].items()))
        lines.append(f"  - the phone's reference blocks, {blocks['split']}: within +-20% {shares}.")
    priced_as = sorted(
        {
            f"{kind} as {e['priced_as']}"
            for c in (meta.get("coverage") or {}).values()
            for kind, e in (c.get("by_type") or {}).items()
            if "priced_as" in e
        }
    )
    if priced_as:
        lines.append(f"  - kernel types the fit never saw, priced as another: {', '.join(priced_as)}.")
    return lines


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
    lines += _whole_network_lines(model, meta)
    energy = meta.get("energy") or {}
    if energy.get("method") == "modelled":
        basis = f"; {energy['power_method']}" if energy.get("power_method") else ""
        lines.append(
            f"- Energy: modelled, not measured: {energy.get('formula')}, {energy.get('power_w')} W "
            f"({energy.get('power_source')}){basis}. Latency times one power figure is a rescaling of latency: "
            "as a search objective it adds nothing to latency until a table has measured energy."
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
    shown = front.assign(arch=[str(Arch.from_json(a)).split(": ", 1)[1] for a in front["arch"]])
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


# -- an ablation ---------------------------------------------------------------------------------


def write_ablation_report(ablation: Ablation) -> dict[str, Path]:
    """Write ablation.csv, ablation.md and ablation.png into the study's directory; return their paths."""
    paths = {kind: ablation.directory / f"ablation.{kind}" for kind in ("csv", "md", "png")}
    atomic_write(paths["csv"], ablation.rows.to_csv(index=False, float_format="%.6g"))
    _ablation_markdown(ablation, paths["md"])
    _ablation_plot(ablation, paths["png"])
    return paths


def _cell(value: Any, spec: str = ".2f", **how: Any) -> str:
    """An ablation table's cell: empty where there is no number (a skipped variant)."""
    return _number(value, spec, missing="", **how)


def _delta(points: float, se: float) -> str:
    """A difference in top-1 points, said to be no difference when within two standard errors."""
    text = _cell(points, signed=True)
    if text and se > 0 and not distinguishable(points, se):
        text += f" (within 2 se = {CLAIM_SE * se:.2f}: not distinguishable on this proxy)"
    return text


def _ablation_markdown(ablation: Ablation, path: Path) -> None:
    """The table with deltas against the base, and where every number comes from."""
    m, rows = ablation.meta, ablation.rows
    base = rows["variant"].iloc[0]  # the study's first row (ablate.variants)
    header = [
        "variant",
        "change",
        "top-1 % (± se)",
        "Δ top-1 (pts)",
        f"latency ms ({m['device']})",
        "Δ latency",
        "energy mJ",
        "Δ energy",
        "params M",
        "GMACs",
        "host ms",
        "status",
    ]
    cells = [
        [
            f"**{r.variant}**" if r.variant == base else r.variant,
            r.change,
            _cell(100 * r.accuracy) + (f" ± {100 * r.accuracy_se:.2f}" if r.accuracy_se > 0 else ""),
            _delta(r.d_accuracy_pts, r.d_accuracy_se_pts),
            _cell(r.latency_ms),
            _cell(r.d_latency_pct, ".1f", signed=True, unit="%"),
            _cell(r.energy_mj),
            _cell(r.d_energy_pct, ".1f", signed=True, unit="%"),
            _cell(r.params_m, ".3f"),
            _cell(r.macs_g, ".3f"),
            _cell(r.host_ms),
            f"skipped: {r.reason}" if r.status == "skipped" else r.status,
        ]
        for r in rows.itertuples(index=False)
    ]
    lines = [
        f"# Ablation `{m['study']}` of {m['base']} on {m['device']}",
        "",
        _markdown_table(pd.DataFrame(cells, columns=header)),
        "",
        "## Provenance",
        "",
        *_ablation_provenance(m),
        "",
    ]
    atomic_write(path, "\n".join(lines))


def _ablation_provenance(m: dict[str, Any]) -> list[str]:
    t, energy, recipe = m["table"], m["energy"], m["recipe"]
    power = f" at {energy['power_w']} W ({energy.get('power_source')})" if "power_w" in energy else ""
    steps = f", at most {recipe['max_steps_per_epoch']} steps an epoch" if recipe["max_steps_per_epoch"] else ""
    if not m["added_keys"]:
        added = "Every op key of the variants was in the table."
    elif m["device"] == HOST:
        added = f"{m['added_keys']} op key(s) of the variants were missing from the host table and were measured first."
    else:
        errors = ", ".join(f"{c} {100 * h['mape']:.1f}%" for c, h in sorted(m["heldout"].items())) or "not stored"
        added = (
            f"{m['added_keys']} op key(s) of the variants were missing from the table and were derived with its "
            f"stored {m.get('phone_model') or 'phone'} model, as `lglsearch lut derive` does (held-out MAPE per op "
            f"class: {errors})."
        )
    training = (
        "each variant trained stand-alone from scratch"
        if m["train"] == "standalone"
        else "one weight-sharing supernet over the smallest space holding every variant (sandwich rule, "
        f"{recipe['n_random']} random arch(s) a step), BatchNorm recalibrated per variant"
    )
    return [
        f"- Base: {m['base']}, {m['base_arch']}. Latency, energy, parameters, MACs and host latency are of "
        "the deploy network; top-1 is on the proxy task.",
        f"- Device latency: the {m['device']} table, {t.get('method')}: {t.get('description')}; "
        f"{t.get('runtime')}, {t.get('threads')} thread(s). Source: {t.get('source')}.",
        f"- {added}",
        f"- Energy: {energy.get('method', 'none')}{power}" + (f" ({energy['why']})" if "why" in energy else "") + ".",
        f"- Host latency: the whole model measured on this machine: {m['host']}.",
        f"- Training: {training}; {recipe['epochs']} epoch(s){steps}, batch {recipe['batch_size']}, AdamW "
        f"lr {recipe['lr']}, weight decay {recipe['weight_decay']}, cosine schedule with {recipe['warmup_epochs']} "
        f"warm-up epoch(s), at {recipe['resolution']} px; top-1 on the validation split, ± one standard error "
        "of its size; a difference within two standard errors is not distinguishable. One training seed per "
        "variant: the seed-to-seed spread of training (benchmarks/RESULTS.md) is not in the error.",
        f"- Data: {m['data']}.",
        f"- Seed: {m['seed']} (the same for every variant).",
        f"- Wall time of training and evaluation: {m['wall_s'] / 60:.1f} min.",
    ]


def _ablation_plot(ablation: Ablation, path: Path) -> None:
    """Accuracy against device latency, one labelled point per trained variant, the base highlighted."""
    m = ablation.meta
    done = ablation.rows[ablation.rows["status"] == "done"]
    fig = Figure(figsize=(7, 5), dpi=120)
    ax = fig.add_subplot()
    is_base = done["variant"] == ablation.rows["variant"].iloc[0]  # the study's first row (ablate.variants)
    others, base = done[~is_base], done[is_base]
    ax.scatter(others["latency_ms"], 100 * others["accuracy"], color="tab:blue", zorder=2)
    ax.scatter(base["latency_ms"], 100 * base["accuracy"], color="tab:red", marker="*", s=220, zorder=3, label="base")
    # variants often land close together (e.g. the two upsamplings): stack their labels downwards
    span_x = max(float(np.ptp(done["latency_ms"])), 1e-9)
    span_y = max(float(np.ptp(100 * done["accuracy"])), 1e-9)
    placed: list[tuple[float, float]] = []
    for r in done.sort_values("latency_ms").itertuples(index=False):
        x, y = r.latency_ms, 100 * r.accuracy
        near = sum(abs(x - px) < 0.12 * span_x and abs(y - py) < 0.05 * span_y for px, py in placed)
        placed.append((x, y))
        ax.annotate(r.variant, (x, y), textcoords="offset points", xytext=(5, 4 - 10 * near), fontsize=8)
    ax.set_xlabel(f"latency on {m['device']} (ms)")
    ax.set_ylabel("proxy top-1 (%)")
    ax.set_title(f"Ablation {m['study']} of {m['base']} ({m['train']} training)")
    ax.margins(x=0.15, y=0.1)  # room for the labels
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    atomic_savefig(fig, path)
