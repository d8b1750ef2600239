"""Piecewise-constant trajectory of a set of flows under exact max-min processor sharing.

A :class:`FlowTable` is the state of every unfinished flow at one instant (remaining bytes,
activation time, which links it loads). :func:`simulate` runs that state forward, assuming no
flow joins, and returns a :class:`Trajectory`: the instants where the set of draining flows changes
(a latency ends or a flow drains), the max-min rates between them, each flow's finish time and
each group's completion time. The network keeps one plan per component of links, reads group
completions off it, and only re-plans when a new transfer arrives (Ciw's processor-sharing idea,
applied to a network).

Times here are relative to the start of the component, so a plan depends only on the
component's history and can be memoised without changing results.
Legend: F flows, P (flow, link) pairs, L links of the table, K segments, G groups.
"""

from __future__ import annotations

import math

import numpy as np

from dicesim.sim.network.maxmin import maxmin_core

#: flows whose drain time is within this relative distance of the earliest finish together
_FINISH_RTOL = 1e-10


class FlowTable:
    """Unfinished flows at instant ``r0`` (read-only after construction).

    ``links_L`` are global link ids; ``pair_link_P`` indexes into them; pairs are sorted by flow.
    Flows of one group are contiguous; group ``g`` starts at flow ``group_start_G[g]``.
    """

    __slots__ = ("r0", "rem_F", "act_F", "pair_flow_P", "pair_link_P", "pair_weight_P",
                 "links_L", "cap_L", "group_start_G")

    def __init__(self, r0, rem_F, act_F, pair_flow_P, pair_link_P, pair_weight_P, links_L, cap_L,
                 group_start_G):
        self.r0 = r0
        self.rem_F, self.act_F = rem_F, act_F
        self.pair_flow_P, self.pair_link_P, self.pair_weight_P = pair_flow_P, pair_link_P, pair_weight_P
        self.links_L, self.cap_L = links_L, cap_L
        self.group_start_G = group_start_G


class Trajectory:
    """The trajectory of a :class:`FlowTable`'s flows with no further arrivals (read-only).

    Completion times and whole-plan link totals are computed eagerly; the per-segment arrays
    (only needed when a transfer arrives mid-plan, or for the busy-period hook) are built on
    first use from the lists the simulation loop kept.
    """

    __slots__ = ("t_seg", "fin_F", "fin_min", "group_fin_G", "total_bytes_L", "total_busy_L", "_table",
                 "_rates", "_drained", "_busy", "_expand", "_rate_KF", "_cum_KF", "_seg_bytes_KL", "_seg_busy_KL")

    def __init__(self, table, t_seg, fin_F, group_fin_G, rates, drained, busy, total_busy_L, expand=None,
                 total_bytes_L=None):
        """``rates``, ``drained``, ``busy``: per-segment lists; or None with ``expand()`` returning them
        on first use (planners that do not walk segment by segment). ``total_bytes_L``: the bytes each
        link carries, if the caller summed them already (same sums in the same order as below)."""
        self._table = table
        self.t_seg = t_seg  # (K+1,) segment boundaries, t_seg[0] = table.r0
        self.fin_F, self.group_fin_G = fin_F, group_fin_G
        self.fin_min = float(fin_F.min()) if fin_F.shape[0] else math.inf
        self._rates, self._drained, self._busy, self._expand = rates, drained, busy, expand
        # every flow drains all of its bytes by the end of the plan
        if total_bytes_L is None:
            pf, pl = table.pair_flow_P, table.pair_link_P
            total_bytes_L = np.bincount(pl, weights=table.pair_weight_P * table.rem_F[pf],
                                        minlength=table.cap_L.shape[0])
        self.total_bytes_L = total_bytes_L
        self.total_busy_L = total_busy_L
        self._rate_KF = self._cum_KF = self._seg_bytes_KL = self._seg_busy_KL = None

    @property
    def nbytes_estimate(self) -> int:
        """Rough memory of this plan once its lazy arrays exist (for the memo's budget)."""
        n_k, n_f, n_l = self.t_seg.shape[0] - 1, self.fin_F.shape[0], self.total_bytes_L.shape[0]
        n_p = self._table.pair_flow_P.shape[0]
        return 8 * (n_k * (4 * n_f + 2 * n_l) + 3 * n_f + 3 * n_p) + 1024

    @property
    def t_end(self) -> float:
        return float(self.t_seg[-1])

    def _segments(self) -> None:
        if self._rates is None:
            self._rates, self._drained, self._busy = self._expand()
            self._expand = None

    @property
    def rate_KF(self) -> np.ndarray:
        """(K, F) bytes/s of each flow in each segment."""
        if self._rate_KF is None:
            self._segments()
            self._rate_KF = np.array(self._rates).reshape(len(self._rates), self.fin_F.shape[0])
        return self._rate_KF

    @property
    def cum_KF(self) -> np.ndarray:
        """(K+1, F) bytes each flow drained before each segment boundary."""
        if self._cum_KF is None:
            self._segments()
            n_k, n_f = len(self._drained), self.fin_F.shape[0]
            cum = np.zeros((n_k + 1, n_f))
            if n_k:
                np.cumsum(np.array(self._drained), axis=0, out=cum[1:])
            self._cum_KF = cum
        return self._cum_KF

    @property
    def seg_bytes_KL(self) -> np.ndarray:
        """(K, L) bytes each link carried in each segment."""
        if self._seg_bytes_KL is None:
            self._segments()
            tb = self._table
            n_k, n_l = len(self._drained), tb.cap_L.shape[0]
            pf, pl = tb.pair_flow_P, tb.pair_link_P
            drained_KF = np.array(self._drained).reshape(n_k, self.fin_F.shape[0])
            idx = (np.arange(n_k)[:, None] * n_l + pl[None, :]).ravel()
            w = (drained_KF[:, pf] * tb.pair_weight_P).ravel()
            self._seg_bytes_KL = np.bincount(idx, weights=w, minlength=n_k * n_l).reshape(n_k, n_l)
        return self._seg_bytes_KL

    @property
    def seg_busy_KL(self) -> np.ndarray:
        """(K, L) whether each link had a draining flow in each segment."""
        if self._seg_busy_KL is None:
            self._segments()
            n_l = self._table.cap_L.shape[0]
            self._seg_busy_KL = np.array(self._busy, dtype=bool).reshape(len(self._busy), n_l)
        return self._seg_busy_KL

    def remaining_at(self, table: FlowTable, r: float) -> np.ndarray:
        """Remaining bytes of every flow of ``table`` at instant ``r`` (>= table.r0)."""
        k = int(np.searchsorted(self.t_seg, r, side="right")) - 1
        if k >= self.t_seg.shape[0] - 1:
            return np.zeros_like(table.rem_F)
        rem = table.rem_F - self.cum_KF[k] - self.rate_KF[k] * (r - self.t_seg[k])
        return np.maximum(rem, 0.0)

    def walk(self, k: int, r_acc: float, r_to: float) -> tuple[int, list]:
        """Segment pieces from cursor ``(k, r_acc)`` up to ``r_to``; return the new segment index and
        ``[(a, b, busy_L, bytes_L), ...]``. A segment is consumed once its end is <= ``r_to``, so
        zero-length segments (infinite-rate flows) are counted exactly once."""
        t = self.t_seg
        n_k = t.shape[0] - 1
        pieces = []
        while k < n_k and t[k + 1] <= r_to:
            a = max(t[k], r_acc)
            full = t[k + 1] - t[k]
            frac = 1.0 if a == t[k] or full <= 0 else (t[k + 1] - a) / full
            pieces.append((a, t[k + 1], self.seg_busy_KL[k], self.seg_bytes_KL[k] * frac))
            k += 1
        if k < n_k and r_to > max(t[k], r_acc):
            a = max(t[k], r_acc)
            frac = (r_to - a) / (t[k + 1] - t[k])
            pieces.append((a, r_to, self.seg_busy_KL[k], self.seg_bytes_KL[k] * frac))
        return k, pieces


def simulate(table: FlowTable) -> Trajectory:
    """Run ``table`` forward under max-min sharing until every flow has finished (one max-min solve
    per segment; :mod:`dicesim.sim.network.batchplan` runs this same computation for many tables at once)."""
    rem = table.rem_F.copy()
    act = table.act_F
    pf, pl, pw, cap = table.pair_flow_P, table.pair_link_P, table.pair_weight_P, table.cap_L
    n_f, n_l = rem.shape[0], cap.shape[0]
    t = table.r0
    fin = np.full(n_f, np.inf)
    started = act <= t
    fin[started & (rem <= 0.0)] = t
    live = started & (rem > 0.0)
    n_live = int(np.count_nonzero(live))
    # activation instants still ahead, in order: the only events besides finishes
    acts = sorted(set(act[~started].tolist()))
    a_i, n_acts = 0, len(acts)
    t_list, rates, drained_list, busy_list = [t], [], [], []
    busy_tot = np.zeros(n_l)
    ttf = np.empty(n_f)
    zeros_f, idle_l = np.zeros(n_f), np.zeros(n_l, dtype=bool)
    min_ = np.minimum.reduce
    while n_live or a_i < n_acts:
        t_act = acts[a_i] if a_i < n_acts else np.inf
        if n_live:
            live_p = live[pf]
            rate, busy = maxmin_core(pf[live_p], pl[live_p], pw[live_p], n_f, cap, 0.0)
            ttf.fill(np.inf)
            np.divide(rem, rate, out=ttf, where=live)
            dt_fin = float(min_(ttf))
        else:
            rate, busy, dt_fin = zeros_f, idle_l, np.inf
        if t + dt_fin <= t_act:
            t_next = t + dt_fin
            finishing = ttf <= dt_fin * (1.0 + _FINISH_RTOL)
            # dt_fin == 0 when a flow crosses only infinite links (inf * 0 would be nan)
            drained = rate * dt_fin if dt_fin > 0 else np.zeros(n_f)
            drained[finishing] = rem[finishing]
            rem = rem - drained
            rem[finishing] = 0.0
            fin[finishing] = t_next
            live[finishing] = False
            n_live -= int(np.count_nonzero(finishing))
        else:
            t_next = t_act
            drained = rate * (t_next - t)
            rem = rem - drained
        if t_next > t:
            busy_tot[busy] += t_next - t
        rates.append(rate)
        drained_list.append(drained)
        busy_list.append(busy)
        t_list.append(t_next)
        t = t_next
        if t_act <= t:
            newly = act == t_act
            a_i += 1
            zero = newly & (rem <= 0.0)
            fin[zero] = t
            newly &= ~zero
            live |= newly
            n_live += int(np.count_nonzero(newly))
    group_fin = np.maximum.reduceat(fin, table.group_start_G) if n_f else np.zeros(0)
    return Trajectory(table, np.array(t_list), fin, group_fin, rates, drained_list, busy_list, busy_tot)


def make_table(r0: float, parts: list[tuple], cap_global: np.ndarray) -> FlowTable:
    """Build a table from per-group parts ``(rem_F, act_F, pair_flow_P, gpair_link_P, pair_weight_P)``
    (``gpair_link_P`` in global link ids), groups in the given order; no part may be empty."""
    sizes = [p[0].shape[0] for p in parts]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
    rem = np.concatenate([p[0] for p in parts])
    act = np.concatenate([p[1] for p in parts])
    pf = np.concatenate([p[2] + s for p, s in zip(parts, starts)])
    gpl = np.concatenate([p[3] for p in parts])
    pw = np.concatenate([p[4] for p in parts])
    links, pl = local_links(gpl, cap_global.shape[0])
    return FlowTable(r0, rem, act, pf, pl, pw, links, cap_global[links], starts)


def local_links(gpl: np.ndarray, n_links: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct global link ids of ``gpl`` (sorted) and each entry's index among them."""
    present = np.zeros(n_links, dtype=bool)
    present[gpl] = True
    links = np.flatnonzero(present)
    remap = np.empty(n_links, dtype=np.intp)
    remap[links] = np.arange(links.shape[0])
    return links, remap[gpl]


def carry_over(table: FlowTable, plan: Trajectory, r: float, shift: float = 0.0) -> list[tuple]:
    """Parts (see :func:`make_table`) of the groups of ``table`` with flows unfinished at ``r``, in
    table order; activation times are moved by ``-shift`` (re-basing onto another time origin).
    A group survives exactly when ``plan.group_fin_G > r``."""
    keep = plan.fin_F > r
    if not keep.any():
        return []
    rem = plan.remaining_at(table, r)[keep]
    act = table.act_F[keep] - shift if shift else table.act_F[keep]
    new_idx = np.cumsum(keep) - 1
    keep_p = keep[table.pair_flow_P]
    pf = new_idx[table.pair_flow_P[keep_p]]
    gpl = table.links_L[table.pair_link_P[keep_p]]
    pw = table.pair_weight_P[keep_p]
    n_f = table.rem_F.shape[0]
    bounds = np.append(table.group_start_G, n_f)
    # kept-flow and kept-pair index ranges of every group (pairs are sorted by flow)
    kf = np.concatenate(([0], np.cumsum(keep)))[bounds]
    kp = np.searchsorted(pf, kf)
    parts = []
    for g in range(bounds.shape[0] - 1):
        s, e = kf[g], kf[g + 1]
        if e > s:
            parts.append((rem[s:e], act[s:e], pf[kp[g]:kp[g + 1]] - s, gpl[kp[g]:kp[g + 1]],
                          pw[kp[g]:kp[g + 1]]))
    return parts
