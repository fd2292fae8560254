"""Splitting a benchmark's trainings over processes: these proxy models are too small to use more
than one core well, so n one-thread trainers on n cores finish sooner than one trainer on all of
them. Each shard takes a fixed part of the whole job list and merges its results into the shared
JSON file under a lock."""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from lglsearch._files import atomic_write_json

T = TypeVar("T")


def shard_arg(text: str) -> tuple[int, int]:
    """argparse type of `--shard K/N`."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N (e.g. 0/2), got {text!r}")
    return int(k), int(n)


def mine(jobs: Sequence[T], shard: tuple[int, int]) -> list[T]:
    """Shard k of n's jobs: every n-th from the k-th of the *whole* list, so that shards started at
    different times (and so seeing different jobs done) agree on who does what."""
    return [job for i, job in enumerate(jobs) if i % shard[1] == shard[0]]


def record(path: Path, keys: Sequence[str], value: Any, empty: dict | None = None) -> None:
    """Set `value` at `keys` of the JSON file `path`, re-read and written under an flock, so that
    concurrent shards never drop each other's results (`empty`: the file's shape before any)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.is_file() else copy.deepcopy(empty or {})
        node = results
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        atomic_write_json(path, results)
