"""The expert-parallel family: every rank holds a slice of the routed experts (or all of them,
``data_parallel``) and each MoE layer exchanges tokens with all-to-alls.

- :mod:`~dicesim.plan.expert.kinds`: its action kinds, buffer kinds and their effects;
- :mod:`~dicesim.plan.expert.rules`: the plan rules (:func:`~dicesim.plan.expert.rules.build`)
  and the lags they imply;
- :mod:`~dicesim.plan.expert.buffers`: the buffers each rank holds between steps, and their bytes.

:data:`EXPERT_PARALLEL` is the family object :mod:`dicesim.plan` registers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dicesim.placement import make_placement, replicated
from dicesim.plan.expert import buffers, kinds, rules
from dicesim.plan.family import WindowCuts
from dicesim.plan.layout import COUNTS_COMM, MAIN_COMM, ParallelLayout
from dicesim.plan.vocabulary import CollectiveKind, GcFrees, HeldBuffer, LagTable, Plan
from dicesim.strategy.expert import ExpertParallelStrategy


class ExpertParallelPlan:
    """The plan rules of :class:`~dicesim.strategy.expert.ExpertParallelStrategy` (see
    :class:`dicesim.plan.family.PlanFamily` for what each method answers)."""

    name = "expert_parallel"
    #: takes equal actions from its owner's pool (:func:`dicesim.plan.family.build_plan`)
    pools_actions = True

    def build(self, strategy: ExpertParallelStrategy, num_layers: int, num_steps: int, *,
              actions: dict | None = None) -> Plan:
        return rules.build(strategy, num_layers, num_steps, self, actions=actions)

    #: what an action does, as effects over the collective vocabulary (the simulator compiles them)
    lower = staticmethod(kinds.lower)
    static_lowering = kinds.STATIC_LOWERING

    def window_cuts(self, strategy: ExpertParallelStrategy) -> WindowCuts:
        # a blocking count exchange on the all-to-all communicator waits behind every earlier collective
        blocked = None if strategy.count_comm == "shared" else \
            "counts on a separate communicator (a count exchange is not a cut)"
        return WindowCuts(kinds=frozenset({CollectiveKind.COUNTS}), blocked=blocked,
                          none_found="no count exchange to cut at")

    def lags(self, plan: Plan) -> LagTable:
        return rules.lag_table(plan)

    def held_buffers(self, plan: Plan) -> tuple[tuple[HeldBuffer, ...], ...]:
        return buffers.held_by_step(plan)

    def gc_frees(self, plan: Plan) -> GcFrees:
        return buffers.gc_frees(plan)

    def buffer_nbytes_TW(self, plan: Plan, routing: Any, row_nbytes: int) -> np.ndarray:
        return buffers.buffer_nbytes_TW(plan, routing, row_nbytes)

    def memory_TW(self, plan: Plan, routing: Any, row_nbytes: int) -> dict[str, np.ndarray]:
        # the per-GPU memory model adds "weights", "activations" here (docs/architecture.md)
        return {"stale_buffers": self.buffer_nbytes_TW(plan, routing, row_nbytes)}

    def layout(self, strategy: ExpertParallelStrategy, world_size: int, num_experts: int, *,
               group_layout: str = "contiguous", expert_layout: str = "modulo") -> ParallelLayout:
        if strategy.scheme == "data_parallel":  # every rank holds every expert: no all-to-all at all
            placement = replicated(world_size, num_experts)
        else:
            placement = make_placement(world_size, num_experts, group_layout=group_layout,
                                       expert_layout=expert_layout)
        # the expert-parallel groups exchange tokens (one-rank groups when every expert is local)
        if strategy.count_comm == "separate":
            return ParallelLayout(placement=placement, group_ranks=placement.groups(),
                                  communicators=(MAIN_COMM, COUNTS_COMM), comm_by_kind=((CollectiveKind.COUNTS, 1),))
        return ParallelLayout(placement=placement, group_ranks=placement.groups())


EXPERT_PARALLEL = ExpertParallelPlan()
