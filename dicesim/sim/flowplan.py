"""Piecewise-constant trajectory of a set of flows under exact max-min processor sharing.

A :class:`FlowTable` is the state of every unfinished flow at one instant (remaining bytes,
activation time, which links it loads). :func:`simulate` runs that state forward, assuming no
flow joins, and returns a :class:`Plan`: the instants where the set of draining flows changes
(a latency ends or a flow drains), the max-min rates between them, each flow's finish time and
each group's completion time. The network keeps one plan, reads group completions off it, and
only re-plans when a new transfer arrives (Ciw's processor-sharing idea, applied to a network).

Times here are relative to the start of the network's current busy period, so a plan depends
only on the busy period's history and can be memoised without changing results.
Legend: F flows, P (flow, link) pairs, L local links, K segments, G groups.
"""

from __future__ import annotations

import numpy as np

from dicesim.sim.maxmin import maxmin_pairs

#: flows whose drain time is within this relative distance of the earliest finish together
_FINISH_RTOL = 1e-10


class FlowTable:
    """Unfinished flows at instant ``r0`` (read-only after construction).

    ``links_L`` are global link ids; ``pair_link_P`` indexes into them. Flows of one group are
    contiguous; group ``g`` starts at ``group_start_G[g]`` and has busy-period slot ``group_slot_G[g]``.
    """

    __slots__ = ("r0", "rem_F", "act_F", "pair_flow_P", "pair_link_P", "pair_weight_P",
                 "links_L", "cap_L", "group_slot_G", "group_start_G")

    def __init__(self, r0, rem_F, act_F, pair_flow_P, pair_link_P, pair_weight_P,
                 links_L, cap_L, group_slot_G, group_start_G):
        self.r0 = r0
        self.rem_F, self.act_F = rem_F, act_F
        self.pair_flow_P, self.pair_link_P, self.pair_weight_P = pair_flow_P, pair_link_P, pair_weight_P
        self.links_L, self.cap_L = links_L, cap_L
        self.group_slot_G, self.group_start_G = group_slot_G, group_start_G


class Plan:
    """Trajectory of a :class:`FlowTable` with no further arrivals (read-only)."""

    __slots__ = ("t_seg", "rate_KF", "cum_KF", "fin_F", "group_fin_G",
                 "seg_bytes_KL", "seg_busy_KL", "total_bytes_L", "total_busy_L")

    def __init__(self, t_seg, rate_KF, cum_KF, fin_F, group_fin_G, seg_bytes_KL, seg_busy_KL):
        self.t_seg = t_seg  # (K+1,) segment boundaries, t_seg[0] = table.r0
        self.rate_KF = rate_KF  # bytes/s of each flow in each segment
        self.cum_KF = cum_KF  # (K+1, F) bytes drained before each boundary
        self.fin_F, self.group_fin_G = fin_F, group_fin_G
        self.seg_bytes_KL, self.seg_busy_KL = seg_bytes_KL, seg_busy_KL
        dt_K = np.diff(t_seg)
        self.total_bytes_L = seg_bytes_KL.sum(axis=0)
        self.total_busy_L = (seg_busy_KL * dt_K[:, None]).sum(axis=0)

    @property
    def t_end(self) -> float:
        return float(self.t_seg[-1])

    def remaining_at(self, table: FlowTable, r: float) -> np.ndarray:
        """Remaining bytes of every flow of ``table`` at instant ``r`` (>= table.r0)."""
        k = int(np.searchsorted(self.t_seg, r, side="right")) - 1
        if k >= self.rate_KF.shape[0]:
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


def simulate(table: FlowTable) -> Plan:
    """Run ``table`` forward under max-min sharing until every flow has finished."""
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
    # activation instants still ahead, in order: the only other events besides finishes
    acts = sorted(set(act[~started].tolist()))
    a_i = 0
    t_list, rate_list, drained_list, livep_list = [t], [], [], []
    ttf = np.empty(n_f)
    zeros_f = np.zeros(n_f)
    while n_live or a_i < len(acts):
        t_act = acts[a_i] if a_i < len(acts) else np.inf
        if n_live:
            live_p = live[pf]
            rate = maxmin_pairs(pf[live_p], pl[live_p], pw[live_p], n_f, cap, fill=0.0)
            ttf.fill(np.inf)
            np.divide(rem, rate, out=ttf, where=live)
            dt_fin = ttf.min()
        else:
            rate, live_p, dt_fin = zeros_f, np.zeros(pf.shape[0], dtype=bool), np.inf
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
        rate_list.append(rate)
        drained_list.append(drained)
        livep_list.append(live_p)
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
    n_k = len(rate_list)
    group_fin = np.maximum.reduceat(fin, table.group_start_G) if n_f else np.zeros(0)
    if n_k == 0:
        return Plan(np.array(t_list), np.zeros((0, n_f)), np.zeros((1, n_f)), fin, group_fin,
                    np.zeros((0, n_l)), np.zeros((0, n_l), dtype=bool))
    drained_KF = np.array(drained_list)
    cum_KF = np.zeros((n_k + 1, n_f))
    np.cumsum(drained_KF, axis=0, out=cum_KF[1:])
    # per-link bytes and busy flags of every segment in one bincount each
    seg_link_KP = (np.arange(n_k)[:, None] * n_l + pl[None, :]).ravel()
    seg_bytes = np.bincount(seg_link_KP, weights=(drained_KF[:, pf] * pw).ravel(), minlength=n_k * n_l)
    seg_busy = np.bincount(seg_link_KP, weights=np.array(livep_list, dtype=float).ravel(),
                           minlength=n_k * n_l)
    return Plan(np.array(t_list), np.array(rate_list), cum_KF, fin, group_fin,
                seg_bytes.reshape(n_k, n_l), seg_busy.reshape(n_k, n_l) > 0)


def make_table(
    r0: float,
    parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    cap_global: np.ndarray,
) -> FlowTable:
    """Build a table from per-group parts ``(slot, rem_F, act_F, pair_flow_P, gpair_link_P, pair_weight_P)``.

    ``gpair_link_P`` holds global link ids; groups with no flows must be left out.
    """
    if len(parts) == 1:
        slot, rem, act, pf, gpl, pw = parts[0]
        starts = np.zeros(1, dtype=np.intp)
        slots = np.array([slot], dtype=np.intp)
    else:
        sizes = [p[1].shape[0] for p in parts]
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
        slots = np.array([p[0] for p in parts], dtype=np.intp)
        rem = np.concatenate([p[1] for p in parts])
        act = np.concatenate([p[2] for p in parts])
        pf = np.concatenate([p[3] + s for p, s in zip(parts, starts)])
        gpl = np.concatenate([p[4] for p in parts])
        pw = np.concatenate([p[5] for p in parts])
    links, pl = np.unique(gpl, return_inverse=True)
    return FlowTable(r0, rem, act, pf, pl.astype(np.intp), pw, links, cap_global[links], slots, starts)


def carry_over(table: FlowTable, plan: Plan, r: float) -> list[tuple]:
    """The flows of ``table`` still unfinished at ``r``, as :func:`make_table` parts."""
    rem = plan.remaining_at(table, r)
    keep = plan.fin_F > r
    if not keep.any():
        return []
    new_idx = np.cumsum(keep) - 1
    keep_p = keep[table.pair_flow_P]
    pf = new_idx[table.pair_flow_P[keep_p]]
    gpl = table.links_L[table.pair_link_P[keep_p]]
    pw = table.pair_weight_P[keep_p]
    grp_of_flow = np.repeat(np.arange(table.group_start_G.shape[0]),
                            np.diff(np.append(table.group_start_G, rem.shape[0])))
    kept_grp = grp_of_flow[keep]
    parts = []
    # split back into per-group parts so slots stay attached to contiguous blocks
    bounds = np.flatnonzero(np.diff(kept_grp)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [kept_grp.shape[0]]))
    rem_k, act_k = rem[keep], table.act_F[keep]
    p_starts = np.searchsorted(pf, starts)
    p_ends = np.searchsorted(pf, ends)
    for s, e, ps, pe in zip(starts, ends, p_starts, p_ends):
        slot = int(table.group_slot_G[kept_grp[s]])
        parts.append((slot, rem_k[s:e], act_k[s:e], pf[ps:pe] - s, gpl[ps:pe], pw[ps:pe]))
    return parts
