"""What a sequence-parallel rank holds between steps: DistriFusion's K/V buffers, and their bytes.

The comm manager allocates, at the first attention call, one flat buffer per rank slot, each
holding every layer's stacked K and V of one slice (``seqpara/df.py:93-95``,
``comm_manager.py:59-73``): per layer ``W x 2 x N_img x (T/W) x D x b = 2 N_img T D b`` bytes, one
full K and V set of every token of every image, this rank's own slot included (it is the send
buffer). It is never freed while the process runs (``clear()`` only waits); the plan counts it
held at the end of every step but the last, as every family's plan does (the run ends there).
Synchronous ``sp`` keeps nothing across steps: each layer's gathered K and V are freed when its
attention is done; nor does Ulysses (its all-to-all buffers live inside one layer's attention).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dicesim.plan.sequence.kinds import KV_BUFFER
from dicesim.plan.vocabulary import HeldBuffer, Plan


def held_by_step(plan: Plan) -> tuple[tuple[HeldBuffer, ...], ...]:
    """Buffers alive at the end of every step: one K/V buffer per layer under DistriFusion."""
    T, L = plan.num_steps, plan.num_layers
    every = tuple(HeldBuffer(l, KV_BUFFER, -1, False) for l in range(L)) if plan.strategy.kv_async else ()
    return tuple(every if t + 1 < T else () for t in range(T))


def kv_buffer_nbytes(world_size: int, tokens_per_rank: int, row_nbytes: int) -> int:
    """Bytes of one layer's K/V buffer on one rank: every rank's slot of stacked K and V
    (``tokens_per_rank`` = images x tokens of one slice; ``row_nbytes`` = hidden x bytes per element)."""
    return world_size * 2 * tokens_per_rank * row_nbytes


def buffer_nbytes_TW(plan: Plan, routing: Any, row_nbytes: int) -> np.ndarray:
    """``[T, W]`` bytes each rank holds at the end of each step (every rank holds the same)."""
    W = routing.placement.world_size
    one = kv_buffer_nbytes(W, routing.tokens_per_rank, row_nbytes)
    per_step_T = np.array([len(held) * one for held in plan.held], dtype=float)
    return np.repeat(per_step_T[:, None], W, axis=1)
