"""The Pareto front of a search: which candidates no other candidate beats in every objective.

Pure functions of a table's objective columns; :mod:`dicesim.recommend` ranks with them."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the objectives of the Pareto front and their sense (+1 minimise, -1 maximise)
OBJECTIVES: dict[str, int] = {"step_latency_s": 1, "weighted_lag_steps": 1, "peak_memory_bytes": 1}
SLACK = 1e-9  # relative: equal latencies from the same plan on different workers


def dominates(a: dict[str, float], b: dict[str, float], cols: list[str]) -> bool:
    """``a`` no worse than ``b`` in every objective of ``cols`` and better in one."""
    better = False
    for c in cols:
        va, vb = OBJECTIVES[c] * float(a[c]), OBJECTIVES[c] * float(b[c])
        tol = SLACK * max(abs(va), abs(vb))
        if va > vb + tol:
            return False
        better = better or va < vb - tol
    return better


def pareto_front(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Rows no other row dominates in ``cols`` (senses from :data:`OBJECTIVES`); duplicates all kept."""
    vals = df[cols].to_dict(orient="records")
    return np.array([not any(dominates(vals[j], vals[i], cols) for j in range(len(vals)) if j != i)
                     for i in range(len(vals))], dtype=bool)
