"""Whole networks measured on a device, as a user gives them: a CSV of models and milliseconds.

Columns: `model`, `latency_ms`, and optionally `input_size` (pixels, default 224), `runtime` (a
label such as "TFLite 2.15"; networks of one runtime share a speed factor when fitted) and
`family` (left out together when a fit is checked). A `model` is

- an ONNX file (a path ending in .onnx, relative to the CSV's folder),
- `timm:NAME` with optional `args`, a JSON object of `timm.create_model` arguments
  (e.g. `{"num_classes": 0}`), built without weights,
- `pytorchcv:NAME` (an imgclsmob network; needs `pip install pytorchcv`).

Every row is checked before any network is built: a missing file, an unknown timm name, a latency
that is not a positive finite number is one error naming the row and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lglsearch.cost._phone.joint import MeasuredSet
from lglsearch.cost.kernels import Kernel, decompose
from lglsearch.errors import LglsearchError

__all__ = ["MeasuredNetwork", "load_measured", "measured_sets", "network_kernels"]

_SOURCES = ("timm", "pytorchcv")


@dataclass(frozen=True)
class MeasuredNetwork:
    model: str
    latency_ms: float
    runtime: str
    family: str
    input_size: int
    args: dict[str, Any]
    path: Path | None
    """The ONNX file, for a model given as one."""


def _fail(csv: Path, row: int, problem: str, fix: str) -> LglsearchError:
    return LglsearchError(f"{csv}, row {row}: {problem}; {fix}")


def load_measured(csv: str | Path) -> list[MeasuredNetwork]:
    """The rows of a measured-networks CSV, checked (module docstring)."""
    csv = Path(csv)
    if not csv.is_file():
        raise LglsearchError(f"measured file {csv} does not exist; give a CSV with columns model,latency_ms")
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LglsearchError(
            f"measured file {csv} is not a readable CSV ({err}); give columns model,latency_ms"
        ) from None
    missing = {"model", "latency_ms"} - set(frame.columns)
    if missing or frame.empty:
        raise LglsearchError(
            f"measured file {csv} lacks {'rows' if not missing else 'column(s) ' + ', '.join(sorted(missing))}; "
            "give columns model,latency_ms (optional: input_size, runtime, family, args)"
        )
    networks = []
    for i, r in enumerate(frame.to_dict("records"), start=2):  # row 1 is the header
        model = r["model"].strip()
        try:
            latency = float(r["latency_ms"])
        except ValueError:
            latency = math.nan
        if not (math.isfinite(latency) and latency > 0):
            raise _fail(csv, i, f"latency_ms {r['latency_ms']!r} of {model!r}", "give a positive finite ms")
        size_text = r.get("input_size", "") or "224"
        if not size_text.isdigit() or not 8 <= int(size_text) <= 1024:
            raise _fail(csv, i, f"input_size {size_text!r}", "give whole pixels from 8 to 1024")
        try:
            args = json.loads(r.get("args", "") or "{}")
        except json.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise _fail(csv, i, f"args {r.get('args')!r} is not a JSON object", 'write e.g. {"num_classes": 0}')
        path = _check_model(csv, i, model)
        family = r.get("family", "") or model
        networks.append(
            MeasuredNetwork(model, latency, r.get("runtime", "") or "measured", family, int(size_text), args, path)
        )
    return networks


def _check_model(csv: Path, row: int, model: str) -> Path | None:
    if model.endswith(".onnx"):
        path = (csv.parent / model).resolve()
        if not path.is_file():
            raise _fail(csv, row, f"ONNX file {path} does not exist", "give a path relative to the CSV's folder")
        return path
    source, _, name = model.partition(":")
    if source not in _SOURCES or not name:
        raise _fail(
            csv,
            row,
            f"model {model!r} is neither an .onnx file nor one of {', '.join(s + ':NAME' for s in _SOURCES)}",
            "write e.g. timm:resnet18",
        )
    if source == "timm":
        import timm

        if not timm.is_model(name):
            raise _fail(csv, row, f"timm has no model {name!r}", "check the name with timm.list_models()")
    else:
        try:
            from pytorchcv.model_provider import _models  # type: ignore[import-not-found]
        except ImportError:
            raise _fail(csv, row, f"{model!r} needs pytorchcv", "pip install pytorchcv") from None
        if name not in _models:
            raise _fail(csv, row, f"pytorchcv has no model {name!r}", "check the name in pytorchcv's model list")
    return None


def network_kernels(network: MeasuredNetwork) -> list[Kernel]:
    """The kernels of a measured network (built without weights on meta tensors, or read from ONNX)."""
    if network.path is not None:
        from lglsearch.cost.graph import onnx_kernels

        return onnx_kernels(network.path)
    source, _, name = network.model.partition(":")
    shape: Sequence[int] = (1, 3, network.input_size, network.input_size)
    with torch.device("meta"):
        if source == "timm":
            import timm

            module = timm.create_model(name, pretrained=False, **network.args)
        else:
            from pytorchcv.model_provider import get_model

            module = get_model(name, pretrained=False, **network.args)
    return decompose(module, shape)


def measured_sets(csv: str | Path, scale: float = 1.0) -> list[MeasuredSet]:
    """The networks of a measured CSV, split into kernels, one set per runtime (in the CSV's order)."""
    networks = load_measured(csv)
    runtimes = list(dict.fromkeys(n.runtime for n in networks))
    return [
        MeasuredSet(
            runtime,
            [network_kernels(n) for n in networks if n.runtime == runtime],
            [n.latency_ms for n in networks if n.runtime == runtime],
            scale,
        )
        for runtime in runtimes
    ]
