"""The sequence-parallel family: every rank holds the whole model and a contiguous slice of every
image's tokens; attention all-gathers keys and values (``sp``, DistriFusion) or all-to-alls Q, K, V and
the output between token slices and head groups (Ulysses) or passes K/V blocks around a ring of ranks
(ring attention), or both (USP: Ulysses inside groups of consecutive ranks, ring attention across them),
MoE layers run locally with every expert.

- :mod:`~dicesim.plan.sequence.kinds`: its action kinds, buffer kind and their effects;
- :mod:`~dicesim.plan.sequence.rules`: the plan rules (:func:`~dicesim.plan.sequence.rules.build`) and
  the K/V lags they imply;
- :mod:`~dicesim.plan.sequence.buffers`: DistriFusion's K/V buffers and their bytes.

:data:`SEQUENCE_PARALLEL` is the family object :mod:`dicesim.plan` registers. Its lag table holds
the lag of the K/V of the other ranks' slices (this rank's own slice is always fresh).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dicesim.models import BlockWorkload
from dicesim.placement import replicated
from dicesim.plan.family import WindowCuts
from dicesim.plan.layout import ParallelLayout, head_groups, ring_groups
from dicesim.plan.sequence import buffers, kinds, rules
from dicesim.plan.vocabulary import CollectiveKind, GcFrees, HeldBuffer, LagTable, Plan
from dicesim.strategy.sequence import SequenceParallelStrategy


@dataclass(frozen=True, kw_only=True)
class SequenceLayout(ParallelLayout):
    """One group of every rank; every rank holds every expert and every image (a slice of its tokens)."""

    single_img: bool = False
    ulysses: bool = False
    ring: bool = False
    #: USP (Ulysses inside, ring across): ranks of one Ulysses group (0: not USP)
    usp_ulysses: int = 0

    @property
    def token_split(self) -> int:
        return self.world_size

    @property
    def head_split(self) -> int:
        return self.world_size if self.ulysses else self.usp_ulysses if self.usp_ulysses else 1

    @property
    def ring_passes(self) -> int:
        if self.usp_ulysses:
            return self.world_size // self.usp_ulysses - 1
        return self.world_size - 1 if self.ring else 0

    def ulysses_groups(self) -> tuple[tuple[int, ...], ...]:
        """USP's Ulysses groups (:func:`~dicesim.plan.layout.head_groups` of ``head_split``)."""
        return head_groups(self.world_size, self.head_split)

    def ring_groups(self) -> tuple[tuple[int, ...], ...]:
        """USP's ring groups (:func:`~dicesim.plan.layout.ring_groups`: the ranks ``head_split`` apart)."""
        return ring_groups(self.world_size, self.head_split)

    @property
    def empty_kinds(self) -> frozenset[CollectiveKind]:
        # a one-rank head group or ring (USP with a degree of 1, Ulysses or ring attention on one GPU): its
        # all-to-alls or its passes stay on the rank (yunchang/ring/ring_flash_attn.py:29-33 sends nothing on a
        # one-rank ring; the executor's head all-to-all returns at a one-rank group: validate/executor/kvcomm.py)
        heads = self.ulysses or bool(self.usp_ulysses)
        ring = self.ring or bool(self.usp_ulysses)
        return frozenset(k for k, used, n in ((CollectiveKind.HEAD_A2A, heads, self.head_split),
                                              (CollectiveKind.KV_RING, ring, self.ring_size)) if used and n == 1)

    @property
    def empty_ops(self) -> frozenset[str]:
        # a one-rank ring: no block is attended under a pass
        if self.ring_size > 1:
            return frozenset()
        return frozenset({"usp_blocks"}) if self.usp_ulysses else frozenset({"ring_blocks"}) if self.ring else frozenset()

    def images_of(self, rank: int, batch: int) -> range:
        """Every rank computes every image: all ranks' batches (gathered), or rank 0's alone (``single_img``)."""
        return range(batch if self.single_img else batch * self.world_size)


class SequenceParallelPlan:
    """The plan rules of :class:`~dicesim.strategy.sequence.SequenceParallelStrategy` (see
    :class:`dicesim.plan.family.PlanFamily` for what each method answers)."""

    name = "sequence"

    def build(self, strategy: SequenceParallelStrategy, num_layers: int, num_steps: int) -> Plan:
        return rules.build(strategy, num_layers, num_steps, self)

    lower = staticmethod(kinds.lower)
    static_lowering = kinds.STATIC_LOWERING

    def window_cuts(self, strategy: SequenceParallelStrategy) -> WindowCuts:
        # no collective of this family blocks the host; the scatter that opens every step is waited for
        # at once by every rank's stream, on the one communicator (so everything issued before it has ended)
        return WindowCuts(kinds=frozenset(), stream=frozenset({CollectiveKind.SCATTER}),
                          none_found="sequence parallelism waits for no collective at once")

    def lags(self, plan: Plan) -> LagTable:
        return rules.lag_table(plan)

    def held_buffers(self, plan: Plan) -> tuple[tuple[HeldBuffer, ...], ...]:
        return buffers.held_by_step(plan)

    def gc_frees(self, plan: Plan) -> GcFrees:
        return {}

    def buffer_nbytes_TW(self, plan: Plan, routing: Any, row_nbytes: int) -> np.ndarray:
        return buffers.buffer_nbytes_TW(plan, routing, row_nbytes)

    def memory_TW(self, plan: Plan, routing: Any, row_nbytes: int) -> dict[str, np.ndarray]:
        # the K/V buffers are this family's cross-step buffers (the per-GPU memory model adds the rest)
        return {"stale_buffers": self.buffer_nbytes_TW(plan, routing, row_nbytes)}

    def layout(self, strategy: SequenceParallelStrategy, world_size: int, num_experts: int, *,
               group_layout: str = "contiguous", expert_layout: str = "modulo") -> SequenceLayout:
        return SequenceLayout(placement=replicated(world_size, num_experts), group_ranks=(tuple(range(world_size)),),
                              single_img=strategy.single_img, ulysses=strategy.ulysses,
                              ring=strategy.ring, usp_ulysses=strategy.ulysses_degree if strategy.usp else 0)

    def workload(self, strategy: SequenceParallelStrategy, wl: BlockWorkload, world_size: int) -> BlockWorkload:
        """One rank's work from ``wl`` (its own batch of whole images): the shared images, a slice of each."""
        strategy.check_split(world_size, wl.tokens_per_image, heads=wl.model.heads)
        return replace(wl, images=strategy.images_in_batch(wl.images, world_size),
                       tokens_per_image=wl.tokens_per_image // world_size, token_split=world_size,
                       head_split=strategy.ulysses_degree if strategy.usp else 1)


SEQUENCE_PARALLEL = SequenceParallelPlan()
