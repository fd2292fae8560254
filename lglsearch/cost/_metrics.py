"""How far predicted latencies are from measured ones: the figures every table reports."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import spearmanr

__all__ = ["error_summary"]


def error_summary(predicted: Any, measured: Any) -> dict[str, Any]:
    """n, fraction within +-30%, +-25%, +-20%, +-10% and +-5%, mean absolute and mean relative error,
    the median ratio of predicted to measured, Spearman rho."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    error = predicted / measured - 1
    return {
        "n": len(measured),
        "within_30pct": float(np.mean(np.abs(error) <= 0.30)),
        "within_25pct": float(np.mean(np.abs(error) <= 0.25)),
        "within_20pct": float(np.mean(np.abs(error) <= 0.20)),
        "within_10pct": float(np.mean(np.abs(error) <= 0.10)),
        "within_5pct": float(np.mean(np.abs(error) <= 0.05)),
        "mape": float(np.mean(np.abs(error))),
        "mean_error": float(np.mean(error)),
        "median_ratio": float(np.median(predicted / measured)) if len(measured) else float("nan"),
        "spearman": float(spearmanr(predicted, measured).statistic) if len(measured) > 1 else float("nan"),
    }
