"""Mean ± std over seeds, paired differences, rank correlation."""

from __future__ import annotations

import math
import statistics


def summary(values: list[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": sd}


def fmt(values: list[float], digits: int = 2) -> str:
    s = summary(values)
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Paired difference ``a - b`` over seeds: mean, std, and how many seeds have ``a > b``."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    return {**summary(d), "positive": sum(v > 0 for v in d), "n": len(d)}


def spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return float(rho) if math.isfinite(rho) else 0.0
