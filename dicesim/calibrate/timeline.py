"""From a traced run to fitting samples: per-op compute times and collective instances.

**Time partition.** Every microsecond of a rank's compute track is either an op, a wait on
communication, or a gap (host work outside any traced op: Python bookkeeping, un-permuting,
issuing a collective). The simulator only knows ops and waits, so gaps are attributed to
the model component whose serial cost they are:

- a gap after a compute op belongs to that op (its host tail), except the gap before
  ``embed``, which is the sampler's work between steps and belongs to ``embed``;
- the gaps just before and after a count-exchange wait (sorting rows by destination,
  issuing the exchange, building the layout from the counts, issuing the dispatch) belong
  to the count exchange: it is blocking, so the simulator keeps that time serial, and a
  data-parallel run (no exchange) does not pay it;
- a gap after a combine wait is un-permuting the returned rows: it belongs to that layer's
  ``local_combine``; a gap after a dispatch wait belongs to the next op (the experts).

``moe_output`` (executor) is folded into ``local_combine``; the fused executor op names map
onto profile op kinds through :data:`NAME_TO_KIND`.

**Collective instances.** One all-to-all (or count exchange) of one group, matched across
its member ranks by (stream, name, layer, tok_step). On an in-order communicator it can
start only when the previous collective has finished; its *service time* runs from the
members' mean ready time (or that finish) until the members see it complete (a blocked
rank: the end of its wait, which includes waking up; otherwise the completion callback).
For measured runs the mean, not the latest, ready time: the simulator's ranks arrive
together (up to the skew their work really differs by), so the time an average rank waits
for the random straggler of a noisy machine has to be charged to the collective (a
straggler term that grows with the world size). A count exchange
runs from the end of each member's gate to the start of its next op (the host work around
it included, as above). ``sync_layer`` marks the collectives of synchronous layers: the plan
awaits them at once, so no compute of their members overlaps them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dicesim.calibrate.runs import TraceRun
from dicesim.plan import build_plan
from dicesim.plan.expert.kinds import MoEAction
from dicesim.sim.costs.routing import TokenRouting

#: trace op names -> profile op kinds (None: untimed helper ops, treated like gaps)
NAME_TO_KIND: dict[str, str] = {
    "embed": "embed", "attention": "attention", "gate": "gate", "run_experts": "experts",
    "experts": "experts", "local_moe": "experts", "sync_moe": "experts", "shared_expert": "shared_expert",
    "local_combine": "local_combine", "moe_output": "local_combine", "final": "final",
}
COLL_NAMES = ("counts", "dispatch", "combine")
_SAMPLE_COLS = ["rank", "step", "layer", "tok_step", "kind", "op_s", "gap_s", "rows", "n_events", "t0_s", "t1_s"]


def _base_name(name: str) -> str:
    for prefix in ("wait:", "wait_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _rank_groups(run: TraceRun) -> dict[int, int]:
    groups = run.meta.extra.get("ep_groups")
    if not groups:
        groups = run.layout.groups() if run.world_size > 1 else [[0]]
    return {int(r): g for g, members in enumerate(groups) for r in members}


def measured_routing(run: TraceRun) -> TokenRouting | None:
    """Routed copies per (layer, step, rank, expert) as the run's router histogram recorded them."""
    if run.router_hist_WTLE is None or run.ep_size <= 1:
        return None
    counts_LTWE = np.ascontiguousarray(run.router_hist_WTLE.transpose(2, 1, 0, 3))
    counts_LTWE.setflags(write=False)
    return TokenRouting(placement=run.layout.placement, tokens_per_rank=run.workload.tokens, top_k=run.preset.top_k,
                        counts_LTWE=counts_LTWE)


def _skip_set(run: TraceRun, kinds: tuple[MoEAction, ...] = (MoEAction.ISSUE_DISPATCH, MoEAction.RUN_EXPERTS,
                                                              MoEAction.SYNC_MOE),
              skip: bool = True) -> set[tuple[int, int, int]]:
    """(layer, tok_step, step) of the plan's actions of ``kinds`` whose ``skip`` flag is ``skip`` (or any: None)."""
    if run.strategy is None:
        return set()
    plan = build_plan(run.strategy, run.preset.depth, run.steps)
    return {(a.layer, a.tok_step, t) for t, acts in plan for a in acts
            if a.kind in kinds and (skip is None or a.skip == skip)}


def _max_link_nbytes(M_SS: np.ndarray, row_nbytes: int) -> float:
    off = M_SS - np.diag(np.diag(M_SS))
    return float(max(off.sum(axis=1).max(initial=0), off.sum(axis=0).max(initial=0)) * row_nbytes)


def wait_neighbours(ev: pd.DataFrame) -> dict[tuple, tuple[float, float, float, float]]:
    """(rank, name, layer, tok_step, step) of every wait -> (start, end, previous event's end, next event's
    start) in s. ``step``: when the wait happened (an exchange of the same tokens can run twice:
    ``async_work="every_step"`` re-runs a sync step's experts at the next step)."""
    track = ev[(ev["stream"] == "compute") & ev["kind"].isin(("compute", "wait"))].sort_values(
        ["rank", "start_us", "end_us"], kind="stable")
    r, k = track["rank"].to_numpy(), track["kind"].to_numpy()
    s, e = track["start_us"].to_numpy() / 1e6, track["end_us"].to_numpy() / 1e6
    same_prev = np.r_[False, r[1:] == r[:-1]]
    same_next = np.r_[r[:-1] == r[1:], False]
    prev_end = np.where(same_prev, np.r_[np.nan, e[:-1]], s)
    next_start = np.where(same_next, np.r_[s[1:], np.nan], e)
    out = {}
    names, layers, toks = track["name"].to_numpy(), track["layer"].to_numpy(), track["tok_step"].to_numpy()
    steps = track["step"].to_numpy()
    for i in np.flatnonzero(k == "wait"):
        out[(int(r[i]), _base_name(names[i]), int(layers[i]), int(toks[i]), int(steps[i]))] = (
            s[i], e[i], min(prev_end[i], s[i]), max(next_start[i], e[i]))
    return out


def collective_instances(run: TraceRun, *, straggler: bool | None = None) -> pd.DataFrame:
    """One row per collective instance with its ready, start, done and service times (seconds).

    ``straggler``: measure from the members' mean ready time (True) or the latest (False);
    default True for measured runs and False for simulator traces, whose rank skew is
    deterministic and which the simulator reproduces by itself.
    """
    if straggler is None:
        straggler = run.meta.source != "sim"
    ev = run.events
    coll = ev[(ev["kind"] == "collective") & ev["name"].isin(COLL_NAMES)]
    cols = ["group", "stream", "name", "layer", "tok_step", "step", "members", "issue_s", "ready_s", "start_s",
            "done_s", "done_by_rank", "service_s", "service_raw_s", "blocked", "max_link_nbytes", "nbytes", "world",
            "sync_layer"]
    if coll.empty:
        return pd.DataFrame({c: [] for c in cols})
    wait_at = wait_neighbours(ev)
    group_of = _rank_groups(run)
    routing = measured_routing(run)
    skips = {(layer, tok) for layer, tok, _ in _skip_set(run)}
    syncs = _skip_set(run, (MoEAction.SYNC_MOE,), None)  # awaited at once: no compute of the rank overlaps them
    row_nbytes = run.workload.row_nbytes()
    groups = run.meta.extra.get("ep_groups") or (routing.placement.groups() if routing else None)
    c = coll.assign(group=[group_of.get(int(r), 0) for r in coll["rank"]])
    rows = []
    for (g, stream, name, layer, tok, step), grp in c.groupby(["group", "stream", "name", "layer", "tok_step", "step"],
                                                             sort=False):
        ranks = grp["rank"].to_numpy()
        issue_R = grp["start_us"].to_numpy() / 1e6
        done_R = grp["end_us"].to_numpy() / 1e6
        ready_R = issue_R.copy()
        # its wait: at the issue step or, for an asynchronous exchange, at most two steps later
        w = [next((wait_at[k] for ws in range(int(step), int(step) + 3)
                   if (k := (int(r), name, int(layer), int(tok), ws)) in wait_at), None) for r in ranks]
        if name == "counts":  # host work around the exchange is part of it: from the gate's end
            ready_R = np.array([wt[2] if wt else i for wt, i in zip(w, issue_R)])
        if routing is not None and name != "counts" and groups is not None:
            M = routing.group_matrix(tuple(groups[g]), int(layer), int(tok), (int(layer), int(tok)) in skips)
            link = _max_link_nbytes(M.T if name == "combine" else M, row_nbytes)
        else:
            S = len(ranks)
            share = 1.0 if run.meta.source == "sim" else (S - 1) / max(S, 1)
            link = 0.0 if name == "counts" else float(grp["nbytes"].max()) * share
        rows.append((g, stream, name, int(layer), int(tok), int(grp["step"].min()), tuple(int(r) for r in ranks),
                     float(issue_R.min()), float(ready_R.mean() if straggler else ready_R.max()), done_R, w, link,
                     int(grp["nbytes"].sum()), len(ranks)))
    out = []
    by_comm: dict[tuple, float] = {}
    for g, stream, name, layer, tok, step, members, issue, ready, done_R, w, link, nb, S in sorted(
            rows, key=lambda x: (x[0], x[1], x[7])):
        key = (g, stream)
        start = max(ready, by_comm.get(key, -np.inf))
        done = float(done_R.max())
        by_comm[key] = done
        blocked = [wt is not None and wt[0] < done for wt in w]
        if name == "counts":  # ... to the next op (the layout and the dispatch issue come after it)
            complete = [wt[3] if wt else done for wt in w]
        else:
            complete = [wt[1] if b else done for wt, b in zip(w, blocked)]
        raw = float(np.median(complete)) - start
        out.append((g, stream, name, layer, tok, step, members, issue, ready, start, done,
                    tuple(float(d) for d in done_R), max(raw, 0.0), raw,
                    any(blocked),
                    link, nb, S, (layer, tok, step) in syncs))
    return pd.DataFrame(out, columns=cols)


def inflight_union(inst: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per rank, the merged intervals during which one of its collectives was in service."""
    per: dict[int, list[tuple[float, float]]] = {}
    for members, s, done_R in zip(inst["members"], inst["start_s"], inst["done_by_rank"]):
        for r, e in zip(members, done_R):
            per.setdefault(r, []).append((s, max(e, s)))
    out = {}
    for r, iv in per.items():
        iv.sort()
        merged: list[list[float]] = []
        for s, e in iv:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        arr = np.array(merged)
        out[r] = (arr[:, 0], arr[:, 1])
    return out


def _overlap_s(t0: float, t1: float, union: tuple[np.ndarray, np.ndarray] | None) -> float:
    if union is None or t1 <= t0:
        return 0.0
    s, e = union
    i = max(int(np.searchsorted(e, t0)), 0)
    total = 0.0
    while i < len(s) and s[i] < t1:
        total += max(0.0, min(e[i], t1) - max(s[i], t0))
        i += 1
    return total


def compute_samples(run: TraceRun, instances: pd.DataFrame | None = None, *, stream: str = "compute",
                    absorb_gaps: bool | None = None) -> pd.DataFrame:
    """Per-op samples: op time, attributed gap time, overlap with communication, rows.

    ``absorb_gaps`` defaults to True for whole
    sampling runs and False for isolated op timings (benchmark loops, whose gaps are the
    benchmark's own bookkeeping).
    """
    if absorb_gaps is None:
        absorb_gaps = run.is_timeline
    ev = run.events
    ev = ev[(ev["stream"] == stream) & ev["kind"].isin(("compute", "wait"))].sort_values(
        ["rank", "start_us", "end_us"], kind="stable")
    inst = collective_instances(run) if instances is None else instances
    union = inflight_union(inst) if len(inst) else {}
    acc: dict[tuple, list] = {}

    def add(key: tuple, op_s: float, gap_s: float, rows: int, t0: float, t1: float, n: int) -> None:
        a = acc.setdefault(key, [0.0, 0.0, 0, 0, t0, t1])
        a[0] += op_s
        a[1] += gap_s
        a[2] = max(a[2], rows)
        a[3] += n
        a[4], a[5] = min(a[4], t0), max(a[5], t1)

    for rank, g in ev.groupby("rank", sort=True):
        kind_ = g["kind"].to_numpy()
        name_ = [_base_name(n) if k == "wait" else n for n, k in zip(g["name"], kind_)]
        s_ = g["start_us"].to_numpy() / 1e6
        e_ = g["end_us"].to_numpy() / 1e6
        step_, layer_, tok_ = g["step"].to_numpy(), g["layer"].to_numpy(), g["tok_step"].to_numpy()
        rows_ = g["rows"].to_numpy()
        keys: list[tuple | None] = []
        last_key: tuple | None = None
        for i in range(len(g)):
            kind = NAME_TO_KIND.get(name_[i]) if kind_[i] == "compute" else None
            if kind is not None:
                last_key = (int(rank), int(step_[i]), int(layer_[i]), int(tok_[i]), kind)
                add(last_key, e_[i] - s_[i], 0.0, int(rows_[i]), s_[i], e_[i], 1)
            elif kind_[i] == "compute" and last_key is not None:  # untyped helper op: a gap of its owner
                add(last_key, 0.0, e_[i] - s_[i], 0, s_[i], s_[i], 0)
            keys.append(last_key if kind is not None else None)
        if not absorb_gaps:
            continue
        for i in range(1, len(g)):
            gap = s_[i] - e_[i - 1]
            if gap <= 0:
                continue
            cur = keys[i]
            if cur is not None and cur[4] == "embed":
                target = cur
            elif (kind_[i - 1] == "wait" and name_[i - 1] == "counts") or (kind_[i] == "wait" and name_[i] == "counts"):
                continue  # host work of the count exchange: part of its latency
            elif kind_[i - 1] == "wait" and name_[i - 1] == "combine":
                target = (int(rank), int(step_[i - 1]), int(layer_[i - 1]), int(step_[i - 1]), "local_combine")
            elif kind_[i - 1] == "wait":
                target = next((k for k in keys[i:] if k is not None), None)
            else:
                target = keys[i - 1] or next((k for k in keys[i - 1::-1] if k is not None), None)
            if target is not None:
                add(target, 0.0, gap, 0, np.inf, -np.inf, 0)
    if not acc:
        return pd.DataFrame({c: [] for c in _SAMPLE_COLS + ["overlap_frac"]})
    df = pd.DataFrame([(*k[:4], k[4], *v) for k, v in acc.items()], columns=_SAMPLE_COLS)
    df = df[df["n_events"] > 0].reset_index(drop=True)
    ov = [_overlap_s(t0, t1, union.get(int(r))) for r, t0, t1 in zip(df["rank"], df["t0_s"], df["t1_s"])]
    df["overlap_frac"] = np.clip(np.array(ov) / np.maximum(df["op_s"].to_numpy(), 1e-12), 0.0, 1.0)
    return df
