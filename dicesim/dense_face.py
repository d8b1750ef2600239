"""ConsisID's identity modules on top of the CogVideoX-5B transformer: their shapes, parameters and work.

ConsisID (``ConsisIDTransformer3DModel``) is CogVideoX's transformer plus, when ``is_train_face``, a
local facial extractor run once per forward and a face cross-attention (``PerceiverCrossAttention``)
added to the video tokens after every ``cross_attn_interval``-th block (huggingface/diffusers@23b467c
src/diffusers/models/transformers/consisid_transformer_3d.py:183-228, 463-505, 586-624, 713-722,
773-778; the same code at 58eb52c, its forward on other lines; ``:N`` below are lines of this file
at 23b467c; xDiT's wrapper runs the same loop: xdit-project/xDiT@970d5ce
xfuser/model_executor/models/transformers/consisid_transformer_3d.py:61-65, 131-136). The
released transformer config (BestWishYsh/ConsisID-preview) is on Hugging Face, not in a
repository: the numbers here are the class's defaults, except ``is_train_face`` (default False, :490,
which builds neither module, :573), taken as True in the release: the pipeline passes the face embeddings
(src/diffusers/pipelines/consisid/pipeline_consisid.py:904-905) and the forward's comments state the
released shapes (``[1, 13, 32, 60, 90]`` in, ``[1, 17776, 3072]`` tokens, identity embedding ``[1, 32, 2048]``,
five ViT states ``[1, 577, 1024]``: consisid_transformer_3d.py:722, 737-743, 777).

Both are timed per forward like the blocks (:func:`face_cross_work`, :func:`extractor_work`): the
extractor's 53 GFLOP are negligible, its 250 eager kernels are not quite (host-bound, a few ms per
forward). The patch embedding's input channels (32 in the release: the image latent is concatenated,
``latent_channels = in_channels // 2``, xdit-project/xDiT@970d5ce
xfuser/model_executor/pipelines/pipeline_consisid.py:300, 354) add 16 x 2 x 2 x D weights to a layer
outside the blocks that no preset counts (the whole layer 0.8 MFLOP per video token once per forward,
the 16 added channels half of it): left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicesim.models import OpCost

@dataclass(frozen=True, kw_only=True)
class FaceCrossAttention:
    """ConsisID's identity cross-attention after blocks 0, interval, 2 interval, ... (defaults: the class's)."""

    interval: int = 2  # cross_attn_interval (:492): after block i when i % interval == 0 (:774)
    heads: int = 16  # cross_attn_num_heads (:494)
    head_dim: int = 128  # cross_attn_dim_head (:493)
    id_tokens: int = 32  # the extractor's queries, LFE_num_querie (:501): keys and values
    id_dim: int = 2048  # their width: cross_attn_kv_dim = int(inner_dim / 3 * 2) (:591), LFE_output_dim (:502)

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    def count(self, layers: int) -> int:
        """Face cross-attentions per forward: ``num_layers // cross_attn_interval`` modules (:588, 614-624)."""
        return layers // self.interval


@dataclass(frozen=True, kw_only=True)
class FacialExtractor:
    """``LocalFacialExtractor`` (:81-180) at the class defaults (:495-504); ``vit_tokens``: the EVA-CLIP
    states it reads, 577 per scale (the forward's comment, :722)."""

    id_dim: int = 1280
    vit_dim: int = 1024
    depth: int = 10
    ff_mult: int = 4
    num_id_token: int = 5
    queries: int = 32
    output_dim: int = 2048
    num_scale: int = 5
    vit_tokens: int = 577


@dataclass(frozen=True, kw_only=True)
class IdentityModules:
    """What ConsisID adds to each forward: the extractor once, the cross-attention every ``interval`` blocks."""

    cross: FaceCrossAttention = FaceCrossAttention()
    extractor: FacialExtractor = FacialExtractor()


def face_params(face: FaceCrossAttention, hidden: int, layers: int) -> int:
    """Parameters of the face cross-attentions: per module LayerNorms of the identity tokens and of the
    hidden states (weight and bias), ``to_q`` D -> inner, ``to_kv`` id_dim -> 2 inner, ``to_out`` inner -> D,
    no biases (:192-199)."""
    one = 2 * face.id_dim + 2 * hidden + hidden * face.inner + face.id_dim * 2 * face.inner + face.inner * hidden
    return face.count(layers) * one


def extractor_params(x: FacialExtractor) -> int:
    """Parameters of the local facial extractor (:95-153): per layer a ``PerceiverAttention`` (two
    LayerNorms, q V -> V, kv V -> 2V, out V -> V, no biases) and a feed-forward (LayerNorm, V -> mV -> V, no
    biases); five mappings (three V -> V linears with biases, two LayerNorms); the identity mapping
    (id -> V, V -> V, V -> n_id V with biases, two LayerNorms); the query latents and ``proj_out``."""
    V, m = x.vit_dim, x.ff_mult
    layer = (2 * 2 * V + 4 * V * V) + (2 * V + 2 * m * V * V)
    mapping = 3 * (V * V + V) + 2 * 2 * V
    id_map = (x.id_dim * V + V) + (V * V + V) + (V * x.num_id_token * V + x.num_id_token * V) + 2 * 2 * V
    return x.depth * layer + x.num_scale * mapping + id_map + x.queries * V + V * x.output_dim


def extractor_flops(x: FacialExtractor) -> float:
    """GEMM FLOPs of one extractor call (batch 1, as xDiT passes ``id_cond``): the five mappings over the
    ViT tokens, per layer q and the feed-forward over the queries and identity tokens, k/v over the
    identity tokens, the ViT tokens and the latents (``kv_input = cat(image_embeds, latents)``, :61),
    the attention and the output projection."""
    V, m = x.vit_dim, x.ff_mult
    lat = x.queries + x.num_id_token
    ctx = x.num_id_token + x.vit_tokens
    per_layer = 2 * lat * V * V + 2 * (ctx + lat) * V * 2 * V + 4 * lat * (ctx + lat) * V + 2 * lat * V * V \
        + 2 * 2 * lat * V * m * V
    mappings = x.num_scale * 3 * 2 * x.vit_tokens * V * V
    id_map = 2 * (x.id_dim * V + V * V + V * x.num_id_token * V)
    return float(x.depth * per_layer + mappings + id_map + 2 * x.queries * V * x.output_dim)


#: eager kernels of one face cross-attention (the forward, :201-228): LayerNorm of the identity tokens and
#: of the hidden states, ``to_q``, ``to_kv``, ``query * scale`` and ``key * scale``, the two matmuls, the
#: softmax's fp32 cast, softmax and cast back, the head-merging ``permute(...).reshape`` copy, ``to_out``,
#: ``local_face_scale *`` and the residual add (:775-777): 15. With a batch of two (classifier-free
#: guidance in one batch) ``torch.matmul`` copies its operands into 3-D batches it cannot view: the query
#: (its head-transposed layout does not merge batch and heads) and the batch-1 key and value broadcast to
#: the batch: 3 more (seen with torch.profiler, torch 2.13 on CPU in fp32, where the casts are no-ops: one
#: ``aten::clone`` at batch 1, the head-merging copy; four at batch 2, the extra three of shapes [2, 16, N, 128],
#: [2, 16, 128, 32], [2, 16, 32, 128] from matmul's reshape, which does not depend on the device. That CUDA's
#: bmm takes the strided batch-1 query without a copy, as cuBLAS' strided batched GEMM can, is an assumption.)
EAGER_FACE_KERNELS = 15
EAGER_FACE_BATCH_COPIES = 3
#: with torch.compile (an assumption, as for the blocks): 5 GEMMs (q, kv, two matmuls, out), the two
#: LayerNorms, the scaled query, the softmax chain, the head-merging copy and scale + residual fused: 11
COMPILED_FACE_KERNELS = 11


def face_cross_work(face: FaceCrossAttention, hidden: int, *, video_tokens: float, batch: int, tp: int,
                    compiled: bool, dtype_nbytes: int = 2) -> tuple[tuple[OpCost, ...], OpCost, int]:
    """(GEMM kernels, elementwise passes, kernel count) of one face cross-attention on one rank.

    ``video_tokens``: the rank's video tokens over its whole batch (the text tokens are not in
    ``hidden_states`` here, :742-743; sequence parallelism leaves each rank its shard, and the identity
    tokens are whole on every rank, so there is no exchange); ``batch``: samples in the forward.
    ``to_kv`` runs on the 32 identity tokens of batch 1 (xDiT passes one ``id_cond``: its weights' read).
    The matmuls are batched GEMMs, memory-bound at 32 keys: counted by their bytes and FLOPs, not as a
    fused attention kernel. Elementwise, per video token in elements read + written (bf16 = 1, fp32 = 2):
    LayerNorm 2 D, ``local_face_scale *`` 2 D, residual 3 D (each rank over the whole width); over the
    heads' width (tensor parallelism splits it) ``query * scale`` 2 inner, the head-merging copy 2 inner,
    the batch > 1 query copy 2 inner, and over the scores (heads x id_tokens) fp32 cast 3, softmax 4, cast
    back 3. Compiled: LayerNorm 2 D, scale + residual 3 D, query scale and head copy 2 + 2 inner, softmax
    chain 2 (an assumption).
    """
    D, w, n = hidden, dtype_nbytes, video_tokens
    inner, scores = face.inner / tp, face.heads * face.id_tokens / tp

    hd = face.head_dim
    ops = (OpCost.linear(n, D, inner, w),  # to_q
           OpCost.linear(face.id_tokens, face.id_dim, 2 * inner, w),  # to_kv, batch 1
           # q k^T: n x head_dim by head_dim x id_tokens per head; the keys are negligible bytes
           OpCost(flops=2.0 * n * scores * hd, nbytes=float(w * (n * inner + n * scores))),
           # weights @ v
           OpCost(flops=2.0 * n * scores * hd, nbytes=float(w * (n * scores + n * inner))),
           OpCost.linear(n, inner, D, w))  # to_out
    if compiled:
        wide, head_w, score_w = 2 + 3, 2 + 2, 2
        kernels = COMPILED_FACE_KERNELS
    else:
        copies = batch > 1
        wide, head_w, score_w = 2 + 2 + 3, 2 + 2 + (2 if copies else 0), 3 + 4 + 3
        kernels = EAGER_FACE_KERNELS + (EAGER_FACE_BATCH_COPIES if copies else 0)
    elem = OpCost(flops=0.0, nbytes=float(w * n * (wide * D + head_w * inner + score_w * scores)))
    return ops, elem, kernels


#: eager kernels of one extractor call (:155-180, 52-78): the query latents' ``repeat`` 1; the identity
#: mapping 7 (three linears, two LayerNorms, two LeakyReLUs) and its ``cat`` with the latents 1; per scale
#: its mapping 7 and the ``cat`` with the identity tokens 1 (x 5); per layer the attention 14 (two
#: LayerNorms, ``to_q``, the ``cat`` of context and latents, ``to_kv``, two scalings, two matmuls, fp32
#: cast, softmax, cast back, head-merging copy, ``to_out``) and its residual 1, the feed-forward 4
#: (LayerNorm, linear, GELU, linear) and its residual 1 (x 10); ``proj_out`` 1. torch.profiler (torch 2.13,
#: CPU, fp32) counts the same 230 ops without the 20 fp32 casts, plus CPU-only copies (addmm's bias, repeat's
#: internals); that CUDA's addmm adds the bias without a copy is an assumption
def extractor_kernels(x: FacialExtractor) -> int:
    return 1 + 7 + 1 + x.num_scale * (7 + 1) + x.depth * (14 + 1 + 4 + 1) + 1


def extractor_work(x: FacialExtractor, dtype_nbytes: int = 2) -> tuple[OpCost, int]:
    """(work, kernels) of one extractor call on one rank: every rank runs it whole (it is not split by
    sequence or CFG parallelism: xDiT's wrapper calls it before the blocks, :61-65 at 970d5ce). Its GEMMs
    are small (37 query rows; 577 ViT rows for the mappings): the work is its FLOPs and the read of its
    weights (activations are a few MB, left out), as one roofline. The eager kernel count is used for
    compiled runs too (none of the ConsisID figures is compiled)."""
    return (OpCost(flops=extractor_flops(x), nbytes=float(dtype_nbytes * extractor_params(x))),
            extractor_kernels(x))
