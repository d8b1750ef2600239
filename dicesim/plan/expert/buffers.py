"""The expert-parallel family's held buffers: what each rank keeps between steps, and its bytes.

The strategy's ``buffer_policy`` picks the replay (:data:`POLICIES`): ``separate`` counts every
exchange in flight and a per-layer output cache (an upper bound); ``reference`` and
``reference_gc`` replay the DICE reference's per-layer caches (``reference_gc`` with its
``--auto-gc`` frees). The executor measures the tensors it really holds against these.
:func:`_reference` states the reference's rules one action at a time; the policies run
:func:`dicesim.plan.expert.replay.reference_replay`, which equals it (tests/test_buffer_replay.py)
and replays a step that repeats an earlier one by moving that step's result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicesim.plan.expert.kinds import (
    CACHE, COMBINE_RECV, COMBINE_SEND, DISCARD, DISPATCH_RECV, DISPATCH_SEND, DRAIN, HELD_OF, ISSUE_DISPATCH,
    LOCAL_COMBINE, RUN_EXPERTS, SKIP_CACHE, SYNC_MOE, WAIT_COMBINE,
)
from dicesim.plan.expert.replay import reference_replay
from dicesim.plan.expert.rules import cond_layers
from dicesim.plan.vocabulary import Action, GcFrees, HeldBuffer, Plan

#: a policy's replay: (plan, whether the frees are wanted) -> (held buffers per step end, frees)
Replay = Callable[[Plan, bool], tuple[tuple[tuple[HeldBuffer, ...], ...], GcFrees]]


def held_by_step(plan: Plan) -> tuple[tuple[HeldBuffer, ...], ...]:
    """Buffers alive at the end of every step, one pass; nothing after the last step (the run
    drains and returns)."""
    return POLICIES[plan.strategy.buffer_policy](plan, False)[0]


def gc_frees(plan: Plan) -> GcFrees:
    """Buffers ``reference_gc`` frees right after each action (empty for other policies)."""
    return POLICIES[plan.strategy.buffer_policy](plan, True)[1]


def _separate(plan: Plan) -> tuple[tuple[HeldBuffer, ...], ...]:
    """Every exchange in flight holds its own send and receive buffer; a layer whose next
    step may reuse old copies keeps a separate output cache. An upper bound of what is needed."""
    pending: dict[tuple[str, int, int], list[HeldBuffer]] = {}
    by_step: list[tuple[HeldBuffer, ...]] = []

    def bufs(a: Action, kind: str, parts: tuple[str, ...] = ("send", "recv")) -> list[HeldBuffer]:
        return [HeldBuffer(a.layer, HELD_OF[(kind, p)], a.tok_step, a.skip) for p in parts]

    for t, actions in plan:
        for a in actions:
            if a.kind == ISSUE_DISPATCH:
                pending[("d", a.layer, a.tok_step)] = bufs(a, "dispatch")
            elif a.kind == SYNC_MOE and a.keep:  # only the received rows are needed again
                pending[("d", a.layer, a.tok_step)] = bufs(a, "dispatch", ("recv",))
            elif a.kind == RUN_EXPERTS:
                pending.pop(("d", a.layer, a.tok_step))
                pending[("c", a.layer, a.tok_step)] = bufs(a, "combine")
            elif a.kind == WAIT_COMBINE:
                pending.pop(("c", a.layer, a.tok_step))
            elif a.kind == DISCARD or a.kind == DRAIN:
                pending.clear()
        out = [hb for held in pending.values() for hb in held]
        # the cache carries a layer's outputs into the next step when that step may reuse them
        out += [HeldBuffer(l, CACHE, -1, False) for l in range(plan.num_layers) if plan.reads_cache(l, t + 1)]
        by_step.append(tuple(out))
    return tuple(by_step)


@dataclass
class _Entry:
    """One exchange as the reference's cache holds it: ``seq`` orders the communicator (0: done)."""

    layer: int
    tok_step: int
    skip: bool
    seq: int
    parts: set[str]


def _reference(plan: Plan) -> tuple[tuple[tuple[HeldBuffer, ...], ...], GcFrees]:
    """Replay the reference's caches (expertpara/ep_cache.py, diep.py; docs/strategies.md), one
    action at a time: the statement of the rules, and the oracle of :func:`reference_replay`.

    One dispatch and one combine entry per async layer (the combine keyed by the layer whose
    outputs it carries), replaced by the next put; a replaced entry still in flight lives until
    it is used. Its receive buffer *is* the stale output (no separate cache). A synchronous
    step puts its async layers' receive buffers. Skip cache: the dropped copies of every full
    output of a layer under conditional communication, emptied by the one-copy output that reads
    them (with ``cond_gate='every_candidate'`` two one-copy outputs may follow each other: the
    dropped copies then stay for the second; the reference's gate never lets that happen).
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
    skip_layers = cond_layers(plan)
    lt = plan.lags
    caches: dict[str, dict[int, _Entry]] = {"dispatch": {}, "combine": {}}
    pending: dict[tuple[str, int, int], _Entry] = {}
    skip_held: set[int] = set()
    frees: GcFrees = {}
    by_step: list[tuple[HeldBuffer, ...]] = []
    seq = done = 0

    def free(kind: str, e: _Entry, part: str, where: tuple[int, int]) -> None:
        if e.seq <= done and part in e.parts:
            e.parts.discard(part)
            frees.setdefault(where, []).append((e.layer, HELD_OF[(kind, part)], e.tok_step))

    def put(kind: str, e: _Entry, where: tuple[int, int]) -> None:
        if gc:  # the entry being replaced goes anyway (free's test inline: most entries are freed already)
            for old in caches[kind].values():
                if old.layer != e.layer and old.seq <= done and "send" in old.parts:
                    free(kind, old, "send", where)
        caches[kind][e.layer] = e

    for t, actions in plan:
        for i, a in enumerate(actions):
            k, l, where = a.kind, a.layer, (t, i)
            if k == DISCARD:
                for c in caches.values():
                    c.clear()
                pending.clear()
                skip_held.clear()
            elif k == DRAIN:
                done = seq
                pending.clear()
            elif k == SYNC_MOE:
                done = seq  # blocking on the all-to-all communicator
                if l in async_set:  # forced-sync steps put into the async caches (diep.py:207-219, 272-282)
                    put("dispatch", _Entry(l, t, a.skip, 0, {"recv"}), where)
                    put("combine", _Entry(l, t, a.skip, 0, {"recv"}), where)
                    if a.keep:
                        pending[("dispatch", l, t)] = caches["dispatch"][l]
            elif k == ISSUE_DISPATCH:
                if s.count_comm == "shared":
                    done = seq
                seq += 1
                pending[("dispatch", l, t)] = e = _Entry(l, t, a.skip, seq, {"send", "recv"})
                put("dispatch", e, where)
            elif k == RUN_EXPERTS:
                done = max(done, pending.pop(("dispatch", l, a.tok_step)).seq)
                if gc_recv:
                    for e in caches["dispatch"].values():
                        free("dispatch", e, "recv", where)
                seq += 1
                pending[("combine", l, a.tok_step)] = e = _Entry(l, a.tok_step, a.skip, seq, {"send", "recv"})
                put("combine", e, where)
            elif k == WAIT_COMBINE:
                done = max(done, pending.pop(("combine", l, a.tok_step)).seq)
            elif k == LOCAL_COMBINE and l in skip_layers:
                if not lt.skip[t, l]:
                    skip_held.add(l)
                elif not (t + 1 < plan.num_steps and lt.skip[t + 1, l]):
                    skip_held.discard(l)  # read once and emptied; kept if the next output is one copy too
        out: list[HeldBuffer] = []
        if t + 1 < plan.num_steps:
            live = [(kind, e) for kind, c in caches.items() for e in c.values()]
            live += [(key[0], e) for key, e in pending.items() if caches[key[0]].get(e.layer) is not e]
            out = [HeldBuffer(e.layer, HELD_OF[(kind, p)], e.tok_step, e.skip)
                   for kind, e in live for p in sorted(e.parts)]
            out += [HeldBuffer(l, SKIP_CACHE, -1, False) for l in sorted(skip_held)]
        by_step.append(tuple(out))
    return tuple(by_step), frees


def buffer_rows(hb: HeldBuffer, *, local_tokens: int, top_k: int, recv_rows: Any) -> Any:
    """Rows of a held buffer; ``recv_rows`` = rows this rank received for (layer, tok_step)
    (an int, or an array over ranks)."""
    what = hb.what
    if what in _OWN_ROWS:  # this rank's own token copies
        return local_tokens * (1 if hb.skip else top_k)
    if what in _RECEIVED_ROWS:  # the rows this rank received for its experts
        return recv_rows
    if what == CACHE:
        return local_tokens * top_k
    if what == SKIP_CACHE:
        return local_tokens * (top_k - 1)
    raise KeyError(f"no row count for held buffer {what!r}")


_OWN_ROWS = frozenset({DISPATCH_SEND, COMBINE_RECV})
_RECEIVED_ROWS = frozenset({DISPATCH_RECV, COMBINE_SEND})


def buffer_nbytes_TW(plan: Plan, routing: Any, row_nbytes: int) -> np.ndarray:
    """Cross-step buffer bytes held by each rank at the end of each step, ``[T, W]``.

    ``routing``: the run's token routing (:class:`dicesim.sim.costs.routing.TokenRouting`: received
    rows per layer, step and rank, tokens per rank, top-k). Rows are whole numbers: summed as
    integers, in one gather per copy kind, they are the float sums of one buffer at a time exactly."""
    W = routing.placement.world_size
    recv = [routing.recv_rows_LTW(False), routing.recv_rows_LTW(True)]
    if not all(np.issubdtype(r.dtype, np.integer) for r in recv):
        return _buffer_nbytes_each(plan, routing, row_nbytes, recv)
    own_1, own_k, own_km1, at = plan.derived("held_rows", lambda: _held_rows(plan))
    tokens, k = routing.tokens_per_rank, routing.top_k
    own_T = tokens * (own_1 + k * own_k + (k - 1) * own_km1)  # rows that do not depend on the rank
    rows_TW = np.repeat(own_T[:, None], W, axis=1)
    chunk = max(1, (1 << 22) // max(W, 1))  # gathered rows [chunk, W] stay small at 16,384 ranks
    for skip, (ts, ls, ks) in enumerate(at):
        for i in range(0, len(ts), chunk):
            np.add.at(rows_TW, ts[i:i + chunk], recv[skip][ls[i:i + chunk], ks[i:i + chunk]])
    return rows_TW.astype(float) * row_nbytes


def _held_rows(plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """What :func:`buffer_nbytes_TW` reads from the plan alone: per step, how many own-row buffers
    hold ``tokens``, ``tokens * top_k`` and ``tokens * (top_k - 1)`` rows (the cases of
    :func:`buffer_rows`), and per skip the (step, layer, token step) of every received-row buffer."""
    T = plan.num_steps
    own = np.zeros((3, T), dtype=np.int64)
    at: tuple[tuple[list[int], list[int], list[int]], ...] = (([], [], []), ([], [], []))  # per skip: t, layer, tok
    for t, held in enumerate(plan.held):
        for hb in held:
            what = hb.what
            if what in _RECEIVED_ROWS:
                if hb.tok_step >= 0:
                    ts, ls, ks = at[hb.skip]
                    ts.append(t), ls.append(hb.layer), ks.append(hb.tok_step)
            elif what in _OWN_ROWS:
                own[0 if hb.skip else 1, t] += 1
            elif what == CACHE:
                own[1, t] += 1
            elif what == SKIP_CACHE:
                own[2, t] += 1
            else:
                raise KeyError(f"no row count for held buffer {what!r}")
    index = tuple(tuple(np.asarray(x, dtype=np.intp) for x in per_skip) for per_skip in at)
    return own[0], own[1], own[2], index


def _buffer_nbytes_each(plan: Plan, routing: Any, row_nbytes: int, recv: list[np.ndarray]) -> np.ndarray:
    """:func:`buffer_nbytes_TW` one buffer at a time (rows that are not whole numbers)."""
    W = routing.placement.world_size
    zeros = np.zeros(W, dtype=np.int64)
    out = np.zeros((plan.num_steps, W))
    for t, held in enumerate(plan.held):
        total = np.zeros(W)
        for hb in held:
            rr = recv[hb.skip][hb.layer, hb.tok_step] if hb.tok_step >= 0 else zeros
            total += buffer_rows(hb, local_tokens=routing.tokens_per_rank, top_k=routing.top_k, recv_rows=rr)
        out[t] = total * row_nbytes
    return out


#: buffer policy -> its replay (held buffers per step end, and the frees inside steps)
POLICIES: dict[str, Replay] = {
    "separate": lambda plan, frees: (_separate(plan), {}),
    "reference": lambda plan, frees: (reference_replay(plan, frees=False)[0], {}),
    "reference_gc": lambda plan, frees: reference_replay(plan, frees=frees),
}
