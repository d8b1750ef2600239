"""Interval arithmetic on event tables: busy time, per-step summaries, clock alignment.

All functions are vectorised with numpy; ``per_step_table`` does one sort for the whole
table instead of a Python loop per (rank, step), so it stays fast on million-row traces.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def _grouped_union_us(group: np.ndarray, start: np.ndarray, end: np.ndarray, n_groups: int) -> np.ndarray:
    """Length of the union of intervals within each group id in [0, n_groups)."""
    out = np.zeros(n_groups, dtype=np.float64)
    if len(start) == 0:
        return out
    order = np.lexsort((start, group))
    g, s, e = group[order], start[order], end[order]
    first = np.r_[True, g[1:] != g[:-1]]
    reach = pd.Series(e).groupby(g).cummax().to_numpy()  # furthest end seen so far in the group
    new_seg = first.copy()
    new_seg[1:] |= s[1:] > reach[:-1]
    seg_at = np.flatnonzero(new_seg)
    seg_len = np.maximum.reduceat(e, seg_at) - s[seg_at]
    np.add.at(out, g[seg_at], seg_len)
    return out


def busy_union_us(intervals: object, ends: object = None) -> float:
    """Length (us) of the union of intervals: overlapping time is counted once.

    ``intervals`` is an (N, 2) array-like of [start, end] pairs, or pass starts and ends as
    two arrays. ValueError when an interval ends before it starts.
    """
    if ends is None:
        arr = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
        start, end = arr[:, 0], arr[:, 1]
    else:
        start = np.asarray(intervals, dtype=np.float64).ravel()
        end = np.asarray(ends, dtype=np.float64).ravel()
        if start.shape != end.shape:
            raise ValueError(f"{start.size} starts but {end.size} ends")
    if (end < start).any():
        raise ValueError("an interval ends before it starts")
    return float(_grouped_union_us(np.zeros(len(start), dtype=np.int64), start, end, 1)[0])


def align_clocks(df: pd.DataFrame, offsets_us: Mapping[int, float], *, rezero: bool = True) -> pd.DataFrame:
    """Copy of ``df`` with each rank's times shifted onto one clock: ``t + offsets_us[rank]``.

    Every rank in ``df`` needs an offset (link rows, rank -1, default to 0). With ``rezero``
    the result is then shifted so that its earliest start is 0, which keeps times
    non-negative as the schema requires.
    """
    ranks = df["rank"].to_numpy()
    present = sorted(int(r) for r in np.unique(ranks) if r >= 0)
    missing = [r for r in present if r not in offsets_us]
    if missing:
        raise ValueError(f"no clock offset for rank(s) {missing}")
    table = {**{r: float(offsets_us[r]) for r in present}, -1: float(offsets_us.get(-1, 0.0))}
    keys = np.array(sorted(table))
    shift = np.array([table[k] for k in keys])[np.searchsorted(keys, ranks)]
    out = df.copy()
    out["start_us"] = df["start_us"].to_numpy() + shift
    out["end_us"] = df["end_us"].to_numpy() + shift
    if rezero and len(out):
        t0 = out["start_us"].min()
        out["start_us"] -= t0
        out["end_us"] -= t0
    return out


def per_step_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (rank, step) with the step's span and how busy each side was.

    Columns: rank, step, start_us, end_us, duration_us (first start to last end of any event
    of that step on that rank), compute_busy_us (union of kind "compute"), comm_busy_us
    (union of kind "collective"), comm_exposed_us (collective time not covered by compute),
    n_events. Rows with step -1, rank -1 (links) are ignored.
    """
    cols = ["rank", "step", "start_us", "end_us", "duration_us", "compute_busy_us", "comm_busy_us",
            "comm_exposed_us", "n_events"]
    sel = df[(df["step"].to_numpy() >= 0) & (df["rank"].to_numpy() >= 0)]
    if len(sel) == 0:
        empty = {c: pd.Series([], dtype="int32" if c in ("rank", "step") else "float64") for c in cols}
        empty["n_events"] = pd.Series([], dtype="int64")
        return pd.DataFrame(empty)
    keys = sel[["rank", "step"]].drop_duplicates().sort_values(["rank", "step"]).reset_index(drop=True)
    index = pd.MultiIndex.from_frame(keys)
    group = index.get_indexer(pd.MultiIndex.from_frame(sel[["rank", "step"]]))
    n = len(keys)
    start, end = sel["start_us"].to_numpy(), sel["end_us"].to_numpy()
    kind = sel["kind"].to_numpy(dtype=object)
    is_comp, is_comm = kind == "compute", kind == "collective"
    both = is_comp | is_comm
    compute = _grouped_union_us(group[is_comp], start[is_comp], end[is_comp], n)
    comm = _grouped_union_us(group[is_comm], start[is_comm], end[is_comm], n)
    either = _grouped_union_us(group[both], start[both], end[both], n)
    first = np.full(n, np.inf)
    last = np.full(n, -np.inf)
    np.minimum.at(first, group, start)
    np.maximum.at(last, group, end)
    return pd.DataFrame({
        "rank": keys["rank"].to_numpy().astype("int32"),
        "step": keys["step"].to_numpy().astype("int32"),
        "start_us": first,
        "end_us": last,
        "duration_us": last - first,
        "compute_busy_us": compute,
        "comm_busy_us": comm,
        "comm_exposed_us": either - compute,
        "n_events": np.bincount(group, minlength=n).astype("int64"),
    })
