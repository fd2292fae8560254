"""Architectures of the EdgeViT local-global-local design space and the spaces they live in.

`Arch` describes one network: per stage its width, heads, sparse-attention sampling rate `sr`,
mlp ratio and the kind of each block (so its depth), plus the input resolution, the number of
classes and two ablation switches. Everything else in lglsearch (models, op keys, costs,
accuracy) is a function of an `Arch`.

`Space` is a YAML file of per-stage choices (``search_spaces/edgevit.yaml`` is the default).
It validates itself on load, samples with a seeded `numpy.random.Generator`, draws archs
through an Optuna trial, tells whether it contains an arch and counts its distinct archs.

Design: an `Arch` is canonical by construction. Fields that cannot change the network are
normalised (a stage without attention blocks gets ``sr = 1, heads = 1``; a network without
sparse attention gets the reference sampler and propagation), so equal networks are equal
archs with one id, and `Space.size()` counts networks, not spellings.

This module imports nothing of the project but its error type.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from lglsearch.errors import LglsearchError

if TYPE_CHECKING:  # optuna is imported lazily: only `Space.suggest` needs it
    import optuna

__all__ = [
    "BLOCK_KINDS",
    "LIMITS",
    "PRESETS",
    "PROPAGATIONS",
    "SAMPLERS",
    "Arch",
    "Space",
    "Stage",
    "divisors",
    "grid_sizes",
    "load_space",
    "parse_arch",
    "runs_attention",
    "runs_local",
    "value_problem",
]

BLOCK_KINDS = ("lgl", "local", "global")
"""`lgl`: LocalAgg then SelfAttn (the reference block); `local`: LocalAgg only (convolutional);
`global`: SelfAttn only (the reference's sr = 1 block)."""


def runs_local(kind: str) -> bool:
    """Whether a block of `kind` runs LocalAgg: lgl and local blocks."""
    return kind in ("lgl", "local")


def runs_attention(kind: str) -> bool:
    """Whether a block of `kind` runs SelfAttn: lgl and global blocks."""
    return kind in ("lgl", "global")


_KIND_LETTERS = {"lgl": "L", "local": "C", "global": "G"}
"""One letter per kind for compact printing: L(GL), C(onvolutional), G(lobal)."""

SAMPLERS = ("pick", "avg", "max")
"""How delegate tokens are sampled: strided picking (reference), average or max pooling."""

PROPAGATIONS = ("tconv", "nearest", "bilinear")
"""How delegates are propagated back: depthwise transposed conv (reference), or upsampling."""

PATCH_STRIDES_FIRST, PATCH_STRIDE_LATER = 4, 2
"""Stage 1 embeds 4x4 patches, every later stage halves the grid (as in the reference)."""

# `search_spaces/` sits at the top of the project and installs as `lglsearch.search_spaces`
SPACES_DIR = Path(str(importlib.resources.files("lglsearch.search_spaces")))


def grid_sizes(resolution: int, num_stages: int) -> tuple[int, ...]:
    """Side of each stage's token grid: resolution / 4, / 8, / 16, ..."""
    return tuple(resolution // (PATCH_STRIDES_FIRST * PATCH_STRIDE_LATER**i) for i in range(num_stages))


def _check_resolution(resolution: int, num_stages: int) -> str | None:
    step = PATCH_STRIDES_FIRST * PATCH_STRIDE_LATER ** (num_stages - 1)
    if not isinstance(resolution, int) or resolution < step or resolution % step:
        return (
            f"resolution {resolution!r} must be a positive multiple of {step} "
            f"so that each of the {num_stages} stages has a whole token grid"
        )
    return None


def divisors(n: int) -> list[int]:
    """The divisors of `n` in increasing order (a width's head counts, a grid's sampling rates).
    Only for values already within LIMITS: never a user's huge number."""
    return [d for d in range(1, n + 1) if n % d == 0]


# -- the one validation layer for arch and space values ------------------------------------------

LIMITS: dict[str, int | float] = {
    "stages": 8,
    "depth": 64,
    "width": 4096,
    "heads": 256,
    "sr": 256,
    "mlp_ratio": 16.0,
    "resolution": 1024,
    "num_classes": 100_000,
}
"""Upper bounds of arch and space values, all inclusive. Far above every shipped space and preset
(depth <= 6, width <= 448, heads <= 8, sr <= 8, mlp_ratio <= 4, 224 pixels, 1000 classes) and
above any network a phone runs, yet small enough that no value can make a model, a count or an
error message cost more than a phone-sized network does (sr 256 is the stage-1 grid at 1024)."""

TEXT_LIMITS = {"name": 255, "description": 2000}
"""The most characters of a space's name and description."""


def _show(value: Any) -> str:
    """A short form of a user's value for an error message: never formats an unbounded structure."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
        return text if len(text) <= 60 else f"{text[:57]}..."
    return f"a {type(value).__name__}"


def value_problem(key: str, value: Any) -> str | None:
    """Why `value` is not a valid arch or space `key` (a key of `LIMITS`), or None.

    A whole number must be an int (not a bool, not a string) in [1, LIMITS[key]]; `mlp_ratio` a
    finite real number in (0, LIMITS["mlp_ratio"]]. Checks cost the same whatever the value."""
    limit = LIMITS[key]
    if key == "mlp_ratio":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"mlp_ratio must be a number, got {_show(value)}; use a number in (0, {limit:g}]"
        if not isinstance(value, int) and not math.isfinite(value):
            return f"mlp_ratio must be a finite number, got {_show(value)}; use a number in (0, {limit:g}]"
        if not 0 < value <= limit:
            return f"mlp_ratio {_show(value)} is out of range; use an mlp_ratio in (0, {limit:g}]"
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"{key} must be a positive integer, got {_show(value)}"
    if value > limit:
        return f"{key} {_show(value)} is above the bound of {limit}; use a {key} of at most {limit}"
    return None


def _check_value(key: str, value: Any, where: str = "") -> None:
    problem = value_problem(key, value)
    if problem:
        raise LglsearchError(f"{where}{problem}")


def _check_kinds(kinds: Any) -> None:
    """`kinds` is a non-empty list (or tuple) of at most LIMITS["depth"] known block kinds."""
    if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)):
        raise LglsearchError(f"kinds must be a list of block kinds ({', '.join(BLOCK_KINDS)}), got {_show(kinds)}")
    if not kinds:
        raise LglsearchError("a stage needs at least one block: `kinds` is empty")
    _check_value("depth", len(kinds), "too many block kinds: ")
    for kind in kinds:
        if not isinstance(kind, str) or kind not in BLOCK_KINDS:
            raise LglsearchError(f"unknown block kind {_show(kind)}; use one of {', '.join(BLOCK_KINDS)}")


def _check_text(key: str, value: Any) -> str:
    """A space's name or description: a string (or a YAML number) of at most TEXT_LIMITS[key] characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise LglsearchError(f"{key} must be a string, got {_show(value)}; write it as one line of text")
    text = value if isinstance(value, str) else _show(value)
    if len(text) > TEXT_LIMITS[key]:
        raise LglsearchError(f"{key} has {len(text)} characters; shorten it to at most {TEXT_LIMITS[key]}")
    return text


@dataclass(frozen=True)
class Stage:
    """One stage: `len(kinds)` blocks of `width` channels."""

    width: int
    heads: int
    sr: int
    mlp_ratio: float
    kinds: tuple[str, ...]
    # derived from `kinds` once, as pricing reads them for every stage of every arch
    n_local: int = dataclasses.field(init=False, repr=False, compare=False)
    """How many blocks run LocalAgg (`runs_local`)."""
    n_attn: int = dataclasses.field(init=False, repr=False, compare=False)
    """How many blocks run SelfAttn (`runs_attention`)."""

    def __post_init__(self) -> None:
        # types and bounds first, so nothing below (divisors, models, counts) scales with a value
        _check_kinds(self.kinds)
        for name in ("width", "heads", "sr", "mlp_ratio"):
            _check_value(name, getattr(self, name), "stage ")
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        object.__setattr__(self, "n_local", sum(map(runs_local, self.kinds)))
        object.__setattr__(self, "n_attn", sum(map(runs_attention, self.kinds)))
        if not self.has_attention:
            # sr and heads do nothing without attention: normalise so equal nets are equal archs
            object.__setattr__(self, "sr", 1)
            object.__setattr__(self, "heads", 1)
        if self.width % self.heads:
            raise LglsearchError(
                f"width {self.width} is not divisible by heads {self.heads}; use heads in "
                f"{[d for d in divisors(self.width) if d <= LIMITS['heads']]}"
            )

    @property
    def depth(self) -> int:
        return len(self.kinds)

    @property
    def has_attention(self) -> bool:
        return self.n_attn > 0

    @property
    def has_sparse_attention(self) -> bool:
        return self.has_attention and self.sr > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "width": self.width,
            "heads": self.heads,
            "sr": self.sr,
            "mlp_ratio": self.mlp_ratio,
            "kinds": list(self.kinds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stage:
        fields = {"depth", "width", "heads", "sr", "mlp_ratio", "kinds"}
        unknown = set(data) - fields
        if unknown:
            shown = [_show(k) for k in sorted(unknown, key=str)[:5]]
            raise LglsearchError(f"unknown stage field(s) [{', '.join(shown)}]; a stage has {sorted(fields)}")
        missing = {"width", "heads", "sr", "mlp_ratio", "kinds"} - set(data)
        if missing:
            raise LglsearchError(f"stage is missing field(s) {sorted(missing)}")
        kinds = data["kinds"]
        if "depth" in data:
            _check_value("depth", data["depth"], "stage ")
        if isinstance(kinds, str):  # shorthand: {"depth": 3, "kinds": "lgl"}
            if "depth" not in data:
                raise LglsearchError(f"kinds {_show(kinds)} given as one kind needs a `depth`")
            kinds = [kinds] * data["depth"]
        _check_kinds(kinds)
        if "depth" in data and data["depth"] != len(kinds):
            raise LglsearchError(f"stage depth {data['depth']} does not match its {len(kinds)} block kinds")
        return cls(
            width=data["width"],
            heads=data["heads"],
            sr=data["sr"],
            mlp_ratio=data["mlp_ratio"],
            kinds=tuple(kinds),
        )


@dataclass(frozen=True)
class Arch:
    """One EdgeViT-style network. Immutable, hashable, canonical, JSON round-trips."""

    stages: tuple[Stage, ...]
    resolution: int = 224
    num_classes: int = 1000
    sampler: str = "pick"
    propagation: str = "tconv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise LglsearchError("an arch needs at least one stage")
        _check_value("stages", len(self.stages), "too many stages: ")
        _check_value("resolution", self.resolution)
        problem = _check_resolution(self.resolution, len(self.stages))
        if problem:
            raise LglsearchError(problem)
        _check_value("num_classes", self.num_classes)
        if not isinstance(self.sampler, str) or self.sampler not in SAMPLERS:
            raise LglsearchError(f"unknown sampler {_show(self.sampler)}; use one of {', '.join(SAMPLERS)}")
        if not isinstance(self.propagation, str) or self.propagation not in PROPAGATIONS:
            raise LglsearchError(f"unknown propagation {_show(self.propagation)}; use one of {', '.join(PROPAGATIONS)}")
        for i, (stage, grid) in enumerate(zip(self.stages, self.grids, strict=True)):
            if grid % stage.sr:
                raise LglsearchError(
                    f"stage {i + 1}: sampling rate sr={stage.sr} does not divide its "
                    f"{grid}x{grid} token grid at resolution {self.resolution}; "
                    f"use sr in {divisors(grid)}"
                )
        if not any(s.has_sparse_attention for s in self.stages):
            object.__setattr__(self, "sampler", SAMPLERS[0])
            object.__setattr__(self, "propagation", PROPAGATIONS[0])

    @functools.cached_property
    def grids(self) -> tuple[int, ...]:
        return grid_sizes(self.resolution, len(self.stages))

    @staticmethod
    def patch(index: int) -> int:
        """The patch size (and stride) of stage `index`'s embedding."""
        return PATCH_STRIDES_FIRST if index == 0 else PATCH_STRIDE_LATER

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "sampler": self.sampler,
            "propagation": self.propagation,
            "stages": [s.to_dict() for s in self.stages],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        if not isinstance(data, Mapping):
            raise LglsearchError(f"an arch is a JSON object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            shown = [_show(k) for k in sorted(unknown, key=str)[:5]]
            raise LglsearchError(f"unknown arch field(s) [{', '.join(shown)}]; an arch has {sorted(fields)}")
        if "stages" not in data or not isinstance(data["stages"], list):
            raise LglsearchError("an arch needs `stages`: a list of stage objects")
        _check_value("stages", len(data["stages"]) or 1, "too many stages: ")
        stages = []
        for i, stage in enumerate(data["stages"]):
            if not isinstance(stage, Mapping):
                raise LglsearchError(f"stages[{i}] must be an object, got {_show(stage)}")
            try:
                stages.append(Stage.from_dict(stage))
            except LglsearchError as err:
                raise LglsearchError(f"stages[{i}]: {err}") from None
        return cls(stages=tuple(stages), **{k: v for k, v in data.items() if k != "stages"})

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LglsearchError(f"malformed arch JSON ({err}); check the quoting and brackets") from None
        except RecursionError:
            raise LglsearchError(
                "arch JSON is nested too deeply; an arch is an object of stages, 3 levels deep"
            ) from None
        except ValueError as err:  # an integer of more than 4300 digits
            raise LglsearchError(f"arch JSON has an impossible value ({err}); use the values of a real arch") from None
        return cls.from_dict(data)

    @functools.cached_property
    def id(self) -> str:
        """A stable short id: the first 10 hex digits of the SHA-1 of the canonical JSON."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:10]

    def replace(self, **changes: Any) -> Arch:
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        stages = " | ".join(
            f"{s.width}x{''.join(_KIND_LETTERS[k] for k in s.kinds)} h{s.heads} sr{s.sr} r{s.mlp_ratio:g}"
            for s in self.stages
        )
        extra = (
            ""
            if (self.sampler, self.propagation) == (SAMPLERS[0], PROPAGATIONS[0])
            else (f" [{self.sampler}/{self.propagation}]")
        )
        return f"Arch {self.id} @{self.resolution}: {stages}{extra}"


def _preset(depths: Sequence[int], widths: Sequence[int], head_dim: int) -> Arch:
    # The reference (saic-fi/edgevit) runs LocalAgg + sparse SelfAttn with sr 4, 2, 2 in stages
    # 1-3 and plain SelfAttn (sr = 1, no LocalAgg) in stage 4; mlp ratio 4; heads = width / head_dim.
    srs = (4, 2, 2, 1)
    return Arch(
        stages=tuple(
            Stage(
                width=w,
                heads=w // head_dim,
                sr=sr,
                mlp_ratio=4.0,
                kinds=("lgl" if sr > 1 else "global",) * d,
            )
            for d, w, sr in zip(depths, widths, srs, strict=True)
        )
    )


PRESETS: dict[str, Arch] = {
    "edgevit_xxs": _preset((1, 1, 3, 2), (36, 72, 144, 288), head_dim=36),
    "edgevit_xs": _preset((1, 1, 3, 1), (48, 96, 240, 384), head_dim=48),
    "edgevit_s": _preset((1, 2, 5, 3), (48, 96, 240, 384), head_dim=48),
}
"""The published EdgeViT models (Pan et al., ECCV 2022), as the reference code builds them."""


def parse_arch(spec: str | Path) -> Arch:
    """An arch from a preset name, a JSON file, inline JSON, or the id of a family member of a run
    under ./runs (`runs/*/family/<id>.json`)."""
    text = str(spec).strip()
    if text in PRESETS:
        return PRESETS[text]
    if text.startswith("{"):
        return Arch.from_json(text)
    path = Path(text)
    try:
        is_file = path.suffix == ".json" or path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        is_file = False
    if is_file:
        try:
            if not path.is_file():
                raise LglsearchError(f"arch file {path} does not exist; give a preset, a JSON file or inline JSON")
            return Arch.from_json(_read_text(path, "arch file"))
        except LglsearchError as err:
            raise LglsearchError(f"{path}: {err}") from None
    if re.fullmatch(r"[0-9a-f]{10}", text):  # an arch id: a family member of a finished run
        found = sorted(Path("runs").glob(f"*/family/{text}.json"))
        if found:
            return parse_arch(found[0])  # an id is a hash of the arch: every copy is the same arch
        raise LglsearchError(
            f"no run under {Path('runs').resolve()} has arch {text} in its family; give the family file "
            "(runs/<run>/family/<id>.json) or run from the directory that holds runs/"
        )
    raise LglsearchError(
        f"unknown arch {text!r}: give a preset ({', '.join(PRESETS)}), a JSON file, inline JSON or the arch id "
        "of a family member under runs/"
    )


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file, or a one-line error naming the problem and the fix."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LglsearchError(
            f"{what} is not UTF-8 text (byte {err.start}); save it as UTF-8 JSON/YAML or give the right file"
        ) from None
    except OSError as err:
        raise LglsearchError(f"cannot read {what} ({err.strerror}); check the path and its permissions") from None


# --------------------------------------------------------------------------------------------
# Space


@dataclass(frozen=True)
class StageChoices:
    """The choices of one stage of a space; `kinds` are the choices of every block."""

    depth: tuple[int, ...]
    width: tuple[int, ...]
    heads: tuple[int, ...]
    sr: tuple[int, ...]
    mlp_ratio: tuple[float, ...]
    kinds: tuple[str, ...]

    def heads_for(self, width: int) -> tuple[int, ...]:
        return tuple(h for h in self.heads if width % h == 0)

    def count(self) -> tuple[int, int]:
        """(distinct stages, distinct stages without sparse attention) of these choices."""
        local_only = 1 if "local" in self.kinds else 0
        total = no_sparse = 0
        for depth in self.depth:
            with_attention = len(self.kinds) ** depth - local_only
            for width in self.width:
                heads = len(self.heads_for(width))
                total += local_only + with_attention * len(self.sr) * heads
                no_sparse += local_only + with_attention * (1 in self.sr) * heads
        return total * len(self.mlp_ratio), no_sparse * len(self.mlp_ratio)


_SPACE_KEYS = {"name", "description", "resolution", "num_classes", "sampler", "propagation", "stages"}
_STAGE_KEYS = {f.name for f in dataclasses.fields(StageChoices)}


class Space:
    """A search space: per-stage choices, loaded and validated from YAML."""

    def __init__(
        self,
        *,
        stages: Sequence[StageChoices],
        resolution: int = 224,
        num_classes: int = 1000,
        sampler: Sequence[str] = ("pick",),
        propagation: Sequence[str] = ("tconv",),
        name: str = "space",
        description: str = "",
        source: str = "<memory>",
    ) -> None:
        self.stages = tuple(stages)
        self.resolution = resolution
        self.num_classes = num_classes
        self.sampler = tuple(sampler)
        self.propagation = tuple(propagation)
        self.name = name
        self.description = description
        self.source = source
        self._validate()

    # -- loading and validation --------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> Space:
        path = Path(path)
        if not path.is_file():
            known = ", ".join(sorted(p.name for p in SPACES_DIR.glob("*.yaml")))
            raise LglsearchError(f"space file {path} does not exist; the shipped spaces are: {known}")
        try:
            data = yaml.safe_load(_read_text(path, "space file"))
        except LglsearchError as err:
            raise LglsearchError(f"{path}: {err}") from None
        except yaml.YAMLError as err:
            raise LglsearchError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
        except RecursionError:
            raise LglsearchError(f"{path}: the YAML is nested too deeply; a space is a mapping of lists") from None
        except ValueError as err:  # e.g. an integer of more than 4300 digits
            raise LglsearchError(f"{path}: impossible value in the YAML ({err}); use the values of a space") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<memory>") -> Space:
        def fail(key: str, problem: str) -> LglsearchError:
            return LglsearchError(f"{source}: {key}: {problem}")

        if not isinstance(data, dict):
            raise LglsearchError(f"{source}: a space is a YAML mapping with keys {sorted(_SPACE_KEYS)}")
        unknown = set(data) - _SPACE_KEYS
        if unknown:
            key = _show(sorted(unknown, key=str)[0]).strip("'")
            raise fail(key, f"unknown key; a space has {sorted(_SPACE_KEYS)} (check the spelling)")
        stages_data = data.get("stages")
        if not isinstance(stages_data, list) or not stages_data:
            raise fail("stages", "must be a non-empty list of per-stage choices")
        stages = []
        for i, stage in enumerate(stages_data):
            where = f"stages[{i}]"
            if not isinstance(stage, dict):
                raise fail(where, f"must be a mapping with keys {sorted(_STAGE_KEYS)}")
            unknown = set(stage) - _STAGE_KEYS
            if unknown:
                key = _show(sorted(unknown, key=str)[0]).strip("'")
                raise fail(f"{where}.{key}", f"unknown key; a stage has {sorted(_STAGE_KEYS)}")
            missing = _STAGE_KEYS - set(stage)
            if missing:
                raise fail(f"{where}.{sorted(missing)[0]}", "missing; give a list of choices")
            values = {}
            for key in sorted(_STAGE_KEYS):
                kind = str if key == "kinds" else float if key == "mlp_ratio" else int
                values[key] = _choices(stage[key], kind, lambda p, k=f"{where}.{key}": fail(k, p))
            stages.append(StageChoices(**values))

        def top(key: str, default: Any, kind: type) -> Any:
            if key not in data:
                return default
            return _choices(data[key], kind, lambda p: fail(key, p))

        resolution = data.get("resolution", 224)
        num_classes = data.get("num_classes", 1000)
        for key, value in (("resolution", resolution), ("num_classes", num_classes)):
            problem = value_problem(key, value)
            if problem:
                raise fail(key, problem)
        texts = {}
        for key, default in (("name", Path(source).stem), ("description", "")):
            try:
                texts[key] = _check_text(key, data.get(key, default))
            except LglsearchError as err:
                raise fail(key, str(err)) from None
        return cls(
            stages=stages,
            resolution=resolution,
            num_classes=num_classes,
            sampler=top("sampler", ("pick",), str),
            propagation=top("propagation", ("tconv",), str),
            source=source,
            **texts,
        )

    def _validate(self) -> None:
        def fail(key: str, problem: str) -> LglsearchError:
            return LglsearchError(f"{self.source}: {key}: {problem}")

        # types and bounds first: nothing below (grids, divisors, counts) may scale with a value
        if not self.stages:
            raise fail("stages", "must be a non-empty list of per-stage choices")
        for key in ("stages", "resolution", "num_classes"):
            problem = value_problem(key, len(self.stages) if key == "stages" else getattr(self, key))
            if problem:
                raise fail(key, problem)
        for i, stage in enumerate(self.stages):
            for key in ("depth", "width", "heads", "sr", "mlp_ratio"):
                for value in getattr(stage, key):
                    problem = value_problem(key, value)
                    if problem:
                        raise fail(f"stages[{i}].{key}", problem)
        problem = _check_resolution(self.resolution, len(self.stages))
        if problem:
            raise fail("resolution", problem)
        for key, allowed in (("sampler", SAMPLERS), ("propagation", PROPAGATIONS)):
            for value in getattr(self, key):
                if value not in allowed:
                    raise fail(key, f"unknown choice {_show(value)}; use some of {', '.join(allowed)}")
        for i, (stage, grid) in enumerate(zip(self.stages, self.grids, strict=True)):
            where = f"stages[{i}]"
            for kind in stage.kinds:
                if kind not in BLOCK_KINDS:
                    raise fail(f"{where}.kinds", f"unknown kind {_show(kind)}; use some of {', '.join(BLOCK_KINDS)}")
            for sr in stage.sr:
                if grid % sr:
                    raise fail(
                        f"{where}.sr",
                        f"sampling rate {sr} does not divide the stage's {grid}x{grid} grid at "
                        f"resolution {self.resolution}; use divisors of {grid}: {divisors(grid)}",
                    )
            for width in stage.width:
                if not stage.heads_for(width):
                    raise fail(
                        f"{where}.width",
                        f"width {width} is divisible by none of the heads choices {list(stage.heads)}; "
                        f"add a divisor of {width} to heads or change the width",
                    )
            for heads in stage.heads:
                if not any(w % heads == 0 for w in stage.width):
                    raise fail(
                        f"{where}.heads",
                        f"{heads} heads divide none of the widths {list(stage.width)}; remove it "
                        "or add a width it divides",
                    )

    # -- queries -----------------------------------------------------------------------------

    @property
    def grids(self) -> tuple[int, ...]:
        return grid_sizes(self.resolution, len(self.stages))

    def check(self, arch: Arch) -> str | None:
        """Why `arch` is outside this space, or None when the space contains it."""
        if len(arch.stages) != len(self.stages):
            return f"the arch has {len(arch.stages)} stages, the space {len(self.stages)}"
        if arch.resolution != self.resolution:
            return f"resolution {arch.resolution} is not the space's {self.resolution}"
        if arch.num_classes != self.num_classes:
            return f"num_classes {arch.num_classes} is not the space's {self.num_classes}"
        sparse = any(s.has_sparse_attention for s in arch.stages)
        if sparse and arch.sampler not in self.sampler:
            return f"sampler {arch.sampler!r} is not among {list(self.sampler)}"
        if sparse and arch.propagation not in self.propagation:
            return f"propagation {arch.propagation!r} is not among {list(self.propagation)}"
        for i, (stage, choices) in enumerate(zip(arch.stages, self.stages, strict=True)):
            values = {"depth": stage.depth, "width": stage.width, "mlp_ratio": stage.mlp_ratio}
            if stage.has_attention:
                values |= {"heads": stage.heads, "sr": stage.sr}
            for key, value in values.items():
                if value not in getattr(choices, key):
                    return f"stage {i + 1}: {key} {value} is not among {list(getattr(choices, key))}"
            for kind in stage.kinds:
                if kind not in choices.kinds:
                    return f"stage {i + 1}: block kind {kind!r} is not among {list(choices.kinds)}"
        return None

    def contains(self, arch: Arch) -> bool:
        return self.check(arch) is None

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, Arch) and self.contains(arch)

    def validate(self, arch: Arch) -> Arch:
        """Return `arch` if the space contains it, else raise naming the field and the fix."""
        problem = self.check(arch)
        if problem:
            raise LglsearchError(
                f"arch {arch.id} is outside the space {self.source}: {problem}; "
                "pick an arch of this space or pass the space it belongs to (--space FILE)"
            )
        return arch

    def size(self) -> int:
        """The exact number of distinct (canonical) archs of the space."""
        totals, no_sparse = zip(*(s.count() for s in self.stages), strict=True)
        all_nets, nets_without_sparse = math.prod(totals), math.prod(no_sparse)
        # sampler and propagation matter only to nets with sparse attention
        switches = len(self.sampler) * len(self.propagation)
        return nets_without_sparse + switches * (all_nets - nets_without_sparse)

    def _make(self, pick: Any) -> Arch:
        """Build an arch from a chooser `pick(name, choices) -> value` (sampling or Optuna)."""
        stages = []
        for i, choices in enumerate(self.stages, start=1):
            depth = pick(f"s{i}.depth", choices.depth)
            width = pick(f"s{i}.width", choices.width)
            mlp_ratio = pick(f"s{i}.mlp_ratio", choices.mlp_ratio)
            kinds = tuple(pick(f"s{i}.b{j}.kind", choices.kinds) for j in range(1, depth + 1))
            heads, sr = 1, 1
            if any(k != "local" for k in kinds):
                # which heads divide depends on the width: one parameter per width keeps
                # every Optuna distribution static
                heads = pick(f"s{i}.heads.w{width}", choices.heads_for(width))
                sr = pick(f"s{i}.sr", choices.sr)
            stages.append(Stage(width=width, heads=heads, sr=sr, mlp_ratio=mlp_ratio, kinds=kinds))
        sampler, propagation = self.sampler[0], self.propagation[0]
        if any(s.has_sparse_attention for s in stages):
            sampler = pick("sampler", self.sampler)
            propagation = pick("propagation", self.propagation)
        return Arch(
            stages=tuple(stages),
            resolution=self.resolution,
            num_classes=self.num_classes,
            sampler=sampler,
            propagation=propagation,
        )

    def sample(self, rng: np.random.Generator) -> Arch:
        """One arch, each choice drawn uniformly and independently with `rng`."""
        return self._make(lambda _name, choices: choices[int(rng.integers(len(choices)))])

    def sample_params(self, rng: np.random.Generator) -> tuple[Arch, dict[str, Any]]:
        """One arch drawn as `sample` draws it, with the parameters `suggest` would give it (what
        `optuna.Study.enqueue_trial` takes to propose exactly this arch)."""
        params: dict[str, Any] = {}
        arch = self._make(lambda name, choices: params.setdefault(name, choices[int(rng.integers(len(choices)))]))
        return arch, params

    def suggest(self, trial: optuna.trial.BaseTrial) -> Arch:
        """One arch drawn through an Optuna trial (one categorical parameter per choice)."""
        return self._make(lambda name, choices: trial.suggest_categorical(name, list(choices)))

    def largest(self) -> Arch:
        """Every choice at its maximum, every block `lgl` when allowed (the supernet's shape)."""
        return self._extreme(max, "lgl")

    def smallest(self) -> Arch:
        """Every choice at its minimum, every block `local` when allowed."""
        return self._extreme(min, "local")

    def _extreme(self, choose: Any, kind: str) -> Arch:
        def pick(name: str, choices: Sequence[Any]) -> Any:
            if name.endswith(".kind"):
                return kind if kind in choices else choices[0]
            return choose(choices)

        return self._make(pick)

    def with_resolution(self, resolution: int, num_classes: int | None = None) -> Space:
        """The same choices at another input resolution (and class count), validated again."""
        classes = self.num_classes if num_classes is None else num_classes
        return Space(
            stages=self.stages,
            resolution=resolution,
            num_classes=classes,
            sampler=self.sampler,
            propagation=self.propagation,
            name=self.name,
            description=self.description,
            source=f"{self.source} @{resolution}" + ("" if classes == self.num_classes else f"/{classes} classes"),
        )

    def adapt(self, arch: Arch) -> Arch:
        """`arch` at this space's resolution and class count (as a supernet of the space runs it)."""
        if (arch.resolution, arch.num_classes) == (self.resolution, self.num_classes):
            return arch
        return arch.replace(resolution=self.resolution, num_classes=self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping of the space (what `from_dict` reads)."""
        return {
            "name": self.name,
            "description": self.description,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "sampler": list(self.sampler),
            "propagation": list(self.propagation),
            "stages": [{k: list(v) for k, v in dataclasses.asdict(st).items()} for st in self.stages],
        }

    def __repr__(self) -> str:
        return f"Space({self.name!r}, {len(self.stages)} stages, {self.size():,} archs, @{self.resolution})"


def _choices(value: Any, kind: type, fail: Any) -> tuple[Any, ...]:
    """A non-empty, duplicate-free tuple of `kind` values from a YAML scalar or list."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise fail("empty list of choices; give at least one value")
    out = []
    for v in values:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise fail(f"choice {_show(v)} is not of type {kind.__name__}")
        out.append(v)
    seen: set[Any] = set()
    for v in out:
        if v in seen:
            raise fail(f"duplicate choices ({_show(v)} twice); list each value once")
        seen.add(v)
    return tuple(out)


def _default_space_path() -> Path:
    return SPACES_DIR / "edgevit.yaml"


def load_space(path: str | Path | None = None) -> Space:
    """A space from a YAML file; the shipped name (`tiny`) or None for the default."""
    if path is None:
        return Space.from_yaml(_default_space_path())
    candidate = Path(path)
    if not candidate.exists() and (SPACES_DIR / f"{path}.yaml").is_file():
        candidate = SPACES_DIR / f"{path}.yaml"
    return Space.from_yaml(candidate)
