"""The expert-parallel family's plan rules: what every rank runs at every step, and its lags.

:func:`build` turns an :class:`~dicesim.strategy.expert.ExpertParallelStrategy` into the
ordered list of actions (:mod:`dicesim.plan.expert.kinds`) each rank runs at each step. The
simulator schedules them on simpy streams; the executor runs them with torch.distributed.
Lags (:func:`lag_table`) and cross-step buffers (:mod:`dicesim.plan.expert.buffers`) are
*derived* by replaying the plan, so the rules live in one place: the issue/consume decisions
below, and :func:`layer_skips_copy`, which decides which exchanges send one copy per token
(conditional communication, gated as the reference gates it: :class:`_SkipCache`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dicesim.plan.expert.kinds import (
    ATTENTION, DISCARD, DRAIN, EMBED, FINAL, GATE, ISSUE_DISPATCH, LOCAL_COMBINE, LOCAL_MOE, RUN_EXPERTS, SHARED_EXPERT,
    SYNC_MOE, WAIT_COMBINE,
)
from dicesim.plan.vocabulary import Action, LagTable, Plan, PlanRefused
from dicesim.strategy.expert import ExpertParallelStrategy


def layer_skips_copy(strategy: ExpertParallelStrategy, exchange_is_async: bool, t: int, num_steps: int) -> bool:
    """Whether an exchange of step ``t``'s tokens may send one copy per token; with
    ``cond_gate="reference"`` it does only while its layer holds a skip-cache entry
    (:meth:`_SkipCache.allows`, which :func:`build` asks per layer).

    Only on candidate steps (:meth:`~ExpertParallelStrategy.cond_candidate`). Asynchronous
    exchanges skip there; synchronous ones (synced layers) too with ``cond_scope="all"`` (the
    reference's ``ep_skip_now`` does not ask whether the layer is asynchronous, ``models.py:342-352``),
    but never on a fully synchronous step: the reference clears its skip cache when such a step
    starts (``rectified_flow.py:102-105``, ``diep.py:159-163``), so nothing is there to reuse.
    """
    s = strategy
    if not s.is_async or not s.cond_candidate(t, num_steps):
        return False
    return exchange_is_async or (s.cond_scope == "all" and not s.step_is_sync(t, num_steps))


class _Miss(Exception):
    """A one-copy output found no skip-cache entry: where the reference fails."""

    def __init__(self, step: int, layer: int):
        super().__init__(step, layer)
        self.step, self.layer = step, layer


class _SkipCache:
    """Which layers hold a skip-cache entry, as the reference's ``EPSkipCache`` (``ep_cache.py:189-235``).

    A full output stores its dropped positions (``ep_fwd.py:185-187``); a one-copy output reads
    and deletes them (``ep_fwd.py:177-184``, ``ep_cache.py:215-220``); a fully synchronous step
    clears every entry. A one-copy output that finds no entry is where the reference fails
    (``final_outp[skip_mask] = None``, ``ep_fwd.py:184``): :func:`build` refuses the plan.
    """

    def __init__(self, strategy: ExpertParallelStrategy, num_layers: int):
        self.gate = strategy.cond_gate == "reference" and strategy.cond_interval > 1 and strategy.is_async
        self.entry = [False] * num_layers

    def clear(self) -> None:
        self.entry = [False] * len(self.entry)

    def allows(self, layer: int) -> bool:
        """The reference's gate: ``ep_skip_now`` skips only while the layer's entry exists
        (``diep.py:61-68``); dicesim's ``every_candidate`` gate always lets it."""
        return not self.gate or self.entry[layer]

    def arrive(self, layer: int, t: int, one_copy: bool) -> None:
        """Layer ``layer``'s output used at step ``t`` arrived with one copy per token or both."""
        if not self.gate:
            return
        if one_copy and not self.entry[layer]:
            raise _Miss(t, layer)
        self.entry[layer] = not one_copy


def _refusal(strategy: ExpertParallelStrategy, num_layers: int, num_steps: int, miss: _Miss) -> PlanRefused:
    """The one-line refusal: where the reference fails, and the intervals it runs through here
    (probed when the message is read: a search reads only the brief)."""
    s, T = strategy, num_steps

    def allowed() -> str:
        runs = []
        for n in range(2, 9):  # probes: the same rules without their actions (only whether they miss)
            try:
                _build(s.model_copy(update={"cond_interval": n}), num_layers, T, None, probe=True)
                runs.append(str(n))
            except _Miss:
                pass
        return f"1 (off), {', '.join(runs) or 'no interval up to 8'} for these layers and {T} steps, " \
               "or cond_gate='every_candidate'"
    return PlanRefused(
        "strategy.cond_interval",
        f"{s.cond_interval} with {s.scheme} asynchronous layers fails in the DICE reference at step {miss.step} "
        f"of {T} (its i = {T - miss.step}), layer {miss.layer}: a second one-copy output arrives before a full one "
        "restores the layer's skip-cache entry (expertpara/ep_fwd.py:184)",
        allowed,
        brief=f"the DICE reference fails at step {miss.step} of {T} (a one-copy output finds no skip-cache entry)")


def cond_layers(plan: Plan) -> frozenset[int]:
    """Layers whose exchanges conditional communication may cut to one copy per token."""
    s = plan.strategy
    if s.cond_interval == 1 or not s.is_async:
        return frozenset()
    return frozenset(range(plan.num_layers)) if s.cond_scope == "all" else frozenset(plan.async_layers)


def build(strategy: ExpertParallelStrategy, num_layers: int, num_steps: int, rules: Any, *,
          actions: dict | None = None) -> Plan:
    """Every rank's ordered actions for ``num_steps`` steps of a ``num_layers``-layer model (checked >= 1);
    ``rules``: the family object the plan asks for what it implies (lags, buffers); ``actions``: a pool
    of actions shared with the owner's other plans (equal actions are one object). PlanRefused
    where the reference's conditional communication fails (:class:`_SkipCache`)."""
    try:
        return _build(strategy, num_layers, num_steps, rules, actions=actions)
    except _Miss as miss:
        raise _refusal(strategy, num_layers, num_steps, miss) from None


def _no_action(*_: Any) -> None:
    """What a probe build makes instead of an action (it asks only whether the gate misses)."""


def _pooled(pool: dict) -> Any:
    """Makes an action, or takes the equal one already in ``pool`` (keyed by its arguments)."""
    get = pool.get

    def action(*args: Any) -> Action:
        a = get(args)
        if a is None:
            a = pool[args] = Action(*args)
        return a
    return action


def _build(strategy: ExpertParallelStrategy, num_layers: int, num_steps: int, rules: Any,
           probe: bool = False, actions: dict | None = None) -> Plan | None:
    """The rules; ``probe``: the same decisions, but no actions and no plan (None), for
    :func:`_refusal`'s questions (an action costs most of a build, and a refusal asks seven);
    ``actions``: the pool of :func:`build`."""
    make = _no_action if probe else Action if actions is None else _pooled(actions)  # what each rule emits
    sync_set = strategy.sync_layer_set(num_layers)
    async_layers = tuple(l for l in range(num_layers) if l not in sync_set) if strategy.is_async else ()
    T = num_steps
    displaced = strategy.scheme == "displaced"
    every_step = strategy.async_work == "every_step"
    data_parallel = strategy.scheme == "data_parallel"
    combine_first = strategy.slot_order == "combine_first"

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
    cache = _SkipCache(strategy, num_layers)
    steps: list[tuple[Action, ...]] = []
    for t in range(T):
        acts: list[Action] = []
        full_sync = not step_async(t)
        if full_sync and (dispatched or combining):
            # the reference clears its caches when a synchronous step starts: what is in flight is never used
            acts.append(make(DISCARD, -1, t))
            dispatched.clear()
            combining.clear()
        acts.append(make(EMBED, -1, t))
        # reference work: the next step's slots re-run the experts on this sync step's dispatched rows
        rerun = {source(l, t + 1) for l in async_layers} if every_step and full_sync and step_async(t + 1) else set()
        if full_sync:
            cache.clear()
        # which exchanges of this step may send one copy per token (the same for every layer of a
        # kind); a layer does when the skip-cache gate allows it too
        skip_sync, skip_async = layer_skips_copy(strategy, False, t, T), layer_skips_copy(strategy, True, t, T)
        issue_t = issues(t)
        for l in range(num_layers):
            acts += [make(ATTENTION, l, t), make(GATE, l, t)]
            if data_parallel:
                acts += [make(LOCAL_MOE, l, t), make(SHARED_EXPERT, l, t), make(LOCAL_COMBINE, l, t)]
                continue
            if full_sync or l in sync_set:
                skip = skip_sync and cache.allows(l)
                keep = (l, t) in rerun
                acts.append(make(SYNC_MOE, l, t, skip, keep))
                cache.arrive(l, t, skip)
                if keep:
                    dispatched[(l, t)] = skip
                if skip:
                    cache_reads.add((t, l))
                acts += [make(SHARED_EXPERT, l, t), make(LOCAL_COMBINE, l, t)]
                continue
            cache_reads.add((t, l))
            if issue_t:
                skip = skip_async and cache.allows(l)
                acts.append(make(ISSUE_DISPATCH, l, t, skip))
                dispatched[(l, t)] = skip
            src = source(l, t)
            if src in dispatched:
                skip = dispatched.pop(src)
                acts.append(make(RUN_EXPERTS, src[0], src[1], skip))
                combining[src] = skip
            used = (l, t - 2 if displaced else t - 1)
            wait = []
            if used in combining:  # else the layer reuses the output it used last: nothing arrives
                skip = combining.pop(used)
                wait = [make(WAIT_COMBINE, l, used[1], skip)]
                cache.arrive(l, t, skip)
            shared = [make(SHARED_EXPERT, l, t)]
            acts += wait + shared if combine_first else shared + wait
            acts.append(make(LOCAL_COMBINE, l, t))
        acts.append(make(FINAL, -1, t))
        if t == T - 1 and (dispatched or combining):
            acts.append(make(DRAIN, -1, t))  # the sampler synchronises before it returns
        steps.append(tuple(acts))
    if probe:
        return None
    return Plan(strategy=strategy, num_layers=num_layers, num_steps=T, steps=tuple(steps),
                async_layers=async_layers, rules=rules, cache_reads=frozenset(cache_reads))



def lag_table(plan: Plan) -> LagTable:
    """Replay the plan's cache updates and read off the producing step of each output used."""
    T, L = plan.num_steps, plan.num_layers
    kept = [[0] * L for _ in range(T)]  # lists, made arrays once: an array's item writes cost ~5x more
    dropped = [[0] * L for _ in range(T)]
    skip = [[False] * L for _ in range(T)]
    producer = [[0, 0] for _ in range(L)]  # (kept copy, dropped copy) producing step
    last_skip = [False] * L
    kinds = {SYNC_MOE, LOCAL_MOE, WAIT_COMBINE, LOCAL_COMBINE}  # the rest neither produce nor use outputs
    for t, actions in plan:
        kept_t, dropped_t, skip_t = kept[t], dropped[t], skip[t]
        for a in actions:
            k = a.kind
            if k not in kinds:
                continue
            if k == LOCAL_COMBINE:
                made = producer[a.layer]
                kept_t[a.layer] = t - made[0]
                dropped_t[a.layer] = t - made[1]
                skip_t[a.layer] = last_skip[a.layer]
            elif k == WAIT_COMBINE:
                producer[a.layer][0] = a.tok_step
                if not a.skip:
                    producer[a.layer][1] = a.tok_step
                last_skip[a.layer] = a.skip
            else:  # SYNC_MOE, LOCAL_MOE: a one-copy sync exchange refreshes the kept copy; the dropped one stays cached
                producer[a.layer] = [t, producer[a.layer][1] if a.skip else t]
                last_skip[a.layer] = a.skip
    return LagTable(kept=np.array(kept, dtype=np.int32).reshape(T, L),
                    dropped=np.array(dropped, dtype=np.int32).reshape(T, L),
                    skip=np.array(skip, dtype=bool).reshape(T, L))
