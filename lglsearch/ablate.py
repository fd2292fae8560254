"""Ablation studies of the LGL block: variants of one base arch, trained alike, priced alike.

A study turns a base `Arch` into named variants that each change one thing (`variants`, pure):

- ``lgl-components``: the LGL block without LocalAgg (every ``lgl`` block becomes ``global``),
  without global sparse attention (every attention block becomes ``local``), the propagation by
  ``nearest`` or ``bilinear`` upsampling instead of the transposed conv, the delegates by ``avg``
  or ``max`` pooling instead of strided picking.
- ``sampling-rate``: every other sampling rate of each stage with attention that divides the
  stage's grid at the deploy and at the training resolution (plus the space's choices, which are
  skipped with the reason when the training grid cannot take them).
- ``placement``: LGL blocks everywhere, only in the last two stages, alternating with local
  blocks, only as the last block of each stage (depths, widths, heads and sr kept).
- ``all``: every study above, one base.

Since an `Arch` is canonical, a change can do nothing to a given base (no sparse attention means
no sampler to swap) or give the network of another variant; such variants are kept as skipped
rows with the reason instead of being trained twice.

`run_ablation` prices every variant first (device table, with missing op keys derived from the
phone's stored transfer model or measured on the host; parameters, MACs; the whole deploy model
timed here in onnxruntime, all variants interleaved), then trains each one with the same budget
and seed (stand-alone, or one supernet over a space holding all variants) and writes each finished
variant to ``results.json`` at once, so an interrupted study resumes where it stopped. The run
directory keeps its arguments (``run.json``); a rerun with other arguments is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lglsearch.cost.devices import get_table
from lglsearch.cost.ops import arch_ops
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import HOST, CostTable, table_path
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.io import atomic_savefig, atomic_write
from lglsearch.nn import build_model
from lglsearch.search.pareto import CLAIM_SE, distinguishable
from lglsearch.space import BLOCK_KINDS, PROPAGATIONS, SAMPLERS, Arch, Space, Stage, grid_sizes, load_space
from lglsearch.train.data import ImageData, load_data
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.scoring import measure, proxy_score
from lglsearch.train.standalone import train_standalone
from lglsearch.train.supernet import train_supernet

__all__ = [
    "STUDIES",
    "TRAININGS",
    "Ablation",
    "Variant",
    "run_ablation",
    "run_dir",
    "variant_space",
    "variants",
    "write_csv",
    "write_markdown",
    "write_plot",
]

STUDIES = ("lgl-components", "sampling-rate", "placement", "all")
TRAININGS = ("standalone", "supernet")
BASE = "base"
RESULTS, RUN = "results.json", "run.json"
COLUMNS = [
    "variant",
    "study",
    "change",
    "status",
    "reason",
    "arch_id",
    "accuracy",
    "accuracy_se",
    "d_accuracy_pts",
    "d_accuracy_se_pts",
    "latency_ms",
    "d_latency_pct",
    "energy_mj",
    "d_energy_pct",
    "params_m",
    "macs_g",
    "host_ms",
    "train_s",
    "arch",
]


@dataclass(frozen=True)
class Variant:
    """One row of a study: `arch` is None when the change cannot be made to the base."""

    name: str
    study: str
    change: str
    arch: Arch | None
    skip: str | None = None


# -- the studies: pure functions of the base ----------------------------------------------------


def _with_kinds(base: Arch, kinds: Callable[[int, int, str], str]) -> Arch:
    """`base` with block j of stage i of kind `kinds(i, j, kind)`; everything else kept."""
    stages = tuple(
        dataclasses.replace(st, kinds=tuple(kinds(i, j, k) for j, k in enumerate(st.kinds)))
        for i, st in enumerate(base.stages)
    )
    return base.replace(stages=stages)


def _components(base: Arch) -> Iterator[tuple[str, str, Callable[[], Arch]]]:
    yield (
        "no-local-agg",
        "every lgl block becomes global (SelfAttn only)",
        lambda: _with_kinds(base, lambda i, j, k: "global" if k == "lgl" else k),
    )
    yield (
        "no-global-attn",
        "every lgl/global block becomes local (LocalAgg only)",
        lambda: _with_kinds(base, lambda i, j, k: "local"),
    )
    for p in PROPAGATIONS:
        if p != base.propagation:
            yield f"prop-{p}", f"propagation {base.propagation} -> {p}", lambda p=p: base.replace(propagation=p)
    for s in SAMPLERS:
        if s != base.sampler:
            yield f"delegate-{s}", f"delegates by {base.sampler} -> {s}", lambda s=s: base.replace(sampler=s)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _sampling_rates(
    base: Arch, space: Space | None, train_resolution: int | None
) -> Iterator[tuple[str, str, Callable[[], Arch]]]:
    train_grids = grid_sizes(train_resolution or base.resolution, len(base.stages))
    for i, (st, grid, train_grid) in enumerate(zip(base.stages, base.grids, train_grids, strict=True)):
        if not st.has_attention:
            continue  # no attention, no sampling rate
        # rates both grids take, plus the space's choices (those the training grid refuses show why)
        rates = {r for r in _divisors(grid) if train_grid % r == 0}
        if space is not None:
            rates |= set(space.stages[i].sr)
        for r in sorted(rates - {st.sr}):

            def build(i: int = i, r: int = r) -> Arch:
                stages = list(base.stages)
                stages[i] = dataclasses.replace(stages[i], sr=r)
                return base.replace(stages=tuple(stages))

            yield f"s{i + 1}-sr{r}", f"stage {i + 1} sr {st.sr} -> {r}", build


def _placements(base: Arch) -> Iterator[tuple[str, str, Callable[[], Arch]]]:
    n = len(base.stages)
    starts = [sum(base.depths[:i]) for i in range(n)]  # index of each stage's first block in the net
    yield "lgl-everywhere", "every block lgl", lambda: _with_kinds(base, lambda i, j, k: "lgl")
    yield (
        "lgl-late",
        "lgl in the last two stages, local before",
        lambda: _with_kinds(base, lambda i, j, k: "lgl" if i >= n - 2 else "local"),
    )
    yield (
        "lgl-alternating",
        "lgl and local blocks alternate through the network, lgl first",
        lambda: _with_kinds(base, lambda i, j, k: "lgl" if (starts[i] + j) % 2 == 0 else "local"),
    )
    yield (
        "lgl-last",
        "the last block of each stage lgl, the others local",
        lambda: _with_kinds(base, lambda i, j, k: "lgl" if j == base.depths[i] - 1 else "local"),
    )


def variants(
    study: str, base: Arch, space: Space | None = None, *, train_resolution: int | None = None
) -> list[Variant]:
    """The base and the variants of `study` (pure, fast). Variants that cannot be built, cannot be
    trained at `train_resolution`, or equal the base or an earlier variant are marked skipped."""
    if study not in STUDIES:
        raise LglsearchError(f"unknown study {study!r}; the studies are: {', '.join(STUDIES)}")
    if space is not None:
        space.validate(base)
    if train_resolution is not None:
        try:
            base.replace(resolution=train_resolution)
        except LglsearchError as err:
            raise LglsearchError(
                f"the base cannot be trained at resolution {train_resolution} ({err}); "
                "pick another training resolution (--resolution)"
            ) from None
    makers = {
        "lgl-components": lambda: _components(base),
        "sampling-rate": lambda: _sampling_rates(base, space, train_resolution),
        "placement": lambda: _placements(base),
    }
    studies = [s for s in STUDIES[:-1] if study in (s, "all")]
    out = [Variant(BASE, BASE, "the base network", base)]
    seen: dict[Arch, str] = {base: BASE}
    for name in studies:
        for label, change, build in makers[name]():
            try:
                arch = build()
            except LglsearchError as err:
                out.append(Variant(label, name, change, None, f"invalid for this base: {err}"))
                continue
            skip = None
            if arch in seen:
                skip = f"same network as {seen[arch]}"
            elif train_resolution is not None:
                try:
                    arch.replace(resolution=train_resolution)
                except LglsearchError as err:
                    skip = f"cannot be trained at resolution {train_resolution}: {err}"
            seen.setdefault(arch, label)
            out.append(Variant(label, name, change, arch, skip))
    if all(v.skip for v in out[1:]):
        reasons = "; ".join(f"{v.name}: {v.skip}" for v in out[1:]) or "the study makes no variant"
        raise LglsearchError(
            f"study {study} leaves no variant of arch {base.id} to train ({reasons}); pick a base with "
            "LGL blocks and sparse attention, or another study"
        )
    return out


def variant_space(archs: Sequence[Arch], *, name: str = "ablation") -> Space:
    """The space of per-stage choices that holds every arch of `archs` (what a supernet must cover)."""
    first = archs[0]

    def union(values: Any, fallback: Any = None) -> list:
        found = sorted(set(values))
        return found or [fallback]

    stages = []
    for i in range(len(first.stages)):
        column: list[Stage] = [a.stages[i] for a in archs]
        attention = [s for s in column if s.has_attention]  # sr and heads mean nothing elsewhere
        stages.append(
            {
                "depth": union(s.depth for s in column),
                "width": union(s.width for s in column),
                "heads": union((s.heads for s in attention), 1),
                "sr": union((s.sr for s in attention), 1),
                "mlp_ratio": union(s.mlp_ratio for s in column),
                "kinds": [k for k in BLOCK_KINDS if any(k in s.kinds for s in column)],
            }
        )
    sparse = [a for a in archs if any(s.has_sparse_attention for s in a.stages)] or [first]
    return Space.from_dict(
        {
            "name": name,
            "description": f"the smallest space holding the {len(archs)} archs of an ablation",
            "resolution": first.resolution,
            "num_classes": first.num_classes,
            "sampler": [s for s in SAMPLERS if any(a.sampler == s for a in sparse)],
            "propagation": [p for p in PROPAGATIONS if any(a.propagation == p for a in sparse)],
            "stages": stages,
        },
        source=f"<{name}>",
    )


# -- pricing ------------------------------------------------------------------------------------


def _lacking(device: str, keys: Sequence[str]) -> list[str]:
    """The keys `device`'s table lacks now; an unknown device or a broken table is an error."""
    if device == HOST and not table_path(HOST).with_suffix(".json").is_file():
        return sorted(set(keys))  # built on first use
    return CostTable.load(device).missing(keys)


def _host_ms(archs: Sequence[Arch], runner: OrtRunner) -> dict[str, float]:
    """Median whole-model latency of each deploy arch here, all timed in the same interleaved rounds."""
    timings = runner.time({a.id: (build_model(a), (1, 3, a.resolution, a.resolution)) for a in archs})
    return {name: t.median_ms for name, t in timings.items()}


# -- the run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """A finished study: a row per variant (`COLUMNS`), its run directory and its provenance."""

    rows: pd.DataFrame
    directory: Path
    meta: dict[str, Any]


def run_dir(study: str, base_label: str, device: str) -> Path:
    """The default run directory of a study."""
    return Path("runs") / f"ablate-{study}-{base_label}-{device}"


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"lglsearch ablate: {message}", file=sys.stderr)


def _check_arguments(directory: Path, arguments: dict[str, Any]) -> None:
    """Record the run's arguments, or refuse a directory that holds a run with other arguments."""
    path = directory / RUN
    if path.exists():
        corrupt = f"{path} is corrupt; delete the directory {directory} to start over"
        try:
            stored = json.loads(path.read_text())["arguments"]
        except OSError as err:  # the file system, not the file: nothing to delete
            raise LglsearchError(f"cannot read {path} ({err.strerror or err}); it is left as it is") from None
        except (ValueError, KeyError, TypeError):  # ValueError: not JSON, or not text
            raise LglsearchError(corrupt) from None
        if not isinstance(stored, dict):
            raise LglsearchError(corrupt)
        differ = sorted(k for k in arguments.keys() | stored.keys() if arguments.get(k) != stored.get(k))
        if differ:
            raise LglsearchError(
                f"{directory} holds an ablation run with other arguments ({', '.join(differ)} differ); "
                "rerun with the same arguments to resume, or pass another --out"
            )
        return
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write(path, json.dumps({"arguments": arguments, "created": created}, indent=2) + "\n")


def _load_results(directory: Path) -> dict[str, Any]:
    path = directory / RESULTS
    if not path.exists():
        return {"priced": {}, "trained": {}, "supernet_s": 0.0, "added_keys": []}
    corrupt = f"{path} is corrupt; delete it to train every variant again"
    try:
        results = json.loads(path.read_text())
    except OSError as err:  # the file system, not the file: nothing to delete
        raise LglsearchError(f"cannot read {path} ({err.strerror or err}); it is left as it is") from None
    except ValueError:  # not JSON, or not text
        raise LglsearchError(corrupt) from None
    if not isinstance(results, dict) or not all(isinstance(results.get(k), dict) for k in ("priced", "trained")):
        raise LglsearchError(corrupt)
    return results


def _save_results(directory: Path, results: dict[str, Any]) -> None:
    atomic_write(directory / RESULTS, json.dumps(results, indent=2) + "\n")


def run_ablation(
    study: str,
    base: Arch,
    *,
    device: str,
    out: Path,
    space: Space | None = None,
    train: str = "standalone",
    config: TrainConfig | None = None,
    base_label: str | None = None,
    runner: OrtRunner | None = None,
    progress: bool = True,
) -> Ablation:
    """Price and train every variant of `study` (resuming from `out`), then write the outputs."""
    config = config or TrainConfig()
    if train not in TRAININGS:
        raise LglsearchError(f"unknown training {train!r}; use one of {', '.join(TRAININGS)}")
    if config.epochs < 1:
        raise LglsearchError(f"epochs must be >= 1, got {config.epochs}")
    space = space or load_space()
    found = variants(study, base, space, train_resolution=config.resolution)
    runnable = [v for v in found if v.skip is None]
    # fail early: device and data are checked before anything is written or trained
    keys = sorted({k for v in runnable for k in arch_ops(v.arch)})
    lacking = _lacking(device, keys)
    data = load_data(config.data, config.resolution)
    config = dataclasses.replace(config, space=None)
    arguments = {
        "study": study,
        "base": base.to_dict(),
        "space": space.to_dict(),
        "device": device,
        "train": train,
        "data_source": data.source,
        **{k: v for k, v in dataclasses.asdict(config).items() if k not in ("space", "data")},
    }
    out.mkdir(parents=True, exist_ok=True)
    _check_arguments(out, arguments)
    results = _load_results(out)

    table = get_table(device, keys, fill="derive", runner=runner, space_name="ablation")
    # remembered across resumes: the report says which costs are not straight from the table
    results["added_keys"] = sorted(set(results.get("added_keys", [])) | (set(lacking) - set(table.missing(keys))))
    _save_results(out, results)
    timer = runner or OrtRunner()  # whole models; the table's own keys keep the table's threads (runner=None)
    found = _price(found, table, results, timer, out, progress)
    runnable = [v for v in found if v.skip is None]
    trainer = _train_standalone if train == "standalone" else _train_supernet
    trainer(runnable, data, config, results, out, table.device, progress)

    label = base_label or base.id
    meta = _provenance(study, label, base, table, train, config, data, results, timer)
    rows = _rows(found, results)
    ablation = Ablation(rows, out, meta)
    write_csv(ablation, out / "ablation.csv")
    write_markdown(ablation, out / "ablation.md")
    write_plot(ablation, out / "ablation.png")
    _log(f"wrote {out / 'ablation.csv'}, ablation.md and ablation.png", progress)
    return ablation


def _price(
    found: list[Variant],
    table: CostTable,
    results: dict[str, Any],
    runner: OrtRunner,
    out: Path,
    progress: bool,
) -> list[Variant]:
    """Device cost, counts and host latency of every runnable variant; unpriceable ones are skipped."""
    priced = results["priced"]
    checked = []
    for v in found:
        if v.skip is None:
            try:
                table.cost(v.arch)
            except LglsearchError as err:
                if v.name == BASE:
                    raise
                v = dataclasses.replace(v, skip=f"cannot be priced on {table.device}: {err}")
        checked.append(v)
    todo = [v.arch for v in checked if v.skip is None and v.arch.id not in priced]
    if todo:
        _log(f"timing {len(todo)} whole model(s) on this machine (onnxruntime, interleaved)", progress)
        host = _host_ms(todo, runner)
        for arch in todo:
            latency, energy = table.cost(arch)
            counts = count(arch)
            priced[arch.id] = {
                "latency_ms": latency,
                "energy_mj": None if math.isnan(energy) else energy,
                "params_m": counts.params_m,
                "macs_g": counts.macs_g,
                "host_ms": host[arch.id],
            }
        _save_results(out, results)
    return checked


def _proxy(arch: Arch, config: TrainConfig, data: ImageData) -> Arch:
    return arch.replace(resolution=config.resolution, num_classes=data.num_classes)


def _report(i: int, n: int, v: Variant, results: dict[str, Any], device: str, progress: bool) -> None:
    trained, priced = results["trained"][v.arch.id], results["priced"][v.arch.id]
    _log(
        f"[{i}/{n}] {v.name}: top-1 {100 * trained['accuracy']:.2f}%, {priced['latency_ms']:.2f} ms on "
        f"{device}, host {priced['host_ms']:.2f} ms, {priced['macs_g']:.3f} GMACs ({trained['seconds']:.0f} s)",
        progress,
    )


def _train_standalone(
    runnable: list[Variant],
    data: ImageData,
    config: TrainConfig,
    results: dict[str, Any],
    out: Path,
    device: str,
    progress: bool,
) -> None:
    for i, v in enumerate(runnable, start=1):
        if v.arch.id in results["trained"]:
            _log(f"[{i}/{len(runnable)}] {v.name}: done before, kept", progress)
            continue
        _log(f"[{i}/{len(runnable)}] {v.name} ({v.change}): training stand-alone", progress)
        started = time.perf_counter()
        model = train_standalone(_proxy(v.arch, config, data), data, config, progress=progress)
        score = measure(model, data.val)
        results["trained"][v.arch.id] = {
            "accuracy": score.top1,
            "accuracy_se": score.top1_se,
            "seconds": time.perf_counter() - started,
        }
        _save_results(out, results)  # at once: an interruption loses at most the variant in training
        _report(i, len(runnable), v, results, device, progress)


def _train_supernet(
    runnable: list[Variant],
    data: ImageData,
    config: TrainConfig,
    results: dict[str, Any],
    out: Path,
    device: str,
    progress: bool,
) -> None:
    todo = [v for v in runnable if v.arch.id not in results["trained"]]
    if not todo:
        return
    # one supernet over the smallest space holding every variant, so all of them inherit weights
    space_file = out / "supernet-space.yaml"
    atomic_write(space_file, yaml.safe_dump(variant_space([v.arch for v in runnable]).to_dict(), sort_keys=False))
    _log(f"training one supernet over the {len(runnable)} variants ({space_file})", progress)
    started = time.perf_counter()
    trained = train_supernet(dataclasses.replace(config, space=str(space_file)), out / "supernet", progress=progress)
    results["supernet_s"] = results.get("supernet_s", 0.0) + time.perf_counter() - started
    _save_results(out, results)
    for i, v in enumerate(runnable, start=1):
        if v.arch.id in results["trained"]:
            continue
        started = time.perf_counter()
        score = proxy_score(trained.net, _proxy(v.arch, config, data), data, seed=config.seed)
        results["trained"][v.arch.id] = {
            "accuracy": score.top1,
            "accuracy_se": score.top1_se,
            "seconds": time.perf_counter() - started,
        }
        _save_results(out, results)
        _report(i, len(runnable), v, results, device, progress)


# -- outputs ------------------------------------------------------------------------------------


def _rows(found: list[Variant], results: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for v in found:
        row: dict[str, Any] = {
            "variant": v.name,
            "study": v.study,
            "change": v.change,
            "status": "skipped" if v.skip else "done",
            "reason": v.skip or "",
            "arch_id": v.arch.id if v.arch else "",
            "arch": v.arch.to_json() if v.arch else "",
        }
        if v.skip is None:
            priced, trained = results["priced"][v.arch.id], results["trained"][v.arch.id]
            energy = priced["energy_mj"]
            row |= {k: priced[k] for k in ("latency_ms", "params_m", "macs_g", "host_ms")}
            row |= {"energy_mj": math.nan if energy is None else energy}
            row |= {"accuracy": trained["accuracy"], "train_s": trained["seconds"]}
            row |= {"accuracy_se": trained.get("accuracy_se", math.nan)}  # (results from before it was kept)
        rows.append(row)
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    base = frame.iloc[0]
    frame["d_accuracy_pts"] = 100 * (frame["accuracy"] - base["accuracy"])
    # the standard error of a difference of two scores on as many images (independent errors: conservative)
    frame["d_accuracy_se_pts"] = 100 * np.sqrt(frame["accuracy_se"] ** 2 + base["accuracy_se"] ** 2)
    frame.loc[0, "d_accuracy_se_pts"] = math.nan
    frame["d_latency_pct"] = 100 * (frame["latency_ms"] / base["latency_ms"] - 1)
    frame["d_energy_pct"] = 100 * (frame["energy_mj"] / base["energy_mj"] - 1)
    return frame


def _provenance(
    study: str,
    label: str,
    base: Arch,
    table: CostTable,
    train: str,
    config: TrainConfig,
    data: ImageData,
    results: dict[str, Any],
    runner: OrtRunner,
) -> dict[str, Any]:
    import onnxruntime

    from lglsearch.cost.build import cpu_name

    seconds = sum(t["seconds"] for t in results["trained"].values()) + results.get("supernet_s", 0.0)
    return {
        "study": study,
        "base": label,
        "base_arch": str(base),
        "device": table.device,
        "table": {k: table.meta.get(k) for k in ("description", "method", "source", "runtime", "threads")},
        "added_keys": len(results.get("added_keys", [])),
        "heldout": (table.phone_model() or {}).get("heldout", {}),
        "energy": table.meta.get("energy", {}),
        "host": f"{cpu_name()}, onnxruntime {onnxruntime.__version__}, {runner.threads} thread(s), fp32, batch 1, "
        f"median of {runner.runs} runs in {runner.rounds} interleaved rounds",
        "train": train,
        "recipe": dataclasses.asdict(config),
        "data": data.source,
        "seed": config.seed,
        "wall_s": seconds,
    }


def write_csv(ablation: Ablation, path: Path) -> Path:
    atomic_write(path, ablation.rows.to_csv(index=False, float_format="%.6g"))
    return path


def _fmt(value: float, spec: str, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, ("+" if signed else "") + spec)


def _delta(points: float, se: float) -> str:
    """A difference in top-1 points, said to be no difference when within two standard errors."""
    text = _fmt(points, ".2f", signed=True)
    if text and se > 0 and not distinguishable(points, se):
        text += f" (within 2 se = {CLAIM_SE * se:.2f}: not distinguishable on this proxy)"
    return text


def write_markdown(ablation: Ablation, path: Path) -> Path:
    """The table with deltas against the base, and where every number comes from."""
    m, rows = ablation.meta, ablation.rows
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
    lines = [
        f"# Ablation `{m['study']}` of {m['base']} on {m['device']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows.itertuples(index=False):
        cells = [
            f"**{r.variant}**" if r.variant == BASE else r.variant,
            r.change,
            _fmt(100 * r.accuracy, ".2f") + (f" ± {100 * r.accuracy_se:.2f}" if r.accuracy_se > 0 else ""),
            _delta(r.d_accuracy_pts, r.d_accuracy_se_pts),
            _fmt(r.latency_ms, ".2f"),
            _fmt(r.d_latency_pct, ".1f", signed=True) + ("%" if not math.isnan(r.d_latency_pct) else ""),
            _fmt(r.energy_mj, ".2f"),
            _fmt(r.d_energy_pct, ".1f", signed=True) + ("%" if not math.isnan(r.d_energy_pct) else ""),
            _fmt(r.params_m, ".3f"),
            _fmt(r.macs_g, ".3f"),
            _fmt(r.host_ms, ".2f"),
            f"skipped: {r.reason}" if r.status == "skipped" else r.status,
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
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
            f"stored transfer model, as `lglsearch lut derive` does (held-out MAPE per op class: {errors})."
        )
    training = (
        "each variant trained stand-alone from scratch"
        if m["train"] == "standalone"
        else "one weight-sharing supernet over the smallest space holding every variant (sandwich rule, "
        f"{recipe['n_random']} random arch(s) a step), BatchNorm recalibrated per variant"
    )
    lines += [
        "",
        "## Provenance",
        "",
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
        "",
    ]
    atomic_write(path, "\n".join(lines))
    return path


def write_plot(ablation: Ablation, path: Path) -> Path:
    """Accuracy against device latency, one labelled point per trained variant, the base highlighted."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    m = ablation.meta
    done = ablation.rows[ablation.rows["status"] == "done"]
    fig = Figure(figsize=(7, 5), dpi=120)
    ax = fig.add_subplot()
    others = done[done["variant"] != BASE]
    base = done[done["variant"] == BASE]
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
    return path
