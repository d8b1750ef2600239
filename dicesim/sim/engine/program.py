"""The plan compiled to the small generic instruction set every rank's simpy process executes.

The strategy's family says what each action does (:meth:`dicesim.plan.PlanFamily.lower`: effects
over the one collective vocabulary); this module turns the effects into instructions, in plan
order, nothing re-derived. The engine reads only these:

- ``COMPUTE``: compute whose time the workload fixes (:class:`Block`);
- ``ROWS``: compute whose time depends on the rows this rank received (experts);
- ``ISSUE``: issue a collective on one of the group's communicators; it stays pending under a
  handle (the flat index of the issuing instruction); ``wait``: the compute stream waits for it
  at once (an action's wait that follows its issue directly is folded into it; ``WAIT_KEEP``: it
  stays pending for a later wait);
- ``WAIT``: the compute stream waits for a pending collective (``release``: it is done with);
- ``BLOCKING``: the host issues a collective and waits for it; ``cut`` marks a window-reuse cut
  point (the family's :meth:`~dicesim.plan.PlanFamily.window_cuts`);
- ``WAIT_ALL`` / ``FORGET``: wait for / give up every pending collective; ``STEP_END``: a step ends.

What a collective carries is one :class:`Coll` (kind, layer, token step, skip, span), from the
instruction through the communicator to the network transfer and the trace.

Consecutive compute effects are merged into one block (one simpy timeout instead of several)
when nothing observable can happen between them: no collective is issued or awaited, and the
host launches each op before the stream reaches it (checked per block from the host overhead;
otherwise each op keeps its own instruction).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from dicesim.plan import ParallelLayout, Plan
from dicesim.plan.vocabulary import Blocking, Compute, Forget, Issue, RowsCompute, Wait, WaitAll
from dicesim.sim.costs.costmodel import CostModel


class Op(IntEnum):
    """Instruction codes (the instructions carry them as plain ints: compared in the hot loop)."""

    COMPUTE = 0
    ROWS = 1
    ISSUE = 2
    WAIT = 3
    BLOCKING = 4
    WAIT_ALL = 5
    FORGET = 6
    STEP_END = 7


COMPUTE, ROWS, ISSUE, WAIT, BLOCKING, WAIT_ALL, FORGET, STEP_END = (int(op) for op in Op)
#: ``wait`` of an ISSUE: none; the stream waits at once and is done with it; waits and keeps it pending
NO_WAIT, WAIT_RELEASE, WAIT_KEEP = 0, 1, 2
_ISSUE_WAIT = -1  # a compile step only: an issue and the wait for it, one instruction


class Coll(NamedTuple):
    """What one collective carries: its kind (a :class:`~dicesim.plan.CollectiveKind` value), the
    first layer and the token step of the action that issued it, one copy per token (``skip``),
    and how many layers it covers (``span``)."""

    kind: int
    layer: int
    tok_step: int
    skip: bool
    span: int = 1


class Block(NamedTuple):
    """Merged compute ops: ``ops[i] = (kind, layer, tok_step)`` taking ``durs_s[i]`` seconds (a tuple:
    a program holds thousands, and a cached program's blocks are made in one pass per run)."""

    total_s: float
    durs_s: tuple[float, ...]
    ops: tuple[tuple[str, int, int], ...]
    flops: tuple[float, ...]


def compile_program(plan: Plan, cost: CostModel, layout: ParallelLayout, *, host_op_s: float,
                    merge: bool = True) -> tuple[tuple, ...]:
    """Per step, the tuple of instructions (layouts in the module docstring):

    ``(COMPUTE, Block)``; ``(ROWS, layer, tok_step, skip, name)``; ``(ISSUE, comm, Coll, handle, wait)``;
    ``(WAIT, handle, Coll, release)``; ``(BLOCKING, comm, Coll, cut)``; ``(WAIT_ALL,)``; ``(FORGET,)``;
    ``(STEP_END, step)``. ``comm`` indexes ``layout.communicators``.
    """
    return compile_steps(plan, layout, _Blocks(cost, host_op_s=host_op_s, merge=merge).flush)


def compile_steps(plan: Plan, layout: ParallelLayout, flush) -> tuple[tuple, ...]:
    """The program of :func:`compile_program`; ``flush(ops, out)`` turns a run of compute ops into instructions."""
    lower, recipes = plan.rules.lower, _Recipes(plan, layout)
    known = recipes.known
    static = {kind: recipes.of(effects) for kind, effects in plan.rules.static_lowering.items()}
    new = tuple.__new__
    program = []
    pending: dict[tuple[int, int, int], tuple] = {}  # (kind, layer, tok_step) issued, not released -> (handle, Coll)
    n = 0  # flat index of the next instruction (a handle names the instruction that issued)
    for t, actions in plan:
        out: list[tuple] = []
        ops: list[tuple[str, int, int]] = []
        for a in actions:
            steps = static.get(a.kind)
            if steps is None:
                effects = lower(a)
                hit = known.get(id(effects))
                steps = hit[1] if hit is not None and hit[0] is effects else recipes.of(effects)
            if steps.__class__ is str:  # one compute op (most actions): its cost name
                if a.span == 1:
                    ops.append((steps, a.layer, a.tok_step))
                else:
                    ops += [(steps, layer, a.tok_step) for layer in a.layers]
                continue
            for code, x, y in steps:
                if code == COMPUTE:
                    if a.span == 1:
                        ops.append((x, a.layer, a.tok_step))
                    else:
                        ops += [(x, layer, a.tok_step) for layer in a.layers]
                    continue
                if ops:
                    flush(ops, out)
                if code == ISSUE:  # x: collective kind, y: communicator
                    issued = (n + len(out), new(Coll, (x, a.layer, a.tok_step, a.skip, a.span)))
                    pending[(x, a.layer, a.tok_step)] = issued
                    out.append((ISSUE, y, issued[1], issued[0], NO_WAIT))
                elif code == _ISSUE_WAIT:  # x: collective kind, y: (communicator, wait): issued and awaited at once
                    here = n + len(out)
                    coll = new(Coll, (x, a.layer, a.tok_step, a.skip, a.span))
                    if y[1] == WAIT_KEEP:
                        pending[(x, a.layer, a.tok_step)] = (here, coll)
                    out.append((ISSUE, y[0], coll, here, y[1]))
                elif code == WAIT:  # x: collective kind, y: release
                    key = (x, a.layer, a.tok_step)
                    handle, coll = pending.pop(key) if y else pending[key]
                    out.append((WAIT, handle, coll, y))
                elif code == ROWS:
                    out.append((ROWS, a.layer, a.tok_step, a.skip, x))
                elif code == BLOCKING:  # x: collective kind, y: (communicator, cut)
                    out.append((BLOCKING, y[0], new(Coll, (x, a.layer, a.tok_step, a.skip, a.span)), y[1]))
                else:  # FORGET, WAIT_ALL: what was pending is not waited for one by one
                    pending.clear()
                    out.append((code,))
        if ops:
            flush(ops, out)
        out.append((STEP_END, t))
        program.append(tuple(out))
        n += len(out)
    return tuple(program)


class _Recipes:
    """Effects as ``(code, x, y)`` steps, translated once per effects tuple a family hands out
    (kept alive here, so the identity that keys it stays unique)."""

    def __init__(self, plan: Plan, layout: ParallelLayout):
        self._cuts = plan.rules.window_cuts(plan.strategy).kinds
        self._layout = layout
        #: id(effects) -> (effects, steps)
        self.known: dict[int, tuple[tuple, list[tuple]]] = {}

    def of(self, effects: tuple) -> list[tuple] | str:
        """The steps of ``effects``; one compute effect alone: its op name."""
        hit = self.known.get(id(effects))
        if hit is not None and hit[0] is effects:
            return hit[1]
        steps = []
        for e in effects:
            step = self._step(e)
            last = steps[-1] if steps else None
            if step[0] == WAIT and last is not None and last[0] == ISSUE and last[1] == step[1]:
                # a wait for the collective issued just before: the stream waits at once
                steps[-1] = (_ISSUE_WAIT, step[1], (last[2], WAIT_RELEASE if step[2] else WAIT_KEEP))
            else:
                steps.append(step)
        if len(steps) == 1 and steps[0][0] == COMPUTE:
            steps = steps[0][1]
        self.known[id(effects)] = (effects, steps)
        return steps

    def _step(self, eff) -> tuple:
        kind = type(eff)
        if kind is Compute:
            return COMPUTE, eff.op, None
        if kind is RowsCompute:
            return ROWS, eff.op, None
        if kind is Issue:
            return ISSUE, int(eff.kind), self._layout.comm_index(eff.kind)
        if kind is Wait:
            return WAIT, int(eff.kind), eff.release
        if kind is Blocking:
            comm = self._layout.comm_index(eff.kind)
            return BLOCKING, int(eff.kind), (comm, eff.kind in self._cuts and comm == 0)
        if kind is Forget:
            return FORGET, None, None
        if kind is WaitAll:
            return WAIT_ALL, None, None
        raise ValueError(f"an effect the simulator cannot run: {eff!r}")


class _Blocks:
    """Consecutive compute ops as blocks; op durations per run of op kinds computed once (the same
    run recurs in every layer and step)."""

    def __init__(self, cost: CostModel, *, host_op_s: float, merge: bool):
        self.cost, self.host_op_s, self.merge = cost, host_op_s, merge
        self._times: dict[tuple[str, ...], tuple] = {}

    def flush(self, ops: list[tuple[str, int, int]], out: list[tuple]) -> None:
        """Append ``ops`` (not empty) to ``out`` as blocks, and empty it."""
        kinds = tuple(k for k, _, _ in ops)
        known = self._times.get(kinds)
        if known is None:
            cost = self.cost
            durs = tuple(cost.action_time_s(k) for k in kinds)
            known = self._times[kinds] = (durs, tuple(cost.action_cost(k).flops for k in kinds), sum(durs), min(durs))
        durs, flops, total, shortest = known
        # merging is exact only if the host keeps ahead of the stream inside the block
        if self.merge and self.host_op_s <= shortest:
            out.append((COMPUTE, Block(total_s=total, durs_s=durs, ops=tuple(ops), flops=flops)))
        else:
            for op, d, f in zip(ops, durs, flops):
                out.append((COMPUTE, Block(total_s=d, durs_s=(d,), ops=(op,), flops=(f,))))
        ops.clear()
