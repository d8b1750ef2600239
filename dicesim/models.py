"""DiT-MoE model presets and the per-op cost formulas both halves count with.

Presets follow the public DiT-MoE code (feizc/DiT-MoE ``models.py``): routed experts are
SwiGLU MLPs with hidden ``mlp_ratio * D`` (4x), the shared expert is one SwiGLU with hidden
``n_shared * D`` (2x), softmax top-2 gate without renormalisation, adaLN-Zero blocks,
``learn_sigma`` doubles the output channels. Depth/width/heads of S, B, XL follow DiT
(Peebles & Xie 2023, Table 1); G/2 (40 x 1408, 16 heads, 16 experts) follows DiT-MoE's
README. Shapes: ``D`` hidden, ``H`` expert hidden, ``E`` experts, ``n`` tokens per image.

``digits`` is the model ``python -m validate train-small`` trains on scikit-learn's 8x8
handwritten digits (docs/quality.md): pixels are the latent (1 channel, no VAE, so
``latent_downsample`` 1 and 8 px images), expert hidden 2x instead of 4x so the committed
checkpoint stays under 5 MB, and no learned sigma (rectified flow predicts only velocity).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dicesim.errors import ConfigError

#: bytes per element of the activation / weight dtype names we accept
DTYPE_NBYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True, kw_only=True)
class ModelPreset:
    """Architecture of one DiT-MoE variant (immutable)."""

    name: str
    depth: int
    hidden: int
    heads: int
    num_experts: int
    top_k: int = 2
    expert_mult: int = 4  # routed expert SwiGLU hidden = expert_mult * hidden
    shared_mult: int = 2  # shared expert SwiGLU hidden = shared_mult * hidden
    patch: int = 2
    latent_channels: int = 4
    latent_downsample: int = 8  # latent is 1/8 of the image side (SD VAE)
    num_classes: int = 1000
    learn_sigma: bool = True

    @property
    def expert_hidden(self) -> int:
        return self.expert_mult * self.hidden

    @property
    def shared_hidden(self) -> int:
        return self.shared_mult * self.hidden

    @property
    def out_channels(self) -> int:
        return self.latent_channels * (2 if self.learn_sigma else 1)

    def with_experts(self, num_experts: int) -> "ModelPreset":
        """Same model with another routed-expert count (a what-if, e.g. XL/2 with 64 experts)."""
        if num_experts < self.top_k:
            raise ConfigError("model.num_experts", f"{num_experts} is below top_k={self.top_k}", f">= {self.top_k}")
        return replace(self, num_experts=num_experts, name=f"{self.name.split('@')[0]}@{num_experts}E")

    def latent_side(self, image_px: int) -> int:
        if image_px % (self.latent_downsample * self.patch):
            raise ConfigError(
                "image_size", f"{image_px} px is not a multiple of {self.latent_downsample * self.patch}",
                f"multiples of {self.latent_downsample * self.patch}",
            )
        return image_px // self.latent_downsample

    def tokens_per_image(self, image_px: int) -> int:
        return (self.latent_side(image_px) // self.patch) ** 2


def _presets() -> dict[str, ModelPreset]:
    return {
        "tiny": ModelPreset(name="tiny", depth=4, hidden=32, heads=2, num_experts=4, num_classes=10),
        "small": ModelPreset(name="small", depth=6, hidden=64, heads=4, num_experts=8, num_classes=10),
        "digits": ModelPreset(name="digits", depth=6, hidden=48, heads=4, num_experts=8, expert_mult=2,
                              latent_channels=1, latent_downsample=1, num_classes=10, learn_sigma=False),
        "S/2": ModelPreset(name="S/2", depth=12, hidden=384, heads=6, num_experts=8),
        "B/2": ModelPreset(name="B/2", depth=12, hidden=768, heads=12, num_experts=8),
        "XL/2": ModelPreset(name="XL/2", depth=28, hidden=1152, heads=16, num_experts=8),
        "G/2": ModelPreset(name="G/2", depth=40, hidden=1408, heads=16, num_experts=16),
    }


MODEL_NAMES: tuple[str, ...] = tuple(_presets())


def get_model(name: str, num_experts: int | None = None) -> ModelPreset:
    """Look up a preset by name (``XL/2``, ``G/2``, ...), optionally with another expert count."""
    presets = _presets()
    if name not in presets:
        raise ConfigError("model", f"unknown model {name!r}", MODEL_NAMES)
    preset = presets[name]
    return preset if num_experts in (None, preset.num_experts) else preset.with_experts(num_experts)


@dataclass(frozen=True, kw_only=True)
class OpCost:
    """Work of one op: floating-point operations and bytes moved through device memory."""

    flops: float
    nbytes: float

    def __add__(self, other: "OpCost") -> "OpCost":
        return OpCost(flops=self.flops + other.flops, nbytes=self.nbytes + other.nbytes)

    def scaled(self, k: float) -> "OpCost":
        return OpCost(flops=self.flops * k, nbytes=self.nbytes * k)

    @classmethod
    def linear(cls, tokens: float, d_in: float, d_out: float, dtype_nbytes: int, tp: int = 1) -> "OpCost":
        """``tokens x d_in @ d_in x d_out``, its output columns split over ``tp`` ranks: the GEMM's FLOPs,
        its weights and its input and output activations."""
        return cls(flops=2.0 * tokens * d_in * d_out / tp,
                   nbytes=float(dtype_nbytes * (d_in * d_out / tp + tokens * d_in + tokens * d_out / tp)))


@dataclass(frozen=True, kw_only=True)
class BlockWorkload:
    """Per-rank work of one DiT-MoE block at one step.

    ``images`` counts what travels through the network: with CFG the conditional and
    unconditional halves travel as one batch, so it is twice the per-rank batch.
    ``token_split``: ranks that share each image's tokens (sequence parallelism: every rank
    holds a slice of ``tokens_per_image`` tokens of every image, and attention's queries see the
    ``tokens_per_image * token_split`` keys of the whole image); 1 when each rank holds whole images.
    """

    model: ModelPreset
    images: int
    tokens_per_image: int
    dtype_nbytes: int = 2
    token_split: int = 1
    #: USP: ranks of one Ulysses group among the ``token_split`` (its ring blocks hold ``head_split`` slices'
    #: tokens with ``1 / head_split`` of the heads); 1 otherwise
    head_split: int = 1

    @property
    def tokens(self) -> int:
        return self.images * self.tokens_per_image

    @property
    def routed_rows(self) -> int:
        """Token-expert copies leaving this rank in a full dispatch (tokens x top_k)."""
        return self.tokens * self.model.top_k

    # --- compute ops -------------------------------------------------------------------
    def attention_half(self) -> OpCost:
        """adaLN (6D outputs, shared by both halves), LN, QKV, attention, out proj, gated residual."""
        b, n, D, w = self.images, self.tokens_per_image, self.model.hidden, self.dtype_nbytes
        N = b * n
        flops = (
            2 * b * D * 6 * D  # adaLN modulation linear (per image)
            + 2 * N * D * 3 * D  # QKV
            + 2 * 2 * b * n * n * D  # QK^T and AV
            + 2 * N * D * D  # output projection
            + 12 * N * D  # LayerNorm, modulate, gated residual (elementwise)
        )
        weights = (6 * D * D + 3 * D * D + D * D) * w
        # x in, qkv out, attn out, proj out, residual read+write; fused attention keeps scores on chip
        acts = N * D * w * (1 + 3 + 1 + 1 + 2)
        return OpCost(flops=float(flops), nbytes=float(weights + acts))

    def attention_qkv(self) -> OpCost:
        """The attention half up to the keys and values a sequence-parallel rank gathers: adaLN,
        LayerNorm + modulate, QKV projection of the local tokens."""
        b, D, w, N = self.images, self.model.hidden, self.dtype_nbytes, self.tokens
        flops = 2 * b * D * 6 * D + 2 * N * D * 3 * D + 4 * N * D
        nbytes = (6 * D * D + 3 * D * D) * w + N * D * w * (1 + 3)
        return OpCost(flops=float(flops), nbytes=float(nbytes))

    def attention_core(self) -> OpCost:
        """The rest of the attention half: the local queries against every key of their images
        (QK^T and AV), output projection, gated residual; reads the gathered keys and values."""
        b, n, D, w, N = self.images, self.tokens_per_image, self.model.hidden, self.dtype_nbytes, self.tokens
        n_kv = n * self.token_split
        flops = 2 * 2 * b * n * n_kv * D + 2 * N * D * D + 8 * N * D
        nbytes = D * D * w + N * D * w * (1 + 1 + 2) + 2 * b * n_kv * D * w
        return OpCost(flops=float(flops), nbytes=float(nbytes))

    def attention_heads(self) -> OpCost:
        """Ulysses' attention core: every token of each image (``tokens_per_image * token_split``) with
        ``1 / token_split`` of the heads (QK^T and AV; the FLOPs of :meth:`attention_core`'s core, the
        same work split by heads instead of by queries). Reads Q, K and V and writes the output, each
        the size of this rank's token slice with every head."""
        b, n, D, w, N = self.images, self.tokens_per_image, self.model.hidden, self.dtype_nbytes, self.tokens
        n_all = n * self.token_split
        flops = 2 * 2 * b * n_all * n_all * D // self.token_split
        nbytes = N * D * w * (3 + 1)
        return OpCost(flops=float(flops), nbytes=float(nbytes))

    def attention_out(self) -> OpCost:
        """The output projection and gated residual of this rank's tokens (after Ulysses brings the attention
        output back to its token slice): the rest of :meth:`attention_core` (assumption on the bytes: the
        weight, the output, the residual read and written)."""
        D, w, N = self.model.hidden, self.dtype_nbytes, self.tokens
        flops = 2 * N * D * D + 8 * N * D
        nbytes = D * D * w + N * D * w * 3
        return OpCost(flops=float(flops), nbytes=float(nbytes))

    def attention_block(self) -> OpCost:
        """Ring attention's core on one K/V block: this rank's queries against one rank's slice of keys and
        values (QK^T and AV; ``1 / token_split`` of :meth:`attention_core`'s core FLOPs, so the W blocks of a
        layer do sp's work). Reads Q and the K/V block and writes the block's output. Under USP a block is
        ``head_split`` slices' tokens with ``1 / head_split`` of the heads: ``head_split`` x the FLOPs, the same
        bytes, and the ``token_split / head_split`` blocks of a layer again do sp's work."""
        b, n, D, w, N = self.images, self.tokens_per_image, self.model.hidden, self.dtype_nbytes, self.tokens
        flops = 2 * 2 * b * n * n * D * self.head_split
        nbytes = N * D * w * (1 + 2 + 1)
        return OpCost(flops=float(flops), nbytes=float(nbytes))

    def ring_merge(self) -> OpCost:
        """One block's output merged into the float32 running output with the log-sum-exp rule, elementwise
        over this rank's attention output (zhuzilin/ring-flash-attention@8996282 ring_flash_attn/utils.py:40-48:
        the block output cast to float32, ``out - block_out``, times the sigmoid of the lse difference, ``out -``
        that; the lse terms are per row and head, 1/head_dim of this, left out): 3 FLOPs and ``w + 36`` bytes
        per element (read w, write 4; read 8, write 4; read 4, write 4; read 8, write 4), the count of
        :data:`dicesim.sim.sp_plumbing.RING_MERGE_PASSES` for bf16. Every block of a layer is counted so, the
        first too (there only a cast, ``w + 4`` bytes: an upper figure)."""
        D, w, N = self.model.hidden, self.dtype_nbytes, self.tokens
        return OpCost(flops=float(3 * N * D), nbytes=float(N * D * (w + 36)))

    def gate(self) -> OpCost:
        """LN + modulation + router logits, softmax, top-k and local permutation of copies."""
        D, E, N, w = self.model.hidden, self.model.num_experts, self.tokens, self.dtype_nbytes
        flops = 2 * N * D * E + 8 * N * D + 5 * N * E
        nbytes = (D * E) * w + N * D * w * 2 + N * E * 4 + self.routed_rows * D * w * 2
        return OpCost(flops=float(flops), nbytes=float(nbytes))

    def expert_rows(self, rows: int, experts_on_rank: int) -> OpCost:
        """SwiGLU routed experts on ``rows`` received rows spread over the rank's experts."""
        D, H, w = self.model.hidden, self.model.expert_hidden, self.dtype_nbytes
        flops = 2 * rows * D * H * 3 + 4 * rows * H
        weights = experts_on_rank * 3 * D * H * w if rows else 0
        acts = rows * (D * 2 + H * 3) * w
        return OpCost(flops=float(flops), nbytes=float(weights + acts))

    def local_combine(self) -> OpCost:
        """Un-permute returned copies, weight by router score, sum the k copies."""
        D, w = self.model.hidden, self.dtype_nbytes
        return OpCost(flops=float(2 * self.routed_rows * D), nbytes=float((self.routed_rows + self.tokens) * D * w))

    def shared_expert(self) -> OpCost:
        """SwiGLU shared expert on every local token plus the gated residual."""
        D, S, N, w = self.model.hidden, self.model.shared_hidden, self.tokens, self.dtype_nbytes
        flops = 2 * N * D * S * 3 + 4 * N * S + 3 * N * D
        nbytes = 3 * D * S * w + N * (D * 3 + S * 3) * w
        return OpCost(flops=float(flops), nbytes=float(nbytes))

    # --- communication -----------------------------------------------------------------
    def row_nbytes(self) -> int:
        """All-to-all payload of one routed row (one token copy) in either direction."""
        return self.model.hidden * self.dtype_nbytes


def block_workload(model: ModelPreset, *, batch: int, image_px: int, cfg: bool = True, dtype: str = "bf16") -> BlockWorkload:
    """Workload of one block for ``batch`` images per rank at ``image_px`` pixels."""
    if dtype not in DTYPE_NBYTES:
        raise ConfigError("dtype", f"unknown dtype {dtype!r}", DTYPE_NBYTES)
    if batch < 1:
        raise ConfigError("batch", f"must be a positive integer, got {batch}", ">= 1")
    return BlockWorkload(
        model=model,
        images=batch * (2 if cfg else 1),
        tokens_per_image=model.tokens_per_image(image_px),
        dtype_nbytes=DTYPE_NBYTES[dtype],
    )
