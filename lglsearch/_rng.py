"""Seeding without touching the caller's random state.

Training and export seed torch's global generator (weight init, augmentations and drop path draw from it);
doing that bare would change the random numbers of a program that imports lglsearch. `seeded`
forks the generators, seeds them and restores the caller's state on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's CPU and CUDA generators seeded with `seed` inside, the caller's state restored after."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        yield
