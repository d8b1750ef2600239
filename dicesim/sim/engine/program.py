"""The plan compiled to the small generic instruction set every rank's simpy process executes.

The strategy's family says what each action does (:meth:`dicesim.plan.PlanFamily.lower`: effects
over the one collective vocabulary); this module turns the effects into instructions, in plan
order, nothing re-derived. The engine reads only these:

- ``COMPUTE``: compute whose time the workload fixes (:class:`Block`, with what the host pays to
  issue it);
- ``ROWS``: compute whose time depends on the rows this rank received (experts), with its host cost;
- ``ISSUE``: issue a collective on one of the group's communicators; it stays pending under a
  handle (the flat index of the issuing instruction); ``wait``: the compute stream waits for it
  at once (an action's wait that follows its issue directly is folded into it; ``WAIT_KEEP``: it
  stays pending for a later wait; ``WAIT_CUT``: as ``WAIT_RELEASE``, and a window-reuse cut point,
  the family's :attr:`~dicesim.plan.WindowCuts.stream` kinds on the main communicator);
- ``WAIT``: the compute stream waits for a pending collective (``release``: it is done with);
- ``BLOCKING``: the host issues a collective and waits for it; ``cut`` marks a window-reuse cut
  point (the family's :meth:`~dicesim.plan.PlanFamily.window_cuts`);
- ``WAIT_ALL`` / ``FORGET``: wait for / give up every pending collective; ``STEP_END``: a step ends.

What a collective carries is one :class:`Coll` (kind, layer, token step, skip, span), from the
instruction through the communicator to the network transfer and the trace.

Consecutive compute effects are merged into one block (one simpy timeout instead of several)
when nothing observable can happen between them: no collective is issued or awaited, no op but
the first makes the host sync, and the host issues each op before the stream reaches it
(:class:`Block` ``gated`` is false; otherwise each op keeps its own instruction). What the host
pays per op is :class:`HostTable`'s (:mod:`dicesim.sim.costs.host`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from dicesim.plan import CollectiveKind, ParallelLayout, Plan
from dicesim.plan.vocabulary import Blocking, Compute, Forget, Issue, RowsCompute, Wait, WaitAll
from dicesim.sim.costs.costmodel import ACTION_OP_KIND, CostModel
from dicesim.sim.costs.host import HostCost, launch_cost


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
#: ``wait`` of an ISSUE: none; the stream waits at once and is done with it; waits and keeps it pending;
#: waits at once, is done with it, and it is a stream cut
NO_WAIT, WAIT_RELEASE, WAIT_KEEP, WAIT_CUT = 0, 1, 2, 3
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
    """Merged compute ops: ``ops[i] = (kind, layer, tok_step)`` taking ``durs_s[i]`` seconds on the device.

    The host issues the block over ``host_s`` seconds from its start ``a`` (after ``syncs`` drains
    of the GPU queue); the device starts at ``a + first_s`` at the earliest and, run back to back,
    ends no earlier than ``a + span_s`` (the host issuing the last ops). ``gated``: the host holds
    the device back inside the block (``span_s`` exceeds ``first_s`` + the device time), which a
    merged block may only do as its last op. A tuple: a program holds thousands, and a cached
    program's blocks are made in one pass per run (:mod:`dicesim.sim.engine.skeleton`).
    """

    total_s: float
    durs_s: tuple[float, ...]
    ops: tuple[tuple[str, int, int], ...]
    flops: tuple[float, ...]
    host_s: float = 0.0
    first_s: float = 0.0
    span_s: float = 0.0
    syncs: int = 0
    gated: bool = False

    @property
    def key(self) -> tuple:
        """What the block's timing depends on (window reuse compares windows by it)."""
        return (self.total_s, len(self.durs_s), self.host_s, self.first_s, self.span_s, self.syncs)


class HostTable:
    """What the host pays to issue each op of one run (:mod:`dicesim.sim.costs.host`): compute ops
    by plan action kind, the experts of a rank (``ROWS``), collectives by kind. Without a host
    model in the profile: ``host_op_s`` per op launch, ``host_collective_s`` per collective."""

    #: collective kind -> the host op kind of the executor code that issues it
    COLL_KINDS = {int(CollectiveKind.COUNTS): "count_exchange", int(CollectiveKind.DISPATCH): "dispatch",
                  int(CollectiveKind.COMBINE): "combine"}

    def __init__(self, cost: CostModel):
        prof = cost.profile
        self.model, self.host_op_s, self.host_coll_s = prof.host, prof.host_op_s, prof.host_collective_s
        self.experts_on_rank, self.num_experts = cost.experts_on_rank, cost.workload.model.num_experts

    def compute(self, action_kind: str) -> HostCost:
        if self.model is None:
            return launch_cost(self.host_op_s)
        if action_kind == "local_moe":  # the data-parallel baseline: its handler runs every expert on this rank
            return self.model.cost("local_moe", self.num_experts)
        return self.model.cost(ACTION_OP_KIND.get(action_kind, action_kind), self.experts_on_rank)

    def rows(self) -> HostCost:
        if self.model is None:
            return launch_cost(self.host_op_s)
        return self.model.cost("experts", self.experts_on_rank)

    def collective(self, kind: int, *, launches: bool) -> HostCost:
        """``launches``: the group issues anything at all (a one-rank group does not, unless its
        collectives loop through host memory); the executor's exchange code runs either way."""
        if self.model is not None and kind in self.COLL_KINDS:
            return self.model.cost(self.COLL_KINDS[kind])
        return launch_cost(self.host_coll_s if launches else 0.0)


def compile_program(plan: Plan, cost: CostModel, layout: ParallelLayout, *, host: HostTable,
                    merge: bool = True) -> tuple[tuple, ...]:
    """Per step, the tuple of instructions (layouts in the module docstring):

    ``(COMPUTE, Block)``; ``(ROWS, layer, tok_step, skip, name, HostCost)``; ``(ISSUE, comm, Coll, handle, wait)``;
    ``(WAIT, handle, Coll, release)``; ``(BLOCKING, comm, Coll, cut)``; ``(WAIT_ALL,)``; ``(FORGET,)``;
    ``(STEP_END, step)``. ``comm`` indexes ``layout.communicators``.
    """
    return compile_steps(plan, layout, _Blocks(cost, host=host, merge=merge).flush, host.rows())


def compile_steps(plan: Plan, layout: ParallelLayout, flush, rows_host: object) -> tuple[tuple, ...]:
    """The program of :func:`compile_program`; ``flush(ops, out)`` turns a run of compute ops into
    instructions, ``rows_host`` is what the host pays to issue the experts (a ``ROWS`` instruction's last field)."""
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
                    out.append((ROWS, a.layer, a.tok_step, a.skip, x, rows_host))
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
        cuts = plan.rules.window_cuts(plan.strategy)
        self._cuts, self._stream_cuts = cuts.kinds, cuts.stream
        self._layout = layout
        #: id(effects) -> (effects, steps)
        self.known: dict[int, tuple[tuple, list[tuple]]] = {}

    def of(self, effects: tuple) -> list[tuple] | str:
        """The steps of ``effects``; one compute effect alone: its op name."""
        hit = self.known.get(id(effects))
        if hit is not None and hit[0] is effects:
            return hit[1]
        steps = []
        empty_kinds, empty_ops = self._layout.empty_kinds, self._layout.empty_ops
        for e in effects:
            # what the layout runs over one-rank subgroups, or gives no work, is neither launched nor waited for
            if (isinstance(e, (Issue, Wait, Blocking)) and e.kind in empty_kinds) or \
                    (isinstance(e, Compute) and e.op in empty_ops):
                continue
            step = self._step(e)
            last = steps[-1] if steps else None
            if step[0] == WAIT and last is not None and last[0] == ISSUE and last[1] == step[1]:
                # a wait for the collective issued just before: the stream waits at once
                wait = WAIT_RELEASE if step[2] else WAIT_KEEP
                if wait == WAIT_RELEASE and last[2] == 0 and CollectiveKind(step[1]) in self._stream_cuts:
                    wait = WAIT_CUT
                steps[-1] = (_ISSUE_WAIT, step[1], (last[2], wait))
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
    """Consecutive compute ops as blocks; op durations and host costs per run of op kinds computed
    once (the same run recurs in every layer and step)."""

    def __init__(self, cost: CostModel, *, host: HostTable, merge: bool):
        self.cost, self.host, self.merge = cost, host, merge
        self._runs: dict[tuple[str, ...], tuple] = {}

    def flush(self, ops: list[tuple[str, int, int]], out: list[tuple]) -> None:
        """Append ``ops`` (not empty) to ``out`` as blocks, and empty it."""
        kinds = tuple(k for k, _, _ in ops)
        known = self._runs.get(kinds)
        if known is None:
            known = self._runs[kinds] = self._split(kinds)
        for lo, hi, proto in known:
            out.append((COMPUTE, Block(total_s=proto.total_s, durs_s=proto.durs_s, ops=tuple(ops[lo:hi]),
                                       flops=proto.flops, host_s=proto.host_s, first_s=proto.first_s,
                                       span_s=proto.span_s, syncs=proto.syncs, gated=proto.gated)))
        ops.clear()

    def _split(self, kinds: tuple[str, ...]) -> list[tuple[int, int, Block]]:
        """``(lo, hi, block)`` per block: a block is as long as merging stays exact (module docstring)."""
        cost = self.cost
        durs = [cost.action_time_s(k) for k in kinds]
        flops = [cost.action_cost(k).flops for k in kinds]
        hosts = [self.host.compute(k) for k in kinds]
        out, lo = [], 0
        while lo < len(kinds):
            hi = lo + 1
            if self.merge:
                while hi < len(kinds) and hosts[hi].syncs == 0 and not _block(durs, flops, hosts, lo, hi + 1).gated:
                    hi += 1
            out.append((lo, hi, _block(durs, flops, hosts, lo, hi)))
            lo = hi
        return out


def _block(durs: list[float], flops: list[float], hosts: list[HostCost], lo: int, hi: int) -> Block:
    """Ops ``lo..hi-1`` as one block. With the device idle at the block's start, op ``k`` ends no
    earlier than ``A_k + max(first_k + D_k, issue_k)``, ``A_k`` the host time spent on the ops
    before it; what follows it adds its device time: ``span_s`` is the largest such end."""
    total = first = span = host_s = 0.0
    for k in range(lo, hi):
        h = hosts[k]
        if k == lo:
            first = h.first_s
        span = max(span + durs[k], host_s + max(h.first_s + durs[k], h.issue_s))
        host_s += h.issue_s
        total += durs[k]
    gated = span > (first + total) * (1.0 + 1e-12)
    return Block(total_s=total, durs_s=tuple(durs[lo:hi]), ops=(), flops=tuple(flops[lo:hi]), host_s=host_s,
                 first_s=first, span_s=span, syncs=hosts[lo].syncs, gated=gated)
