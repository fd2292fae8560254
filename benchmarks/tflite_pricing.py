"""Pricing a .tflite file on a phone table (`predict --tflite`): how long it takes, and what it says.

Converts an EdgeViT preset (default edgevit_xxs, at its 224 px) to TFLite with litert-torch twice,
as shipped (DepthwisePatchSpread) and with the reference's depthwise ConvTranspose2d swapped back
(benchmarks/tflite_propagation.py's `with_conv_transpose`, the same tensors), its parameters first
drawn from [0.5, 1.5) so that the converter drops no zero bias or unit scale a trained model would
have. For each file it times `tflite_kernels` (the file read by LiteRT's interpreter and split) and
`price_kernels` over `--repeats` runs (median), and prints the price beside the table's own price
of the arch (`CostTable.latency`, its op keys) and the price of the same model's ONNX export
(`price_onnx`), with the kernel types that make the difference. One thread; needs the extra
(pip install "lglsearch[tflite]"). Usage:

    OMP_NUM_THREADS=1 python benchmarks/tflite_pricing.py [--arch edgevit_xxs] [--device snapdragon888]
        [--repeats 5]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from tflite_propagation import with_conv_transpose  # this folder is on sys.path when the script runs
from torch import nn

from lglsearch.cost.pricing import network_model, price_kernels, price_onnx
from lglsearch.cost.table import CostTable
from lglsearch.cost.tflite_graph import tflite_kernels
from lglsearch.export import export_onnx, export_tflite
from lglsearch.nn import build_model
from lglsearch.space import parse_arch


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
    return model.eval()


def _timed(fn, repeats: int) -> tuple[object, float]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="edgevit_xxs", help="preset name or arch spec (default edgevit_xxs)")
    parser.add_argument("--device", default="snapdragon888")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    arch = parse_arch(args.arch)
    table = CostTable.load(args.device)
    model = network_model(table)
    table_ms = table.latency(arch)
    size = arch.resolution
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    print(
        f"{args.arch} (arch {arch.id}) at {size} px on {table.device} ({model.runtime}); "
        f"litert-torch {version('litert-torch')}, ai-edge-litert {version('ai-edge-litert')}; "
        f"{args.repeats} repeats, median, 1 thread"
    )
    print(f"table price (CostTable.latency, the arch's op keys): {table_ms:.2f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("patch_spread", "conv_transpose"):
            net = _randomise(build_model(arch), args.seed)
            if name == "conv_transpose":
                net = with_conv_transpose(net)
            start = time.perf_counter()
            path = export_tflite(net, x, Path(tmp) / f"{name}.tflite")
            convert_s = time.perf_counter() - start
            kernels, split_s = _timed(lambda p=path: tflite_kernels(p), args.repeats)
            price, price_s = _timed(lambda k=kernels: price_kernels(model, k), args.repeats)
            onnx = export_onnx(net, x, Path(tmp) / f"{name}.onnx")
            onnx_price = price_onnx(model, onnx)
            counts = collections.Counter(k.type for k in kernels)
            label = "DepthwisePatchSpread (shipped)" if name == "patch_spread" else "ConvTranspose2d (reference)"
            print(f"\n{label}: {path.stat().st_size:,} bytes, converted in {convert_s:.1f} s")
            print(
                f"  tflite_kernels {split_s:.3f} s + price_kernels {price_s:.3f} s = {split_s + price_s:.3f} s "
                f"for {len(kernels)} kernels"
            )
            print(
                f"  price via .tflite {price.latency_ms:.2f} ms = {price.latency_ms / table_ms:.2f} x the table's; "
                f"via .onnx {onnx_price.latency_ms:.2f} ms ({onnx_price.kernels} kernels); "
                f"{100 * price.outside_share:.0f}% of the .tflite price outside the fitted sizes"
            )
            types = sorted(set(price.by_type) | set(onnx_price.by_type), key=lambda t: -price.by_type.get(t, 0.0))
            print("  kernel type: count, ms via .tflite | ms via .onnx")
            for kind in types:
                print(
                    f"    {kind:<12} {counts.get(kind, 0):>5} {price.by_type.get(kind, 0.0):>8.3f} | "
                    f"{onnx_price.by_type.get(kind, 0.0):>8.3f}"
                )


if __name__ == "__main__":
    main()
