"""Timing modules in onnxruntime on this machine, robust to a shared, noisy CPU.

Each module is exported to ONNX and run in its own session with fixed threads (see
`lglsearch.export.ort_session`). The timed runs of a batch of modules are interleaved: every round
visits all modules in a fresh random order and times a few runs of each, so a burst of load from
elsewhere lands on many modules a little instead of on one module a lot. A module's latency is the
median of its runs; the 10th and 90th percentiles are kept as its spread.

Runs use IOBinding with preallocated outputs, which removes most of the Python-side cost of a run,
so small ops are timed closer to what they cost inside a network.

The speed of a shared machine drifts over minutes by more than the error a table aims at, so
`time_anchored` times three fixed anchor ops in the same interleaved rounds as the real work and
expresses every result at the speed the anchors had when the table was started: a build's chunks,
and a validation run hours later, all speak the same units.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from lglsearch.cost.ops import op_input_shape, op_module
from lglsearch.export import export_onnx, ort_session

__all__ = ["ANCHOR_KEYS", "OrtRunner", "Timing", "time_anchored"]

ANCHOR_KEYS = (
    "embed:cin=3,c=32,k=4,hw=224",
    "local_agg:c=64,r=4,hw=28",
    "self_attn:c=96,h=2,sr=2,r=4,hw=14,s=pick,p=tconv",
)
"""A memory-bound conv, a conv block and an attention block: the machine-speed reference."""


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int


def _bound_run(session: ort.InferenceSession, example: np.ndarray) -> Callable[[], None]:
    """A zero-argument run of `session` on `example` with inputs and outputs bound once."""
    out = session.run(None, {session.get_inputs()[0].name: example})[0]
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, example)
    binding.bind_ortvalue_output(session.get_outputs()[0].name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(out)))
    return lambda: session.run_with_iobinding(binding)


@dataclass(frozen=True)
class OrtRunner:
    """Times modules at batch 1 in onnxruntime (fp32, CPU, `threads` intra-op threads)."""

    threads: int = 1
    warmup: int = 10
    runs: int = 60
    rounds: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("threads", "runs", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")

    def time(
        self,
        modules: Mapping[str, tuple[nn.Module, tuple[int, ...]]],
        on_exported: Callable[[str], None] | None = None,
    ) -> dict[str, Timing]:
        """Median latency of each `name -> (module, input shape)`, timed interleaved."""
        rng = np.random.default_rng(self.seed)
        runs, samples = {}, {}
        with tempfile.TemporaryDirectory(prefix="lglsearch-ort-") as tmp:
            for i, (name, (module, shape)) in enumerate(modules.items()):
                example = torch.randn(shape, generator=torch.Generator().manual_seed(i))
                path = export_onnx(module.eval(), example, Path(tmp) / f"op{i}.onnx")
                runs[name] = _bound_run(ort_session(path, threads=self.threads), example.numpy())
                for _ in range(self.warmup):
                    runs[name]()
                samples[name] = []
                if on_exported:
                    on_exported(name)
            names = list(runs)
            per_round = -(-self.runs // self.rounds)
            for _ in range(self.rounds):
                for j in rng.permutation(len(names)):
                    run, out = runs[names[j]], samples[names[j]]
                    run()  # one untimed run: caches warm again after the previous module
                    for _ in range(per_round):
                        start = time.perf_counter()
                        run()
                        out.append(time.perf_counter() - start)
        result = {}
        for name, values in samples.items():
            ms = np.asarray(values) * 1e3
            result[name] = Timing(
                float(np.median(ms)), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)), len(ms)
            )
        return result


def time_anchored(
    runner: OrtRunner,
    modules: Mapping[str, tuple[nn.Module, tuple[int, ...]]],
    reference: Mapping[str, float] | None = None,
    on_exported: Callable[[str], None] | None = None,
) -> tuple[dict[str, Timing], float, dict[str, float]]:
    """Time `modules` with the anchors; return (timings at reference speed, speed, reference).

    speed = geometric mean over the anchors of (median now / median in `reference`); with no
    reference the anchors' times now become it (speed 1).
    """
    anchors = {f"anchor/{k}": (op_module(k), op_input_shape(k)) for k in ANCHOR_KEYS}
    timings = runner.time({**modules, **anchors}, on_exported)
    now = {k: timings[f"anchor/{k}"].median_ms for k in ANCHOR_KEYS}
    reference = dict(reference) if reference else now
    speed = float(np.exp(np.mean([np.log(now[k] / reference[k]) for k in ANCHOR_KEYS])))
    scaled = {
        name: Timing(t.median_ms / speed, t.p10_ms / speed, t.p90_ms / speed, t.runs)
        for name, t in timings.items()
        if name in modules
    }
    return scaled, speed, reference
