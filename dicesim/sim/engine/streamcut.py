"""Window reuse at stream cuts: collectives every member's stream waits for, the host free.

A family with no collective that blocks the host (sequence parallelism) still has points where
the group's state is fixed but for the hosts: a collective on the group's one communicator that
every member issues and its stream waits for at once (:attr:`dicesim.plan.WindowCuts.stream`; the
scatter that opens every step). When it completes, at ``tau``, every member's stream waits on it,
every collective issued before it has ended (a communicator runs them in issue order), none
was issued after it, and no member computes. What is not fixed is each member's host clock
``h``: how far its launches run ahead of its stream (``delta = tau - h``).

Why a repeat is still exact. The stream reads the host clock only where the host holds it
back: a launch not yet made when the stream gets there (a host gap), a collective issued late
by the host, or a sync that makes the host wait for the stream; the rank process counts each
of these (``held``). If a window ``u`` ran with no such event for any member, its stream side
never read the host: a window with the same key (:func:`~dicesim.sim.engine.reuse.find_windows`)
that starts with every member's launches at least as far ahead (``delta >= delta_u`` member by
member) meets every one of those tests with at least as much slack, so it evolves exactly as
``u`` did, shifted in time, and each host clock advances by what it did in ``u``. The memo keeps,
per window key, the latest simulated window with no hold as the source of later repeats and
checks the condition window by window along a run (``delta`` grows by the source's duration
less its host advance); a run stops at the first window that fails it, which is then simulated.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dicesim.sim.engine.reuse import Jump, WindowMemo, Windows


class StreamMemo(WindowMemo):
    """A :class:`~dicesim.sim.engine.reuse.WindowMemo` for stream cuts: jumps only where the hosts
    allow them (module docstring). Each member reports its host clock and hold count when it
    issues a cut (:meth:`issued`), before anyone can pass it."""

    def __init__(self, win: Windows, members: tuple[int, ...], n_counters: int, links_L: np.ndarray):
        super().__init__(win, members, n_counters, links_L)
        n = win.cut_pc.shape[0]
        self.cut_host = np.zeros((n, len(members)))
        self.cut_held = np.zeros((n, len(members)), dtype=np.int64)
        self._simulated = np.ones(n, dtype=bool)
        self._best: dict[int, int] = {}  # window key class (its first window) -> latest simulated window with no hold
        self._decided: dict[int, Jump | None] = {}

    def issued(self, m: int, host_t: float, held: int) -> None:
        """Member ``m`` issues its next cut with host clock ``host_t``, having been held ``held`` times."""
        w = self._pos[m]
        self.cut_host[w, m] = host_t
        self.cut_held[w, m] = held

    def cut(self, m: int, now: float, acc: tuple, net, comm, decide: bool = True) -> Jump | None:
        """Member ``m`` is at its next cut; the jump to take, or None (``decide`` False: landing
        after a jump, where the run was as long as the hosts allowed)."""
        w, first = self._record(m, now, acc, net, comm)
        # window w - 1 has ended; when it was simulated every member issued cut w, so its holds are known
        if first and w and self._simulated[w - 1] and (self.cut_held[w] == self.cut_held[w - 1]).all():
            src = int(self.win.src[w - 1])
            self._best[src if src >= 0 else w - 1] = w - 1
        if not decide:
            return None
        if w not in self._decided:
            self._decided[w] = jump = self._decide(w)
            if jump is not None:
                vs = jump.vs
                self.repeated += vs.shape[0]
                self._simulated[w:jump.landing] = False
                net.add_link_totals(self.links_L, (self.cut_link[vs + 1] - self.cut_link[vs]).sum(axis=0))
                comm.count += int((self.cut_coll[vs + 1] - self.cut_coll[vs]).sum())
        jump = self._decided[w]
        if jump is not None:
            self._pos[m] = jump.landing
        return jump

    def _decide(self, w: int) -> Jump | None:
        """The longest run of repeats from window ``w`` whose every window has a source the hosts allow."""
        src, n = self.win.src, self.win.n_windows
        delta = self.cut_t[w] - self.cut_host[w]  # per member: how far its launches run ahead
        vs: list[int] = []
        k = w
        while k < n and src[k] >= 0:
            u = self._best.get(int(src[k]))
            if u is None or not (delta >= self.cut_t[u] - self.cut_host[u]).all():
                break
            vs.append(u)
            delta = delta + (self.cut_t[u + 1] - self.cut_t[u]) - (self.cut_host[u + 1] - self.cut_host[u])
            k += 1
        if not vs:
            return None
        v = np.array(vs, dtype=np.intp)
        jump = self._make_jump(w, k - 1, v)
        gain = (self.cut_host[v + 1] - self.cut_host[v]).sum(axis=0)
        return replace(jump, host_gain=gain)
