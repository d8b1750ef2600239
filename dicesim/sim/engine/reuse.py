"""Window reuse: simulate each distinct stretch of a run between two group-wide cuts once.

Why a repeat is exact. A *cut* is a blocking collective on a group's main communicator of a
kind the strategy's family names (:meth:`dicesim.plan.PlanFamily.window_cuts`; expert
parallelism: the count exchange, when it shares the all-to-all communicator). Collectives run
in issue order on a communicator, so when a cut completes, at ``tau``, every member is blocked
on it, every earlier collective of the group has finished (none of its flows is left in the
network), no member computes, and every member's host clock is ``tau`` (the host waited for
it). The group's whole state is then fixed by its position in the program (which collectives
are pending, all of them complete) and by ``tau``. What happens between two consecutive cuts
(a *window*) depends only on the instructions inside it and the data they reference: compute
block durations, what each collective carries (for an all-to-all: which matrix, so its flows
and the experts' received rows), which instruction issued the collective a wait refers to,
and which of the collectives issued inside the window a wait-all waits for (a forget only
changes that set; rows kept for a later wait are pending like an issued dispatch that has
arrived). Two windows with equal keys evolve identically, shifted in time; this is the steady
state ("step t+1 is step t with the same inputs") taken down to one layer, so repeats inside a
step are found as well.

A window whose key was seen before is not simulated: its members advance their clocks by
the recorded duration and add the recorded counters, link totals and collective count; its
step ends are the recorded offsets. Results match a full run up to float round-off of
absolute times (durations are added instead of re-derived). The engine applies this only to
groups for which the cut argument holds (:func:`reuse_blocker`) and that share no link with
another group; anything else is simulated in full.
Legend: W windows, S group members, K counters, L links of the group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dicesim.plan import CollectiveKind, WindowCuts
from dicesim.sim.engine.program import (
    BLOCKING, COMPUTE, FORGET, ISSUE, ROWS, STEP_END, WAIT, WAIT_ALL, WAIT_CUT, WAIT_RELEASE,
)

_CUT, _END, _STEP, _FORGET = ("cut",), ("end",), ("step",), ("forget",)
_ROUTED = (int(CollectiveKind.DISPATCH), int(CollectiveKind.COMBINE))


class _Done:
    """Stands for a collective that completed before a cut (the engine only tests ``callbacks``)."""

    __slots__ = ()
    callbacks = None


DONE = _Done()


def isolated(links: list[np.ndarray], ports: list[list[np.ndarray]] | None) -> list[bool]:
    """Per group: whether it shares no link with any other group. ``links``: each group's route
    links; ``ports``: each member's endpoint links when compute slows them (they couple groups too)."""
    owner: dict[int, int] = {}
    shared: set[int] = set()
    for i, lk in enumerate(links):
        used = set(lk.tolist())
        if ports is not None:
            for p in ports[i]:
                used.update(p.tolist())
        for link in used:
            j = owner.setdefault(link, i)
            if j != i:
                shared.update((i, j))
    return [i not in shared for i in range(len(links))]


def window_memos(flat: list[tuple], groups: list[tuple], *, n_counters: int, cuts: WindowCuts, record: bool,
                 enabled: bool, find: Callable[[list[tuple], tuple], Windows | None] | None = None,
                 memo: type | None = None) -> tuple[list[WindowMemo], str | None]:
    """A :class:`WindowMemo` for every group where reuse is exact, and why it is not for the others.

    ``groups``: ``(members, cut latency_s, matrix ids [skip][layer, tok], route links, isolated)``;
    ``n_counters``: per-rank counters the engine snapshots at cuts; ``cuts``: the family's cut points;
    ``find``: :func:`find_windows` or a cached equivalent (:func:`dicesim.sim.engine.skeleton.windows_of`);
    ``memo``: the memo class (default :class:`WindowMemo`; stream cuts:
    :class:`~dicesim.sim.engine.streamcut.StreamMemo`).
    """
    find = find or find_windows
    if not enabled:
        return [], "not asked for"
    has_cut = any((ins[0] == BLOCKING and ins[3]) or (ins[0] == ISSUE and ins[4] == WAIT_CUT) for ins in flat)
    if cuts.stream and any(ins[0] == BLOCKING for ins in flat):  # the host waits there: not what streamcut checks
        return [], "a blocking collective in a program cut where streams wait"
    memos, reasons = [], []
    for members, cut_lat, mid, links, alone in groups:
        why = reuse_blocker(cuts=cuts, has_cut=has_cut, members=len(members), cut_latency_s=cut_lat, record=record)
        if why is None and not alone:
            why = "its links are shared with another group"
        win = find(flat, mid) if why is None else None
        if why is None and win.n_repeats == 0:
            why = "no window repeats an earlier one"
        if why is not None:
            reasons.append(why)
            continue
        memos.append((memo or WindowMemo)(win, tuple(members), n_counters, links))
    return memos, (reasons[0] if reasons else None)


def reuse_blocker(*, cuts: WindowCuts, has_cut: bool, members: int, cut_latency_s: float,
                  record: bool) -> str | None:
    """Why window reuse cannot apply to a group, or None when the cut argument holds
    (``has_cut``: the program holds a cut at all)."""
    if record:
        return "events are recorded (every window is simulated so the trace is complete)"
    if cuts.blocked is not None:
        return cuts.blocked
    if not has_cut:
        return cuts.none_found
    if members < 2:
        return "one-rank groups exchange nothing"
    if not cut_latency_s > 0:
        return "zero count-exchange latency"
    return None


@dataclass(frozen=True)
class Windows:
    """Cuts and windows of one group's flat program (see the module docstring).

    Window ``w`` runs from cut ``w`` to cut ``w + 1``; the last one from the last cut to the end.
    ``src[w]`` is the earlier window it repeats (-1: simulate it); ``run_end[w]`` is the last
    window of the maximal run of repeats starting at ``w`` (-1 where no run starts).
    """

    cut_pc: np.ndarray
    cut_step: np.ndarray
    cut_pending: tuple[tuple[int, ...], ...]
    steps: tuple[np.ndarray, ...]
    src: np.ndarray
    run_end: np.ndarray

    @property
    def n_windows(self) -> int:
        return int(self.src.shape[0])

    @property
    def n_repeats(self) -> int:
        return int(np.count_nonzero(self.src >= 0))


def find_windows(flat: list[tuple], mid: tuple[np.ndarray, np.ndarray]) -> Windows | None:
    """Cuts, window keys and repeats of ``flat`` (the compiled program, steps concatenated).

    ``mid[skip][layer, tok_step]``: id of the group's row matrix, equal for equal matrices (what an
    all-to-all moves and the rows the experts run on). None when the program has no cut.
    """
    mid = [m.tolist() for m in mid]  # scalar reads from nested lists, not numpy
    pend: dict[int, int] = {}  # pending handles (the flat index of the issuing instruction)
    cut_pc, cut_step, cut_pending = [], [], []
    keys: list[tuple] = []
    steps: list[list[int]] = []
    cur: list | None = None  # key of the open window (None before the first cut)
    cur_steps: list[int] = []
    start = step = 0
    for i, ins in enumerate(flat):
        op = ins[0]
        if op == COMPUTE:
            if cur is not None:
                cur.append((COMPUTE, ins[1].key))
            continue
        if op == STEP_END:
            if cur is not None:
                cur.append(_STEP)
                cur_steps.append(ins[1])
            step = ins[1] + 1
            continue
        if op == FORGET:  # what a later WAIT_ALL waits for changes; nothing else does
            pend.clear()
            if cur is not None:
                cur.append(_FORGET)
            continue
        if op == WAIT_ALL:
            # it waits for the pending collectives issued inside the window (those from before the
            # cut have completed): key them by position, as a WAIT keys its source
            if cur is not None:
                cur.append((WAIT_ALL, tuple(sorted(at - start for at in pend if at >= start))))
            pend.clear()
            continue
        if op == BLOCKING or (op == ISSUE and ins[4] == WAIT_CUT):
            c = ins[2]  # Coll: kind, layer, tok_step, skip, span
            pay = (c[0], c[3], mid[c[3]][c[1]][c[2]]) if c[0] in _ROUTED else (c[0], c[4])
            if op == BLOCKING and not ins[3]:
                if cur is not None:
                    cur.append((BLOCKING, ins[1], pay))
                continue
            if cur is not None:
                cur.append(_CUT)
                keys.append(tuple(cur))
                steps.append(cur_steps)
            cut_pc.append(i)
            cut_step.append(step)
            cut_pending.append(tuple(sorted(pend)))
            start = i
            cur, cur_steps = [(op, ins[1], pay)], []
        elif op == ISSUE:
            if ins[4] != WAIT_RELEASE:
                pend[ins[3]] = i
            if cur is not None:
                # what the collective's duration depends on: the group's matrix for an all-to-all,
                # the layers covered for an all-gather, nothing else for a latency-bound one
                c = ins[2]
                pay = (c[0], c[3], mid[c[3]][c[1]][c[2]]) if c[0] in _ROUTED else (c[0], c[4])
                cur.append((ISSUE, ins[1], pay, ins[4]))
        elif op == WAIT:
            at = pend.pop(ins[1]) if ins[3] else pend[ins[1]]
            if cur is not None:
                cur.append((WAIT, at - start if at >= start else -1, ins[3]))
        elif op == ROWS:
            if cur is not None:
                cur.append((ROWS, ins[3], mid[ins[3]][ins[1]][ins[2]]))
        else:
            raise ValueError(f"instruction {op!r} has no window key")
    if cur is None:
        return None
    cur.append(_END)
    keys.append(tuple(cur))
    steps.append(cur_steps)
    n = len(keys)
    first: dict[tuple, int] = {}
    src = np.full(n, -1, dtype=np.intp)
    for w, k in enumerate(keys):
        v = first.setdefault(k, w)
        if v != w:
            src[w] = v
    run_end = np.full(n, -1, dtype=np.intp)
    w = 0
    while w < n:
        if src[w] >= 0:
            e = w
            while e + 1 < n and src[e + 1] >= 0:
                e += 1
            run_end[w] = e
            w = e + 1
        else:
            w += 1
    return Windows(cut_pc=np.array(cut_pc, dtype=np.intp), cut_step=np.array(cut_step, dtype=np.intp),
                   cut_pending=tuple(cut_pending), steps=tuple(np.array(s, dtype=np.intp) for s in steps),
                   src=src, run_end=run_end)


@dataclass(frozen=True)
class Jump:
    """A run of repeated windows, as every member of the group applies it at the run's first cut.

    ``vs`` are the windows repeated, ``rel`` each cut's time after the first one; step-end
    entries pair a step of the run (``dst``) with the step it repeats (``src``), in the run's
    window ``ent`` (a repeat of window ``ent_v``).
    """

    skip_n: int
    landing: int
    vs: np.ndarray
    rel: np.ndarray
    dst: np.ndarray
    src: np.ndarray
    ent: np.ndarray
    ent_v: np.ndarray
    #: per member, the host clock's advance over the run (stream cuts); None: the host waited at the cut
    host_gain: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        return float(self.rel[-1])


class WindowMemo:
    """One group's record of its cuts and the jumps over repeated windows.

    The first member to reach a cut records the group-wide facts (time, link totals of the
    group's links ``links_L``, collectives completed); every member records its own counters.
    """

    def __init__(self, win: Windows, members: tuple[int, ...], n_counters: int, links_L: np.ndarray):
        n, n_members = win.cut_pc.shape[0], len(members)
        self.win, self.members = win, members
        self.links_L = links_L
        self.cut_t = np.zeros(n)
        self.cut_acc = np.zeros((n, n_members, n_counters))
        self.cut_link = np.zeros((n, 2, links_L.shape[0]))
        self.cut_coll = np.zeros(n, dtype=np.int64)
        self._pos = [0] * n_members
        self._seen = -1
        self._jumps: dict[int, Jump] = {}
        self.repeated = 0  # windows taken from the record so far

    def _record(self, m: int, now: float, acc: tuple, net, comm) -> tuple[int, bool]:
        """Member ``m`` reaches its next cut ``w`` with counters ``acc``; the first member there records
        the time, link totals and collective count. Returns ``w`` and whether this member was first."""
        w = self._pos[m]
        self._pos[m] = w + 1
        self.cut_acc[w, m] = acc
        if w <= self._seen:
            return w, False
        self._seen = w
        self.cut_t[w] = now
        self.cut_link[w] = net.link_totals(self.links_L)
        self.cut_coll[w] = comm.count
        return w, True

    def cut(self, m: int, now: float, acc: tuple, net, comm) -> Jump | None:
        """Member ``m`` is at its next cut with counters ``acc``; the jump to take, or None."""
        w, _ = self._record(m, now, acc, net, comm)
        w1 = int(self.win.run_end[w])
        if w1 < 0:
            return None
        jump = self._jumps.get(w)
        if jump is None:
            jump = self._jumps[w] = self._make_jump(w, w1)
            self.repeated += w1 - w + 1
            vs = self.win.src[w:w1 + 1]
            net.add_link_totals(self.links_L, (self.cut_link[vs + 1] - self.cut_link[vs]).sum(axis=0))
            comm.count += int((self.cut_coll[vs + 1] - self.cut_coll[vs]).sum())
        self._pos[m] = w1 + 1
        return jump

    def jump(self, m: int, r: int, now: float, acc: tuple, net, comm, step_end_WT: np.ndarray,
             counters_WTK: np.ndarray) -> tuple[Jump, list[float]] | None:
        """Member ``m`` (global rank ``r``) is at its next cut: record it; where a run of repeated
        windows starts here, the jump over it and the member's counter gain (step ends written)."""
        jump = self.cut(m, now, acc, net, comm)
        if jump is None:
            return None
        return jump, self.apply(jump, m, r, now, acc, step_end_WT, counters_WTK).tolist()

    def landing(self, jump: Jump) -> tuple[int, dict]:
        """Step and pending collectives (all complete) of a member after ``jump``."""
        w = jump.landing
        return int(self.win.cut_step[w]), {h: DONE for h in self.win.cut_pending[w]}

    def apply(self, jump: Jump, m: int, r: int, now: float, acc: tuple, step_end_WT: np.ndarray,
              counters_WTK: np.ndarray) -> np.ndarray:
        """Write rank ``r``'s (member ``m``) step ends inside the jump; return its counter gain.

        Per member, because a repeated window may end at this very cut, which every member
        records only when it gets here."""
        acc_v = self.cut_acc[:, m]
        gain = acc_v[jump.vs + 1] - acc_v[jump.vs]
        pre = np.concatenate((np.zeros((1, gain.shape[1])), np.cumsum(gain, axis=0)))
        if jump.dst.shape[0]:
            step_end_WT[r, jump.dst] = now + jump.rel[jump.ent] + (step_end_WT[r, jump.src] - self.cut_t[jump.ent_v])
            counters_WTK[r, jump.dst] = (np.asarray(acc) + pre[jump.ent]
                                         + (counters_WTK[r, jump.src] - acc_v[jump.ent_v]))
        return pre[-1]

    def _make_jump(self, w0: int, w1: int, vs: np.ndarray | None = None) -> Jump:
        """The jump over windows ``w0..w1``, each repeating ``vs`` (default: their first occurrences)."""
        win = self.win
        ws = np.arange(w0, w1 + 1)
        vs = win.src[ws] if vs is None else vs
        rel = np.concatenate(([0.0], np.cumsum(self.cut_t[vs + 1] - self.cut_t[vs])))
        counts = [win.steps[w].shape[0] for w in ws]
        dst = np.concatenate([win.steps[w] for w in ws]) if ws.shape[0] else np.zeros(0, dtype=np.intp)
        src = np.concatenate([win.steps[v] for v in vs]) if ws.shape[0] else np.zeros(0, dtype=np.intp)
        ent = np.repeat(np.arange(ws.shape[0]), counts)
        return Jump(skip_n=int(win.cut_pc[w1 + 1] - win.cut_pc[w0]), landing=w1 + 1, vs=vs, rel=rel,
                    dst=dst, src=src, ent=ent, ent_v=vs[ent])
