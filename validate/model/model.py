"""DiT-MoE in torch, single process, with every block split into the pieces an
expert-parallel executor calls one at a time.

The module tree reproduces the public DiT-MoE checkpoint layout (``blocks.{i}.attn.qkv``,
``blocks.{i}.moe.experts.{e}.gate_proj`` ...), so ``state_dict()`` *is* that layout. Sizes
come from :class:`dicesim.models.ModelPreset`; nothing is redefined here.

Deviations from the public code, all deliberate:
- router softmax runs in float32 (bf16 scores tie too often to tell copy 0 from copy 1);
- the K copies of a token are re-ordered so copy 0 carries the higher score;
- weights are random everywhere (no adaLN-Zero zeros), so an untrained model already
  produces non-trivial, routing-sensitive outputs; see :mod:`validate.model.experts`.

Shape legend: B images in the batch (CFG halves included), C latent channels,
O output channels, L latent side, P patch side, T tokens per image = (L/P)^2,
D hidden, N = B*T token rows, K copies per token (top_k), E routed experts,
R routed rows (token copies), Q = P*P*O values per output token.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dicesim.errors import ConfigError
from dicesim.models import ModelPreset
from validate.model.experts import ExpertBank, SwiGLU, init_params

LN_EPS = 1e-6
FREQ_DIM = 256  # width of the sinusoidal timestep features fed to the timestep MLP


def modulate(x_BTD: torch.Tensor, shift_BD: torch.Tensor, scale_BD: torch.Tensor) -> torch.Tensor:
    """adaLN: scale and shift every token of an image by that image's conditioning."""
    return x_BTD * (1 + scale_BD.unsqueeze(1)) + shift_BD.unsqueeze(1)


def layer_norm(x_BTD: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine parameters (adaLN supplies scale and shift)."""
    return F.layer_norm(x_BTD, x_BTD.shape[-1:], eps=LN_EPS)


def sincos_pos_embed_2d(dim: int, side: int) -> torch.Tensor:
    """Fixed 2D sin-cos position table pos_TD, token t = row * side + col.

    The first half of the channels encodes the column, the second half the row; each half
    is [sin | cos] over frequencies 10000^(-i / (dim/4)), as in MAE/DiT.
    """
    quarter = dim // 4
    omega_F = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(side, dtype=torch.float64)
    row_SS, col_SS = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos_SS: torch.Tensor) -> torch.Tensor:
        angle_TF = pos_SS.reshape(-1, 1) * omega_F.reshape(1, -1)
        return torch.cat([torch.sin(angle_TF), torch.cos(angle_TF)], dim=1)

    return torch.cat([encode(col_SS), encode(row_SS)], dim=1).float()


def timestep_features(t_B: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [cos | sin] of (possibly fractional) timesteps, shape B x dim."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t_B.device) / half)
    args_BF = t_B.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args_BF), torch.sin(args_BF)], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches -> tokens (a strided Conv2d)."""

    def __init__(self, preset: ModelPreset):
        super().__init__()
        self.proj = nn.Conv2d(preset.latent_channels, preset.hidden, kernel_size=preset.patch, stride=preset.patch)

    def forward(self, x_BCLL: torch.Tensor) -> torch.Tensor:
        return self.proj(x_BCLL).flatten(2).transpose(1, 2)  # B x T x D


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t_B: torch.Tensor) -> torch.Tensor:
        feats_BF = timestep_features(t_B).to(self.mlp[0].weight.dtype)
        return self.mlp(feats_BF)


class LabelEmbedder(nn.Module):
    """Class embeddings with one extra row, the null class (id = num_classes), for CFG."""

    def __init__(self, num_classes: int, hidden: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, y_B: torch.Tensor, *, drop_generator: torch.Generator | None = None) -> torch.Tensor:
        """Embed labels; with a generator (training), replace each by the null class w.p. dropout_prob."""
        if drop_generator is not None and self.dropout_prob > 0:
            drop_B = torch.rand(y_B.shape[0], generator=drop_generator).to(y_B.device) < self.dropout_prob
            y_B = torch.where(drop_B, torch.full_like(y_B, self.num_classes), y_B)
        return self.embedding_table(y_B)


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv (with bias), SDPA, output projection."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        qkv_3BHTd = self.qkv(x_BTD).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q_BHTd, k_BHTd, v_BHTd = qkv_3BHTd.unbind(0)
        o_BHTd = F.scaled_dot_product_attention(q_BHTd, k_BHTd, v_BHTd)
        return self.proj(o_BHTd.transpose(1, 2).reshape(B, T, D))


class Router(nn.Module):
    """Softmax gate over E experts, top-k without renormalisation."""

    def __init__(self, preset: ModelPreset):
        super().__init__()
        self.top_k = preset.top_k
        self.weight = nn.Parameter(torch.empty(preset.num_experts, preset.hidden))

    def probs(self, h_ND: torch.Tensor) -> torch.Tensor:
        """Router probabilities over all E experts (float32); training's balance loss needs them all."""
        return F.linear(h_ND, self.weight).float().softmax(dim=-1)

    def forward(self, h_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return top_k_copies(self.probs(h_ND), self.top_k)


def top_k_copies(scores_NE: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k expert ids and scores per token, copy 0 = the higher score (see sort_copies)."""
    score_NK, idx_NK = torch.topk(scores_NE, k=top_k, dim=-1, sorted=False)
    return sort_copies(idx_NK, score_NK)


def sort_copies(idx_NK: torch.Tensor, score_NK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-order each token's K copies by descending score (ties: lower expert id first).

    ``topk(sorted=False)`` promises no order, and conditional communication must know which
    copy is the lower-scored one, so the order is made explicit here.
    """
    by_id_NK = torch.argsort(idx_NK, dim=-1, stable=True)
    idx_NK, score_NK = idx_NK.gather(1, by_id_NK), score_NK.gather(1, by_id_NK)
    by_score_NK = torch.argsort(score_NK, dim=-1, descending=True, stable=True)
    return idx_NK.gather(1, by_score_NK), score_NK.gather(1, by_score_NK)


def copies_to_rows(h_ND: torch.Tensor, idx_NK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten token copies into routed rows: row r is copy r % K of token r // K."""
    K = idx_NK.shape[1]
    return h_ND.repeat_interleave(K, dim=0), idx_NK.reshape(-1)


def combine_copies(out_NKD: torch.Tensor, score_NK: torch.Tensor) -> torch.Tensor:
    """Weight each copy's expert output by its router score and sum the K copies (copy order)."""
    return (out_NKD * score_NK.unsqueeze(-1).to(out_NKD.dtype)).sum(dim=1)


class SparseMoE(nn.Module):
    """Container that fixes the checkpoint names: gate, experts.{e}, shared_experts."""

    def __init__(self, preset: ModelPreset):
        super().__init__()
        self.gate = Router(preset)
        self.shared_experts = SwiGLU(preset.hidden, preset.shared_hidden)


class Modulation(NamedTuple):
    """The six adaLN outputs of one block, each B x D."""

    shift_msa: torch.Tensor
    scale_msa: torch.Tensor
    gate_msa: torch.Tensor
    shift_mlp: torch.Tensor
    scale_mlp: torch.Tensor
    gate_mlp: torch.Tensor


class DiTMoEBlock(nn.Module):
    """One adaLN-Zero block: attention half, then MoE half (routed top-k + shared expert).

    ``expert_ids`` picks which routed experts this instance holds (all by default); their
    weights do not depend on that choice (see :class:`validate.model.experts.ExpertBank`).
    """

    def __init__(self, preset: ModelPreset, layer: int, *, seed: int = 0, expert_ids: tuple[int, ...] | None = None):
        super().__init__()
        self.preset, self.layer = preset, layer
        with torch.device("meta"):
            self.attn = Attention(preset.hidden, preset.heads)
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(preset.hidden, 6 * preset.hidden))
            self.moe = SparseMoE(preset)
        self.to_empty(device="cpu")
        init_params(self, prefix=f"blocks.{layer}.", seed=seed)
        self.moe.experts = ExpertBank(preset, expert_ids, layer=layer, seed=seed)

    @property
    def experts(self) -> ExpertBank:
        return self.moe.experts

    def modulation(self, c_BD: torch.Tensor) -> Modulation:
        return Modulation(*self.adaLN_modulation(c_BD).chunk(6, dim=1))

    def attention_half(self, x_BTD: torch.Tensor, c_BD: torch.Tensor, *, mod: Modulation | None = None) -> torch.Tensor:
        """x + gate_msa * attn(modulate(LN(x))); pass ``mod`` to reuse this step's adaLN output."""
        m = self.modulation(c_BD) if mod is None else mod
        return x_BTD + m.gate_msa.unsqueeze(1) * self.attn(modulate(layer_norm(x_BTD), m.shift_msa, m.scale_msa))

    def moe_input(
        self, x_BTD: torch.Tensor, c_BD: torch.Tensor, *, mod: Modulation | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert input h_ND = modulate(LN(x)) flattened to token rows, and gate_mlp_BD for moe_output."""
        m = self.modulation(c_BD) if mod is None else mod
        h_BTD = modulate(layer_norm(x_BTD), m.shift_mlp, m.scale_mlp)
        return h_BTD.reshape(-1, h_BTD.shape[-1]), m.gate_mlp

    def route(self, h_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k expert ids (int64) and float32 scores per token, copy 0 = higher score."""
        return self.moe.gate(h_ND)

    def shared_expert(self, h_ND: torch.Tensor) -> torch.Tensor:
        return self.moe.shared_experts(h_ND)

    def routed_experts(self, h_ND: torch.Tensor, idx_NK: torch.Tensor, score_NK: torch.Tensor) -> torch.Tensor:
        """Single-process routed part: every copy through this block's own experts, then combine."""
        rows_RD, ids_R = copies_to_rows(h_ND, idx_NK)
        out_RD = self.experts.forward_rows(rows_RD, ids_R)
        return combine_copies(out_RD.view(*idx_NK.shape, -1), score_NK)

    def moe_output(
        self, x_BTD: torch.Tensor, routed_ND: torch.Tensor, shared_ND: torch.Tensor, gate_mlp_BD: torch.Tensor
    ) -> torch.Tensor:
        """Gated residual x + gate_mlp * (routed + shared)."""
        y_BTD = (routed_ND + shared_ND).view_as(x_BTD)
        return x_BTD + gate_mlp_BD.unsqueeze(1) * y_BTD

    def forward(self, x_BTD: torch.Tensor, c_BD: torch.Tensor) -> torch.Tensor:
        """Reference forward: all experts local, no communication."""
        mod = self.modulation(c_BD)
        x_BTD = self.attention_half(x_BTD, c_BD, mod=mod)
        h_ND, gate_mlp_BD = self.moe_input(x_BTD, c_BD, mod=mod)
        idx_NK, score_NK = self.route(h_ND)
        routed_ND = self.routed_experts(h_ND, idx_NK, score_NK)
        return self.moe_output(x_BTD, routed_ND, self.shared_expert(h_ND), gate_mlp_BD)


class FinalLayer(nn.Module):
    def __init__(self, preset: ModelPreset):
        super().__init__()
        self.linear = nn.Linear(preset.hidden, preset.patch * preset.patch * preset.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(preset.hidden, 2 * preset.hidden))

    def forward(self, x_BTD: torch.Tensor, c_BD: torch.Tensor) -> torch.Tensor:
        shift_BD, scale_BD = self.adaLN_modulation(c_BD).chunk(2, dim=1)
        return self.linear(modulate(layer_norm(x_BTD), shift_BD, scale_BD))  # B x T x Q


class DiTMoE(nn.Module):
    """Whole DiT-MoE: embed -> blocks -> head. ``expert_ids`` limits every block's experts."""

    def __init__(
        self,
        preset: ModelPreset,
        *,
        latent_side: int = 32,
        seed: int = 0,
        expert_ids: tuple[int, ...] | None = None,
        label_dropout_prob: float = 0.1,
    ):
        super().__init__()
        _check_shape_params(preset, latent_side, label_dropout_prob)
        self.preset, self.latent_side, self.seed = preset, latent_side, seed
        self.tokens_per_image = (latent_side // preset.patch) ** 2
        with torch.device("meta"):
            self.x_embedder = PatchEmbed(preset)
            self.t_embedder = TimestepEmbedder(preset.hidden)
            self.y_embedder = LabelEmbedder(preset.num_classes, preset.hidden, label_dropout_prob)
            self.final_layer = FinalLayer(preset)
        self.to_empty(device="cpu")
        init_params(self, prefix="", seed=seed)
        pos_TD = sincos_pos_embed_2d(preset.hidden, latent_side // preset.patch)
        self.register_buffer("pos_embed", pos_TD.unsqueeze(0))  # 1 x T x D, saved as in the public layout
        self.blocks = nn.ModuleList(
            DiTMoEBlock(preset, layer, seed=seed, expert_ids=expert_ids) for layer in range(preset.depth)
        )

    @classmethod
    def for_image(cls, preset: ModelPreset, image_px: int, **kwargs: object) -> "DiTMoE":
        """Model sized for ``image_px`` images (latent side = image_px / latent_downsample)."""
        return cls(preset, latent_side=preset.latent_side(image_px), **kwargs)

    @property
    def null_class(self) -> int:
        return self.preset.num_classes

    def embed(
        self, x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor, *, drop_generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens x_BTD (patches + positions) and conditioning c_BD (timestep + class)."""
        x_BTD = self.x_embedder(x_BCLL) + self.pos_embed.to(x_BCLL.dtype)
        c_BD = self.t_embedder(t_B) + self.y_embedder(y_B, drop_generator=drop_generator)
        return x_BTD, c_BD

    def head(self, x_BTD: torch.Tensor, c_BD: torch.Tensor) -> torch.Tensor:
        """Final adaLN layer and unpatchify: B x T x D -> B x O x L x L."""
        return self.unpatchify(self.final_layer(x_BTD, c_BD))

    def unpatchify(self, x_BTQ: torch.Tensor) -> torch.Tensor:
        P, O = self.preset.patch, self.preset.out_channels
        B, side = x_BTQ.shape[0], self.latent_side // P
        x_BhwPPO = x_BTQ.reshape(B, side, side, P, P, O)
        return torch.einsum("bhwpqo->bohpwq", x_BhwPPO).reshape(B, O, side * P, side * P)

    def forward(self, x_BCLL: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
        """Reference single-process forward; output B x O x L x L (velocity first, then sigma)."""
        x_BTD, c_BD = self.embed(x_BCLL, t_B, y_B)
        for block in self.blocks:
            x_BTD = block(x_BTD, c_BD)
        return self.head(x_BTD, c_BD)


def _check_shape_params(preset: ModelPreset, latent_side: int, label_dropout_prob: float) -> None:
    if latent_side < preset.patch or latent_side % preset.patch:
        raise ConfigError("latent_side", f"{latent_side} is not a positive multiple of patch {preset.patch}")
    if preset.hidden % preset.heads or preset.hidden % 4:
        raise ConfigError("model.hidden", f"{preset.hidden} must be divisible by heads={preset.heads} and by 4")
    if not 0.0 <= label_dropout_prob < 1.0:
        raise ConfigError("label_dropout_prob", f"{label_dropout_prob} is outside [0, 1)", "[0, 1)")
