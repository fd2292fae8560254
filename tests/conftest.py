"""Shared fixtures: paths to ../shared (tests may read it; the product never does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
