"""The compute ops of one DiT-MoE block, as the op-level GPU timings run them.

One definition for ``benchmarks/gpu_block_timings.py`` (which times them on a GPU, eager and
from CUDA graphs: ``traces/gpu/h100``, ``traces/gpu/h200``) and :mod:`validate.hostcost` (which
times the same calls on CPU with tiny tensors, where only the host's work is left): the host
model's fit compares the two (:mod:`dicesim.calibrate.fit_host`).

Shape legend: B images (CFG doubles them), T tokens per image, D hidden, N = B*T tokens,
K routed copies per token, R routed rows one rank receives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dicesim.models import ModelPreset, OpCost, block_workload
from validate.model.model import DiTMoEBlock, combine_copies, copies_to_rows

#: the op names, in the order they are timed
BLOCK_OPS: tuple[str, ...] = ("attention", "gate", "experts", "shared_expert", "local_combine")


@dataclass(frozen=True)
class BlockOp:
    """One timed op: the call, its work (from :mod:`dicesim.models`) and the rows it handles."""

    fn: Callable[[], torch.Tensor]
    cost: OpCost
    rows: int


def experts_per_rank(preset: ModelPreset, ep_world: int) -> int:
    """Routed experts one rank of an ``ep_world``-way expert-parallel group holds (at least one)."""
    return max(1, preset.num_experts // ep_world)


def block_ops(preset: ModelPreset, block: DiTMoEBlock, *, batch: int, image_px: int, ep_world: int,
              device: torch.device, dtype: torch.dtype, seed: int) -> dict[str, BlockOp]:
    """The ops of ``block`` (built with :func:`experts_per_rank` experts) on random inputs of
    ``batch`` images per GPU; ``experts``: the rows one rank receives under uniform routing."""
    wl = block_workload(preset, batch=batch, image_px=image_px, cfg=True)
    B, T, D = wl.images, wl.tokens_per_image, preset.hidden
    X = experts_per_rank(preset, ep_world)
    gen = torch.Generator(device=device.type).manual_seed(seed)
    x_BTD = torch.randn(B, T, D, device=device, dtype=dtype, generator=gen)
    c_BD = torch.randn(B, D, device=device, dtype=dtype, generator=gen)
    R = wl.routed_rows // ep_world  # uniform routing: each rank receives 1/W of all copies
    rows_RD = torch.randn(R, D, device=device, dtype=dtype, generator=gen)
    counts = [R // X] * X
    counts[-1] += R - sum(counts)
    h_ND, gate_mlp_BD = block.moe_input(x_BTD, c_BD)
    _, score_NK = block.route(h_ND)
    out_NKD = torch.randn(wl.tokens, preset.top_k, D, device=device, dtype=dtype, generator=gen)
    shared_ND = block.shared_expert(h_ND)

    def gate_op() -> torch.Tensor:
        h2_ND, _ = block.moe_input(x_BTD, c_BD)
        idx_NK, _s = block.route(h2_ND)
        rows, ids_R = copies_to_rows(h2_ND, idx_NK)
        return rows[torch.argsort(ids_R, stable=True)]

    return {
        "attention": BlockOp(lambda: block.attention_half(x_BTD, c_BD), wl.attention_half(), wl.tokens),
        "gate": BlockOp(gate_op, wl.gate(), wl.tokens),
        "experts": BlockOp(lambda: block.experts.forward_grouped(rows_RD, counts), wl.expert_rows(R, X), R),
        "shared_expert": BlockOp(lambda: block.moe_output(x_BTD, shared_ND, block.shared_expert(h_ND), gate_mlp_BD),
                                 wl.shared_expert(), wl.tokens),
        "local_combine": BlockOp(lambda: combine_copies(out_NKD, score_NK), wl.local_combine(), wl.routed_rows),
    }
