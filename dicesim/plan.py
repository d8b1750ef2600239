"""The per-step operation plan every rank executes, and what follows from it.

``build_plan`` turns a :class:`~dicesim.strategy.ExpertParallelStrategy` into the ordered list of
:class:`Action` each rank runs at each step. The simulator schedules these actions on
simpy streams; the executor runs them with torch.distributed. Lags (:func:`lag_table`)
and cross-step buffers (:func:`held_buffers`) are *derived* by replaying the plan, so the
rules live in one place: the issue/consume decisions below.

Action kinds (``layer`` = MoE layer, ``tok_step`` = step whose tokens the op carries):

- ``embed`` / ``final``: per-step work outside the blocks (layer -1).
- ``attention``: attention half of block ``layer``.
- ``gate``: LN + modulation, router, local permutation of the k copies.
- ``sync_moe``: blocking count exchange, dispatch, experts, combine (``skip``: one copy per
  token, on synced layers with ``cond_scope="all"``; ``keep``: the dispatched rows stay for
  the experts the next step re-runs, ``async_work="every_step"``).
- ``local_moe``: every expert local (data-parallel baseline), no communication.
- ``issue_dispatch``: blocking count exchange, then an asynchronous dispatch all-to-all;
  ``skip`` = one copy per token (conditional communication).
- ``run_experts``: wait for the dispatch of (layer, tok_step), run that layer's experts,
  issue its combine asynchronously.
- ``wait_combine``: wait for the combine of (layer, tok_step) and refresh the layer's cache.
- ``shared_expert``: shared expert on all local tokens.
- ``local_combine``: weight cached/fresh copies by router score, sum, gated residual.
- ``discard``: drop every exchange still in flight, unused (its collectives still run in order
  on the communicator); first action of a synchronous step after ``every_step`` work.
- ``drain``: wait for every exchange still in flight; last action of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from dicesim.errors import ConfigError
from dicesim.strategy import ExpertParallelStrategy

ACTION_KINDS = (
    "embed", "attention", "gate", "sync_moe", "local_moe", "issue_dispatch", "run_experts",
    "shared_expert", "wait_combine", "local_combine", "final", "discard", "drain",
)


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    layer: int = -1
    tok_step: int = -1
    skip: bool = False
    keep: bool = False  # sync_moe: its dispatched rows stay for a run_experts at the next step


@dataclass(frozen=True)
class Plan:
    """Ordered actions per step, plus the facts they were built from."""

    strategy: ExpertParallelStrategy
    num_layers: int
    num_steps: int
    steps: tuple[tuple[Action, ...], ...]
    async_layers: tuple[int, ...]
    cache_reads: frozenset[tuple[int, int]] = frozenset()

    def __iter__(self) -> Iterator[tuple[int, tuple[Action, ...]]]:
        return iter(enumerate(self.steps))

    def layer_is_sync(self, layer: int, t: int) -> bool:
        """Whether ``layer`` runs synchronously (fresh output, lag 0) at step ``t``."""
        return layer not in self.async_layers or self.strategy.step_is_sync(t, self.num_steps)

    def reads_cache(self, layer: int, t: int) -> bool:
        """Whether ``layer``'s output at step ``t`` may use copies kept from an earlier step."""
        return (t, layer) in self.cache_reads

    @property
    def cond_layers(self) -> frozenset[int]:
        """Layers whose exchanges conditional communication may cut to one copy per token."""
        s = self.strategy
        if s.cond_interval == 1 or not s.is_async:
            return frozenset()
        return frozenset(range(self.num_layers)) if s.cond_scope == "all" else frozenset(self.async_layers)


def build_plan(strategy: ExpertParallelStrategy, num_layers: int, num_steps: int) -> Plan:
    """Every rank's ordered actions for ``num_steps`` steps of a ``num_layers``-layer model."""
    if num_layers < 1:
        raise ConfigError("model.depth", f"must be >= 1, got {num_layers}", ">= 1")
    if num_steps < 1:
        raise ConfigError("steps", f"must be >= 1, got {num_steps}", ">= 1")
    sync_set = strategy.sync_layer_set(num_layers)
    async_layers = tuple(l for l in range(num_layers) if l not in sync_set) if strategy.is_async else ()
    T = num_steps
    displaced = strategy.scheme == "displaced"
    every_step = strategy.async_work == "every_step"

    def step_async(t: int) -> bool:
        return 0 <= t < T and not strategy.step_is_sync(t, T)

    if every_step:  # the reference: every async step dispatches, whether or not anyone uses it
        issues = step_async
    elif displaced:
        # D(l,t) is processed at t+1 and its combine used at t+2: issue only if both happen.
        def issues(t: int) -> bool:
            return step_async(t + 1) and step_async(t + 2)
    else:
        def issues(t: int) -> bool:
            return step_async(t + 1)

    ring_prev = {a: async_layers[i - 1] for i, a in enumerate(async_layers)}  # wraps to the last

    def source(l: int, t: int) -> tuple[int, int]:
        """(layer, tok_step) whose dispatched rows the slot of async layer ``l`` at step ``t`` runs."""
        if displaced:
            return l, t - 1
        src = ring_prev[l]  # interweaved: the previous async layer of this step, or the ring's last of t-1
        return src, (t if src < l else t - 1)

    dispatched: dict[tuple[int, int], bool] = {}  # rows sent (or kept from a sync step), experts not run; -> skip
    combining: dict[tuple[int, int], bool] = {}  # combines issued, not yet waited for
    cache_reads: set[tuple[int, int]] = set()
    steps: list[tuple[Action, ...]] = []
    for t in range(T):
        acts: list[Action] = []
        full_sync = not step_async(t)
        if full_sync and (dispatched or combining):
            # the reference clears its caches when a synchronous step starts: what is in flight is never used
            acts.append(Action("discard", -1, t))
            dispatched.clear()
            combining.clear()
        acts.append(Action("embed", -1, t))
        # reference work: the next step's slots re-run the experts on this sync step's dispatched rows
        rerun = {source(l, t + 1) for l in async_layers} if every_step and full_sync and step_async(t + 1) else set()
        for l in range(num_layers):
            acts += [Action("attention", l, t), Action("gate", l, t)]
            if strategy.scheme == "data_parallel":
                acts += [Action("local_moe", l, t), Action("shared_expert", l, t), Action("local_combine", l, t)]
                continue
            if full_sync or l in sync_set:
                skip = strategy.layer_skips_copy(False, t, T)
                keep = (l, t) in rerun
                acts.append(Action("sync_moe", l, t, skip, keep))
                if keep:
                    dispatched[(l, t)] = skip
                if skip:
                    cache_reads.add((t, l))
                acts += [Action("shared_expert", l, t), Action("local_combine", l, t)]
                continue
            cache_reads.add((t, l))
            if issues(t):
                skip = strategy.layer_skips_copy(True, t, T)
                acts.append(Action("issue_dispatch", l, t, skip))
                dispatched[(l, t)] = skip
            src = source(l, t)
            if src in dispatched:
                skip = dispatched.pop(src)
                acts.append(Action("run_experts", src[0], src[1], skip))
                combining[src] = skip
            used = (l, t - 2 if displaced else t - 1)
            wait = [Action("wait_combine", l, used[1], combining.pop(used))] if used in combining else []
            shared = [Action("shared_expert", l, t)]
            acts += wait + shared if strategy.slot_order == "combine_first" else shared + wait
            acts.append(Action("local_combine", l, t))
        acts.append(Action("final", -1, t))
        if t == T - 1 and (dispatched or combining):
            acts.append(Action("drain", -1, t))  # the sampler synchronises before it returns
        steps.append(tuple(acts))
    return Plan(strategy=strategy, num_layers=num_layers, num_steps=T, steps=tuple(steps),
                async_layers=async_layers, cache_reads=frozenset(cache_reads))


@dataclass(frozen=True)
class LagTable:
    """Lag of each layer's expert output per step, for the kept and the dropped copy.

    ``kept[t, l]`` is the lag of the copy every token sends (for conditional communication:
    the one the policy keeps); ``dropped[t, l]`` that of the copy a skip step does not send
    (equal to ``kept`` when nothing is skipped). ``skip[t, l]``: the output used at (t, l)
    came from a one-copy dispatch.
    """

    kept: np.ndarray
    dropped: np.ndarray
    skip: np.ndarray

    @property
    def max_lag(self) -> int:
        return int(max(self.kept.max(initial=0), self.dropped.max(initial=0)))


def lag_table(plan: Plan) -> LagTable:
    """Replay the plan's cache updates and read off the producing step of each output used."""
    T, L = plan.num_steps, plan.num_layers
    kept = np.zeros((T, L), dtype=np.int32)
    dropped = np.zeros((T, L), dtype=np.int32)
    skip = np.zeros((T, L), dtype=bool)
    producer = [[0, 0] for _ in range(L)]  # (kept copy, dropped copy) producing step
    last_skip = [False] * L
    for t, actions in plan:
        for a in actions:
            if a.kind in ("sync_moe", "local_moe"):
                # a one-copy sync exchange refreshes the kept copy; the dropped one stays cached
                producer[a.layer] = [t, producer[a.layer][1] if a.skip else t]
                last_skip[a.layer] = a.skip
            elif a.kind == "wait_combine":
                producer[a.layer][0] = a.tok_step
                if not a.skip:
                    producer[a.layer][1] = a.tok_step
                last_skip[a.layer] = a.skip
            elif a.kind == "local_combine":
                kept[t, a.layer] = t - producer[a.layer][0]
                dropped[t, a.layer] = t - producer[a.layer][1]
                skip[t, a.layer] = last_skip[a.layer]
    return LagTable(kept=kept, dropped=dropped, skip=skip)


@dataclass(frozen=True, slots=True)
class HeldBuffer:
    """A tensor a rank keeps from one step into the next.

    ``what``: ``dispatch_send`` / ``combine_recv`` hold this rank's own token copies
    (rows = local tokens x copies sent); ``dispatch_recv`` / ``combine_send`` hold the rows
    this rank received for its experts; ``cache`` holds every local token's k expert outputs;
    ``skip_cache`` the k-1 dropped copies of every local token (reference buffer policy).
    """

    layer: int
    what: str
    tok_step: int
    skip: bool


#: (layer, what, tok_step) of a buffer freed by ``--auto-gc``, per (step, action index)
GcFrees = dict[tuple[int, int], list[tuple[int, str, int]]]


def held_buffers_by_step(plan: Plan) -> list[list[HeldBuffer]]:
    """Buffers alive at the end of every step, one pass; the strategy's ``buffer_policy`` decides.

    Nothing is held after the last step (the run drains and returns).
    """
    if plan.strategy.buffer_policy == "separate":
        return _separate_buffers(plan)
    return _reference_buffers(plan)[0]


def held_buffers(plan: Plan, t: int) -> list[HeldBuffer]:
    """Buffers alive at the end of step ``t``; see :func:`held_buffers_by_step`."""
    return held_buffers_by_step(plan)[t]


def gc_frees(plan: Plan) -> GcFrees:
    """Buffers ``reference_gc`` frees right after each action (empty for other policies)."""
    return _reference_buffers(plan)[1] if plan.strategy.buffer_policy == "reference_gc" else {}


def _separate_buffers(plan: Plan) -> list[list[HeldBuffer]]:
    """Every exchange in flight holds its own send and receive buffer; a layer whose next
    step may reuse old copies keeps a separate output cache. An upper bound of what is needed."""
    pending: dict[tuple[str, int, int], list[HeldBuffer]] = {}
    by_step: list[list[HeldBuffer]] = []

    def bufs(a: Action, kind: str, parts: tuple[str, ...] = ("send", "recv")) -> list[HeldBuffer]:
        return [HeldBuffer(a.layer, f"{kind}_{p}", a.tok_step, a.skip) for p in parts]

    for t, actions in plan:
        for a in actions:
            if a.kind == "issue_dispatch":
                pending[("d", a.layer, a.tok_step)] = bufs(a, "dispatch")
            elif a.kind == "sync_moe" and a.keep:  # only the received rows are needed again
                pending[("d", a.layer, a.tok_step)] = bufs(a, "dispatch", ("recv",))
            elif a.kind == "run_experts":
                pending.pop(("d", a.layer, a.tok_step))
                pending[("c", a.layer, a.tok_step)] = bufs(a, "combine")
            elif a.kind == "wait_combine":
                pending.pop(("c", a.layer, a.tok_step))
            elif a.kind in ("discard", "drain"):
                pending.clear()
        out = [hb for held in pending.values() for hb in held]
        # the cache carries a layer's outputs into the next step when that step may reuse them
        out += [HeldBuffer(l, "cache", -1, False) for l in range(plan.num_layers) if plan.reads_cache(l, t + 1)]
        by_step.append(out)
    return by_step


@dataclass
class _Entry:
    """One exchange as the reference's cache holds it: ``seq`` orders the communicator (0: done)."""

    layer: int
    tok_step: int
    skip: bool
    seq: int
    parts: set[str]


def _reference_buffers(plan: Plan) -> tuple[list[list[HeldBuffer]], GcFrees]:
    """Replay the reference's caches (expertpara/ep_cache.py, diep.py; docs/strategies.md).

    One dispatch and one combine entry per async layer (the combine keyed by the layer whose
    outputs it carries), replaced by the next put; a replaced entry still in flight lives until
    it is used. Its receive buffer *is* the stale output (no separate cache). A synchronous
    step puts its async layers' receive buffers. Skip cache: the dropped copies of every full
    output of a layer under conditional communication, emptied by the one-copy output that reads
    them (with an interval above 2, where the reference fails, dicesim keeps them for the next one).
    ``reference_gc`` (``--auto-gc``): each put first frees the send buffer of every entry of that
    cache known finished; with ``interweaved``, running the experts frees the receive buffer of
    every finished dispatch entry. Known finished: collectives run in issue order on one
    communicator, so a wait finishes everything issued before the awaited one, and so does a
    blocking count exchange when it shares that communicator (``count_comm="shared"``).
    """
    s = plan.strategy
    gc = s.buffer_policy == "reference_gc"
    gc_recv = gc and s.scheme == "interweaved"
    async_set = frozenset(plan.async_layers)
    skip_layers = plan.cond_layers
    lt = lag_table(plan)
    caches: dict[str, dict[int, _Entry]] = {"dispatch": {}, "combine": {}}
    pending: dict[tuple[str, int, int], _Entry] = {}
    skip_held: set[int] = set()
    frees: GcFrees = {}
    by_step: list[list[HeldBuffer]] = []
    seq = done = 0

    def free(kind: str, e: _Entry, part: str, where: tuple[int, int]) -> None:
        if e.seq <= done and part in e.parts:
            e.parts.discard(part)
            frees.setdefault(where, []).append((e.layer, f"{kind}_{part}", e.tok_step))

    def put(kind: str, e: _Entry, where: tuple[int, int]) -> None:
        if gc:  # the entry being replaced goes anyway
            for old in caches[kind].values():
                if old.layer != e.layer:
                    free(kind, old, "send", where)
        caches[kind][e.layer] = e

    for t, actions in plan:
        for i, a in enumerate(actions):
            k, l, where = a.kind, a.layer, (t, i)
            if k == "discard":
                for c in caches.values():
                    c.clear()
                pending.clear()
                skip_held.clear()
            elif k == "drain":
                done = seq
                pending.clear()
            elif k == "sync_moe":
                done = seq  # blocking on the all-to-all communicator
                if l in async_set:  # forced-sync steps put into the async caches (diep.py:207-219, 272-282)
                    put("dispatch", _Entry(l, t, a.skip, 0, {"recv"}), where)
                    put("combine", _Entry(l, t, a.skip, 0, {"recv"}), where)
                    if a.keep:
                        pending[("dispatch", l, t)] = caches["dispatch"][l]
            elif k == "issue_dispatch":
                if s.count_comm == "shared":
                    done = seq
                seq += 1
                pending[("dispatch", l, t)] = e = _Entry(l, t, a.skip, seq, {"send", "recv"})
                put("dispatch", e, where)
            elif k == "run_experts":
                done = max(done, pending.pop(("dispatch", l, a.tok_step)).seq)
                if gc_recv:
                    for e in caches["dispatch"].values():
                        free("dispatch", e, "recv", where)
                seq += 1
                pending[("combine", l, a.tok_step)] = e = _Entry(l, a.tok_step, a.skip, seq, {"send", "recv"})
                put("combine", e, where)
            elif k == "wait_combine":
                done = max(done, pending.pop(("combine", l, a.tok_step)).seq)
            elif k == "local_combine" and l in skip_layers:
                if not lt.skip[t, l]:
                    skip_held.add(l)
                elif not (t + 1 < plan.num_steps and lt.skip[t + 1, l]):
                    skip_held.discard(l)  # read once and emptied; kept if the next output is one copy too
        out: list[HeldBuffer] = []
        if t + 1 < plan.num_steps:
            live = [(kind, e) for kind, c in caches.items() for e in c.values()]
            live += [(key[0], e) for key, e in pending.items() if caches[key[0]].get(e.layer) is not e]
            out = [HeldBuffer(e.layer, f"{kind}_{p}", e.tok_step, e.skip) for kind, e in live for p in sorted(e.parts)]
            out += [HeldBuffer(l, "skip_cache", -1, False) for l in sorted(skip_held)]
        by_step.append(out)
    return by_step, frees


def buffer_rows(hb: HeldBuffer, *, local_tokens: int, top_k: int, recv_rows: int) -> int:
    """Rows of a held buffer; ``recv_rows`` = rows this rank received for (layer, tok_step)."""
    own = local_tokens * (1 if hb.skip else top_k)
    return {
        "dispatch_send": own, "combine_recv": own,
        "dispatch_recv": recv_rows, "combine_send": recv_rows,
        "cache": local_tokens * top_k, "skip_cache": local_tokens * (top_k - 1),
    }[hb.what]
