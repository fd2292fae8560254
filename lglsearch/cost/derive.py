"""Deriving a phone's table from that phone's real measurements of other blocks.

Two phone models price an EdgeViT op key from the phone's reference measurements (nn-Meter's
blocks); a table stores the one it was derived with, its fitted form and both of its errors.

- `kernel` (the default; `phone_kernels.py`): every block and op part as the kernels TFLite runs,
  a cost per kernel type fitted per op class on a class-stratified sample of the reference blocks.
  Nothing is timed on this machine.
- `transfer` (`transfer.py`): a class-stratified sample of the reference blocks and the parts of
  every op key are timed on this machine (host table keys `ref:<key>`, anchored and resumable),
  and a per-class host-to-phone model transfers each part's host time.

Then every op key's parts are checked against what the fit saw (`coverage`): a key priced outside
it is marked in the table (`outside_range`) and the share of such keys is in its metadata. Energy
of every row is modelled from the power-profile figure of the core the latency refers to
(`lglsearch.cost.power`, one method for every phone), and labelled modelled.

A failed derivation writes nothing: the table is saved once, whole, at the end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lglsearch.cost.build import host_table
from lglsearch.cost.coverage import COLUMN, kernel_coverage, part_features, range_coverage
from lglsearch.cost.joint import JointKernelModel, MeasuredSet
from lglsearch.cost.ops import op_parts
from lglsearch.cost.phone_kernels import PhoneKernelModel, reference_kernels
from lglsearch.cost.power import PhonePower, phone_power
from lglsearch.cost.reference import OP_CLASSES, load_reference, reference_class, reference_kind
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import CostTable, user_tables_dir
from lglsearch.cost.transfer import TransferModel
from lglsearch.errors import LglsearchError

__all__ = [
    "DEFAULT_PER_CLASS",
    "MODELS",
    "PHONES",
    "Phone",
    "derive_table",
    "with_coverage",
    "with_derived_keys",
]

MODELS = ("kernel", "transfer", "joint")
"""The phone models a table can be derived with (kernel is the default without measured networks,
joint with them; see the module docstring)."""

DEFAULT_PER_CLASS = {"kernel": 600, "transfer": 300, "joint": 600}
"""Reference blocks sampled per op class: the kernel model times nothing, the transfer times each."""

_NN_METER = (
    "nn-Meter (github.com/microsoft/nn-Meter, MIT License, Copyright (c) Microsoft Corporation), branch "
    "dev/hybrid-transformer, nn_meter/predictor/transformer_predictor/lut/*_lut_ln_v3.json (here {file}): "
    "Keras blocks as TFLite fp32, "
    "benchmark_model over adb, 1 thread, taskset 70, 10 warm-up + 50 runs, mean (builder defaults)"
)


@dataclass(frozen=True)
class Phone:
    phone: str
    soc: str
    cores: str


PHONES: dict[str, Phone] = {
    "snapdragon888": Phone("Xiaomi Mi 11", "Qualcomm Snapdragon 888", "one Cortex-A78 core (cores 4-6 by taskset 70)"),
    "snapdragon855": Phone(
        "Google Pixel 4",
        "Qualcomm Snapdragon 855",
        "one Kryo 485 Gold (Cortex-A76-based) core (cores 4-6)",
    ),
    "tensor-g1": Phone(
        "Google Pixel 6",
        "Google Tensor (G1)",
        "one of cores 4-6 (two Cortex-A76, one Cortex-X1) by taskset 70",
    ),
    "snapdragon821": Phone(
        "Google Pixel 1",
        "Qualcomm Snapdragon 821",
        "one Kryo core (taskset 70 names cores 4-6, which this 4-core SoC lacks: the cores used are not recorded)",
    ),
}
"""The phones of the shipped reference measurements (their power figures: `lglsearch.cost.power`)."""


def _with_modelled_energy(table: CostTable, power: PhonePower) -> CostTable:
    """`table` with every row's energy modelled from its latency (ms x W = mJ) and labelled so."""
    frame = table.frame.assign(energy_mj=table.frame["latency_ms"] * power.used.watts)
    return CostTable(table.device, frame, dict(table.meta, energy=power.to_meta()))


def _sample_reference(reference: dict[str, float], per_class: int, seed: int) -> list[str]:
    """Up to `per_class` keys of each op class, drawn with a seeded generator."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {c: [] for c in OP_CLASSES}
    for key in sorted(reference):
        by_class[reference_class(key)].append(key)
    sample = []
    for keys in by_class.values():
        take = min(per_class, len(keys))
        sample.extend(keys[i] for i in sorted(rng.choice(len(keys), take, replace=False)))
    return sample


PhoneModel = PhoneKernelModel | TransferModel | JointKernelModel

_READERS = {
    "kernel": PhoneKernelModel.from_dict,
    "transfer": TransferModel.from_dict,
    "joint": JointKernelModel.from_dict,
}


def _load_model(stored: Mapping[str, Any]) -> PhoneModel:
    return _READERS[stored["name"]](stored)


def _derive_keys(keys: Sequence[str], model: TransferModel, host: CostTable) -> pd.Series:
    """Phone latency (ms) of op keys by the transfer: each part's host time transferred with its class's model."""
    latency = {}
    for key in keys:
        total = 0.0
        for part, op_class in op_parts(key):
            features = part_features(part) | {"host_ms": host.op_latency(part)}
            total += float(model.predict(op_class, features)[0])
        latency[key] = total
    return pd.Series(latency, name="latency_ms")


def derive_table(
    device: str,
    keys: Sequence[str],
    *,
    reference_path: str | Path | None,
    space_name: str,
    model: str | None = None,
    runner: OrtRunner | None = None,
    per_class: int | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    out: Path | None = None,
    networks: Sequence[MeasuredSet] = (),
    runtime: str | None = None,
) -> CostTable:
    """A phone's table for `keys`; fits the phone model (`model`, default kernel, joint when given
    measured `networks`) when given the phone's reference file, else reuses the one stored with the
    device's existing table. `runtime` names which of the networks' runtimes the joint model prices."""
    if device not in PHONES:
        raise LglsearchError(f"no reference phone named {device!r}; derivable phones: {', '.join(PHONES)}")
    if model is not None and model not in MODELS:
        raise LglsearchError(f"unknown phone model {model!r}; models: {', '.join(MODELS)}")
    power = phone_power(device)  # a missing power figure stops it before any work
    if model == "joint" and not networks:
        raise LglsearchError(
            "the joint model is fitted on measured whole networks too; give them (--measured FILE.csv)"
        )
    if networks and model not in (None, "joint"):
        raise LglsearchError(f"measured networks are fitted by the joint model only, not the {model} model")
    if reference_path is not None:
        name = model or ("joint" if networks else "kernel")
        fitted, host, meta = _fit(
            device, name, Path(reference_path), keys, runner, per_class, holdout, seed, networks, runtime
        )
        table = _with_keys(CostTable.empty(device, meta), fitted, keys, space_name, power, runner=runner, host=host)
    else:
        table = CostTable.load(device)
        stored = table.phone_model()
        if model is not None and stored is not None and stored["name"] != model:
            raise LglsearchError(
                f"the {device} table was derived with the {stored['name']} model; to price it with the {model} "
                f"model, derive it again with --reference FILE --model {model}"
            )
        table = with_derived_keys(table, keys, space_name, runner=runner)
    table.meta["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    # a user's derived table goes to the user cache, where it shadows a shipped table of that name
    table.save((out or user_tables_dir()) / f"{device}.csv")
    return table


def with_derived_keys(
    table: CostTable, keys: Sequence[str], space_name: str, *, runner: OrtRunner | None = None
) -> CostTable:
    """A derived table holding `keys`, those it lacked priced with its stored phone model, in memory
    (the caller decides whether to save it), checked against the fit and with energy modelled."""
    stored = table.phone_model()
    if stored is None:
        raise LglsearchError(f"the {table.device} table has no stored phone model; derive it with --reference FILE")
    return _with_keys(table, _load_model(stored), keys, space_name, phone_power(table.device), runner=runner)


def _with_keys(
    table: CostTable,
    fitted: PhoneModel,
    keys: Sequence[str],
    space_name: str,
    power: PhonePower,
    *,
    runner: OrtRunner | None = None,
    host: CostTable | None = None,
) -> CostTable:
    missing = table.missing(keys)
    if missing:
        if not isinstance(fitted, TransferModel):
            table = table.with_rows(fitted.price_keys(missing).to_frame())
        else:  # only the parts of missing keys are timed: remodelling a whole table's energy times nothing
            host = host or host_table(_host_keys(missing), runner=runner)
            table = table.with_rows(_derive_keys(missing, fitted, host).to_frame())
    table = _with_modelled_energy(with_coverage(table, keys, space_name, host, model=fitted), power)
    if space_name not in table.meta.get("spaces", []):
        table.meta["spaces"] = [*table.meta.get("spaces", []), space_name]
    return table


def _fit(
    device: str,
    name: str,
    reference_path: Path,
    keys: Sequence[str],
    runner: OrtRunner | None,
    per_class: int | None,
    holdout: float,
    seed: int,
    networks: Sequence[MeasuredSet] = (),
    runtime: str | None = None,
) -> tuple[PhoneModel, CostTable | None, dict[str, Any]]:
    """(the fitted model, the host table it timed or None, the new table's metadata)."""
    if not 0 < holdout < 1:
        raise LglsearchError(f"--holdout must be in (0, 1), got {holdout}")
    per_class = per_class or DEFAULT_PER_CLASS[name]
    needed = (TransferModel.pairs_needed if name == "transfer" else PhoneKernelModel.blocks_needed)(holdout)
    if per_class < needed:
        raise LglsearchError(
            f"--per-class {per_class} is too few to fit a class and hold out {holdout:g} of it; "
            f"use --per-class {needed} or more (default {DEFAULT_PER_CLASS[name]})"
        )
    reference = load_reference(reference_path)
    sample = _sample_reference(reference, per_class, seed)
    source = _NN_METER.format(file=reference_path.name)
    if name == "joint":
        blocks = [reference_kernels(k) for k in sample]
        joint = JointKernelModel.fit(blocks, [reference[k] for k in sample], networks, runtime=runtime)
        counts = ", ".join(f"{n} networks on {r}" for r, n in joint.sources["networks"].items())
        how = f"; priced per kernel by lglsearch's joint kernel model fitted on {len(sample)} blocks and {counts}"
        meta = _meta(device, source + how, joint.to_dict(), len(sample))
        return joint, None, meta | {"runtime": f"TFLite fp32, priced as {joint.runtime} (see the model's factors)"}
    if name == "kernel":
        fitted = PhoneKernelModel.fit(reference, sample, holdout=holdout, seed=seed)
        how = f"; priced per kernel with lglsearch's per-class kernel model fitted on {len(sample)} of its blocks"
        return fitted, None, _meta(device, source + how, fitted.to_dict(), len(sample))
    ref_keys = [f"ref:{k}" for k in sample]
    host = host_table([*ref_keys, *_host_keys(keys)], runner=runner)
    pairs = pd.DataFrame(
        [
            part_features(r)
            | {"host_ms": host.op_latency(r), "phone_ms": reference[k]}
            | {"op_class": reference_class(k), "kind": reference_kind(k)}
            for k, r in zip(sample, ref_keys, strict=True)
        ]
    )
    transfer = TransferModel.fit(pairs, holdout=holdout, seed=seed)
    how = (
        f"; transferred with lglsearch's per-class model from {len(pairs)} pairs timed on "
        f"{host.meta.get('description', 'the host')} (onnxruntime {host.meta.get('runtime_version', '?')})"
    )
    return transfer, host, _meta(device, source + how, {"name": "transfer", **transfer.to_dict()}, len(pairs))


def with_coverage(
    table: CostTable,
    keys: Sequence[str],
    space_name: str,
    host: CostTable | None = None,
    *,
    model: PhoneModel | None = None,
) -> CostTable:
    """`table` with `keys` checked against what its stored phone model was fitted on: per key the
    count of things outside (column `outside_range`), and the space's summary in `meta["coverage"]`.
    A transfer table's host times come from the host table as it stands (none measured: a part
    without one is left unchecked on host time, and the summary says so). `model` is the table's
    model when the caller holds it already (it is read from the metadata otherwise)."""
    if model is None:
        stored = table.phone_model()
        if stored is None:
            raise LglsearchError(f"the {table.device} table has no stored phone model to check its keys against")
        model = _load_model(stored)
    if not isinstance(model, TransferModel):
        outside, summary = kernel_coverage(model, keys)
    else:
        host = host or host_table(measure=False)
        host_ms = {part: host.op_latency(part) for part in _host_keys(keys) if part in host}
        outside, summary = range_coverage(model, keys, host_ms)
        summary["host"] = f"{host.meta.get('description', 'no host table')} ({host.meta.get('date', 'no timings')})"
    frame = table.frame.copy()
    frame.loc[outside.index, COLUMN] = outside
    meta = dict(table.meta, coverage={**table.meta.get("coverage", {}), space_name: summary})
    return CostTable(table.device, frame, meta)


def _host_keys(keys: Sequence[str]) -> list[str]:
    return sorted({part for key in keys for part, _ in op_parts(key)})


def _meta(device: str, source: str, model: dict[str, Any], n_blocks: int) -> dict[str, Any]:
    phone = PHONES[device]
    return {
        "description": f"{phone.phone} ({phone.soc}), {phone.cores}",
        "phone": phone.phone,
        "soc": phone.soc,
        "cores": phone.cores,
        "runtime": "TFLite fp32 benchmark_model (the reference measurements)",
        "runtime_version": "not recorded by the reference",
        "threads": 1,
        "precision": "fp32",
        "method": "derived",
        "source": source,
        "model": model,
        "reference_blocks": n_blocks,
    }
