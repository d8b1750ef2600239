"""Communicators: in-order collective streams shared by a group of ranks.

A :class:`Communicator` is one NCCL communicator: each member has one communication
stream for it, and collectives on it run in the order they were issued. Collective ``n``
starts once every member has issued it (and is ready: its inputs computed, its host
launch done) and collective ``n - 1`` has finished; all members then see it in flight
until it ends. So an asynchronous all-to-all delays every later collective on the same
communicator, including a small blocking count exchange.

The communicator does not know what a collective moves: it carries the plan's description of
it (``coll``, a :class:`~dicesim.sim.engine.program.Coll`: kind, layer, token step, ...) and
its ``starter(communicator, collective)`` starts the data movement and returns the simpy event
that ends it (a network transfer, or a timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy

Starter = Callable[["Communicator", "Collective"], simpy.Event]
"""Starts a collective's data movement now; returns the event that fires when it ends."""


class Collective:
    """One collective instance: what it carries (``coll``), who has issued it, when it ran, its
    completion event. ``step`` is the step in which it was issued."""

    __slots__ = ("seq", "coll", "step", "arrived", "ready_at", "done", "start_s", "end_s")

    def __init__(self, seq: int, coll: Any, step: int, done: simpy.Event):
        self.seq, self.coll, self.step, self.done = seq, coll, step, done
        self.arrived = 0
        self.ready_at = 0.0
        self.start_s = self.end_s = -1.0


class Communicator:
    """In-order collective stream over ``members`` (global ranks).

    ``starter`` starts a collective's data movement (see :data:`Starter`);
    ``on_busy(members, +1/-1)`` is called when a collective starts/ends (the engine uses it
    for interference and busy-time accounting); ``on_done(communicator, collective)`` after
    each collective ends (trace recording), or None. ``group`` is a free tag for the owner.
    """

    __slots__ = ("env", "name", "stream", "members", "group", "n", "_issued", "_open", "_head", "_busy",
                 "_starter", "_on_busy", "_on_done", "count")

    def __init__(self, env: simpy.Environment, name: str, stream: str, members: tuple[int, ...], *,
                 starter: Starter, on_busy: Callable[[tuple[int, ...], int], None],
                 on_done: Callable[["Communicator", Collective], None] | None = None, group: int = 0):
        self.env, self.name, self.stream, self.members, self.group = env, name, stream, tuple(members), group
        self.n = len(self.members)
        self._issued = [0] * self.n  # next sequence number per member
        self._open: dict[int, Collective] = {}  # issued by someone, not yet started
        self._head = 0  # sequence number of the next collective to start
        self._busy = False
        self._starter, self._on_busy, self._on_done = starter, on_busy, on_done
        self.count = 0  # collectives completed

    def issue(self, member: int, what: Any, step: int, ready_at: float) -> simpy.Event:
        """Member ``member`` (index into ``members``) issues its next collective, carrying ``what``,
        ready at ``ready_at``.

        Every member must issue the same sequence of collectives. Returns the completion event.
        """
        seq = self._issued[member]
        self._issued[member] = seq + 1
        coll = self._open.get(seq)
        if coll is None:
            coll = Collective(seq, what, step, self.env.event())
            self._open[seq] = coll
        elif coll.coll != what:
            raise RuntimeError(f"communicator {self.name}: members disagree on collective {seq}: "
                               f"{coll.coll} vs {what}")
        coll.arrived += 1
        if ready_at > coll.ready_at:
            coll.ready_at = ready_at
        if coll.arrived == self.n and seq == self._head and not self._busy:
            self._start(coll)
        return coll.done

    def _start(self, coll: Collective) -> None:
        del self._open[coll.seq]
        self._busy = True
        delay = coll.ready_at - self.env.now
        if delay > 0:
            # the slowest member's host has not launched it yet
            self.env.timeout(delay, coll).callbacks.append(self._begin_cb)
        else:
            self._begin(coll)

    def _begin_cb(self, ev: simpy.Event) -> None:
        self._begin(ev.value)

    def _begin(self, coll: Collective) -> None:
        coll.start_s = self.env.now
        self._on_busy(self.members, 1)
        ev = self._starter(self, coll)
        ev.callbacks.append(lambda _ev: self._finish(coll))

    def _finish(self, coll: Collective) -> None:
        coll.end_s = self.env.now
        self._on_busy(self.members, -1)
        self._busy = False
        self._head += 1
        self.count += 1
        if self._on_done is not None:
            self._on_done(self, coll)
        coll.done.succeed(coll)
        nxt = self._open.get(self._head)
        if nxt is not None and nxt.arrived == self.n:
            self._start(nxt)

    @property
    def idle(self) -> bool:
        """No collective running and none issued but unstarted."""
        return not self._busy and not self._open
