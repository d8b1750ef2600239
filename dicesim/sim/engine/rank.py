"""One rank's simpy process: the interpreter of the compiled program (:mod:`dicesim.sim.engine.program`).

One process plays both the host and the compute stream. The host is a clock (``host_t``): each
op costs the host what the run's host table says (:class:`~dicesim.sim.engine.program.HostTable`:
the profile's eager host model, or ``host_op_s`` per launch and ``host_collective_s`` per
collective), and the host stops where it needs the GPU: at blocking collectives (it needs their
result) and at an op's *syncs* (it waits until the stream has drained, then pays ``sync_s`` per
sync). The compute stream runs ops in order; an op issued from host time ``a`` starts when the
stream is free and the host has reached its first kernel (``a + first_s``) and ends no earlier
than the host's last launch for it (``a + span_s`` of its block): the stream's idle time waiting
for the host is ``host_gap``. A wait idles the stream until its collective has ended (``exposed``).

Per-step accounting (cumulative, :data:`~dicesim.sim.engine.runspec.COUNTERS`): compute busy,
comm busy (any of the rank's collectives in flight), their overlap, exposed communication and
host gaps. Stream time = compute + exposed + host gap, exactly.

The other jobs stay outside the loop: the trace (:class:`~dicesim.sim.engine.recording.TraceHooks`,
one call where something happened) and window reuse (:class:`~dicesim.sim.engine.reuse.WindowMemo`,
consulted at cuts: it hands back the jump over repeated windows and the counters they add).
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Protocol

import numpy as np
import simpy

from dicesim.sim.engine.program import (
    BLOCKING, COMPUTE, FORGET, ISSUE, ROWS, STEP_END, WAIT, WAIT_ALL, WAIT_CUT, WAIT_RELEASE,
)
from dicesim.sim.engine.recording import WAIT_NAMES, TraceHooks
from dicesim.sim.engine.streams import ComputeStreams, RankState


class RankWorld(Protocol):
    """What a rank process reads of the world it runs in (:class:`~dicesim.sim.engine.engine.Engine`)."""

    env: simpy.Environment
    net: Any  # the FlowNetwork (window reuse reads and adds its link totals)
    streams: ComputeStreams
    trace: TraceHooks | None
    spec: Any  # the EngineSpec (its cost model prices the experts' flops for the trace)
    flat: list[tuple]  # the compiled program, steps concatenated
    coll_host: list  # HostCost per collective kind value
    sync_s: float  # host seconds of one sync once the stream has drained
    step_end: np.ndarray  # [W, T], written at step ends
    counters: np.ndarray  # [W, T, K], written at step ends

    def recv_rows(self, skip: bool, layer: int, tok: int, r: int) -> int: ...


def _gained(st, gain: tuple, comp: float, exposed: float, host_gap: float) -> tuple[float, float, float]:
    """Add a jump's counters (compute, comm busy, overlap, exposed, host gap) over the windows it
    repeats: the stream's two in place, the rank's three returned."""
    st.comm_busy += gain[1]
    st.ovl += gain[2]
    return comp + gain[0], exposed + gain[3], host_gap + gain[4]


def rank_process(eng: RankWorld, st: RankState):
    """The simpy process of rank ``st.r``: walk ``eng.flat`` once (see the module docstring)."""
    env, rec, r = eng.env, eng.trace, st.r
    timeout, compute = env.timeout, eng.streams.compute
    comms, mids = st.comms, st.mids
    chost, sync_s = eng.coll_host, eng.sync_s
    exp_s, memo = st.exp_s, st.memo
    pend: dict = {}  # handle (the issuing instruction's index) -> completion event
    host_t = comp = exposed = host_gap = 0.0  # host clock; cumulative busy/idle seconds
    held = 0  # times the host held the stream back (stream cuts reuse only windows without; streamcut.py)
    t = 0  # current step
    it = iter(eng.flat)
    for ins in it:
        op = ins[0]
        if op == COMPUTE:
            blk = ins[1]
            now = env.now
            if blk.syncs:  # the host waits for the stream to drain before it issues the block
                host_t = (host_t if host_t > now else now) + blk.syncs * sync_s
                held += 1
            a = host_t
            host_t += blk.host_s
            if a + blk.first_s > now:  # the stream waits for the host to launch the op
                held += 1
                host_gap += a + blk.first_s - now
                yield timeout(a + blk.first_s - now)
                now = env.now
            yield from compute(st, blk.total_s)
            comp += env.now - now
            if blk.gated and a + blk.span_s > env.now:  # the host is still issuing the block's last kernels
                held += 1
                host_gap += a + blk.span_s - env.now
                yield timeout(a + blk.span_s - env.now)
            if rec is not None:
                rec.compute(r, blk, now, env.now, t)
        elif op == ISSUE:
            c, wait = ins[1], ins[4]
            h = chost[ins[2][0]]
            now = env.now
            if h.syncs:
                host_t = (host_t if host_t > now else now) + h.syncs * sync_s
                held += 1
            host_t += h.issue_s
            if host_t > now:  # the host launches it after the stream got here
                held += 1
                ev = comms[c].issue(mids[c], ins[2], t, host_t)
            else:
                ev = comms[c].issue(mids[c], ins[2], t, now)
            if wait == WAIT_CUT:
                if memo is not None:
                    memo.issued(mids[0], host_t, held)
            elif wait != WAIT_RELEASE:
                pend[ins[3]] = ev
            if wait and ev.callbacks is not None:  # the stream waits for it at once
                yield ev
                exposed += env.now - now
                if rec is not None:
                    coll = ins[2]
                    rec.wait(r, WAIT_NAMES[coll.kind], now, env.now, coll.layer, t, coll.tok_step)
            if wait == WAIT_CUT and memo is not None:  # a stream cut: record it; jump where the hosts allow
                hit = memo.jump(mids[0], r, env.now, (comp, st.comm_busy, st.ovl, exposed, host_gap), eng.net,
                                comms[0], eng.step_end, eng.counters)
                if hit is not None:
                    jump, gain = hit
                    comp, exposed, host_gap = _gained(st, gain, comp, exposed, host_gap)
                    next(islice(it, jump.skip_n - 1, None))  # to the instruction after the landing cut
                    yield timeout(jump.duration_s)
                    host_t += jump.host_gain[mids[0]]  # the host advanced as in the windows repeated
                    t, pend = memo.landing(jump)
                    memo.issued(mids[0], host_t, held)
                    memo.cut(mids[0], env.now, (comp, st.comm_busy, st.ovl, exposed, host_gap), eng.net, comms[0],
                             decide=False)
        elif op == WAIT:
            ev = pend.pop(ins[1]) if ins[3] else pend[ins[1]]
            if ev.callbacks is not None:
                now = env.now
                yield ev
                exposed += env.now - now
                if rec is not None:
                    coll = ins[2]
                    rec.wait(r, WAIT_NAMES[coll.kind], now, env.now, coll.layer, t, coll.tok_step)
        elif op == ROWS:
            _, layer, tok, skip, name, h = ins
            now = env.now
            if h.syncs:
                host_t = (host_t if host_t > now else now) + h.syncs * sync_s
                held += 1
            a = host_t
            host_t += h.issue_s
            if a + h.first_s > now:
                held += 1
                host_gap += a + h.first_s - now
                yield timeout(a + h.first_s - now)
                now = env.now
            yield from compute(st, exp_s[skip][layer][tok])
            comp += env.now - now
            if host_t > env.now and h.issue_s > h.first_s:  # the host is still issuing the experts' kernels
                held += 1
                host_gap += host_t - env.now
                yield timeout(host_t - env.now)
            if rec is not None:
                rows = eng.recv_rows(skip, layer, tok, r)
                rec.rows_compute(r, name, now, env.now, layer, t, tok, rows, eng.spec.cost.expert_cost(rows).flops)
        elif op == BLOCKING:
            # the host needs the result (a count exchange: the counts size the dispatch)
            c, coll = ins[1], ins[2]
            h = chost[coll[0]]
            now = env.now
            if h.syncs:
                host_t = (host_t if host_t > now else now) + h.syncs * sync_s
            host_t += h.issue_s
            ev = comms[c].issue(mids[c], coll, t, host_t if host_t > now else now)
            if ev.callbacks is not None:
                yield ev
                exposed += env.now - now
                if rec is not None:
                    rec.wait(r, WAIT_NAMES[coll.kind], now, env.now, coll.layer, t, coll.tok_step)
            now = env.now
            if host_t < now:
                host_t = now
            if ins[3] and memo is not None:  # a cut: record it; jump over repeated windows
                hit = memo.jump(mids[0], r, now, (comp, st.comm_busy, st.ovl, exposed, host_gap), eng.net, comms[0],
                                eng.step_end, eng.counters)
                if hit is not None:
                    jump, gain = hit
                    comp, exposed, host_gap = _gained(st, gain, comp, exposed, host_gap)
                    next(islice(it, jump.skip_n - 1, None))  # to the instruction after the landing cut
                    yield timeout(jump.duration_s)
                    now = host_t = env.now
                    t, pend = memo.landing(jump)
                    memo.cut(mids[0], now, (comp, st.comm_busy, st.ovl, exposed, host_gap), eng.net, comms[0])
        elif op == STEP_END:
            t = ins[1]
            now = env.now
            if st.comm_active:
                st.comm_busy += now - st.comm_t0
                st.comm_t0 = now
            eng.step_end[r, t] = now
            eng.counters[r, t] = (comp, st.comm_busy, st.ovl, exposed, host_gap)
            if rec is not None:
                rec.step_end(r, t, eng.step_end[r, t - 1] if t else 0.0, now)
            t += 1
        elif op == FORGET:  # never used; the collectives still run in order on their communicator
            pend.clear()
        elif op == WAIT_ALL:  # the sampler synchronises before it returns
            now = env.now
            for ev in pend.values():
                if ev.callbacks is not None:
                    yield ev
            pend.clear()
            exposed += env.now - now
            if rec is not None and env.now > now:
                rec.wait(r, "wait_drain", now, env.now, -1, t, t)
        else:
            raise ValueError(f"instruction {op!r} is not in the simulator's instruction set")
