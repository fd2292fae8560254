"""Files: where the user cache is, and writing results so that an interruption never leaves a
half-written file (the one helper for it)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_save_torch", "atomic_savefig", "atomic_write", "atomic_write_json", "cache_dir"]


def cache_dir() -> Path:
    """The user cache of built tables and trained supernets: $LGLSEARCH_CACHE, else
    $XDG_CACHE_HOME/lglsearch, else ~/.cache/lglsearch."""
    root = os.environ.get("LGLSEARCH_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lglsearch"


def atomic_write(path: str | Path, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` through a temporary file in the same directory and a rename:
    readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file: a power cut leaves the old one
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for every user of the machine
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: str | Path, value: Any) -> None:
    """`value` as indented JSON, written atomically (non-JSON values by their `str`)."""
    atomic_write(path, json.dumps(value, indent=2, default=str) + "\n")


def atomic_savefig(figure: Any, path: str | Path) -> None:
    """A matplotlib figure saved atomically, in the format of the path's suffix."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png")
    atomic_write(path, buffer.getvalue())


def atomic_save_torch(value: Any, path: str | Path) -> None:
    """`torch.save(value)` written atomically (checkpoints: a kill mid-save keeps the last whole one)."""
    import torch  # only the writers of checkpoints pay for it

    buffer = io.BytesIO()
    torch.save(value, buffer)
    atomic_write(path, buffer.getvalue())
