"""What a model scores on a validation split: a plain value, which the search's tables read without
importing the training code."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Score"]


@dataclass(frozen=True)
class Score:
    """What a model scores on a validation split, with the standard errors of its finite size (the
    spread of the per-image values over the square root of their count: what another draw of as many
    images from the same distribution would move the score by)."""

    top1: float
    loss: float  # mean cross-entropy: every image counts by its confidence, not only right or wrong
    top1_se: float = math.nan
    loss_se: float = math.nan
