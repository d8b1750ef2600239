"""Components of the flow network: transfers whose flows share links, planned together.

A :class:`Component` holds the transfers that share links (transitively), the *history* its
trajectory is a pure function of (which transfers arrived at which offset since it formed, and
link-speed changes), and the trajectory itself. Offsets inside a component live on a grid
(:func:`grid`) so periodic overlaps repeat bit-exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dicesim.sim.network.flowplan import FlowTable, Trajectory

_GRID_EXP = 40  # arrival offsets inside a component live on a 2**-_GRID_EXP s grid
KEY_MAX = 32  # components with longer histories are not memoised (keys would rarely repeat)


@dataclass(frozen=True, slots=True)
class TransferDone:
    """Value of a transfer's completion event."""

    tag: Any
    start_s: float
    end_s: float


class Transfer:
    __slots__ = ("event", "tag", "start_s", "done_rel", "delivered")

    def __init__(self, event, tag, start_s):
        self.event, self.tag, self.start_s = event, tag, start_s
        self.done_rel = math.inf
        self.delivered = False


class Component:
    """Transfers that share links. ``order`` is aligned with the groups of ``table``; ``finished``
    holds transfers with no flow left in the table whose completion is not delivered yet."""

    __slots__ = ("cid", "t0_s", "history", "key_size", "order", "finished", "table", "plan",
                 "acct_k", "acct_r", "version")

    def __init__(self, cid: int, t0_s: float):
        self.cid, self.t0_s = cid, t0_s
        self.history: list[tuple[Any, float]] = []
        self.key_size = 0  # > KEY_MAX: not memoised
        self.order: list[Transfer] = []
        self.finished: list[Transfer] = []
        self.table: FlowTable | None = None
        self.plan: Trajectory | None = None
        self.acct_k, self.acct_r, self.version = 0, 0.0, 0


def grid(r: float) -> float:
    return math.ldexp(math.ceil(math.ldexp(r, _GRID_EXP)), -_GRID_EXP)
