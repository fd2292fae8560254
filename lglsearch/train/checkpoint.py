"""Reading a training checkpoint without trusting it: tensors and plain data only, clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from lglsearch.errors import LglsearchError

__all__ = ["load_training_checkpoint"]


def load_training_checkpoint(path: Path, kind: str, required: tuple[str, ...]) -> dict[str, Any]:
    """A checkpoint file's contents, read as tensors and plain data only: a training directory may
    come from anyone, and a full unpickling would run whatever code it holds. `kind` names the
    training in errors; `required` are the keys its checkpoints always hold."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused an object: not a plain checkpoint
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LglsearchError(
            f"refused to load {path}: it holds objects other than tensors and plain data ({reason}); "
            "lglsearch's checkpoints never do, so do not trust this file"
        ) from None
    except OSError as err:  # the file system, not the file: nothing to delete
        raise LglsearchError(f"could not read {kind} checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # a truncated or foreign file: torch's zip reader and unpickler raise many types
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LglsearchError(
            f"{kind} checkpoint {path} is corrupt: unreadable as a checkpoint ({reason}); "
            "delete it to retrain, or pass another --out"
        ) from None
    if not isinstance(state, dict) or set(required) - set(state):
        raise LglsearchError(
            f"{path} is not one of lglsearch's {kind} checkpoints (no {', '.join(required[:-1])} and "
            f"{required[-1]}); pass another --out"
        )
    return state
