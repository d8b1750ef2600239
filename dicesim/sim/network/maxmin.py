"""Max-min fair rate allocation (progressive filling), vectorised with numpy.

A set of flows shares a set of links. Flow ``f`` crosses link ``l`` ``w`` times (``w`` is
usually 1; a route staged through host memory can cross one directed link twice and then
loads it twice). Max-min fairness: raise every flow's rate together; when a link fills up,
freeze the flows that cross it at the current level; continue with the rest. The result is
the unique allocation in which no flow can get faster without slowing a flow that is
already slower or as slow.

Incidence is kept as a sparse list of (flow, link, weight) pairs, so one filling round costs
O(pairs + links) and a uniform all-to-all needs a single round.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: links whose fair share is within this relative distance of the minimum saturate together
_TIE_RTOL = 1e-12
_CAP_FLOOR = 1e-300
_max = np.maximum.reduce


def maxmin_pairs(
    pair_flow: np.ndarray,
    pair_link: np.ndarray,
    pair_weight: np.ndarray,
    n_flows: int,
    link_capacity_Bps: np.ndarray,
    fill: float = np.inf,
) -> np.ndarray:
    """Max-min fair rates (bytes/s) from a sparse flow-link incidence.

    ``pair_flow[i]`` crosses ``pair_link[i]`` ``pair_weight[i]`` times (weights > 0). Flows whose
    links all have infinite capacity get ``inf``; flows without pairs get ``fill``.
    Returns ``(n_flows,)``.
    """
    return maxmin_core(pair_flow, pair_link, pair_weight, n_flows, link_capacity_Bps, fill)[0]


def maxmin_core(pf, pl, pw, n_flows, cap, fill):
    """:func:`maxmin_pairs` that also returns which links carry at least one flow ``(n_links,)``."""
    n_links = cap.shape[0]
    rate = np.zeros(n_flows) if fill == 0.0 else np.full(n_flows, fill)
    if pf.shape[0] == 0:
        return rate, np.zeros(n_links, dtype=bool)
    cap_rem = cap.copy()
    frozen = np.zeros(n_flows, dtype=bool)
    used = None
    while True:
        load = np.bincount(pl, weights=pw, minlength=n_links)
        if used is None:
            used = load > 0
        # pressure = 1 / fair share; 0 on idle and infinite links, so no division by zero
        press = load / cap_rem
        top = float(_max(press))
        if top == 0.0:
            rate[pf] = np.inf  # remaining flows only cross infinite links
            return rate, used
        level = 1.0 / top
        hit_f = pf[press[pl] >= top * (1.0 - _TIE_RTOL)]
        rate[hit_f] = level
        frozen[hit_f] = True
        fpair = frozen[pf]
        if np.count_nonzero(fpair) == fpair.shape[0]:
            return rate, used
        cap_rem -= level * np.bincount(pl[fpair], weights=pw[fpair], minlength=n_links)
        np.maximum(cap_rem, _CAP_FLOOR, out=cap_rem)  # rounding must not zero or flip a capacity
        keep = ~fpair
        pf, pl, pw = pf[keep], pl[keep], pw[keep]


def maxmin_rates(
    flow_links: Sequence[Sequence[int]] | np.ndarray,
    link_capacity_Bps: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Max-min fair rate (bytes/s) of every flow.

    ``flow_links``: one sequence of integer link indices per flow (a repeated index means the
    flow loads that link several times), or a dense ``(n_flows, n_links)`` array of
    multiplicities (0 = not crossed). ``link_capacity_Bps``: ``(n_links,)`` capacities
    (``inf`` allowed). A flow that crosses no finite link gets ``inf``.

    >>> maxmin_rates([[0, 1], [0], [1]], [1.0, 1.0]).tolist()
    [0.5, 0.5, 0.5]
    """
    cap = np.asarray(link_capacity_Bps, dtype=float)
    if cap.ndim != 1 or np.any(~(cap > 0)):
        raise ValueError("link_capacity_Bps must be a 1-d array of positive capacities")
    if isinstance(flow_links, np.ndarray) and flow_links.ndim == 2:
        if flow_links.shape[1] != cap.shape[0]:
            raise ValueError(f"incidence has {flow_links.shape[1]} links, capacities {cap.shape[0]}")
        pf, pl = np.nonzero(flow_links)
        pw = np.asarray(flow_links, dtype=float)[pf, pl]
        n_flows = flow_links.shape[0]
    else:
        n_flows = len(flow_links)
        counts: dict[tuple[int, int], int] = {}
        for f, links in enumerate(flow_links):
            for link in links:
                link = int(link)
                if not 0 <= link < cap.shape[0]:
                    raise ValueError(f"flow {f} names link {link}, but there are {cap.shape[0]} links")
                counts[(f, link)] = counts.get((f, link), 0) + 1
        keys = sorted(counts)
        pf = np.array([k[0] for k in keys], dtype=np.intp)
        pl = np.array([k[1] for k in keys], dtype=np.intp)
        pw = np.array([counts[k] for k in keys], dtype=float)
    if np.any(pw < 0):
        raise ValueError("incidence multiplicities must be >= 0")
    return maxmin_pairs(pf.astype(np.intp), pl.astype(np.intp), pw, n_flows, cap)
