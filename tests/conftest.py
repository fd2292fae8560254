"""Shared fixtures: paths to ../shared (tests may read it; the product never does)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from lglsearch.space import Arch, Space, Stage

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "data" / "edgevit-reference"


def reference_layout(name: str) -> tuple[dict[str, tuple[int, ...]], int]:
    """(key -> shape, parameter count from the header) of a reference state-dict listing."""
    path = REFERENCE / f"{name}.state_dict.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not there (../shared is missing)")
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
