"""Work a sequence-parallel attention adds on each rank beyond the collectives: layout copies and merges.

The collectives themselves are timed by the flow network (:mod:`dicesim.sim.dense`). Around them the
frameworks behind the published step figures run memory-bound ops and extra kernels that a one-GPU
block does not have; they are counted here from the code those frameworks ran, per block, in the units
:func:`dicesim.dense_models.block_work` uses (bf16 elements read or written; an fp32 element counts 2).

**Ulysses**, per all-to-all call (q, k, v in, the output back: 4 calls a block). yunchang's
``all_to_all_4D`` (feifeibear/long-context-attention@28f8c97 yunchang/comm/all_to_all.py:45-49, 62-65
and 78-84, 97-100), which xDiT's ``xFuserLongContextAttention`` calls (xdit-project/xDiT@970d5ce
xfuser/core/long_ctx_attention/hybrid/attn_layer.py:146-186), makes the rank's tensor contiguous in the
scattered layout before ``all_to_all_single`` and copies the received tensor back to (batch, sequence,
heads, head dim) after it; xDiT's torch >= 2.5 path (xfuser/model_executor/layers/usp.py:50-77 @970d5ce)
does the same (``permute(...).contiguous()`` before, a reshape of a permuted view after). Each copy
reads and writes the whole local tensor: 4 element passes and 3 kernels (copy, collective, copy) a call.
ParaAttention does the same (chengzeyi/ParaAttention@cf7ec43 src/para_attn/para_attn_interface.py:34-60) and
runs its ring through torch's ``_templated_ring_attention`` (:11, 113-115), whose merge is counted below;
cache-dit's runs (diffusers' context parallel) are taken to run the same ops (an assumption).

**Ring attention**, per block of r passes: every pass but the first merges its partial output into a
running fp32 output with the log-sum-exp rule. yunchang's ``update_out_and_lse``
(yunchang/ring/utils.py:9-50 @28f8c97), called once per pass by xDiT's ring loop
(xfuser/core/long_ctx_attention/ring/ring_flash_attn.py:61-117 @970d5ce), and torch's ``_SDPAMerger``
behind xDiT's torch >= 2.5 USP path compute the same thing: the pass's bf16 output cast to fp32 (read 1,
write 2), ``out - block_out`` (read 4, write 2), times the sigmoid of the lse difference (read 2, write
2; the lse factor is per row and head, 1/head_dim of this), ``out -`` that (read 4, write 2) = 19
element passes over the rank's attention output, and 9 kernels (those four, the lse difference, the
sigmoid, and the three of the lse update). The first pass's output is cast to fp32 (3 passes, 1 kernel)
and the result cast back at the end (3, 1). Each further pass also launches its attention kernel and its
K/V send/receive (2 kernels). ``update_out_and_lse`` is TorchScript-scripted, which may fuse its chain
on the GPU: counting it unfused in eager runs is an assumption. With torch.compile the merge is taken as
fused the way :func:`dicesim.dense_models.elementwise_split` takes every compiled chain (an assumption,
not measured): one kernel reads the running output (2) and the pass's output (1) and writes the new
output (2) = 5 passes, one more kernel updates the lse. (xDiT's yunchang path stays eager under compile,
``@torch.compiler.disable`` on ``xFuserLongContextAttention.forward``, attn_layer.py:51 @970d5ce; its
torch >= 2.5 path, taken when the text splits evenly, usp.py:80-101, is not excluded.) The Ulysses copies
are kept with compile: the collective reads and writes contiguous buffers. SANA's linear attention has
no softmax merge: no ring term for it.

The host issues these kernels too; a collective call is counted as one kernel of host time (an
assumption: c10d's own host work per call is not measured here).
"""

from __future__ import annotations

from dataclasses import dataclass

from dicesim.models import OpCost

#: element passes of one Ulysses all-to-all call over the rank's tensor (copy before: 2, copy after: 2)
ULYSSES_CALL_PASSES = 4
#: kernels of one call: the layout copy, the collective, the copy back
ULYSSES_CALL_KERNELS = 3
#: Ulysses calls per block: q, k, v and the attention output
ULYSSES_CALLS = 4
#: fp32 log-sum-exp merge of one ring pass's output (cast 3, difference 6, product 4, update 6)
RING_MERGE_PASSES = 19
#: kernels of one merge: cast, lse difference, sigmoid, difference, product, update; lse: 3
RING_MERGE_KERNELS = 9
#: the first pass's output cast to fp32 and the result cast back: 3 passes each, 1 kernel each
RING_CAST_PASSES = 3
#: the merge fused by torch.compile (an assumption): read out (2) and the pass's output (1), write (2)
RING_MERGE_PASSES_COMPILED = 5
#: fused: one kernel for the output, one for the lse
RING_MERGE_KERNELS_COMPILED = 2
#: per pass beyond the first: its attention kernel and its K/V send/receive
RING_PASS_KERNELS = 2


@dataclass(frozen=True)
class PlumbingWork:
    """Per block on one rank: memory-bound element passes (bytes) and the kernels that run them."""

    elementwise: OpCost
    kernels: int


def sp_plumbing(*, ulysses: int, ring: int, local_tokens: float, attn_q: float, local_width: float,
                attn_width: float, softmax: bool, compiled: bool, dtype_nbytes: int = 2) -> PlumbingWork:
    """Plumbing of one block's sequence-parallel attention on one rank.

    ``local_tokens`` x ``local_width``: the rank's q (k, v, output) tensor before the Ulysses
    all-to-all (its tokens, every head it holds); ``attn_q`` x ``attn_width``: its attention output
    inside the ring (the query tokens it attends for, over its heads)."""
    elements = 0.0
    kernels = 0
    if ulysses > 1:
        elements += ULYSSES_CALLS * ULYSSES_CALL_PASSES * local_tokens * local_width
        kernels += ULYSSES_CALLS * ULYSSES_CALL_KERNELS
    if ring > 1 and softmax:
        out = attn_q * attn_width
        merge_passes = RING_MERGE_PASSES_COMPILED if compiled else RING_MERGE_PASSES
        merge_kernels = RING_MERGE_KERNELS_COMPILED if compiled else RING_MERGE_KERNELS
        elements += (2 * RING_CAST_PASSES + (ring - 1) * merge_passes) * out
        kernels += 2 + (ring - 1) * (merge_kernels + RING_PASS_KERNELS)
    return PlumbingWork(elementwise=OpCost(flops=0.0, nbytes=float(dtype_nbytes * elements)), kernels=kernels)
