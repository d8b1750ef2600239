"""SwiGLU experts, a bank of routed experts addressable by global id, and the weight
initialisation every module of :mod:`validate.model.model` uses.

Initialisation is keyed by name, not by construction order: each parameter draws from its
own ``torch.Generator`` seeded with a hash of ``(seed, public checkpoint name)``, e.g.
``blocks.3.moe.experts.5.up_proj.weight``. So a rank that builds only experts {1, 5} of a
layer gets bit-identical weights to the same experts of the full model, and the global
RNG is never touched (modules are built on the meta device, then filled).

Shape legend: R routed rows, D hidden, F SwiGLU hidden, E routed experts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dicesim.errors import ConfigError
from dicesim.models import ModelPreset

BIAS_STD = 0.02
LABEL_STD = 0.5  # large enough that the class (and so CFG) visibly changes the output


def param_seed(seed: int, name: str) -> int:
    """Stable 63-bit generator seed for parameter ``name`` (independent of process and order)."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@torch.no_grad()
def init_params(module: nn.Module, *, prefix: str, seed: int) -> None:
    """Fill every parameter of ``module`` (named ``prefix + name``) from its own generator.

    Matrices: Xavier-uniform over (out, in * kernel); the router: N(0, 1/D) so routing is
    decisive; biases: N(0, 0.02^2); the label table: N(0, 0.5^2).
    """
    for name, p_XY in module.named_parameters():
        full_name = prefix + name
        gen = torch.Generator().manual_seed(param_seed(seed, full_name))
        if full_name.endswith("bias"):
            p_XY.normal_(0.0, BIAS_STD, generator=gen)
        elif full_name.endswith("embedding_table.weight"):
            p_XY.normal_(0.0, LABEL_STD, generator=gen)
        elif full_name.endswith("moe.gate.weight"):
            p_XY.normal_(0.0, 1.0 / math.sqrt(p_XY.shape[1]), generator=gen)
        else:
            fan_out, fan_in = p_XY.shape[0], p_XY[0].numel()
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            p_XY.uniform_(-bound, bound, generator=gen)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases: one routed expert or the shared expert."""

    def __init__(self, hidden: int, ffn_hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, ffn_hidden, bias=False)
        self.up_proj = nn.Linear(hidden, ffn_hidden, bias=False)
        self.down_proj = nn.Linear(ffn_hidden, hidden, bias=False)

    def forward(self, x_RD: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x_RD)) * self.up_proj(x_RD))


def check_expert_ids(preset: ModelPreset, expert_ids: Iterable[int] | None) -> tuple[int, ...]:
    """Validated, sorted tuple of global expert ids (all experts for ``None``)."""
    if expert_ids is None:
        return tuple(range(preset.num_experts))
    ids = tuple(int(e) for e in expert_ids)
    if not ids or len(set(ids)) != len(ids) or not all(0 <= e < preset.num_experts for e in ids):
        raise ConfigError(
            "expert_ids", f"{ids} must be distinct ids of {preset.num_experts} experts", f"0..{preset.num_experts - 1}"
        )
    return tuple(sorted(ids))


class ExpertBank(nn.Module):
    """Routed experts of one layer that this process holds, indexed by global expert id.

    Child modules are named by global id, so the bank's state-dict keys are ``{e}.gate_proj.weight``
    and, inside a block, ``blocks.{layer}.moe.experts.{e}.gate_proj.weight``.
    """

    def __init__(self, preset: ModelPreset, expert_ids: Iterable[int] | None = None, *, layer: int, seed: int = 0):
        super().__init__()
        self.num_experts, self.layer = preset.num_experts, layer
        self.expert_ids = check_expert_ids(preset, expert_ids)
        with torch.device("meta"):
            for e in self.expert_ids:
                self.add_module(str(e), SwiGLU(preset.hidden, preset.expert_hidden))
        self.to_empty(device="cpu")
        init_params(self, prefix=f"blocks.{layer}.moe.experts.", seed=seed)

    def __getitem__(self, expert_id: int) -> SwiGLU:
        if expert_id not in self.expert_ids:
            raise LookupError(f"expert {expert_id} of layer {self.layer} is not in this bank {self.expert_ids}")
        return getattr(self, str(expert_id))

    def __contains__(self, expert_id: object) -> bool:
        return expert_id in self.expert_ids

    def __len__(self) -> int:
        return len(self.expert_ids)

    def forward_rows(self, rows_RD: torch.Tensor, expert_ids_R: torch.Tensor) -> torch.Tensor:
        """Run each row through the expert named by its global id; output rows keep input order.

        Rows are grouped per expert with a stable sort, so an expert sees its rows in their
        input order: identical inputs give bit-identical outputs whichever bank computes them.
        """
        out_RD = torch.empty_like(rows_RD)
        if rows_RD.shape[0] == 0:
            return out_RD
        order_R = torch.argsort(expert_ids_R, stable=True)
        counts_E = torch.bincount(expert_ids_R, minlength=self.num_experts).tolist()
        start = 0
        for e, n in enumerate(counts_E):
            if n:
                rows_idx = order_R[start : start + n]
                out_RD[rows_idx] = self[e](rows_RD[rows_idx])
                start += n
        return out_RD

    def forward_grouped(self, rows_RD: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """Rows already laid out in contiguous groups, ``counts[i]`` rows for ``expert_ids[i]``."""
        if len(counts) != len(self.expert_ids) or sum(counts) != rows_RD.shape[0]:
            raise ValueError(
                f"counts {list(counts)} must give one group per held expert {self.expert_ids} "
                f"and sum to {rows_RD.shape[0]} rows"
            )
        outs = [self[e](chunk_RD) for e, chunk_RD in zip(self.expert_ids, rows_RD.split(list(counts)))]
        return torch.cat(outs, dim=0) if outs else rows_RD.clone()
