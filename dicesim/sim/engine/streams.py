"""Compute streams under communication: each rank's op speed and its endpoint links' speed.

While any of a rank's collectives is in flight, its compute runs ``1 + interference`` times
slower; a running op's remaining work is re-timed on every change, so the result is exact
(not rounded to op boundaries; see :meth:`ComputeStreams.compute`). While a rank computes,
the links of its endpoint run ``1 + comm_interference`` times slower (bandwidth and latency
phase, :meth:`~dicesim.sim.network.network.FlowNetwork.set_link_scale`), and a link of the shared
path its host-staged transfers cross runs ``1 + comm_interference * k / n`` times slower while ``k``
of the ``n`` ranks whose transfers cross it compute (:func:`~dicesim.sim.network.linkscale.comm_paths`),
so transfers are re-planned when a rank's compute starts and stops. The same state also accumulates each rank's comm-busy and
overlap seconds, which the engine snapshots at step ends.
"""

from __future__ import annotations

import numpy as np
import simpy

from dicesim.sim.network.network import FlowNetwork

#: remaining compute below this many seconds counts as finished (float round-off after re-timing)
_EPS_S = 1e-15


class RankState:
    """Mutable per-rank state shared by the rank process and the communicator callbacks.

    ``comms``: its group's communicators, in the layout's order; ``mids``: its member index in each."""

    __slots__ = ("r", "proc", "group", "comms", "mids", "computing", "comm_active",
                 "comm_t0", "comm_busy", "ovl_t0", "ovl", "work_left", "seg_t", "seg_f", "toggled",
                 "sched_slow", "intr_pending", "port_release", "exp_s", "memo")

    def __init__(self, r: int):
        self.r = r
        self.computing = False
        self.comm_active = 0
        self.comm_t0 = self.comm_busy = self.ovl_t0 = self.ovl = 0.0
        self.work_left = self.seg_t = 0.0
        self.seg_f = 1.0
        self.toggled = self.sched_slow = self.intr_pending = self.port_release = False
        self.memo = None


class ComputeStreams:
    """The compute side of every rank in ``ranks``: :meth:`on_busy` is the communicators' hook,
    :meth:`compute` runs one op. ``ports``: per rank, the link ids in ``net`` its compute slows;
    ``users_L``: per link, how many ranks' compute slows it (None when ``comm_interference`` is 0:
    then link speeds are never touched)."""

    def __init__(self, env: simpy.Environment, net: FlowNetwork, ranks: list[RankState], *, interference: float,
                 comm_interference: float, ports: list[np.ndarray] | None, users_L: np.ndarray | None = None):
        self.env, self.net, self.ranks, self.ports = env, net, ranks, ports
        self.slow = 1.0 + interference
        self._ci = comm_interference
        self._users_L = users_L
        self._computing_L = None if users_L is None else np.zeros_like(users_L)

    def on_busy(self, members: tuple[int, ...], delta: int) -> None:
        """A collective of ``members`` starts (+1) or ends (-1): busy time, overlap, interference."""
        now = self.env.now
        slow = self.slow
        ranks = self.ranks
        for r in members:
            st = ranks[r]
            before = st.comm_active
            st.comm_active = after = before + delta
            if before == 0:  # communication starts
                st.comm_t0 = now
                if st.computing:
                    st.ovl_t0 = now
                    if slow != 1.0:
                        # slower from now on; the running timeout fires early and is extended then
                        st.work_left -= (now - st.seg_t) / st.seg_f
                        st.seg_t, st.seg_f, st.toggled = now, slow, True
            elif after == 0:  # communication ends
                st.comm_busy += now - st.comm_t0
                if st.computing:
                    st.ovl += now - st.ovl_t0
                    if slow != 1.0:
                        st.work_left -= (now - st.seg_t) / st.seg_f
                        st.seg_t, st.seg_f, st.toggled = now, 1.0, True
                        if st.sched_slow and not st.intr_pending:
                            # the running timeout assumed the slow rate: it would fire too late
                            st.intr_pending = True
                            st.proc.interrupt()

    def compute(self, st: RankState, work: float):
        """Run ``work`` seconds of nominal compute, ``slow`` times slower while communication is in flight.

        A timeout is scheduled at the current rate. A slow-down during it only makes it fire
        early (then the rest is re-timed); a speed-up during a slow timeout interrupts it.
        """
        env = self.env
        st.computing = True
        if st.comm_active:
            st.ovl_t0 = env.now
        ports = self.ports
        if ports is not None:
            if st.port_release:  # compute resumes at the instant it stopped: the links never sped up
                st.port_release = False
            else:
                self._count(ports[st.r], 1.0)
        slow = self.slow
        if slow == 1.0:
            yield env.timeout(work)
        else:
            st.work_left, st.seg_t, st.seg_f = work, env.now, slow if st.comm_active else 1.0
            while True:
                st.toggled = False
                st.sched_slow = st.seg_f != 1.0
                try:
                    yield env.timeout(st.work_left * st.seg_f)
                except simpy.Interrupt:
                    st.intr_pending = False
                    now = env.now
                    st.work_left = max(st.work_left - (now - st.seg_t) / st.seg_f, 0.0)
                    st.seg_t = now
                    continue
                if not st.toggled:
                    break
                now = env.now
                left = st.work_left - (now - st.seg_t) / st.seg_f
                if left <= _EPS_S:
                    break
                st.work_left, st.seg_t = left, now
        st.computing = False
        if st.comm_active:
            st.ovl += env.now - st.ovl_t0
        if ports is not None:  # the links speed up unless compute resumes at this instant
            st.port_release = True
            env.timeout(0.0, st).callbacks.append(self._release_ports)

    def _release_ports(self, ev: simpy.Event) -> None:
        st = ev.value
        if st.port_release:
            st.port_release = False
            self._count(self.ports[st.r], -1.0)

    def _count(self, links_L: np.ndarray, delta: float) -> None:
        """One more (``delta`` 1) or one fewer (-1) computing user of ``links_L``: set their speed."""
        k_L = self._computing_L
        k_L[links_L] += delta
        scale_L = 1.0 / (1.0 + self._ci * (k_L[links_L] / self._users_L[links_L]))
        first = scale_L[0]
        if (scale_L == first).all():  # one speed for all (always so for endpoint links alone)
            self.net.set_link_scale(links_L, float(first))
            return
        for s in np.unique(scale_L):
            self.net.set_link_scale(links_L[scale_L == s], float(s))
