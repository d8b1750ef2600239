"""The plan compiled into the instruction stream every rank's simpy process executes.

Pure translation of :func:`dicesim.plan.build_plan` output, in plan order, nothing
re-derived: compute actions whose time does not depend on routing become ``BLOCK``
instructions; each communication action becomes one instruction of its own.
Consecutive compute actions are merged into one block (one simpy timeout instead of
several) when nothing observable can happen between them: no collective is issued or
awaited, and the host launches each op before the stream reaches it (checked per block
from the host overhead; otherwise each op keeps its own instruction).
"""

from __future__ import annotations

from dataclasses import dataclass

from dicesim.plan import Plan
from dicesim.sim.costs.costmodel import CostModel

# opcodes (ints: compared in the hot loop); SYNC_KEEP = sync_moe whose dispatched rows stay for a later RUN
BLOCK, SYNC, ISSUE, RUN, WAIT, STEP_END, DISCARD, DRAIN, SYNC_KEEP = range(9)
OPCODE_NAMES = ("block", "sync_moe", "issue_dispatch", "run_experts", "wait_combine", "step_end", "discard", "drain",
                "sync_moe")
COMPUTE_KINDS = frozenset({"embed", "attention", "gate", "shared_expert", "local_combine", "final", "local_moe"})
_COMM_OPS = {"sync_moe": SYNC, "issue_dispatch": ISSUE, "run_experts": RUN, "wait_combine": WAIT,
             "discard": DISCARD, "drain": DRAIN}


@dataclass(frozen=True, slots=True)
class Block:
    """Merged compute ops: ``ops[i] = (kind, layer, tok_step)`` taking ``durs_s[i]`` seconds."""

    total_s: float
    durs_s: tuple[float, ...]
    ops: tuple[tuple[str, int, int], ...]
    flops: tuple[float, ...]


def compile_program(plan: Plan, cost: CostModel, *, host_op_s: float, merge: bool = True) -> tuple[tuple, ...]:
    """Per step, the tuple of instructions ``(opcode, ...)``.

    ``(BLOCK, Block)``; ``(SYNC|SYNC_KEEP|ISSUE|RUN|WAIT, layer, tok_step, skip)``;
    ``(DISCARD|DRAIN, -1, step, False)``; ``(STEP_END, step)``.
    """
    program = []
    times: dict[tuple[str, ...], tuple] = {}  # the same run of op kinds recurs in every layer and step
    for t, actions in plan:
        out: list[tuple] = []
        pending: list[tuple[str, int, int]] = []

        def flush() -> None:
            if not pending:
                return
            kinds = tuple(k for k, _, _ in pending)
            known = times.get(kinds)
            if known is None:
                durs = tuple(cost.action_time_s(k) for k in kinds)
                known = times[kinds] = (durs, tuple(cost.action_cost(k).flops for k in kinds), sum(durs), min(durs))
            durs, flops, total, shortest = known
            # merging is exact only if the host keeps ahead of the stream inside the block
            if merge and host_op_s <= shortest:
                out.append((BLOCK, Block(total_s=total, durs_s=durs, ops=tuple(pending), flops=flops)))
            else:
                for op, d, f in zip(pending, durs, flops):
                    out.append((BLOCK, Block(total_s=d, durs_s=(d,), ops=(op,), flops=(f,))))
            pending.clear()

        for a in actions:
            if a.kind in COMPUTE_KINDS:
                pending.append((a.kind, a.layer, a.tok_step))
                if a.kind == "final":
                    flush()  # step boundaries stay observable
                continue
            if a.kind not in _COMM_OPS:
                raise ValueError(f"plan action {a.kind!r} has no simulator instruction")
            flush()
            op = SYNC_KEEP if a.kind == "sync_moe" and a.keep else _COMM_OPS[a.kind]
            out.append((op, a.layer, a.tok_step, bool(a.skip)))
        flush()
        out.append((STEP_END, t))
        program.append(tuple(out))
    return tuple(program)
