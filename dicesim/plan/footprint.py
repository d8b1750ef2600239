"""What one GPU holds besides the held buffers: weights, the working set of one block, the runtime.

Pure functions of the model preset, the run's layout, its workload and routing (docs/memory.md
gives every formula with its sources and what it leaves out). Counts are elements times the
run's dtype bytes ``b`` (weights and activations share it: the reference casts the whole model,
``model.half()``, ``sample_ddp.py:97-98``).

- :func:`weight_nbytes`: the parameters and buffers of ``validate/model`` (the public DiT-MoE
  layout) a rank holds: every dense weight, and the routed experts its layout gives it
  (``experts_per_rank``: E/W with expert parallelism, E when replicated, as the reference's
  ``etrim.py:26-67`` trims them);
- :func:`activation_nbytes`: the peak working set of one block's forward at inference, per rank;
- :func:`runtime_nbytes`: a stated allowance for the CUDA context, NCCL's buffers and the
  allocator's slack (:data:`RUNTIME`, every figure an assumption with its source).

Shape letters: N token rows a rank runs queries for, B images in the network batch (CFG
halves included), n tokens of an image, D hidden, H routed-expert hidden, S shared-expert
hidden, E experts, k copies per token (top-k), R = k N routed copies, Q rows a rank's experts
receive, G the largest row group one expert receives, p patch side, C/O latent in/out channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dicesim.models import BlockWorkload, ModelPreset
from dicesim.plan.layout import ParallelLayout
from dicesim.plan.vocabulary import CollectiveKind, Plan

MiB = 1 << 20
#: sinusoidal timestep features fed to the timestep MLP (validate/model/model.py FREQ_DIM; DiT's 256)
FREQ_DIM = 256


def weight_nbytes(preset: ModelPreset, *, tokens_per_image: int, experts_per_rank: int,
                  dtype_nbytes: int) -> dict[str, int]:
    """Bytes of the weights one rank holds, by part (``experts``: the routed experts it holds).

    Shapes follow the public DiT-MoE (and ``validate/model``): per block adaLN ``D x 6D`` (+ bias),
    qkv ``D x 3D`` and proj ``D x D`` (+ biases), router ``E x D``, SwiGLU experts of three
    ``D x H`` matrices without bias, shared SwiGLU ``3 D S``; patch embedding ``C p^2 x D`` (+ bias),
    timestep MLP ``256 x D`` and ``D x D`` (+ biases), class table ``(classes + 1) x D`` (the null
    class), fixed position table ``n x D``; final adaLN ``D x 2D`` and linear ``D x p^2 O`` (+ biases).
    """
    D, H, S, E, L = preset.hidden, preset.expert_hidden, preset.shared_hidden, preset.num_experts, preset.depth
    pp = preset.patch * preset.patch
    block = (D * 6 * D + 6 * D) + (D * 3 * D + 3 * D) + (D * D + D) + E * D + 3 * D * S
    embed = (preset.latent_channels * pp * D + D) + (FREQ_DIM * D + D + D * D + D) \
        + (preset.num_classes + 1) * D + tokens_per_image * D
    final = (D * 2 * D + 2 * D) + (D * pp * preset.out_channels + pp * preset.out_channels)
    return {"experts": L * experts_per_rank * 3 * D * H * dtype_nbytes, "blocks": L * block * dtype_nbytes,
            "embed": embed * dtype_nbytes, "final": final * dtype_nbytes}


@dataclass(frozen=True)
class RankWork:
    """The per-rank sizes the working set depends on (rows; arrays over ranks where they differ)."""

    tokens: int  # N: token rows whose queries and MoE input this rank computes
    images: int  # B: images in the network batch those rows belong to
    image_tokens: int  # n: tokens of a whole image (the keys every query attends to)
    recv_rows_W: np.ndarray  # Q per rank: most rows its experts receive in one exchange
    expert_rows_W: np.ndarray  # G per rank: most rows one of its experts receives in one exchange
    exchange: bool  # routed rows cross ranks (send and receive buffers) or all experts are local
    head_split: int = 1  # ranks the attention heads are split over (Ulysses' all-to-all; 1: none)
    ring_passes: int = 0  # K/V blocks passed around a ring per attention layer (ring attention; 0: none)


def rank_work(workload: BlockWorkload, layout: ParallelLayout, routing: Any, *, image_tokens: int) -> RankWork:
    """:class:`RankWork` of a run: ``routing`` is its :class:`~dicesim.sim.costs.routing.TokenRouting`
    (per-expert copies ``counts_LTWE``); without one, routing is taken as balanced."""
    W, N, k = layout.world_size, workload.tokens, workload.model.top_k
    E = workload.model.num_experts
    exchange = any(len(g) > 1 for g in layout.groups()) and not layout.replicated
    counts = getattr(routing, "counts_LTWE", None)
    if counts is None:  # balanced: every expert gets an equal share of its group's copies
        senders = len(layout.groups()[0]) if exchange else 1
        return RankWork(tokens=N, images=workload.images, image_tokens=image_tokens,
                        recv_rows_W=np.full(W, N * k), exchange=exchange,
                        expert_rows_W=np.full(W, -(-senders * N * k // E)), head_split=layout.head_split,
                        ring_passes=layout.ring_passes)
    recv_W = np.asarray(routing.recv_rows_LTW(False)).max(axis=(0, 1)) if exchange else np.full(W, N * k)
    G_W = np.zeros(W, dtype=np.int64)
    counts = np.asarray(counts)
    if not exchange:  # every expert local: each rank's experts see only its own copies
        G_W[:] = counts.max(axis=(0, 1, 3))
    for members in layout.groups() if exchange else ():
        # rows each expert receives from its group, at every layer and step (one exchange each)
        per_E = counts[:, :, list(members), :].sum(axis=2).max(axis=(0, 1))
        for r in members:
            G_W[r] = max(int(per_E[e]) for e in layout.experts_of(r))
    return RankWork(tokens=N, images=workload.images, image_tokens=image_tokens,
                    recv_rows_W=np.asarray(recv_W, dtype=np.int64), expert_rows_W=G_W, exchange=exchange,
                    head_split=layout.head_split,
                        ring_passes=layout.ring_passes)


def activation_parts(preset: ModelPreset, work: RankWork) -> dict[str, np.ndarray]:
    """Elements alive at the peak of each phase of one block's forward, per rank (docs/memory.md).

    ``resident``: the residual stream ``N D``, the block's adaLN outputs ``6 B D`` and the step's
    latent input and output ``B n p^2 (C + O)``, alive through the whole block. On top of it:

    - ``attention``: modulated input ``N D``, qkv ``3 N D``, attention output ``N D`` (fused
      attention: no ``n x n`` scores), projection ``N D``; where a rank's queries are a slice of
      the image (``N < B n``), the gathered keys and values of the whole image ``2 B n D``; with the
      heads split (Ulysses) instead ``10 N D``: the modulated input, qkv ``3 N D``, the all-to-all's
      received q, k, v ``3 N D`` (every token, H/W heads), the attention output, its send copy and the
      output received back, all locals of DeepSpeed's ``DistributedAttention.forward`` when the output
      all-to-all runs (microsoft/DeepSpeed@38327e0 deepspeed/sequence/layer.py:386-416, 240-244);
    - ``moe``: MoE input ``N D``, its routed copies ``R D``; across ranks the dispatch send ``R D``
      and receive ``Q D`` buffers and the expert output ``Q D``, then the larger of one expert's
      SwiGLU working set ``G (D + 3H)`` and the combine's receive and un-permuted rows ``2 R D``;
      with every expert local the expert output ``R D`` and the larger of ``G (D + 3H)`` and the
      score-weighted copies and their sum ``R D + N D``;
    - ``shared``: MoE input ``N D``, the routed output ``R D``, the shared SwiGLU's ``3 N S``.
    """
    D, H, S, k = preset.hidden, preset.expert_hidden, preset.shared_hidden, preset.top_k
    N, B, n = work.tokens, work.images, work.image_tokens
    R, Q, G = k * N, work.recv_rows_W.astype(float), work.expert_rows_W.astype(float)
    io = B * n * preset.patch ** 2 * (preset.latent_channels + preset.out_channels)
    resident = np.full_like(Q, N * D + 6 * B * D + io)
    gathered_kv = 2 * B * n * D if N < B * n else 0
    if work.ring_passes and work.head_split > 1:  # USP: the ring's working set at its peak (before the cast and
        # projection, 2 N D) plus the all-to-all's received q, k, v (3 N D), the ring's inputs: 12 N D
        attention = np.full_like(Q, 12 * N * D)
    elif work.ring_passes:  # ring attention gathers nothing: one block in hand, one in flight
        attention = np.full_like(Q, 11 * N * D)
    elif work.head_split > 1:
        attention = np.full_like(Q, 10 * N * D)
    else:
        attention = np.full_like(Q, 6 * N * D + gathered_kv)
    swiglu = G * (D + 3 * H)
    if work.exchange:
        moe = N * D + 2 * R * D + 2 * Q * D + np.maximum(swiglu, 2 * R * D)
    else:
        moe = N * D + 2 * R * D + np.maximum(swiglu, R * D + N * D)
    shared = np.full_like(Q, N * D + R * D + 3 * N * S)
    return {"resident": resident, "attention": attention, "moe": moe, "shared": shared}


def activation_nbytes(preset: ModelPreset, work: RankWork, dtype_nbytes: int) -> np.ndarray:
    """Peak working set of one block's forward per rank, bytes: resident + the largest phase."""
    p = activation_parts(preset, work)
    return (p["resident"] + np.maximum.reduce([p["attention"], p["moe"], p["shared"]])) * dtype_nbytes


# ---------------------------------------------------------------- the runtime allowance
@dataclass(frozen=True)
class RuntimeAllowance:
    """Memory outside the tensors the model counts, per GPU. Every figure is an assumption; the
    source of each is in :attr:`sources` (docs/memory.md)."""

    context_nbytes: int = 1024 * MiB
    p2p_per_peer_nbytes: int = 384 * MiB
    ring_per_comm_nbytes: int = 656 * MiB
    slack_frac: float = 0.10
    sources: dict[str, str] = field(default_factory=lambda: dict(_SOURCES), compare=False)


_SOURCES = {
    "context_nbytes": "assumption, 1 GiB for the CUDA context, PyTorch's kernels and cuBLAS/cuDNN workspaces: "
                      "NVIDIA/nccl#1685 measured 1.06 GB of GPU memory outside PyTorch's allocator on an 8x H100 "
                      "rank before its first all-to-all",
    "p2p_per_peer_nbytes": "assumption, 384 MiB per peer of a communicator running all-to-alls (point-to-point "
                           "connections to every peer): NVIDIA/nccl#1685, 8x H100, the first all_to_all_single "
                           "connected 32 channels per GPU pair with one 10 MiB and one 2 MiB buffer each "
                           "(32 x 12 MiB; 4.34 GB - 1.06 GB over 7 peers measured). NCCL sizes channels to the "
                           "link (NVIDIA/nccl#986: memory is linear in channels), so slower links hold less: an "
                           "upper figure (NCCL_BUFFSIZE, default 4 MiB, is the Simple-protocol share of it)",
    "ring_per_comm_nbytes": "assumption, 656 MiB (688 MB) per communicator running ring collectives (all-gather): "
                            "NVIDIA/nccl#964 measured 544 MB (2 GPUs) to 688 MB (3-4 GPUs) per process group "
                            "on 4x A100 NVLink after one all-reduce",
    "slack_frac": "assumption, 10 % of activations and held buffers: the PyTorch CUDA caching allocator rounds "
                  "blocks up and cannot always reuse freed ones (PyTorch docs, 'CUDA memory management': "
                  "fragmentation, expandable_segments)",
}
#: the allowance every estimate uses unless given another
RUNTIME = RuntimeAllowance()

#: all-to-all kinds: point-to-point connections to every peer (Ulysses' head all-to-all is one)
_P2P_KINDS = frozenset({CollectiveKind.DISPATCH, CollectiveKind.COMBINE, CollectiveKind.COUNTS,
                        CollectiveKind.HEAD_A2A})
#: point-to-point kinds to the ring neighbours only (ring attention's passes: send to rank+1, receive from rank-1):
#: one peer with two ranks, two otherwise (as dicesim.sim.dense_memory.nccl_nbytes counts ring passes)
_NEIGHBOUR_KINDS = frozenset({CollectiveKind.KV_RING})


def collective_kinds(plan: Plan) -> frozenset[CollectiveKind]:
    """Collective kinds the plan issues (from its family's effects of every distinct action;
    derived once per plan: :attr:`~dicesim.plan.vocabulary.Plan.issued_kinds`)."""
    return plan.issued_kinds


def runtime_nbytes(plan: Plan, layout: ParallelLayout, allowance: RuntimeAllowance = RUNTIME) -> dict[str, int]:
    """The runtime allowance of one rank, by part: ``context`` and ``nccl`` (buffers of each
    communicator its group opens and uses: all-to-all kinds per peer, others per communicator).
    The allocator's slack depends on the other holders (:func:`dicesim.plan.memory.estimate_memory`)."""
    size = len(layout.groups()[0])
    nccl = 0
    if size > 1:
        used = collective_kinds(plan) - layout.empty_kinds  # kinds over one-rank subgroups connect nobody
        ring = layout.ring_size if layout.ring_passes else size
        for index in range(len(layout.communicators)):
            kinds = {k for k in used if layout.comm_index(k) == index}
            peers = 0
            if kinds & _P2P_KINDS:
                # Ulysses' all-to-all connects the members of its head group (USP: head_split of them)
                peers += layout.head_split - 1 if kinds & _P2P_KINDS == {CollectiveKind.HEAD_A2A} else size - 1
            if kinds & _NEIGHBOUR_KINDS:  # ring attention's passes: its ring neighbours
                peers += min(ring - 1, 2)
            nccl += peers * allowance.p2p_per_peer_nbytes
            # ring collectives (the sequence family's scatter, broadcast and all-gathers) hold the communicator's
            # ring buffers beside any point-to-point connections of the same communicator
            if kinds - _P2P_KINDS - _NEIGHBOUR_KINDS:
                nccl += allowance.ring_per_comm_nbytes
    return {"context": allowance.context_nbytes, "nccl": nccl}
