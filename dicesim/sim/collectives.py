"""Communicators: in-order collective streams shared by a group of ranks.

A :class:`Communicator` is one NCCL communicator: each member has one communication
stream for it, and collectives on it run in the order they were issued. Collective ``n``
starts once every member has issued it (and is ready: its inputs computed, its host
launch done) and collective ``n - 1`` has finished; all members then see it in flight
until it ends. So an asynchronous all-to-all delays every later collective on the same
communicator, including a small blocking count exchange.

The communicator does not know what a collective moves: its ``starter(communicator,
collective)`` starts the data movement and returns the simpy event that ends it (a network
transfer, or a timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import simpy

Starter = Callable[["Communicator", "Collective"], simpy.Event]
"""Starts a collective's data movement now; returns the event that fires when it ends."""


class Collective:
    """One collective instance: who has issued it, when it ran, and its completion event."""

    __slots__ = ("seq", "kind", "info", "arrived", "ready_at", "done", "start_s", "end_s")

    def __init__(self, seq: int, kind: str, info: Any, done: simpy.Event):
        self.seq, self.kind, self.info, self.done = seq, kind, info, done
        self.arrived = 0
        self.ready_at = 0.0
        self.start_s = self.end_s = -1.0


class Communicator:
    """In-order collective stream over ``members`` (global ranks).

    ``starter`` starts a collective's data movement (see :data:`Starter`);
    ``on_busy(rank, +1/-1)`` is called for every member when a collective starts/ends (the
    engine uses it for interference and busy-time accounting); ``on_done(collective)``
    after each collective ends (trace recording), or None.
    """

    __slots__ = ("env", "name", "stream", "members", "n", "_issued", "_open", "_head", "_busy",
                 "_starter", "_on_busy", "_on_done", "count")

    def __init__(self, env: simpy.Environment, name: str, stream: str, members: tuple[int, ...],
                 starter: Starter, on_busy: Callable[[int, int], None],
                 on_done: Callable[["Communicator", Collective], None] | None = None):
        self.env, self.name, self.stream, self.members = env, name, stream, tuple(members)
        self.n = len(self.members)
        self._issued = [0] * self.n  # next sequence number per member
        self._open: dict[int, Collective] = {}  # issued by someone, not yet started
        self._head = 0  # sequence number of the next collective to start
        self._busy = False
        self._starter, self._on_busy, self._on_done = starter, on_busy, on_done
        self.count = 0  # collectives completed

    def issue(self, member: int, kind: str, info: Any, ready_at: float) -> simpy.Event:
        """Member ``member`` (index into ``members``) issues its next collective, ready at ``ready_at``.

        Every member must issue the same sequence of collectives; ``info`` (what the starter
        needs) is taken from the first issuer. Returns the completion event.
        """
        seq = self._issued[member]
        self._issued[member] = seq + 1
        coll = self._open.get(seq)
        if coll is None:
            coll = Collective(seq, kind, info, self.env.event())
            self._open[seq] = coll
        elif coll.kind != kind:
            raise RuntimeError(f"communicator {self.name}: members issued {coll.kind} and {kind} as collective {seq}")
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
            # the last member's host has not launched it yet
            self.env.timeout(delay).callbacks.append(lambda _ev, c=coll: self._begin(c))
        else:
            self._begin(coll)

    def _begin(self, coll: Collective) -> None:
        coll.start_s = self.env.now
        on_busy = self._on_busy
        for r in self.members:
            on_busy(r, 1)
        self._starter(self, coll).callbacks.append(lambda _ev, c=coll: self._finish(c))

    def _finish(self, coll: Collective) -> None:
        coll.end_s = self.env.now
        on_busy = self._on_busy
        for r in self.members:
            on_busy(r, -1)
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
