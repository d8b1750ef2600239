"""A compiled program's cost-free part, compiled once per plan and priced for each run.

:func:`~dicesim.sim.engine.program.compile_program` depends on the cost model and the host table
only through its compute blocks (a run of compute ops becomes blocks whose durations, flops and
host figures are functions of the run's op kinds: ``_Blocks._split``) and the experts' host cost
in every ``ROWS`` instruction. Where every run is one block, the instructions and their flat
indices (the handles) are the same for every cost model, so a :class:`Skeleton` keeps them with
a placeholder per block and :meth:`Skeleton.price` fills the placeholders in one pass; where some
run splits into several blocks, the engine compiles in full. Both give the same program, element
for element (tests/test_sim_skeleton.py).

The window search (:func:`~dicesim.sim.engine.reuse.find_windows`) reads a block only through its
:attr:`~dicesim.sim.engine.program.Block.key`, and only to compare it with another block's, and the
matrix ids only to compare them: its result depends on the skeleton, on which of its blocks are
equal (:attr:`Priced.pattern`) and on the matrix ids, never on the figures themselves, and is kept
under that key. The owner of both is the caller's :class:`~dicesim.plan.PlanCache` (a study's
evaluator, a search), never this module.
"""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import numpy as np

from dicesim.plan import CollectiveKind, ParallelLayout, Plan, PlanCache
from dicesim.sim.costs.costmodel import CostModel
from dicesim.sim.engine.program import COMPUTE, ISSUE, ROWS, Block, HostTable, _Blocks, compile_steps
from dicesim.sim.engine.reuse import Windows, find_windows

_DISPATCH = int(CollectiveKind.DISPATCH)


class Priced(NamedTuple):
    """A skeleton priced for one cost model: the program and which of its blocks are alike
    (``pattern[i]``: the first run of op kinds whose block key equals run ``i``'s)."""

    program: tuple[tuple, ...]
    pattern: tuple[int, ...]


class Skeleton:
    """The program of (plan, layout) with ``(COMPUTE, kind index, ops)`` where a block will be."""

    def __init__(self, plan: Plan, layout: ParallelLayout):
        self.kinds: list[tuple[str, ...]] = []
        index: dict[tuple[str, ...], int] = {}

        def placeholder(ops: list[tuple[str, int, int]], out: list[tuple]) -> None:
            kinds = tuple(k for k, _, _ in ops)
            i = index.get(kinds)
            if i is None:
                i = index[kinds] = len(self.kinds)
                self.kinds.append(kinds)
            out.append((COMPUTE, i, tuple(ops)))
            ops.clear()

        self.steps = compile_steps(plan, layout, placeholder, None)  # ROWS: host cost filled in by price

    @cached_property
    def dispatch_uses(self) -> frozenset[tuple[bool, int, int]]:
        """(skip, layer, tok_step) of every dispatch (Coll fields 3, 1, 2)."""
        return frozenset((ins[2][3], ins[2][1], ins[2][2]) for step in self.steps for ins in step
                         if ins[0] == ISSUE and ins[2][0] == _DISPATCH)

    def price(self, cost: CostModel, host: HostTable) -> Priced | None:
        """The program for ``cost`` and ``host``, or None where a run of ops is more than one block."""
        runs = _Blocks(cost, host=host, merge=True)
        table = []
        alike: dict[tuple, int] = {}
        pattern = []
        for i, kinds in enumerate(self.kinds):
            split = runs._split(kinds)
            if len(split) != 1:  # compiled in full: the run's blocks shift every later handle
                return None
            b = split[0][2]
            table.append(((b.total_s, b.durs_s), (b.flops, b.host_s, b.first_s, b.span_s, b.syncs, b.gated)))
            pattern.append(alike.setdefault(b.key, i))
        rows_host = host.rows()
        new = tuple.__new__
        program = []
        for step, (blocks, rows) in zip(self.steps, self._slots):
            out = list(step)  # instructions that carry no cost stay as compiled
            for at, i, ops in blocks:
                head, tail = table[i]
                out[at] = (COMPUTE, new(Block, head + (ops,) + tail))
            for at in rows:
                out[at] = step[at][:5] + (rows_host,)
            program.append(tuple(out))
        return Priced(tuple(program), tuple(pattern))

    @cached_property
    def _slots(self) -> list[tuple[list[tuple[int, int, tuple]], list[int]]]:
        """Per step, where its blocks ``(index, kind index, ops)`` and its ``ROWS`` instructions stand:
        the only instructions pricing changes (a step is mostly issues and waits)."""
        return [([(at, ins[1], ins[2]) for at, ins in enumerate(step) if ins[0] == COMPUTE],
                 [at for at, ins in enumerate(step) if ins[0] == ROWS]) for step in self.steps]


def skeleton_of(plans: PlanCache, plan: Plan, layout: ParallelLayout) -> Skeleton:
    """The skeleton of (plan, layout), compiled once per ``plans``."""
    # a layout's empty collectives and ops change the program (USP's one-rank subgroups at some world sizes)
    key = ("skeleton", layout.comm_by_kind, layout.empty_kinds, layout.empty_ops)
    return plans.derived(plan, key, lambda: Skeleton(plan, layout))


def windows_of(plans: PlanCache, plan: Plan, layout: ParallelLayout, pattern: tuple[int, ...],
               flat: list[tuple], mid: tuple[np.ndarray, ...]) -> Windows | None:
    """:func:`find_windows` of a priced skeleton's ``flat`` program, searched once per
    (skeleton, block pattern, matrix ids) in ``plans``."""
    key = ("windows", layout.comm_by_kind, layout.empty_kinds, layout.empty_ops, pattern, tuple((m.shape, m.dtype.str, m.tobytes()) for m in mid))
    return plans.derived(plan, key, lambda: find_windows(flat, mid))
