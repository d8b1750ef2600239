"""Plans of many independent transfers at once: the reference planner, vectorised across tables.

A transfer that starts on idle links (nothing else in flight on them, no link slowed) has a plan
that depends on its own flows only. With sampled routing every all-to-all carries different
volumes, so thousands of such plans are needed and the reference planner
(:func:`dicesim.sim.network.flowplan.simulate`: one max-min solve per finishing segment, each
a few small numpy calls) spends its time in per-call overhead. Here all tables advance in lock
step: one progressive-filling round raises every table's own level at once (per-table maxima by
segmented reduction), one step moves every table to its own next event. Every table goes
through exactly the operations the reference applies to it, in the same order, so each plan is
the reference's plan bit for bit (tested); the per-segment arrays are rebuilt by the reference
if something ever reads them. Tables with an infinite-capacity link are left to the reference.
Legend: B tables, F flows, P (flow, link) pairs, L links (all concatenated), K segments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dicesim.sim.network.flowplan import _FINISH_RTOL, FlowTable, Trajectory, simulate
from dicesim.sim.network.maxmin import _CAP_FLOOR, _TIE_RTOL


def plan_many(tables: Sequence[FlowTable]) -> list[Trajectory]:
    """The :func:`~dicesim.sim.network.flowplan.simulate` plan of every table, computed together."""
    out: list[Trajectory | None] = [None] * len(tables)
    batch = []
    for i, tb in enumerate(tables):
        if tb.rem_F.shape[0] == 0 or not np.isfinite(tb.cap_L).all():
            out[i] = simulate(tb)
        else:
            batch.append(i)
    if batch:
        for i, plan in zip(batch, _lockstep([tables[i] for i in batch])):
            out[i] = plan
    return out  # type: ignore[return-value]


def _lockstep(tables: list[FlowTable]) -> list[Trajectory]:
    nf = np.array([tb.rem_F.shape[0] for tb in tables])
    nl = np.array([tb.cap_L.shape[0] for tb in tables])
    f0 = np.concatenate(([0], np.cumsum(nf)[:-1])).astype(np.intp)
    l0 = np.concatenate(([0], np.cumsum(nl)[:-1])).astype(np.intp)
    n_b = len(tables)
    fin = np.full(int(nf.sum()), np.inf)
    busy_tot = np.zeros(int(nl.sum()))
    # the working set: tables still moving, their unfinished flows, their links (ids into the above)
    w = {"fid": np.arange(fin.shape[0]), "lid": np.arange(busy_tot.shape[0]), "bid": np.arange(n_b),
         "rem": np.concatenate([tb.rem_F for tb in tables]), "act": np.concatenate([tb.act_F for tb in tables]),
         "cap": np.concatenate([tb.cap_L for tb in tables]),
         "f0": f0, "l0": l0,
         "b_of_f": np.repeat(np.arange(n_b), nf), "b_of_l": np.repeat(np.arange(n_b), nl),
         "t": np.array([tb.r0 for tb in tables], dtype=float)}
    n_p = np.array([tb.pair_flow_P.shape[0] for tb in tables])
    pf_all = np.concatenate([tb.pair_flow_P for tb in tables]) + np.repeat(f0, n_p)
    pl_all = np.concatenate([tb.pair_link_P for tb in tables]) + np.repeat(l0, n_p)
    pw_all, w0_rem = np.concatenate([tb.pair_weight_P for tb in tables]), w["rem"].copy()
    w["cols"], w["wts"], w["paired"] = _columns(pf_all, pl_all, pw_all, fin.shape[0], busy_tot.shape[0])
    t_f = w["t"][w["b_of_f"]]
    started = w["act"] <= t_f
    done0 = started & (w["rem"] <= 0.0)
    fin[done0] = t_f[done0]
    w["live"] = started & (w["rem"] > 0.0)
    w["acts"], w["n_acts"] = _activations(w["act"], t_f, w["b_of_f"], n_b)
    w["a_i"] = np.zeros(n_b, dtype=np.intp)
    seg_b: list[np.ndarray] = [np.arange(n_b)]  # per step: the tables that moved, and to when
    seg_t: list[np.ndarray] = [w["t"].copy()]
    size = fin.shape[0]
    n_open = int(np.count_nonzero(fin == np.inf))  # unfinished flows in the working set
    while True:
        live, rem, t, a_i = w["live"], w["rem"], w["t"], w["a_i"]
        b_of_f, b_of_l = w["b_of_f"], w["b_of_l"]
        going = np.logical_or.reduceat(live, w["f0"]) | (a_i < w["n_acts"])
        if not going.any():
            break
        if n_open < size // 2:  # half the flows are done
            w = _compact(w, going, fin)
            size = w["fid"].shape[0]
            n_open = int(np.count_nonzero(fin[w["fid"]] == np.inf))
            continue
        t_act = w["acts"][np.arange(t.shape[0]), a_i]
        rate, used = _fill(w["cols"], w["wts"], live & w["paired"], w["cap"], w["l0"], b_of_l, b_of_f)
        ttf = np.full(rem.shape[0], np.inf)  # time to finish at these rates (a divide with where= is slower)
        li = live.nonzero()[0]
        ttf[li] = rem.take(li) / rate.take(li)
        dt_fin = np.minimum.reduceat(ttf, w["f0"])
        finish = going & (t + dt_fin <= t_act)
        step = going & ~finish  # the next waiting flow starts first
        t_next = np.where(finish, t + dt_fin, np.where(step, t_act, t))
        dt = np.where(finish, dt_fin, np.where(step, t_next - t, 0.0))
        # the flows within rounding of their table's finishing step finish (none where no table finishes)
        finishing = (ttf <= np.where(finish, dt * (1.0 + _FINISH_RTOL), -np.inf).take(b_of_f)).nonzero()[0]
        rem -= rate * dt.take(b_of_f)
        rem[finishing] = 0.0
        fin[w["fid"].take(finishing)] = t_next.take(b_of_f.take(finishing))
        live[finishing] = False
        n_open -= finishing.shape[0]
        grow = ((t_next > t).take(b_of_l) & used).nonzero()[0]
        busy_tot[w["lid"].take(grow)] += (t_next - t).take(b_of_l.take(grow))
        t = t_next  # tables that do not move keep their time
        moved = going.nonzero()[0]
        seg_b.append(w["bid"][moved])
        seg_t.append(t[moved])
        due = going & (t_act <= t)
        if due.any():
            newly = due[b_of_f] & (w["act"] == t_act[b_of_f])
            a_i[due] += 1
            zero = newly & (rem <= 0.0)
            fin[w["fid"][zero]] = t[b_of_f][zero]
            n_open -= int(np.count_nonzero(zero))
            live |= newly & ~zero
        w["t"] = t
    order = np.argsort(np.concatenate(seg_b), kind="stable")
    all_t = np.concatenate(seg_t)[order]
    bounds = np.concatenate(([0], np.cumsum(np.bincount(np.concatenate(seg_b), minlength=n_b))))
    # per group, its last finish; per link, the bytes it carries (each table's pairs in its own order)
    bytes_tot = np.bincount(pl_all, weights=pw_all * w0_rem[pf_all], minlength=busy_tot.shape[0])
    return [Trajectory(tb, all_t[bounds[b]:bounds[b + 1]], f, g, None, None, None, busy_tot[l0[b]:l0[b] + nl[b]].copy(),
                       expand=_reference_segments(tb), total_bytes_L=bytes_tot[l0[b]:l0[b] + nl[b]].copy())
            for b, (tb, f, g) in enumerate(zip(tables, _split(fin, f0, nf), _group_fins(fin, f0, tables)))]


def _split(x, x0, n):
    """``x`` cut into the pieces ``[x0[b], x0[b] + n[b])`` (copies)."""
    return [x[i:i + k].copy() for i, k in zip(x0.tolist(), n.tolist())]


def _group_fins(fin, f0, tables):
    """Per table, its groups' last finish: ``np.maximum.reduceat`` over its flows, all tables in one call
    when every table's first group starts at its first flow (then no segment crosses a table's end)."""
    if not all(tb.group_start_G.shape[0] and tb.group_start_G[0] == 0 for tb in tables):
        nf = np.diff(f0, append=fin.shape[0])
        return [np.maximum.reduceat(f, tb.group_start_G) for tb, f in zip(tables, _split(fin, f0, nf))]
    ng = np.array([tb.group_start_G.shape[0] for tb in tables])
    starts = np.concatenate([tb.group_start_G for tb in tables]) + np.repeat(f0, ng)
    return _split(np.maximum.reduceat(fin, starts), np.concatenate(([0], np.cumsum(ng)[:-1])), ng)


def _activations(act_F, t_F, b_of_f, n_b: int):
    """Per table, its activation instants still ahead, in order and distinct, padded with inf ``[B, A+1]``;
    and how many there are ``(B,)``."""
    ahead = np.flatnonzero(act_F > t_F)
    a_b, a_t = b_of_f[ahead], act_F[ahead]
    o = np.lexsort((a_t, a_b))
    a_b, a_t = a_b[o], a_t[o]
    first = np.ones(a_b.shape[0], dtype=bool)
    first[1:] = (a_b[1:] != a_b[:-1]) | (a_t[1:] != a_t[:-1])
    a_b, a_t = a_b[first], a_t[first]
    n_acts = np.bincount(a_b, minlength=n_b)
    acts = np.full((n_b, int(n_acts.max(initial=0)) + 1), np.inf)
    acts[a_b, np.arange(a_b.shape[0]) - (np.cumsum(n_acts) - n_acts)[a_b]] = a_t
    return acts, n_acts


def _compact(w: dict, going: np.ndarray, fin: np.ndarray) -> dict:
    """The working set without finished tables and finished flows (they take part in nothing more)."""
    keep_f = going[w["b_of_f"]] & (w["live"] | (fin[w["fid"]] == np.inf))
    keep_l = going[w["b_of_l"]]
    new_b = np.cumsum(going) - 1
    kf = np.flatnonzero(keep_f)
    link_map = np.append(np.cumsum(keep_l) - 1, np.count_nonzero(keep_l))  # the padding slot stays last
    b_of_f, b_of_l = new_b[w["b_of_f"][keep_f]], new_b[w["b_of_l"][keep_l]]
    n_b = int(np.count_nonzero(going))
    out = {"fid": w["fid"][keep_f], "lid": w["lid"][keep_l], "bid": w["bid"][going],
           "rem": w["rem"][keep_f], "act": w["act"][keep_f], "live": w["live"][keep_f], "cap": w["cap"][keep_l],
           "cols": link_map.take(w["cols"].take(kf, axis=1)),
           "wts": None if w["wts"] is None else w["wts"].take(kf, axis=1),
           "paired": w["paired"][keep_f],
           "b_of_f": b_of_f, "b_of_l": b_of_l, "t": w["t"][going], "acts": w["acts"][going],
           "a_i": w["a_i"][going], "n_acts": w["n_acts"][going],
           "f0": np.searchsorted(b_of_f, np.arange(n_b)), "l0": np.searchsorted(b_of_l, np.arange(n_b))}
    return out


def _columns(pf, pl, pw, n_f: int, n_l: int):
    """The pairs (sorted by flow) as columns of flows: row ``j`` of ``cols`` ``[K, F]`` holds every flow's
    ``j``-th link, or ``n_l`` (a padding slot no flow is limited by) where the flow has fewer than ``j + 1``;
    ``wts`` ``[K, F]`` the multiplicities (0 on padding), None when all are 1; and which flows have a pair.
    Read row-major by flow, the real entries are the pairs in their own order."""
    n_p = np.bincount(pf, minlength=n_f)
    slot = np.arange(pf.shape[0]) - (np.cumsum(n_p) - n_p)[pf]
    cols = np.full((int(n_p.max(initial=0)), n_f), n_l, dtype=np.intp)
    cols[slot, pf] = pl
    wts = None
    if not (pw == 1.0).all():
        wts = np.zeros(cols.shape)
        wts[slot, pf] = pw
    return cols, wts, n_p > 0


def _fill(cols, wts, live, cap, l0, b_of_l, b_of_f):
    """:func:`dicesim.sim.network.maxmin.maxmin_core` over the live flows of every table, each at its own level
    (``cols``, ``wts``: :func:`_columns`; ``live``: flows with at least one pair only).

    Work goes by flow, not by pair: a flow freezes when any of its links is a bottleneck, so one
    ``take`` of ``cols`` and an OR over its rows find the frozen flows, and the frozen and open sets
    are those flows' columns. The load of the unfrozen flows is updated by subtraction instead of recounted,
    and summed per link in column order rather than pair order: multiplicities are small integers,
    so every such sum is exact and gives the reference's float (a count of unit multiplicities, an
    integer, converts to the same float as their float sum). Flows are selected by index
    (``nonzero`` then ``take``), in order, which numpy does faster than a boolean mask.
    """
    n_f, n_l = live.shape[0], cap.shape[0]
    qf = live.nonzero()[0]
    qc, qb = cols.take(qf, axis=1), b_of_f.take(qf)
    qw = None if wts is None else wts.take(qf, axis=1)
    rate = np.zeros(n_f)
    cap_rem = cap.copy()
    load = _link_sum(qc, qw, n_l).astype(float)
    used = load > 0
    hit_l = np.zeros(n_l + 1, dtype=bool)  # the padding slot is never a bottleneck
    hit_real = hit_l[:n_l]
    while qf.shape[0]:
        press = load / cap_rem  # 0 on idle links
        top_b = np.maximum.reduceat(press, l0)
        np.greater_equal(press, (top_b * (1.0 - _TIE_RTOL)).take(b_of_l), out=hit_real)
        hit = np.logical_or.reduce(hit_l.take(qc))  # a flow freezes if any of its links is a bottleneck
        # a table without open flows has top 0: any finite level does (no flow takes it, no link loses load)
        level_b = 1.0 / np.maximum(top_b, _CAP_FLOOR)
        hi = hit.nonzero()[0]
        rate[qf.take(hi)] = level_b.take(qb.take(hi))
        gone = _link_sum(qc.take(hi, axis=1), None if qw is None else qw.take(hi, axis=1), n_l)
        cap_rem -= level_b.take(b_of_l) * gone
        np.maximum(cap_rem, _CAP_FLOOR, out=cap_rem)
        load -= gone
        if hi.shape[0] == qf.shape[0]:
            break
        ki = (~hit).nonzero()[0]
        qf, qb, qc = qf.take(ki), qb.take(ki), qc.take(ki, axis=1)
        if qw is not None:
            qw = qw.take(ki, axis=1)
    return rate, used


def _link_sum(qc, qw, n_l: int):
    """Per link, the multiplicities of the flows in columns ``qc`` (an integer count when all are 1)."""
    return np.bincount(qc.ravel(), None if qw is None else qw.ravel(), minlength=n_l + 1)[:n_l]


def mirrored(plan: Trajectory, table: FlowTable, other: FlowTable, rev_L: np.ndarray) -> Trajectory | None:
    """The plan of ``other`` when it is ``table`` with every link ``l`` replaced by ``rev_L[l]`` (same
    flows in the same order with the same bytes and start times; ``rev_L[l]`` of ``l``'s capacity):
    the same trajectory bit for bit, each link's busy time moved to its image. None if the flows
    differ. (A combine over mirror-image routes is its dispatch's mirror.)"""
    if not (_same(table.rem_F, other.rem_F) and _same(table.act_F, other.act_F)
            and _same(table.pair_flow_P, other.pair_flow_P) and _same_weights(table, other, rev_L)):
        return None
    pos = np.searchsorted(table.links_L, rev_L[other.links_L])
    # each link carries the bytes of its image: the same flows' products, summed in the same (flow) order
    return Trajectory(other, plan.t_seg, plan.fin_F.copy(), plan.group_fin_G.copy(), None, None, None,
                      plan.total_busy_L[pos], expand=_reference_segments(other), total_bytes_L=plan.total_bytes_L[pos])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two 1-d arrays of one dtype hold the same bits (stricter than ``==`` only for -0.0 and NaN,
    where a plan is then made rather than mirrored; bytes compare faster than numpy for every plan)."""
    return a.tobytes() == b.tobytes()


def _same_weights(table: FlowTable, other: FlowTable, rev_L: np.ndarray) -> bool:
    """Whether each flow loads each link of ``other`` as often as it loads the link's image in ``table``
    (multiplicities differ from 1 on host-staged routes and on links shared in lock step)."""
    ones = np.ones(table.pair_weight_P.shape[0]).tobytes()
    if table.pair_weight_P.tobytes() == ones and other.pair_weight_P.tobytes() == ones:
        return True
    n = max(int(table.links_L.max(initial=0)), int(rev_L.max(initial=0))) + 1
    mine = table.pair_flow_P * n + table.links_L[table.pair_link_P]
    theirs = other.pair_flow_P * n + rev_L[other.links_L[other.pair_link_P]]
    a, b = np.argsort(mine, kind="stable"), np.argsort(theirs, kind="stable")
    return bool(np.array_equal(mine[a], theirs[b]) and np.array_equal(table.pair_weight_P[a], other.pair_weight_P[b]))


def _reference_segments(table: FlowTable):
    def expand():
        ref = simulate(table)
        ref._segments()
        return ref._rates, ref._drained, ref._busy
    return expand
