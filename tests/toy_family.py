"""A toy second family of strategies, for tests only: every layer all-gathers a tensor.

Every rank holds the whole model; after its attention, each layer all-gathers one tensor per
rank (K and V sized: the one collective vocabulary's ``kv_gather``) and adds the mean of the
gathered tensors. ``stale``: the layer uses the tensors gathered at the previous step (lag 1)
while this step's gather runs, after a synchronous first step, the way DistriFusion uses K/V.
``fused``: one gather per step covers every layer (an action spanning layers).

What a family is: its config (:class:`ToyStrategy`, a preset), its plan rules (:class:`ToyRules`:
actions, effects, staleness, held buffers and bytes, memory, layout) and its executor's handlers
(:class:`ToyRunner`). Adding it touches nothing in dicesim/ or validate/: only the registrations
of :func:`registered`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist

from dicesim.placement import replicated
from dicesim.plan import ActionKind as K, register_plan_family, unregister_plan_family
from dicesim.plan.family import WindowCuts
from dicesim.plan.layout import ParallelLayout
from dicesim.plan.vocabulary import (
    Action, CollectiveKind, Compute, HeldBuffer, Issue, LagTable, Plan, Wait, WaitAll,
)
from dicesim.strategy import FamilyConfig, Strategy, register_family, unregister_family
from validate.executor.interpreter import PlanInterpreter

KV = CollectiveKind.KV_GATHER


class ToyStrategy(Strategy):
    family: ClassVar[str] = "toy_gather"
    stale: bool = False
    fused: bool = False

    @property
    def is_async(self) -> bool:
        return self.stale

    def step_is_sync(self, t: int, num_steps: int) -> bool:
        return not self.stale or t == 0

    def describe(self) -> str:
        return "toy gather" + (" (stale)" if self.stale else "") + (" (fused)" if self.fused else "")


class ToyAction(StrEnum):
    GATHER = "gather"  # issue and wait (keep: the next step uses it too)
    ISSUE_GATHER = "issue_gather"
    WAIT_GATHER = "wait_gather"


class ToyHeld(StrEnum):
    GATHERED = "gathered"


class ToyRules:
    """The toy family's plan rules (:class:`dicesim.plan.PlanFamily`)."""

    name = "toy_gather"
    static_lowering: dict = {}  # every kind's effects go through lower()

    def build(self, s: ToyStrategy, num_layers: int, num_steps: int) -> Plan:
        steps = []
        for t in range(num_steps):
            acts = [Action(K.EMBED, -1, t)]
            if s.fused:
                acts.append(Action(ToyAction.GATHER, 0, t, span=num_layers))
            for l in range(num_layers):
                acts.append(Action(K.ATTENTION, l, t))
                if s.fused:
                    continue
                if s.step_is_sync(t, num_steps):  # a first stale step reads this one's gather
                    acts.append(Action(ToyAction.GATHER, l, t, keep=s.stale and t + 1 < num_steps))
                    continue
                if t + 1 < num_steps:
                    acts.append(Action(ToyAction.ISSUE_GATHER, l, t))
                acts.append(Action(ToyAction.WAIT_GATHER, l, t - 1))
            steps.append(tuple(acts + [Action(K.FINAL, -1, t)]))
        async_layers = tuple(range(num_layers)) if s.stale else ()
        return Plan(strategy=s, num_layers=num_layers, num_steps=num_steps, steps=tuple(steps),
                    async_layers=async_layers, rules=self)

    def lower(self, a: Action) -> tuple:
        if a.kind in (K.EMBED, K.ATTENTION, K.FINAL):
            return (Compute(str(a.kind)),)
        return {ToyAction.GATHER: (Issue(KV), Wait(KV, release=not a.keep)), ToyAction.ISSUE_GATHER: (Issue(KV),),
                ToyAction.WAIT_GATHER: (Wait(KV),), K.DRAIN: (WaitAll(),)}[a.kind]

    def window_cuts(self, s: ToyStrategy) -> WindowCuts:
        return WindowCuts(kinds=frozenset())  # nothing blocks the host: no window repeats by this argument

    def lags(self, plan: Plan) -> LagTable:
        T, L = plan.num_steps, plan.num_layers
        lag = np.array([[0 if plan.strategy.step_is_sync(t, T) else 1] * L for t in range(T)], dtype=np.int32)
        return LagTable(kept=lag, dropped=lag.copy(), skip=np.zeros((T, L), dtype=bool))

    def held_buffers(self, plan: Plan) -> tuple:
        T, L = plan.num_steps, plan.num_layers
        return tuple(tuple(HeldBuffer(l, ToyHeld.GATHERED, t, False) for l in range(L))
                     if plan.strategy.stale and t + 1 < T else () for t in range(T))

    def gc_frees(self, plan: Plan) -> dict:
        return {}

    def buffer_nbytes_TW(self, plan: Plan, routing: Any, row_nbytes: int) -> np.ndarray:
        W = routing.placement.world_size
        one = W * 2 * routing.tokens_per_rank * row_nbytes  # every rank's K and V of one layer
        return np.repeat(np.array([len(h) * one for h in plan.held], dtype=float)[:, None], W, axis=1)

    def memory_TW(self, plan: Plan, routing: Any, row_nbytes: int) -> dict:
        return {"stale_buffers": self.buffer_nbytes_TW(plan, routing, row_nbytes)}

    def layout(self, s: ToyStrategy, world_size: int, num_experts: int, **_: Any) -> ParallelLayout:
        return ParallelLayout(placement=replicated(world_size, num_experts), group_ranks=(tuple(range(world_size)),))


RULES = ToyRules()
FAMILY = FamilyConfig(name="toy_gather", config=ToyStrategy,
                      presets={"toy-gather": {}, "toy-gather-stale": {"stale": True}})


@contextmanager
def registered() -> Iterator[None]:
    """The toy family's two registrations (config and plan rules), undone afterwards."""
    register_family(FAMILY)
    register_plan_family(RULES)
    try:
        yield
    finally:
        unregister_plan_family(RULES.name)
        unregister_family(FAMILY.name)


class ToyRunner(PlanInterpreter):
    """The toy family's executor on one torch.distributed rank: one handler per action kind.

    ``x_D`` starts as the step's input; attention scales it; a gather adds the mean of every
    rank's tensor (of the step the gather carries). ``lag[t, l]`` is read from the data."""

    def __init__(self, plan: Plan, world_size: int):
        super().__init__(plan, sync_step=lambda: None)
        self.W = world_size
        self.pending: dict[tuple[int, int], tuple[Any, list[torch.Tensor], int]] = {}
        self.lag = np.full((plan.num_steps, plan.num_layers), -1)

    def handlers(self) -> Mapping[StrEnum, Any]:
        return {K.EMBED: self._embed, K.ATTENTION: self._attention, K.FINAL: lambda a, t: self.x_D,
                ToyAction.GATHER: self._gather, ToyAction.ISSUE_GATHER: self._issue, ToyAction.WAIT_GATHER: self._wait}

    def begin_step(self, x_D: torch.Tensor, t_B: Any, y_B: Any, t: int) -> None:
        self.x_in = x_D

    def _embed(self, a: Action, t: int) -> None:
        self.x_D = self.x_in.clone()

    def _attention(self, a: Action, t: int) -> None:
        self.x_D = self.x_D * (1.0 + 0.1 * (a.layer + 1)) + 0.01 * t

    def _issue(self, a: Action, t: int) -> None:
        bufs = [torch.empty_like(self.x_D) for _ in range(self.W)]
        self.pending[(a.layer, t)] = (dist.all_gather(bufs, self.x_D, async_op=True), bufs, t)

    def _wait(self, a: Action, t: int) -> None:
        work, bufs, produced = self.pending.pop((a.layer, a.tok_step))
        work.wait()
        self.x_D = self.x_D + 0.5 * torch.stack(bufs).mean(dim=0)
        self.lag[t, a.layer] = t - produced

    def _gather(self, a: Action, t: int) -> None:
        self._issue(a, t)
        if a.keep:  # the next (stale) step reads this gather too
            work, bufs, _ = self.pending[(a.layer, t)]
            work.wait()
            self.x_D = self.x_D + 0.5 * torch.stack(bufs).mean(dim=0)
            self.lag[t, a.layer] = 0
        else:
            self._wait(a, t)


def reference(x_WD: torch.Tensor, num_layers: int, num_steps: int, stale: bool) -> torch.Tensor:
    """Every rank's output of every step in one process, from the toy's rule as stated (not its plan)."""
    outs, last = [], None
    for t in range(num_steps):
        x = x_WD.clone()
        now = []
        for l in range(num_layers):
            x = x * (1.0 + 0.1 * (l + 1)) + 0.01 * t
            now.append(x.clone())
            used = last[l] if stale and t > 0 else x
            x = x + 0.5 * used.mean(dim=0)
        last = now
        outs.append(x)
    return torch.stack(outs)
