"""Whole networks measured on a Pixel 4 against the phone latency model (issue 28; protocol in RESULTS.md).

Every network of `../shared/data/whole-models/` (102 CNNs, 19 ViTs: development data) is built
without weights (`pytorchcv` for the CNNs, `timm` for DeiT, ViT, Swin and EfficientFormer,
`transformers` for CvT), checked against the benchmark's MACs, split into the kernels TFLite runs
(`decompose`), and priced by each candidate model, each network by a fit that saw none of its family.
Writes the raw predictions and the summaries to `benchmarks/whole_models/results.json`. Usage:

    pip install pytorchcv transformers      # the model zoos; not lglsearch dependencies
    python benchmarks/whole_models.py [--data ../shared/data] [--only A,B]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lglsearch._files import atomic_write_json
from lglsearch.cost._metrics import error_summary
from lglsearch.cost._phone.derive import _sample_reference
from lglsearch.cost._phone.joint import JointKernelModel, MeasuredSet
from lglsearch.cost._phone.phone_kernels import PhoneKernelModel, heldout_mask, reference_kernels
from lglsearch.cost._phone.reference import load_reference, reference_class
from lglsearch.cost.kernels import Kernel, KernelModel, decompose

HERE = Path(__file__).resolve().parent
COLUMN = "pixel4|1med|float|mean"
RUNTIMES = {"cnn": "TFLite 2.10", "vit": "TFLite 2.15"}

_TIMM = {  # benchmark name -> (timm name, arguments, input size); in21k models carry no classifier
    "deit-base-distilled-patch16-224": ("deit_base_distilled_patch16_224", {}, 224),
    "deit-base-distilled-patch16-384": ("deit_base_distilled_patch16_384", {}, 384),
    "deit-small-distilled-patch16-224": ("deit_small_distilled_patch16_224", {}, 224),
    "deit-tiny-distilled-patch16-224": ("deit_tiny_distilled_patch16_224", {}, 224),
    "efficientformer-l1-300": ("efficientformer_l1", {}, 224),
    "efficientformer-l3-300": ("efficientformer_l3", {}, 224),
    "efficientformer-l7-300": ("efficientformer_l7", {}, 224),
    "swin-base-patch4-window12-384": ("swin_base_patch4_window12_384", {}, 384),
    "swin-base-patch4-window7-224": ("swin_base_patch4_window7_224", {}, 224),
    "swin-small-patch4-window7-224": ("swin_small_patch4_window7_224", {}, 224),
    "swin-tiny-patch4-window7-224": ("swin_tiny_patch4_window7_224", {}, 224),
    "vit-base-patch16-224-in21k": ("vit_base_patch16_224", {"num_classes": 0}, 224),
    "vit-base-patch16-384": ("vit_base_patch16_384", {}, 384),
    "vit-base-patch32-224-in21k": ("vit_base_patch32_224", {"num_classes": 0}, 224),
    "vit-base-patch32-384": ("vit_base_patch32_384", {}, 384),
}


def family(name: str) -> str:
    """The protocol's family: the name's leading letters, with a `v<digit>` kept."""
    stem = re.match(r"[a-z]+", name).group(0)  # type: ignore[union-attr]
    rest = name[len(stem) :]
    return stem + rest[0] if stem.endswith("v") and rest[:1].isdigit() else stem


def _build(name: str, group: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if group == "cnn":
            from pytorchcv.model_provider import get_model

            return get_model(name, pretrained=False), (1, 3, 224, 224)
        if name.startswith("cvt"):
            from transformers import CvtConfig, CvtForImageClassification

            config = CvtConfig() if name.startswith("cvt-13") else CvtConfig(depth=[1, 4, 16])  # cvt-21
            size = 384 if name.endswith("384") else 224
            return CvtForImageClassification(config), (1, 3, size, size)
        import timm

        timm_name, kwargs, size = _TIMM[name]
        return timm.create_model(timm_name, pretrained=False, **kwargs), (1, 3, size, size)


def load_dev(data: Path) -> pd.DataFrame:
    """The development networks with their measured ms, family, runtime, MACs check and kernels."""
    frames = []
    for group, file in (("cnn", "pixel4_tflite_cnn.csv"), ("vit", "pixel4_tflite_vit_dev.csv")):
        frame = pd.read_csv(data / "whole-models" / file)
        frames.append(frame.assign(group=group))
    rows = []
    for _, r in pd.concat(frames, ignore_index=True).iterrows():
        module, shape = _build(r["model"], r["group"])
        kernels = tuple(decompose(module, shape))
        macs = sum(k.macs for k in kernels)
        ratio = macs / (r["FLOPS"] / 2)
        if not 0.95 < ratio < 1.05:
            raise SystemExit(f"{r['model']}: our MACs are {ratio:.3f} x the benchmark's; the mapping is wrong")
        rows.append(
            {
                "model": r["model"],
                "group": r["group"],
                "family": family(r["model"]),
                "measured_ms": r[COLUMN] / 1e3,
                "std_ms": r[COLUMN.replace("mean", "std")] / 1e3,
                "macs": macs,
                "params": sum(p.numel() for p in module.parameters()),
                "macs_ratio": ratio,
                "kernels": kernels,
            }
        )
    return pd.DataFrame(rows)


@functools.cache
def reference_sample(data: Path) -> tuple[tuple[tuple[Kernel, ...], ...], np.ndarray]:
    """The snapdragon855 reference blocks a table's joint fit uses: the shipped tables' sample (600
    per class, seed 0) less the blocks it holds out (0.2 of each class, `heldout_mask`)."""
    reference = load_reference(data / "phone-luts" / "pixel4-snapdragon855.json")
    keys = _sample_reference(reference, 600, 0)
    test = heldout_mask([reference_class(k) for k in keys], 0.2, 0)
    keys = [k for k, held in zip(keys, test, strict=True) if not held]
    return tuple(reference_kernels(k) for k in keys), np.array([reference[k] for k in keys])


# --- candidates: each maps (the fit's networks, the networks to predict) to predicted ms ------------

Predictor = Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]


def _per_runtime(fit: pd.DataFrame, new: pd.DataFrame, fit_pred: np.ndarray, new_pred: np.ndarray) -> np.ndarray:
    """`new_pred` times, per runtime, the median measured / predicted of that runtime's fitted networks."""
    out = np.empty(len(new))
    for group in RUNTIMES:
        rows, fitted = (new["group"] == group).to_numpy(), (fit["group"] == group).to_numpy()
        factor = np.median(fit["measured_ms"].to_numpy()[fitted] / fit_pred[fitted]) if fitted.any() else 1.0
        out[rows] = new_pred[rows] * factor
    return out


def proportional(column: str) -> Predictor:
    def predict(fit: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
        return _per_runtime(fit, new, fit[column].to_numpy(float), new[column].to_numpy(float))

    return predict


@functools.cache
def shipped_model() -> KernelModel:
    """The all-class fit of the snapdragon855 table as shipped before issue 28 (kept beside the results)."""
    stored = json.loads((HERE / "whole_models" / "kernel_model_before.json").read_text())["model"]
    return PhoneKernelModel.from_dict(stored).base


def shipped(fit: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:  # A
    return shipped_model().predict(list(new["kernels"]))


def shipped_factored(fit: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:  # B
    model = shipped_model()
    return _per_runtime(fit, new, model.predict(list(fit["kernels"])), model.predict(list(new["kernels"])))


def measured_sets(networks: pd.DataFrame, scale: float = 1.0) -> list[MeasuredSet]:
    """The networks as one measured set per runtime (CNNs first: without blocks its factor is 1)."""
    return [
        MeasuredSet(RUNTIMES[g], list(rows["kernels"]), rows["measured_ms"].to_numpy(), scale)
        for g, rows in ((g, networks[networks["group"] == g]) for g in RUNTIMES)
        if len(rows)
    ]


def fit_joint(data: Path, networks: pd.DataFrame, with_blocks: bool = True) -> JointKernelModel:
    """The joint model on the snapdragon855 sample and `networks`, pricing the ViTs' runtime."""
    blocks, block_ms = reference_sample(data) if with_blocks else ((), np.zeros(0))
    return JointKernelModel.fit(blocks, block_ms, measured_sets(networks), runtime=RUNTIMES["vit"])


def joint(data: Path, with_blocks: bool) -> Predictor:  # C, D
    def predict(fit: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
        model = fit_joint(data, fit, with_blocks)
        priced = model.predict(list(new["kernels"]))
        return priced * np.array([model.runtime_scale(RUNTIMES[g]) for g in new["group"]])

    return predict


def leave_family_out(dev: pd.DataFrame, predictor: Predictor, progress: str = "") -> np.ndarray:
    """Each network predicted by a fit on every other family (both groups)."""
    out = np.empty(len(dev))
    families = sorted(set(dev["family"]))
    for i, fam in enumerate(families):
        held = (dev["family"] == fam).to_numpy()
        out[held] = predictor(dev[~held], dev[held])
        if progress:
            print(f"\r{progress}: {i + 1}/{len(families)} families", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return out


def summaries(dev: pd.DataFrame, predicted: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for group in RUNTIMES:
        rows = (dev["group"] == group).to_numpy()
        out[group] = {k: round(v, 4) for k, v in error_summary(predicted[rows], dev["measured_ms"][rows]).items()}
    return out


def _line(name: str, group: str, s: dict[str, float]) -> str:
    return (
        f"{name:32s} {group:3s} n={s['n']:3d}  within +-10/20/25/30%: {100 * s['within_10pct']:5.1f} "
        f"{100 * s['within_20pct']:5.1f} {100 * s['within_25pct']:5.1f} {100 * s['within_30pct']:5.1f}  "
        f"MAPE {100 * s['mape']:5.1f}%  median ratio {s['median_ratio']:.3f}  Spearman {s['spearman']:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--only", default="", help="comma-separated candidate letters (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "whole_models" / "results.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    dev = load_dev(args.data)
    print(f"built and split {len(dev)} networks in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    candidates: dict[str, tuple[str, Predictor]] = {
        "MACs": ("MACs alone (one ratio per runtime)", proportional("macs")),
        "params": ("parameters alone (one ratio per runtime)", proportional("params")),
        "A": ("shipped snapdragon855 kernel model", shipped),
        "B": ("A x one factor per runtime", shipped_factored),
        "C": ("joint fit: blocks + networks", joint(args.data, True)),
        "D": ("joint fit: networks only", joint(args.data, False)),
    }
    only = set(filter(None, args.only.split(",")))
    previous = json.loads(args.out.read_text()) if only and args.out.is_file() else {}
    results: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "column": COLUMN,
        "networks": dev[["model", "group", "family", "measured_ms", "std_ms", "macs", "params", "macs_ratio"]]
        .assign(kernels=[len(k) for k in dev["kernels"]])
        .to_dict("records"),
        "noise_floor": {
            g: round(float((dev["std_ms"] / dev["measured_ms"])[dev["group"] == g].median()), 5) for g in RUNTIMES
        },
        "candidates": dict(previous.get("candidates", {})),  # --only replaces the candidates it runs
    }
    for key, (label, predictor) in candidates.items():
        if only and key not in only:
            continue
        predicted = leave_family_out(dev, predictor, progress=key)
        summary = summaries(dev, predicted)
        results["candidates"][key] = {"label": label, "summary": summary, "predicted_ms": predicted.round(4).tolist()}
        for group, s in summary.items():
            print(_line(f"{key} {label}"[:32], group, s))
    print(f"noise floor (median std/mean of the benchmark's runs): {results['noise_floor']}")
    atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
