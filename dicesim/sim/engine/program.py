"""The plan compiled to the small generic instruction set every rank's simpy process executes.

The strategy's family says what each action does (:meth:`dicesim.plan.PlanFamily.lower`: effects
over the one collective vocabulary); this module turns the effects into instructions, in plan
order, nothing re-derived. The engine reads only these:

- ``COMPUTE``: compute whose time the workload fixes (:class:`Block`);
- ``ROWS``: compute whose time depends on the rows this rank received (experts);
- ``ISSUE``: issue a collective on one of the group's communicators; it stays pending under a
  handle (the flat index of the issuing instruction);
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

from dataclasses import dataclass
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


class Coll(NamedTuple):
    """What one collective carries: its kind (a :class:`~dicesim.plan.CollectiveKind` value), the
    first layer and the token step of the action that issued it, one copy per token (``skip``),
    and how many layers it covers (``span``)."""

    kind: int
    layer: int
    tok_step: int
    skip: bool
    span: int = 1


@dataclass(frozen=True, slots=True)
class Block:
    """Merged compute ops: ``ops[i] = (kind, layer, tok_step)`` taking ``durs_s[i]`` seconds."""

    total_s: float
    durs_s: tuple[float, ...]
    ops: tuple[tuple[str, int, int], ...]
    flops: tuple[float, ...]


def compile_program(plan: Plan, cost: CostModel, layout: ParallelLayout, *, host_op_s: float,
                    merge: bool = True) -> tuple[tuple, ...]:
    """Per step, the tuple of instructions (layouts in the module docstring):

    ``(COMPUTE, Block)``; ``(ROWS, layer, tok_step, skip, name)``; ``(ISSUE, comm, Coll, handle)``;
    ``(WAIT, handle, Coll, release)``; ``(BLOCKING, comm, Coll, cut)``; ``(WAIT_ALL,)``; ``(FORGET,)``;
    ``(STEP_END, step)``. ``comm`` indexes ``layout.communicators``.
    """
    family = plan.rules
    cut_kinds = family.window_cuts(plan.strategy).kinds
    program = []
    times: dict[tuple[str, ...], tuple] = {}  # the same run of op kinds recurs in every layer and step
    pending: dict[tuple[int, int, int], int] = {}  # (kind, layer, tok_step) issued, not released -> handle
    n = 0  # flat index of the next instruction (a handle names the instruction that issued)
    for t, actions in plan:
        out: list[tuple] = []
        ops: list[tuple[str, int, int]] = []

        def flush() -> None:
            if not ops:
                return
            kinds = tuple(k for k, _, _ in ops)
            known = times.get(kinds)
            if known is None:
                durs = tuple(cost.action_time_s(k) for k in kinds)
                known = times[kinds] = (durs, tuple(cost.action_cost(k).flops for k in kinds), sum(durs), min(durs))
            durs, flops, total, shortest = known
            # merging is exact only if the host keeps ahead of the stream inside the block
            if merge and host_op_s <= shortest:
                out.append((COMPUTE, Block(total_s=total, durs_s=durs, ops=tuple(ops), flops=flops)))
            else:
                for op, d, f in zip(ops, durs, flops):
                    out.append((COMPUTE, Block(total_s=d, durs_s=(d,), ops=(op,), flops=(f,))))
            ops.clear()

        for a in actions:
            for eff in family.lower(a):
                if type(eff) is Compute:
                    ops += [(eff.op, layer, a.tok_step) for layer in a.layers]
                    continue
                flush()
                start = n + len(out)
                if type(eff) is Issue:
                    coll = Coll(int(eff.kind), a.layer, a.tok_step, bool(a.skip), a.span)
                    out.append((ISSUE, layout.comm_index(eff.kind), coll, start))
                    pending[(int(eff.kind), a.layer, a.tok_step)] = start
                elif type(eff) is Wait:
                    key = (int(eff.kind), a.layer, a.tok_step)
                    handle = pending.pop(key) if eff.release else pending[key]
                    out.append((WAIT, handle, Coll(*key, bool(a.skip), a.span), eff.release))
                elif type(eff) is RowsCompute:
                    out.append((ROWS, a.layer, a.tok_step, bool(a.skip), eff.op))
                elif type(eff) is Blocking:
                    comm = layout.comm_index(eff.kind)
                    cut = eff.kind in cut_kinds and comm == 0
                    out.append((BLOCKING, comm, Coll(int(eff.kind), a.layer, a.tok_step, bool(a.skip), a.span), cut))
                elif type(eff) is Forget:
                    pending.clear()
                    out.append((FORGET,))
                elif type(eff) is WaitAll:
                    pending.clear()
                    out.append((WAIT_ALL,))
                else:
                    raise ValueError(f"plan action {a.kind!r} has an effect the simulator cannot run: {eff!r}")
        flush()
        out.append((STEP_END, t))
        program.append(tuple(out))
        n += len(out)
    return tuple(program)

