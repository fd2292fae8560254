"""EdgeViT's local propagation in TFLite: the depthwise ConvTranspose2d against DepthwisePatchSpread.

TFLite's TRANSPOSE_CONV has no groups, so litert-torch splits the reference's depthwise transposed
convolution into a SLICE and a TRANSPOSE_CONV per channel; `DepthwisePatchSpread` computes the same
function as a broadcast MUL and an ADD. This converts the arch's model both ways (same weights),
counts the TFLite ops by type (as converted, before a delegate), checks both against torch on a
fresh input and times them in the LiteRT interpreter (XNNPACK, as on a phone's CPU) and, for scale,
in onnxruntime, one thread each, here on this x86 host: not a phone timing. Needs the extra
(pip install "lglsearch[tflite]"). Usage:

    OMP_NUM_THREADS=1 python benchmarks/tflite_propagation.py [--arch edgevit_xxs] [--runs 20]
        [--out benchmarks/tflite_propagation/results.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lglsearch._files import atomic_write_json
from lglsearch._rng import seeded
from lglsearch.export import export_onnx, export_tflite, ort_session, tflite_interpreter, tflite_op_counts
from lglsearch.nn import build_model
from lglsearch.nn.blocks import DepthwisePatchSpread
from lglsearch.space import parse_arch


def with_conv_transpose(model: nn.Module) -> nn.Module:
    """The model with each DepthwisePatchSpread swapped back for the reference's ConvTranspose2d,
    holding the same tensors (the state dict is unchanged)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, DepthwisePatchSpread):
                dim, sr = child.weight.shape[0], child.sr
                conv = nn.ConvTranspose2d(dim, dim, kernel_size=sr, stride=sr, groups=dim)
                conv.weight, conv.bias = child.weight, child.bias
                setattr(module, name, conv)
    return model


RUNTIMES = {
    "litert": "LiteRT interpreter, XNNPACK delegate (its default)",
    "litert_builtin": "LiteRT interpreter, builtin kernels (no delegate)",
    "onnxruntime": "onnxruntime, CPU provider",
}


def prepare(model: nn.Module, x: torch.Tensor, fresh: torch.Tensor, folder: Path, name: str) -> tuple[dict, dict]:
    """The model's TFLite and ONNX files, checked on `fresh`: (its results so far, a runner per runtime)."""
    tflite = export_tflite(model, x, folder / f"{name}.tflite")
    onnx = export_onnx(model, x, folder / f"{name}.onnx")
    with torch.no_grad():
        expected = model(fresh).numpy()
    runners, diffs = {}, {}
    for runtime, delegates in (("litert", True), ("litert_builtin", False)):
        interpreter = tflite_interpreter(tflite, threads=1, delegates=delegates)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], fresh.numpy())
        interpreter.invoke()
        diffs[runtime] = float(
            np.abs(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]) - expected).max()
        )
        runners[runtime] = interpreter.invoke
    session = ort_session(onnx, threads=1)
    feed = {session.get_inputs()[0].name: fresh.numpy()}
    diffs["onnxruntime"] = float(np.abs(session.run(None, feed)[0] - expected).max())
    runners["onnxruntime"] = lambda: session.run(None, feed)
    ops = tflite_op_counts(tflite)
    result = {
        "tflite_ops": ops,
        "tflite_ops_total": sum(ops.values()),
        "tflite_bytes": tflite.stat().st_size,
        "max_abs_diff_vs_torch": diffs,
        "largest_abs_logit": float(np.abs(expected).max()),
    }
    return result, runners


def time_interleaved(runners: dict[str, dict], runs: int, warmup: int = 3) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per run of every (model, runtime), taken in alternating rounds, so that a slower
    spell of this shared host falls on all of them alike."""
    times: dict[str, dict[str, list[float]]] = {name: {rt: [] for rt in r} for name, r in runners.items()}
    for round_ in range(warmup + runs):
        for name, by_runtime in runners.items():
            for runtime, run in by_runtime.items():
                start = time.perf_counter()
                run()
                if round_ >= warmup:
                    times[name][runtime].append(1e3 * (time.perf_counter() - start))
    return times


def markdown(arch_id: str, results: dict) -> str:
    old, new = results["conv_transpose"], results["patch_spread"]
    types = sorted(set(old["tflite_ops"]) | set(new["tflite_ops"]), key=lambda t: -old["tflite_ops"].get(t, 0))
    lines = [
        f"TFLite ops of {arch_id} by type (litert-torch {results['versions']['litert-torch']}, as converted):",
        "",
        "| op | ConvTranspose2d (before) | DepthwisePatchSpread (after) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {t} | {old['tflite_ops'].get(t, 0)} | {new['tflite_ops'].get(t, 0)} |" for t in types]
    lines += [f"| **all** | **{old['tflite_ops_total']}** | **{new['tflite_ops_total']}** |", ""]
    lines += [
        f"Latency on this host ({results['host']}), 1 thread, median of {results['runs']} interleaved runs "
        "(not a phone timing):",
        "",
        "| runtime | ConvTranspose2d (before) ms | DepthwisePatchSpread (after) ms |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {label} | {old['ms_median'][rt]:.2f} | {new['ms_median'][rt]:.2f} |" for rt, label in RUNTIMES.items()
    ]
    lines += [
        "",
        f"Largest |runtime - torch| logit, before / after (largest |logit| {new['largest_abs_logit']:.2f}): "
        + ", ".join(
            f"{rt} {old['max_abs_diff_vs_torch'][rt]:.1e} / {new['max_abs_diff_vs_torch'][rt]:.1e}" for rt in RUNTIMES
        )
        + f". .tflite size: {old['tflite_bytes']:,} / {new['tflite_bytes']:,} bytes.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="edgevit_xxs", help="preset name or arch spec (default edgevit_xxs)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "tflite_propagation/results.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    arch = parse_arch(args.arch)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(1, 3, arch.resolution, arch.resolution, generator=gen)
    fresh = torch.randn(1, 3, arch.resolution, arch.resolution, generator=gen)
    results: dict = {
        "arch": arch.id,
        "runs": args.runs,
        "threads": 1,
        "host": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "versions": {p: version(p) for p in ("torch", "litert-torch", "ai-edge-litert", "onnxruntime")},
        "runtimes": RUNTIMES,
        "note": "timings on this x86 host, not a phone's",
    }
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("conv_transpose", "patch_spread"):
            with seeded(args.seed):
                model = build_model(arch).eval()
            if name == "conv_transpose":
                model = with_conv_transpose(model)
            results[name], runners[name] = prepare(model, x, fresh, Path(tmp), name)
        times = time_interleaved(runners, args.runs)
    for name, by_runtime in times.items():
        results[name]["ms"] = by_runtime
        results[name]["ms_median"] = {rt: statistics.median(t) for rt, t in by_runtime.items()}
    atomic_write_json(args.out, results)
    print(markdown(arch.id, results))


if __name__ == "__main__":
    main()
