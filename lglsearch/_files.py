"""Files: where the user cache is, and writing results so that an interruption never leaves a
half-written file (the one helper for it)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lglsearch.errors import LglsearchError

__all__ = [
    "atomic_save_torch",
    "atomic_savefig",
    "atomic_write",
    "atomic_write_json",
    "cache_dir",
    "check_output",
]

_TEMP_RANDOM = 8
"""The characters `tempfile.mkstemp` adds to a temporary name's prefix and suffix."""


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
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
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


def _name_max(directory: Path) -> int:
    """The longest file name (in bytes) the filesystem of `directory` (or its nearest existing
    ancestor) takes: 255 on the usual ones."""
    for folder in (directory, *directory.parents):
        try:
            return os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):  # missing, not POSIX, or no such limit
            continue
    return 255


def _temp_prefix(path: Path) -> str:
    """The atomic writer's temporary name before mkstemp's random part: `.NAME.`, its NAME cut
    short where the whole temporary name would exceed the filesystem's limit (whenever the final
    name fits, the temporary one does too)."""
    room = _name_max(path.parent) - 2 - _TEMP_RANDOM  # the two dots and the random part
    name = os.fsencode(path.name)
    if len(name) > room:
        name = name[: max(room, 0)]
    return f".{os.fsdecode(name)}."


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate-escaped byte of a name that is not UTF-8
        return True
    return False


def check_output(path: str | Path, flag: str, *, directory: bool = False) -> Path:
    """Refuse, before any work, an output path that would fail only when written. `flag` names the
    option it came from in the message (e.g. "--onnx").

    A file (`directory` False) is refused when it is a directory, when its name is not UTF-8, when
    its name (or a folder to be made on the way) is longer than the filesystem takes, or when the
    folder it goes in cannot be made or written to. An existing file is fine: it is replaced.
    A directory (`directory` True) is refused when it is an existing file, and on the same names
    and folders. Returns the path."""
    text, path = str(path), Path(path)
    if _unencodable(text):
        raise LglsearchError(
            f"{flag} {text!r}: the name is not valid UTF-8 (a byte from another encoding); give a UTF-8 name"
        )
    limit = _name_max(path.parent if not directory else path)
    for part in path.parts:
        if len(os.fsencode(part)) > limit and part not in (os.sep, "/"):
            raise LglsearchError(
                f"{flag} {path}: the name {part[:40]}... is {len(os.fsencode(part))} bytes, more than the "
                f"filesystem's {limit}; give a shorter name"
            )
    if directory:
        if path.exists() and not path.is_dir():
            raise LglsearchError(
                f"{flag} {path} is an existing file, not a directory; name a new or existing directory"
            )
    elif path.is_dir() or text.endswith(("/", os.sep)):
        raise LglsearchError(f"{flag} {path} is a directory; name the file to write, e.g. a new name inside it")
    folder = path if directory else path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise LglsearchError(f"{flag} {path}: {existing} is a file, not a folder; give a path under a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LglsearchError(f"{flag} {path}: {existing} is not writable; give a path you can write to")
    return path


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
