"""Memory per GPU for every strategy, and whether it fits the GPU.

The total of one rank is the sum of its holders (docs/memory.md):

- ``weights``: :func:`~dicesim.plan.footprint.weight_nbytes` for the experts the layout gives it;
- ``activations``: the peak working set of one block's forward
  (:func:`~dicesim.plan.footprint.activation_nbytes`);
- every holder the strategy's family reports in :meth:`~dicesim.plan.PlanFamily.memory_TW`
  (buffers held from one step into the next: ``stale_buffers`` for expert parallelism, the K/V
  buffers of sequence parallelism, whatever a family names), at the step where their sum peaks;
- ``runtime``: the CUDA context and NCCL's buffers (:func:`~dicesim.plan.footprint.runtime_nbytes`),
  and ``allocator_slack``, a stated share of the activations and held buffers.

Nothing here knows a family: the held holders are summed whatever their names, so a family's
buffers count as soon as its ``memory_TW`` reports them. The rank with the largest total is
the one reported (ranks differ only where routing gives them different rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicesim.models import BlockWorkload
from dicesim.plan.footprint import (
    RUNTIME, RuntimeAllowance, activation_nbytes, rank_work, runtime_nbytes, weight_nbytes,
)
from dicesim.plan.layout import ParallelLayout
from dicesim.plan.vocabulary import Plan

GiB = float(1 << 30)
#: holders every estimate reports (family holders go between activations and runtime)
FIXED_HOLDERS: tuple[str, ...] = ("weights", "activations")
RUNTIME_HOLDERS: tuple[str, ...] = ("runtime", "allocator_slack")


def gib(nbytes: float) -> str:
    """Bytes as GiB with one decimal (the unit GPU memory is quoted in)."""
    return f"{nbytes / GiB:.1f} GiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU memory of one run: bytes by holder on the fullest rank, and the verdict against
    ``capacity_bytes`` (None: the profile does not say, so the fit is unknown)."""

    #: bytes of each holder on every rank (held buffers at the step where their sum peaks)
    holders_W: dict[str, np.ndarray]
    capacity_bytes: float | None
    weight_parts: dict[str, int]

    @property
    def total_W(self) -> np.ndarray:
        return sum(self.holders_W.values())

    @property
    def rank(self) -> int:
        """The fullest rank (the one every figure is quoted for)."""
        return int(np.argmax(self.total_W))

    @property
    def by_holder(self) -> dict[str, float]:
        r = self.rank
        return {h: float(v[r]) for h, v in self.holders_W.items()}

    @property
    def total_bytes(self) -> float:
        return float(self.total_W[self.rank])

    @property
    def margin_bytes(self) -> float | None:
        """Capacity left on the fullest rank (negative: that much over)."""
        return None if self.capacity_bytes is None else self.capacity_bytes - self.total_bytes

    @property
    def fits(self) -> bool | None:
        margin = self.margin_bytes
        return None if margin is None else margin >= 0

    def breakdown(self) -> str:
        """``weights 30.7 GiB, runtime 1.0 GiB, ...``: every holder that holds anything, largest first."""
        items = sorted(((k, v) for k, v in self.by_holder.items() if v > 0), key=lambda kv: -kv[1])
        return ", ".join(f"{k.replace('_', ' ')} {gib(v)}" for k, v in items)

    def verdict(self) -> str:
        """One line: whether it fits the GPU's memory, what it needs of what, and what holds it."""
        need = f"needs {gib(self.total_bytes)} per GPU"
        if self.capacity_bytes is None:
            return f"fit unknown (the profile gives no GPU memory): {need} ({self.breakdown()})"
        if self.fits:
            return f"fits in GPU memory: {need} of {gib(self.capacity_bytes)} ({self.breakdown()})"
        return (f"does not fit in GPU memory: {need} of {gib(self.capacity_bytes)}, {gib(-self.margin_bytes)} over "
                f"({self.breakdown()})")

    def totals(self) -> dict[str, Any]:
        """The result fields (``SimResult.totals``; docs/results.md)."""
        return {"peak_memory_bytes": self.total_bytes,
                "memory_capacity_bytes": float("nan") if self.capacity_bytes is None else self.capacity_bytes,
                "memory_margin_bytes": float("nan") if self.margin_bytes is None else self.margin_bytes,
                "fits": self.fits, "memory_by_holder": dict(self.by_holder), "memory_note": self.verdict()}


def estimate_memory(plan: Plan, layout: ParallelLayout, workload: BlockWorkload, *, image_tokens: int,
                    routing: Any, row_nbytes: int, capacity_bytes: float | None,
                    allowance: RuntimeAllowance = RUNTIME, held_TW: Mapping[str, Any] | None = None) -> MemoryEstimate:
    """Per-GPU memory of a run (see the module docstring).

    ``workload``: one block's work on one rank (tokens, images, dtype); ``image_tokens``: tokens
    of a whole image; ``routing``: the run's token routing (rows per expert and rank, for the
    working set and the family's held buffers); ``capacity_bytes``: the GPU's memory (profile);
    ``held_TW``: the family's ``memory_TW`` for this plan and routing when the caller has it already.
    """
    preset, b = workload.model, workload.dtype_nbytes
    W, T = layout.world_size, plan.num_steps
    if held_TW is None:
        held_TW = plan.rules.memory_TW(plan, routing, row_nbytes)
    held = {h: np.asarray(v, dtype=float) for h, v in held_TW.items()}
    held_TW = sum(held.values()) if held else np.zeros((T, W))
    peak_t_W = np.argmax(held_TW, axis=0) if T else np.zeros(W, dtype=int)
    held_W = held_TW[peak_t_W, np.arange(W)] if T else np.zeros(W)
    parts = weight_nbytes(preset, tokens_per_image=image_tokens, experts_per_rank=layout.experts_per_rank,
                          dtype_nbytes=b)
    weights = float(sum(parts.values()))
    act_W = activation_nbytes(preset, rank_work(workload, layout, routing, image_tokens=image_tokens), b)
    runtime = float(sum(runtime_nbytes(plan, layout, allowance).values()))
    slack_W = allowance.slack_frac * (act_W + held_W)
    holders_W = {"weights": np.full(W, weights), "activations": act_W,
                 **{h: v[peak_t_W, np.arange(W)] if T else np.zeros(W) for h, v in held.items()},
                 "runtime": np.full(W, runtime), "allocator_slack": slack_W}
    return MemoryEstimate(holders_W=holders_W, capacity_bytes=None if capacity_bytes is None else float(capacity_bytes),
                          weight_parts=parts)
