"""Trace events of a recorded run, in the shared schema (:mod:`dicesim.trace`).

The rank process reports what it did (compute, waits, step ends) and the communicators and the
network report collectives and link busy periods; this module turns each into one event row.
Nothing here changes a result: a run records or not, and the same instructions run either way.
"""

from __future__ import annotations

from dicesim.plan import CollectiveKind
from dicesim.sim.engine.communicator import Collective, Communicator
from dicesim.sim.engine.program import Block
from dicesim.trace import EventRecorder

#: collective kind value -> its trace name, and the name of the wait for it
LABELS = {int(k): k.label for k in CollectiveKind}
WAIT_NAMES = {int(k): f"wait_{k.label}" for k in CollectiveKind}


class TraceHooks:
    """One run's trace: ``edges[link_id] = (u, v, link class)``; ``comms[g]`` the group's
    :class:`~dicesim.sim.engine.groupcomm.GroupComm` (what each collective moved);
    ``row_nbytes`` bytes of one row."""

    def __init__(self, edges: list[tuple[str, str, str]], comms: dict, row_nbytes: int):
        self.rec = EventRecorder("sim")
        self.edges, self.comms, self.row_nbytes = edges, comms, row_nbytes

    def compute(self, r: int, blk: Block, t0_s: float, t1_s: float, step: int) -> None:
        kind, layer, tok = blk.ops[0]
        self.rec.add(r, "compute", "compute", kind, t0_s * 1e6, t1_s * 1e6, layer, step, tok, 0, 0, -1, blk.flops[0])

    def rows_compute(self, r: int, name: str, t0_s: float, t1_s: float, layer: int, step: int, tok: int, rows: int,
                     flops: float) -> None:
        self.rec.add(r, "compute", "compute", name, t0_s * 1e6, t1_s * 1e6, layer, step, tok, 0, rows, -1, flops)

    def wait(self, r: int, name: str, t0_s: float, t1_s: float, layer: int, step: int, tok: int) -> None:
        self.rec.add(r, "compute", "wait", name, t0_s * 1e6, t1_s * 1e6, layer, step, tok)

    def step_end(self, r: int, step: int, t0_s: float, t1_s: float) -> None:
        self.rec.add(r, "host", "marker", f"step {step}", t0_s * 1e6, t1_s * 1e6, -1, step)

    def collective(self, comm: Communicator, c: Collective) -> None:
        """A communicator's ``on_done`` hook: one event per member."""
        coll = c.coll
        rows_M = self.comms[comm.group].moved_rows(coll)
        for r, rows in zip(comm.members, rows_M):
            self.rec.add(r, comm.stream, "collective", LABELS[coll.kind], c.start_s * 1e6, c.end_s * 1e6,
                         coll.layer, c.step, coll.tok_step, rows * self.row_nbytes, rows)

    def link(self, link_id: int, start_s: float, end_s: float, nbytes: float) -> None:
        """The network's ``on_link_busy`` hook: one busy period of one link."""
        u, v, cls = self.edges[link_id]
        self.rec.add(-1, f"{u}->{v}", "link", cls, start_s * 1e6, end_s * 1e6, nbytes=int(round(nbytes)))
