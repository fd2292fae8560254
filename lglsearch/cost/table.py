"""`CostTable`: one device's per-op latency (and energy), with its provenance.

On disk a table is ``<device>.csv`` (one row per op key) with ``<device>.json`` beside it (the
device, runtime, threads, precision, method, source, date, validation figures and the number of
rows). Tables shipped with the project live in ``latency_tables/``; tables built on this machine
(``host``) or imported by a user live in the user cache directory (``$LGLSEARCH_CACHE``, else
``$XDG_CACHE_HOME/lglsearch``, else ``~/.cache/lglsearch``). Both files are written atomically
and a table that disagrees with its metadata is refused, so a half-written table is never used.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lglsearch._files import atomic_write, cache_dir
from lglsearch.cost.ops import OpKey, StageArgs, arch_ops, stage_args, stage_ops
from lglsearch.errors import LglsearchError
from lglsearch.space import Arch

__all__ = [
    "HOST",
    "CostTable",
    "known_devices",
    "shadowed_devices",
    "shipped_dir",
    "table_path",
    "user_tables_dir",
]

_REQUIRED = ("latency_ms",)
_OPTIONAL = ("latency_p10_ms", "latency_p90_ms", "runs", "energy_mj")
HOST = "host"
_STAGE_CACHE = 1 << 17  # stage sums kept per table (~30 MB at most)


def shipped_dir() -> Path:
    return Path(str(importlib.resources.files("lglsearch.latency_tables")))


def user_tables_dir() -> Path:
    return cache_dir() / "latency_tables"


def known_devices() -> list[str]:
    names = {p.stem for d in (shipped_dir(), user_tables_dir()) if d.is_dir() for p in d.glob("*.json")}
    return sorted(names | {HOST})


def shadowed_devices() -> list[str]:
    """The shipped devices whose table a user table of the same name replaces (`lut import --replace`)."""
    user, shipped = user_tables_dir(), shipped_dir()
    if not user.is_dir() or not shipped.is_dir():
        return []
    return sorted(p.stem for p in shipped.glob("*.json") if (user / p.name).is_file() and p.stem != HOST)


def table_path(device: str) -> Path:
    """Where `device`'s CSV lives: the user cache for `host` and user tables, else the shipped dir."""
    if device == HOST or (user_tables_dir() / f"{device}.json").is_file():
        return user_tables_dir() / f"{device}.csv"
    shipped = shipped_dir() / f"{device}.csv"
    if shipped.with_suffix(".json").is_file():
        return shipped
    raise LglsearchError(f"unknown device {device!r}; known devices: {', '.join(known_devices())}")


def _has_energy_column(device: str) -> bool:
    try:
        meta = json.loads(table_path(device).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, LglsearchError):  # ValueError: JSON and UTF-8 decoding
        return False
    return isinstance(meta, dict) and isinstance(meta.get("columns"), list) and "energy_mj" in meta["columns"]


# metadata fields whose type the readers (`describe`, `devices`, pricing) rely on, when present
_META_TYPES: dict[str, tuple[type, ...]] = {
    "device": (str,),
    "method": (str,),
    "description": (str,),
    "entries": (int,),
    "keys_sha1": (str,),
    "columns": (list,),
    "spaces": (list,),
    "validation": (dict,),
    "energy": (dict,),
    "model": (dict,),
    "transfer": (dict,),
    "coverage": (dict,),
}


def _read_meta(meta_path: Path, rebuild: str) -> dict[str, Any]:
    """A table's metadata, refused in one line naming the file when it is not a JSON object of the
    expected fields (not UTF-8, not JSON, too deep, a list, a field of another type)."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise LglsearchError(f"metadata {meta_path} is not UTF-8 text (byte {err.start}); {rebuild}") from None
    except json.JSONDecodeError as err:
        raise LglsearchError(f"metadata {meta_path} is not valid JSON ({err}); {rebuild}") from None
    except RecursionError:
        raise LglsearchError(f"metadata {meta_path} is nested too deeply to be a table's metadata; {rebuild}") from None
    except OSError as err:
        raise LglsearchError(f"metadata {meta_path} cannot be read ({err.strerror or err}); {rebuild}") from None
    if not isinstance(meta, dict):
        raise LglsearchError(
            f"metadata {meta_path} holds a JSON {type(meta).__name__}, not the object a table's metadata is; {rebuild}"
        )
    for field, kinds in _META_TYPES.items():
        value = meta.get(field)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise LglsearchError(
                f"metadata {meta_path}: field {field!r} is a {type(value).__name__}, not a "
                f"{' or '.join(k.__name__ for k in kinds)}; {rebuild}"
            )
    return meta


def _keys_digest(keys: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:12]


def _canonical(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[OpKey]]:
    """`frame` indexed by canonical op keys (`OpKey.parse`), and those keys; two rows of one op are an error."""
    keys = [OpKey.parse(k) for k in frame.index]
    text = [str(k) for k in keys]
    if text != list(frame.index):
        frame = frame.set_axis(pd.Index(text, name=frame.index.name))
    if frame.index.has_duplicates:
        twice = frame.index[frame.index.duplicated()][0]
        raise LglsearchError(f"op key {twice!r} is listed twice, spelt differently")
    return frame, keys


class CostTable:
    """Per-op costs of one device: `frame` indexed by canonical op key, `meta` its provenance.

    Queries take an `OpKey` or any spelling of its text, so text and keys always agree.
    """

    def __init__(self, device: str, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
        self.device = device
        self.frame, keys = _canonical(frame)
        self.meta = meta
        self._has_energy = "energy_mj" in self.frame and bool(self.frame["energy_mj"].notna().all())
        energy = self.frame["energy_mj"] if self._has_energy else np.full(len(keys), np.nan)
        self._costs: dict[OpKey, tuple[float, float]] = dict(
            zip(keys, zip(self.frame["latency_ms"].tolist(), list(energy), strict=True), strict=True)
        )
        self._stage_costs: dict[StageArgs, tuple[float, float]] = {}  # the archs of a search share stages

    # -- construction and storage ------------------------------------------------------------

    @classmethod
    def empty(cls, device: str, meta: dict[str, Any]) -> CostTable:
        frame = pd.DataFrame({c: pd.Series(dtype=float) for c in _REQUIRED})
        frame.index.name = "key"
        return cls(device, frame, dict(meta))

    def with_rows(self, rows: pd.DataFrame) -> CostTable:
        """A new table with `rows` (indexed by key) added or replaced."""
        rows, _ = _canonical(rows)
        frame = pd.concat([self.frame.drop(index=rows.index, errors="ignore"), rows]).sort_index()
        frame.index.name = "key"
        return CostTable(self.device, frame, dict(self.meta))

    def save(self, path: Path | None = None) -> Path:
        """Write the CSV then its JSON, each atomically; the JSON's row count seals the pair."""
        path = Path(path) if path else table_path(self.device)
        meta = dict(
            self.meta,
            device=self.device,
            entries=len(self.frame),
            keys_sha1=_keys_digest(self.frame.index),
            columns=list(self.frame.columns),
        )
        atomic_write(path, self.frame.to_csv(float_format="%.6g"))
        atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
        self.meta = meta
        return path

    @classmethod
    def load(cls, device_or_path: str | Path) -> CostTable:
        """A device's table by name (`host`, `snapdragon888`, ...) or by the path of its CSV."""
        text = str(device_or_path)
        path = Path(text) if text.endswith(".csv") else table_path(text)
        device = path.stem
        rebuild = f"rebuild it with `lglsearch lut build --device {device}`"
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            if device == HOST:
                raise LglsearchError(f"no host table yet at {path}; build it with `lglsearch lut build --device host`")
            raise LglsearchError(f"table {path} or its metadata {meta_path.name} is missing; {rebuild}")
        meta = _read_meta(meta_path, rebuild)
        try:
            frame = pd.read_csv(path, index_col="key")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeDecodeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise LglsearchError(f"table {path} is corrupt ({reason}); {rebuild}") from None
        for column in _REQUIRED:
            if column not in frame:
                raise LglsearchError(f"table {path} has no `{column}` column; {rebuild}")
        numeric = frame.apply(pd.to_numeric, errors="coerce")
        latency = numeric[_REQUIRED[0]].to_numpy(dtype=float)
        bad = ~np.isfinite(latency) | (latency <= 0)
        if bad.any():
            raise LglsearchError(
                f"table {path} is corrupt: row {frame.index[bad][0]!r} has no finite positive latency_ms "
                f"(truncated or edited?); {rebuild}"
            )
        if "energy_mj" in numeric:  # missing energies are allowed (the table then has none); others are checked
            energy = numeric["energy_mj"].to_numpy(dtype=float)
            bad = np.isinf(energy) | (energy < 0)
            if bad.any():
                raise LglsearchError(
                    f"table {path} is corrupt: row {frame.index[bad][0]!r} has energy_mj {energy[bad][0]}, "
                    f"not a finite non-negative number; {rebuild}"
                )
        if frame.index.has_duplicates:
            raise LglsearchError(
                f"table {path} lists op key {frame.index[frame.index.duplicated()][0]!r} twice; {rebuild}"
            )
        if meta.get("device", device) != device:
            raise LglsearchError(
                f"metadata {meta_path} is for device {meta.get('device')!r}, not {device!r}; {rebuild}"
            )
        if meta.get("entries") != len(frame) or meta.get("keys_sha1") != _keys_digest(frame.index):
            raise LglsearchError(
                f"table {path} has {len(frame)} rows but its metadata describes {meta.get('entries')} other "
                f"or different rows (interrupted write or hand edit?); {rebuild}"
            )
        try:
            return cls(device, numeric, meta)
        except LglsearchError as err:
            raise LglsearchError(f"table {path}: {err}; {rebuild}") from None

    # -- queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | OpKey) and OpKey.parse(key) in self._costs

    @property
    def has_energy(self) -> bool:
        return self._has_energy

    def require_energy(self) -> None:
        """Raise unless the table prices energy (an energy objective or budget needs it)."""
        if not self.has_energy:
            with_energy = [d for d in known_devices() if d != HOST and _has_energy_column(d)]
            why = self.meta.get("energy", {}).get("why", "its table has no energy_mj column")
            raise LglsearchError(
                f"device {self.device!r} has no energy figures ({why}); drop the energy objective or budget, "
                f"or use a device with energy: {', '.join(with_energy) or 'none installed'}"
            )

    def phone_model(self) -> dict[str, Any] | None:
        """The phone model a derived table was priced with, as its metadata stores it (name, form,
        `heldout`, `leave_one_kind_out`, ...); None for a measured or imported table. Tables derived
        before the kernel model hold a transfer model under "transfer"."""
        if "model" in self.meta:
            return dict(self.meta["model"])
        return {"name": "transfer", **self.meta["transfer"]} if "transfer" in self.meta else None

    def describe(self) -> dict[str, Any]:
        """What `lglsearch devices` shows of a table: its provenance, validation, energy model, and a
        derived table's phone model with both of its errors and the keys priced outside its fit."""
        model = self.phone_model() or {}
        fields = ("device", "entries", "method", "description", "runtime", "runtime_version", "threads")
        fields += ("precision", "source", "date", "validation", "energy")
        return {k: self.meta.get(k) for k in fields} | {
            "model": model.get("name"),
            "heldout": model.get("heldout"),
            "leave_one_kind_out": model.get("leave_one_kind_out"),
            "whole_networks": (model.get("errors") or {}).get("whole_networks"),
            "reference_blocks": (model.get("errors") or {}).get("reference_blocks"),
            "coverage": self.meta.get("coverage"),
        }

    def missing(self, keys: Iterable[str | OpKey]) -> list[str]:
        """The canonical text of the `keys` the table lacks, sorted."""
        return sorted({str(OpKey.parse(k)) for k in keys if k not in self})

    def _missing_error(self, key: str) -> LglsearchError:
        space = ", ".join(self.meta.get("spaces", [])) or "another space"
        command = "derive" if self.phone_model() is not None else "build"  # a derived table has no device to time on
        return LglsearchError(
            f"op key {key!r} is missing from the {self.device} table (built for {space}); add it with "
            f"`lglsearch lut {command} --device {self.device} --space FILE`"
        )

    def op_latency(self, key: str | OpKey) -> float:
        try:
            return self._costs[OpKey.parse(key)][0]
        except KeyError:
            raise self._missing_error(str(key)) from None

    def cost(self, arch: Arch) -> tuple[float, float]:
        """(latency_ms, energy_mj) of `arch`: sums over its ops (energy NaN when the table has none).

        A plain sum: subtracting the runtime's fixed cost per run for every op but one (each op
        timed alone pays it, the network once) was tried and made the host validation worse
        (benchmarks/RESULTS.md), since ops inside a network also run with colder caches. Stage
        sums are cached, so pricing an arch is a few lookups.
        """
        latency = energy = 0.0
        cached = self._stage_costs
        try:
            for args in stage_args(arch):
                lat, en = cached.get(args) or self._price_stage(args)
                latency += lat
                energy += en
        except KeyError:
            raise self._missing_error(self.missing(arch_ops(arch))[0]) from None
        return latency, energy

    def _price_stage(self, args: StageArgs) -> tuple[float, float]:
        latency = energy = 0.0
        for key, uses in stage_ops(args):
            lat, en = self._costs[key]
            latency += uses * lat
            energy += uses * en
        if len(self._stage_costs) >= _STAGE_CACHE:
            self._stage_costs.clear()
        self._stage_costs[args] = (latency, energy)
        return latency, energy

    def latency(self, arch: Arch) -> float:
        return self.cost(arch)[0]

    def predict(self, archs: Iterable[Arch]) -> pd.DataFrame:
        """latency_ms and energy_mj of many archs at once (stage sums are shared across archs)."""
        costs = np.array([self.cost(a) for a in archs], dtype=float).reshape(-1, 2)
        return pd.DataFrame({"latency_ms": costs[:, 0], "energy_mj": costs[:, 1]})
