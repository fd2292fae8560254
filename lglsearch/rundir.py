"""A run directory: what every long job (a search, an ablation) keeps so that it resumes.

`run.json` records the run's identity, what must not change between a run and its resume; a
resume names each difference. State files are JSON written whole (`lglsearch._files`), and one that
cannot be read is a one-line error naming the file, why and the fix, and is left as it is: taken
as empty, the work it holds would be written over.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from lglsearch._files import atomic_write_json
from lglsearch.errors import LglsearchError

__all__ = ["RECORD", "Change", "RunDir", "UnreadableFile", "read_json"]

RECORD = "run.json"


class UnreadableFile(LglsearchError):
    """A JSON file that cannot be read, is not JSON, or holds something else; `reason` says which."""

    def __init__(self, message: str, path: Path, reason: str) -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


def read_json(path: str | Path, *, fix: str, check: Callable[[Any], str | None] | None = None) -> Any:
    """The JSON value in `path`, or an `UnreadableFile` naming it, why and `fix`; `check` returns
    what is wrong with a parsed value ("not a ..."), or None."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except OSError as err:  # the file system, not the file
        reason = err.strerror or str(err)
        raise UnreadableFile(f"cannot read {path} ({reason}); {fix}", path, reason) from None
    except ValueError as err:  # not JSON, or not text
        detail = (str(err) or type(err).__name__).splitlines()[0]
        raise UnreadableFile(f"{path} is unreadable, not JSON ({detail}); {fix}", path, f"not JSON: {detail}") from None
    problem = check(value) if check is not None else None
    if problem:
        raise UnreadableFile(f"{path} is {problem}; {fix}", path, problem)
    return value


class Change(NamedTuple):
    """One identity key whose value differs between the recorded run and this one."""

    key: str
    then: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.key}: {_short(self.then)} then, {_short(self.now)} now"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) < 60 else text[:57] + "..."


@dataclass(frozen=True)
class RunDir:
    """One run's directory. `run.json` holds the identity under `identity_key` beside whatever else
    the job records; `what` names the job in messages ("a search"), `fix` says how to recover from an
    unreadable `run.json`."""

    path: Path
    what: str
    fix: str
    identity_key: str = "identity"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def has_record(self) -> bool:
        return (self / RECORD).exists()

    def record(self) -> dict[str, Any]:
        """`run.json`, checked to hold an identity."""

        def check(value: Any) -> str | None:
            if isinstance(value, dict) and isinstance(value.get(self.identity_key), dict):
                return None
            return f"not {self.what}'s record (it holds no {self.identity_key})"

        return read_json(self / RECORD, fix=self.fix, check=check)

    def write_record(self, identity: dict[str, Any], **extra: Any) -> None:
        self.write_json(RECORD, {self.identity_key: identity, **extra})

    def changes(self, identity: dict[str, Any], *, added: dict[str, Any] | None = None) -> list[Change]:
        """Where `identity` differs from the recorded one, key by key (this run's keys first). `added`
        holds keys newer than some records, with the value those runs had: such runs still resume."""
        then = {**(added or {}), **self.record()[self.identity_key]}
        keys = [*identity, *(k for k in then if k not in identity and k not in (added or {}))]
        return [Change(k, then.get(k), identity.get(k)) for k in keys if then.get(k) != identity.get(k)]

    def read_json(self, name: str, *, fix: str, check: Callable[[Any], str | None] | None = None) -> Any:
        return read_json(self / name, fix=fix, check=check)

    def write_json(self, name: str, value: Any) -> None:
        """Whole or not at all: an interruption keeps the last complete file."""
        atomic_write_json(self / name, value)
