"""Roofline cost model: how long one op takes on one GPU of a :class:`HardwareProfile`.

time = launch_s + max(flops / (peak * compute_eff), nbytes / (mem_bw * mem_eff))

The work (flops, bytes) of the block ops comes from :mod:`dicesim.models`
(``BlockWorkload``); embed and final, which are outside the blocks, are counted here.
Plan action kinds map onto profile op kinds through :data:`ACTION_OP_KIND`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dicesim.models import BlockWorkload, OpCost
from dicesim.sim.costs.profile import HardwareProfile

#: plan action kind -> profile op kind whose efficiency times it
ACTION_OP_KIND: dict[str, str] = {
    "embed": "embed", "attention": "attention", "gate": "gate", "shared_expert": "shared_expert",
    "local_combine": "local_combine", "final": "final", "local_moe": "experts", "run_experts": "experts",
    "sync_moe": "experts",
    # sequence parallelism splits the attention half around its K/V all-gather
    "sp_qkv": "attention", "sp_attend": "attention",
    # Ulysses splits it around its head all-to-alls: the core over every token, then the projection
    "uly_attend": "attention", "uly_proj": "attention",
    # ring attention: W-1 blocks under the passes, the last block, then the projection (the merges are timed as
    # elementwise work with the local_combine efficiency inside the ring_* costs: CostModel.__post_init__)
    "ring_blocks": "attention", "ring_block": "attention", "ring_proj": "attention",
    # USP: the ring's blocks over the Ulysses-exchanged heads (the projection is Ulysses' uly_proj)
    "usp_blocks": "attention", "usp_block": "attention",
}
#: compute actions whose fixed per-op cost (``launch_s``) another action pays: Ulysses' projection is the tail
#: of the kernels ``sp_attend`` runs as one op (the profiles' ``launch_s`` is a kernel gap x the op's kernels),
#: split off by the output all-to-all; ``uly_attend`` pays the fixed cost of both (assumption)
SHARED_LAUNCH: frozenset[str] = frozenset({"uly_proj", "ring_proj"})


def embed_cost(wl: BlockWorkload) -> OpCost:
    """Patch embedding, timestep MLP (256 -> D -> D) and class embedding, positional add (of every
    token of the rank's images: a sequence-parallel rank embeds whole images, then keeps its slice)."""
    m, w = wl.model, wl.dtype_nbytes
    D, N, b = m.hidden, wl.tokens * wl.token_split, wl.images
    patch_in = m.patch * m.patch * m.latent_channels
    flops = 2 * N * patch_in * D + 2 * b * (256 * D + D * D) + 2 * N * D
    nbytes = (patch_in * D + 256 * D + D * D) * w + N * (patch_in + 3 * D) * w
    return OpCost(flops=float(flops), nbytes=float(nbytes))


def final_cost(wl: BlockWorkload) -> OpCost:
    """Final adaLN (2D outputs), LayerNorm, linear to patch pixels, unpatchify, CFG mix (of every
    token: a sequence-parallel rank runs it on the gathered tokens of whole images)."""
    m, w = wl.model, wl.dtype_nbytes
    D, N, b = m.hidden, wl.tokens * wl.token_split, wl.images
    patch_out = m.patch * m.patch * m.out_channels
    flops = 2 * b * D * 2 * D + 2 * N * D * patch_out + 8 * N * D
    nbytes = (2 * D * D + D * patch_out) * w + N * (2 * D + 2 * patch_out) * w
    return OpCost(flops=float(flops), nbytes=float(nbytes))


@dataclass(frozen=True)
class CostModel:
    """Op times for one workload on one profile; per-layer constants are computed once.

    ``experts_on_rank``: routed experts each rank holds (E / group size).
    """

    profile: HardwareProfile
    workload: BlockWorkload
    experts_on_rank: int
    _fixed_s: dict[str, float] = field(init=False, repr=False, compare=False)
    _fixed_cost: dict[str, OpCost] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        wl = self.workload
        costs = {
            "embed": embed_cost(wl), "attention": wl.attention_half(), "gate": wl.gate(),
            "shared_expert": wl.shared_expert(), "local_combine": wl.local_combine(), "final": final_cost(wl),
            # data-parallel baseline: every routed copy runs on local experts, all E resident
            "local_moe": wl.expert_rows(wl.routed_rows, wl.model.num_experts),
            "sp_qkv": wl.attention_qkv(), "sp_attend": wl.attention_core(),
            "uly_attend": wl.attention_heads(), "uly_proj": wl.attention_out(),
            "ring_proj": wl.attention_out(),
        }
        fixed = {k: self.op_time_s(ACTION_OP_KIND[k], c, launch=k not in SHARED_LAUNCH) for k, c in costs.items()}
        # ring attention: each block is its attention kernel (the attention efficiency, one launch) and its merge
        # (elementwise, memory-bound: the local_combine efficiency, one launch); ring_blocks: the W-1 under the passes
        block, merge = wl.attention_block(), wl.ring_merge()
        block_s = self.op_time_s("attention", block) + self.op_time_s("local_combine", merge)
        passes = wl.token_split - 1
        costs["ring_block"] = OpCost(flops=block.flops + merge.flops, nbytes=block.nbytes + merge.nbytes)
        one = costs["ring_block"]
        costs["ring_blocks"] = OpCost(flops=passes * one.flops, nbytes=passes * one.nbytes)
        fixed["ring_block"], fixed["ring_blocks"] = block_s, passes * block_s
        # USP: token_split / head_split blocks per layer; on a one-rank ring the one block is the whole attention
        # (Ulysses' core: the same FLOPs and bytes), with no merge (nothing to merge; its float32 round trip,
        # yunchang/ring/ring_flash_attn.py:52, 59, left out: assumption)
        usp_passes = wl.token_split // wl.head_split - 1
        if usp_passes:
            costs["usp_block"], fixed["usp_block"] = costs["ring_block"], block_s
        else:
            costs["usp_block"], fixed["usp_block"] = block, self.op_time_s("attention", block)
        costs["usp_blocks"] = OpCost(flops=usp_passes * costs["ring_block"].flops,
                                     nbytes=usp_passes * costs["ring_block"].nbytes)
        fixed["usp_blocks"] = usp_passes * block_s
        object.__setattr__(self, "_fixed_s", fixed)
        object.__setattr__(self, "_fixed_cost", costs)

    def op_time_s(self, op_kind: str, cost: OpCost, *, launch: bool = True) -> float:
        """Roofline time of ``cost`` with the efficiency of ``op_kind`` (a profile op kind); ``launch``: add the
        op kind's fixed per-op cost."""
        p = self.profile
        eff = p.ops[op_kind]
        return (eff.launch_s if launch else 0.0) + max(cost.flops / (p.peak_flops * eff.compute_eff),
                                  cost.nbytes / (p.mem_bw_Bps * eff.mem_eff))

    def action_time_s(self, action_kind: str) -> float:
        """Time of a compute action whose work does not depend on routing (attention, gate, ...)."""
        return self._fixed_s[action_kind]

    def action_cost(self, action_kind: str) -> OpCost:
        """Work (flops, bytes) of a routing-independent compute action."""
        return self._fixed_cost[action_kind]

    def expert_cost(self, rows: int) -> OpCost:
        """Work of this rank's routed experts on ``rows`` received rows."""
        return self.workload.expert_rows(int(rows), self.experts_on_rank)

    def expert_time_s(self, rows: int) -> float:
        """Time of this rank's routed experts on ``rows`` received rows."""
        return self.op_time_s("experts", self.expert_cost(rows))

    def expert_times_s(self, rows: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`expert_time_s` over an integer array (evaluated once per distinct value)."""
        uniq, inv = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        times = np.array([self.expert_time_s(int(r)) for r in uniq], dtype=float)
        return times[inv].reshape(np.shape(rows))
