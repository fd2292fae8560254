"""Seconds to price an ONNX model on a phone table (`predict --onnx` without the CLI's start-up).

Exports a few networks (timm, built without weights, and the EdgeViT presets) to ONNX in a
temporary folder with both exporters, then times `price_onnx` on each (the graph read, its
constants folded, shapes inferred, split into kernels and priced) over `--repeats` runs, and
prints the median with the network's kernel count and price. One thread. Usage:

    python benchmarks/onnx_pricing_speed.py [--device snapdragon888] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import timm
import torch

from lglsearch.cost.pricing import network_model, price_onnx
from lglsearch.cost.table import CostTable
from lglsearch.export import export_onnx
from lglsearch.nn import build_model
from lglsearch.space import PRESETS

NETWORKS = {
    "resnet18": lambda: timm.create_model("resnet18"),
    "mobilenetv2_100": lambda: timm.create_model("mobilenetv2_100"),
    "deit_tiny_patch16_224": lambda: timm.create_model("deit_tiny_patch16_224"),
    "swin_tiny_patch4_window7_224": lambda: timm.create_model("swin_tiny_patch4_window7_224"),
    **{name: (lambda a=arch: build_model(a)) for name, arch in PRESETS.items()},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="snapdragon888")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = network_model(CostTable.load(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in NETWORKS.items():
            net = make().eval()
            for exporter in ("torchscript", "dynamo"):
                path = Path(tmp) / f"{name}-{exporter}.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export_onnx(net, torch.randn(1, 3, 224, 224), path, exporter=exporter)
                seconds = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    price = price_onnx(model, path)
                    seconds.append(time.perf_counter() - start)
                print(
                    f"{name:30s} {exporter:11s} {np.median(seconds):6.2f} s/model (range {min(seconds):.2f}-"
                    f"{max(seconds):.2f})  {price.kernels:4d} kernels  {price.latency_ms:8.1f} ms on {args.device}"
                )


if __name__ == "__main__":
    main()
