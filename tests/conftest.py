"""Shared fixtures: paths to ../shared (tests may read it; the product never does), and small
IDX data sets cut from the embedded proxy for tests that score many archs.

A test that needs ../shared calls `require_shared`: on a developer's machine without it the test
skips, but under CI (`CI=true`, where ../shared is always present) a missing path is a failure, so
that a broken checkout cannot turn those tests into silent skips.
"""

from __future__ import annotations

import builtins
import itertools
import os
import re
from pathlib import Path

import numpy as np
import pytest

from lglsearch.space import Arch, Space, Stage

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "data" / "edgevit-reference"
POWER = SHARED / "data" / "power" / "README.md"


def under_ci() -> bool:
    """Whether the tests run under CI (CI=true, as GitHub Actions, GitLab and most runners set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_shared(path: Path) -> Path:
    """`path` (a file or folder of ../shared) if it is there; else skip, or fail under CI."""
    if path.exists():
        return path
    message = f"{path} is not there (../shared is missing)"
    if under_ci():
        pytest.fail(f"{message}; CI=true, where ../shared is always present")
    pytest.skip(message)


def profile_power_w(phone: str) -> tuple[float, ...]:
    """Active power (W) of the candidate cores of `phone`'s reference timings, from the per-core
    power-profile table of ../shared/data/power/README.md (the "W at 3.85 V" column: one figure,
    or "A76 / X1" where the mask leaves two candidates)."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in require_shared(POWER).read_text().splitlines()
        if line.startswith("|")
    ]
    header = next(row for row in rows if row[0] == "phone (SoC)")
    row = next(row for row in rows if row[0].startswith(phone) and len(row) == len(header))
    return tuple(float(w) for w in row[header.index("W at 3.85 V")].split(" / "))


def reference_layout(name: str) -> tuple[dict[str, tuple[int, ...]], int]:
    """(key -> shape, parameter count from the header) of a reference state-dict listing."""
    path = require_shared(REFERENCE / f"{name}.state_dict.txt")
    lines = path.read_text().splitlines()
    declared = int(re.search(r"; (\d+) parameters", lines[0])[1])
    layout = {}
    for line in lines[1:]:
        key, shape = line.split(" ", 1)
        layout[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return layout, declared


def enumerate_space(space: Space) -> set[Arch]:
    """Every arch of a space by brute force (independent of Space.size's closed form)."""
    per_stage = []
    for ch in space.stages:
        options = []
        for depth, width, ratio, heads, sr in itertools.product(ch.depth, ch.width, ch.mlp_ratio, ch.heads, ch.sr):
            if width % heads:
                continue
            for kinds in itertools.product(ch.kinds, repeat=depth):
                options.append(Stage(width=width, heads=heads, sr=sr, mlp_ratio=ratio, kinds=kinds))
        per_stage.append(options)
    return {
        Arch(stages=stages, resolution=space.resolution, num_classes=space.num_classes, sampler=s, propagation=p)
        for stages in itertools.product(*per_stage)
        for s in space.sampler
        for p in space.propagation
    }


def write_idx_subset(out: Path, train_per_class: int, val_per_class: int) -> Path:
    """Fashion-MNIST IDX files (train, t10k) of the first images of each class of the embedded
    proxy's splits: scoring 10 x `val_per_class` images instead of 5,000 keeps search tests quick."""
    from lglsearch.train.data import _proxy_path

    out.mkdir(parents=True, exist_ok=True)
    with np.load(_proxy_path()) as archive:
        arrays = {k: archive[k] for k in archive.files}

    def idx(array: np.ndarray, magic: int) -> bytes:
        return b"".join(n.to_bytes(4, "big") for n in (magic, *array.shape)) + array.astype(np.uint8).tobytes()

    for split, stem, per_class in (("train", "train", train_per_class), ("val", "t10k", val_per_class)):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        picked = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
        (out / f"{stem}-images-idx3-ubyte").write_bytes(idx(x[picked], 2051))
        (out / f"{stem}-labels-idx1-ubyte").write_bytes(idx(y[picked], 2049))
    return out


@pytest.fixture
def without_litert(monkeypatch):
    """The optional TFLite extra made unimportable, as on a core install."""
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] in ("litert_torch", "ai_edge_litert"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
