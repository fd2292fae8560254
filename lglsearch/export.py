"""ONNX export of an `Arch`'s model, checked against PyTorch in onnxruntime.

The one module that knows onnxruntime session options (later issues time ops through it).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from lglsearch.errors import LglsearchError
from lglsearch.nn import EdgeViT, build_model, load_checkpoint
from lglsearch.space import Arch

__all__ = ["ExportResult", "export_arch", "export_onnx", "ort_session", "read_checkpoint"]

Exporter = Literal["torchscript", "dynamo"]
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    max_abs_diff: float
    """Largest |onnxruntime - torch| over the logits on one random input."""


def read_checkpoint(path: str | Path) -> dict:
    """A state dict from a file saved with torch.save (ours, or the reference's)."""
    path = Path(path)
    if not path.is_file():
        raise LglsearchError(f"checkpoint {path} does not exist; give the path of a state dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise LglsearchError(
            f"checkpoint {path} could not be read ({type(err).__name__}); give a state dict saved with torch.save"
        ) from None
    if not isinstance(state, dict):
        raise LglsearchError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def ort_session(path: str | Path, threads: int = 1):  # -> onnxruntime.InferenceSession
    """An onnxruntime CPU session with a fixed number of intra-op threads and full optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    opset: int = MIN_OPSET,
    exporter: Exporter = "torchscript",
) -> Path:
    """Write `module` (eval mode, batch dimension dynamic) to an ONNX file, atomically."""
    if opset < MIN_OPSET:
        raise LglsearchError(f"opset must be >= {MIN_OPSET}, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter is deprecated but ~10x faster for these small graphs,
            # which matters when a latency table exports hundreds of ops
            warnings.simplefilter("ignore")
            if exporter == "torchscript":
                torch.onnx.export(
                    module,
                    (example,),
                    tmp,
                    opset_version=opset,
                    dynamo=False,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                )
            else:
                # the dynamo exporter starts at opset 18: asked for 17, onnx's version converter
                # fails loudly on this graph and the file keeps 18 anyway
                program = torch.onnx.export(
                    module, (example,), dynamo=True, opset_version=max(opset, 18), verbose=False
                )
                program.save(tmp, external_data=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def export_arch(
    arch: Arch,
    path: str | Path,
    *,
    state_dict: dict | None = None,
    source: str = "checkpoint",
    opset: int = MIN_OPSET,
    exporter: Exporter = "torchscript",
    seed: int = 0,
) -> ExportResult:
    """Export the model of `arch` (optionally with weights) and check it in onnxruntime."""
    torch.manual_seed(seed)
    model: EdgeViT = build_model(arch).eval()
    if state_dict is not None:
        load_checkpoint(model, state_dict, source)
    example = torch.randn(1, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(seed))
    out = export_onnx(model, example, path, opset=opset, exporter=exporter)
    with torch.no_grad():
        expected = model(example).numpy()
    session = ort_session(out)
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    return ExportResult(out, _opset_of(out), float(np.abs(got - expected).max()))


def _opset_of(path: Path) -> int:
    """The default-domain opset the file declares (the dynamo exporter may keep a newer one)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
