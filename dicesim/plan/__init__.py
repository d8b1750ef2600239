"""The plan: the ordered actions every rank runs, per strategy family, and what they imply.

- :mod:`~dicesim.plan.vocabulary`: action kinds, the one collective vocabulary, actions, plans,
  effects, lag tables and held buffers;
- :mod:`~dicesim.plan.family`: the per-family interface and registry (:func:`build_plan`,
  :func:`family_of`);
- :mod:`~dicesim.plan.layout`: the parallel layout both halves share;
- :mod:`~dicesim.plan.staleness`: staleness figures from a lag table;
- :mod:`~dicesim.plan.expert`: the expert-parallel family;
- :mod:`~dicesim.plan.sequence`: the sequence-parallel family (sp, DistriFusion).

A family is registered here, once, when the package is imported.
"""

from __future__ import annotations

import numpy as np

from dicesim.models import BlockWorkload
from dicesim.plan.expert import EXPERT_PARALLEL
from dicesim.plan.family import (
    PlanFamily, WindowCuts, build_plan, family_of, register_plan_family, unregister_plan_family,
)
from dicesim.plan.cache import PlanCache
from dicesim.plan.layout import ParallelLayout
from dicesim.plan.sequence import SEQUENCE_PARALLEL
from dicesim.plan.vocabulary import (
    Action, ActionKind, CollectiveKind, GcFrees, HeldBuffer, LagTable, Plan, PlanRefused,
)

register_plan_family(EXPERT_PARALLEL)
register_plan_family(SEQUENCE_PARALLEL)


def lag_table(plan: Plan) -> LagTable:
    """The lag of every layer's output at every step (derived once per plan by its family)."""
    return plan.lags


def held_buffers(plan: Plan, t: int) -> list[HeldBuffer]:
    """Buffers alive at the end of step ``t`` (nothing after the last step)."""
    return list(plan.held[t])


def buffer_bytes_TW(plan: Plan, routing: object, row_nbytes: int) -> np.ndarray:
    """Cross-step buffer bytes held by each rank at the end of each step, ``[T, W]``."""
    return plan.rules.buffer_nbytes_TW(plan, routing, row_nbytes)


def layout_for(strategy: object, world_size: int, num_experts: int, *, group_layout: str = "contiguous",
               expert_layout: str = "modulo") -> ParallelLayout:
    """The parallel layout ``strategy``'s family gives ``world_size`` ranks and ``num_experts`` experts."""
    return family_of(strategy).layout(strategy, world_size, num_experts, group_layout=group_layout,
                                      expert_layout=expert_layout)


def rank_workload(strategy: object, wl: BlockWorkload, world_size: int) -> BlockWorkload:
    """One rank's work per block from ``wl``, the work of its own batch of whole images: unchanged
    unless the strategy's family splits images over ranks (a family's optional ``workload``)."""
    split = getattr(family_of(strategy), "workload", None)
    return wl if split is None else split(strategy, wl, world_size)


__all__ = [
    "Action", "ActionKind", "CollectiveKind", "GcFrees", "HeldBuffer", "LagTable", "ParallelLayout", "Plan",
    "PlanCache", "PlanFamily", "PlanRefused", "WindowCuts", "buffer_bytes_TW", "build_plan", "family_of",
    "held_buffers", "lag_table", "layout_for", "rank_workload", "register_plan_family", "unregister_plan_family",
]
