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
(`lglsearch.cost._phone.power`, one method for every phone), and labelled modelled.

A failed derivation writes nothing: the table is saved once, whole, at the end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from lglsearch.cost._metrics import error_summary
from lglsearch.cost._phone.joint import JointKernelModel, MeasuredSet
from lglsearch.cost._phone.phone_kernels import PhoneKernelModel, heldout_mask, reference_kernels
from lglsearch.cost._phone.power import PhonePower, phone_power
from lglsearch.cost._phone.reference import OP_CLASSES, load_reference, reference_class, reference_kind
from lglsearch.cost._phone.transfer import TransferModel, host_keys, part_features
from lglsearch.cost.build import host_table
from lglsearch.cost.coverage import COLUMN
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import CostTable, user_tables_dir
from lglsearch.errors import LglsearchError

__all__ = [
    "DEFAULT_PER_CLASS",
    "MODELS",
    "PHONES",
    "Phone",
    "derive_table",
    "load_model",
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
"""The phones of the shipped reference measurements (their power figures: `lglsearch.cost._phone.power`)."""


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


class PhoneModel(Protocol):
    """What derives a phone's table: the per-class kernel model, the transfer, the joint model."""

    name: ClassVar[str]

    def price_keys(
        self, keys: Sequence[str], *, runner: OrtRunner | None = None, host: CostTable | None = None
    ) -> pd.Series:
        """Phone ms of op keys (a model that times its parts here takes `runner` or the `host` table)."""
        ...

    def coverage(self, keys: Sequence[str], *, host: CostTable | None = None) -> tuple[pd.Series, dict[str, Any]]:
        """Per key the count of things priced outside what the fit saw, and a summary."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


_MODEL_TYPES: dict[str, Any] = {m.name: m for m in (PhoneKernelModel, TransferModel, JointKernelModel)}


def load_model(stored: Mapping[str, Any]) -> PhoneModel:
    """A table's stored phone model, whichever it is."""
    return _MODEL_TYPES[stored["name"]].from_dict(stored)


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
    with_blocks: bool = True,
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
            device, name, Path(reference_path), keys, runner, per_class, holdout, seed, networks, runtime, with_blocks
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
    return _with_keys(table, load_model(stored), keys, space_name, phone_power(table.device), runner=runner)


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
    if missing:  # only missing keys are priced: remodelling a whole table's energy times nothing
        table = table.with_rows(fitted.price_keys(missing, runner=runner, host=host).to_frame())
    table = _with_modelled_energy(with_coverage(table, keys, space_name, host, model=fitted), power)
    if space_name not in table.meta.get("spaces", []):
        table.meta["spaces"] = [*table.meta.get("spaces", []), space_name]
    return table


@dataclass(frozen=True)
class _FitInputs:
    device: str
    reference: dict[str, float]
    sample: list[str]
    source: str
    keys: Sequence[str]
    runner: OrtRunner | None
    holdout: float
    seed: int
    networks: Sequence[MeasuredSet]
    runtime: str | None
    with_blocks: bool


def _fit_kernel(i: _FitInputs) -> tuple[PhoneModel, CostTable | None, dict[str, Any]]:
    fitted = PhoneKernelModel.fit(i.reference, i.sample, holdout=i.holdout, seed=i.seed)
    how = f"; priced per kernel with lglsearch's per-class kernel model fitted on {len(i.sample)} of its blocks"
    return fitted, None, _meta(i.device, i.source + how, fitted.to_dict(), len(i.sample))


def _fit_transfer(i: _FitInputs) -> tuple[PhoneModel, CostTable | None, dict[str, Any]]:
    ref_keys = [f"ref:{k}" for k in i.sample]
    host = host_table([*ref_keys, *host_keys(i.keys)], runner=i.runner)
    pairs = pd.DataFrame(
        [
            part_features(r)
            | {"host_ms": host.op_latency(r), "phone_ms": i.reference[k]}
            | {"op_class": reference_class(k), "kind": reference_kind(k)}
            for k, r in zip(i.sample, ref_keys, strict=True)
        ]
    )
    transfer = TransferModel.fit(pairs, holdout=i.holdout, seed=i.seed)
    how = (
        f"; transferred with lglsearch's per-class model from {len(pairs)} pairs timed on "
        f"{host.meta.get('description', 'the host')} (onnxruntime {host.meta.get('runtime_version', '?')})"
    )
    return transfer, host, _meta(i.device, i.source + how, transfer.to_dict(), len(pairs))


def _fit_joint(i: _FitInputs) -> tuple[PhoneModel, CostTable | None, dict[str, Any]]:
    blocks = [reference_kernels(k) for k in i.sample]
    block_ms = np.array([i.reference[k] for k in i.sample])
    classes = np.array([reference_class(k) for k in i.sample])
    counts = " and ".join(f"{len(s.kernels)} networks on {s.runtime}" for s in i.networks)
    if i.with_blocks:  # the kernel model's held-out draws: its blocks test both models alike
        test = heldout_mask(classes, i.holdout, i.seed)
        fit = np.flatnonzero(~test)
        joint = JointKernelModel.fit([blocks[j] for j in fit], block_ms[fit], i.networks, runtime=i.runtime)
        split = f"held out ({i.holdout:g} of each class's sample, not in the fit)"
        how = f"; priced per kernel by lglsearch's joint kernel model fitted on {len(fit)} blocks and {counts}"
    else:  # the phone's blocks are a test of a fit that never saw them
        test = np.ones(len(blocks), bool)
        joint = JointKernelModel.fit((), [], i.networks, runtime=i.runtime)
        split = "all of the sample (the fit saw no block)"
        how = f"; priced per kernel by lglsearch's joint kernel model fitted on {counts}; its blocks only checked"
    rows = np.flatnonzero(test)
    predicted = joint.predict([blocks[j] for j in rows])
    errors = {
        c: {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in error_summary(predicted[m], block_ms[rows][m]).items()
        }
        for c in OP_CLASSES
        if (m := classes[rows] == c).any()
    }
    joint = joint.with_errors({"reference_blocks": {"split": split, "by_class": errors}})
    meta = _meta(i.device, i.source + how, joint.to_dict(), len(i.sample))
    runtime = {"runtime": f"TFLite fp32, priced as {joint.runtime} (the model's factors: {joint.factors})"}
    return joint, None, meta | runtime | {"runtime_version": f"{joint.runtime}, as the networks measured under it"}


_FITTERS = {"kernel": _fit_kernel, "transfer": _fit_transfer, "joint": _fit_joint}


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
    with_blocks: bool = True,
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
    inputs = _FitInputs(device, reference, sample, source, keys, runner, holdout, seed, networks, runtime, with_blocks)
    return _FITTERS[name](inputs)


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
        model = load_model(stored)
    outside, summary = model.coverage(keys, host=host)
    frame = table.frame.copy()
    frame.loc[outside.index, COLUMN] = outside
    meta = dict(table.meta, coverage={**table.meta.get("coverage", {}), space_name: summary})
    return CostTable(table.device, frame, meta)


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
