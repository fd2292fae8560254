"""ONNX export of an `Arch`'s model, checked against PyTorch in onnxruntime; TFLite export, checked
in the LiteRT interpreter (the optional `tflite` extra: litert-torch and ai-edge-litert).

The one module that knows onnxruntime session options (later issues time ops through it).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lglsearch._files import atomic_write
from lglsearch._rng import seeded
from lglsearch.errors import LglsearchError
from lglsearch.nn import EdgeViT, build_model, load_checkpoint
from lglsearch.space import Arch

__all__ = [
    "ExportResult",
    "TFLiteExportResult",
    "export_arch",
    "export_arch_tflite",
    "export_onnx",
    "export_tflite",
    "ort_session",
    "read_checkpoint",
    "require_litert",
    "tflite_interpreter",
    "tflite_op_counts",
]

Exporter = Literal["torchscript", "dynamo"]
_MIN_OPSET = 17
# The largest |onnxruntime - torch| an export may show, relative to the output's scale (its largest
# |logit|). Both run the same fp32 graph; only the order of additions and fused kernels differ, which
# moves logits by about 1e-7-5e-7 of their scale here (tiny space and presets, random and randomised
# weights). 1e-3 leaves three orders of magnitude for deeper or trained nets, while a wrong export
# (an op with other semantics, a branch frozen by tracing, lost weights) moves logits by about their scale.
MAX_RELATIVE_DIFF = 1e-3
_TFLITE_FIX = 'pip install "lglsearch[tflite]"'
# torch's boilerplate around the reason a weights_only load failed (the reason is a later line)
_BOILERPLATE = ("Weights only load failed", "(1) ", "(2) ", "Please file an issue", "Check the documentation")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    max_abs_diff: float
    """Largest |onnxruntime - torch| over the logits on a fresh random input (not the one traced)."""
    tolerance: float
    """The largest difference the export was allowed: MAX_RELATIVE_DIFF x the largest |logit|."""


@dataclass(frozen=True)
class TFLiteExportResult:
    path: Path
    max_abs_diff: float
    """Largest |LiteRT - torch| over the logits on a fresh random input (not the one converted with)."""
    tolerance: float
    """The largest difference the export was allowed: MAX_RELATIVE_DIFF x the largest |logit|."""
    ops: dict[str, int]
    """How many ops of each TFLite type the graph holds (`tflite_op_counts`)."""


def read_checkpoint(path: str | Path) -> dict:
    """A state dict from a file saved with torch.save (ours, or the reference's)."""
    path = Path(path)
    if not path.is_file():
        raise LglsearchError(f"checkpoint {path} does not exist; give the path of a state dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise LglsearchError(
            f"checkpoint {path} could not be read ({_reason(err)}); give a state dict saved with torch.save "
            "(only tensors and plain containers are loaded: anything else could run code)"
        ) from None
    if not isinstance(state, dict):
        raise LglsearchError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def _reason(err: Exception) -> str:
    """The exception's type and the first sentence of its message that says why (torch's advice to
    load the file unsafely left out), at most 200 characters."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]
    reasons = [line.removeprefix("WeightsUnpickler error:").strip() for line in lines if line]
    reasons = [line for line in reasons if line and not line.startswith(_BOILERPLATE)]
    why = reasons[0].split(". ")[0].rstrip(".") if reasons else ""
    why = why if len(why) <= 200 else why[:197] + "..."
    return f"{type(err).__name__}: {why}" if why else type(err).__name__


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
    opset: int = _MIN_OPSET,
    exporter: Exporter = "torchscript",
) -> Path:
    """Write `module` (eval mode, batch dimension dynamic) to an ONNX file, atomically."""
    if opset < _MIN_OPSET:
        raise LglsearchError(f"opset must be >= {_MIN_OPSET}, got {opset}")
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


def _arch_model(arch: Arch, state_dict: dict | None, source: str, seed: int) -> tuple[EdgeViT, torch.Generator]:
    """The arch's model in eval mode (seeded init, then the checkpoint if any) and the generator
    whose draws are the traced input and then the fresh input of the check."""
    with seeded(seed):  # a seeded init that leaves the caller's RNG as it was
        model: EdgeViT = build_model(arch).eval()
    if state_dict is not None:
        load_checkpoint(model, state_dict, source)
    return model, torch.Generator().manual_seed(seed)


def _check_close(
    got: np.ndarray, expected: np.ndarray, out: Path, what: str, arch: Arch, hint: str
) -> tuple[float, float]:
    """(max |got - expected|, tolerance); an export over MAX_RELATIVE_DIFF x the largest |logit| is
    an error and its file is removed."""
    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    tolerance = MAX_RELATIVE_DIFF * scale
    if not diff <= tolerance:  # NaN fails too
        out.unlink(missing_ok=True)
        runtime = "onnxruntime" if what == "ONNX" else "LiteRT"
        raise LglsearchError(
            f"the {what} export of arch {arch.id} does not compute the model: {runtime} and torch differ by up "
            f"to {diff:.3g} on a fresh input, more than {MAX_RELATIVE_DIFF:g} x the largest |logit| {scale:.3g}; "
            f"{out} was not kept{hint}"
        )
    return diff, tolerance


def export_arch(
    arch: Arch,
    path: str | Path,
    *,
    state_dict: dict | None = None,
    source: str = "checkpoint",
    opset: int = _MIN_OPSET,
    exporter: Exporter = "torchscript",
    seed: int = 0,
) -> ExportResult:
    """Export the model of `arch` (optionally with weights) and check it in onnxruntime.

    The check runs torch and onnxruntime on a fresh random input, not the one traced: a trace
    freezes whatever the traced input made the model do, so only another input shows it. An
    export that differs by more than `MAX_RELATIVE_DIFF` of the output's scale is an error, and
    its file is removed.
    """
    model, gen = _arch_model(arch, state_dict, source, seed)
    example = torch.randn(1, 3, arch.resolution, arch.resolution, generator=gen)
    out = export_onnx(model, example, path, opset=opset, exporter=exporter)
    session = ort_session(out)
    name, batch = session.get_inputs()[0].name, session.get_inputs()[0].shape[0]
    # the next draw of the generator, two images where the batch is dynamic (which checks it too)
    fresh = torch.randn(2 if isinstance(batch, str) else 1, 3, arch.resolution, arch.resolution, generator=gen)
    with torch.no_grad():
        expected = model(fresh).numpy()
    got = session.run(None, {name: fresh.numpy()})[0]
    if got.shape != expected.shape:  # a batch baked in would broadcast below and pass unseen
        out.unlink(missing_ok=True)
        raise LglsearchError(
            f"the ONNX export of arch {arch.id} gives outputs of shape {got.shape} for an input of batch "
            f"{len(fresh)}, where torch gives {expected.shape}; {path} was not kept"
        )
    hint = f" (try --exporter {'dynamo' if exporter == 'torchscript' else 'torchscript'})"
    diff, tolerance = _check_close(got, expected, out, "ONNX", arch, hint)
    return ExportResult(out, _opset_of(out), diff, tolerance)


def require_litert() -> tuple[Any, Any]:
    """The litert_torch converter and ai_edge_litert's interpreter module, imported on first use
    (they are the optional `tflite` extra, and heavy: jax, transformers); without them, an error
    that names the install command."""
    try:
        import litert_torch
        from ai_edge_litert import interpreter
    except ImportError as err:
        raise LglsearchError(
            f"TFLite export needs the tflite extra ({err.name or 'litert-torch'} is not installed): {_TFLITE_FIX}"
        ) from None
    return litert_torch, interpreter


def export_tflite(module: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Convert `module` (eval mode, the example's shape, batch included) to a TFLite fp32 file with
    litert-torch, written atomically."""
    litert_torch, _ = require_litert()
    path = Path(path)
    # the converter prints its progress on stdout: stderr keeps stdout for the caller's results
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        content = litert_torch.convert(module.eval(), (example,)).model_content()
    atomic_write(path, content)
    return path


def tflite_interpreter(path: str | Path, threads: int = 1, *, delegates: bool = True):  # -> Interpreter
    """A LiteRT interpreter of the file, tensors allocated: with its default delegate (XNNPACK, as a
    phone's CPU runs it), or without (`delegates=False`: the graph's own ops, one node each)."""
    _, interpreter = require_litert()
    resolver = (
        interpreter.OpResolverType.AUTO if delegates else interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    runner = interpreter.Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
    runner.allocate_tensors()
    return runner


def tflite_op_counts(path: str | Path) -> dict[str, int]:
    """How many ops of each TFLite type (TRANSPOSE_CONV, MUL, ...) the file's graph holds, as converted:
    before a delegate replaces them with its own nodes."""
    ops = tflite_interpreter(path, delegates=False)._get_ops_details()
    return dict(sorted(Counter(op["op_name"] for op in ops).items()))


def export_arch_tflite(
    arch: Arch,
    path: str | Path,
    *,
    state_dict: dict | None = None,
    source: str = "checkpoint",
    seed: int = 0,
) -> TFLiteExportResult:
    """Export the model of `arch` (optionally with weights) to TFLite (batch 1, fp32) and check it in
    the LiteRT interpreter as `export_arch` checks ONNX: on a fresh random input, within
    `MAX_RELATIVE_DIFF` of the output's scale, or an error and no file."""
    model, gen = _arch_model(arch, state_dict, source, seed)
    example = torch.randn(1, 3, arch.resolution, arch.resolution, generator=gen)
    out = export_tflite(model, example, path)
    fresh = torch.randn(1, 3, arch.resolution, arch.resolution, generator=gen)
    with torch.no_grad():
        expected = model(fresh).numpy()
    runner = tflite_interpreter(out)
    runner.set_tensor(runner.get_input_details()[0]["index"], fresh.numpy())
    runner.invoke()
    got = runner.get_tensor(runner.get_output_details()[0]["index"])
    if got.shape != expected.shape:
        out.unlink(missing_ok=True)
        raise LglsearchError(
            f"the TFLite export of arch {arch.id} gives outputs of shape {got.shape} where torch gives "
            f"{expected.shape}; {path} was not kept"
        )
    diff, tolerance = _check_close(got, expected, out, "TFLite", arch, "")
    return TFLiteExportResult(out, diff, tolerance, tflite_op_counts(out))


def _opset_of(path: Path) -> int:
    """The default-domain opset the file declares (the dynamo exporter may keep a newer one)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
