"""A compiled program's cost-free part, compiled once per plan and priced for each run.

:func:`~dicesim.sim.engine.program.compile_program` depends on the cost model only through its
compute blocks: a run of compute ops becomes one :class:`~dicesim.sim.engine.program.Block` whose
durations and flops are the cost model's figures for the run's op kinds
(:meth:`~dicesim.sim.costs.costmodel.CostModel.action_time_s` reads the kind alone). Where every
run of two or more ops merges (the host launches each op before the stream reaches it), the
instructions and their flat indices (the handles) are the same for every cost model, so a
:class:`Skeleton` keeps them with a placeholder per block and :meth:`Skeleton.price` fills the
placeholders in one pass; where a run would not merge, the engine compiles in full. Both give
the same program, element for element (tests/test_sim_skeleton.py).

The window search (:func:`~dicesim.sim.engine.reuse.find_windows`) reads a block only through its
``(total_s, number of ops)``, and only to compare it with another block's, and the matrix ids
only to compare them: its result depends on the skeleton, on which of its blocks are equal
(:attr:`Priced.pattern`) and on the matrix ids, never on the durations themselves, and is kept
under that key. The owner of both is the caller's :class:`~dicesim.plan.PlanCache`, never this
module (a study's evaluator, a search).
"""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import numpy as np

from dicesim.plan import CollectiveKind, ParallelLayout, Plan, PlanCache
from dicesim.sim.costs.costmodel import CostModel
from dicesim.sim.engine.program import COMPUTE, ISSUE, Block, compile_steps
from dicesim.sim.engine.reuse import Windows, find_windows

_DISPATCH = int(CollectiveKind.DISPATCH)


class Priced(NamedTuple):
    """A skeleton priced for one cost model: the program and which of its blocks are alike
    (``pattern[i]``: the first block kind whose ``(total_s, number of ops)`` equals kind ``i``'s)."""

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

        self.steps = compile_steps(plan, layout, placeholder)

    @cached_property
    def dispatch_uses(self) -> frozenset[tuple[bool, int, int]]:
        """(skip, layer, tok_step) of every dispatch (Coll fields 3, 1, 2)."""
        return frozenset((ins[2][3], ins[2][1], ins[2][2]) for step in self.steps for ins in step
                         if ins[0] == ISSUE and ins[2][0] == _DISPATCH)

    def price(self, cost: CostModel, host_op_s: float) -> Priced | None:
        """The program for ``cost``, or None where a run of ops would not merge into one block."""
        table = []
        alike: dict[tuple[float, int], int] = {}
        pattern = []
        for i, kinds in enumerate(self.kinds):
            durs = tuple(cost.action_time_s(k) for k in kinds)
            if len(durs) > 1 and host_op_s > min(durs):  # compiled in full: one instruction per op
                return None
            total = sum(durs)
            table.append((total, durs, tuple(cost.action_cost(k).flops for k in kinds)))
            pattern.append(alike.setdefault((total, len(durs)), i))
        new = tuple.__new__

        def fill(step: tuple) -> tuple:
            return tuple(ins if ins[0] != COMPUTE else
                         (COMPUTE, new(Block, (table[ins[1]][0], table[ins[1]][1], ins[2], table[ins[1]][2])))
                         for ins in step)

        return Priced(tuple(fill(step) for step in self.steps), tuple(pattern))


def skeleton_of(plans: PlanCache, plan: Plan, layout: ParallelLayout) -> Skeleton:
    """The skeleton of (plan, layout), compiled once per ``plans``."""
    return plans.derived(plan, ("skeleton", layout.comm_by_kind), lambda: Skeleton(plan, layout))


def windows_of(plans: PlanCache, plan: Plan, layout: ParallelLayout, pattern: tuple[int, ...],
               flat: list[tuple], mid: tuple[np.ndarray, ...]) -> Windows | None:
    """:func:`find_windows` of a priced skeleton's ``flat`` program, searched once per
    (skeleton, block pattern, matrix ids) in ``plans``."""
    key = ("windows", layout.comm_by_kind, pattern, tuple((m.shape, m.dtype.str, m.tobytes()) for m in mid))
    return plans.derived(plan, key, lambda: find_windows(flat, mid))
